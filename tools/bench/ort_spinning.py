#!/usr/bin/env python3
"""Would ONNX Runtime idle spinning make the GPU agent on cpu:0 faster? (Issue 3, OCR target;
BENCHMARKS.md, Models, run 4.) Times PP-OCR det (1x3x736x736) and rec (6x3x48x320) at 2 intra-op
threads with session.intra_op.allow_spinning 0 and 1, two rounds.

usage: .smartpipe/venv/bin/python tools/bench/ort_spinning.py
"""
import os, time, numpy as np, onnxruntime as ort
M = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".smartpipe", "models")
def sess(name, spin, threads=2):
    o=ort.SessionOptions(); o.intra_op_num_threads=threads; o.inter_op_num_threads=1
    o.add_session_config_entry("session.intra_op.allow_spinning", spin)
    return ort.InferenceSession(os.path.join(M,name),o,providers=["CPUExecutionProvider"])
rng=np.random.default_rng(0)
det_in=rng.random((1,3,736,736),dtype=np.float32); rec_in=rng.random((6,3,48,320),dtype=np.float32)
for rnd in range(2):
  for spin in ("0","1"):
    d,r=sess("ppocr-det.onnx",spin),sess("ppocr-rec.onnx",spin)
    dn,rn=d.get_inputs()[0].name,r.get_inputs()[0].name
    d.run(None,{dn:det_in}); r.run(None,{rn:rec_in})
    t=time.perf_counter()
    for _ in range(6): d.run(None,{dn:det_in})
    td=(time.perf_counter()-t)/6; t=time.perf_counter()
    for _ in range(12): r.run(None,{rn:rec_in})
    tr=(time.perf_counter()-t)/12
    print(f"spin={spin} det {td*1e3:.1f} ms rec(6x320) {tr*1e3:.1f} ms")
