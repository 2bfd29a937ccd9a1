#!/usr/bin/env python3
"""plan_check.py - predicted (minifuse plan) vs measured (bench/plan_check.sh's runs).

    python3 bench/plan_check.py DIR TEACHER STUDENT_CONFIG BATCH CTX [EFFICIENCY]

DIR holds the runs: NAME.rankR.time (/usr/bin/time -v), distill NAME.jsonl logs,
NAME.ckpt_bytes, eval NAME.json, sgemm_t1*.json. Prints a markdown table and
writes DIR/plan_*.json (the planner's answers) and DIR/table.json.

The CPU peak given to the planner is the measured sgemm peak on 1 thread (the
larger of the runs before and after the jobs: other load only lowers it). The efficiency is fitted
to the 1-rank distill step unless EFFICIENCY is given: eff = (the planner's
pipeline time at efficiency 1) / (measured step - the planner's gradient-sum
and optimizer time). The 2-rank layouts and eval are then predictions.
"""
import glob, json, os, re, statistics, subprocess, sys

D, TEACHER, STUDENT, B, CTX = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
EFF = float(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[6] else None
SCHED = os.environ.get("PLAN_SCHEDULE", "gpipe")
PART = os.environ.get("PLAN_PARTITION", "separate")
EVAL_WINDOWS = int(os.environ.get("EVAL_WINDOWS", "16"))
WEIGHTS = os.environ.get("PLAN_WEIGHTS", "f32")  # how distill/eval hold the frozen weights (the synthetic model: bf16)


def file_gb(path):
    """The teacher's size on disk in GB: a file, or a directory's *.safetensors shards."""
    if os.path.isdir(path):
        return sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, "*.safetensors"))) / 1e9
    return os.path.getsize(path) / 1e9


def rss(name):
    """{rank: peak RSS bytes} of a run."""
    out = {}
    for f in sorted(glob.glob(os.path.join(D, name + ".rank*.time"))):
        r = int(re.search(r"rank(\d+)\.time$", f).group(1))
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f).read())
        out[r] = int(m.group(1)) * 1024
    return out


def step_time(name):
    """Median seconds of the timed steps (all but the first) of a distill log."""
    steps = [json.loads(l) for l in open(os.path.join(D, name + ".jsonl")) if l.strip()]
    secs = [B * CTX / s["tokens_per_s"] for s in steps[1:]]
    return statistics.median(secs), min(secs), max(secs)


def sgemm_gflops():
    vals = [json.load(open(f))["aggregate_gflops"] for f in sorted(glob.glob(os.path.join(D, "sgemm_t1*.json")))]
    return max(vals), vals  # the peak: other load only lowers a measurement


def plan(tag, args, gf=None):
    cmd = ["bin/minifuse", "plan", "--backend", "cpu", "--nodes", "1", "--cores", "1", "--sgemm-gflops", "%.3f" % (gf or GF),
           "--seq", str(CTX), "--weights", WEIGHTS, "--teacher-file-gb", "%.6f" % file_gb(TEACHER),
           "--json"] + args
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, MINIFUSE_QUIET="1"))
    if p.returncode != 0:
        sys.exit("plan_check: %s failed: %s" % (" ".join(cmd), p.stderr.strip()))
    open(os.path.join(D, "plan_%s.json" % tag), "w").write(p.stdout)
    j = json.loads(p.stdout)
    return j["layouts"][j["shown"]]


