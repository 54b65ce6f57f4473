#!/usr/bin/env bash
# The GPU checks of issue 3, on a machine with a CUDA device, from what tools/gpu/pack.sh made:
#   device_check.sh libs    unpack ONNX Runtime (CUDA provider) to $GPU_HOME, find the CUDA
#                           libraries, run the vision crate's CUDA test (CPU vs CUDA provider)
#   device_check.sh faces   unpack the binaries, make the faces frames, run the in-process loop
#                           and the faces app on cuda:0 and on cpu:0 (batch 4 and 16), compare
#                           their detections
#   device_check.sh tune    the same after choosing CUDA provider settings by the in-process loop
# Results go to target/gpu-check, and as gpu-check.tgz to $OUT when that is set.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
GPU_HOME=${GPU_HOME:-/opt/smartpipe-gpu}
RES=$ROOT/target/gpu-check
LAPS=${LAPS:-5}
mkdir -p "$RES" "$GPU_HOME/lib"
say() { echo "== $*"; }

libs() {
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    mkdir -p .smartpipe
    for f in .gpu/a/*.xz; do
        case $f in *media.tar.xz) tar -C .smartpipe -xJf "$f" ;;
                   *cuda-test.xz) xz -dc "$f" > "$GPU_HOME/cuda-test" && chmod +x "$GPU_HOME/cuda-test" ;;
                   *) xz -dc "$f" > "$GPU_HOME/lib/$(basename "$f" .xz)" ;; esac
    done
    cp .gpu/a/libonnxruntime_providers_shared.so "$GPU_HOME/lib/"
    # The CUDA 13 / cuDNN 9 libraries the provider links: wherever the machine keeps them.
    dirs=$(find /opt /usr/local /usr/lib/x86_64-linux-gnu \( -name 'libcudart.so.13' -o -name 'libcublas.so.13' \
        -o -name 'libcublasLt.so.13' -o -name 'libcufft.so.12' -o -name 'libcurand.so.10' -o -name 'libcudnn.so.9' \
        -o -name 'libnvrtc.so.13' \) -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
    echo "export LD_LIBRARY_PATH=\"$GPU_HOME/lib:${dirs}\${LD_LIBRARY_PATH:-}\"" > "$GPU_HOME/env"
    echo "export ORT_DYLIB_PATH=$GPU_HOME/lib/libonnxruntime.so.1.31.1" >> "$GPU_HOME/env"
    source "$GPU_HOME/env"
    say "provider's unresolved libraries (none expected):"
    ldd "$GPU_HOME/lib/libonnxruntime_providers_cuda.so" | grep "not found" || echo "none"
    # The test binary looks for the repository where it was built.
    [ -e /work/main ] || { mkdir -p /work && ln -s "$ROOT" /work/main; }
    say "vision CUDA test (CPU provider vs CUDA provider)"
    "$GPU_HOME/cuda-test" --nocapture --test-threads 1 2>&1 | tee "$RES/cuda-test.log"
    [ -z "${OUT:-}" ] || cp "$RES/cuda-test.log" "$OUT/"
}

setup_faces() {
    [ -f "$GPU_HOME/env" ] || { echo "run 'device_check.sh libs' on this machine first"; exit 2; }
    source "$GPU_HOME/env"
    mkdir -p target/release && tar -C target/release -xJf .gpu/b/bin.tar.xz
    export SMARTPIPE_MANIFEST=$ROOT/apps/models.json SMARTPIPE_MODELS_DIR=$ROOT/.smartpipe/models
    export SMARTPIPE_HANG_AFTER_MS=5000
    W=$ROOT/target/gpu-faces
    rm -rf "$W" && python3 tools/gpu/faces_frames.py .smartpipe/media/astronaut.png "$W" 40 "$LAPS" 4 16
}

app_run() { # batch device tag
    say "faces app, batch $1, $2, SMARTPIPE_CUDA_OPTIONS=${SMARTPIPE_CUDA_OPTIONS:-}"
    SMARTPIPE_DEVICE=$2 python3 tools/bench/run_app.py target/release/supervisor "$W/faces-b$1.json" \
        "$W/run-$3" > "$RES/faces-$3.json"
    cp "$W/b$1/faces.jsonl" "$RES/faces-$3.jsonl"
    grep -h "agent ready\|ERROR" "$W/run-$3"/logs/gpu-agent-*.log | head -3
}

# CUDA provider settings against the in-process loop's time per frame (20 frames), then the
# faces app with the fastest on cuda:0 and on cpu:0.
tune() {
    setup_faces
    variants=("SMARTPIPE_CUDA_OPTIONS=" "SMARTPIPE_CUDA_OPTIONS=cudnn_conv_use_max_workspace=0"
        "SMARTPIPE_CUDA_OPTIONS=fuse_conv_bias=0" "SMARTPIPE_CUDA_OPTIONS=prefer_nhwc=1"
        "SMARTPIPE_CUDNN_CONV_SEARCH=default" "SMARTPIPE_CUDA_OPTIONS=use_tf32=0")
    best=0; best_ms=1e9
    for i in "${!variants[@]}"; do
        say "in-process loop, cuda:0, ${variants[$i]}"
        env SMARTPIPE_DEVICE=cuda:0 "${variants[$i]}" target/release/inprocess faces "$W/frames.rgb" 1280 720 20 1 \
            > "$RES/inproc-cuda-v$i.json"
        ms=$(python3 -c 'import json,sys; print(sum(json.load(open(sys.argv[1]))["profile_ms_per_frame"].values()))' \
            "$RES/inproc-cuda-v$i.json" 2>/dev/null || echo 1e9)
        echo "v$i ${variants[$i]}: $ms ms/frame" | tee -a "$RES/variants.txt"
        if python3 -c "import sys; sys.exit(0 if float('$ms') < float('$best_ms') else 1)"; then best=$i; best_ms=$ms; fi
    done
    say "fastest: v$best ${variants[$best]} ($best_ms ms/frame)"
    export "${variants[$best]}"
    for b in 4 16; do app_run $b cuda:0 b$b-cuda; done
    for b in 4 16; do app_run $b cpu:0 b$b-cpu; done
    python3 tools/gpu/compare.py "$RES" | tee "$RES/faces-summary.txt"
    [ -z "${OUT:-}" ] || tar -C "$RES" -czf "$OUT/gpu-check.tgz" .
}

faces() {
    setup_faces
    # The ORT calls alone, in one process: the same frames, decoded up front.
    # (mp0 = ORT's memory pattern off; the CUDA runs also write ORT's per-node profile)
    for run in cuda:0,1,1 cuda:0,0,1 cpu:0,1,$(nproc); do
        IFS=, read -r dev mp threads <<< "$run"
        tag=${dev%:0}-mp$mp
        say "in-process loop, $dev, memory pattern $mp, $threads threads"
        prof=""; [ "$dev" = cpu:0 ] || prof=$RES/prof/$tag
        mkdir -p "$RES/prof"
        SMARTPIPE_DEVICE=$dev SMARTPIPE_ORT_MEM_PATTERN=$mp SMARTPIPE_ORT_PROFILE=$prof target/release/inprocess \
            faces "$W/frames.rgb" 1280 720 40 "$threads" | tee "$RES/inproc-$tag.json"
        echo
        [ -z "$prof" ] || python3 tools/gpu/ort_profile.py "$prof"-*.json
    done
    # The faces app: batch 4 and 16 on each device, on CUDA with and without the memory pattern.
    for run in 4,cuda:0,1 4,cuda:0,0 16,cuda:0,0 4,cpu:0,1 16,cpu:0,1; do
        IFS=, read -r b dev mp <<< "$run"
        tag=b$b-${dev%:0}$([ "$mp" = 1 ] || echo "_mp0")
        say "faces app, batch $b, $dev, memory pattern $mp"
        SMARTPIPE_DEVICE=$dev SMARTPIPE_ORT_MEM_PATTERN=$mp python3 tools/bench/run_app.py \
            target/release/supervisor "$W/faces-b$b.json" "$W/run-$tag" > "$RES/faces-$tag.json"
        cp "$W/b$b/faces.jsonl" "$RES/faces-$tag.jsonl"
        grep -h "agent ready\|ERROR" "$W/run-$tag"/logs/gpu-agent-*.log | head -3
    done
    python3 tools/gpu/compare.py "$RES" | tee "$RES/faces-summary.txt"
    [ -z "${OUT:-}" ] || tar -C "$RES" -czf "$OUT/gpu-check.tgz" .
}

"$@"
