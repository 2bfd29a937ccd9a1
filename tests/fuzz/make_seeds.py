#!/usr/bin/env python3
"""make_seeds.py OUTDIR - seed corpora for the non-HDF5 fuzz targets, made
from the real models (docs/fuzzing.md). Nothing large is committed: the seeds
are cut out of the shared assets at build time.

  OUTDIR/safetensors/   stories260K_hf's header with three real tensors (F32, and as F16)
  OUTDIR/config/        stories260K_hf's config.json and variants (tokenizer path, llama3 RoPE, qwen2)
  OUTDIR/gguf/          SmolLM2-135M's metadata (tokenizer cut to 300 tokens) and the tensor
                        infos of blocks 0-1 and the rest with rows cut to 2 (real bytes);
                        tests/golden/gguf/tiny.gguf
  OUTDIR/gguf_tokenizer/ SmolLM2's gpt2 tokenizer (2000 tokens, the merges among them), and
                        stories260K's tok512 as a llama (SentencePiece) GGUF vocabulary
  OUTDIR/llama2c/       a 1-layer llama2.c model with stories260K's header layout and
                        weights; the bare 28-byte header of stories260K.bin
  OUTDIR/tokenizer_bin/ tok512.bin (vocabulary 512, and 300: a mismatch)

Assets: $MINIFUSE_SHARED (default ../shared) and $MINIFUSE_CACHE (default
~/.cache/minifuse); what is missing is skipped with a note."""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("MINIFUSE_SHARED", os.path.join(ROOT, "..", "shared"))
CACHE = os.environ.get("MINIFUSE_CACHE", os.path.expanduser("~/.cache/minifuse"))
ASSETS = os.path.join(SHARED, "llm_assets")
SMOLLM2 = os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")


def put(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def have(path):
    if os.path.exists(path):
        return True
    print(f"make_seeds: {path} missing, its seeds skipped", file=sys.stderr)
    return False


# ---------------------------------------------------------------- safetensors

def st_file(entries):
    """entries: [(name, dtype, shape, bytes)] -> safetensors bytes."""
    header, off, blob = {"__metadata__": {"format": "pt"}}, 0, b""
    for name, dt, shape, data in entries:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blob += data
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def safetensors(out):
    p = os.path.join(ASSETS, "models/stories260K_hf/model.safetensors")
    if not have(p):
        return
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    data = b[8 + n:]
    keep = ["model.norm.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.k_proj.weight"]
    ents = []
    for k in keep:
        e = hdr[k]
        s, t = e["data_offsets"]
        ents.append((k, e["dtype"], e["shape"], data[s:t]))
    put(out, "safetensors", "stories_f32.safetensors", st_file(ents))
    import array
    half = []
    for k, dt, shape, raw in ents:
        f = array.array("f", raw)
        h = b"".join(struct.pack("<e", max(-65504.0, min(65504.0, x))) for x in f)
        half.append((k, "F16", shape, h))
    put(out, "safetensors", "stories_f16.safetensors", st_file(half))
    put(out, "safetensors", "stories_header_only.safetensors", b[:8 + n])


# ---------------------------------------------------------------- config.json

def configs(out):
    p = os.path.join(ASSETS, "models/stories260K_hf/config.json")
    if not have(p):
        return
    c = json.load(open(p))
    put(out, "config", "stories.json", json.dumps(c, indent=1).encode())
    v = dict(c, minifuse={"tokenizer": "tok512.bin"})
    put(out, "config", "stories_tokenizer.json", json.dumps(v).encode())
    v = dict(c, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 256}, eos_token_id=[2, 3])
    put(out, "config", "stories_llama3.json", json.dumps(v).encode())
    v = dict(c, architectures=["Qwen2ForCausalLM"], attention_bias=True, rope_parameters={"rope_theta": 1e6},
             tie_word_embeddings=False, head_dim=8)
    put(out, "config", "stories_qwen2.json", json.dumps(v).encode())


# ---------------------------------------------------------------- GGUF

T_STR, T_ARR = 8, 9
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
# ggml type -> (block elements, block bytes)
GGML = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 10: (256, 84),
        11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2)}


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)
        self.p += struct.calcsize(fmt)
        return v[0]

    def string(self):
        n = self.take("<Q")
        s = self.b[self.p:self.p + n]
        self.p += n
        return s

    def value(self, t):
        if t == T_STR:
            return self.string()
        if t == T_ARR:
            et, n = self.take("<I"), self.take("<Q")
            return (et, [self.value(et) for _ in range(n)])
        return self.take(SCALAR[t])


