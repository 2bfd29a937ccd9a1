#!/usr/bin/env python3
"""check_hf_load.py - load a model directory written by minifuse (mf_hf_write_dir)
with Hugging Face transformers and write its logits. Run by tests/test_fuse.c
(fuse/fused_model_loads_in_transformers, when torch and transformers are installed)
and by tests/gen_pruned_smollm2_golden.sh.

  /root/oracle-venv/bin/python tests/check_hf_load.py DIR ID [ID ...] [--out logits.f32] [--compare ours.f32] [--tol 1e-4]

Loads DIR with AutoModelForCausalLM in float32 (whatever dtype the safetensors
hold), refuses any missing or unexpected weight, runs the ids as one sequence
and writes the logits as little-endian float32 [n_ids][vocab] to --out. With
--compare (a file of the same layout, e.g. from `minifuse logits --model DIR
--ids ... --out ours.f32`) it prints the max |difference| and exits 1 above --tol.
"""
import argparse
import sys

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("ids", nargs="+", type=int)
    ap.add_argument("--out", default="logits.f32")
    ap.add_argument("--compare")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()

    cfg = AutoConfig.from_pretrained(a.dir)
    model, info = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.float32, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    if bad:
        sys.exit(f"{a.dir}: transformers loading problems: {bad}")
    print(f"{a.dir}: {type(model).__name__}, head_dim {getattr(cfg, 'head_dim', None)}, "
          f"tied {model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()}, "
          f"rope {getattr(cfg, 'rope_parameters', None) or getattr(cfg, 'rope_scaling', None)}")
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([a.ids])).logits[0].float().numpy()
    logits.astype("<f4").tofile(a.out)
    print(f"wrote {a.out}: [{logits.shape[0]}][{logits.shape[1]}] float32")
    if a.compare:
        ours = np.fromfile(a.compare, dtype="<f4")
        if ours.size != logits.size:
            sys.exit(f"{a.compare}: {ours.size} values, expected {logits.size}")
        d = float(np.max(np.abs(ours.reshape(logits.shape) - logits)))
        print(f"max |ours - transformers| = {d:.3g} (tol {a.tol:g})")
        if not d <= a.tol:
            sys.exit(1)


if __name__ == "__main__":
    main()
