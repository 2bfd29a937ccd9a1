#!/usr/bin/env python3
"""torch_distill.py - the PyTorch side of the training benchmark: the same
distillation step as `minifuse distill` on the same teacher, student and batch.

One step = for each of --batch windows of --ctx tokens (BOS + ctx-1 tokens):
teacher forward (no grad), student forward, forward KL(teacher || student) at
temperature 1, mean over tokens, backward; then clip the global grad norm to 1
and one AdamW step (betas 0.9/0.95, wd 0.1). float32 on the CPU, --threads
intra-op threads. Timed over --steps steps after one warm-up step; prints one
JSON line {"impl": "pytorch", "tokens_per_s": ..., ...}.

  python bench/torch_distill.py --teacher SmolLM2.gguf --student pruned/ --text file.txt
"""
import argparse, json, os, time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(path):
    if os.path.isdir(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    d, f = os.path.split(os.path.abspath(path))
    return AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d, f = os.path.split(os.path.abspath(a.teacher))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    teacher, student = load(a.teacher).eval(), load(a.student).train()
    ids = tok(open(a.text, encoding="utf-8").read()[:400000], add_special_tokens=False)["input_ids"]
    bos = teacher.config.bos_token_id
    wins = [[bos] + ids[i * a.ctx:(i + 1) * a.ctx - 1] for i in range(a.batch * (a.steps + 1))]
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step(k):
        opt.zero_grad(set_to_none=False)
        for j in range(a.batch):
            x = torch.tensor([wins[k * a.batch + j]])
            with torch.no_grad():
                zt = teacher(x).logits[0]
            zs = student(x).logits[0]
            loss = F.kl_div(F.log_softmax(zs, -1), F.log_softmax(zt, -1), log_target=True, reduction="batchmean") / a.batch
            loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()

    step(0)
    t0 = time.perf_counter()
    for k in range(1, a.steps + 1):
        step(k)
    dt = time.perf_counter() - t0
    n_s = sum(p.numel() for p in student.parameters())
    n_t = sum(p.numel() for p in teacher.parameters())
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "threads": a.threads, "batch": a.batch, "ctx": a.ctx,
                      "steps": a.steps, "seconds": dt, "tokens_per_s": a.steps * a.batch * a.ctx / dt,
                      "student_params": n_s, "teacher_params": n_t}))


if __name__ == "__main__":
    main()
