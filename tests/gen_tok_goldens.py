#!/usr/bin/env python3
"""Golden data for tests/test_tokenizer.c, from implementations independent of ours.

Run by hand (not by the test suite):
    pip install sentencepiece tokenizers gguf numpy
    python3 tests/gen_tok_goldens.py            # writes tests/golden/tok/*.json

Writes
  tests/golden/tok/llama2c_counts.json  token counts of the TinyStories 2 MiB file with
      tok512.bin and the Llama-2 tokenizer.bin, from a Python port of llama2.c run.c encode()
      (BOS + dummy prefix + byte fallback + best-score merges, leftmost on ties).
  tests/golden/tok/llama2_sp_cases.json  a few hundred lines of real text with the ids of the
      `sentencepiece` package (llama2_tokenizer.model, BOS prepended) and of the run.c port.
  tests/golden/tok/smollm2_cases.json  SmolLM2 (GGUF tokenizer, pre "smollm") ids from
      HF `tokenizers` (Rust): BPE from the GGUF vocab/merges, pre-tokenizer
      Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=False)], the control
      tokens as special added tokens; plus whole-file token counts.

Locations: MINIFUSE_SHARED (default ../shared relative to the repo root), MINIFUSE_CACHE
(default ~/.cache/minifuse).
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MINIFUSE_SHARED", os.path.join(ROOT, "..", "shared"))
CACHE = os.environ.get("MINIFUSE_CACHE", os.path.expanduser("~/.cache/minifuse"))
ASSETS = os.path.join(SHARED, "llm_assets")
OUT = os.path.join(ROOT, "tests", "golden", "tok")
TINYSTORIES = os.path.join(ASSETS, "text", "tinystories_train_first2MiB.txt")
WIKI_RAW = os.path.join(ASSETS, "text", "wikitext2_raw_test.txt")
SHAKESPEARE = os.path.join(ASSETS, "text", "tinyshakespeare_input.txt")


# ---------------------------------------------------------------- run.c encode port

def load_llama2c(path, n):
    d = open(path, "rb").read()
    off = 4
    vocab, scores = [], []
    for _ in range(n):
        sc, ln = struct.unpack_from("<fi", d, off)
        off += 8
        vocab.append(d[off:off + ln])
        scores.append(sc)
        off += ln
    assert off == len(d)
    lookup = {}
    for i, v in enumerate(vocab):
        lookup.setdefault(v, i)
    return vocab, scores, lookup


def runc_encode(tok, text_bytes, bos, dummy=True):
    """llama2.c run.c encode(), line by line the same algorithm (pair lookups memoised)."""
    vocab, scores, lookup = tok
    tokens = []
    if bos:
        tokens.append(1)
    if dummy and len(text_bytes) > 0:
        tokens.append(lookup[b" "])
    buf = b""
    b = text_bytes
    for i, c in enumerate(b):
        if (c & 0xC0) != 0x80:
            buf = b""
        buf += bytes([c])
        nxt = b[i + 1] if i + 1 < len(b) else 0
        if (nxt & 0xC0) == 0x80 and len(buf) < 4:
            continue
        tid = lookup.get(buf, -1)
        if tid != -1:
            tokens.append(tid)
        else:
            tokens.extend(x + 3 for x in buf)
        buf = b""
    memo = {}
    while True:
        best_score, best_id, best_idx = -1e10, -1, -1
        for i in range(len(tokens) - 1):
            key = (tokens[i], tokens[i + 1])
            tid = memo.get(key)
            if tid is None:
                tid = lookup.get(vocab[key[0]] + vocab[key[1]], -1)
                memo[key] = tid
            if tid != -1 and scores[tid] > best_score:
                best_score, best_id, best_idx = scores[tid], tid, i
        if best_idx == -1:
            break
        tokens[best_idx] = best_id
        del tokens[best_idx + 1]
    return tokens


def runc_encode_by_lines(tok, text_bytes):
    """run.c encode of a whole file (with BOS), computed line by line.

    Exact because '\\n' is not a vocab string, so it becomes byte token 13 ('<0x0A>'), and no
    vocab string contains '<0x0A>' other than that token itself: token 13 never merges, so
    no merge ever crosses a newline and each line's merges are independent (the order in
    which different lines' merges happen does not change any line's result)."""
    vocab, scores, lookup = tok
    assert b"\n" not in lookup
    assert [v for v in vocab if b"<0x0A>" in v] == [b"<0x0A>"] and vocab[13] == b"<0x0A>"
    lines = text_bytes.split(b"\n")
    n = len(runc_encode(tok, lines[0], bos=True, dummy=True))
    for ln in lines[1:]:
        n += 1 + len(runc_encode(tok, ln, bos=False, dummy=False))
    return n


# ---------------------------------------------------------------- helpers

def read_lines(path, n, skip_empty=True, min_len=1):
    out = []
    for ln in open(path, "rb").read().decode("utf-8").split("\n"):
        if skip_empty and len(ln.strip()) < min_len:
            continue
        out.append(ln)
        if len(out) == n:
            break
    return out


EXTRA = [
    "",
    " ",
    "  ",
    "hello world",
    "Hello  world,   three   spaces",
    " leading space",
    "trailing space ",
    "tabs\tand\ttabs",
    "line one\nline two\n\nline four",
    "crlf\r\nline\r\n",
    "digits 1234567890 and 3.14159, 2024-06-01",
    "it's, I'm, we'll, they've, she'd, don't, can't",
    "Café déjà vu, naïve façade, Ångström, Ærø",
    "日本語のテキストです。中文文本。",
    "emoji: 😀🎉👍🏽 and 🇫🇷",
    "Ελληνικά και русский текст",
    "math: ∑ x² ≤ ∞, α→β",
    "<s> and </s> are not special here",
    "ÿ þ ß \x7f control \x01\x02 bytes",
    "a\u00a0non-breaking\u2009thin\u3000ideographic space",
    # repeated characters: equal-score (equal-rank) pairs, where leftmost-first matters
    "aaa bbbb ccccc hmmm zzzzzzz ooooooooooo",
    "!!!!! ----- ========= ..... ??? ******** ~~~~~~",
    "     five spaces, then   three,  two",
    "1111111 000000 99999 ababababab xoxoxoxo",
]


def random_texts(n, seed):
    """Seeded random strings that stress the pre-tokenizer: whitespace kinds and runs,
    apostrophes, digits, punctuation, letters and marks from several scripts, specials."""
    import random
    rnd = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789", "0123456789\u0660\u0661\u00b2\u2163\uff11",
        " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2009", "\u3000", "\u000b\u000c", "\u0085", "\u2028",
        "'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "\u2019",
        ".,;:!?-()[]{}<>/\\|@#$%^&*_+=~`\"", "\u2026\u2014\u00ab\u00bb\u201c\u201d",
        "\u00e9\u00e8\u00fc\u00f1\u00e7\u00df\u00c5\u0153", "e\u0301a\u0308", "\u0391\u03b2\u03b3\u0436\u044b\u0449",
        "\u65e5\u672c\u8a9e\u4e2d\u6587\u3042\u30a2", "\ud55c\uad6d\uc5b4",
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
        "\u0939\u093f\u0928\u094d\u0926\u0940", "\U0001F600\U0001F389\U0001F44D\U0001F3FD", "\u2211\u221e\u2264",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "|>",
    ]
    out = []
    for _ in range(n):
        k = rnd.randint(1, 40)
        parts = []
        for _ in range(k):
            pool = rnd.choice(pools)
            if len(pool) > 3 and not pool.startswith("<|") and rnd.random() < 0.7:
                parts.append("".join(rnd.choice(pool) for _ in range(rnd.randint(1, 6))))
            else:
                parts.append(pool)
        out.append("".join(parts))
    return out


# ---------------------------------------------------------------- llama2.c goldens

def gen_llama2c():
    tok512 = load_llama2c(os.path.join(ASSETS, "models", "stories260K", "tok512.bin"), 512)
    llama2 = load_llama2c(os.path.join(ASSETS, "tokenizers", "llama2_tokenizer.bin"), 32000)

    # the shared tok512 goldens must agree with this port (checks the port)
    for case in json.load(open(os.path.join(ASSETS, "reference", "tok512_encode_cases.json"))):
        assert runc_encode(tok512, case["text"].encode(), True) == case["ids"], "port disagrees with reference"

    data = open(TINYSTORIES, "rb").read()
    counts = {"file": "llm_assets/text/tinystories_train_first2MiB.txt", "bytes": len(data), "with_bos": True}
    print("run.c port: tok512 ...", flush=True)
    counts["tok512"] = runc_encode_by_lines(tok512, data)
    print("run.c port: llama2 ...", flush=True)
    counts["llama2"] = runc_encode_by_lines(llama2, data)

    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(ASSETS, "tokenizers", "llama2_tokenizer.model"))
    counts["llama2_sentencepiece"] = 1 + len(sp.encode(data.decode("utf-8")))
    print("counts", counts, flush=True)
    json.dump(counts, open(os.path.join(OUT, "llama2c_counts.json"), "w"), indent=1)

    texts = (read_lines(TINYSTORIES, 100) + read_lines(SHAKESPEARE, 100) +
             [ln for ln in read_lines(WIKI_RAW, 200, min_len=2) if len(ln) < 1200][:100] + EXTRA)
    cases, n_diff = [], 0
    for s in texts:
        sp_ids = [1] + sp.encode(s)
        rc_ids = runc_encode(llama2, s.encode("utf-8"), True)
        same = sp_ids == rc_ids
        n_diff += not same
        case = {"text": s, "sp_ids": sp_ids, "same_as_sp": same}
        if not same:
            case["runc_ids"] = rc_ids
        cases.append(case)
    print(f"llama2 cases: {len(cases)}, run.c != sentencepiece in {n_diff}", flush=True)
    for c in cases:
        if not c["same_as_sp"]:
            print("  differs:", repr(c["text"][:80]))
    json.dump({"tokenizer": "llm_assets/tokenizers/llama2_tokenizer.bin", "cases": cases},
              open(os.path.join(OUT, "llama2_sp_cases.json"), "w"), ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------- SmolLM2 (HF tokenizers)

def gguf_vocab(path):
    from gguf import GGUFReader
    r = GGUFReader(path)

    def strs(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    pre = bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    return strs("tokenizer.ggml.tokens"), strs("tokenizer.ggml.merges"), types, pre


# original tokenizer.json regexes of Llama-3 and Qwen2
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def gen_smollm2():
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    tokens, merges, types, pre = gguf_vocab(os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert pre == "smollm"
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens)
    pairs = []
    for m in merges:
        a, b = m.split(" ")
        pairs.append((a, b))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(tokens, types) if ty in (3, 4)]
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])

    texts = []
    stories = open(TINYSTORIES, encoding="utf-8").read().split("<|endoftext|>")
    texts += [s.strip() for s in stories[:3]]
    texts.append("<|endoftext|>".join(stories[3:5]))
    wiki = open(WIKI_RAW, encoding="utf-8", newline="").read()
    texts += [wiki[:1500], wiki[40000:41500]]
    shk = open(SHAKESPEARE, encoding="utf-8").read()
    texts += [shk[:800], shk[500000:501000]]
    texts += EXTRA
    texts += [
        "<|im_start|>user\nhi<|im_end|>",
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 12+30?<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|><|endoftext|>x<|im_end|><|im_start",
        "phone: +1 (555) 010-9999, year 1999, 007, 1,000,000.00",
        "multiple   spaces    here\n\n\n   indented\n\t\ttabbed",
        "def f(x):\n    return x ** 2  # comment\n",
        "HELLO IT'S ME, I'M HERE, WE'LL SEE",
        "    ",
        "\n",
        "\r\n\r\n",
        "a\u2028b\u0085c",
        # bytes the SmolLM2 vocab has no token for (0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, 0xF1, 0xF2):
        # dropped by HF tokenizers, so decode(encode(x)) != x ("lossy")
        "a\x04b \x06\x13\x14\x16\x1d end",
        "plane 1-3 ok \U00010348 \U00020000, plane 4+ lead 0xF1/0xF2: \U00040000 \U0008FFFF \U0010FFFD",
    ]
    texts += random_texts(60, seed=1234)
    cases = []
    for s in texts:
        ids = tk.encode(s, add_special_tokens=False).ids
        case = {"text": s, "ids": ids}
        if tk.decode(ids, skip_special_tokens=False) != s:
            case["lossy"] = True
            print("  lossy:", repr(s[:60]))
        cases.append(case)
    # The same vocab/merges under the Llama-3 and Qwen2 pre-tokenizers (their original
    # tokenizer.json regexes, run by HF's onig; Llama-3 also has ignore_merges), to check
    # our PCRE2 renderings of llama.cpp's regexes on these texts.
    other_pre = {}
    for name, pattern, ignore in (
        ("llama-bpe", LLAMA3_RE, True),
        ("qwen2", QWEN2_RE, False),
    ):
        tk2 = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore))
        tk2.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tk2.decoder = decoders.ByteLevel()
        tk2.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        other_pre[name] = [tk2.encode(c["text"], add_special_tokens=False).ids for c in cases]
    counts = {}
    for name, path in (("wikitext2_raw_test.txt", WIKI_RAW), ("tinystories_train_first2MiB.txt", TINYSTORIES)):
        text = open(path, encoding="utf-8", newline="").read()
        counts[name] = len(tk.encode(text, add_special_tokens=False).ids)
    print("smollm2 counts", counts, flush=True)
    json.dump({"gguf": "SmolLM2-135M-Instruct.Q4_1.gguf", "pre": pre, "cases": cases, "file_counts": counts,
               "other_pre": other_pre},
              open(os.path.join(OUT, "smollm2_cases.json"), "w"), ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    what = sys.argv[1:] or ["smollm2", "llama2c"]
    if "smollm2" in what:
        gen_smollm2()
    if "llama2c" in what:
        gen_llama2c()
