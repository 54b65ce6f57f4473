#!/usr/bin/env python3
"""Which strip size suits P-Net best? Runs the 11 pyramid levels of a 1280x720 frame (as
tools/bench/pnet_strips.py) through one onnxruntime session at one intra-op thread, memory
pattern off as the agent's sessions on cpu:0 run, in strips of at most each of SIZES input
values (a size past the largest level runs it whole), the sizes interleaved round by round
(the order reversed every other round, so that the VM's slow spells hurt all of them alike),
and prints the median ms per pyramid of each. Run two at once to see them under the agent's
two-executor load. Strips give the whole run's outputs bit for bit (pnet_strips.py checks it).

usage: pnet_strip_sizes.py MODEL SIZE[,SIZE...] [ROUNDS]   (python with onnxruntime + numpy,
       e.g. .smartpipe/venv/bin/python; MODEL as the agent loads it:
       target/bench-rewrite/mtcnn-pnet.onnx from tools/bench/rewrite_ab.py)
"""
import sys
import time

import numpy as np
import onnxruntime as ort

if len(sys.argv) < 3:
    sys.exit(__doc__)
path = sys.argv[1]
sizes = [int(v) for v in sys.argv[2].split(",")]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.enable_mem_pattern = False
session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
levels = [(768, 432), (545, 307), (387, 218), (274, 154), (195, 110), (138, 78), (98, 55),
          (70, 39), (50, 28), (35, 20), (25, 14)]
rng = np.random.default_rng(0)
inputs = [rng.random((1, a, b, 3), dtype=np.float32) * 2 - 1 for a, b in levels]


def in_strips(x, max_values):
    """As vision::strips cuts: each interior strip covers exactly its output rows' input rows."""
    parts = -(-x.size // max_values)
    if parts <= 1:
        return session.run(None, {name: x})
    out_rows = (x.shape[1] - 12) // 2 + 1
    rows = -(-out_rows // parts)
    outputs, start = [], 0
    while True:
        end = start + 2 * (rows - 1) + 12
        if end >= x.shape[1]:
            outputs.append(session.run(None, {name: x[:, start:]}))
            return outputs
        outputs.append(session.run(None, {name: x[:, start:end]}))
        start += 2 * rows


times = {size: [] for size in sizes}
for size in sizes:  # warm-up: every strip shape seen once
    for x in inputs:
        in_strips(x, size)
for r in range(rounds):
    for size in sizes if r % 2 == 0 else sizes[::-1]:
        t = time.perf_counter()
        for _ in range(3):
            for x in inputs:
                in_strips(x, size)
        times[size].append((time.perf_counter() - t) / 3 * 1000)
print(" ".join(f"{size}: {np.median(ms):.2f} ms" for size, ms in times.items()))
