#!/usr/bin/env bash
# Packs what tools/gpu/device_check.sh needs on a GPU machine that has the NVIDIA driver and
# the CUDA 13 / cuDNN 9 libraries (e.g. PyTorch's nvidia-* wheels) but no network and no Rust:
#   .gpu/a/  ONNX Runtime 1.31.1 from the onnxruntime-gpu wheel (its CUDA provider trimmed to
#            one GPU architecture by trim_fatbin.py, xz-compressed: 60 MB instead of 300), the
#            vision crate's CUDA test binary, the MTCNN models and astronaut.png
#   .gpu/b/  the release binaries and the in-process loop built with `--features cuda` (stripped, xz)
# Two parts because the machines here take at most 64 MiB per transfer.
# Environment: KEEP_SM (default 90: H100/H200).
set -euo pipefail
cd "$(dirname "$0")/../.."
KEEP_SM=${KEEP_SM:-90}
ORT_GPU=1.31.1
DL=.smartpipe/downloads
W=target/gpu-pack
mkdir -p "$DL" "$W" .gpu/a .gpu/b
WHEEL=$(ls "$DL"/onnxruntime_gpu-$ORT_GPU-*.whl 2>/dev/null | head -1 || true)
if [ -z "$WHEEL" ]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d "$DL" "onnxruntime-gpu==$ORT_GPU"
    WHEEL=$(ls "$DL"/onnxruntime_gpu-$ORT_GPU-*.whl | head -1)
fi
if [ .gpu/a/libonnxruntime_providers_cuda.so.xz -nt "$WHEEL" ] && [ "$(cat .gpu/a/keep-sm 2>/dev/null)" = "$KEEP_SM" ]; then
    echo "skip    ONNX Runtime GPU libraries (.gpu/a is up to date)"
else
rm -rf "$W/capi" && unzip -q -o -j "$WHEEL" 'onnxruntime/capi/libonnxruntime*.so*' -d "$W/capi"
python3 tools/gpu/trim_fatbin.py "$W/capi/libonnxruntime_providers_cuda.so" "$W/capi/cuda.so" --keep-sm "$KEEP_SM"
xz -9e -T0 -c "$W/capi/cuda.so" > .gpu/a/libonnxruntime_providers_cuda.so.xz
xz -9e -T0 -c "$W/capi/libonnxruntime.so.$ORT_GPU" > .gpu/a/libonnxruntime.so.$ORT_GPU.xz
cp "$W/capi/libonnxruntime_providers_shared.so" .gpu/a/
echo "$KEEP_SM" > .gpu/a/keep-sm
fi

export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
FEATURES=supervisor/cuda,worker-gpu/cuda
cargo build --release --workspace --bins --features "$FEATURES"
cargo build --release -p vision --example inprocess --features cuda
TEST=$(cargo test --release -p vision --features cuda --test cuda --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"): print(m["executable"])')
strip -o "$W/cuda-test" "$TEST"
xz -9 -c "$W/cuda-test" > .gpu/a/cuda-test.xz
tar -C .smartpipe -cJf .gpu/a/media.tar.xz models/mtcnn-pnet.onnx models/mtcnn-rnet.onnx \
    models/mtcnn-onet.onnx media/astronaut.png
for b in supervisor worker-cpu worker-gpu; do strip -o "$W/$b" "target/release/$b"; done
strip -o "$W/inprocess" target/release/examples/inprocess
tar -C "$W" -cJf .gpu/b/bin.tar.xz supervisor worker-cpu worker-gpu inprocess
du -sh .gpu/a .gpu/b
