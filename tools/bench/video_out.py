#!/usr/bin/env python3
"""What writing an `image.show` video in segments (joined at the end) costs against another
build's single-file video: the same request-guarantee app, `image.gen` of N WxH gradient frames
unpaced into `image.show {path: video.mp4}`, run in alternating rounds. Prints per round and
binary the app's wall time (summary.json `wall_s`), the CPU seconds of the whole run (the
supervisor and every process it reaped, with theirs: stages, the tail's ffmpeg encode and join),
and checks that every run's file decodes to N frames (ffprobe counts them).

usage: video_out.py N WIDTH HEIGHT ROUNDS WORKDIR SUPERVISOR [OTHER_SUPERVISOR]
"""
import json
import os
import subprocess
import sys
import time

def app(n, width, height, path):
    return {
        "name": "videoout",
        "service_type": "request-guarantee",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen",
             "params": {"width": width, "height": height, "count": n, "fps": 0}},
            {"name": "video", "kind": "tail", "function": "image.show", "inputs": ["gen"],
             "params": {"path": path}},
        ],
    }


def frames(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path],
        capture_output=True, text=True)
    first = next((l.strip().rstrip(",") for l in out.stdout.splitlines() if l.strip()), "")
    return int(first) if first.isdigit() else None


def run(sup, n, width, height, work, tag):
    d = os.path.join(work, tag)
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, "video.mp4")
    app_path = os.path.join(d, "app.json")
    with open(app_path, "w") as f:
        json.dump(app(n, width, height, out), f)
    run_dir = os.path.join(d, "run")
    env = dict(os.environ, SMARTPIPE_NO_DAEMON="1")
    p = subprocess.Popen([sup, "start", app_path, "--run-dir", run_dir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    if p.returncode != 0:
        sys.exit(f"{tag}: exit {p.returncode}\n{err.decode()[-2000:]}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    return summary["wall_s"], cpu, frames(out) == n


def main():
    n, width, height = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rounds, work = int(sys.argv[4]), sys.argv[5]
    sups = [("this", sys.argv[6])] + ([("other", sys.argv[7])] if len(sys.argv) > 7 else [])
    for r in range(rounds):
        for tag, sup in sups:
            dur, cpu, ok = run(sup, n, width, height, work, tag)
            print(json.dumps({"round": r + 1, "binary": tag, "duration_s": round(dur, 3),
                              "run_cpu_s": round(cpu, 2), "frames_n": ok}), flush=True)


if __name__ == "__main__":
    main()
