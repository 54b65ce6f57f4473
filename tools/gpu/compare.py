#!/usr/bin/env python3
"""Summarises tools/gpu/device_check.sh's faces runs as a markdown table: per batch size and
device, replies, throughput, latency and the agent's busy time per run; then whether the CUDA
runs found the same faces as the CPU runs (per frame: count, box IoU, landmark distance).

usage: compare.py OUT_DIR
"""
import glob
import json
import math
import os
import sys


def iou(a, b):
    ix = max(0.0, min(a["x2"], b["x2"]) - max(a["x1"], b["x1"]))
    iy = max(0.0, min(a["y2"], b["y2"]) - max(a["y1"], b["y1"]))
    inter = ix * iy
    area = lambda r: (r["x2"] - r["x1"]) * (r["y2"] - r["y1"])
    return inter / (area(a) + area(b) - inter) if inter > 0 else 0.0


def by_frame(path):
    frames = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            frames.setdefault(r["seq"], []).append(r)
    return frames


def main():
    out = sys.argv[1]
    inproc = sorted(glob.glob(os.path.join(out, "inproc-*.json")))
    if inproc:
        print("| in-process loop (mp0: memory pattern off) | threads | load s | frames/s (first pass) |"
              " second pass ms/frame by step |")
        print("| --- | --- | --- | --- | --- |")
        for path in inproc:
            try:
                r = json.load(open(path))
            except ValueError:
                print(f"| {os.path.basename(path)} | failed | | | |")
                continue
            prof = r.get("profile_ms_per_frame")
            print(f"| {os.path.basename(path)[len('inproc-'):-len('.json')]} | {r['threads']} | "
                  f"{r['load_s']:.2f} | {r['fps']:.1f} | {json.dumps(prof)} |")
        print()
    print("| batch | device | replies | throughput (frames/min) | p50 ms | p99 ms | agent runs | agent ms/run |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = {}
    for path in sorted(glob.glob(os.path.join(out, "faces-b*-*.json"))):
        name = os.path.basename(path)[len("faces-"):-len(".json")]
        b, dev = name.split("-")
        r = json.load(open(path))
        s = r.get("summary") or {}
        agent = [v for k, v in (s.get("stages") or {}).items() if k.startswith("gpu-agent")]
        runs = sum(a["services"] for a in agent)
        busy = sum(a["busy_ns"] for a in agent) / 1e6
        lat = s.get("latency_ms") or {}
        rows[(b, dev)] = s
        print(f"| {b[1:]} | {dev} | {s.get('items_out')}/{s.get('items_in')} | "
              f"{s.get('throughput_per_min', float('nan')):.0f} | {lat.get('p50', float('nan')):.1f} | "
              f"{lat.get('p99', float('nan')):.1f} | {runs} | {busy / runs if runs else float('nan'):.2f} |")
    for b in sorted({k[0] for k in rows}):
        cpu, cuda = (rows.get((b, "cpu")) or {}), (rows.get((b, "cuda")) or {})
        if cpu.get("throughput_per_min") and cuda.get("throughput_per_min"):
            print(f"\n{b}: cuda/cpu throughput ratio {cuda['throughput_per_min'] / cpu['throughput_per_min']:.2f}")
        a_path, c_path = os.path.join(out, f"faces-{b}-cuda.jsonl"), os.path.join(out, f"faces-{b}-cpu.jsonl")
        if not (os.path.exists(a_path) and os.path.exists(c_path)):
            continue
        a, c = by_frame(a_path), by_frame(c_path)
        count_diff = sum(1 for s in set(a) | set(c) if len(a.get(s, [])) != len(c.get(s, [])))
        worst_iou, worst_lm = 1.0, 0.0
        for s in set(a) & set(c):
            for g in a[s]:
                best = max(c[s], key=lambda h: iou(g, h), default=None)
                if best is None:
                    continue
                worst_iou = min(worst_iou, iou(g, best))
                lm = max(math.dist(g["landmarks"][2 * k:2 * k + 2], best["landmarks"][2 * k:2 * k + 2])
                         for k in range(5))
                worst_lm = max(worst_lm, lm)
        print(f"{b}: frames cuda {len(a)}, cpu {len(c)}; frames whose face count differs: {count_diff}; "
              f"worst matched IoU {worst_iou:.4f}; worst landmark distance {worst_lm:.3f} px")


if __name__ == "__main__":
    main()
