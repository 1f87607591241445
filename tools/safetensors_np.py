"""Minimal safetensors writer over numpy, shared by the golden-file generators
and bench/torch_bench.py (Debian has no `safetensors` package; fdm itself never
runs Python). Format: 8-byte little-endian header length, JSON header padded
with spaces to a multiple of 8, then the raw little-endian data."""
import json

import numpy as np

DTYPES = {np.dtype("float32"): "F32", np.dtype("int64"): "I64", np.dtype("bool"): "BOOL"}


def as_array(a):
    """A torch tensor or array-like as a C-ordered numpy array, float64 -> float32."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.array(a, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    return a


def save(path, tensors, metadata=None):
    """tensors: name -> numpy array (float32, int64 or bool), written in name
    order; metadata (str -> str) is written as given when it is not None."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.array(tensors[name], order="C", copy=True)
        if a.dtype not in DTYPES:
            raise TypeError("%s: unsupported dtype %s" % (name, a.dtype))
        if a.dtype != np.bool_:
            a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        b = a.tobytes()
        header[name] = {"dtype": DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
