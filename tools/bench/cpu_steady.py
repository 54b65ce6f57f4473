#!/usr/bin/env python3
"""CPU per item of each process and thread of an app in its steady state: runs
`SUPERVISOR start APP.json` (foreground, SMARTPIPE_NO_DAEMON=1), reads every thread's CPU time
from /proc/PID/task/TID/schedstat (the scheduler's own count, in ns: /proc's utime and stime
are sampled at the tick and miss short wake-ups) FROM seconds after the start and again SPAN
seconds later, counts the rows the app's jsonl table TABLE gained meanwhile (one per item for
the faces app), and prints ms per item by process (threads other than a process's main one
apart), the machine's idle share over the same span and the items/s.

usage: cpu_steady.py SUPERVISOR APP.json TABLE.jsonl [FROM SPAN]   (default 3 5)
example: cpu_steady.py target/release/supervisor target/bench-models/apps/faces.json \\
           target/bench-models/apps/faces.jsonl
"""
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

OURS = ("worker-cpu", "worker-gpu", "supervisor", "ffmpeg", "stage-forward", "stage-invert")


def threads():
    """(pid, tid) -> (process label, thread name, CPU ns) for the app's processes."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                argv = f.read().split("\0")
            exe = os.path.basename(argv[0])
            if exe not in OURS:
                continue
            # a stage's argv names it APP/TASK#N
            label = next((a.split("/", 1)[1] for a in argv[1:] if "/" in a and "#" in a), "")
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f.read().strip()
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns = int(f.read().split()[0])
                found[(pid, tid)] = (f"{exe} {label}".strip(), name, ns)
        except (OSError, ValueError, IndexError):
            pass  # a process or thread that ended meanwhile
    return found


def rows(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


def idle_and_total():
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def main(argv):
    if len(argv) not in (4, 6):
        sys.exit(__doc__)
    supervisor, app, table = argv[1:4]
    start_s, span_s = (float(argv[4]), float(argv[5])) if len(argv) == 6 else (3.0, 5.0)
    run_dir = tempfile.mkdtemp(prefix="cpu-steady-")
    shutil.rmtree(run_dir)  # the supervisor makes its run dir itself
    env = dict(os.environ, SMARTPIPE_NO_DAEMON="1")
    app_proc = subprocess.Popen([supervisor, "start", app, "--run-dir", run_dir], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(start_s)
        before, rows0, idle0, t0 = threads(), rows(table), idle_and_total(), time.time()
        time.sleep(span_s)
        after, rows1, idle1, t1 = threads(), rows(table), idle_and_total(), time.time()
        rc = app_proc.wait()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    items = rows1 - rows0
    if rc != 0 or items <= 0:
        sys.exit(f"the app exited {rc} with {items} rows in the span: nothing to divide by")
    per = collections.Counter()
    for key, (process, name, ns) in after.items():
        spent = ns - before.get(key, (None, None, 0))[2]
        main_thread = key[0] == key[1] or process.startswith("ffmpeg")
        if name == "heartbeat":
            bucket = "heartbeat threads (all processes)"
        elif main_thread:
            bucket = process
        else:
            bucket = f"{process} [{name}]"
        per[bucket] += spent / 1e6
    total = sum(per.values())
    idle = 100 * (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
    print(f"{items} items in {t1 - t0:.2f} s = {items / (t1 - t0):.2f}/s; "
          f"CPU {total / items:.1f} ms per item; machine idle {idle:.1f} %")
    for bucket, ms in per.most_common():
        if ms / items >= 0.01:
            print(f"{ms / items:8.2f} ms/item  {bucket}")


if __name__ == "__main__":
    main(sys.argv)
