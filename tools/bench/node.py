#!/usr/bin/env python3
"""'Many apps on one node' (issue 13): a request-guarantee app A keeps its quota while other
apps come.

A: image.gen 320x180 paced at RATE/s -> image.resize 1280x720 (the CPU-bound stage, replicas
can share it) -> csv, request-guarantee, quota throughput >= 0.9 x RATE x 60 per min and
p99 <= QUOTA_MS; RATE keeps --busy cores busy by a profile of the same tasks. B: best-effort, no quota, an unpaced
1280x720 source -> two resizes -> csv: it takes every core it is given. C: like A at a rate that
needs more cores than A leaves. A, B and C are profiled first (`supervisor profile`), so A and C
are admitted against the node's ledger.

Phase 1: A alone for SECONDS. Phase 2: A, with B started AT s into the run and stopped when A
ends. Phase 3: A, with C started AT s into the run (refused: the message is recorded). Each phase
is its own run of A; A's summary gives its throughput, p99 and whether each quota was met; B's
summary its throughput and losses. Every run of A checks that its rows are 0..n-1 in order.

usage: node.py [--busy CORES | --rate R] [--seconds S] [--at S] [--quota-ms MS] [--json OUT]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUP = os.environ.get("SMARTPIPE_SUPERVISOR", os.path.join(ROOT, "target", "release", "supervisor"))


def guaranteed(name, rate, count, quota_ms):
    return {
        "name": name, "service_type": "request-guarantee", "request_frequency": rate,
        "quota": {"throughput_per_min": 0.9 * rate * 60, "max_latency_ms": quota_ms},
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen",
             "params": {"width": 320, "height": 180, "count": count, "fps": rate,
                        "pattern": "solid"}},
            {"name": "big", "kind": "cpu", "function": "image.resize", "inputs": ["gen"],
             "params": {"width": 1280, "height": 720}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["big"],
             "params": {"format": "csv", "path": f"{name}.csv"}},
        ],
    }


def greedy(name):
    return {
        "name": name, "service_type": "best-effort",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen",
             "params": {"width": 1280, "height": 720, "count": 1000000, "fps": 0}},
            {"name": "mid", "kind": "cpu", "function": "image.resize", "inputs": ["gen"],
             "params": {"width": 640, "height": 360}},
            {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["mid"],
             "params": {"width": 320, "height": 180}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["small"],
             "params": {"format": "csv", "path": f"{name}.csv"}},
        ],
    }


def write(work, name, spec):
    path = os.path.join(work, f"{name}.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return path


def profile(path, env):
    subprocess.run([SUP, "profile", path, "--items", "40"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def check_rows(csv, count):
    with open(csv) as f:
        seqs = [int(line.split(",")[1]) for line in f.read().splitlines()[1:]]
    if seqs != list(range(count)):
        sys.exit(f"{csv}: rows are not 0..{count - 1} in order")


def run_a(work, a_path, count, env, phase, at, other=None):
    """Run A in the foreground; at `at` s start `other` (a path) if given. Returns A's summary,
    the other's process output and run dir."""
    run_dir = os.path.join(work, f"run-a-{phase}")
    csv = os.path.join(work, "a.csv")
    if os.path.exists(csv):
        os.remove(csv)
    a = subprocess.Popen([SUP, "start", a_path, "--run-dir", run_dir], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started, other_proc, other_dir = time.time(), None, None
    if other:
        time.sleep(max(0.0, at - (time.time() - started)))
        other_dir = os.path.join(work, f"run-other-{phase}")
        other_proc = subprocess.Popen([SUP, "start", other, "--run-dir", other_dir], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True)
    _, err = a.communicate()
    if a.returncode != 0:
        sys.exit(f"A failed in phase {phase}:\n{err}")
    other_err = None
    if other_proc:
        if other_proc.poll() is None:
            name = json.load(open(other))["name"]
            subprocess.run([SUP, "stop", name], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        _, other_err = other_proc.communicate(timeout=60)
    check_rows(csv, count)
    return summary(run_dir), other_err, other_dir


def qos(s, metric):
    for q in s["qos"]:
        if q["metric"] == metric:
            return q
    return {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=0.0, help="A's rate (default: --busy cores)")
    ap.add_argument("--busy", type=float, default=0.8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--at", type=float, default=5.0)
    ap.add_argument("--quota-ms", type=float, default=500.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-node-")
    env = dict(os.environ, SMARTPIPE_RUNTIME_DIR=os.path.join(work, "runtime"))
    # What an item costs here (every task), from a profile of the same tasks: A keeps
    # --busy cores busy (its reservation), C 1.35 cores (it fits the node alone, not beside A).
    calib = write(work, "calib", guaranteed("calib", 20, 200, args.quota_ms))
    profile(calib, env)
    prof = json.load(open(os.path.join(work, "profiles",
                                       next(f for f in os.listdir(os.path.join(work, "profiles"))
                                            if "calib" in f))))
    per_item = sum(t["points"][0]["seconds"] for t in prof["tasks"].values())
    rate = args.rate or args.busy / per_item
    count = int(rate * args.seconds)
    a_path = write(work, "a", guaranteed("a", rate, count, args.quota_ms))
    b_path = write(work, "b", greedy("b"))
    profile(a_path, env)
    c_rate = 1.35 / per_item
    c_path = write(work, "c", guaranteed("c", c_rate, int(c_rate * 10), args.quota_ms))
    profile(c_path, env)
    rows = []
    for phase, other in [("alone", None), ("with best-effort B", b_path),
                         ("with guaranteed C (refused)", c_path)]:
        s, other_err, other_dir = run_a(work, a_path, count, env, phase.split()[0] + phase[-3:],
                                        args.at, other)
        row = {
            "phase": phase,
            "a_throughput_per_min": s["throughput_per_min"],
            "a_p99_ms": s["latency_ms"]["p99"],
            "a_met": all(q["met"] for q in s["qos"]),
            "a_quota": {"throughput_per_min": qos(s, "throughput_per_min").get("quota"),
                        "p99_ms": qos(s, "latency_p99_ms").get("quota")},
        }
        if other == b_path:
            b = summary(other_dir)
            row["b_items_out"] = b["items_out"]
            row["b_throughput_per_min"] = b["throughput_per_min"]
            row["b_lost"] = b["lost"]
        if other == c_path:
            row["c_refusal"] = next((l for l in (other_err or "").splitlines()
                                     if "refused" in l), "(not refused)")
        rows.append(row)
    print(f"A: {rate:.1f}/s for {args.seconds:g} s, quota {0.9 * rate * 60:.0f}/min and "
          f"p99 <= {args.quota_ms:g} ms; B: best effort, unpaced; C: {c_rate:.1f}/s")
    print("| phase | A items/min | A p99 ms | A meets its quota | B items/min (lost) | C |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        b = (f"{r['b_throughput_per_min']:.0f} ({sum(r['b_lost'].values())})"
             if "b_items_out" in r else "-")
        print(f"| {r['phase']} | {r['a_throughput_per_min']:.0f} | {r['a_p99_ms']:.1f} | "
              f"{'yes' if r['a_met'] else 'NO'} | {b} | {r.get('c_refusal', '-')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
