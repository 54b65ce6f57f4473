#!/usr/bin/env python3
"""Summarises ONNX Runtime profile files (SMARTPIPE_ORT_PROFILE=PREFIX): per file, the runs'
total time and, per operator and provider, the nodes' kernel time, so that time spent
outside the kernels (copies, allocation, synchronisation) shows as the difference.

usage: ort_profile.py FILE...
"""
import collections
import json
import sys


def main():
    for path in sys.argv[1:]:
        events = json.load(open(path))
        runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
        nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        by_op = collections.defaultdict(lambda: [0, 0])
        for e in nodes:
            key = (e["args"].get("op_name"), e["args"].get("provider"))
            by_op[key][0] += e["dur"]
            by_op[key][1] += 1
        run_us = sum(e["dur"] for e in runs)
        kernel_us = sum(v[0] for v in by_op.values())
        print(f"{path}: {len(runs)} runs, {run_us / 1e3:.1f} ms in runs, "
              f"{kernel_us / 1e3:.1f} ms in kernels ({100 * kernel_us / max(run_us, 1):.0f} %)")
        for (op, prov), (us, n) in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:8]:
            print(f"  {op:<12} {prov:<24} {n:6d} nodes {us / 1e3:9.1f} ms")


if __name__ == "__main__":
    main()
