"""dora-rs Python relay node: passes each payload on unchanged; logs when each arrived and its
item number (read from its first 8 bytes)."""
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
    node.send_output("data", event["value"], event["metadata"])
    head = event["value"].slice(0, 8).to_numpy(zero_copy_only=False)
    got.append([now, int(np.frombuffer(head.tobytes(), dtype=np.int64)[0])])
    if len(got) == count:
        break
with open(os.environ["OUT"], "w") as f:
    json.dump(got, f)
