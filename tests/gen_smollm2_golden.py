#!/usr/bin/env python3
"""Golden data for SmolLM2-135M-Instruct (Q4_1 GGUF) from an independent oracle.

Oracle: Hugging Face `transformers` loading the GGUF with
`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`, which dequantizes
every tensor to float32 (via the `gguf` package) and un-permutes q/k back to
the HF rotate_half layout. The forward pass runs in float32 on CPU with the
eager attention implementation. See docs/oracles.md for how it was installed.

Run by hand (not by the test suite), from the repo root:
    /root/oracle-venv/bin/python tests/gen_smollm2_golden.py

Writes tests/golden/smollm2/:
  ids.json          64 input ids (BOS=1 + 63 tokens of the TinyStories file's
                    beginning) and the text they came from
  logits_rows.f32   float32 little-endian logits [9][49152] for positions
                    0,1,2,3,7,15,31,47,63
  meta.json         rows, argmax at all 64 positions, mean next-token NLL
                    (float64 from the float32 logits), the wikitext perplexity
                    protocol result, the oracle's config, versions, sha256
  wikitext_16k_ids.json  the token ids of the first 16384 bytes of the
                    WikiText-2 raw test file (no BOS), to cross-check a tokenizer
"""
import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ROWS = [0, 1, 2, 3, 7, 15, 31, 47, 63]
N_IDS = 64
BOS = 1


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_cache():
    return os.environ.get("MINIFUSE_CACHE", os.path.expanduser("~/.cache/minifuse"))


def default_shared():
    return os.environ.get("MINIFUSE_SHARED", os.path.join(repo_root(), "..", "shared"))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_oracle(gguf_path):
    d, f = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return tok, model


def encode(tok, text):
    """Token ids of text with no special tokens added."""
    return tok(text, add_special_tokens=False).input_ids


@torch.no_grad()
def forward_logits(model, ids):
    """ids: list[int] (T) -> float32 numpy logits (T, vocab)."""
    x = torch.tensor([ids], dtype=torch.long)
    out = model(input_ids=x, use_cache=False)
    return out.logits[0].float().numpy()


def nll_f64(logits, targets):
    """Per-position NLL in float64. logits (T, V) float32, targets (T,)."""
    l64 = logits.astype(np.float64)
    m = l64.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(l64 - m).sum(axis=1))
    return lse - l64[np.arange(len(targets)), targets]


def golden_ids(tok, shared):
    """BOS + the first 63 tokens of the TinyStories file's beginning.

    The first paragraph alone is shorter than 63 tokens, so the text runs on
    into the next paragraph(s); 'text' is exactly the prefix the 63 tokens
    decode to."""
    path = os.path.join(shared, "llm_assets/text/tinystories_train_first2MiB.txt")
    with open(path, "rb") as f:
        raw = f.read(4096).decode("utf-8", errors="ignore")
    paras = raw.split("\n")
    first_para_ids = encode(tok, paras[0])
    ids = encode(tok, raw)[: N_IDS - 1]
    text = tok.decode(ids)
    assert raw.startswith(text), "decoded prefix is not a prefix of the source text"
    reenc = encode(tok, text)
    return [BOS] + ids, text, len(first_para_ids), reenc == ids


