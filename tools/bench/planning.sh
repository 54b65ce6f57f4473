#!/usr/bin/env bash
# Planning benchmark of issue 5: profile the faces app on this machine, then per quota scenario
# compare the planner's prediction with the measured run, and check admission refusals.
# Prints a markdown table; writes target/bench-planning.json. Environment: FRAMES (default 40).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/provision.sh >/dev/null
source .smartpipe/env
export SMARTPIPE_MANIFEST=$PWD/apps/models.json SMARTPIPE_MODELS_DIR=$PWD/.smartpipe/models
cargo build --release --workspace --bins 2>&1 | tail -1
mkdir -p target/bench-planning
rm -rf target/bench-planning/profiles
ffmpeg -nostdin -v error -y -loop 1 -framerate 10 -i .smartpipe/media/astronaut.png \
  -f lavfi -i color=c=0x303030:s=1280x720:r=10 \
  -filter_complex "[0:v]scale=720:720[f];[1:v][f]overlay=x='(1280-720)*n/60':y=0" \
  -frames:v 60 -pix_fmt yuv420p target/bench-planning/faces.mp4
python3 tools/bench/planning.py
