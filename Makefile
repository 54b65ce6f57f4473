# SmartPipe — the two commands of the README, and the pieces they are made of.
#   make demo   provision (ONNX Runtime, models, test media, ffmpeg), build, run apps/demo.json
#   make test   provision, build, run every test (fmt, clippy, unit, end-to-end)
SHELL := /bin/bash
CARGO ?= cargo
ENVFILE := .smartpipe/env

.PHONY: demo test provision build build-release bench bench-transport lint clean-runs

provision:
	@scripts/provision.sh

build:
	$(CARGO) build --workspace --bins

build-release:
	$(CARGO) build --release --workspace --bins

demo: provision build-release
	@source $(ENVFILE) && target/release/supervisor validate apps/demo.json && \
	  target/release/supervisor start apps/demo.json --run-dir runs/demo

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: provision build lint
	@source $(ENVFILE) && $(CARGO) test --workspace 2>&1 | tee target/test.log; exit $${PIPESTATUS[0]}

bench: bench-transport

bench-transport: build-release
	target/release/supervisor bench transport --json target/bench-transport.json

clean-runs:
	rm -rf runs
