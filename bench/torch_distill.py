#!/usr/bin/env python3
"""torch_distill.py - the PyTorch side of the training benchmark: the same
distillation step as `minifuse distill` on the same teacher, student and batch.

One step = for each of --batch windows of --ctx tokens (BOS + ctx-1 tokens):
teacher forward (no grad), student forward, forward KL(teacher || student) at
temperature 1, mean over tokens, backward; then clip the global grad norm to
--clip and one AdamW step with minifuse's settings (src/train/optim.c,
src/train/distill.c): betas 0.9/0.95, eps 1e-8, weight decay --wd on the 2-D
tensors only (none on the 1-D norms and biases), and minifuse's learning-rate
schedule (mf_lr_at: linear warm-up over total/20 steps, then cosine from --lr
to --lr/10 at the last step; total = --steps + 1). float32 on the CPU.

Timed like minifuse's per-step log: each step from zeroing the gradients to
the end of the optimizer step, tokenization and loading outside. --steps
steps are timed after one warm-up step (not counted); tokens/s = the timed
steps' tokens over the sum of their times.

--procs N: N processes of --threads threads (torch.distributed, gloo,
DistributedDataParallel), each taking --batch/N of every step's windows, the
gradients averaged over the processes during the last window's backward: the
counterpart of `minifuse distill --dp N`. A step's time is the slower
process's. Prints one JSON line.

  python bench/torch_distill.py --teacher SmolLM2.gguf --student pruned/ --text file.txt --steps 20 --procs 2
"""
import argparse, contextlib, json, math, os, sys, tempfile, time

SPAN = "per step: zero_grad to the end of the optimizer step; first step not counted; load and tokenization outside"


def lr_at(step, a, total):
    """mf_lr_at of src/train/optim.c with distill's defaults (warm-up total/20, min lr/10)."""
    warmup, lo = total // 20, a.lr / 10
    if step < warmup:
        return a.lr * (step + 1) / warmup
    if step >= total:
        return lo
    return lo + 0.5 * (a.lr - lo) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def run(a, rank=0, init=None):
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[v] = str(a.threads)
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def load(path):
        if os.path.isdir(path):
            return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        d, f = os.path.split(os.path.abspath(path))
        return AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)

    torch.set_num_threads(a.threads)
    if a.procs > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=a.procs)
    d, f = os.path.split(os.path.abspath(a.teacher))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    teacher, student = load(a.teacher).eval(), load(a.student).train()
    ids = tok(open(a.text, encoding="utf-8").read()[:400000], add_special_tokens=False)["input_ids"]
    total = a.steps + 1
    if len(ids) < a.batch * total * a.ctx:
        sys.exit(f"torch_distill: {a.text} has too few tokens for {total} steps")
    bos = teacher.config.bos_token_id
    wins = [[bos] + ids[i * a.ctx:(i + 1) * a.ctx - 1] for i in range(a.batch * total)]
    params = list(student.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": a.wd},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    model = torch.nn.parallel.DistributedDataParallel(student) if a.procs > 1 else student
    per = a.batch // a.procs

    def step(k):
        t = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(k, a, total)
        opt.zero_grad(set_to_none=False)
        for j in range(per):
            x = torch.tensor([wins[k * a.batch + rank * per + j]])
            with torch.no_grad():
                zt = teacher(x).logits[0]
            sync = a.procs == 1 or j == per - 1      # DDP averages the gradients in the last backward
            with contextlib.nullcontext() if sync else model.no_sync():
                zs = model(x).logits[0]
                loss = F.kl_div(F.log_softmax(zs, -1), F.log_softmax(zt, -1), log_target=True,
                                reduction="batchmean") / per
                loss.backward()
        torch.nn.utils.clip_grad_norm_(params, a.clip)
        opt.step()
        return time.perf_counter() - t

    times = [step(k) for k in range(total)]
    if a.procs > 1:
        every = [None] * a.procs
        dist.all_gather_object(every, times)
        times = [max(s) for s in zip(*every)]      # the slower process, step by step
        dist.destroy_process_group()
    timed = sum(times[1:])
    return {"impl": "pytorch", "torch": torch.__version__, "transformers": transformers.__version__,
            "threads": a.threads, "procs": a.procs, "batch": a.batch, "ctx": a.ctx, "steps": a.steps,
            "seconds": timed, "tokens_per_s": a.steps * a.batch * a.ctx / timed, "step_seconds": times,
            "lr": a.lr, "lr_per_step": [lr_at(k, a, total) for k in range(total)], "wd": a.wd, "clip": a.clip, "betas": [0.9, 0.95], "eps": 1e-8,
            "decayed_tensors": len(groups[0]["params"]), "undecayed_tensors": len(groups[1]["params"]),
            "span": SPAN, "student_params": sum(p.numel() for p in params),
            "teacher_params": sum(p.numel() for p in teacher.parameters())}


def child(rank, a, init):
    r = run(a, rank, init)
    if rank == 0:
        print(json.dumps(r), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20, help="timed steps, after one warm-up step")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process")
    ap.add_argument("--procs", type=int, default=1, help="data-parallel processes (gloo DDP)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--wd", type=float, default=0.1, help="AdamW weight decay on 2-D tensors")
    ap.add_argument("--clip", type=float, default=1.0)
    a = ap.parse_args()
    if a.batch % a.procs:
        sys.exit("torch_distill: --batch must be a multiple of --procs")
    if a.procs == 1:
        child(0, a, None)
        return
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(child, args=(a, "file://" + os.path.join(tmp, "store")), nprocs=a.procs)


if __name__ == "__main__":
    main()
