#!/usr/bin/env python3
"""Planning benchmark (issue 5): profile the faces app, then for several quota scenarios
compare the planner's prediction (`supervisor plan`) with what `supervisor start` measures,
and check that infeasible guaranteed scenarios are refused at admission.

Run through tools/bench/planning.sh, which builds the binaries and makes the video."""
import json, os, re, subprocess, sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
W = os.path.join(ROOT, "target", "bench-planning")
SUP = os.path.join(ROOT, "target", "release", "supervisor")
FRAMES = int(os.environ.get("FRAMES", "40"))


def base_app():
    app = json.load(open(os.path.join(ROOT, "apps", "faces.json")))
    app["name"] = "faces-plan"
    tasks = []
    for t in app["tasks"]:
        if t["name"] == "annotated":
            continue  # the MP4 encoder is not what is planned here
        if t["name"] == "frames":
            t["params"] = {"path": os.path.join(W, "faces.mp4"), "limit": FRAMES}
        if t["name"] == "faces-csv":
            t["params"]["path"] = os.path.join(W, "faces.csv")
        if t["kind"] == "gpu":
            t.pop("batch", None)  # let the planner choose
        tasks.append(t)
    app["tasks"] = tasks
    return app


def write(app, name):
    path = os.path.join(W, name + ".json")
    json.dump(app, open(path, "w"), indent=1)
    return path


def predicted(plan_text, strategy):
    m = re.search(r"strategy " + strategy + r":\n(.*?)predicted: ([\d.]+)/min, p50 ([\d.]+) ms, p99 ([\d.]+) ms", plan_text, re.S)
    if not m:
        return None
    return {"throughput_per_min": float(m.group(2)), "p50_ms": float(m.group(3)), "p99_ms": float(m.group(4)),
            "config": " ".join(l.strip() for l in m.group(1).splitlines() if "batch" in l and ("pnet:" in l or "rnet:" in l or "onet:" in l))}


def main():
    os.makedirs(W, exist_ok=True)
    env = dict(os.environ)
    base = base_app()
    path = write(base, "base")
    print("== profiling", file=sys.stderr)
    out = subprocess.run([SUP, "profile", path, "--items", "30", "--batches", "1,2,4"], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit("profiling failed:\n" + out.stderr)
    fits = out.stdout
    scenarios = [
        # name, service type, request rate (frames/s), latency quota ms, throughput quota /min
        ("S1 light", "request-guarantee", 2, 3000, 120),
        ("S2 medium", "request-guarantee", 4, 3000, 240),
        ("S3 heavy", "request-guarantee", 8, 3000, 480),
        ("S4 beyond cores", "request-guarantee", 60, 3000, 3600),
        ("S5 latency too tight", "request-guarantee", 4, 30, 240),
        ("S6 best-effort, too tight", "best-effort", 4, 30, 240),
    ]
    rows = []
    for name, stype, rate, lat, thr in scenarios:
        app = json.loads(json.dumps(base))
        app["service_type"] = stype
        app["request_frequency"] = rate
        app["quota"] = {"max_latency_ms": lat, "throughput_per_min": thr, "max_loss_pct": 0 if stype == "request-guarantee" else 100}
        for t in app["tasks"]:
            if t["name"] == "frames":
                t["params"]["fps"] = rate
        p = write(app, "s" + name.split()[0][1:])
        plan = subprocess.run([SUP, "plan", p], capture_output=True, text=True, env=env).stdout
        pred = predicted(plan, "balance") or predicted(plan, "lazy")
        run_dir = os.path.join(W, "run-" + name.split()[0])
        subprocess.run(["rm", "-rf", run_dir])
        st = subprocess.run([SUP, "start", p, "--run-dir", run_dir], capture_output=True, text=True, env=env)
        row = {"scenario": name, "service_type": stype, "rate": rate, "latency_quota_ms": lat,
               "admitted": st.returncode == 0 or os.path.exists(os.path.join(run_dir, "summary.json")),
               "predicted": pred}
        if st.returncode != 0 and not os.path.exists(os.path.join(run_dir, "summary.json")):
            row["refusal"] = st.stderr.strip().splitlines()[-1]
        else:
            s = json.load(open(os.path.join(run_dir, "summary.json")))
            steady = max((t["steady_items_per_s"] for t in s["tails"]), default=0.0)
            row["measured"] = {"throughput_per_min": steady * 60, "p99_ms": s["latency_ms"]["p99"],
                               "p50_ms": s["latency_ms"]["p50"], "items_out": s["items_out"]}
            row["quota_met"] = all(q["met"] for q in s["qos"])
            if pred:
                row["throughput_error_pct"] = 100 * abs(row["measured"]["throughput_per_min"] - pred["throughput_per_min"]) / max(pred["throughput_per_min"], 1e-9)
                row["p99_error_pct"] = 100 * abs(row["measured"]["p99_ms"] - pred["p99_ms"]) / max(pred["p99_ms"], 1e-9)
        rows.append(row)
        print("==", name, "done", file=sys.stderr)
    json.dump({"fits": fits, "rows": rows}, open(os.path.join(ROOT, "target", "bench-planning.json"), "w"), indent=1)
    print(fits)
    print("| scenario | admission | plan (GPU batches) | predicted /min, p99 ms | measured /min, p99 ms | error thr / p99 | quota met |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        pred = r.get("predicted") or {}
        meas = r.get("measured")
        adm = "admitted" if "refusal" not in r else "refused: " + r["refusal"].split(": ", 1)[-1]
        pcol = f"{pred.get('throughput_per_min', 0):.0f}, {pred.get('p99_ms', 0):.0f}" if pred else "—"
        mcol = f"{meas['throughput_per_min']:.0f}, {meas['p99_ms']:.0f}" if meas else "—"
        err = f"{r['throughput_error_pct']:.0f}% / {r['p99_error_pct']:.0f}%" if "p99_error_pct" in r else "—"
        met = ("yes" if r.get("quota_met") else "no") if meas else "—"
        print(f"| {r['scenario']} ({r['rate']}/s, p99 ≤ {r['latency_quota_ms']} ms) | {adm} | {pred.get('config', '—') or '—'} | {pcol} | {mcol} | {err} | {met} |")


if __name__ == "__main__":
    main()
