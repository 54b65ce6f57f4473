#!/usr/bin/env python3
"""Driver of tools/bench/zoo.sh: for each zoo app (upscale, segment, pose, track) makes its media
once (ffmpeg), runs the shipped app (release build, `supervisor start`) pointed at it, runs the
Python reference loop (tools/bench/zoo_ref.py) on the same frames at 1 and 2 intra-op threads
(and 2 without spinning: the reference's best of the three counts), checks the outputs match with the tests' criteria and prints items/s of both and the ratio.

Steady state on both sides: the reference does not count its session creation and two warm-up
items (zoo_ref.py says why two); the app is timed from its first output row to its last (the table tail flushes each row;
this driver polls the file every 10 ms and stamps each item's first row) as the least-squares slope of
items over time (outputs of items in flight together come in bunches), so start-up and model
loading are not counted either; the whole wall time is printed next to it.

With ZOO_ROUNDS=N (default 1) each app and its reference in its three settings run N times,
alternating (app, 1 thread, 2 threads, 2 without spinning, app, ...), so that this VM's slow spells fall on both
sides: each round's ratio is the app over that round's better reference, each round's outputs are
checked, and the table gives the median round's figures and the median ratio with its lowest and
highest round.

usage: zoo.py ROOT WORKDIR REF_PYTHON APP...   (environment: see zoo.sh)
"""
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

import steady

FF = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error"]
COUNTS = {"upscale": int(os.environ.get("UPSCALE_FRAMES", 40)),
          "segment": int(os.environ.get("SEGMENT_IMAGES", 24)),
          "pose": int(os.environ.get("POSE_FRAMES", 320)),
          "track": int(os.environ.get("TRACK_FRAMES", 60))}
SP = os.environ.get("SMARTPIPE_HOME", "")
ROUNDS = max(1, int(os.environ.get("ZOO_ROUNDS", 1)))
# The reference's settings (zoo_ref.py's THREADS): ORT's default spins idle threads, which on
# this VM sometimes leaves two threads waiting on each other (pose at 2 threads ran at 1.05x its
# one-thread rate in two runs of session 33, at 1.6x in the third); without spinning they sleep.
REF_SETTINGS = ("1", "2", "2-nospin")
# the model files each reference loop reads from its models folder
MODELS = {"upscale": ["waifu2x-upconv7-x2"], "segment": ["isnet"], "pose": ["movenet-multipose"],
          "track": ["deepsort-mobilenetv2"]}
SIZES = {"upscale": (320, 180), "segment": (512, 512), "pose": (640, 360), "track": (640, 360)}


