#!/usr/bin/env python3
"""check_prune_slice.py - an independent (numpy + safetensors + h5py) check of
`minifuse prune` (run by tests/test_prune.c; docs/oracles.md).

  python3 tests/check_prune_slice.py ORIG_HF_DIR RANKINGS.h5 PRUNED_DIR [--ids 1,2,3 --logits F32]

1. Which units were kept, from the scores alone (docs/score_and_prune.md,
   docs/rankings_schema.md): the dropped blocks by the depth metric named in the
   pruned config; per kept layer the top `intermediate_size` MLP neurons; query
   heads: the top queries within every KV group, or (when the pruned model has
   fewer KV heads) the KV groups with the largest summed head scores; hidden
   channels: the top channels of sum over layers of emb_attn_norm + emb_mlp_norm.
   Top-k: highest score first, ties to the lower index, kept in ascending order.
2. Slices the original safetensors by those indices with numpy and requires
   every tensor of the pruned model to be bit-identical, with the same names.
3. With --ids/--logits: a float64 numpy Llama forward of the sliced weights on
   the ids (Hugging Face conventions: rotate-half RoPE, GQA) against the logits
   `minifuse logits` wrote for the pruned model.

Prints "OK ..." and exits 0, or prints what differs and exits 1.
"""
import glob
import json
import os
import sys

import h5py
import numpy as np
from safetensors.numpy import load_file


def load_dir(d):
    t = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        t.update(load_file(f))
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    return t, cfg


def top_k(score, k):
    score = np.asarray(score, dtype=np.float64)
    order = np.lexsort((np.arange(len(score)), -score))  # by score descending, ties: lower index first
    return np.sort(order[:k])


def plan(orig_cfg, new_cfg, rk):
    L = orig_cfg["num_hidden_layers"]
    H, KV = orig_cfg["num_attention_heads"], orig_cfg["num_key_value_heads"]
    G = H // KV
    mf = new_cfg.get("minifuse", {})
    dropped = list(mf.get("dropped_layers", []))
    metric = mf.get("depth_metric")
    if dropped and metric in ("bi", "ppl") and not mf.get("drop_block"):
        want = list(np.argsort(rk[f"depth/{metric}"][()], kind="stable")[:len(dropped)])
        if sorted(want) != sorted(dropped):
            raise SystemExit(f"FAIL dropped layers {dropped}, the {metric} scores drop {want}")
    keep_layers = [l for l in range(L) if l not in dropped]
    if len(keep_layers) != new_cfg["num_hidden_layers"]:
        raise SystemExit(f"FAIL num_hidden_layers {new_cfg['num_hidden_layers']}, {len(keep_layers)} layers kept")
    nd = "%%0%dd" % max(2, len(str(L - 1)))
    lay = lambda l, m: rk[f"layers/{nd % l}/{m}"][()]
    D, Dn = orig_cfg["hidden_size"], new_cfg["hidden_size"]
    if Dn < D:
        emb = np.zeros(D)
        for l in range(L):
            emb = emb + (lay(l, "emb_attn_norm") + lay(l, "emb_mlp_norm"))
        if "width/emb" in rk and not np.allclose(rk["width/emb"][()], emb, rtol=1e-12, atol=0):
            raise SystemExit("FAIL /width/emb is not the sum over layers of emb_attn_norm + emb_mlp_norm")
        hid = top_k(emb, Dn)
    else:
        hid = np.arange(D)
    F, Fn = orig_cfg["intermediate_size"], new_cfg["intermediate_size"]
    Hn, KVn = new_cfg["num_attention_heads"], new_cfg["num_key_value_heads"]
    layers = []
    for l in keep_layers:
        ffn = top_k(lay(l, "mlp_neurons"), Fn) if Fn < F else np.arange(F)
        if Hn == H:
            heads, kv = np.arange(H), np.arange(KV)
        else:
            hs = lay(l, "attn_heads")
            if KVn < KV:  # whole KV groups by their summed head scores
                kv = top_k(hs.reshape(KV, G).sum(axis=1), KVn)
                heads = np.concatenate([g * G + np.arange(G) for g in kv])
            else:  # the same number of queries in every group, each group's best
                gn = Hn // KV
                kv = np.arange(KV)
                heads = np.concatenate([g * G + top_k(hs[g * G:(g + 1) * G], gn) for g in range(KV)])
        layers.append((l, ffn, heads, kv))
    return hid, layers


def rows_of(heads, hd):
    return (np.asarray(heads)[:, None] * hd + np.arange(hd)[None, :]).reshape(-1)


