#!/usr/bin/env python3
"""Runs `supervisor start APP --run-dir RUN` for tools/bench/models.sh and, while it runs, samples
/proc of its child processes (CPU times every 100 ms, new processes and memory every 500 ms,
so that the sampler costs the app about 1 % of a core): the GPU agent is the child whose stderr (fd 2) is
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
import resource
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


def stat_times(stat):
    """(utime + stime, stime, in seconds; minor page faults) from a /proc/PID/stat line."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[12]) / TICK, int(fields[7])


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


class Sampler:
    """CPU times of the processes under the supervisor, read from /proc through files kept
    open (a process's stat re-read in place), each named once by its log file (a process not
    yet named by one, e.g. a stage before it opened its log, is asked again)."""

    def __init__(self, root):
        self.root = root
        self.files = {}  # pid -> open /proc/PID/stat
        self.named = set()  # pids named by their log file
        self.cpu = {}  # pid -> (name, (cpu s, system s, minor faults))

    def sample(self, discover):
        if discover:
            for k in descendants(self.root):
                if k not in self.files:
                    try:
                        self.files[k] = open(f"/proc/{k}/stat", "rb", buffering=0)
                    except OSError:
                        continue
                if k not in self.named:
                    name = label(k)
                    if name != comm(k):
                        self.named.add(k)
                    self.cpu[k] = (name, self.cpu.get(k, (None, None))[1])
        for k, f in list(self.files.items()):
            try:
                times = stat_times(os.pread(f.fileno(), 4096, 0).decode())
            except (OSError, IndexError, ValueError):
                f.close()  # gone: its last reading stays
                del self.files[k]
                continue
            self.cpu[k] = (self.cpu.get(k, (comm(k) or str(k), None))[0], times)

    def is_agent(self, pid):
        return "gpu-agent" in (self.cpu.get(pid, ("",))[0] or "")


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
    t0 = time.perf_counter()
    # The memory sampled is that of the supervisor's children: run the app in a
    # supervisor of its own, not in the node's daemon.
    p = subprocess.Popen([sup, "start", app, "--run-dir", run], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, SMARTPIPE_NO_DAEMON="1"))
    agent, peaks = {}, {}
    sampler = Sampler(p.pid)
    tick = 0
    while p.poll() is None:
        # What the sampler costs, it takes from the app it measures (2 cores; the references
        # run with nothing beside them): CPU times of the known processes every tick, new
        # processes and memory (a high-water mark) every fifth. About 1 % of a core.
        sampler.sample(discover=tick % 5 == 0)
        if tick % 5 == 0:
            for k in children(p.pid):
                s = status_kb(k)
                if "VmHWM" in s:
                    peaks[k] = max(peaks.get(k, 0), s["VmHWM"])
                    if sampler.is_agent(k):
                        agent = {"pid": k, "vm_rss_kb": s.get("VmRSS"), "vm_hwm_kb": s.get("VmHWM")}
        tick += 1
        time.sleep(0.1)
    cpu = sampler.cpu
    out = p.stdout.read()
    wall = time.perf_counter() - t0
    times = stop_watch()
    cpu_by, sys_by, faults_by = {}, {}, {}
    for name, reading in cpu.values():
        if reading is None:
            continue
        c, sys_s, faults = reading
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
        "sampler_cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 3),
    }))


if __name__ == "__main__":
    main()
