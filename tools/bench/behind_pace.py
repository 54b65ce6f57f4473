#!/usr/bin/env python3
"""A best-effort source asked for more than it makes, with a latency quota: what reaches the
tails, old binaries against new, alternating rounds (BENCHMARKS.md, "A source behind its
pace").

The app: `image.gen` of 1920x1080 frames at 500/s (far more than two cores generate), a
fan-out to a resize to 320x240 and a pass-through, each into its own jsonl tail; best effort,
`max_latency_ms` 30. Each round runs `SUPERVISOR start --no-daemon` of both builds on the same
app and prints, per build: wall seconds, items out, lost by reason, the latency p99 and max of
what was delivered, and whether every delivered row is within the quota (from the tails' files:
seq and latency_ms of each row).

usage: behind_pace.py OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [WORK_DIR]
  a BIN_DIR holds `supervisor` and the worker binaries of one release build.
"""
import json
import os
import subprocess
import sys
import time

QUOTA_MS = 30


def app(name, work):
    return {
        "name": name,
        "service_type": "best-effort",
        "strategy": "lazy",
        "request_frequency": 500,
        "quota": {"max_latency_ms": QUOTA_MS},
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen",
             "params": {"width": 1920, "height": 1080, "count": 1000, "fps": 500}},
            {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"],
             "params": {"width": 320, "height": 240}},
            {"name": "same", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]},
            {"name": "outa", "kind": "tail", "function": "table.print", "inputs": ["small"],
             "params": {"format": "jsonl", "path": os.path.join(work, f"{name}-a.jsonl")}},
            {"name": "outb", "kind": "tail", "function": "table.print", "inputs": ["same"],
             "params": {"format": "jsonl", "path": os.path.join(work, f"{name}-b.jsonl")}},
        ],
    }


def rows(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    out.append((r["seq"], r["latency_ms"]))
    except FileNotFoundError:
        pass
    return out


def run(bin_dir, name, work):
    spec = app(name, work)
    for t in spec["tasks"]:
        path = t.get("params", {}).get("path")
        if path and os.path.exists(path):
            os.remove(path)
    app_file = os.path.join(work, f"{name}.json")
    with open(app_file, "w") as f:
        json.dump(spec, f)
    run_dir = os.path.join(work, f"{name}-run")
    subprocess.run(["rm", "-rf", run_dir], check=True)
    env = dict(os.environ, SMARTPIPE_WORKER_DIR=bin_dir)
    start = time.monotonic()
    p = subprocess.run(
        [os.path.join(bin_dir, "supervisor"), "start", "--no-daemon", app_file,
         "--run-dir", run_dir],
        env=env, capture_output=True, text=True,
    )
    wall = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"{bin_dir}: exit {p.returncode}\n{p.stderr[-2000:]}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        s = json.load(f)
    tails = [rows(t["params"]["path"]) for t in spec["tasks"] if t["kind"] == "tail"]
    lat = [l for rs in tails for _, l in rs]
    return {
        "wall_s": round(wall, 2),
        "items_out": s["items_out"],
        "rows_per_tail": [len(rs) for rs in tails],
        "lost": {k: v for k, v in s["lost"].items() if v},
        "p99_ms": s["latency_ms"]["p99"],
        "max_ms": max(lat) if lat else None,
        "all_within_quota": all(l <= QUOTA_MS for l in lat),
    }


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    old, new = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    work = sys.argv[4] if len(sys.argv) > 4 else "/tmp/behind-pace"
    os.makedirs(work, exist_ok=True)
    for k in range(rounds):
        order = [("old", old), ("new", new)] if k % 2 == 0 else [("new", new), ("old", old)]
        for label, bin_dir in order:
            r = run(os.path.abspath(bin_dir), f"behind{label}", work)
            print(json.dumps({"round": k + 1, "build": label, **r}), flush=True)


if __name__ == "__main__":
    main()
