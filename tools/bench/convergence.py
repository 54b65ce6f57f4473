#!/usr/bin/env python3
"""Convergence benchmark of issue 5: the request frequency doubles mid-run; how long until the
app meets its quota again, `balance` (live tuning) against `lazy` (none), same app, same machine.

The app: image.gen (320x180) -> image.resize to 1920x1080 (the CPU-bound stage) -> csv rows,
request-guarantee. First a free-running lazy run measures what one replica of the resize stage
carries (`capacity`, items/s); then each strategy runs at r = 0.6 x capacity for WARM s, the rate
is doubled with `supervisor rate APP 2r` (1.2 x capacity: one replica cannot carry it) and the run
goes on for AFTER s, then drains. `capacity` = 1 / the resize stage's service time (its busy
time, less waits for an output slot, per item). The tail's csv is read every 50 ms while it grows, so every
row gets the time it arrived; its latency_ms column is the end-to-end latency.

Quota after the change: throughput >= 0.95 x 2r per 1 s window and p99 latency <= QUOTA_MS in
the window. Converged at the start of the first window from which every later window (to the end
of the run) meets both; the time to converge is counted from the rate change. Every run checks
that the rows are exactly 0..n-1, in order (request-guarantee: nothing lost, nothing twice).

usage: convergence.py [--warm S] [--after S] [--quota-ms MS] [--json OUT]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUP = os.path.join(ROOT, "target", "release", "supervisor")


def app_json(name, strategy, fps, count):
    return {
        "name": name, "service_type": "request-guarantee", "strategy": strategy,
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen",
             "params": {"width": 320, "height": 180, "count": count, "fps": fps, "pattern": "solid"}},
            {"name": "big", "kind": "cpu", "function": "image.resize", "inputs": ["gen"],
             "params": {"width": 1920, "height": 1080}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["big"],
             "params": {"format": "csv", "path": "rows.csv"}},
        ],
    }


class Rows:
    """Follows a growing csv file: (arrival s since start, seq, latency_ms) per row."""

    def __init__(self, path):
        self.path, self.offset, self.rows, self.partial = path, 0, [], ""

    def poll(self, now):
        try:
            with open(self.path) as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except OSError:
            return
        text = self.partial + chunk
        lines = text.split("\n")
        self.partial = lines.pop()
        for line in lines:
            cols = line.split(",")
            if cols[0] == "source" or len(cols) < 5:
                continue
            self.rows.append((now, int(cols[1]), float(cols[4])))


def p99(values):
    if not values:
        return float("inf")
    v = sorted(values)
    return v[min(len(v) - 1, int(0.99 * len(v)))]


def run(strategy, fps, warm, after, env, work):
    name = f"conv{strategy}{os.getpid()}"
    d = os.path.join(work, strategy)
    os.makedirs(d, exist_ok=True)
    app = os.path.join(d, "app.json")
    count = int(fps * 2 * (warm + after) + 1000) if fps > 0 else 1500
    with open(app, "w") as f:
        json.dump(app_json(name, strategy, fps, count), f)
    csv = os.path.join(d, "rows.csv")
    if os.path.exists(csv):
        os.remove(csv)
    rows = Rows(csv)
    t0 = time.perf_counter()
    p = subprocess.Popen([SUP, "start", app, "--run-dir", os.path.join(d, "run")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    changed_at = None
    while p.poll() is None:
        now = time.perf_counter() - t0
        rows.poll(now)
        if fps > 0 and changed_at is None and rows.rows and now >= rows.rows[0][0] + warm:
            out = subprocess.run([SUP, "rate", name, str(2 * fps)], env=env,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"rate change refused: {out.stderr}")
            changed_at = now
        if fps > 0 and changed_at is not None and now >= changed_at + after:
            p.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    err = p.communicate()[1]
    rows.poll(time.perf_counter() - t0)
    if p.returncode != 0:
        sys.exit(f"{strategy} run failed: {err[-2000:]}")
    seqs = [s for _, s, _ in rows.rows]
    exact = seqs == list(range(len(seqs)))
    with open(os.path.join(d, "run", "summary.json")) as f:
        summary = json.load(f)
    return {"rows": rows.rows, "changed_at": changed_at, "exactly_once_in_order": exact,
            "summary": summary, "wall_s": time.perf_counter() - t0}


def windows(rows, start, end):
    out = []
    t = start
    while t + 1.0 <= end:
        w = [lat for (at, _, lat) in rows if t <= at < t + 1.0]
        out.append((t, len(w), p99(w)))
        t += 1.0
    return out


def converge(r, target, quota_ms, after):
    start = r["changed_at"]
    ws = windows(r["rows"], start, start + after)
    ok = [n >= 0.95 * target and lat <= quota_ms for (_, n, lat) in ws]
    at = None
    for i in range(len(ok)):
        if all(ok[i:]):
            at = ws[i][0] - start
            break
    last = ws[-5:] if len(ws) >= 5 else ws
    return {
        "converged_after_s": at,
        "windows": [{"t_s": round(t - start, 1), "items": n, "p99_ms": round(lat, 1)} for t, n, lat in ws],
        "last_5_s_items_per_s": sum(n for _, n, _ in last) / max(1, len(last)),
        "last_5_s_p99_ms": max((lat for _, _, lat in last), default=0.0),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warm", type=float, default=10.0)
    ap.add_argument("--after", type=float, default=25.0)
    ap.add_argument("--quota-ms", type=float, default=500.0)
    ap.add_argument("--json", default=os.path.join(ROOT, "target", "bench-convergence.json"))
    a = ap.parse_args()
    env = dict(os.environ)
    work = tempfile.mkdtemp(prefix="smartpipe-convergence-")
    env["SMARTPIPE_RUNTIME_DIR"] = os.path.join(work, "runtime")
    cap_run = run("lazy", 0, 0, 0, env, work)
    big = cap_run["summary"]["stages"]["big#0"]
    service_s = (big["busy_ns"] - big["waiting_for_slot_ns"]) / 1e9 / big["items_in"]
    capacity = 1.0 / service_s
    fps = round(0.6 * capacity, 1)
    target = 2 * fps
    print(f"one replica of 'big' carries {capacity:.1f} items/s ({service_s * 1e3:.2f} ms per item, "
          f"busy time of a free-running lazy run of {big['items_in']} items); "
          f"r = {fps}/s, doubled to {target}/s")
    results = {"capacity_items_per_s": capacity, "rate_before": fps, "rate_after": target,
               "quota_p99_ms": a.quota_ms, "runs": {}}
    print("| strategy | converged after the doubling | last 5 s: items/s, worst 1 s p99 | live changes | rows exactly once, in order |")
    print("|---|---|---|---|---|")
    for strategy in ("balance", "lazy"):
        r = run(strategy, fps, a.warm, a.after, env, work)
        c = converge(r, target, a.quota_ms, a.after)
        changes = [f"{t:.1f} s: {task} {x} → {y}" for (t, task, x, y) in r["summary"].get("rescales", [])]
        changes += [f"{t:.1f} s: {task} batch {x} → {y}" for (t, task, x, y) in r["summary"].get("retunes", [])]
        conv = "never (within the run)" if c["converged_after_s"] is None else f"{c['converged_after_s']:.0f} s"
        print(f"| {strategy} | {conv} | {c['last_5_s_items_per_s']:.1f} items/s (target {target}), "
              f"{c['last_5_s_p99_ms']:.0f} ms (quota {a.quota_ms:.0f}) | "
              f"{'; '.join(changes) or 'none'} (rate doubled at {r['changed_at']:.1f} s) | "
              f"{'yes' if r['exactly_once_in_order'] else 'NO'} ({len(r['rows'])} rows) |")
        results["runs"][strategy] = {k: v for k, v in r.items() if k != "rows"} | c
    with open(a.json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"details: {a.json}")


if __name__ == "__main__":
    main()
