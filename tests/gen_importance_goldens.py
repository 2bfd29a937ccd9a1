#!/usr/bin/env python3
"""Golden data for tests/test_importance.c: `minifuse score` on stories260K,
recomputed in float64 numpy, independent of our C code.

Run by hand (not by the test suite):
    pip install numpy safetensors
    python3 tests/gen_importance_goldens.py     # writes tests/golden/importance/stories260K.json

Model: the HF conversion of stories260K (model.safetensors read with the PyPI
`safetensors` package, config.json; rotate-half RoPE, GQA, tied embeddings).
Text: the first lines of the TinyStories 2 MiB file (just enough for the
windows), tokenized without BOS by a port of llama2.c run.c encode()
(tests/gen_tok_goldens.py, checked here against the ids of
reference/tok512_encode_cases.json).

Calibration windows: window w = ids[w*CTX:(w+1)*CTX]; its input is BOS followed
by the first CTX-1 ids of the window; all CTX ids are the targets.

Scores (definitions in src/compress/importance.h, computed here from scratch):
  width, for every seq aggregation (mean |x|, l2, var over the tokens of a window)
  and batch aggregation (l2, mean, var over windows) of the activations
    mlp            input of down_proj, silu(gate)*up           [L][F]
    heads          input of o_proj per channel, then per head the L2 norm
                   over its head_dim channel scores           [L][H]
    emb_attn_norm  input_layernorm output                      [L][D]
    emb_mlp_norm   post_attention_layernorm output             [L][D]
    emb            sum over layers of both                     [D]
  bi[l]        1 - mean over all tokens of cos(layer input, layer output)
  ppl_full     perplexity of the model over all windows' targets
  ppl_drop[i]  the same with block i removed
  mi[0][i]     1 - mean over tokens of cos(final hidden (before the final norm)
               of the full model, the same with block i removed)
  mi[1][i]     the same pass after removing argmin mi[0] (lowest index on ties),
               relative to the model without that block; null for it.
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from gen_tok_goldens import load_llama2c, runc_encode  # noqa: E402

SHARED = os.environ.get("MINIFUSE_SHARED", os.path.join(ROOT, "..", "shared"))
ASSETS = os.path.join(SHARED, "llm_assets")
HF_DIR = os.path.join(ASSETS, "models", "stories260K_hf")
TOK = os.path.join(ASSETS, "models", "stories260K", "tok512.bin")
TEXT = os.path.join(ASSETS, "text", "tinystories_train_first2MiB.txt")
OUT = os.path.join(ROOT, "tests", "golden", "importance")
CTX, WINDOWS, BOS = 64, 6, 1
AGGS = ("mean", "l2", "var")


# ---------------------------------------------------------------- model (float64)

class Model:
    def __init__(self, d):
        cfg = json.load(open(os.path.join(d, "config.json")))
        w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
        self.L = cfg["num_hidden_layers"]
        self.D = cfg["hidden_size"]
        self.F = cfg["intermediate_size"]
        self.H = cfg["num_attention_heads"]
        self.KV = cfg["num_key_value_heads"]
        self.hd = cfg.get("head_dim", self.D // self.H)
        self.eps = cfg["rms_norm_eps"]
        self.theta = cfg["rope_theta"]
        assert cfg["tie_word_embeddings"] and cfg["hidden_act"] == "silu"
        self.w = w
        self.emb = w["model.embed_tokens.weight"]
        self.lm_head = w.get("lm_head.weight", self.emb)

    def p(self, l, name):
        return self.w["model.layers.%d.%s.weight" % (l, name)]

    def rms(self, x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * g

    def rope(self, x):  # x [T][n][hd], HF rotate_half layout
        T, hd = x.shape[0], self.hd
        inv = self.theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = np.outer(np.arange(T, dtype=np.float64), inv)
        cos = np.concatenate([np.cos(ang)] * 2, axis=1)[:, None, :]
        sin = np.concatenate([np.sin(ang)] * 2, axis=1)[:, None, :]
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * cos + np.concatenate([-x2, x1], axis=-1) * sin

    def layer(self, l, x, acts):
        T, H, KV, hd = x.shape[0], self.H, self.KV, self.hd
        acts["layer_in"] = x.copy()
        xn = self.rms(x, self.p(l, "input_layernorm"))
        acts["attn_norm"] = xn
        q = self.rope((xn @ self.p(l, "self_attn.q_proj").T).reshape(T, H, hd))
        k = self.rope((xn @ self.p(l, "self_attn.k_proj").T).reshape(T, KV, hd))
        v = (xn @ self.p(l, "self_attn.v_proj").T).reshape(T, KV, hd)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        ctx = np.empty((T, H, hd))
        for h in range(H):
            g = h // (H // KV)
            s = q[:, h, :] @ k[:, g, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            ctx[:, h, :] = s @ v[:, g, :]
        ctx = ctx.reshape(T, H * hd)
        acts["attn_ctx"] = ctx
        x = x + ctx @ self.p(l, "self_attn.o_proj").T
        xn = self.rms(x, self.p(l, "post_attention_layernorm"))
        acts["mlp_norm"] = xn
        gate = xn @ self.p(l, "mlp.gate_proj").T
        act = gate / (1.0 + np.exp(-gate)) * (xn @ self.p(l, "mlp.up_proj").T)
        acts["mlp_act"] = act
        x = x + act @ self.p(l, "mlp.down_proj").T
        acts["layer_out"] = x.copy()
        return x

    def forward(self, ids, skip=()):
        """Final hidden state (before the final norm) [T][D], logits [T][V], per-layer activations."""
        x = self.emb[np.asarray(ids)]
        acts = []
        for l in range(self.L):
            a = {}
            if l not in skip:
                x = self.layer(l, x, a)
            acts.append(a)
        logits = self.rms(x, self.w["model.norm.weight"]) @ self.lm_head.T
        return x, logits, acts


def nll_sum(logits, targets):
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.sum(lse - logits[np.arange(len(targets)), targets]))


def cos_rows(a, b):  # [T]
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def seq_agg(x, how):  # x [T][C] -> [C]
    if how == "mean":
        return np.mean(np.abs(x), axis=0)
    if how == "l2":
        return np.sqrt(np.sum(x * x, axis=0))
    return np.var(x, axis=0)  # population variance (two-pass)


def batch_agg(a, how):  # a [N][C] -> [C]
    if how == "l2":
        return np.sqrt(np.sum(a * a, axis=0))
    if how == "mean":
        return np.mean(a, axis=0)
    return np.var(a, axis=0)


def check_model(m):
    """The forward reproduces reference/stories260K_logits_128 (independent llama2.c-layout forward)."""
    ref = json.load(open(os.path.join(ASSETS, "reference", "stories260K_logits_128.json")))
    want = np.fromfile(os.path.join(ASSETS, "reference", ref["logits_file"]), dtype="<f4").reshape(128, -1)
    _, logits, _ = m.forward(ref["input_ids"])
    err = float(np.max(np.abs(logits - want)))
    assert err < 1e-4, "forward disagrees with the reference logits: max |diff| %g" % err
    return err


# ---------------------------------------------------------------- calibration text

def check_tokenizer(tok):
    cases = json.load(open(os.path.join(ASSETS, "reference", "tok512_encode_cases.json")))
    for c in cases:
        assert runc_encode(tok, c["text"].encode("utf-8"), bos=True) == c["ids"], "run.c encode port disagrees"


def calibration_text(tok):
    """The shortest run of whole lines from the start of the file with >= CTX*WINDOWS tokens (no BOS)."""
    lines = open(TEXT, "rb").read().split(b"\n")
    for n in range(1, len(lines)):
        text = b"\n".join(lines[:n]) + b"\n"
        ids = runc_encode(tok, text, bos=False)
        if len(ids) >= CTX * WINDOWS:
            return text, ids
    raise SystemExit("text too short")


# ---------------------------------------------------------------- scores

def main():
    tok = load_llama2c(TOK, 512)
    check_tokenizer(tok)
    text, ids = calibration_text(tok)
    m = Model(HF_DIR)
    print("forward vs reference logits: max |diff| %.2e" % check_model(m))
    L = m.L
    wins = [ids[w * CTX:(w + 1) * CTX] for w in range(WINDOWS)]
    inputs = [[BOS] + win[:CTX - 1] for win in wins]

    # full model: activations, BI, reference final hidden, perplexity
    seq = {s: {k: [[] for _ in range(L)] for k in ("mlp_act", "attn_ctx", "attn_norm", "mlp_norm")} for s in AGGS}
    bi_cos = np.zeros(L)
    finals, base_nll = [], 0.0
    for inp, win in zip(inputs, wins):
        final, logits, acts = m.forward(inp)
        finals.append(final)
        base_nll += nll_sum(logits, win)
        for l in range(L):
            bi_cos[l] += np.sum(cos_rows(acts[l]["layer_in"], acts[l]["layer_out"]))
            for s in AGGS:
                for k in seq[s]:
                    seq[s][k][l].append(seq_agg(acts[l][k], s))
    ntok = CTX * WINDOWS
    bi = 1.0 - bi_cos / ntok

    width = {}
    for s in AGGS:
        for b in AGGS:
            agg = {k: [batch_agg(np.array(seq[s][k][l]), b) for l in range(L)] for k in seq[s]}
            heads = [np.sqrt(np.sum(a.reshape(m.H, m.hd) ** 2, axis=1)) for a in agg["attn_ctx"]]
            emb = np.sum([agg["attn_norm"][l] + agg["mlp_norm"][l] for l in range(L)], axis=0)
            width[s + "/" + b] = {
                "mlp": [a.tolist() for a in agg["mlp_act"]],
                "heads": [h.tolist() for h in heads],
                "emb_attn_norm": [a.tolist() for a in agg["attn_norm"]],
                "emb_mlp_norm": [a.tolist() for a in agg["mlp_norm"]],
                "emb": emb.tolist(),
            }

    # drop-one: perplexity and Macro Influence (pass 0)
    drop_nll, mi_cos = np.zeros(L), np.zeros(L)
    for w, (inp, win) in enumerate(zip(inputs, wins)):
        for i in range(L):
            final, logits, _ = m.forward(inp, skip=(i,))
            drop_nll[i] += nll_sum(logits, win)
            mi_cos[i] += np.sum(cos_rows(finals[w], final))
    ppl_drop = np.exp(drop_nll / ntok)
    mi0 = 1.0 - mi_cos / ntok
    r0 = int(np.argmin(mi0))

    # Macro Influence pass 1: block r0 removed from the reference too
    mi_cos1 = np.zeros(L)
    for inp in inputs:
        ref, _, _ = m.forward(inp, skip=(r0,))
        for i in range(L):
            if i != r0:
                final, _, _ = m.forward(inp, skip=(r0, i))
                mi_cos1[i] += np.sum(cos_rows(ref, final))
    mi1 = [None if i == r0 else 1.0 - mi_cos1[i] / ntok for i in range(L)]
    r1 = min((v, i) for i, v in enumerate(mi1) if v is not None)[1]

    out = {
        "model_hf": "llm_assets/models/stories260K_hf",
        "model": "llm_assets/models/stories260K/stories260K.bin",
        "tokenizer": "llm_assets/models/stories260K/tok512.bin",
        "text_source": "llm_assets/text/tinystories_train_first2MiB.txt",
        "text": text.decode("utf-8"),
        "text_bytes": len(text),
        "ctx": CTX, "windows": WINDOWS, "bos": BOS,
        "ids": ids,
        "n_layers": L, "ffn_dim": m.F, "n_heads": m.H, "head_dim": m.hd, "dim": m.D,
        "width": width,
        "bi": bi.tolist(),
        "ppl_full": float(np.exp(base_nll / ntok)),
        "ppl_drop": ppl_drop.tolist(),
        "mi": [mi0.tolist(), mi1],
        "mi_removed": [r0, r1],
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "stories260K.json")
    json.dump(out, open(path, "w"), ensure_ascii=False, separators=(",", ":"))
    print("wrote %s: %d text bytes, %d ids; bi %s; ppl_full %.5f; ppl_drop %s; mi0 %s; removed %s" %
          (path, len(text), len(ids), np.round(bi, 5), out["ppl_full"], np.round(ppl_drop, 4), np.round(mi0, 6),
           out["mi_removed"]))


if __name__ == "__main__":
    main()