def sliced(orig, orig_cfg, new_cfg, hid, layers):
    hd = orig_cfg.get("head_dim") or orig_cfg["hidden_size"] // orig_cfg["num_attention_heads"]
    out = {"model.embed_tokens.weight": orig["model.embed_tokens.weight"][:, hid],
           "model.norm.weight": orig["model.norm.weight"][hid]}
    if not new_cfg.get("tie_word_embeddings", False):
        head = orig.get("lm_head.weight", orig["model.embed_tokens.weight"])
        out["lm_head.weight"] = head[:, hid]
    for k, (l, ffn, heads, kv) in enumerate(layers):
        o, n = f"model.layers.{l}.", f"model.layers.{k}."
        qr, kr = rows_of(heads, hd), rows_of(kv, hd)
        out[n + "input_layernorm.weight"] = orig[o + "input_layernorm.weight"][hid]
        out[n + "post_attention_layernorm.weight"] = orig[o + "post_attention_layernorm.weight"][hid]
        out[n + "self_attn.q_proj.weight"] = orig[o + "self_attn.q_proj.weight"][qr][:, hid]
        out[n + "self_attn.k_proj.weight"] = orig[o + "self_attn.k_proj.weight"][kr][:, hid]
        out[n + "self_attn.v_proj.weight"] = orig[o + "self_attn.v_proj.weight"][kr][:, hid]
        out[n + "self_attn.o_proj.weight"] = orig[o + "self_attn.o_proj.weight"][hid][:, qr]
        for b, r in (("q", qr), ("k", kr), ("v", kr)):
            if o + f"self_attn.{b}_proj.bias" in orig:
                out[n + f"self_attn.{b}_proj.bias"] = orig[o + f"self_attn.{b}_proj.bias"][r]
        out[n + "mlp.gate_proj.weight"] = orig[o + "mlp.gate_proj.weight"][ffn][:, hid]
        out[n + "mlp.up_proj.weight"] = orig[o + "mlp.up_proj.weight"][ffn][:, hid]
        out[n + "mlp.down_proj.weight"] = orig[o + "mlp.down_proj.weight"][hid][:, ffn]
    return out


def forward(t, cfg, ids):
    """float64 logits [len(ids)][vocab] of a Llama in Hugging Face layout."""
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps, theta = cfg.get("rms_norm_eps", 1e-5), cfg.get("rope_theta", 10000.0)
    w = {k: v.astype(np.float64) for k, v in t.items()}
    T = len(ids)
    x = w["model.embed_tokens.weight"][ids]
    norm = lambda x, g: x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    rot = lambda q: q * cos[:, None, :] + np.concatenate([-q[..., hd // 2:], q[..., :hd // 2]], -1) * sin[:, None, :]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = norm(x, w[p + "input_layernorm.weight"])
        lin = lambda name, h: h @ w[p + name + ".weight"].T + w.get(p + name + ".bias", 0)
        q = rot(lin("self_attn.q_proj", h).reshape(T, H, hd))
        k = rot(lin("self_attn.k_proj", h).reshape(T, KV, hd))
        v = lin("self_attn.v_proj", h).reshape(T, KV, hd)
        att = np.empty((T, H, hd))
        for i in range(H):
            g = i // (H // KV)
            s = q[:, i] @ k[:, g].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, i] = (s / s.sum(-1, keepdims=True)) @ v[:, g]
        x = x + att.reshape(T, H * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        gt, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gt / (1 + np.exp(-gt)) * up) @ w[p + "mlp.down_proj.weight"].T
    x = norm(x, w["model.norm.weight"])
    return x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T


def main(argv):
    if len(argv) < 4:
        raise SystemExit(__doc__)
    orig, orig_cfg = load_dir(argv[1])
    rk = h5py.File(argv[2], "r")
    got, new_cfg = load_dir(argv[3])
    hid, layers = plan(orig_cfg, new_cfg, rk)
    want = sliced(orig, orig_cfg, new_cfg, hid, layers)
    bad = []
    if set(want) != set(got):
        bad.append(f"tensor names differ: missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}")
    for name in sorted(set(want) & set(got)):
        a, b = want[name], got[name]
        if a.shape != b.shape:
            bad.append(f"{name}: shape {b.shape}, the independent slice has {a.shape}")
        elif not np.array_equal(a.view(np.uint32), b.astype(np.float32).view(np.uint32)):
            bad.append(f"{name}: {int((a != b).sum())} of {a.size} values differ from the independent slice")
    msg = f"{len(want)} tensors bit-identical to numpy slices (hidden {len(hid)}, layers {[l for l, *_ in layers]})"
    if "--logits" in argv:
        ids = [int(s) for s in argv[argv.index("--ids") + 1].split(",")]
        lg = np.fromfile(argv[argv.index("--logits") + 1], dtype="<f4").reshape(len(ids), -1)
        ref = forward(want, new_cfg, np.array(ids))
        d = float(np.abs(lg - ref).max())
        tol = float(argv[argv.index("--tol") + 1]) if "--tol" in argv else 1e-4
        if not d < tol:
            bad.append(f"logits: max |minifuse - numpy float64| = {d:.3g} (tolerance {tol:g})")
        msg += f"; logits of {len(ids)} ids within {d:.2g} of a float64 numpy forward"
    if bad:
        print("FAIL\n" + "\n".join(bad))
        return 1
    print("OK " + msg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
