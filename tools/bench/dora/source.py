"""dora-rs source node for tools/bench/dora_compare.py: on each timer tick, sends a SIZE-byte
payload (its first 8 bytes: the item number) until COUNT are sent; logs each send time."""
import json
import os
import time

import numpy as np
import pyarrow as pa
from dora import Node

size = int(os.environ["SIZE"])
count = int(os.environ["COUNT"])
node = Node()
# The relay and the sink are Python processes too: they may still be starting when the
# first ticks come. Nothing is sent in the first WARMUP_S seconds.
start = time.perf_counter()
warmup_s = float(os.environ.get("WARMUP_S", "4"))
sent = []
payload = np.zeros(size, dtype=np.uint8)
for event in node:
    if event["type"] != "INPUT" or time.perf_counter() - start < warmup_s:
        continue
    payload[:8] = np.frombuffer(np.int64(len(sent)).tobytes(), dtype=np.uint8)
    sent.append(time.perf_counter_ns())
    node.send_output("data", pa.array(payload))
    if len(sent) == count:
        break
with open(os.environ["OUT"], "w") as f:
    json.dump(sent, f)
