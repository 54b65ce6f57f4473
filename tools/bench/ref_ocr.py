#!/usr/bin/env python3
"""Reference side of tools/bench/models.sh, OCR: rapidocr_onnxruntime's RapidOCR()(path) over the
images, one call per image. The call reads and decodes the file itself, as the pipeline's
source.images does, so decoding is included on both sides. Prints one JSON object.

usage: ref_ocr.py THREADS IMAGE...   (THREADS 0 = the package's default: ORT picks)
REF_OCR_MODELS=DIR runs DIR/ppocr-{det,cls,rec}.onnx instead of the package's own files (the
benchmark's context run on the models as SmartPipe's agent rewrites them).
"""
import os
import json
import sys
import time


def peak_rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def main():
    threads, images = int(sys.argv[1]), sys.argv[2:]
    from rapidocr_onnxruntime import RapidOCR
    t0 = time.perf_counter()
    # intra_op_num_threads is the package's own setting (config.yaml Global, passed to Det/Cls/Rec).
    kwargs = {"intra_op_num_threads": threads} if threads > 0 else {}
    models = os.environ.get("REF_OCR_MODELS")
    if models:
        for part in ("det", "cls", "rec"):
            kwargs[f"{part}_model_path"] = os.path.join(models, f"ppocr-{part}.onnx")
    engine = RapidOCR(**kwargs)
    engine(images[0])  # first-call warm-up, like the agent's warm-up run
    load_s = time.perf_counter() - t0
    results = []
    t1 = time.perf_counter()
    for path in images:
        result, _ = engine(path)
        results.append({"image": path, "texts": [text for _, text, _ in (result or [])]})
    loop_s = time.perf_counter() - t1
    print(json.dumps({"side": "rapidocr_onnxruntime", "threads": threads or "default", "models": models,
                      "images": len(images), "load_s": load_s, "loop_s": loop_s,
                      "per_s": len(images) / loop_s, "results": results,
                      "vm_hwm_kb": peak_rss_kb()}, ensure_ascii=False))


if __name__ == "__main__":
    main()
