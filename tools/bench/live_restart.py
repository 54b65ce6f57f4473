#!/usr/bin/env python3
"""How long a live camera's frames stop when the source reading it is killed, old binaries
against new, alternating rounds (BENCHMARKS.md, "A live stream's source killed").

A local ffmpeg sends a live MPEG-TS stream over UDP in real time (testsrc 160x120, 25 fps,
long enough for the round). The app, request-guarantee: `source.video udp://…` into a csv tail.
Once the tail holds ROWS rows the head is killed with SIGKILL (the supervisor restarts it), and
the round measures the seconds from the kill until the tail grows again ("dark"), then stops the
app with SIGINT. It prints, per build: the rows before the kill, the dark seconds (None if no
frame came within the wait), whether the restart kept the rows' seqs strictly increasing, and
the app's outcome.

usage: live_restart.py OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [ROWS] [WORK_DIR]
  a BIN_DIR holds `supervisor` and the worker binaries of one release build.
"""
import json
import os
import signal
import subprocess
import sys
import time

FPS = 25
WAIT_S = 120


def rows(csv):
    try:
        with open(csv) as f:
            lines = f.read().splitlines()[1:]
    except FileNotFoundError:
        return []
    seqs = []
    for line in lines:
        fields = line.split(",")
        if len(fields) > 1 and fields[1].isdigit():
            seqs.append(int(fields[1]))
    return seqs


def pids_of(needle):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            found.append(int(pid))
    return found


def wait_until(cond, limit_s):
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if cond():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def run(bin_dir, name, port, want_rows, work):
    sender = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", f"testsrc=size=160x120:rate={FPS}",
         "-t", str(want_rows / FPS + 3 * WAIT_S), "-c:v", "mpeg2video", "-f", "mpegts",
         f"udp://127.0.0.1:{port}?pkt_size=1316"],
        stdin=subprocess.DEVNULL,
    )
    csv = os.path.join(work, f"{name}.csv")
    if os.path.exists(csv):
        os.remove(csv)
    spec = {
        "name": name,
        "service_type": "request-guarantee",
        "tasks": [
            {"name": "cam", "kind": "head", "function": "source.video",
             "params": {"path": f"udp://127.0.0.1:{port}"}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["cam"],
             "params": {"format": "csv", "path": csv}},
        ],
    }
    app_file = os.path.join(work, f"{name}.json")
    with open(app_file, "w") as f:
        json.dump(spec, f)
    run_dir = os.path.join(work, f"{name}-run")
    subprocess.run(["rm", "-rf", run_dir], check=True)
    env = dict(os.environ, SMARTPIPE_WORKER_DIR=bin_dir)
    sup = subprocess.Popen(
        [os.path.join(bin_dir, "supervisor"), "start", "--no-daemon", app_file,
         "--run-dir", run_dir],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )
    result = {"rows_before": None, "dark_s": None}
    try:
        if wait_until(lambda: len(rows(csv)) >= want_rows, WAIT_S) is None:
            result["error"] = "the rows never came"
            return result
        head = pids_of(f" {name}/cam#0")
        before = len(rows(csv))
        result["rows_before"] = before
        for pid in head:
            os.kill(pid, signal.SIGKILL)
        # The tail may still take the last frames the killed head sent: count from the
        # highest the rows reach within a second of the kill.
        time.sleep(1.0)
        settled = len(rows(csv))
        dark = wait_until(lambda: len(rows(csv)) > settled, WAIT_S)
        result["dark_s"] = None if dark is None else round(dark + 1.0, 2)
        seqs = rows(csv)
        result["rows_after"] = len(seqs)
        result["seqs_increasing"] = all(a < b for a, b in zip(seqs, seqs[1:]))
    finally:
        sup.send_signal(signal.SIGINT)
        try:
            _, err = sup.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            sup.kill()
            _, err = sup.communicate()
        sender.kill()
        sender.wait()
        try:
            with open(os.path.join(run_dir, "summary.json")) as f:
                result["outcome"] = json.load(f)["outcome"]
        except (OSError, ValueError, KeyError):
            result["outcome"] = "no summary: " + err[-300:]
    return result


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    old, new = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    want_rows = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    work = sys.argv[5] if len(sys.argv) > 5 else "/tmp/live-restart"
    os.makedirs(work, exist_ok=True)
    port = 23456
    for k in range(rounds):
        order = [("old", old), ("new", new)] if k % 2 == 0 else [("new", new), ("old", old)]
        for label, bin_dir in order:
            port += 1
            r = run(os.path.abspath(bin_dir), f"live{label}", port, want_rows, work)
            print(json.dumps({"round": k + 1, "build": label, **r}), flush=True)


if __name__ == "__main__":
    main()