def wikitext_ppl(model, ids, ctx, max_windows):
    """Non-overlapping windows of ctx tokens; input = BOS + window[:-1]; all
    ctx window tokens are scored. Returns (per-window mean NLLs, total NLL, n)."""
    n_win = min(len(ids) // ctx, max_windows)
    per_win, total, n = [], 0.0, 0
    for w in range(n_win):
        win = ids[w * ctx:(w + 1) * ctx]
        logits = forward_logits(model, [BOS] + win[:-1])
        nll = nll_f64(logits, np.array(win))
        per_win.append(float(nll.mean()))
        total += float(nll.sum())
        n += len(win)
    return per_win, total, n


def oracle_config(model):
    c = model.config
    rope = getattr(c, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(c, "rope_theta", None))
    return {
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": getattr(c, "head_dim", c.hidden_size // c.num_attention_heads),
        "intermediate_size": c.intermediate_size,
        "vocab_size": c.vocab_size,
        "rope_theta": theta,
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": c.tie_word_embeddings,
        "max_position_embeddings": c.max_position_embeddings,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", default=os.path.join(default_cache(), GGUF_NAME))
    ap.add_argument("--shared", default=default_shared())
    ap.add_argument("--out", default=os.path.join(repo_root(), "tests/golden/smollm2"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    tok, model = load_oracle(args.gguf)

    # 64-token logits fixture
    ids, text, first_para_len, roundtrip = golden_ids(tok, args.shared)
    logits = forward_logits(model, ids)                       # (64, V) f32
    assert logits.shape == (N_IDS, model.config.vocab_size)
    rows = np.ascontiguousarray(logits[ROWS].astype("<f4"))   # (9, V)
    rows.tofile(os.path.join(args.out, "logits_rows.f32"))
    nll = nll_f64(logits[:-1], np.array(ids[1:]))
    # float64 run of the same weights, to size float32 rounding noise
    model64 = model.to(torch.float64)
    with torch.no_grad():
        l64 = model64(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy()
    model.to(torch.float32)
    fp32_vs_fp64 = float(np.abs(logits.astype(np.float64) - l64).max())

    with open(os.path.join(args.out, "ids.json"), "w") as f:
        json.dump({"ids": ids, "bos_prepended": True, "text": text,
                   "source": "llm_assets/text/tinystories_train_first2MiB.txt "
                             "(beginning of file; first paragraph is only %d "
                             "tokens, so it runs into the next)" % first_para_len},
                  f, indent=1)

    # perplexity protocol on 16 KiB of WikiText-2 raw test
    wpath = os.path.join(args.shared, "llm_assets/text/wikitext2_raw_test.txt")
    with open(wpath, "rb") as f:
        wtext = f.read(16384).decode("utf-8", errors="strict")
    wids = encode(tok, wtext)
    per_win, tot, n = wikitext_ppl(model, wids, 256, 8)
    with open(os.path.join(args.out, "wikitext_16k_ids.json"), "w") as f:
        json.dump({"source": "first 16384 bytes of llm_assets/text/wikitext2_raw_test.txt, "
                             "no BOS, add_special_tokens=False", "ids": wids}, f)

    meta = {
        "oracle": "transformers %s (torch %s, gguf %s), AutoModelForCausalLM.from_pretrained"
                  "(gguf_file=...) dequantized to float32, eager attention, CPU"
                  % (transformers.__version__, torch.__version__, _gguf_version()),
        "model_file": os.path.basename(args.gguf),
        "model_sha256": sha256_file(args.gguf),
        "config": oracle_config(model),
        "n_ids": N_IDS,
        "vocab": int(model.config.vocab_size),
        "rows": ROWS,
        "logits_file": "logits_rows.f32: little-endian float32 [%d][%d]" % (len(ROWS), logits.shape[1]),
        "argmax": [int(a) for a in logits.argmax(axis=1)],
        "mean_nll": float(nll.mean()),
        "nll_positions": "targets ids[1..63] predicted from positions 0..62, float64 log-softmax of float32 logits",
        "first_paragraph_tokens": first_para_len,
        "text_reencodes_to_same_ids": bool(roundtrip),
        "max_abs_logit_diff_fp32_vs_fp64_oracle": fp32_vs_fp64,
        "wikitext_16k_ctx256": {
            "text": "first 16384 bytes of llm_assets/text/wikitext2_raw_test.txt (CRLF kept), no BOS",
            "token_ids": len(wids),
            "windows": len(per_win),
            "tokens": n,
            "mean_nll": tot / n,
            "ppl": math.exp(tot / n),
            "per_window_mean_nll": per_win,
            "protocol": "non-overlapping 256-token windows, partial last dropped; input = BOS + "
                        "window[0:255]; target of position i = window[i]; first 8 windows",
        },
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps({k: meta[k] for k in ("mean_nll", "wikitext_16k_ctx256")}, indent=1))
    return 0


def _gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
