#!/usr/bin/env python3
"""Writes the faces benchmark's frames as JPEG files and its apps, for machines without
ffmpeg (the GPU machines here have none): astronaut.png 560×560 on a 1280×720 background,
panning 10 px a frame (as tools/bench/models.sh's video), LAPS times over, and for each
BATCH one faces app reading them; the first lap also as raw RGB (frames.rgb) for the
in-process loop (vision/examples/inprocess.rs) (tools/bench/make_apps.py's cascade, source.images head).

usage: faces_frames.py ASTRONAUT_PNG OUT_DIR FRAMES LAPS BATCH [BATCH ...]
"""
import json
import os
import sys

from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import make_apps  # noqa: E402


def main():
    astronaut, out, frames, laps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    batches = [int(b) for b in sys.argv[5:]]
    media = os.path.join(out, "frames")
    os.makedirs(media, exist_ok=True)
    face = Image.open(astronaut).convert("RGB").resize((560, 560), Image.BILINEAR)
    with open(os.path.join(out, "frames.rgb"), "wb") as raw:
        for n in range(frames):
            img = Image.new("RGB", (1280, 720), (0x40, 0x60, 0x80))
            img.paste(face, (40 + 10 * n, 80))
            raw.write(img.tobytes())
            for lap in range(laps):
                img.save(os.path.join(media, f"l{lap}-f{n:04d}.jpg"), quality=95)
    for b in batches:
        d = os.path.join(out, f"b{b}")
        tasks = make_apps.faces(d, "unused")
        tasks[0] = {"name": "frames", "kind": "head", "function": "source.images",
                    "params": {"path": media}}
        for t in tasks:
            if t["kind"] == "gpu":
                t["batch"] = {"size": b, "max_wait_ms": 5}
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(out, f"faces-b{b}.json"), "w") as f:
            json.dump(make_apps.app(f"gpu-faces-b{b}", tasks), f, indent=1)


if __name__ == "__main__":
    main()
