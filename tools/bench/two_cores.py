#!/usr/bin/env python3
"""What a second core gives on this machine: compute-bound and memory-bound work, one process
alone and then two at once (each process one BLAS thread, 4 s a measurement). Compute that stays
in L1 scales to two cores; copies of arrays larger than L2 share the L3 and memory bandwidth.
Prints a markdown table (BENCHMARKS.md, "Why two cores give the agent about 1.5× one").

usage: two_cores.py [SECONDS]
"""
import os
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402  (after the thread variables)


def matmuls(n, seconds):
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    t, k = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        for _ in range(20):
            a @ b
        k += 20
    return f"{k / (time.perf_counter() - t):,.0f} /s"


def copies(mb, seconds):
    a = np.ones(mb * 262144, np.float32)
    b = np.empty_like(a)
    t, k = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        np.copyto(b, a)
        k += 1
    return f"{k * mb * 2 / (time.perf_counter() - t) / 1024:.1f} GB/s"


WORK = {
    "64×64 float32 matmuls (in L1)": lambda s: matmuls(64, s),
    "512×512 float32 matmuls": lambda s: matmuls(512, s),
    "copy of 1 MB arrays (in L2)": lambda s: copies(1, s),
    "copy of 8 MB arrays (L3)": lambda s: copies(8, s),
    "copy of 64 MB arrays (memory)": lambda s: copies(64, s),
}


def main(argv):
    if len(argv) == 3 and argv[1] == "--one":
        name, seconds = argv[2].rsplit("@", 1)
        print(WORK[name](float(seconds)))
        return
    seconds = argv[1] if len(argv) > 1 else "4"
    one = lambda name: [sys.executable, __file__, "--one", f"{name}@{seconds}"]  # noqa: E731
    print("| work | one process | each of two at once |")
    print("|---|---|---|")
    for name in WORK:
        alone = subprocess.run(one(name), check=True, capture_output=True, text=True).stdout.strip()
        pair = [subprocess.Popen(one(name), stdout=subprocess.PIPE, text=True) for _ in range(2)]
        both = [p.communicate()[0].strip() for p in pair]
        print(f"| {name} | {alone} | {both[0]} and {both[1]} |", flush=True)


if __name__ == "__main__":
    main(sys.argv)
