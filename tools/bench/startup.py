#!/usr/bin/env python3
"""Startup of an app: from `supervisor start APP --run-dir RUN` to the first row its jsonl/csv
tail writes (models not loaded yet: a fresh supervisor, a fresh agent), and where that time goes,
from the run's logs: the first and last stage process to start, the GPU agent ready, each model's
first session loaded, the first row out. Issue 14 part 2, item 3; run by tools/bench/models.sh
(row "startup") or alone.

usage: startup.py SUPERVISOR APP.json RUN_DIR OUTPUT_FILE [ROUNDS]
Prints one JSON object: every round's milestones (ms after the start) and the best and median
start-to-first-output.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def stamp_s(line):
    m = STAMP.match(line)
    if not m:
        return None
    return datetime.fromisoformat(m.group(1) + "+00:00").timestamp()


def milestones(run, t0_wall):
    """ms after t0_wall of what the logs say happened first."""
    out = {}
    logs = os.path.join(run, "logs")
    starts = []
    for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        with open(os.path.join(logs, name), errors="replace") as f:
            for line in f:
                t = stamp_s(line)
                if t is None:
                    continue
                ms = round((t - t0_wall) * 1000, 1)
                if " started " in line or line.rstrip().endswith(" started"):
                    starts.append(ms)
                if name.startswith("gpu-agent"):
                    if "agent ready" in line:
                        out.setdefault("agent_ready_ms", ms)
                    m = re.search(r"loaded model=(\S+) load_ms=([0-9.]+)", line)
                    if m:
                        out.setdefault("loaded_ms", {}).setdefault(m.group(1), ms)
                        out.setdefault("load_ms", {}).setdefault(m.group(1), round(float(m.group(2)), 1))
    if starts:
        out["first_process_ms"] = min(starts)
        out["last_process_ms"] = max(starts)
        out["processes"] = len(starts)
    return out


def one(sup, app, run, output):
    for p in (output,):
        if os.path.exists(p):
            os.remove(p)
    subprocess.run(["rm", "-rf", run], check=True)
    t0_wall = time.time()
    t0 = time.perf_counter()
    # A supervisor of its own, as run_app.py runs the other measures (no daemon to start or share).
    p = subprocess.Popen([sup, "start", app, "--run-dir", run], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=dict(os.environ, SMARTPIPE_NO_DAEMON="1"))
    first = None
    while p.poll() is None and first is None:
        try:
            if os.path.getsize(output) > 0:
                first = (time.perf_counter() - t0) * 1000
                break
        except OSError:
            pass
        time.sleep(0.002)
    rc = p.wait()
    if first is None and os.path.exists(output) and os.path.getsize(output) > 0:
        first = (time.perf_counter() - t0) * 1000  # ended before the poll saw it
    r = {"rc": rc, "first_output_ms": round(first, 1) if first is not None else None,
         "end_ms": round((time.perf_counter() - t0) * 1000, 1)}
    r.update(milestones(run, t0_wall))
    return r


def main():
    sup, app, run, output = sys.argv[1:5]
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    res = [one(sup, app, run, output) for _ in range(rounds)]
    firsts = [r["first_output_ms"] for r in res if r["rc"] == 0 and r["first_output_ms"] is not None]
    print(json.dumps({
        "rounds": res,
        "best_first_output_ms": min(firsts) if firsts else None,
        "median_first_output_ms": statistics.median(firsts) if firsts else None,
    }))


if __name__ == "__main__":
    main()
