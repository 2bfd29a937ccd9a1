#!/usr/bin/env python3
"""Golden data for tests/test_gguf.c, made with numpy + the PyPI `gguf` package
(an implementation independent of ours). Run by hand from the repo root:

    python3 tests/gen_dequant_goldens.py            # all goldens
    MINIFUSE_CACHE=/path python3 tests/gen_dequant_goldens.py

Writes
  tests/golden/dequant/<TYPE>.bin   raw ggml blocks
  tests/golden/dequant/<TYPE>.f32   the values gguf.quants dequantizes them to (f32 LE)
  tests/golden/gguf/tiny.gguf       small GGUF written by gguf.GGUFWriter
  tests/golden/gguf/tiny.json       its expected metadata, tensors and field byte offsets
  tests/golden/gguf/smollm2.json    facts about the real SmolLM2-135M-Instruct Q4_1 GGUF,
                                    read and dequantized with gguf.GGUFReader / gguf.quants

"wsum" below is an exact fingerprint of a f32 array: sum over i of
bits(x[i]) * (2i + 1) mod 2^64, as 16 hex digits (bits = the uint32 pattern).
"""
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from gguf import quants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEQ_DIR = os.path.join(ROOT, "tests", "golden", "dequant")
GGUF_DIR = os.path.join(ROOT, "tests", "golden", "gguf")

QUANTIZABLE = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16}
ALL_TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
# byte offsets of the fp16 scale fields inside one block (ggml-common.h)
HALF_FIELDS = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
               T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


def wsum(x):
    bits = np.ascontiguousarray(x, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    w = np.arange(bits.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    with np.errstate(over="ignore"):
        return "%016x" % int(np.sum(bits * w, dtype=np.uint64))


def dequant(raw, qtype):
    return np.asarray(quants.dequantize(np.frombuffer(raw, dtype=np.uint8).copy(), qtype), dtype=np.float32)


def random_blocks(rng, qtype, n_blocks):
    """Random bytes with sane fp16 scales (finite, moderate magnitude)."""
    _, tsize = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, tsize), dtype=np.uint8)
    for off in HALF_FIELDS[qtype]:
        h = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
        b[:, off:off + 2] = h
    return b.tobytes()


def make_raw(rng, qtype):
    """Raw blocks for one type: a few blocks, a mix of quantized and random ones."""
    if qtype == T.F32:
        x = (rng.standard_normal(64) * 3).astype(np.float32)
        x[:4] = [0.0, -0.0, np.inf, -np.inf]
        x[4] = np.float32(1e-42)  # subnormal
        return x.tobytes()
    if qtype == T.F16:
        h = rng.integers(0, 65536, size=256, dtype=np.uint16)
        h = np.where((h & 0x7C00) == 0x7C00, h & 0x83FF, h)  # no inf/nan from random bits
        h[:6] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x83FF]  # zeros, infs, subnormals
        return h.astype(np.uint16).tobytes()
    if qtype == T.BF16:
        x = (rng.standard_normal(64) * 10).astype(np.float32)
        x[:3] = [0.0, -0.0, 3.0e-39]
        q = quants.quantize(x, T.BF16).tobytes()
        return q + rng.integers(0, 65536, size=64, dtype=np.uint16).tobytes()
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if qtype in QUANTIZABLE:
        x = (rng.standard_normal(4 * block) * rng.uniform(0.01, 2.0)).astype(np.float32)
        q = quants.quantize(x, qtype).tobytes()
        return q + random_blocks(rng, qtype, 4)
    return random_blocks(rng, qtype, 4 if block == 256 else 8)


def gen_dequant(rng):
    os.makedirs(DEQ_DIR, exist_ok=True)
    for qtype in ALL_TYPES:
        raw = make_raw(rng, qtype)
        y = dequant(raw, qtype)
        with open(os.path.join(DEQ_DIR, qtype.name + ".bin"), "wb") as f:
            f.write(raw)
        with open(os.path.join(DEQ_DIR, qtype.name + ".f32"), "wb") as f:
            f.write(y.astype("<f4").tobytes())
        print("dequant %-5s %5d bytes -> %5d values" % (qtype.name, len(raw), y.size))


