#!/usr/bin/env python3
"""Is one model run over a whole batch slower than the same batch in parts of a few rows, and are
the outputs the same? (The manifest's `max_run_values`, docs/decisions.md, session 32.) Runs MODEL
on a random input of SHAPE at one intra-op thread (spinning off, memory pattern off, as the agent
runs), whole and in parts of each row count of ROWS, interleaved round by round; prints each
count's median ms and fails unless every part-wise output equals the whole run's bit for bit.
Start two copies at once to see it under the load of the agent's second executor.

usage: batch_split.py MODEL.onnx D0,D1,... ROWS,ROWS,... [ROUNDS]
  e.g. batch_split.py target/bench-rewrite/mtcnn-rnet.onnx 400,24,24,3 400,128,64,32,16 10
       batch_split.py target/bench-rewrite/ppocr-rec.onnx 6,3,48,1200 6,3,2,1 6
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_mem_pattern = False
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    path = argv[1]
    shape = [int(d) for d in argv[2].split(",")]
    counts = [int(c) for c in argv[3].split(",")]
    rounds = int(argv[4]) if len(argv) > 4 else 10
    sess = session(path)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).random(shape, dtype=np.float32)

    def run(rows):
        parts = [sess.run(None, {name: x[i : i + rows]}) for i in range(0, shape[0], rows)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    whole = run(shape[0])
    times = {c: [] for c in counts}
    for _ in range(2):
        for c in counts:
            run(c)
    for _ in range(rounds):
        for c in counts:
            t = time.perf_counter()
            outs = run(c)
            times[c].append(time.perf_counter() - t)
            if not all(np.array_equal(a, b) for a, b in zip(outs, whole)):
                sys.exit(f"{path}: runs of {c} rows answer otherwise than the whole batch")
    cells = " ".join(f"{c} rows: {np.median(times[c]) * 1000:.2f} ms" for c in counts)
    print(f"{path} {shape}, median of {rounds}: {cells}; outputs identical")


if __name__ == "__main__":
    main(sys.argv)