def say(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


def media(root, work, app):
    """(app input path, raw RGB file for the reference): made once per app and count."""
    n, (w, h) = COUNTS[app], SIZES[app]
    astro = os.path.join(SP, "media", "astronaut.png")
    base = os.path.join(work, "media", f"{app}-{n}")
    raw = base + ".rgb"
    src = base + ("" if app == "segment" else ".mp4")
    if os.path.exists(raw) and os.path.exists(src):
        return src, raw
    os.makedirs(os.path.dirname(base), exist_ok=True)
    if app == "segment":
        # n crops of the three provisioned photos, each scaled to 512x512 (ISNet runs at 1024²
        # whatever the size; the reference's bilinear resizes scale with it)
        os.makedirs(src, exist_ok=True)
        photos = ["astronaut.png", "chelsea.png", "coffee.png"]
        with open(raw + ".tmp", "wb") as out:
            for i in range(n):
                png = os.path.join(src, f"img-{i:03d}.png")
                crop = f"crop=iw*{8 - i % 3}/8:ih*{8 - i // 3 % 3}/8:0:0,scale={w}:{h}"
                subprocess.run(FF + ["-i", os.path.join(SP, "media", photos[i % 3]),
                                     "-vf", crop, png], check=True)
                out.write(subprocess.run(FF + ["-i", png, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                                         check=True, capture_output=True).stdout)
        os.replace(raw + ".tmp", raw)
        return src, raw
    if app == "track":  # the track test's video: two astronaut faces drifting apart
        graph = ("[0:v]scale=180:180,split[a][b];[1:v][a]overlay=x='150-4*n':y=60[ab];"
                 "[ab][b]overlay=x='310+4*n':y=100")
    elif app == "pose":
        # the pan starts over every 80 frames, so that the person stays in a long video
        graph = "[0:v]scale=300:300[a];[1:v][a]overlay=x='40+mod(4*n,320)':y=30"
    else:
        graph = "[0:v]scale=140:140[a];[1:v][a]overlay=x='10+2*n':y=20"
    subprocess.run(FF + ["-loop", "1", "-framerate", "10", "-i", astro, "-f", "lavfi", "-i",
                         f"color=c=0x406080:s={w}x{h}:r=10", "-filter_complex", graph,
                         "-frames:v", str(n), "-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p",
                         src + ".tmp.mp4"], check=True)
    os.replace(src + ".tmp.mp4", src)
    subprocess.run(FF + ["-i", src, "-f", "rawvideo", "-pix_fmt", "rgb24", raw + ".tmp"], check=True)
    os.replace(raw + ".tmp", raw)
    return src, raw


def app_json(root, app, src, out):
    """The shipped app with its input and outputs moved: upscale's frames as PNGs (lossless,
    for the check) instead of MP4, tables as JSON lines (the timed rows, cells as JSON)."""
    with open(os.path.join(root, "apps", f"{app}.json")) as f:
        a = json.load(f)
    a["name"] = f"zoo-bench-{app}"
    tables = []
    for t in a["tasks"]:
        if t["kind"] == "head":
            t["params"] = {"path": src}
        elif t["function"] == "image.show" and "path" in t["params"] and app != "upscale":
            # pose, track: the shipped MP4 (their checks read the tables)
            t["params"]["path"] = os.path.join(out, t["name"] + ".mp4")
        elif t["function"] == "image.show":
            # segment ships PNGs; upscale's frames are compared pixel for pixel: PNG, not MP4
            params = {"dir": os.path.join(out, t["name"])}
            if "mask" in t.get("params", {}):
                params["mask"] = t["params"]["mask"]
            t["params"] = params
        elif t["function"] == "table.print":
            t["params"] = {"format": "jsonl", "path": os.path.join(out, t["name"] + ".jsonl")}
            tables.append(t["params"]["path"])
    path = os.path.join(out, "app.json")
    with open(path, "w") as f:
        json.dump(a, f, indent=1)
    return path, tables[0]


def run_app(sup, app, path, table, out, run_dir="run"):
    stop_watch = steady.start([table])
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sup, "start", path, "--run-dir", os.path.join(out, run_dir)],
                       capture_output=True, text=True, env=dict(os.environ, SMARTPIPE_NO_DAEMON="1"))
    wall = time.perf_counter() - t0
    # CPU time of the supervisor and every process it reaped (start-up and model loads
    # included): on a busy machine a steadier figure than items/s
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    times = stop_watch()
    if p.returncode != 0:
        sys.exit(f"{app}: supervisor start failed ({p.returncode}):\n{p.stderr[-3000:]}")
    rate = steady.slope(times)
    if rate is None:
        sys.exit(f"{app}: fewer than 2 items reached {table} at different times")
    return {"wall_s": wall, "items_out": len(times), "items_per_s": rate, "cpu_s_per_item": cpu / len(times),
            "first_output_s": times[0] - t0}


