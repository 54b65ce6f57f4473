#!/usr/bin/env python3
"""Context switches of every thread while a command runs: runs COMMAND (e.g.
`target/release/supervisor start APP.json --run-dir RUN`, with SMARTPIPE_NO_DAEMON=1 so that the
stages are its children), reads /proc/*/task/*/status every 300 ms (a thread's last reading
counts) and prints, per process (named by its log file, else its command) and thread name, the
voluntary switches (it waited: a receive, a sleep) and the involuntary ones (a waking thread took
its core), largest first. Counts are since each thread started; the machine's own threads that
ran before the command are listed too and are not the app's.

usage: switches.py COMMAND [ARG ...]
"""
import collections
import os
import subprocess
import sys
import time

from run_app import label  # a process named by its log file, else its command


def switches(status):
    v = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
    nv = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
    return v, nv


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    p = subprocess.Popen(argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = {}
    me = str(os.getpid())
    while p.poll() is None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == me:
                continue
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/status") as f:
                        status = f.read()
                    with open(f"/proc/{pid}/task/{tid}/comm") as f:
                        thread = f.read().strip()
                    last[(pid, tid)] = (label(pid), thread) + switches(status)
            except (OSError, IndexError, ValueError):
                pass
        time.sleep(0.3)
    by = collections.defaultdict(lambda: [0, 0])
    for proc, thread, v, nv in last.values():
        by[(proc, thread)][0] += v
        by[(proc, thread)][1] += nv
    print(f"{'process':32s} {'thread':18s} {'voluntary':>10s} {'involuntary':>12s}")
    for (proc, thread), (v, nv) in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        if v + nv >= 200:
            print(f"{proc:32s} {thread:18s} {v:10d} {nv:12d}")
    return p.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