# ---------------------------------------------------------------- tiny.gguf

# (key, GGUF type name, value, writer sub_type); values chosen to hit edge cases
TINY_KV = [
    ("test.u8", "UINT8", 250, None),
    ("test.i8", "INT8", -100, None),
    ("test.u16", "UINT16", 65000, None),
    ("test.i16", "INT16", -32000, None),
    ("test.u32", "UINT32", 4000000000, None),
    ("test.i32", "INT32", -2000000000, None),
    ("test.f32", "FLOAT32", 0.1, None),
    ("test.bool_t", "BOOL", True, None),
    ("test.bool_f", "BOOL", False, None),
    ("test.str", "STRING", "héllo wörld", None),
    ("test.u64", "UINT64", 2**64 - 1, None),
    ("test.i64", "INT64", -(2**62) - 7, None),
    ("test.f64", "FLOAT64", 3.141592653589793, None),
    ("test.u32_small", "UINT32", 30, None),
    ("test.arr_i32", "ARRAY", [1, -2, 3, 2147483647, -2147483648], V.INT32),
    ("test.arr_u32", "ARRAY", [0, 7, 4294967295], V.UINT32),
    ("test.arr_u32_small", "ARRAY", [5, 6, 7], V.UINT32),
    ("test.arr_f32", "ARRAY", [0.5, -1.25, 1e-8, 3.4e38], V.FLOAT32),
    ("test.arr_f64", "ARRAY", [0.1, 0.2], V.FLOAT64),
    ("test.arr_bool", "ARRAY", [True, False, True], V.BOOL),
    ("test.arr_u8", "ARRAY", [1, 2, 255], V.UINT8),
    ("test.arr_str", "ARRAY", [b"a", b"", "Ġthe".encode(), b"nul\x00byte", b"\xff\xfe raw", "日本"
                               .encode()], V.STRING),
    ("test.nested", "ARRAY", [[1, 2], [3, 4, 5]], V.ARRAY),
    ("test.after_nested", "UINT32", 12345, None),
]


def write_kv(w, key, tname, value, sub):
    vt = V[tname]
    if vt == V.ARRAY:
        w.add_key_value(key, value, V.ARRAY, sub_type=sub if sub != V.ARRAY else None)
    else:
        w.add_key_value(key, value, vt)


def tiny_tensors(rng):
    """name -> (numpy data to write, raw_dtype or None, values gguf-py reads back)."""
    out = []
    f32 = (rng.standard_normal((4, 7)) * 2).astype(np.float32)
    out.append(("blk.0.f32", f32, None))
    out.append(("blk.0.vec", (rng.standard_normal(5)).astype(np.float32), None))
    out.append(("blk.0.t3d", (rng.standard_normal((2, 3, 4))).astype(np.float32), None))
    out.append(("blk.0.f16", (rng.standard_normal((3, 64))).astype(np.float16), None))
    for name, qt, shape in [("blk.0.b16", T.BF16, (2, 32)), ("blk.0.q80", T.Q8_0, (4, 64)),
                            ("blk.0.q40", T.Q4_0, (2, 64)), ("blk.0.q41", T.Q4_1, (2, 32)),
                            ("blk.0.q50", T.Q5_0, (2, 32)), ("blk.0.q51", T.Q5_1, (3, 32))]:
        x = (rng.standard_normal(shape)).astype(np.float32)
        out.append((name, quants.quantize(x, qt), qt))
    for name, qt in [("blk.0.q2k", T.Q2_K), ("blk.0.q3k", T.Q3_K), ("blk.0.q4k", T.Q4_K),
                     ("blk.0.q5k", T.Q5_K), ("blk.0.q6k", T.Q6_K)]:
        tsize = gguf.GGML_QUANT_SIZES[qt][1]
        raw = np.frombuffer(random_blocks(rng, qt, 2), dtype=np.uint8).reshape(2, tsize).copy()
        out.append((name, raw, qt))
    return out


