#!/usr/bin/env bash
# 'Many apps on one node' (issue 13, tools/bench/node.py): a guaranteed app alone, beside a
# best-effort app started mid-run, and beside a second guaranteed app that is refused.
# Prints a markdown table; writes target/bench-node.json. Arguments go to node.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/provision.sh >/dev/null
source .smartpipe/env
CARGO_INCREMENTAL=0 cargo build --release --workspace --bins 2>&1 | tail -1
export SMARTPIPE_WORKER_DIR="$PWD/target/release"
python3 tools/bench/node.py --json target/bench-node.json "$@"
