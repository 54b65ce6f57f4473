#!/usr/bin/env python3
"""Runs `supervisor start APP --run-dir RUN` for tools/bench/models.sh and, while it runs, samples
/proc of its child processes every 100 ms: the GPU agent is the child whose stderr (fd 2) is
RUN/logs/gpu-agent-*.log. Prints one JSON object: exit status, stderr tail, summary.json, the agent's
last VmRSS and its VmHWM (peak), the sum of every child's VmHWM, the agent log's loaded/evicted
lines (count, mean load_ms), the CPU time of every process under the supervisor (named by its log
file, or its command for ffmpeg) and the steady-state rate of the app's jsonl table tails
(params.path), by tools/bench/steady.py as tools/bench/zoo.py measures it, so that process start
and model loading are not counted, as the references do not count theirs.

usage: run_app.py SUPERVISOR APP.json RUN_DIR
"""
import json
import os
import re
import subprocess
import sys
import time

import steady

TICK = os.sysconf("SC_CLK_TCK")


def status_kb(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def children(pid):
    kids = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def cpu_s(pid):
    """(utime + stime, stime, in seconds; minor page faults) of a live process (None once it
    is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK, int(fields[12]) / TICK, int(fields[7])
    except (OSError, IndexError, ValueError):
        return None


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def label(pid):
    try:
        log = os.readlink(f"/proc/{pid}/fd/2")
        if "/logs/" in log:
            return os.path.basename(log).removesuffix(".log")
    except OSError:
        pass
    return comm(pid) or str(pid)


def tables(app):
    with open(app) as f:
        a = json.load(f)
    return [t["params"]["path"] for t in a.get("tasks", [])
            if t.get("kind") == "tail" and isinstance(t.get("params", {}).get("path"), str)]


def main():
    sup, app, run = sys.argv[1:4]
    outs = tables(app)
    for path in outs:
        if os.path.exists(path):
            os.remove(path)
    stop_watch = steady.start(outs)
    cpu = {}
    t0 = time.perf_counter()
    # The memory sampled is that of the supervisor's children: run the app in a
    # supervisor of its own, not in the node's daemon.
    p = subprocess.Popen([sup, "start", app, "--run-dir", run], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, SMARTPIPE_NO_DAEMON="1"))
    agent = {}
    peaks = {}
    while p.poll() is None:
        for k in descendants(p.pid):
            c = cpu_s(k)
            if c is not None:
                # A process that is exiting has closed its fds (its log can no longer be
                # read from fd 2): keep the name it had while it ran.
                old = cpu.get(k, (None,))[0]
                cpu[k] = (old if old and old != comm(k) else label(k), c)
        for k in children(p.pid):
            s = status_kb(k)
            if "VmHWM" in s:
                peaks[k] = max(peaks.get(k, 0), s["VmHWM"])
            try:
                if "gpu-agent" in os.readlink(f"/proc/{k}/fd/2") and s:
                    agent = {"pid": k, "vm_rss_kb": s.get("VmRSS"), "vm_hwm_kb": s.get("VmHWM")}
            except OSError:
                pass
        time.sleep(0.1)
    out = p.stdout.read()
    wall = time.perf_counter() - t0
    times = stop_watch()
    cpu_by, sys_by, faults_by = {}, {}, {}
    for name, (c, sys_s, faults) in cpu.values():
        name = re.sub(r"#\d+$", "", name)
        cpu_by[name] = round(cpu_by.get(name, 0) + c, 3)
        sys_by[name] = round(sys_by.get(name, 0) + sys_s, 3)
        faults_by[name] = faults_by.get(name, 0) + faults
    summary = None
    try:
        with open(os.path.join(run, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        pass
    loads, evictions = [], 0
    logs = os.path.join(run, "logs")
    for name in (os.listdir(logs) if os.path.isdir(logs) else []):
        if name.startswith("gpu-agent"):
            with open(os.path.join(logs, name)) as f:
                for line in f:
                    m = re.search(r"loaded model=(\S+) load_ms=([0-9.]+)", line)
                    if m:
                        loads.append({"model": m.group(1), "load_ms": float(m.group(2))})
                    elif re.search(r"\bevicted\b", line):
                        evictions += 1
    print(json.dumps({
        "rc": p.returncode, "outer_wall_s": wall, "output_tail": out[-2000:], "summary": summary,
        "agent": agent, "children_vm_hwm_kb_sum": sum(peaks.values()), "children": len(peaks),
        "loads": loads, "evictions": evictions,
        "mean_load_ms": (sum(l["load_ms"] for l in loads) / len(loads)) if loads else None,
        "steady_items_per_s": steady.slope(times), "items_stamped": len(times),
        "first_output_s": (times[0] - t0) if times else None,
        "cpu_s_by_process": dict(sorted(cpu_by.items(), key=lambda kv: -kv[1])),
        "cpu_s_total": round(sum(cpu_by.values()), 3),
        "system_cpu_s_by_process": dict(sorted(sys_by.items(), key=lambda kv: -kv[1])),
        "minor_faults_by_process": dict(sorted(faults_by.items(), key=lambda kv: -kv[1])),
    }))


if __name__ == "__main__":
    main()