def walk_gguf(buf):
    """Independent byte-level walk of a GGUF: returns field offsets."""
    pos = 0

    def u32():
        nonlocal pos
        v = struct.unpack_from("<I", buf, pos)[0]
        pos += 4
        return v

    def u64():
        nonlocal pos
        v = struct.unpack_from("<Q", buf, pos)[0]
        pos += 8
        return v

    def skip_value(t):
        nonlocal pos
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        if t in sizes:
            pos += sizes[t]
        elif t == 8:
            n = u64()
            pos += n
        else:
            et = u32()
            n = u64()
            for _ in range(n):
                skip_value(et)

    assert buf[:4] == b"GGUF"
    pos = 4
    u32()
    n_t, n_kv = u64(), u64()
    kvs = {}
    for _ in range(n_kv):
        key_len_off = pos
        key = buf[pos + 8: pos + 8 + u64()].decode()
        pos += len(key.encode())
        type_off = pos
        t = u32()
        value_off = pos
        skip_value(t)
        kvs[key] = {"key_len_off": key_len_off, "type_off": type_off, "value_off": value_off}
    tis = []
    for _ in range(n_t):
        ti = {"name_len_off": pos}
        n = u64()
        ti["name_off"] = pos
        pos += n
        ti["n_dims_off"] = pos
        nd = u32()
        ti["ne_off"] = pos
        pos += 8 * nd
        ti["type_off"] = pos
        u32()
        ti["offset_off"] = pos
        ti["offset"] = u64()
        tis.append(ti)
    return kvs, tis, pos


