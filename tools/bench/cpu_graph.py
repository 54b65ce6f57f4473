#!/usr/bin/env python3
"""One model's graph as the agent on cpu:0 loads it, step by step: the file as shipped, after
vision's rewrites with float16 widened to float32 but no Winograd (`rewrite_model --winograd-min
100000`), and after all of them (`rewrite_model`, the agent's graph). Each timed with onnxruntime
at 1 intra-op thread (the agent's sessions) and 2, memory pattern off (as the agent runs), in
alternating rounds after a warm-up run of each (so a busy moment of the machine falls on all three
alike); prints the best round's seconds per run of each, the speed-ups, and the largest
difference of the first output from the file's. Then each graph's memory, in a process of its own
at one thread: VmRSS once the session is made, VmHWM after a run.

usage: cpu_graph.py REWRITE_MODEL_BIN WORKDIR MODEL.onnx N,C,H,W [ROUNDS]
       cpu_graph.py --memory MODEL.onnx N,C,H,W   (one graph's memory line)
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
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory(model, shape):
    s = session(model, 1)
    loaded = status_mib("VmRSS")
    s.run(None, {s.get_inputs()[0].name: np.zeros(shape, np.float32)})
    print(f"VmRSS loaded {loaded:.0f} MiB, VmHWM after a run {status_mib('VmHWM'):.0f} MiB")


def main(argv):
    if len(argv) == 4 and argv[1] == "--memory":
        return memory(argv[2], [int(v) for v in argv[3].split(",")])
    if len(argv) not in (5, 6):
        sys.exit(__doc__)
    rewrite, work, model, shape = argv[1], argv[2], argv[3], [int(v) for v in argv[4].split(",")]
    rounds = int(argv[5]) if len(argv) == 6 else 3
    os.makedirs(work, exist_ok=True)
    stem = os.path.splitext(os.path.basename(model))[0]
    graphs = {"file": model}
    for name, extra in (("widened", ["--winograd-min", "100000"]), ("agent", [])):
        out = os.path.join(work, f"{stem}-{name}.onnx")
        p = subprocess.run([rewrite, model, out] + extra, check=True, capture_output=True, text=True)
        print(f"{name}: {p.stdout.strip()}")
        graphs[name] = out
    x = np.random.default_rng(0).uniform(-0.5, 0.5, shape).astype(np.float32)
    for threads in (1, 2):
        sessions = {k: session(p, threads) for k, p in graphs.items()}
        feed = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
        outs = {k: s.run(None, feed[k])[0] for k, s in sessions.items()}
        best = {k: float("inf") for k in sessions}
        for _ in range(rounds):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, feed[k])
                best[k] = min(best[k], time.perf_counter() - t)
        diff = {k: float(np.abs(outs[k] - outs["file"]).max()) for k in sessions}
        print(f"{threads} thread(s): file {best['file']:.3f} s, widened {best['widened']:.3f} s "
              f"({best['file'] / best['widened']:.2f}x), agent's graph {best['agent']:.3f} s "
              f"({best['file'] / best['agent']:.2f}x); largest difference from the file: "
              f"widened {diff['widened']:.1e}, agent's {diff['agent']:.1e}")
    for name, path in graphs.items():
        p = subprocess.run([sys.executable, argv[0], "--memory", path, argv[4]], check=True,
                           capture_output=True, text=True)
        print(f"memory, {name}: {p.stdout.strip()}")


if __name__ == "__main__":
    main(sys.argv)
