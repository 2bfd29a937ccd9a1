"""benchstats.py - how every benchmark table states a figure and a comparison.

A figure is the median of its runs with their spread (min-max). A ratio A/B is
median(A) / median(B); its spread runs from min(A)/max(B) to max(A)/min(B).
When that spread contains 1 (the two sets of runs overlap) the ratio is
called "parity": the runs cannot tell the two apart.
"""
import glob
import json
import os
import re
import statistics


def median_spread(values):
    v = sorted(values)
    return statistics.median(v), v[0], v[-1]


def fmt(values, nd=1):
    """'median (min-max)' of a list of figures."""
    m, lo, hi = median_spread(values)
    return f"{m:.{nd}f} ({lo:.{nd}f}-{hi:.{nd}f})"


def ratio(a, b, above="faster", below="slower"):
    """(median ratio, low, high, verdict) of runs a over runs b; the verdict is "parity" or,
    when the whole spread is above (below) 1, `above` (`below`)."""
    ma, la, ha = median_spread(a)
    mb, lb, hb = median_spread(b)
    lo, hi = la / hb, ha / lb
    verdict = "parity" if lo <= 1 <= hi else (above if lo > 1 else below)
    return ma / mb, lo, hi, verdict


def fmt_ratio(a, b, above="faster", below="slower"):
    """'ratio (low-high) verdict' of runs a over runs b (tokens/s: faster/slower)."""
    if not a or not b:
        return "-"
    r, lo, hi, verdict = ratio(a, b, above, below)
    if min(len(a), len(b)) < 2:
        return f"{r:.2f} (1 run: no spread)"
    return f"{r:.2f} ({lo:.2f}-{hi:.2f}) {verdict}"


def load_runs(out):
    """{config: [raw record of each run]} from OUT/CONFIG.runR.json (one JSON) and .jsonl (a list of lines)."""
    runs = {}
    paths = glob.glob(os.path.join(out, "*.run*.json")) + glob.glob(os.path.join(out, "*.run*.jsonl"))
    for path in sorted(paths, key=lambda p: int(re.search(r"\.run(\d+)\.", p).group(1))):
        cfg = os.path.basename(path).split(".run")[0]
        with open(path) as f:
            text = f.read()
        if text.strip():
            rec = [json.loads(l) for l in text.splitlines() if l.strip()] if path.endswith("l") else json.loads(text)
            runs.setdefault(cfg, []).append(rec)
    return runs


def header(env):
    """Where and with what the runs were made (from bench/prov.py's env.json)."""
    pt = env.get("pytorch") or {}
    lines = [f"{env['date_utc']}; minifuse {env['minifuse']['commit'][:12]}"
             f"{' with local changes' if env['minifuse']['local_changes'] else ''}; CPU {env['cpu']['model_name']}, "
             f"{env['nproc']} cores; load average at start {env['loadavg_at_start'][0]:.2f}",
             f"OpenBLAS: {env['openblas']['config']}; minifuse: {env['openblas']['minifuse_core_log']}"]
    if pt.get("torch"):
        lines.append(f"PyTorch {pt['torch']}, transformers {pt['transformers']}, CPU capability {pt.get('cpu_capability')}")
    return lines


def add_ratios(rows):
    """Each minifuse row (impl, procs, threads, cores, tokens_per_s: [runs]) gets its ratio to the
    PyTorch row of the same processes x threads, and to the fastest PyTorch row on as many cores."""
    med = lambda r: median_spread(r["tokens_per_s"])[0]  # noqa: E731
    torch = [r for r in rows if r["impl"] == "pytorch"]
    for r in rows:
        r["x_pytorch_same_layout"] = r["x_fastest_pytorch_same_cores"] = "-"
        if r["impl"] == "pytorch":
            continue
        same = [t for t in torch if (t["procs"], t["threads"]) == (r["procs"], r["threads"])]
        if same:
            r["x_pytorch_same_layout"] = fmt_ratio(r["tokens_per_s"], same[0]["tokens_per_s"])
        cores = [t for t in torch if t["cores"] == r["cores"]]
        if cores:
            best = max(cores, key=med)
            r["x_fastest_pytorch_same_cores"] = f"{fmt_ratio(r['tokens_per_s'], best['tokens_per_s'])} vs {best['config']}"


def runs_note(rows, least=5):
    """A warning line when any row has fewer than `least` runs (docs/performance.md quotes none such)."""
    n = min((len(r["tokens_per_s"]) for r in rows), default=0)
    return f"\nnote: {n} run(s) per row, fewer than {least}: a smoke test, not a figure to quote" if n < least else ""
