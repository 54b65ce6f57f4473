#!/usr/bin/env python3
"""Example SmartPipe user stage in Python: passes every item on untouched (zero copy).
What `supervisor bench stages` measures beside the built-in core.forward."""
import sys

import smartpipe


def forward(ctx, item):
    return item


if __name__ == "__main__":
    sys.exit(smartpipe.run_body(forward, takes=["any"], makes=["any"], name="forward.py"))