def distill_args(ranks, dp, eff):
    return ["--config", STUDENT, "--teacher", TEACHER, "--gpus-per-node", str(ranks), "--pp", str(ranks // dp), "--dp",
            str(dp), "--micro-batches", str(B // dp), "--schedule", SCHED, "--partition", PART, "--recompute", "off",
            "--efficiency", "%.6f" % eff]


def eval_args(ranks, eff):
    return ["--task", "eval", "--config", TEACHER, "--gpus-per-node", str(ranks), "--pp", str(ranks), "--dp", "1",
            "--micro-batches", str(EVAL_WINDOWS), "--efficiency", "%.6f" % eff]


GF, GF_ALL = sgemm_gflops()
rows = []
if EFF is None:  # calibrate on the 1-rank step
    p1 = plan("calibrate", distill_args(1, 1, 1.0))
    meas, _, _ = step_time("distill_p1")
    EFF = p1["t_pipeline"] / (meas - p1["t_dp"] - p1["t_optim"])
    how = "fitted to the 1-rank distill step"
else:
    how = "given"


def row(run, rank, what, pred, meas, unit, note=""):
    rows.append(dict(run=run, rank=rank, what=what, predicted=pred, measured=meas, unit=unit,
                     ratio=(pred / meas if meas else None), note=note))


for name, ranks, dp in (("distill_p1", 1, 1), ("distill_pp2", 2, 1), ("distill_dp2", 2, 2)):
    if not os.path.exists(os.path.join(D, name + ".jsonl")):
        continue
    p = plan(name, distill_args(ranks, dp, EFF))
    m = rss(name)
    for r, b in sorted(m.items()):
        st = p["stages"][r % p["pp"]]
        row(name, r, "peak RSS", st["memory_bytes"]["total"] / 2**20, b / 2**20, "MiB")
    med, lo, hi = step_time(name)
    row(name, "all", "step time", p["t_step"], med, "s",
        "median of %s; range %.2f-%.2f s%s" % ("timed steps", lo, hi, "; calibration" if name == "distill_p1" else ""))
    f = os.path.join(D, name + ".ckpt_bytes")
    if os.path.exists(f):
        row(name, "all", "checkpoint size", p["checkpoint_bytes"] / 1e6, int(open(f).read().split()[0]) / 1e6, "MB")
    m = re.search(r"checkpoint \S+ \(step \d+\) in ([\d.]+)s", open(os.path.join(D, name + ".stderr")).read())
    if m:  # the file system's number (here: local disk through the page cache), not a check of the model
        row(name, "all", "checkpoint write", p["t_checkpoint"], float(m.group(1)), "s", "at --fs-bandwidth 1 GB/s")
for name, ranks in (("eval_p1", 1), ("eval_p2", 2)):
    if not os.path.exists(os.path.join(D, name + ".json")):
        continue
    p = plan(name, eval_args(ranks, EFF))
    m = rss(name)
    for r, b in sorted(m.items()):
        row(name, r, "peak RSS", p["stages"][r]["memory_bytes"]["total"] / 2**20, b / 2**20, "MiB")
    e = json.load(open(os.path.join(D, name + ".json")))
    row(name, "all", "pass time", p["t_step"], e["seconds"], "s", "%d windows" % e["windows"])

# A quiet reference: bench/train_bench.sh's summary of the same three distill layouts (REF_MD=FILE.md,
# e.g. bench/results/train-20261201-0350.md: its sgemm peak and tokens/s, 20 timed steps, median of 5 runs)
ref_rows = []
# REF_MD may also be a directory of today's bench/train_bench.sh (its summary.json: medians of the runs)
def median(v):
    return statistics.median(v)


if os.environ.get("REF_MD"):
    if os.path.isdir(os.environ["REF_MD"]):
        sj = json.load(open(os.path.join(os.environ["REF_MD"], "summary.json")))
        ref_gf = sj["sgemm_peak_gflops_median"]["1"]
        by = {r["config"]: median(r["tokens_per_s"]) for r in sj["rows"]}
        tps = {"1 rank": by["mf_p1"], "2 pipeline stages": by["mf_pp2"], "2 data-parallel replicas": by["mf_dp2"]}
    else:
        txt = open(os.environ["REF_MD"]).read()
        ref_gf = float(re.search(r"sgemm peak: 1 thread ([\d.]+)", txt).group(1))
        tps = {k: float(re.search(r"\| minifuse %s \| \d+ \| ([\d.]+) \|" % k, txt).group(1))
               for k in ("1 rank", "2 pipeline stages", "2 data-parallel replicas")}
    meas = {n: B * CTX / tps[k] for n, k in (("p1", "1 rank"), ("pp2", "2 pipeline stages"), ("dp2", "2 data-parallel replicas"))}
    c = plan("ref_calibrate", distill_args(1, 1, 1.0), ref_gf)
    ref_eff = c["t_pipeline"] / (meas["p1"] - c["t_dp"] - c["t_optim"])
    for n, ranks, dp in (("p1", 1, 1), ("pp2", 2, 1), ("dp2", 2, 2)):
        p = plan("ref_" + n, distill_args(ranks, dp, ref_eff), ref_gf)
        ref_rows.append((n, p["t_step"], meas[n]))

# ... and bench/run_bench.sh's quiet eval of SmolLM2 (REF_FORWARD=forward-DATE.json: 16 windows of 256
# tokens on 1 rank and on 2 ranks x 1 thread, with its sgemm peaks), predicted with the efficiency fitted above
if ref_rows and os.environ.get("REF_FORWARD") and os.path.isdir(os.environ["REF_FORWARD"]):
    # today's bench/run_bench.sh directory: summary.json, medians of its runs (16 windows of CTX tokens)
    fj = json.load(open(os.path.join(os.environ["REF_FORWARD"], "summary.json")))
    for r in fj["rows"]:
        if r["config"] in ("mf_p1_t1", "mf_p2_t1"):
            ranks = r["procs"]
            gf = fj["sgemm_peak_gflops_median"][str(ranks)] / ranks  # the 2-rank run's reference: the 2-thread peak
            EVAL_WINDOWS = int(os.environ.get("REF_FORWARD_WINDOWS", "16"))
            p = plan("ref_eval_p%d" % ranks, eval_args(ranks, ref_eff), gf)
            ref_rows.append(("eval_p%d" % ranks, p["t_step"], EVAL_WINDOWS * CTX / median(r["tokens_per_s"])))
elif ref_rows and os.environ.get("REF_FORWARD"):
    fj = json.load(open(os.environ["REF_FORWARD"]))
    for r in fj["runs"]:
        if r["run"] in ("mf_p1_t1", "mf_p2_t1"):
            gf = r["sgemm_peak_gflops"] / r["ranks"]  # the 2-rank run's reference is the 2-thread peak
            EVAL_WINDOWS = r["tokens"] // CTX
            p = plan("ref_eval_p%d" % r["ranks"], eval_args(r["ranks"], ref_eff), gf)
            ref_rows.append(("eval_p%d" % r["ranks"], p["t_step"], r["tokens"] / r["tokens_per_s"]))

print("# minifuse plan vs measured (CPU backend, 1 thread per rank)\n")
print("teacher %s, frozen weights held as %s\n" % (TEACHER, WEIGHTS))
print("sgemm peak on 1 thread: %.1f GFLOP/s (the larger of: %s); efficiency %.3f (%s); schedule %s, partition %s\n" %
      (GF, ", ".join("%.1f" % v for v in GF_ALL), EFF, how, SCHED, PART))
print("| run | rank | quantity | predicted | measured | predicted / measured | note |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print("| %s | %s | %s | %.2f %s | %.2f %s | %.3f | %s |" % (r["run"], r["rank"], r["what"], r["predicted"], r["unit"],
                                                         r["measured"], r["unit"], r["ratio"], r["note"]))
bad = [r for r in rows if r["what"] != "checkpoint write" and not (0.8 <= r["ratio"] <= 1.2)]
checked = [r for r in rows if r["what"] != "checkpoint write"]
print("\n%d of %d predictions within 20 %% of the measurement%s" % (len(checked) - len(bad), len(checked),
      "" if not bad else "; outside: " + ", ".join("%s rank %s %s (%.2f)" % (r["run"], r["rank"], r["what"], r["ratio"]) for r in bad)))
if ref_rows:
    print("\nQuiet reference (%s): sgemm peak %.1f GFLOP/s, efficiency %.3f fitted to its 1-rank step\n" %
          (os.environ["REF_MD"], ref_gf, ref_eff))
    print("| run | predicted step (eval: pass) | measured | predicted / measured |")
    print("|---|---|---|---|")
    for n, pr, me in ref_rows:
        print("| %s | %.2f s | %.2f s | %.3f |" % (n if n.startswith("eval") else "distill_" + n, pr, me, pr / me))
json.dump(dict(sgemm_gflops=GF, efficiency=EFF, efficiency_from=how, rows=rows), open(os.path.join(D, "table.json"), "w"), indent=1)
