"""Read a legacy (pre-1.6, non-zip) PyTorch `torch.save` file of tensors without torch.

The file is a sequence of pickles: magic number, protocol version, system info, the object
itself (tensors refer to storages by persistent id), the list of storage keys; then, per key
in that order, an int64 element count and the raw little-endian data. A small Unpickler maps
`torch._utils._rebuild_tensor_v2` and the `*Storage` classes to numpy and refuses any other
global, so the file cannot run code.
"""
import pickle
import struct
from collections import OrderedDict

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
}


class _Storage:
    def __init__(self, dtype, numel):
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.data = None


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a tensor file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage" or storage_type not in DTYPES:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(DTYPES[storage_type], numel)
        return self.storages[key]


def load(path):
    """The file's object with every tensor as a numpy array."""
    with open(path, "rb") as f:
        if pickle.load(f) != MAGIC:
            raise ValueError(f"{path}: not a legacy PyTorch file (bad magic number)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info
        storages = {}
        obj = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            s = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            if numel != s.numel:
                raise ValueError(f"{path}: storage {key} has {numel} elements, expected {s.numel}")
            raw = f.read(numel * s.dtype.itemsize)
            if len(raw) != numel * s.dtype.itemsize:
                raise ValueError(f"{path}: storage {key} is truncated")
            s.data = np.frombuffer(raw, dtype=s.dtype.newbyteorder("<"))

    def tensor(t):
        _, s, offset, size, stride = t
        item = s.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            s.data[offset:], shape=size, strides=[st * item for st in stride]
        ).copy()

    def walk(o):
        if isinstance(o, tuple) and o and o[0] == "tensor":
            return tensor(o)
        if isinstance(o, dict):
            return OrderedDict((k, walk(v)) for k, v in o.items())
        return o

    return walk(obj)
