#!/usr/bin/env bash
# The shared agent's cross-app schedule (earliest deadline first, an executor kept for guaranteed
# requests) against the same without the kept executor and first come first
# served: a guaranteed app's request latency at the agent while a best-effort app bursts
# (tools/bench/agent_schedule.py). Prints a markdown table; writes target/bench-agent-schedule.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/provision.sh >/dev/null
source .smartpipe/env
CARGO_INCREMENTAL=0 cargo build --release --workspace --bins 2>&1 | tail -1
export SMARTPIPE_WORKER_DIR="$PWD/target/release"
python3 tools/bench/agent_schedule.py --json target/bench-agent-schedule.json "$@"
