#!/usr/bin/env python3
"""summarize_bubble.py DIR - the tables of bench/pipeline_bubble.sh from its raw runs.

Reads DIR/env.json and minifuse's per-step logs DIR/CONFIG.runR.jsonl (CONFIG:
P<stages>_m<micro-batches>, P2_m8_gpipe, dp2). A run's step time is the mean of
its timed steps (the first, warm-up, step left out); its tokens/s the timed
steps' tokens over the sum of their times. Per P, the model
t(m) = a (m + P - 1) / m (bubble fraction (P - 1) / (m + P - 1)) is fitted by
least squares over the medians; the table gives measured (median, min-max over
the runs, bench/benchstats.py) and modelled step times, and the bubble the
model implies. Then the 2-stage pipeline at m >= 8 against --dp 2 (ratio with
its spread; "parity" when it contains 1). Writes DIR/summary.json.
"""
import json, os, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import fmt, fmt_ratio, header, load_runs, median_spread, runs_note  # noqa: E402

out = sys.argv[1]
env = json.load(open(os.path.join(out, "env.json")))
extra = env.get("run", {})
B, CTX = int(extra.get("batch", 16)), int(extra.get("ctx", 256))
runs = load_runs(out)


def timed(log):
    steps = [s for s in log if "step" in s][1:]  # the first step warms up
    if not steps:
        return None, None
    times = [B * CTX / s["tokens_per_s"] for s in steps]
    return sum(times) / len(times), B * CTX * len(times) / sum(times)


def series(cfg):
    t, tps = [], []
    for log in runs.get(cfg, []):
        a, b = timed(log)
        if a is not None:
            t.append(a)
            tps.append(b)
    return t, tps


n_runs = min((len(v) for v in runs.values()), default=0)
lines = ["# Pipeline bubble: step time against micro-batches (1F1B)", ""] + header(env) + [
    "", f"Step: {B} windows x {CTX} tokens; {n_runs} run(s) per configuration."
    + runs_note([{"tokens_per_s": [0] * n_runs}]), ""]
summary = {"batch": B, "ctx": CTX, "pipelines": {}, "dp2": None}
cfgs = sorted({c for c in runs if re.fullmatch(r"P\d+_m\d+", c)}, key=lambda c: tuple(map(int, re.findall(r"\d+", c))))
for P in sorted({int(re.match(r"P(\d+)", c).group(1)) for c in cfgs}):
    ms = sorted(int(re.search(r"_m(\d+)", c).group(1)) for c in cfgs if c.startswith(f"P{P}_"))
    med = {m: median_spread(series(f"P{P}_m{m}")[0])[0] for m in ms}
    x = {m: (m + P - 1) / m for m in ms}
    a = sum(med[m] * x[m] for m in ms) / sum(x[m] ** 2 for m in ms)
    note = "" if P <= (os.cpu_count() or 2) else " (oversubscribed: shape only)"
    lines += [f"## P = {P} stages{note}", "",
              "| m | step time s, median (min-max) | model a(m+P-1)/m s | measured / model | model bubble (P-1)/(m+P-1) | tokens/s |",
              "|---|---|---|---|---|---|"]
    rows = []
    for m in ms:
        t, tps = series(f"P{P}_m{m}")
        model = a * x[m]
        bub = (P - 1) / (m + P - 1)
        lines.append(f"| {m} | {fmt(t, 2)} | {model:.2f} | {med[m] / model:.3f} | {bub:.3f} | {fmt(tps, 1)} |")
        rows.append({"m": m, "step_s": t, "tokens_per_s": tps, "model_s": model, "model_bubble": bub})
    lines += ["", f"Fitted a = {a:.3f} s (the step time with no bubble).", ""]
    summary["pipelines"][P] = {"a_s": a, "rows": rows}

dp_t, dp_tps = series("dp2")
g_t, g_tps = series("P2_m8_gpipe")
if dp_tps:
    summary["dp2"] = {"step_s": dp_t, "tokens_per_s": dp_tps}
    lines += ["## 2-stage pipeline against --dp 2 (the same batch)", "",
              "| layout | tokens/s, median (min-max) | / dp 2 |", "|---|---|---|",
              f"| --dp 2 | {fmt(dp_tps, 1)} | 1 |"]
    for m in (8, 16):
        _, tps = series(f"P2_m{m}")
        if tps:
            lines.append(f"| 2 stages, 1F1B, m = {m} | {fmt(tps, 1)} | {fmt_ratio(tps, dp_tps)} |")
    if g_tps:
        lines.append(f"| 2 stages, GPipe, m = 8 | {fmt(g_tps, 1)} | {fmt_ratio(g_tps, dp_tps)} |")
        summary["P2_m8_gpipe"] = {"step_s": g_t, "tokens_per_s": g_tps}
    lines.append("")

# Where a step's time goes, per rank (logs with "wait_s"/"sync_s": distill with more than one rank)
def idle(cfg):
    """per rank: median over the runs' timed steps of (wait_s / step time, sync_s / step time)"""
    w, y = {}, {}
    for log in runs.get(cfg, []):
        for st in [s for s in log if "step" in s][1:]:
            if "wait_s" not in st:
                return None
            t = B * CTX / st["tokens_per_s"]
            for r, (a, b) in enumerate(zip(st["wait_s"], st["sync_s"])):
                w.setdefault(r, []).append(a / t)
                y.setdefault(r, []).append(b / t)
    return {r: (median_spread(w[r])[0], median_spread(y[r])[0]) for r in w} if w else None


parts = [(c, idle(c)) for c in ("P2_m8", "P2_m16", "P2_m8_gpipe", "dp2") if c in runs]
parts = [(c, d) for c, d in parts if d]
if parts:
    lines += ["## Where the step goes, per rank (median share of the step time)", "",
              "wait: receives and send completions of the pipeline (the bubble); sync: the gradient sums, "
              "the norm and the loss after the backward (waiting for the other ranks, and the sums).", "",
              "| layout | rank | wait | sync | busy (the rest) |", "|---|---|---|---|---|"]
    for c, d in parts:
        for r, (a, b) in sorted(d.items()):
            lines.append(f"| {c} | {r} | {a:.3f} | {b:.3f} | {1 - a - b:.3f} |")
        summary.setdefault("idle_share", {})[c] = {str(r): {"wait": a, "sync": b} for r, (a, b) in d.items()}
    lines.append("")
print("\n".join(lines))
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
