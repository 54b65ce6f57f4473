#!/usr/bin/env python3
"""Example SmartPipe user stage in Python (the `smartpipe` package, over the Rust SDK).

Takes frames, makes frames: each frame is inverted with NumPy, read from its
shared-memory slot and written into an output slot without a copy in between.
params.every (default 1): invert only every n-th item and pass the others on untouched.
"""
import sys

import numpy as np
import smartpipe


def invert(ctx, item):
    frame = item.frame()  # (height, width, 3) uint8, a read-only view of the slot
    if frame is None:
        raise smartpipe.BadInput("invert.py takes frames")
    if item.seq % int(ctx.params.get("every", 1)):
        return item  # passed on untouched (zero copy)
    out = ctx.frame(frame.shape[1], frame.shape[0])  # a writable view of an output slot
    if out is None:  # best effort, no free slot: the item is counted as shed
        return None
    np.subtract(255, frame, out=out)
    return out


if __name__ == "__main__":
    sys.exit(smartpipe.run_body(invert, takes=["frame"], makes=["frame"], name="invert.py"))
