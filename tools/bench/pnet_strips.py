#!/usr/bin/env python3
"""Would P-Net run faster on a 720p pyramid cut into strips, and in strips of which size?
MTCNN's P-Net is fully convolutional (12-pixel field, stride 2), so an input can be run in
overlapping strips along one axis and the outputs joined, bit for bit the same; smaller strips
keep each layer's activations in cache. Runs the 11 pyramid levels of a 1280x720 frame (min face
20, factor 0.709) through onnxruntime at one intra-op thread, memory pattern off as the agent's
sessions on cpu:0 run. Run two at once to see it under the agent's two-executor load.

  full [MODEL]                   ms per pyramid, whole levels
  strips [MODEL] [MAX_VALUES]    ms per pyramid in strips of at most MAX_VALUES input values
                                 (default 300000), and whether the outputs are identical
  sizes MODEL SIZE[,SIZE...] [ROUNDS]
                                 the median ms per pyramid in strips of each size (one past the
                                 largest level runs it whole), the sizes interleaved round by
                                 round, the order reversed every other round, so that the VM's
                                 slow spells hurt all of them alike (default 10 rounds)

usage: pnet_strips.py MODE ...   (python with onnxruntime + numpy, e.g. .smartpipe/venv/bin/python,
       which tools/bench/models.sh makes; MODEL as the agent loads it:
       target/bench-rewrite/mtcnn-pnet.onnx from tools/bench/rewrite_ab.py)
"""
import sys
import time

import numpy as np
import onnxruntime as ort

if len(sys.argv) < 2 or sys.argv[1] not in ("full", "strips", "sizes"):
    sys.exit(__doc__)
mode = sys.argv[1]
path = sys.argv[2] if len(sys.argv) > 2 else ".smartpipe/models/mtcnn-pnet.onnx"
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


def strip_outputs(x, max_values):
    """Strips along axis 1: each interior strip covers exactly the input rows of its output
    rows (2 * (rows - 1) + 12), so no pooling window is cut short; the last runs to the end.
    The outputs of each strip, not joined (one list: the level ran whole)."""
    k = -(-x.size // max_values)
    if k <= 1:
        return [whole(x)]
    out_rows = (x.shape[1] - 12) // 2 + 1
    rows = -(-out_rows // k)
    parts, start = [], 0
    while True:
        end = start + 2 * (rows - 1) + 12
        if end >= x.shape[1]:
            parts.append(session.run(None, {name: x[:, start:]}))
            return parts
        parts.append(session.run(None, {name: x[:, start:end]}))
        start += 2 * rows


def in_strips(x, max_values):
    parts = strip_outputs(x, max_values)
    return [np.concatenate([p[i] for p in parts], axis=1) for i in range(len(parts[0]))]


def ms_per_pyramid(run, repeat):
    t = time.perf_counter()
    for _ in range(repeat):
        for x in inputs:
            run(x)
    return (time.perf_counter() - t) / repeat * 1000


if mode == "sizes":
    sizes = [int(v) for v in sys.argv[3].split(",")]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    times = {size: [] for size in sizes}
    for size in sizes:  # warm-up: every strip shape seen once
        ms_per_pyramid(lambda x: strip_outputs(x, size), 1)
    for r in range(rounds):
        for size in sizes if r % 2 == 0 else sizes[::-1]:
            times[size].append(ms_per_pyramid(lambda x: strip_outputs(x, size), 3))
    print(" ".join(f"{size}: {np.median(ms):.2f} ms" for size, ms in times.items()))
    sys.exit(0)

max_values = int(sys.argv[3]) if len(sys.argv) > 3 else 300_000
run = whole if mode == "full" else (lambda x: in_strips(x, max_values))
ms_per_pyramid(run, 1)
line = f"{mode}: {ms_per_pyramid(run, 20):.2f} ms per pyramid"
if mode == "strips":
    same = all(all(np.array_equal(a, b) for a, b in zip(whole(x), in_strips(x, max_values)))
               for x in inputs)
    line += f", outputs identical to whole runs: {same}"
print(line)