def run_ref(py, root, app, raw, threads, out, models=None):
    w, h = SIZES[app]
    p = subprocess.run([py, os.path.join(root, "tools", "bench", "zoo_ref.py"), app,
                        models or os.path.join(SP, "models"), raw, str(w), str(h), str(threads), out],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{app}: reference at {threads} threads failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def rewritten_models(root, work, app):
    """A models folder holding the app's models as the agent on cpu:0 loads them (the graph
    rewrites and Winograd's convolutions, written by vision's rewrite_model example), or None when
    they leave every one of the app's models as its file is."""
    folder = os.path.join(work, "rewritten-models", app)
    os.makedirs(folder, exist_ok=True)
    changed = False
    for m in MODELS[app]:
        p = subprocess.run([os.path.join(root, "target", "release", "examples", "rewrite_model"),
                            os.path.join(SP, "models", m + ".onnx"), os.path.join(folder, m + ".onnx")],
                           check=True, capture_output=True, text=True)
        report = json.loads(p.stdout.strip().splitlines()[-1])
        changed |= any(v for k, v in report.items() if k != "model")
    return folder if changed else None


def decode(png, fmt):
    return subprocess.run(FF + ["-i", png, "-f", "rawvideo", "-pix_fmt", fmt, "-"],
                          check=True, capture_output=True).stdout


def rows_by_seq(path):
    per = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                per.setdefault(r["seq"], []).append(r)
    return per


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def check(app, out, ref_out, n):
    """(passed, what was compared): the tests' criteria."""
    if app == "upscale":
        want = np.load(ref_out)
        worst = math.inf
        for i in range(n):
            got = np.frombuffer(decode(os.path.join(out, "upscaled", f"frames-{i}.png"), "rgb24"), np.uint8)
            mse = np.mean((got.astype(np.float64) - want[i].reshape(-1)) ** 2)
            worst = min(worst, math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse))
        return worst >= 45, f"lowest PSNR {worst:.1f} dB over {n} frames (>= 45)"
    if app == "segment":
        want = np.load(ref_out)
        worst = 1.0
        for i in range(n):
            rgba = np.frombuffer(decode(os.path.join(out, "cutouts", f"images-{i}.png"), "rgba"), np.uint8)
            g, r = rgba[3::4] >= 128, want[i].reshape(-1) >= 128
            worst = min(worst, (g & r).sum() / max(1, (g | r).sum()))
        return worst >= 0.98, f"lowest mask IoU {worst:.4f} over {n} images (>= 0.98)"
    with open(ref_out) as f:
        want = json.load(f)
    got = rows_by_seq(os.path.join(out, "keypoints.jsonl" if app == "pose" else "tracks-csv.jsonl"))
    if app == "pose":
        worst, bad = 0.0, []
        for i in range(n):
            g = sorted(got.get(i, []), key=lambda r: -r["score"])
            if len(g) != len(want[i]):
                bad.append(f"frame {i}: {len(g)} people vs {len(want[i])}")
                continue
            for gr, wr in zip(g, want[i]):
                k = gr["keypoints"]
                for j, (x, y, _) in enumerate(wr["keypoints"]):
                    worst = max(worst, math.hypot(k[3 * j] - x, k[3 * j + 1] - y))
        return not bad and worst <= 2.0, (f"keypoints at most {worst:.3f} px apart (<= 2), same people "
                                          f"per frame" if not bad else "; ".join(bad[:3]))
    # track: each confirmed face of the reference matched to the app's row of IoU >= 0.5; the
    # ids must map one to one (the same partition of faces into tracks) over the whole video
    pairs, missing = set(), []
    for i in range(n):
        g = [r for r in got.get(i, []) if r.get("track_id") is not None]
        for wr in want[i]:
            best = max(g, key=lambda r: iou([r["x1"], r["y1"], r["x2"], r["y2"]], wr["box"]), default=None)
            if best is None or iou([best["x1"], best["y1"], best["x2"], best["y2"]], wr["box"]) < 0.5:
                missing.append(f"frame {i}: no app face at {wr['box']}")
                continue
            pairs.add((wr["track_id"], best["track_id"]))
        if len(g) != len(want[i]):
            missing.append(f"frame {i}: {len(g)} confirmed faces vs {len(want[i])}")
    one_to_one = len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    identical = all(a == b for a, b in pairs)
    what = (f"{sum(len(x) for x in want)} confirmed faces, id pairs (reference, app) {sorted(pairs)}"
            + (f"; {'; '.join(missing[:3])}" if missing else ""))
    return not missing and one_to_one and identical, what


