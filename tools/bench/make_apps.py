#!/usr/bin/env python3
"""Writes the benchmark apps for tools/bench/models.sh into DIR (absolute paths inside).

faces.json   the faces app's MTCNN cascade (as apps/faces.json: no batch fixed, so batch 1 as planned
             without a profile; BATCH=N fixes batch N, max_wait 5 ms, on the three nets) over the 720p
             video, every face kept (class == 'face', no extra score cut, like detect_faces_raw),
             one jsonl tail (no annotated-video tail: the references draw nothing)
ocr.json     the ocr app's PP-OCR cascade (as apps/ocr.json) over the image folder, jsonl tail
ocr-text.json  the same over the provisioned text.png alone (known failure, reported)
multi.json / multi-budget.json  both in one app sharing one agent; the second with
             constraints.gpus = [{type: cpu, memory_mb: BUDGET}]

usage: make_apps.py DIR VIDEO IMAGE_DIR TEXT_PNG BUDGET_MB
"""
import json
import os
import sys


def cascade(prefix, source, nets, batch):
    tasks, prev = [], source
    for short, model in nets:
        n = prefix + short
        tasks.append({"name": n + "-pre", "kind": "cpu", "function": "model.preprocess",
                      "inputs": [prev], "params": {"model": model}})
        t = {"name": n, "kind": "gpu", "function": "model.inference", "inputs": [n + "-pre"],
             "params": {"model": model}}
        if batch:
            t["batch"] = {"size": batch, "max_wait_ms": 5}
        tasks.append(t)
        tasks.append({"name": n + "-post", "kind": "cpu", "function": "model.postprocess",
                      "inputs": [n], "params": {"model": model}})
        prev = n + "-post"
    return tasks, prev


def faces(d, video, prefix=""):
    head = {"name": prefix + "frames", "kind": "head", "function": "source.video", "params": {"path": video}}
    tasks, last = cascade(prefix, prefix + "frames",
                          [("pnet", "mtcnn-pnet"), ("rnet", "mtcnn-rnet"), ("onet", "mtcnn-onet")],
                          int(os.environ.get("BATCH", "0")))
    return [head] + tasks + [
        {"name": prefix + "faces", "kind": "cpu", "function": "table.filter", "inputs": [last],
         "params": {"where": "class == 'face'"}},
        {"name": prefix + "rows", "kind": "tail", "function": "table.print", "inputs": [prefix + "faces"],
         "params": {"format": "jsonl", "path": os.path.join(d, prefix + "faces.jsonl")}},
    ]


def ocr(d, images, prefix="", out="lines.jsonl"):
    head = {"name": prefix + "pages", "kind": "head", "function": "source.images", "params": {"path": images}}
    tasks, last = cascade(prefix, prefix + "pages",
                          [("det", "ppocr-det"), ("cls", "ppocr-cls"), ("rec", "ppocr-rec")], 0)
    return [head] + tasks + [
        {"name": prefix + "lines", "kind": "tail", "function": "table.print", "inputs": [last],
         "params": {"format": "jsonl", "path": os.path.join(d, prefix + out)}},
    ]


def app(name, tasks, budget=None):
    a = {"name": name, "service_type": "request-guarantee", "tasks": tasks}
    if budget is not None:
        a["constraints"] = {"gpus": [{"type": "cpu", "memory_mb": budget}]}
    return a


def main():
    d, video, images, text_png, budget = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    os.makedirs(d, exist_ok=True)
    apps = {
        "faces": app("bench-faces", faces(d, video)),
        "ocr": app("bench-ocr", ocr(d, images)),
        "ocr-text": app("bench-ocr-text", ocr(d, text_png, out="text-lines.jsonl")),
        "multi": app("bench-multi", faces(d, video, "f-") + ocr(d, images, "o-")),
        "multi-budget": app("bench-multi-budget",
                            faces(d, video, "fb-") + ocr(d, images, "ob-"), budget),
    }
    for name, a in apps.items():
        with open(os.path.join(d, name + ".json"), "w") as f:
            json.dump(a, f, indent=1)


if __name__ == "__main__":
    main()
