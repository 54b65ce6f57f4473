#!/usr/bin/env python3
"""Memory of a long run: does the tail's and the supervisor's resident memory grow with the
items delivered? (BENCHMARKS.md, "Memory of a long run").

The app: `image.gen` of 4x4 frames unpaced (as many as the pipeline takes, tens of thousands
per second: a day of a 30 fps camera passes in minutes) → `core.forward` → a csv tail into
/dev/null; best effort. For each build it runs `SUPERVISOR start --no-daemon` for SECONDS,
samples VmRSS of the supervisor and of the tail's process every 5 s, stops the app
(SIGINT: it drains), and prints one JSON line per build: items delivered, RSS at the first
sample (5 s), in the middle of the run and at its end, and the growth in bytes per item
delivered from the middle to the end.

usage: long_run_memory.py BIN_DIR [BIN_DIR ...] [--seconds N]
"""
import json
import os
import signal
import subprocess
import sys
import time


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def tail_pid(sup_pid):
    """The worker whose log is the tail's (rows#0.log on its stderr)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{pid}/fd/2").endswith("/rows#0.log"):
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == sup_pid:
                        return int(pid)
        except OSError:
            continue
    return None


def measure(bin_dir, seconds, work):
    app = {
        "name": "longrun",
        "service_type": "best-effort",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen",
             "params": {"width": 4, "height": 4, "count": 1_000_000_000, "fps": 0}},
            {"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["fwd"],
             "params": {"format": "csv", "path": "/dev/null"}},
        ],
    }
    os.makedirs(work, exist_ok=True)
    app_file = os.path.join(work, "longrun.json")
    with open(app_file, "w") as f:
        json.dump(app, f)
    run_dir = os.path.join(work, "run-" + os.path.basename(os.path.dirname(bin_dir.rstrip("/"))))
    subprocess.run(["rm", "-rf", run_dir], check=True)
    env = dict(os.environ, SMARTPIPE_WORKER_DIR=bin_dir)
    sup = subprocess.Popen(
        [os.path.join(bin_dir, "supervisor"), "start", "--no-daemon", app_file, "--run-dir", run_dir],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    samples = []
    start = time.monotonic()
    tail = None
    while time.monotonic() - start < seconds:
        time.sleep(5)
        tail = tail or tail_pid(sup.pid)
        samples.append((time.monotonic() - start, rss_kb(sup.pid), rss_kb(tail) if tail else None))
    sup.send_signal(signal.SIGINT)
    _, err = sup.communicate(timeout=120)
    with open(os.path.join(run_dir, "summary.json")) as f:
        s = json.load(f)
    out = s["items_out"]
    # From the middle of the run on: the samples' caps are full by then (262,144 items).
    (t0, sup0, tail0), (t1, sup1, tail1) = samples[len(samples) // 2], samples[-1]
    # Items delivered between the first and the last sample, at the run's mean rate.
    between = out * (t1 - t0) / max(s["wall_s"], 1e-9)
    per_item = lambda a, b: round((b - a) * 1024 / max(between, 1), 2) if a and b else None
    return {
        "build": bin_dir,
        "seconds": seconds,
        "items_out": out,
        "supervisor_rss_kb": [samples[0][1], sup0, sup1],
        "tail_rss_kb": [samples[0][2], tail0, tail1],
        "supervisor_bytes_per_item": per_item(sup0, sup1),
        "tail_bytes_per_item": per_item(tail0, tail1),
        "latency_count": s["latency_ms"]["count"],
        "latency_p99_ms": s["latency_ms"]["p99"],
    }


def main():
    args = sys.argv[1:]
    seconds = 60
    if "--seconds" in args:
        k = args.index("--seconds")
        seconds = int(args[k + 1])
        del args[k:k + 2]
    if not args:
        sys.exit(__doc__)
    for bin_dir in args:
        print(json.dumps(measure(os.path.abspath(bin_dir), seconds, "/tmp/long-run-memory")), flush=True)


if __name__ == "__main__":
    main()
