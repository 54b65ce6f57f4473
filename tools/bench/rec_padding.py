#!/usr/bin/env python3
"""Would padding each recogniser batch only to its widest line (instead of at least 320 px, as
PaddleOCR and rapidocr do) make OCR faster, and does it change the text? (Issue 3; BENCHMARKS.md,
Models, run 4.) Runs rapidocr_onnxruntime (2 intra-op threads) over the models benchmark images
(target/bench-models/media/ocr, made by tools/bench/models.sh) to capture the text-line crops,
then times its recogniser session on batches of six lines sorted by width, both ways, two rounds,
and counts the lines read identically.

usage: .smartpipe/venv/bin/python tools/bench/rec_padding.py
"""
import glob, os, time, math, numpy as np, cv2
os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from rapidocr_onnxruntime import RapidOCR
eng = RapidOCR(intra_op_num_threads=2)
rec = eng.text_rec
calls = []
orig_call = rec.__class__.__call__
captured = []
def capture(self, img_list, return_word_box=False):
    captured.append(list(img_list) if not isinstance(img_list, np.ndarray) else [img_list])
    return orig_call(self, img_list, return_word_box)
rec.__class__.__call__ = capture
imgs = sorted(glob.glob("target/bench-models/media/ocr/*"))
for f in imgs:
    eng(f)
rec.__class__.__call__ = orig_call
sess = rec.session.session
iname = sess.get_inputs()[0].name
def decode(preds):
    return rec.postprocess_op(preds)
def run(crops, tight):
    ratios = [c.shape[1] / c.shape[0] for c in crops]
    idx = np.argsort(ratios)
    texts = [None] * len(crops); area = 0; used = 0; t = 0
    for b in range(0, len(crops), 6):
        ch = idx[b:b + 6]
        mr = max(ratios[i] for i in ch)
        if not tight: mr = max(mr, 320 / 48)
        W = int(48 * mr)
        batch = []
        for i in ch:
            c = crops[i]; rw = min(W, int(math.ceil(48 * ratios[i])))
            r = cv2.resize(c, (rw, 48)).astype("float32").transpose(2, 0, 1) / 255
            r = (r - 0.5) / 0.5
            p = np.zeros((3, 48, W), np.float32); p[:, :, :rw] = r; batch.append(p)
            used += rw
        x = np.stack(batch); area += len(ch) * W
        t0 = time.perf_counter(); out = sess.run(None, {iname: x})[0]; t += time.perf_counter() - t0
        for i, res in zip(ch, decode(out)): texts[i] = res[0]
    return texts, t, used / area
for rnd in range(2):
    tot = {False: 0, True: 0}; same = 0; n = 0; fill = {False: [], True: []}
    for crops in captured:
        a, ta, fa = run(crops, False); b, tb, fb = run(crops, True)
        tot[False] += ta; tot[True] += tb; fill[False].append(fa); fill[True].append(fb)
        same += sum(x == y for x, y in zip(a, b)); n += len(a)
    print(f"round {rnd}: rec time 320-min {tot[False]*1e3:.0f} ms, tight {tot[True]*1e3:.0f} ms ({tot[True]/tot[False]:.2f}x); "
          f"fill {np.mean(fill[False]):.2f} vs {np.mean(fill[True]):.2f}; identical texts {same}/{n}")
