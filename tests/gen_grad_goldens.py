#!/usr/bin/env python3
"""Whole-model gradient goldens for the training engine, from PyTorch autograd.

Oracle: Hugging Face `transformers` (LlamaForCausalLM / Qwen2ForCausalLM /
the SmolLM2 GGUF through transformers' own GGUF loader), float32, eager
attention, CPU, `loss.backward()`. Nothing here uses minifuse code.

Run by hand (not by the test suite), from the repo root:
    /root/oracle-venv/bin/python tests/gen_grad_goldens.py

Losses (the C test computes exactly these):
  ce  next-token cross-entropy, mean over the T-1 predicted positions:
      mean_{t<T-1} -log softmax(z[t])[ids[t+1]]
  kl  forward KL(teacher || student) with temperature tau = 2, mean over all
      T positions: tau^2 * sum_v p_t (log p_t - log p_s) / T, p = softmax(z/tau);
      teacher = the full model (no gradient), student = the same model with
      layer 2 deleted (its parameters keep their original layer names).

Writes tests/golden/grad/:
  <case>.f32   float32 little-endian gradients, concatenated in the order of
               the json's "tensors" list
  grad.json    per case: model, ids, loss, tensors [{name, shape, rows, offset}]
               (rows: null for the whole tensor, else the row indices stored,
               shape is then [len(rows), cols]); oracle versions
Cases:
  stories260K_ce, stories260K_kl  stories260K_hf, T = 32 (the first 32 ids of
      reference/stories260K_logits_128.json, which start with BOS = 1)
  qwen2_bias_ce, llama_untied_ce  the synthetic HF models of
      tests/golden/synthetic (q/k/v biases; untied head + llama3 RoPE), T = 12
  smollm2_ce  SmolLM2-135M-Instruct Q4_1 GGUF (dequantized by transformers),
      T = 64 (tests/golden/smollm2/ids.json), row slices of a few tensors
"""
import importlib.metadata
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

TAU = 2.0
T_STORIES = 32


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared():
    return os.environ.get("MINIFUSE_SHARED", os.path.join(repo_root(), "..", "shared"))


def cache():
    return os.environ.get("MINIFUSE_CACHE", os.path.expanduser("~/.cache/minifuse"))


OUT = os.path.join(repo_root(), "tests/golden/grad")


def load(path, **kw):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", **kw)
    m.eval()
    return m


def logits_of(model, ids):
    return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]


def ce_loss(model, ids):
    z = logits_of(model, ids)
    return F.cross_entropy(z[:-1], torch.tensor(ids[1:]), reduction="mean")


def kl_loss(zs, zt, tau):
    ls, lt = F.log_softmax(zs / tau, -1), F.log_softmax(zt / tau, -1)
    return tau * tau * (lt.exp() * (lt - ls)).sum() / zs.shape[0]


def grads_by_name(model, rename=None):
    """{HF name: grad numpy} (tied lm_head is the embedding)."""
    out = {}
    for n, p in model.named_parameters():
        if p.grad is None:
            continue
        out[rename(n) if rename else n] = p.grad.detach().numpy().astype(np.float32)
    return out


def write_case(meta, case, model_rel, ids, loss, grads, select):
    """select: list of (name, rows or None)."""
    blobs, tensors, off = [], [], 0
    for name, rows in select:
        g = grads[name]
        if rows is not None:
            g = g[rows]
        g = np.ascontiguousarray(g, dtype="<f4")
        tensors.append({"name": name, "shape": list(g.shape), "rows": rows, "offset": off})
        blobs.append(g.tobytes())
        off += g.size
    with open(os.path.join(OUT, case + ".f32"), "wb") as f:
        f.write(b"".join(blobs))
    meta["cases"][case] = {"model": model_rel, "ids": ids, "loss": float(loss), "tensors": tensors}
    print(f"{case}: loss {float(loss):.8f}, {off} floats")


