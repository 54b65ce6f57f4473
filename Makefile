# SmartPipe — the two commands of the README, and the pieces they are made of.
#   make demo   provision (ONNX Runtime, models, test media, ffmpeg), build, run the faces and OCR apps
#   make test   provision, build, run every test (fmt, clippy, unit, end-to-end)
SHELL := /bin/bash
CARGO ?= cargo
ENVFILE := .smartpipe/env

.PHONY: demo test provision build build-release build-cuda bench bench-transport lint clean-runs report-screenshot

provision:
	@scripts/provision.sh

build:
	$(CARGO) build --workspace --bins

build-release:
	$(CARGO) build --release --workspace --bins

# With the CUDA provider and device detection (needs onnxruntime-gpu at run time: README, "GPU").
build-cuda:
	$(CARGO) build --release --workspace --bins --features supervisor/cuda,worker-gpu/cuda

# A 720p test video with a face in every frame (the astronaut panning across).
.smartpipe/media/faces.mp4: provision
	ffmpeg -nostdin -v error -y -loop 1 -framerate 10 -i .smartpipe/media/astronaut.png \
	  -f lavfi -i color=c=0x303030:s=1280x720:r=10 \
	  -filter_complex "[0:v]scale=720:720[f];[1:v][f]overlay=x='(1280-720)*n/40':y=0" \
	  -frames:v 40 -pix_fmt yuv420p $@

# A small 320x180 test video for the upscale app (coffee panning across), 20 frames.
.smartpipe/media/small.mp4: provision
	ffmpeg -nostdin -v error -y -loop 1 -framerate 10 -i .smartpipe/media/coffee.png \
	  -vf "scale=480:-2,crop=320:180:x='160*n/20':y=60" -frames:v 20 -pix_fmt yuv420p $@

demo: provision build-release .smartpipe/media/faces.mp4
	@source $(ENVFILE) && target/release/supervisor validate apps/faces.json && \
	  target/release/supervisor start apps/faces.json --run-dir runs/faces/run && \
	  target/release/supervisor start apps/ocr.json --run-dir runs/ocr/run && \
	  echo "faces: runs/faces/annotated.mp4 and runs/faces/faces.csv; text: runs/ocr/lines.jsonl"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --features supervisor/cuda,worker-gpu/cuda,vision/cuda -- -D warnings
	$(CARGO) fmt --manifest-path python/Cargo.toml -- --check
	PYO3_PYTHON=$(CURDIR)/.smartpipe/venv/bin/python $(CARGO) clippy --manifest-path python/Cargo.toml --target-dir target/py -- -D warnings

test: provision .smartpipe/media/faces.mp4 .smartpipe/media/small.mp4 build lint
	@rm -rf target/debug/test-scratch  # the previous run's test folders (kept until now for inspection)
	@source $(ENVFILE) && $(CARGO) test --workspace --no-fail-fast 2>&1 | tee target/test.log; status=$${PIPESTATUS[0]}; \
	  awk '/^test result:/ { p += $$4; f += $$6; i += $$8 } /^test skipped: / { s += 1; print } END { printf "tests: %d passed, %d failed, %d skipped\n", p - s, f, i + s }' target/test.log; \
	  exit $$status

bench: bench-transport

bench-transport: build-release
	target/release/supervisor bench transport --json target/bench-transport.json

clean-runs:
	rm -rf runs

# The faces run's report rendered by headless Chromium (Debian's `chromium`) into docs/.
report-screenshot:
	@test -f runs/faces/run/report.html || { echo "run 'make demo' first"; exit 1; }
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir=$$(mktemp -d) --hide-scrollbars --window-size=860,2700 \
	  --screenshot=$(CURDIR)/docs/faces-report.png file://$(CURDIR)/runs/faces/run/report.html
