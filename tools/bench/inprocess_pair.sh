#!/usr/bin/env bash
# What two cores can give at most to work split by item, with no framework at all: the in-process
# Rust loop (vision/examples/inprocess.rs, one intra-op thread) alone, then two copies of it at once
# over the same items; prints each rate and the pair's sum over the single rate. This is the
# ceiling for issue 14's "pipeline ≥ 1.7× the in-process loop at one thread" on this machine.
# Needs the media of tools/bench/models.sh (run it once first).
# usage: tools/bench/inprocess_pair.sh [faces|ocr]...   (default: faces ocr)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
W=$ROOT/target/bench-models/media
FRAMES=${FRAMES:-240}
OCR_REPEAT=${OCR_REPEAT:-4}
export ORT_DYLIB_PATH=$ROOT/.smartpipe/lib/libonnxruntime.so.1.32.0
export SMARTPIPE_MANIFEST=$ROOT/apps/models.json
export SMARTPIPE_MODELS_DIR=$ROOT/.smartpipe/models
cargo build --release -p vision --example inprocess >&2
INPROC=$ROOT/target/release/examples/inprocess
OUT=$ROOT/target/bench-models/pair
mkdir -p "$OUT"
[ $# -gt 0 ] || set -- faces ocr
for what in "$@"; do
    case $what in
        faces) media=$W/faces720-$FRAMES.rgb; args=(faces "$media" 1280 720 "$FRAMES" 1) ;;
        ocr) media=$W/ocr-$OCR_REPEAT; args=(ocr 1 "$media"/*.png) ;;
        *) echo "unknown: $what (faces or ocr)" >&2; exit 2 ;;
    esac
    [ -e "$media" ] || { echo "missing $media: run tools/bench/models.sh first" >&2; exit 1; }
    "$INPROC" "${args[@]}" > "$OUT/$what-alone.json"
    "$INPROC" "${args[@]}" > "$OUT/$what-a.json" &
    "$INPROC" "${args[@]}" > "$OUT/$what-b.json"
    wait
    python3 - "$what" "$OUT" <<'PY'
import json, sys
what, out = sys.argv[1], sys.argv[2]
rate = lambda n: (lambda d: d.get("fps") or d.get("per_s"))(json.load(open(f"{out}/{what}-{n}.json")))
alone, a, b = rate("alone"), rate("a"), rate("b")
print(f"{what}: alone {alone:.2f}/s; two at once {a:.2f} + {b:.2f} = {a + b:.2f}/s = {(a + b) / alone:.2f}x the one")
PY
done
