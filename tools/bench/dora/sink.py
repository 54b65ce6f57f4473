"""dora-rs sink node: logs when each payload arrived, its item number and its size."""
import json
import os
import time

import numpy as np
from dora import Node

count = int(os.environ["COUNT"])
node = Node()
got = []
for event in node:
    if event["type"] != "INPUT":
        continue
    now = time.perf_counter_ns()
    value = event["value"]
    head = value.slice(0, 8).to_numpy(zero_copy_only=False)
    seq = int(np.frombuffer(head.tobytes(), dtype=np.int64)[0])
    got.append([now, seq, len(value)])
    if len(got) == count:
        break
with open(os.environ["OUT"], "w") as f:
    json.dump(got, f)
