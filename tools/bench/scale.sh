#!/usr/bin/env bash
# Scale (issue 13, item 7): a request-guarantee chain of 250 processes (image.gen at 1 item/s →
# 248 core.forward → table.print) runs in the foreground (in the node's daemon); 5 s after all
# its stages run, the CPU time of the daemon and the following command over 10 s (/proc/PID/stat utime+stime) and one forward stage's RSS (/proc/PID/status)
# are printed. Usage: tools/bench/scale.sh [debug|release] (default release).
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:-release}
scripts/provision.sh >/dev/null
source .smartpipe/env
if [ "$profile" = release ]; then
  CARGO_INCREMENTAL=0 cargo build --release --workspace --bins 2>&1 | tail -1
fi
bin="$PWD/target/$profile"
work=$(mktemp -d /tmp/bench-scale-XXXXXX)
python3 - "$work/chain.json" <<'PY'
import json, sys
tasks = [{"name": "gen", "kind": "head", "function": "image.gen",
          "params": {"width": 32, "height": 24, "count": 40, "fps": 1}}]
for k in range(248):
    tasks.append({"name": f"f{k}", "kind": "cpu", "function": "core.forward",
                  "inputs": [tasks[-1]["name"]], "replicas": 1})
tasks.append({"name": "rows", "kind": "tail", "function": "table.print",
              "inputs": [tasks[-1]["name"]], "params": {"format": "csv", "path": "rows.csv"}})
json.dump({"name": "scale", "service_type": "request-guarantee", "tasks": tasks}, open(sys.argv[1], "w"))
PY
export SMARTPIPE_RUNTIME_DIR="$work/runtime"
"$bin/supervisor" start "$work/chain.json" --run-dir "$work/run" >"$work/out.txt" 2>&1 &
cmd=$!
# Idle means running: wait until all 250 stage processes run, then 5 s more.
for _ in $(seq 600); do
  [ "$(pgrep -c -f 'worker-cpu --stage scale/' || true)" -ge 250 ] && break
  sleep 0.1
done
sleep 5
# The app runs in the node's daemon (the supervisor measured); the foreground command only
# follows it and is measured with it.
sup=$(ls "$SMARTPIPE_RUNTIME_DIR" | grep -E '^[0-9]+$' | head -1)
cpu() { awk '{s+=$14+$15} END {print s}' /proc/$sup/stat /proc/$cmd/stat; }
tck=$(getconf CLK_TCK)
a=$(cpu); sleep 10; b=$(cpu)
stage=$(pgrep -f "worker-cpu --stage scale/f100#0" | head -1)
echo "processes: $(pgrep -c -f 'worker-cpu --stage scale/') stage processes ($profile build)"
echo "supervisor CPU over 10 s: $(awk -v a="$a" -v b="$b" -v t="$tck" 'BEGIN { printf "%.2f", (b - a) * 100 / t / 10 }') % of a core"
grep -E "VmRSS|RssAnon" /proc/$stage/status | tr -s ' \t' ' '
kill -INT $cmd; wait $cmd || true
tail -3 "$work/out.txt"
rm -rf "$work"
