#!/usr/bin/env python3
"""CPU seconds of each process of an app run, grouped by stage: runs COMMAND (e.g.
`target/release/supervisor start APP.json --run-dir RUN`, with SMARTPIPE_NO_DAEMON=1 so that the
stages are its children), reads every process's utime + stime from /proc four times a second
while it runs (a process's last reading before it exits counts), and prints the seconds per
stage replica (`APP/TASK#N`), the GPU agent, ffmpeg and the supervisor, then the total.
Dividing by the items the app delivered gives CPU per item by process.

usage: cpu_by_process.py COMMAND [ARG ...]   (the command's own output goes to cpu_by_process.out)
"""
import collections
import os
import subprocess
import sys
import time


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    tck = os.sysconf("SC_CLK_TCK")
    with open("cpu_by_process.out", "w") as log:
        p = subprocess.Popen(argv[1:], stdout=log, stderr=subprocess.STDOUT)
        last, name = {}, {}
        while p.poll() is None:
            for d in os.listdir("/proc"):
                if not d.isdigit():
                    continue
                try:
                    with open(f"/proc/{d}/stat") as f:
                        stat = f.read()
                    fields = stat[stat.rindex(")") + 2:].split()
                    # read every time: a child seen between fork and exec still shows
                    # its parent's command line
                    with open(f"/proc/{d}/cmdline") as f:
                        name[d] = f.read().replace("\0", " ")
                    last[d] = int(fields[11]) + int(fields[12])
                except (OSError, ValueError):
                    pass
            time.sleep(0.25)
    by = collections.Counter()
    for d, ticks in last.items():
        cmd = name.get(d, "")
        for flag in ("--stage ", "--agent "):
            if flag in cmd:
                by[cmd.split(flag)[1].split()[0]] += ticks / tck
                break
        else:
            program = cmd.split(" ")[0].rsplit("/", 1)[-1]
            if program == "ffmpeg":
                # a video tail's encoder reads frames from its stdin; a source's decoder a file
                by["ffmpeg (encoder)" if " -i - " in cmd else "ffmpeg (decoder)"] += ticks / tck
            elif program == "supervisor":
                by["supervisor"] += ticks / tck
    for k, v in by.most_common():
        print(f"{v:8.2f} s  {k}")
    print(f"{sum(by.values()):8.2f} s  total (exit status {p.returncode})")


if __name__ == "__main__":
    main(sys.argv)
