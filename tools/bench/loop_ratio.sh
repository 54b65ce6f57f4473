#!/usr/bin/env bash
# Issue 14's "faces pipeline / in-process loop at one thread", measured round by round: each
# round runs the in-process Rust loop (vision/examples/inprocess.rs, one intra-op thread) and
# then the faces app once per arm, and prints each arm's steady rate over the loop's rate of
# the same round (the machine's speed drifts by more than the changes measured: a ratio of
# runs minutes apart says little). Arms are app_ab.py's "KEY=VALUE ..." environments, e.g.
# SMARTPIPE_WORKER_DIR=DIR for the workers of another build. Needs tools/bench/models.sh's
# media and apps (run it once first).
# usage: tools/bench/loop_ratio.sh ROUNDS LABEL "KEY=VALUE ..." [LABEL "KEY=VALUE ..."]...
# example: tools/bench/loop_ratio.sh 4 new "X=1" old "SUPERVISOR=/tmp/oldbin/supervisor SMARTPIPE_WORKER_DIR=/tmp/oldbin"
# (an older build's supervisor with its own workers: the two speak one version of the params)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
[ $# -ge 3 ] && [ $(( ($# - 1) % 2 )) -eq 0 ] || { sed -n 2,10p "$0" >&2; exit 2; }
ROUNDS=$1; shift
export ORT_DYLIB_PATH=$ROOT/.smartpipe/lib/libonnxruntime.so.1.32.0
export SMARTPIPE_MANIFEST=$ROOT/apps/models.json SMARTPIPE_MODELS_DIR=$ROOT/.smartpipe/models
W=$ROOT/target/bench-models
[ -e "$W/media/faces720-240.rgb" ] || { echo "missing $W/media: run tools/bench/models.sh first" >&2; exit 1; }
for r in $(seq 1 "$ROUNDS"); do
    loop=$("$ROOT/target/release/examples/inprocess" faces "$W/media/faces720-240.rgb" 1280 720 240 1 |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["fps"])')
    line="round $r: loop $(printf %.2f "$loop")/s"
    args=("$@")
    for ((i = 0; i < ${#args[@]}; i += 2)); do
        out=$(python3 tools/bench/app_ab.py target/release/supervisor "$W/apps/faces.json" 1 \
            "${args[i]}" "${args[i + 1]}" 2>&1) || true
        rate=$(awk '/^round/ {sub("/s", "", $5); print $5}' <<< "$out")
        [ -n "$rate" ] || { echo "arm ${args[i]} gave no rate:" >&2; tail -5 <<< "$out" >&2; exit 1; }
        line+="  ${args[i]} ${rate}/s = $(python3 -c "print(f'{$rate / $loop:.3f}')")x"
    done
    echo "$line"
done
