#!/usr/bin/env python3
"""What a `table.print` Parquet tail costs against a csv one, and (given a second supervisor
binary) against another build's Parquet tail: the same request-guarantee app, `image.gen`
of N 4x4 frames unpaced into `table.print`, run in alternating rounds. Prints per round and
output the app's wall time (summary.json `wall_s`) and the tail's CPU seconds (its process, sampled
from /proc until it exits), and checks that every run wrote rows 0..N-1 once, in order
(pyarrow reads the Parquet files back).

usage: parquet_out.py N ROUNDS WORKDIR SUPERVISOR [OTHER_SUPERVISOR]
"""
import csv
import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq

TICK = os.sysconf("SC_CLK_TCK")


def app(n, fmt, path):
    return {
        "name": f"pq{fmt}",
        "service_type": "request-guarantee",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen",
             "params": {"width": 4, "height": 4, "count": n, "fps": 0}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"],
             "params": {"format": fmt, "path": path}},
        ],
    }


def tail_cpu(sup, label):
    """CPU seconds of the tail process (found by its command line) until it exits."""
    best = 0.0
    pid = None
    while True:
        if pid is None:
            for p in os.listdir("/proc"):
                if not p.isdigit():
                    continue
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if f" {label}" in cmd:
                    pid = p
                    break
        if pid is not None:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                best = (int(fields[11]) + int(fields[12])) / TICK
            except OSError:
                return best
        if sup.poll() is not None:
            return best
        time.sleep(0.02)


def seqs(fmt, path):
    if fmt == "parquet":
        return pq.read_table(path, columns=["seq"]).column("seq").to_pylist()
    with open(path) as f:
        return [int(r["seq"]) for r in csv.DictReader(f)]


def run(sup, n, fmt, work, tag):
    d = os.path.join(work, f"{tag}-{fmt}")
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, f"rows.{fmt}")
    app_path = os.path.join(d, "app.json")
    with open(app_path, "w") as f:
        json.dump(app(n, fmt, out), f)
    run_dir = os.path.join(d, "run")
    env = dict(os.environ, SMARTPIPE_NO_DAEMON="1")
    p = subprocess.Popen([sup, "start", app_path, "--run-dir", run_dir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    cpu = tail_cpu(p, f"pq{fmt}/rows#0")
    _, err = p.communicate()
    if p.returncode != 0:
        sys.exit(f"{tag} {fmt}: exit {p.returncode}\n{err.decode()[-2000:]}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    got = seqs(fmt, out)
    ok = got == list(range(n))
    return summary["wall_s"], cpu, ok


def main():
    n, rounds, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    sups = [("this", sys.argv[4])] + ([("other", sys.argv[5])] if len(sys.argv) > 5 else [])
    rows = []
    for r in range(rounds):
        for tag, sup in sups:
            for fmt in ["csv", "parquet"] if tag == "this" else ["parquet"]:
                dur, cpu, ok = run(sup, n, fmt, work, tag)
                rows.append({"round": r + 1, "binary": tag, "format": fmt,
                             "duration_s": round(dur, 3), "tail_cpu_s": round(cpu, 2),
                             "rows_0_to_n_once": ok})
                print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
