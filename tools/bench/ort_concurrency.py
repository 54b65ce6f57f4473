#!/usr/bin/env python3
"""Would the GPU agent on `cpu:0` be faster running two models at once, one ORT thread each,
instead of one after the other at two threads? (Issue 3's OCR target, BENCHMARKS.md.)

Runs PP-OCR's detector (1x3x736x736) and recogniser (8x3x48x320) from .smartpipe/models, N pairs,
with ONNX Runtime's CPU provider and idle spinning off (as the agent): sequentially, and in two
threads (det in one, rec in the other), at 2 and at 1 intra-op threads. Prints ms per pair.

usage: .smartpipe/venv/bin/python tools/bench/ort_concurrency.py [N]
"""
import os
import sys
import threading
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, ".smartpipe", "models")


def session(name, threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(os.path.join(MODELS, name), o, providers=["CPUExecutionProvider"])


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    rng = np.random.default_rng(0)
    det_in = rng.random((1, 3, 736, 736), dtype=np.float32)
    rec_in = rng.random((8, 3, 48, 320), dtype=np.float32)
    for threads in (2, 1):
        det, rec = session("ppocr-det.onnx", threads), session("ppocr-rec.onnx", threads)
        dn, rn = det.get_inputs()[0].name, rec.get_inputs()[0].name
        det.run(None, {dn: det_in})
        rec.run(None, {rn: rec_in})
        t = time.perf_counter()
        for _ in range(n):
            det.run(None, {dn: det_in})
            rec.run(None, {rn: rec_in})
        seq = (time.perf_counter() - t) / n
        t = time.perf_counter()
        a = threading.Thread(target=lambda: [det.run(None, {dn: det_in}) for _ in range(n)])
        b = threading.Thread(target=lambda: [rec.run(None, {rn: rec_in}) for _ in range(n)])
        a.start(), b.start(), a.join(), b.join()
        par = (time.perf_counter() - t) / n
        print(f"{threads} intra-op thread(s): one after the other {seq * 1e3:.0f} ms per pair, "
              f"det and rec at once {par * 1e3:.0f} ms per pair")


if __name__ == "__main__":
    main()
