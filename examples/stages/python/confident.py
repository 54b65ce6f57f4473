#!/usr/bin/env python3
"""Example SmartPipe user stage in Python on tables: keeps the rows of a detection table whose
`score` is at least the task's `min_score` param (default 0.9), with pyarrow. The table
comes as a `pyarrow.RecordBatch`; the returned batch is sent on as the item's table."""
import sys

import pyarrow.compute as pc

import smartpipe


def confident(ctx, item):
    batch = item.table()
    if batch is None:
        raise smartpipe.BadInput("expected a detection table")
    keep = pc.greater_equal(batch.column("score"), ctx.params.get("min_score", 0.9))
    return batch.filter(keep)


if __name__ == "__main__":
    sys.exit(smartpipe.run_body(confident, takes=["table"], makes=["table"], name="confident.py"))
