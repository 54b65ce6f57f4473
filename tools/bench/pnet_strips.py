#!/usr/bin/env python3
"""Would P-Net run faster on a 720p pyramid cut into strips? MTCNN's P-Net is fully
convolutional (12-pixel field, stride 2), so an input can be run in overlapping strips along
one axis and the outputs joined, bit for bit the same; smaller strips keep each layer's
activations in cache. Runs the 11 pyramid levels of a 1280x720 frame (min face 20, factor
0.709) through onnxruntime at one intra-op thread, memory pattern off as the agent's sessions
on cpu:0 run, whole and in strips of at most MAX_VALUES input values, and prints ms per
pyramid and whether the outputs are identical. Run two at once to see it under contention.

usage: pnet_strips.py full|strips [MODEL] [MAX_VALUES]   (python with onnxruntime + numpy,
       e.g. .smartpipe/venv/bin/python, which tools/bench/models.sh makes)
"""
import sys
import time

import numpy as np
import onnxruntime as ort

mode = sys.argv[1]
path = sys.argv[2] if len(sys.argv) > 2 else ".smartpipe/models/mtcnn-pnet.onnx"
max_values = int(sys.argv[3]) if len(sys.argv) > 3 else 300_000
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.enable_mem_pattern = False
session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
levels = [(768, 432), (545, 307), (387, 218), (274, 154), (195, 110), (138, 78), (98, 55),
          (70, 39), (50, 28), (35, 20), (25, 14)]
rng = np.random.default_rng(0)
inputs = [rng.random((1, a, b, 3), dtype=np.float32) * 2 - 1 for a, b in levels]


def whole(x):
    return session.run(None, {name: x})


def in_strips(x):
    """Strips along axis 1: each interior strip covers exactly the input rows of its output
    rows (2 * (rows - 1) + 12), so no pooling window is cut short; the last runs to the end."""
    k = -(-x.size // max_values)
    if k <= 1:
        return whole(x)
    out_rows = (x.shape[1] - 12) // 2 + 1
    rows = -(-out_rows // k)
    parts, start = [], 0
    while True:
        end = start + 2 * (rows - 1) + 12
        if end >= x.shape[1]:
            parts.append(session.run(None, {name: x[:, start:]}))
            break
        parts.append(session.run(None, {name: x[:, start:end]}))
        start += 2 * rows
    return [np.concatenate([p[i] for p in parts], axis=1) for i in range(len(parts[0]))]


run = whole if mode == "full" else in_strips
for x in inputs:
    run(x)
n = 20
t = time.perf_counter()
for _ in range(n):
    for x in inputs:
        run(x)
line = f"{mode}: {(time.perf_counter() - t) / n * 1000:.2f} ms per pyramid"
if mode == "strips":
    same = all(all(np.array_equal(a, b) for a, b in zip(whole(x), in_strips(x))) for x in inputs)
    line += f", outputs identical to whole runs: {same}"
print(line)
