#!/usr/bin/env python3
"""Winograd's convolutions layer by layer: one 3x3 convolution (pad 1, random weights) per channel
pair and size, as its file and as vision's rewrite_model example writes it (the agent's graph on
cpu:0; a pair below the rewrite's MIN_CHANNEL_BALANCE is rewritten anyway here, with
`--winograd-min 1`, to show why the agent leaves it), each timed with onnxruntime at 1 and 2 intra-op
threads (the agent's sessions on cpu:0 run at 1) (0.5 s of runs after one warm-up run); prints ms per run, the speed-up and the largest
difference of outputs. The models whole: `model NAME SHAPE` rows for files in the models folder.

usage: winograd_layers.py REWRITE_MODEL_BIN WORKDIR [MODELS_DIR NAME:N,C,H,W ...]
       winograd_layers.py REWRITE_MODEL_BIN WORKDIR --layers CIN:COUT:H:W[,...]   (only those layers,
       e.g. PP-OCRv4 det's 96→32 head convolutions: --layers 96:32:184:368,96:32:92:184)
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

PAIRS = [(16, 32), (32, 64), (64, 64), (64, 128), (128, 128), (256, 256)]
SIZES = [32, 80, 160]
# where the threshold's edge shows: large maps of the pairs around it (activations past the cache)
LARGE = [(64, 128, 320), (128, 64, 512), (128, 128, 512), (64, 256, 256), (256, 128, 256)]


def conv_model(c, co):
    rng = np.random.default_rng(c * 1000 + co)
    w = (rng.standard_normal((co, c, 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def timed(path, x, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    y = s.run(None, {name: x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.5 or n < 2:
        s.run(None, {name: x})
        n += 1
    return (time.perf_counter() - t0) / n * 1e3, y


def compare(rewrite, src, dst, x, label, every_layer=False):
    extra = ["--winograd-min", "1"] if every_layer else []
    p = subprocess.run([rewrite, src, dst] + extra, check=True, capture_output=True, text=True)
    rewritten = p.stdout.strip().splitlines()[-1]
    cells, diff = [], 0.0
    for threads in (1, 2):
        a, ya = timed(src, x, threads)
        b, yb = timed(dst, x, threads)
        diff = max([diff] + [float(np.abs(u - v).max()) for u, v in zip(ya, yb)])
        cells.append(f"{a:.2f} / {b:.2f} ms = {a / b:.2f}x")
    changed = json.loads(rewritten)["winograd"]
    print(f"| {label} | {cells[0]} | {cells[1]} | {diff:.1e} | {changed} |", flush=True)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    rewrite, work = argv[1], argv[2]
    os.makedirs(work, exist_ok=True)
    print("| layer or model | 1 thread: direct / Winograd | 2 threads: direct / Winograd | largest difference | convolutions rewritten |")
    print("|---|---|---|---|---|")
    if len(argv) > 4 and argv[3] == "--layers":
        for spec in argv[4].split(","):
            c, co, h, w = (int(v) for v in spec.split(":"))
            src = os.path.join(work, f"conv-{c}-{co}.onnx")
            onnx.save(conv_model(c, co), src)
            x = np.random.default_rng(h * w).random((1, c, h, w), dtype=np.float32)
            compare(rewrite, src, os.path.join(work, f"conv-{c}-{co}-w.onnx"), x, f"{c}→{co}, {h}×{w}", True)
        return
    for c, co, sizes in [(c, co, SIZES) for c, co in PAIRS] + [(c, co, [s]) for c, co, s in LARGE]:
        src = os.path.join(work, f"conv-{c}-{co}.onnx")
        onnx.save(conv_model(c, co), src)
        for size in sizes:
            x = np.random.default_rng(size).random((1, c, size, size), dtype=np.float32)
            compare(rewrite, src, os.path.join(work, f"conv-{c}-{co}-w.onnx"), x, f"{c}→{co}, {size}×{size}", True)
    if len(argv) > 3:
        models = argv[3]
        for spec in argv[4:]:
            name, shape = spec.split(":")
            x = np.random.default_rng(1).random([int(v) for v in shape.split(",")], dtype=np.float32)
            compare(rewrite, os.path.join(models, name + ".onnx"), os.path.join(work, name + "-w.onnx"), x,
                    f"{name} {shape}")


if __name__ == "__main__":
    main(sys.argv)
