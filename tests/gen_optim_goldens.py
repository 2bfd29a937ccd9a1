#!/usr/bin/env python3
"""Golden data for tests/test_optim.c (run by hand with a Python that has torch):

    /root/oracle-venv/bin/python tests/gen_optim_goldens.py

tests/golden/optim/adamw.json: torch.optim.AdamW (foreach=False, the CPU
  single-tensor path) for 20 steps on a few small float32 tensors, with the
  warm-up + cosine schedule of src/train/optim.h and
  torch.nn.utils.clip_grad_norm_. Stores the initial tensors, every step's
  gradients, learning rate, torch's total gradient norm and the tensors after
  the step, and the final exp_avg / exp_avg_sq.
tests/golden/optim/rng.json: splitmix64 (reference formula; Vigna's published
  vector for seed 1234567 is checked here), numpy.random.PCG64 raw outputs and
  Generator.random() / Generator.integers() (64-bit Lemire for ranges above
  2^32) from the state our seeding gives, and Fisher-Yates shuffles drawn with
  Lemire's method on numpy's raw stream.
"""
import json
import math
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "optim")
M64 = (1 << 64) - 1


def lr_at(s, step):
    """The schedule of src/train/optim.h (step = updates already done)."""
    if step < s["warmup"]:
        return s["max_lr"] * (step + 1) / s["warmup"]
    if step >= s["total"]:
        return s["min_lr"]
    r = (step - s["warmup"]) / (s["total"] - s["warmup"])
    return s["min_lr"] + 0.5 * (s["max_lr"] - s["min_lr"]) * (1 + math.cos(math.pi * r))


def floats(t):
    return [float(x) for x in t.detach().reshape(-1).numpy().astype(np.float32)]


def scenario(name, seed, shapes, opts, sched, max_norm, steps, grad_scales):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(*s, generator=g, dtype=torch.float32).requires_grad_(True) for _, s in shapes]
    init = [floats(p) for p in params]
    decay, no_decay = [], []
    for p in params:
        (decay if p.dim() >= 2 or opts["decay_1d"] else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": opts["weight_decay"]}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=sched["max_lr"], betas=(opts["beta1"], opts["beta2"]), eps=opts["eps"],
                            foreach=False, fused=False)
    rec = []
    for t in range(steps):
        lr = lr_at(sched, t)
        for grp in opt.param_groups:
            grp["lr"] = lr
        grads = [torch.randn(*s, generator=g, dtype=torch.float32) * grad_scales[t % len(grad_scales)]
                 for _, s in shapes]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        norm = None
        if max_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False))
        opt.step()
        rec.append({"lr": lr, "norm": norm, "grads": [floats(x) for x in grads],
                     "params": [floats(p) for p in params]})
    state = [opt.state[p] for p in params]
    return {
        "name": name,
        "tensors": [{"name": n, "shape": list(s)} for n, s in shapes],
        "opts": opts, "sched": sched, "max_norm": max_norm,
        "init": init, "steps": rec,
        "exp_avg": [floats(s["exp_avg"]) for s in state],
        "exp_avg_sq": [floats(s["exp_avg_sq"]) for s in state],
        "torch_step": [int(s["step"]) for s in state],
    }


def adamw_goldens():
    shapes = [("w1", (6, 5)), ("b1", (5,)), ("w2", (3, 4)), ("norm", (4,))]
    a = scenario("default_clip", 1234, shapes,
                 {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "decay_1d": 0},
                 {"max_lr": 3e-2, "min_lr": 3e-3, "warmup": 5, "total": 16}, 1.0, 20, [0.05, 0.5, 0.2, 2.0])
    b = scenario("decay_1d_noclip", 99, shapes,
                 {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.05, "decay_1d": 1},
                 {"max_lr": 1e-2, "min_lr": 0.0, "warmup": 0, "total": 20}, 0.0, 20, [1.0])
    scheds = [{"max_lr": 6e-4, "min_lr": 6e-5, "warmup": 10, "total": 100},
              {"max_lr": 1e-3, "min_lr": 0.0, "warmup": 0, "total": 7},
              {"max_lr": 2.5e-3, "min_lr": 1e-4, "warmup": 3, "total": 3},
              {"max_lr": 1.0, "min_lr": 0.5, "warmup": 8, "total": 5}]
    lr_table = []
    for s in scheds:
        lr_table.append({"sched": s, "lr": [lr_at(s, t) for t in range(0, 110)]})
    return {"scenarios": [a, b], "schedules": lr_table}


# ---------------------------------------------------------------- RNG

def splitmix64(x):
    """-> (new x, output)"""
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def seed_state(seed):
    x, out = seed, []
    for _ in range(4):
        x, o = splitmix64(x)
        out.append(o)
    out[3] |= 1
    return out  # state hi, state lo, inc hi, inc lo


def pcg(words):
    bg = np.random.PCG64()
    bg.state = {"bit_generator": "PCG64",
                "state": {"state": (words[0] << 64) | words[1], "inc": (words[2] << 64) | words[3]},
                "has_uint32": 0, "uinteger": 0}
    return bg


def lemire_below(raw, n):
    m = raw() * n
    lo = m & M64
    if lo < n:
        t = ((1 << 64) - n) % n
        while lo < t:
            m = raw() * n
            lo = m & M64
    return m >> 64


def rng_goldens():
    x, vec = 1234567, []
    for _ in range(5):
        x, o = splitmix64(x)
        vec.append(o)
    assert vec == [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
                   16408922859458223821], vec
    seeds = []
    for seed in [0, 1, 42, 1234567, M64]:
        w = seed_state(seed)
        raw = [int(v) for v in pcg(w).random_raw(10)]
        uni = [float(v) for v in np.random.Generator(pcg(w)).random(6)]
        big = [int(v) for v in np.random.Generator(pcg(w)).integers(0, 3 * 10**12 + 7, size=6, dtype=np.uint64)]
        bg = pcg(w)
        draw = lambda: int(bg.random_raw())
        small = [lemire_below(draw, n) for n in [1, 2, 3, 10, 1000, 1 << 31, (1 << 63) + 5]]
        bg = pcg(w)
        a = list(range(13))
        for i in range(len(a) - 1, 0, -1):
            j = lemire_below(draw, i + 1)
            a[i], a[j] = a[j], a[i]
        after = [str(v) for v in pcg_after(w, 10)]
        seeds.append({"seed": str(seed), "state": [str(v) for v in w], "raw": [str(v) for v in raw],
                      "uniform": uni, "integers_3e12": [str(v) for v in big], "below": [str(v) for v in small],
                      "below_n": [str(n) for n in [1, 2, 3, 10, 1000, 1 << 31, (1 << 63) + 5]],
                      "shuffle13": a, "state_after_10": after})
    return {"splitmix64_1234567": [str(v) for v in vec], "seeds": seeds}


def pcg_after(w, n):
    bg = pcg(w)
    bg.random_raw(n)
    s = bg.state["state"]
    return [s["state"] >> 64, s["state"] & M64, s["inc"] >> 64, s["inc"] & M64]


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "adamw.json"), "w") as f:
        json.dump(adamw_goldens(), f)
    with open(os.path.join(OUT, "rng.json"), "w") as f:
        json.dump(rng_goldens(), f, indent=1)
    print("wrote", OUT, "torch", torch.__version__, "numpy", np.__version__)


if __name__ == "__main__":
    main()