def gen_tiny(rng):
    os.makedirs(GGUF_DIR, exist_ok=True)
    path = os.path.join(GGUF_DIR, "tiny.gguf")
    w = gguf.GGUFWriter(path, arch="tinyarch")
    w.add_custom_alignment(64)
    for key, tname, value, sub in TINY_KV:
        write_kv(w, key, tname, value, sub)
    tensors = tiny_tensors(rng)
    for name, data, qt in tensors:
        w.add_tensor(name, data, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    buf = open(path, "rb").read()
    kv_offs, ti_offs, end_infos = walk_gguf(buf)
    data_off = (end_infos + 63) // 64 * 64

    # expectations from gguf-py's own reader + dequantizers
    r = gguf.GGUFReader(path)
    tjs = []
    min_valid = 0
    for t, ti in zip(r.tensors, ti_offs):
        y = np.asarray(quants.dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32).reshape(-1)
        ne = [int(v) for v in t.shape]
        nb = int(t.n_bytes)
        assert int(t.data_offset) == data_off + ti["offset"], (t.name, t.data_offset, data_off, ti)
        min_valid = max(min_valid, data_off + ti["offset"] + nb)
        tjs.append({"name": t.name, "n_dims": len(ne), "ne": ne + [1] * (4 - len(ne)),
                    "type": int(t.tensor_type), "type_name": t.tensor_type.name,
                    "nbytes": nb, "offset": ti["offset"], "n_values": int(y.size),
                    "sum": float(np.sum(y, dtype=np.float64)), "wsum": wsum(y),
                    "first": [float(v) for v in y[:8]], **{k: v for k, v in ti.items() if k != "offset"}})

    kvs = []
    for key, tname, value, sub in [("general.architecture", "STRING", "tinyarch", None),
                                   ("general.alignment", "UINT32", 64, None)] + TINY_KV:
        e = {"key": key, "type": tname, **kv_offs[key]}
        if tname == "ARRAY":
            e["elem_type"] = V(sub).name
            e["n"] = len(value)
            if sub == V.STRING:
                e["value_hex"] = [bytes(v).hex() for v in value]
            elif sub == V.ARRAY:
                e["value"] = value
            elif sub == V.BOOL:
                e["value"] = [1 if v else 0 for v in value]
            elif sub in (V.FLOAT32,):
                e["value"] = [float(np.float32(v)) for v in value]
            else:
                e["value"] = value
        elif tname == "STRING":
            e["value_hex"] = value.encode().hex()
        elif tname in ("UINT64", "INT64"):
            e["value_str"] = str(value)
        elif tname == "FLOAT32":
            e["value"] = float(np.float32(value))
        elif tname == "BOOL":
            e["value"] = 1 if value else 0
        else:
            e["value"] = value
        kvs.append(e)
    # every key was found by gguf-py's reader too
    for e in kvs:
        assert e["key"] in r.fields, e["key"]

    info = {"file_size": len(buf), "version": 3, "n_tensors": len(tjs), "n_kv": len(kvs),
            "alignment": 64, "data_offset": data_off, "end_of_infos": end_infos,
            "min_valid_size": min_valid, "kv": kvs, "tensors": tjs}
    with open(os.path.join(GGUF_DIR, "tiny.json"), "w") as f:
        json.dump(info, f, indent=1)
    print("tiny.gguf %d bytes, %d tensors, %d keys" % (len(buf), len(tjs), len(kvs)))


# ---------------------------------------------------------------- SmolLM2

SMOL_TENSORS = ["blk.0.attn_q.weight", "token_embd.weight", "output_norm.weight", "blk.29.ffn_down.weight",
                "blk.7.attn_k.weight"]


def gen_smollm2():
    cache = os.environ.get("MINIFUSE_CACHE", os.path.expanduser("~/.cache/minifuse"))
    path = os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        print("skipping smollm2.json: %s not found" % path)
        return
    r = gguf.GGUFReader(path)
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"]
    merges = f["tokenizer.ggml.merges"]
    ttype = f["tokenizer.ggml.token_type"]

    def tok(field, i):
        return bytes(field.parts[field.data[i]]).hex()

    tjs = []
    by_name = {t.name: t for t in r.tensors}
    for name in SMOL_TENSORS:
        t = by_name[name]
        y = np.asarray(quants.dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32).reshape(-1)
        tjs.append({"name": name, "type": int(t.tensor_type), "ne": [int(v) for v in t.shape],
                    "n_values": int(y.size), "sum": float(np.sum(y, dtype=np.float64)),
                    "sumsq": float(np.sum(y.astype(np.float64) ** 2)), "wsum": wsum(y),
                    "first": [float(v) for v in y[:64]], "last": [float(v) for v in y[-64:]]})
        print("smollm2 %-24s %s n=%d" % (name, t.tensor_type.name, y.size))
    ids = [0, 1, 2, 100, 1000, 49151]
    info = {
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "n_tensors": len(r.tensors),
        "n_kv": len(f) - 3,  # GGUFReader adds GGUF.version / tensor_count / kv_count
        "block_count": int(f["llama.block_count"].contents()),
        "embedding_length": int(f["llama.embedding_length"].contents()),
        "rms_eps": float(f["llama.attention.layer_norm_rms_epsilon"].contents()),
        "rope_freq_base": float(f["llama.rope.freq_base"].contents()),
        "architecture": f["general.architecture"].contents(),
        "n_tokens": len(tokens.data), "n_merges": len(merges.data),
        "tokens": [{"id": i, "hex": tok(tokens, i), "type": int(ttype.contents(i))} for i in ids],
        "merges": [{"id": i, "hex": tok(merges, i)} for i in [0, 1, 48899]],
        "add_bos_token": bool(f["tokenizer.ggml.add_bos_token"].contents()),
        "eos_token_id": int(f["tokenizer.ggml.eos_token_id"].contents()),
        "tensors": tjs,
    }
    with open(os.path.join(GGUF_DIR, "smollm2.json"), "w") as fo:
        json.dump(info, fo, indent=1)


def main():
    rng = np.random.default_rng(20240611)
    gen_dequant(rng)
    gen_tiny(rng)
    if "--no-model" not in sys.argv:
        gen_smollm2()


if __name__ == "__main__":
    main()
