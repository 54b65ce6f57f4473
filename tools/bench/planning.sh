#!/usr/bin/env bash
# Planning benchmark of issue 5 (see tools/bench/planning.py): profile the faces and OCR apps
# on this machine, then per quota scenario compare the planner's prediction with the measured
# run, check admission refusals and the planner's cores against a brute-force search.
# Prints markdown tables; writes target/bench-planning.json. Arguments go to planning.py
# (--apps faces,ocr,resize,head  --scenarios F1,O2  --reprofile).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/provision.sh >/dev/null
source .smartpipe/env
CARGO_INCREMENTAL=0 cargo build --release --workspace --bins 2>&1 | tail -1
W=target/bench-planning
mkdir -p $W
# 240 frames of 720p video, the astronaut's face panning back and forth (one face per frame).
[ -f $W/faces.mp4 ] || ffmpeg -nostdin -v error -y -loop 1 -framerate 10 -i .smartpipe/media/astronaut.png \
  -f lavfi -i color=c=0x303030:s=1280x720:r=10 \
  -filter_complex "[0:v]scale=720:720[f];[1:v][f]overlay=x='(1280-720)*abs(mod(n\,120)-60)/60':y=0" \
  -frames:v 240 -pix_fmt yuv420p $W/faces.mp4
# The OCR app reads a folder: page.png 120 times (profiling uses the first ones).
mkdir -p $W/pages
for i in $(seq -w 0 119); do ln -sf "$(readlink -f .smartpipe/media/page.png)" $W/pages/page-$i.png; done
python3 tools/bench/planning.py "$@"
