#!/usr/bin/env python3
"""Where ONNX Runtime's time goes in one model at a given input shape and intra-op thread count:
ORT's per-node profile (enable_profiling) over RUNS runs after three warm-up runs, kernel times
summed by operator, then the slowest nodes with their input shapes, and each convolution's rate
(multiply-adds per second; ORT's NCHWc layout pads channel counts to its block, which the
weight shape it reports shows). Spinning off and the memory pattern off, as the agent runs.

usage: ort_ops.py MODEL.onnx D0,D1,... [THREADS [RUNS [TOP]]]
  e.g. ort_ops.py target/bench-rewrite/ppocr-rec.onnx 6,3,48,320 1
An int32 input (MoveNet) is fed uniform 0..255, a float input uniform 0..1.
"""
import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def kernel_events(events):
    """The per-node kernel-time events of an ORT profile (its JSON events), with the node's name."""
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            yield e["name"][: -len("_kernel_time")], e


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    path, shape = argv[1], [int(d) for d in argv[2].split(",")]
    threads = int(argv[3]) if len(argv) > 3 else 1
    runs = int(argv[4]) if len(argv) > 4 else 8
    top = int(argv[5]) if len(argv) > 5 else 12
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_mem_pattern = False
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    rng = np.random.default_rng(0)
    if "int32" in inp.type:
        x = rng.integers(0, 256, shape).astype(np.int32)
    else:
        x = rng.uniform(0, 1, shape).astype(np.float32)
    for _ in range(3 + runs):
        s.run(None, {inp.name: x})
    with open(s.end_profiling()) as f:
        events = json.load(f)
    # the runs after the warm-up, in the order they ran
    run_ms = [e["dur"] / 1000 for e in events if e.get("name") == "model_run"][-runs:]
    by_op, by_node, info = collections.Counter(), collections.Counter(), {}
    for node, e in kernel_events(events):
        args = e["args"]
        by_op[args["op_name"]] += e["dur"]
        by_node[node] += e["dur"]
        shapes = [list(t.values())[0] for t in args.get("input_type_shape", [])]
        out = [list(t.values())[0] for t in args.get("output_type_shape", [])]
        info[node] = (args["op_name"], shapes, out[0] if out else [])
    # the profile holds the warm-up runs too: scale every sum to one run
    per_run = 1000 * (3 + runs)
    total = sum(by_op.values())
    print(f"{path} {shape}, {threads} thread(s): median run {np.median(run_ms):.2f} ms")
    print("| operator | share of kernel time |")
    print("|---|---|")
    for op, d in by_op.most_common(12):
        print(f"| {op} | {100 * d / total:.1f} % |")
    print(f"\nslowest nodes (ms a run):")
    for node, d in by_node.most_common(top):
        op, shapes, out = info[node]
        rate = ""
        if op == "Conv" and len(shapes) > 1 and len(shapes[1]) == 4 and out:
            macs = float(np.prod(out)) * float(np.prod(shapes[1][1:]))
            rate = f", {macs / 1e6:.0f} M multiply-adds, {macs / (d / per_run / 1e3) / 1e9:.1f} G/s"
        print(f"  {d / per_run:6.2f}  {op} {shapes} -> {out}{rate}")


if __name__ == "__main__":
    main(sys.argv)
