#!/usr/bin/env bash
# dora-rs 1.1's Python relay node beside SmartPipe's Python user stage, same payloads, same
# machine, same run (issue 15): see dora_compare.py. dora-rs comes from PyPI (dora-rs-cli and
# dora-rs 1.1.0, pinned) into a venv of its own in the user's cache, made once.
# Usage: tools/bench/dora_compare.sh [release|debug] [extra args for dora_compare.py]
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:-release}
shift || true
scripts/provision.sh >/dev/null
source .smartpipe/env
venv="${XDG_CACHE_HOME:-$HOME/.cache}/smartpipe/bench-venv-dora"
if ! "$venv/bin/dora" --version 2>/dev/null | grep -q "1.1.0"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q dora-rs-cli==1.1.0 dora-rs==1.1.0 pyarrow==26.0.1 numpy==2.2.6
fi
if [ "$profile" = release ]; then
  CARGO_INCREMENTAL=0 cargo build --release --workspace --bins 2>&1 | tail -1
fi
PATH="$venv/bin:$PATH" "$venv/bin/python" tools/bench/dora_compare.py "$PWD/target/$profile/supervisor" "$@"
