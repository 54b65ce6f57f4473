"""Steady-state throughput of an app, shared by tools/bench/run_app.py and tools/bench/zoo.py:
a thread stamps the first output row of each item as its table tail flushes it (polled every
50 ms), and the rate is the least-squares slope of items over time from the first output to the
last, so process start and model loading are not counted. Plain Python (no numpy): run_app.py
runs under the system's python3."""
import json
import os
import threading
import time


# How often the tables are read: a wake-up costs this VM ≈ 60 µs of CPU, taken from the app
# being measured; 50 ms puts a stamp at most that late, which moves a slope over 240 items in
# 10 s by well under 0.1 %.
POLL_S = 0.05


def watch(paths, stamps, done):
    """Stamps the first row of each (table, source, seq) flushed to one of the jsonl `paths`
    into `stamps` (perf_counter seconds), until `done` is set (then reads once more). Only whole
    lines are read; a read that races the writer's append can see zeros where the new bytes go
    (ext4 publishes the new length before the page is filled), so a line with a NUL byte is
    read again at the next poll."""
    pos = {p: 0 for p in paths}
    files = {}  # kept open: a poll is a seek and a read (it runs beside the app it measures)
    while True:
        finished = done.is_set()
        for path in paths:
            try:
                if path not in files:
                    files[path] = open(path, "rb")
                f = files[path]
                f.seek(pos[path])
                chunk = f.read()
            except OSError:
                chunk = b""
            now = time.perf_counter()
            for line in chunk.split(b"\n")[:-1]:
                if b"\0" in line:
                    break
                pos[path] += len(line) + 1
                if line.strip():
                    r = json.loads(line)
                    stamps.setdefault((path, r.get("source"), r.get("seq")), now)
        if finished:
            for f in files.values():
                f.close()
            return
        time.sleep(POLL_S)


def start(paths):
    """Starts watching `paths`; returns stop(), which ends the watch and returns the times of
    the stamped items, sorted. A table left by an earlier run is removed first: the app
    rewrites it, and its old rows would be stamped at once."""
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    stamps, done = {}, threading.Event()
    watcher = threading.Thread(target=watch, args=(paths, stamps, done))
    watcher.start()

    def stop():
        done.set()
        watcher.join()
        return sorted(stamps.values())

    return stop


def slope(times):
    """Items per second: the least-squares slope of outputs over time (items in flight together
    come out in bunches, and (n - 1) / (last - first) would count one bunch too many); None for
    fewer than two outputs or no time between them."""
    if len(times) < 2:
        return None
    t0 = times[0]
    ts = [t - t0 for t in times]
    mt, mk = sum(ts) / len(ts), (len(ts) - 1) / 2
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (k - mk) for k, t in enumerate(ts)) / den if den else None
