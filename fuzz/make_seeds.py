#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets: fuzz/corpus/{safetensors,idx,png}/.
Only the standard library is used, so it runs on a bare Debian."""
import gzip, json, os, struct, sys, zlib

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def put(kind, name, data):
    d = os.path.join(root, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# ---- safetensors
def st(tensors, meta=None, pad=True):
    hdr, off, blob = {}, 0, b""
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, (dt, shape, data) in tensors.items():
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data); blob += data
    h = json.dumps(hdr, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob

sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
         "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
for dt, sz in sizes.items():
    put("safetensors", "one_" + dt, st({"t": (dt, [2, 3], bytes(range(6 * sz)))}))
put("safetensors", "multi", st({"a": ("F32", [2, 2], b"\0" * 16), "b.weight": ("I64", [3], b"\1" * 24),
                                 "c": ("BOOL", [], b"\1")}, meta={"format": "pt", "x": "y\u00e9\\\""}))
put("safetensors", "empty", st({}))
put("safetensors", "zero_size", st({"z": ("F32", [0, 4], b"")}))
put("safetensors", "escapes", st({"n\\u00e9\\ud83d\\ude00": ("U8", [1], b"x")}))
put("safetensors", "overlap", struct.pack("<Q", 96) + (b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
    b'"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}').ljust(96) + b"abc")
put("safetensors", "huge_header", struct.pack("<Q", 1 << 60) + b"{}")
put("safetensors", "truncated", st({"t": ("F32", [4], b"\0" * 16)})[:-5])
put("safetensors", "deep", struct.pack("<Q", 80) + (b'{"__metadata__":' + b"[" * 30 + b"]" * 30 + b"}").ljust(80))

# ---- idx
def idx(code, fmt, dims, vals):
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + \
        b"".join(struct.pack(">" + fmt, v) for v in vals)
put("idx", "u8", idx(0x08, "B", [2, 3], range(6)))
put("idx", "i8", idx(0x09, "b", [4], [-1, 2, -3, 4]))
put("idx", "i16", idx(0x0B, "h", [2, 2], [-1, 2, -300, 4]))
put("idx", "i32", idx(0x0C, "i", [3], [-1, 2, 1 << 30]))
put("idx", "f32", idx(0x0D, "f", [1, 2], [1.5, -2.25]))
put("idx", "f64", idx(0x0E, "d", [2], [1.5, -2.25]))
put("idx", "images", idx(0x08, "B", [3, 4, 4], [i % 256 for i in range(48)]))
put("idx", "u8.gz", gzip.compress(idx(0x08, "B", [5, 2], range(10))))
put("idx", "two_members.gz", gzip.compress(idx(0x08, "B", [4], range(4))[:6]) + gzip.compress(idx(0x08, "B", [4], range(4))[6:]))
put("idx", "truncated", idx(0x08, "B", [10], range(10))[:-3])

# ---- png
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)

def png(w, h, depth, ctype, rows, extra=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    raw = b"".join(b"\0" + r for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")

w, h = 5, 4
put("png", "gray8", png(w, h, 8, 0, [bytes((x * 50 + y) % 256 for x in range(w)) for y in range(h)]))
put("png", "gray1", png(9, 2, 1, 0, [b"\xaa\x80", b"\x55\x00"]))
put("png", "gray4_trns", png(2, 2, 4, 0, [b"\x1f", b"\xf1"], chunk(b"tRNS", b"\x00\x0f")))
put("png", "gray16", png(2, 2, 16, 0, [b"\x00\x00\xff\xff", b"\x80\x00\x12\x34"]))
put("png", "rgb8", png(w, h, 8, 2, [bytes((x * 40 + y * 3 + c) % 256 for x in range(w) for c in range(3)) for y in range(h)]))
put("png", "rgb16", png(2, 1, 16, 2, [bytes(range(12))]))
put("png", "rgba8", png(w, h, 8, 6, [bytes((x * 30 + c * 60) % 256 for x in range(w) for c in range(4)) for y in range(h)]))
put("png", "ga8", png(2, 2, 8, 4, [b"\x10\xff\x20\x80", b"\x30\x00\x40\x40"]))
plte = chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]))
put("png", "pal2", png(4, 2, 2, 3, [b"\x1b", b"\xe4"], plte))
put("png", "pal8_trns", png(3, 1, 8, 3, [b"\x00\x01\x02"], plte + chunk(b"tRNS", b"\x00\x80")))
put("png", "truncated", png(w, h, 8, 0, [bytes(w)] * h)[:-20])
put("png", "badcrc", png(w, h, 8, 2, [bytes(3 * w)] * h)[:-1] + b"\x00")
print("seeds written to", root)