def median_run(runs):
    """The run with the median items/s (the lower of the middle two for an even count)."""
    return sorted(runs, key=lambda r: r["items_per_s"])[(len(runs) - 1) // 2]


def spread(result):
    """The ratio as the table prints it: alone, or the median with its lowest and highest round."""
    r = result["round_ratios"]
    return f"{result['ratio']:.2f}x" + (f" ({r[0]:.2f}-{r[-1]:.2f}x)" if len(r) > 1 else "")


def main():
    global SP
    root, work, py, apps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    SP = SP or os.path.join(root, ".smartpipe")
    sup = os.path.join(root, "target", "release", "supervisor")
    results = []
    for app in apps:
        n = COUNTS[app]
        out = os.path.join(work, app)
        subprocess.run(["rm", "-rf", out], check=True)
        os.makedirs(out)
        src, raw = media(root, work, app)
        path, table = app_json(root, app, src, out)
        rounds = []  # per round: the app's run, the reference in each of REF_SETTINGS
        for k in range(ROUNDS):
            of = f", round {k + 1} of {ROUNDS}" if ROUNDS > 1 else ""
            say(f"{app}: supervisor start ({n} items{of})")
            mine = run_app(sup, app, path, table, out, "run" if k == 0 else f"run-{k + 1}")
            refs = []
            for threads in REF_SETTINGS:
                say(f"{app}: Python reference loop, intra-op threads {threads}{of}")
                ref_out = os.path.join(out, f"ref-{threads}" + (".npy" if app in ("upscale", "segment") else ".json"))
                refs.append(dict(run_ref(py, root, app, raw, threads, ref_out), out=ref_out))
            # every round's outputs checked, before the next round writes over them
            ok, what = check(app, out, max(refs, key=lambda r: r["items_per_s"])["out"], n)
            rounds.append((mine, refs, ok, what))
        ratios = sorted(m["items_per_s"] / max(r["items_per_s"] for r in rr) for m, rr, _, _ in rounds)
        mine = median_run([m for m, _, _, _ in rounds])
        refs = [median_run([rr[i] for _, rr, _, _ in rounds]) for i in range(len(REF_SETTINGS))]
        best = max(refs, key=lambda r: r["items_per_s"])
        failed = [(k + 1, what) for k, (_, _, ok, what) in enumerate(rounds) if not ok]
        ok = not failed
        what = rounds[-1][3] if ok else "; ".join(f"round {k}: {w}" for k, w in failed)
        # context: the reference on the models as the agent rewrites them (what the graph does,
        # apart from the pipeline); not the comparison's reference, which reads the files as shipped
        context = []
        folder = rewritten_models(root, work, app)
        for threads in ((1, 2) if folder else ()):
            say(f"{app}: Python reference loop on the agent's rewritten models, intra-op threads {threads}")
            ref_out = os.path.join(out, f"ref-rewritten-{threads}" + (".npy" if app in ("upscale", "segment") else ".json"))
            context.append(run_ref(py, root, app, raw, threads, ref_out, folder))
        results.append({"app": app, "items": n, "app_run": mine, "references": refs, "best": best,
                        "references_on_rewritten_models": context,
                        "ratio": ratios[(len(ratios) - 1) // 2], "round_ratios": ratios,
                        "rounds": [{"app_run": m, "references": r, "same_outputs": bool(same)}
                                   for m, r, same, _ in rounds],
                        "same_outputs": bool(ok), "compared": what})
        say(f"{app}: {mine['items_per_s']:.3f} vs {best['items_per_s']:.3f} items/s; ratio "
            f"{spread(results[-1])}; outputs {'match' if ok else 'DIFFER'}: {what}")
    with open(os.path.join(work, "zoo.json"), "w") as f:
        json.dump(results, f, indent=1)
    if ROUNDS > 1:
        print(f"Median of {ROUNDS} alternating rounds: each rate is its side's median round, the "
              "ratio the median of the rounds' ratios (each round's app over its better reference), "
              "with the lowest and highest.\n")
    print("| app | items | SmartPipe items/s (first to last output, slope; wall incl. start-up) "
          "| reference items/s at 1 / 2 / 2 threads without spinning | ratio to the best | CPU s per "
          "item: app (start-up incl.) / reference at 1 / 2 / 2 threads without spinning | same outputs |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        m, refs = r["app_run"], r["references"]
        rates = " / ".join(f"{x['items_per_s']:.3f}" for x in refs)
        cpus = " / ".join(f"{x['cpu_s_per_item']:.3f}" for x in refs)
        print(f"| {r['app']} | {r['items']} | {m['items_per_s']:.3f} ({m['items_out']} items, {m['wall_s']:.1f} s wall) "
              f"| {rates} | {spread(r)} "
              f"| {m['cpu_s_per_item']:.3f} / {cpus} "
              f"| {'yes' if r['same_outputs'] else 'NO'}: {r['compared']} |")
    for r in results:
        c = r["references_on_rewritten_models"]
        if c:
            best_c = max(x["items_per_s"] for x in c)
            print(f"context, {r['app']}: the reference on the agent's rewritten models at 1 / 2 threads: "
                  f"{c[0]['items_per_s']:.3f} / {c[1]['items_per_s']:.3f} items/s; the app is "
                  f"{r['app_run']['items_per_s'] / best_c:.2f}x that")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min), cores: {os.cpu_count()}")
    if not all(r["same_outputs"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
