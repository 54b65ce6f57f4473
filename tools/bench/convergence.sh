#!/usr/bin/env bash
# Convergence benchmark of issue 5 (see tools/bench/convergence.py): the request frequency of a
# running app doubles; how long until `balance` meets the quota again, and what `lazy` does.
# Prints a markdown table; writes target/bench-convergence.json. Arguments go to convergence.py
# (--warm S --after S --quota-ms MS).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/provision.sh >/dev/null
source .smartpipe/env
CARGO_INCREMENTAL=0 cargo build --release --workspace --bins 2>&1 | tail -1
export SMARTPIPE_WORKER_DIR="$PWD/target/release"
python3 tools/bench/convergence.py "$@"