def enc_value(t, v):
    if t == T_STR:
        return struct.pack("<Q", len(v)) + v
    if t == T_ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(enc_value(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def gguf_read(path):
    b = open(path, "rb").read()
    r = Reader(b)
    assert r.b[:4] == b"GGUF"
    r.p = 4
    ver, nt, nkv = r.take("<I"), r.take("<Q"), r.take("<Q")
    kvs = []
    for _ in range(nkv):
        k = r.string()
        t = r.take("<I")
        kvs.append((k, t, r.value(t)))
    infos = []
    for _ in range(nt):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        infos.append((name, ne, r.take("<I"), r.take("<Q")))
    align = dict((k, v) for k, t, v in kvs).get(b"general.alignment", 32)
    data_off = r.p + (-r.p % align)
    return ver, kvs, infos, b, data_off, align


def gguf_write(kvs, tensors, align=32):
    """tensors: [(name, ne, type, bytes)]"""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += struct.pack("<Q", len(k)) + k + struct.pack("<I", t) + enc_value(t, v)
    off, blobs = 0, []
    for name, ne, typ, data in tensors:
        out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne)
        out += struct.pack("<IQ", typ, off)
        pad = data + b"\0" * (-len(data) % align)
        blobs.append(pad)
        off += len(pad)
    out += b"\0" * (-len(out) % align)
    return out + b"".join(blobs)


def cut_tokenizer(kvs, n_tok):
    d = dict((k, (t, v)) for k, t, v in kvs)
    toks = d[b"tokenizer.ggml.tokens"][1][1][:n_tok]
    have_tok = set(toks)
    res = []
    for k, t, v in kvs:
        if k in (b"tokenizer.ggml.tokens", b"tokenizer.ggml.token_type", b"tokenizer.ggml.scores"):
            v = (v[0], v[1][:n_tok])
        elif k == b"tokenizer.ggml.merges":
            keep = []
            for m in v[1]:
                left, _, right = m.partition(b" ")
                if left in have_tok and right in have_tok and left + right in have_tok:
                    keep.append(m)
            v = (v[0], keep)
        elif k.startswith(b"tokenizer.ggml.") and k.endswith(b"_token_id") and t in (4, 5, 10, 11) and v >= n_tok:
            v = 0
        res.append((k, t, v))
    return res


def gguf_seeds(out):
    tiny = os.path.join(ROOT, "tests/golden/gguf/tiny.gguf")
    if have(tiny):
        put(out, "gguf", "tiny.gguf", open(tiny, "rb").read())
    if not have(SMOLLM2):
        return
    ver, kvs, infos, b, data_off, align = gguf_read(SMOLLM2)
    small = cut_tokenizer(kvs, 300)
    tensors = []
    for name, ne, typ, off in infos:
        if name.startswith(b"blk.") and not name.startswith((b"blk.0.", b"blk.1.")):
            continue
        blk, bb = GGML[typ]
        ne2 = list(ne)
        if len(ne2) > 1:
            ne2[1] = min(ne2[1], 2)
        rows = 1
        for x in ne2[1:]:
            rows *= x
        nbytes = ne2[0] // blk * bb * rows
        tensors.append((name, ne2, typ, b[data_off + off:data_off + off + nbytes]))
    put(out, "gguf", "smollm2_rows2.gguf", gguf_write(small, tensors, align))
    put(out, "gguf", "smollm2_norms.gguf", gguf_write(small, [t for t in tensors if len(t[1]) == 1], align))
    tok = [(k, t, v) for k, t, v in cut_tokenizer(kvs, 2000) if k.startswith(b"tokenizer.") or k == b"general.architecture"]
    put(out, "gguf_tokenizer", "smollm2_2000.gguf", gguf_write(tok, []))
    put(out, "gguf_tokenizer", "smollm2_300.gguf", gguf_write(cut_tokenizer(tok, 300), []))


def tok512_gguf(out):
    p = os.path.join(ASSETS, "models/stories260K/tok512.bin")
    if not have(p):
        return
    b = open(p, "rb").read()
    r = Reader(b)
    r.take("<i")
    toks, scores, types = [], [], []
    for i in range(512):
        s, n = r.take("<f"), r.take("<i")
        piece = b[r.p:r.p + n]
        r.p += n
        toks.append(piece.replace(b" ", "\u2581".encode()))
        scores.append(s)
        byte = len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">")
        types.append(2 if i == 0 else 3 if i <= 2 else 6 if byte else 1)
    kvs = [(b"general.architecture", T_STR, b"llama"), (b"tokenizer.ggml.model", T_STR, b"llama"),
           (b"tokenizer.ggml.tokens", T_ARR, (T_STR, toks)), (b"tokenizer.ggml.scores", T_ARR, (6, scores)),
           (b"tokenizer.ggml.token_type", T_ARR, (5, types)), (b"tokenizer.ggml.bos_token_id", 4, 1),
           (b"tokenizer.ggml.eos_token_id", 4, 2), (b"tokenizer.ggml.add_space_prefix", 7, True)]
    put(out, "gguf_tokenizer", "tok512_llama.gguf", gguf_write(kvs, []))


# ---------------------------------------------------------------- llama2.c

def llama2c(out):
    p = os.path.join(ASSETS, "models/stories260K/stories260K.bin")
    if not have(p):
        return
    real = open(p, "rb").read()
    put(out, "llama2c", "stories260K_header.bin", real[:28])
    for vocab in (32, -32):
        dim, hidden, layers, heads, kv, seq = 8, 16, 1, 2, 1, 4
        V, hd = abs(vocab), dim // heads
        floats = (V * dim + layers * dim + layers * dim * dim + 2 * layers * kv * hd * dim + layers * dim * dim +
                  layers * dim + 3 * layers * hidden * dim + dim + seq * hd + (V * dim if vocab < 0 else 0))
        body = real[28:28 + 4 * floats]
        put(out, "llama2c", f"stories_1layer_v{vocab}.bin",
            struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq) + body)


def tokenizer_bin(out):
    # (llama2_tokenizer.bin, 434 KB, would make every input that long: left out)
    for rel, vocab in (("models/stories260K/tok512.bin", 512), ("models/stories260K/tok512.bin", 300)):
        p = os.path.join(ASSETS, rel)
        if have(p):
            put(out, "tokenizer_bin", f"{os.path.basename(rel)}.{vocab}", struct.pack("<H", vocab - 259) + open(p, "rb").read())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    safetensors(out)
    configs(out)
    gguf_seeds(out)
    tok512_gguf(out)
    llama2c(out)
    tokenizer_bin(out)


if __name__ == "__main__":
    main()
