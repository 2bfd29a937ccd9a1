#!/usr/bin/env python3
"""weight_diff.py A B - how far apart two Hugging Face directories' weights are.

Reads every *.safetensors file of both directories (numpy only: the 8-byte
header length, the JSON header, raw little-endian data), requires the same
tensor names, shapes and dtypes, and prints one JSON line:
  {"tensors": n, "max_abs": max |a-b| over all elements,
   "max_rel": max over tensors of ||a-b||_2 / ||a||_2, "worst": name of that tensor}
Used by tests/test_resume.c to measure reduction noise between runs on
different rank layouts (exit 1 with a message when the sets differ)."""
import glob
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64}


def load(d):
    out = {}
    files = sorted(glob.glob(os.path.join(d, "*.safetensors")))
    if not files:
        sys.exit(f"{d}: no *.safetensors files")
    for path in files:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            head = json.loads(f.read(n))
            data = f.read()
        for name, t in head.items():
            if name == "__metadata__":
                continue
            a, b = t["data_offsets"]
            raw = data[a:b]
            if t["dtype"] == "BF16":
                x = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            elif t["dtype"] in DTYPES:
                x = np.frombuffer(raw, dtype=np.dtype(DTYPES[t["dtype"]]).newbyteorder("<"))
            else:
                sys.exit(f"{path}: tensor {name} has dtype {t['dtype']}")
            out[name] = x.astype(np.float64).reshape(t["shape"])
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: weight_diff.py DIR_A DIR_B")
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if set(a) != set(b):
        sys.exit(f"tensor names differ: only in A {sorted(set(a) - set(b))[:5]}, only in B {sorted(set(b) - set(a))[:5]}")
    max_abs, max_rel, worst = 0.0, 0.0, ""
    for k in sorted(a):
        if a[k].shape != b[k].shape:
            sys.exit(f"{k}: shape {a[k].shape} vs {b[k].shape}")
        d = a[k] - b[k]
        max_abs = max(max_abs, float(np.max(np.abs(d))) if d.size else 0.0)
        na = float(np.linalg.norm(a[k]))
        rel = float(np.linalg.norm(d)) / na if na > 0 else float(np.linalg.norm(d))
        if rel >= max_rel:
            max_rel, worst = rel, k
    print(json.dumps({"tensors": len(a), "max_abs": max_abs, "max_rel": max_rel, "worst": worst}))


if __name__ == "__main__":
    main()
