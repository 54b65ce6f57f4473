#!/usr/bin/env python3
"""The node's shared GPU agent: per-app request latency at the agent under its cross-app
schedule (earliest deadline first) against first come first served (issue 13, item 2).

Two apps go into one daemon (`start --detach`), so their GPU stages share the node's agent on
cpu:0. A: request-guarantee, P-Net on 320x240 frames paced at RATE/s (its deadline: creation +
10 s, the default of a guaranteed app without a latency quota, or its quota). B: best-effort, the
same model on 640x480 frames, unpaced, with REPLICAS GPU-stage replicas and batches of 4: a
burst that keeps several requests queued at the agent at all times. B starts first; A runs COUNT
items. Each mode runs on a fresh daemon: `edf` is the agent as it is (earliest deadline first,
one executor kept for guaranteed requests while it serves them), `edf-nokeep` without the kept
executor (`SMARTPIPE_AGENT_KEEP=0`), `fcfs` first come first served without it (the agent before
both; `SMARTPIPE_AGENT_ORDER=fcfs`). A's GPU stage
logs how long each of its requests took at the agent (queue + run); the table shows its p50 and
p99, A's end-to-end p99 and B's throughput. Both modes check that A delivered every item once.

usage: agent_schedule.py [--rate R] [--count N] [--replicas K] [--modes edf,edf-nokeep,fcfs] [--json OUT]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUP = os.environ.get("SMARTPIPE_SUPERVISOR", os.path.join(ROOT, "target", "release", "supervisor"))


def app(name, service, w, h, count, fps, replicas, batch):
    net = {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"],
           "params": {"model": "mtcnn-pnet"}, "batch": {"size": batch, "max_wait_ms": 2}}
    if replicas > 1:
        net["replicas"] = replicas
    return {
        "name": name, "service_type": service,
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen",
             "params": {"width": w, "height": h, "count": count, "fps": fps}},
            {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"],
             "params": {"model": "mtcnn-pnet"}},
            net,
            {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"],
             "params": {"model": "mtcnn-pnet"}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["post"],
             "params": {"format": "csv", "path": f"{name}.csv"}},
        ],
    }


def write(work, spec):
    path = os.path.join(work, spec["name"] + ".json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return path


def start(path, run_dir, env):
    r = subprocess.run([SUP, "start", path, "--detach", "--run-dir", run_dir], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"start {path} failed:\n{r.stdout}{r.stderr}")


def wait_file(path, timeout):
    end = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > end:
            sys.exit(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)


def one_mode(work, mode, args):
    env = dict(os.environ, SMARTPIPE_RUNTIME_DIR=os.path.join(work, f"runtime-{mode}"),
               SMARTPIPE_MANIFEST=os.path.join(ROOT, "apps", "models.json"),
               SMARTPIPE_MODELS_DIR=os.path.join(ROOT, ".smartpipe", "models"))
    if mode == "fcfs":
        env["SMARTPIPE_AGENT_ORDER"] = "fcfs"
    if mode in ("fcfs", "edf-nokeep"):
        env["SMARTPIPE_AGENT_KEEP"] = "0"
    elif mode != "edf":
        sys.exit(f"unknown mode {mode!r}: edf, edf-nokeep or fcfs")
    d = os.path.join(work, mode)
    os.makedirs(d)
    b = write(d, app("b", "best-effort", 640, 480, 1_000_000, 0, args.replicas, 4))
    a = write(d, app("a", "request-guarantee", 320, 240, args.count, args.rate, 1, 1))
    start(b, os.path.join(d, "run-b"), env)
    time.sleep(args.warm)  # B's burst fills the agent's queue before A arrives
    start(a, os.path.join(d, "run-a"), env)
    wait_file(os.path.join(d, "run-a", "summary.json"), args.count / args.rate + 120)
    b_done = time.time()
    subprocess.run([SUP, "shutdown", "--timeout", "60"], env=env, capture_output=True)
    with open(os.path.join(d, "run-a", "summary.json")) as f:
        sa = json.load(f)
    with open(os.path.join(d, "a.csv")) as f:
        seqs = [int(line.split(",")[1]) for line in f.read().splitlines()[1:]]
    if sorted(set(seqs)) != list(range(args.count)) or len(seqs) != len(set(seqs)):
        sys.exit(f"{mode}: A's rows are not every item exactly once")
    with open(os.path.join(d, "run-a", "logs", "net#0.log")) as f:
        m = re.search(r"agent requests: (\d+), p50 ([\d.]+) ms, p99 ([\d.]+) ms", f.read())
    if not m:
        sys.exit(f"{mode}: A's GPU stage logged no agent latency")
    wait_file(os.path.join(d, "run-b", "summary.json"), 60)
    with open(os.path.join(d, "run-b", "summary.json")) as f:
        sb = json.load(f)
    return {
        "mode": mode,
        "a_agent_requests": int(m.group(1)),
        "a_agent_p50_ms": float(m.group(2)),
        "a_agent_p99_ms": float(m.group(3)),
        "a_p99_ms": sa["latency_ms"]["p99"],
        "a_items": sa["tails"][0]["items"],
        "b_throughput_per_min": sb["throughput_per_min"],
        "_b_done": b_done,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=5.0)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--warm", type=float, default=3.0)
    ap.add_argument("--modes", default="edf,edf-nokeep,fcfs")
    ap.add_argument("--json")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-agent-schedule-")
    rows = [one_mode(work, mode, args) for mode in args.modes.split(",")]
    print(f"A: request-guarantee, P-Net 320x240 at {args.rate:g}/s, {args.count} items; "
          f"B: best-effort, P-Net 640x480 unpaced, {args.replicas} GPU replicas, batch 4")
    print("| agent schedule | A requests | A at the agent p50 ms | p99 ms | A end-to-end p99 ms "
          "| B items/min |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['a_agent_requests']} | {r['a_agent_p50_ms']:.1f} | "
              f"{r['a_agent_p99_ms']:.1f} | {r['a_p99_ms']:.1f} | {r['b_throughput_per_min']:.0f} |")
    first = rows[0]
    for r in rows[1:]:
        print(f"{r['mode']} / {first['mode']}: A's p99 at the agent "
              f"{r['a_agent_p99_ms'] / first['a_agent_p99_ms']:.2f}x, "
              f"p50 {r['a_agent_p50_ms'] / first['a_agent_p50_ms']:.2f}x, "
              f"end-to-end p99 {r['a_p99_ms'] / first['a_p99_ms']:.2f}x, "
              f"B items/min {r['b_throughput_per_min'] / first['b_throughput_per_min']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], f,
                      indent=1)


if __name__ == "__main__":
    main()