def stories(meta):
    path = os.path.join(shared(), "llm_assets/models/stories260K_hf")
    ref = json.load(open(os.path.join(shared(), "llm_assets/reference/stories260K_logits_128.json")))
    ids = [int(i) for i in ref["input_ids"][:T_STORIES]]
    assert ids[0] == 1
    model = load(path)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    L = model.config.num_hidden_layers

    def select(layers):
        s = [("model.embed_tokens.weight", None), ("model.norm.weight", None)]
        for l in layers:
            s += [(f"model.layers.{l}.input_layernorm.weight", None),
                  (f"model.layers.{l}.post_attention_layernorm.weight", None)]
        for suf in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            s.append((f"model.layers.0.self_attn.{suf}.weight", None))
        s += [("model.layers.0.mlp.down_proj.weight", None), ("model.layers.4.mlp.down_proj.weight", None)]
        return s

    # (a) cross-entropy
    model.zero_grad()
    loss = ce_loss(model, ids)
    loss.backward()
    write_case(meta, "stories260K_ce", "llm_assets/models/stories260K_hf", ids, loss.item(), grads_by_name(model),
               select(range(L)))

    # (b) KL(teacher || student), student = layer 2 deleted
    with torch.no_grad():
        zt = logits_of(model, ids)
    student = load(path)
    del student.model.layers[2]
    student.config.num_hidden_layers = L - 1
    keep = [l for l in range(L) if l != 2]

    def rename(n):
        if n.startswith("model.layers."):
            parts = n.split(".")
            parts[2] = str(keep[int(parts[2])])
            return ".".join(parts)
        return n

    student.zero_grad()
    loss = kl_loss(logits_of(student, ids), zt, TAU)
    loss.backward()
    write_case(meta, "stories260K_kl", "llm_assets/models/stories260K_hf", ids, loss.item(),
               grads_by_name(student, rename), select(keep))
    meta["tau"] = TAU
    meta["kl_skip_layer"] = 2


def synthetic(meta, case, sub, drop=()):
    path = os.path.join(repo_root(), "tests/golden/synthetic", sub)
    ids = json.load(open(os.path.join(path, "ids.json")))["ids"]
    model = load(path)
    model.zero_grad()
    loss = ce_loss(model, ids)
    loss.backward()
    grads = grads_by_name(model)
    sel = [(n, None) for n, _ in model.named_parameters() if n in grads and n not in drop]
    write_case(meta, case, "tests/golden/synthetic/" + sub, ids, loss.item(), grads, sel)


def smollm2(meta):
    gguf = os.path.join(cache(), "SmolLM2-135M-Instruct.Q4_1.gguf")
    d, f = os.path.split(gguf)
    model = load(d, gguf_file=f)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = json.load(open(os.path.join(repo_root(), "tests/golden/smollm2/ids.json")))["ids"]
    model.zero_grad()
    loss = ce_loss(model, ids)
    loss.backward()
    grads = grads_by_name(model)
    absent = [i for i in range(100, 49152) if i not in ids][:2]
    emb_rows = sorted(set(ids[1:5])) + absent
    r8 = list(range(8))
    sel = [("model.embed_tokens.weight", emb_rows), ("model.norm.weight", None),
           ("model.layers.0.self_attn.q_proj.weight", r8), ("model.layers.0.self_attn.k_proj.weight", r8),
           ("model.layers.0.self_attn.v_proj.weight", r8), ("model.layers.15.mlp.gate_proj.weight", [0, 1, 2, 3]),
           ("model.layers.29.mlp.down_proj.weight", r8)]
    for l in (0, 15, 29):
        sel.append((f"model.layers.{l}.input_layernorm.weight", None))
    sel.append(("model.layers.29.post_attention_layernorm.weight", None))
    write_case(meta, "smollm2_ce", "SmolLM2-135M-Instruct.Q4_1.gguf", ids, loss.item(), grads, sel)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    meta = {"oracle": {k: importlib.metadata.version(k) for k in ("torch", "transformers", "gguf", "numpy")},
            "cases": {}}
    stories(meta)
    synthetic(meta, "qwen2_bias_ce", "qwen2_bias")
    synthetic(meta, "llama_untied_ce", "llama_untied_llama3rope",
              drop=("model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"))
    smollm2(meta)
    with open(os.path.join(OUT, "grad.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
