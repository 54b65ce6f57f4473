#!/usr/bin/env python3
"""Alternating A/B runs of one app: each round runs the app once per arm, in order, through
tools/bench/run_app.py (foreground, SMARTPIPE_NO_DAEMON=1), each arm with its own environment
(e.g. another SMARTPIPE_MANIFEST; `APP=FILE` runs another app file in that arm, `SUPERVISOR=FILE`
another supervisor binary). Prints one line per run (steady items/s, the app's CPU seconds,
the agent's, the agent's peak memory, system seconds, minor faults, live batch changes) and, per
arm, the median and range of the steady rate and of the agent's CPU. Alternating rounds keep a
slow spell of a shared machine from landing on one arm only.

usage: app_ab.py SUPERVISOR APP.json ROUNDS LABEL "KEY=VALUE ..." LABEL "KEY=VALUE ..." ...
example: app_ab.py target/release/supervisor target/bench-models/apps/faces.json 8 \\
           own "SMARTPIPE_MANIFEST=$PWD/apps/models.json" shared "SMARTPIPE_MANIFEST=/tmp/shared.json"
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run_once(supervisor, app, env_pairs):
    env = dict(os.environ, SMARTPIPE_NO_DAEMON="1")
    for kv in env_pairs.split():
        key, _, value = kv.partition("=")
        if key == "APP":
            app = value
        elif key == "SUPERVISOR":
            supervisor = value
        else:
            env[key] = value
    scratch = tempfile.mkdtemp(prefix="app-ab-")
    run_dir = os.path.join(scratch, "run")  # the supervisor makes its run dir itself
    try:
        out = subprocess.run(
            [sys.executable, os.path.join(HERE, "run_app.py"), supervisor, app, run_dir],
            env=env, capture_output=True, text=True, check=False,
        )
        d = json.loads(out.stdout)
        if d.get("rc") != 0:
            sys.exit(f"the app failed: {d.get('output_tail', '')[-2000:]}")
        with open(os.path.join(run_dir, "summary.json")) as f:
            retunes = json.load(f).get("retunes", [])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cpu = d["cpu_s_by_process"]
    agent = sum(v for k, v in cpu.items() if k.startswith("gpu-agent"))
    return {
        "steady": d["steady_items_per_s"],
        "cpu": d["cpu_s_total"],
        "agent": agent,
        "agent_peak_mb": d.get("agent", {}).get("vm_hwm_kb", 0) / 1024,
        "sys": sum(d["system_cpu_s_by_process"].values()),
        "faults": sum(d["minor_faults_by_process"].values()),
        "retunes": [(round(t, 1), task, a, b) for t, task, a, b in retunes],
    }


def main(argv):
    if len(argv) < 6 or (len(argv) - 4) % 2:
        sys.exit(__doc__)
    supervisor, app, rounds = argv[1], argv[2], int(argv[3])
    arms = list(zip(argv[4::2], argv[5::2]))
    seen = {label: [] for label, _ in arms}
    for r in range(rounds):
        for label, env_pairs in arms:
            m = run_once(supervisor, app, env_pairs)
            seen[label].append(m)
            print(f"round {r + 1} {label:10s} steady {m['steady']:6.2f}/s  cpu {m['cpu']:6.2f} s  "
                  f"agent {m['agent']:6.2f} s  peak {m['agent_peak_mb']:5.0f} MB  sys {m['sys']:5.2f} s  "
                  f"faults {m['faults']:7d}  retunes {m['retunes']}", flush=True)
    for label, runs in seen.items():
        steady = [m["steady"] for m in runs]
        agent = [m["agent"] for m in runs]
        print(f"{label}: steady median {statistics.median(steady):.2f}/s ({min(steady):.2f}–{max(steady):.2f}), "
              f"agent CPU median {statistics.median(agent):.2f} s ({min(agent):.2f}–{max(agent):.2f}), "
              f"{len(runs)} runs")


if __name__ == "__main__":
    main(sys.argv)
