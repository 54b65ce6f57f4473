#!/usr/bin/env python3
"""Each model as its file and as the agent on cpu:0 loads it (vision's rewrite_model example writes
that graph), timed with onnxruntime at the given intra-op thread counts: best of seven alternating
rounds of about 0.3 s each, memory pattern off as the agent runs. Prints one line per model and
thread count: ms per run both ways, the speed-up, and whether every output is bit for bit the same.

usage: rewrite_ab.py [--base BASE_REWRITE_MODEL_BIN] REWRITE_MODEL_BIN WORKDIR MODELS_DIR THREADS NAME:D0,D1,... [NAME:SHAPE ...]
  e.g. rewrite_ab.py target/release/examples/rewrite_model target/bench-rewrite .smartpipe/models 1,2 \\
       mtcnn-pnet:1,432,768,3 mtcnn-rnet:32,24,24,3 mtcnn-onet:8,48,48,3 movenet-multipose:1,256,256,3
Inputs are uniform in [-1, 1], or [0, 255] for a model whose input is named `input` and NHWC with 3
channels last and a side of 256 (MoveNet's 0..255 pixels).
With --base, the "file" side is the graph another build's rewrite_model writes (e.g. the previous
commit's, to time one new rewrite alone); outputs that differ print their largest difference.
"""
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_mem_pattern = False
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def best_ms(sessions, feed):
    t = time.perf_counter()
    sessions[0].run(None, feed)
    n = max(3, int(0.3 / max(1e-4, time.perf_counter() - t)))
    best = [float("inf")] * len(sessions)
    for _ in range(7):
        for k, s in enumerate(sessions):
            t = time.perf_counter()
            for _ in range(n):
                s.run(None, feed)
            best[k] = min(best[k], (time.perf_counter() - t) / n * 1000)
    return best


def main(argv):
    base = None
    if len(argv) > 2 and argv[1] == "--base":
        base, argv = argv[2], argv[:1] + argv[3:]
    if len(argv) < 6:
        sys.exit(__doc__)
    tool, work, models, threads = argv[1], argv[2], argv[3], [int(t) for t in argv[4].split(",")]
    os.makedirs(work, exist_ok=True)
    for spec in argv[5:]:
        name, dims = spec.split(":")
        shape = [int(d) for d in dims.split(",")]
        file = os.path.join(models, f"{name}.onnx")
        rewritten = os.path.join(work, f"{name}.onnx")
        report = subprocess.run([tool, file, rewritten], check=True, capture_output=True, text=True).stdout
        if base:
            file = os.path.join(work, f"{name}.base.onnx")
            subprocess.run([base, os.path.join(models, f"{name}.onnx"), file], check=True, capture_output=True)
        x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
        for t in threads:
            a, b = session(file, t), session(rewritten, t)
            inp = a.get_inputs()[0].name
            if inp == "input" and shape[-1] == 3 and 256 in shape:
                x = (x + 1) * 127.5
            feed = {inp: x}
            pairs = list(zip(a.run(None, feed), b.run(None, feed)))
            same = all(np.array_equal(p, q) for p, q in pairs)
            worst = max(float(np.max(np.abs(p.astype(np.float64) - q.astype(np.float64)), initial=0)) for p, q in pairs)
            file_ms, new_ms = best_ms([a, b], feed)
            side = "base" if base else "file"
            print(f"{name} {shape} threads {t}: {side} {file_ms:.3f} ms, rewritten {new_ms:.3f} ms, "
                  f"{file_ms / new_ms:.2f}x, bit-identical {same}" + ("" if same else f" (largest difference {worst:.2e})"),
                  flush=True)
        print(f"  {report.strip()}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
