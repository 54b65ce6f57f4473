#!/usr/bin/env python3
"""Where PP-OCRv4's ONNX Runtime time goes, before and after SmartPipe's graph rewrites
(vision::onnx_graph): runs rapidocr_onnxruntime over the images once to capture every det and rec
input it makes, then times each model on those inputs (ORT 2 intra-op threads, spinning off as in
the agent, best of 3 rounds) from the package's files and from the rewritten files, checks the
outputs agree, and sums ORT's per-node profile by operator. Prints a markdown summary.

usage: rewrite_ops.py REWRITTEN_DIR IMAGE...   (REWRITTEN_DIR/ppocr-{det,rec}.onnx, made by
       `target/release/examples/rewrite_model`; tools/bench/models.sh makes them in
       target/bench-models/rewritten)
"""
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from ort_ops import kernel_events
from rapidocr_onnxruntime import RapidOCR
from rapidocr_onnxruntime.utils import infer_engine


def capture(images):
    calls = collections.defaultdict(list)
    original = infer_engine.OrtInferSession.__call__

    def recording(self, x):
        path = self.session._model_path
        calls["det" if "_det_" in path else "rec" if "_rec_" in path else "cls"].append((path, x.copy()))
        return original(self, x)

    infer_engine.OrtInferSession.__call__ = recording
    engine = RapidOCR(intra_op_num_threads=2)
    for image in images:
        engine(image)
    infer_engine.OrtInferSession.__call__ = original
    return calls


def session(path, profile_dir=None):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 2
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_dir:
        o.enable_profiling = True
        o.profile_file_prefix = os.path.join(profile_dir, os.path.basename(path))
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def ms_per_call(s, xs):
    name = s.get_inputs()[0].name
    s.run(None, {name: xs[0]})
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for x in xs:
            s.run(None, {name: x})
        best = min(best, time.perf_counter() - t)
    return best / len(xs) * 1000


def op_shares(path, xs, tmp):
    s = session(path, tmp)
    name = s.get_inputs()[0].name
    for x in xs:
        s.run(None, {name: x})
    events = json.load(open(s.end_profiling()))
    per_op = collections.Counter()
    for _, e in kernel_events(events):
        per_op[e["args"].get("op_name")] += e["dur"]
    total = sum(per_op.values())
    return {op: round(100 * d / total, 1) for op, d in per_op.most_common(8)}


def main():
    rewritten, images = sys.argv[1], sys.argv[2:]
    calls = capture(images)
    print("| model | calls | package's file ms/call | rewritten ms/call | ratio | max abs output diff |")
    print("|---|---|---|---|---|---|")
    shares = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in ("det", "rec"):
            path = calls[part][0][0]
            xs = [x for _, x in calls[part]]
            new = os.path.join(rewritten, f"ppocr-{part}.onnx")
            a, b = session(path), session(new)
            diff = max(float(np.abs(a.run(None, {a.get_inputs()[0].name: x})[0]
                                    - b.run(None, {b.get_inputs()[0].name: x})[0]).max()) for x in xs)
            ta, tb = ms_per_call(a, xs), ms_per_call(b, xs)
            print(f"| {part} | {len(xs)} | {ta:.1f} | {tb:.1f} | {tb / ta:.2f} | {diff:.1e} |")
            shares[part] = (op_shares(path, xs, tmp), op_shares(new, xs, tmp))
    print("\nShare of kernel time by operator (%), package's file → rewritten:")
    for part, (a, b) in shares.items():
        print(f"- {part}: {a}\n  → {b}")


if __name__ == "__main__":
    main()
