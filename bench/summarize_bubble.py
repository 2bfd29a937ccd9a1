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
print("\n".join(lines))
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
