#!/usr/bin/env bash
# train_bench.sh - training (distillation) throughput, as ratios in one run:
#   minifuse distill tokens/s (1 rank x 1 thread, 2 ranks x 1 thread) on SmolLM2
#   (teacher) -> SmolLM2 without 8 blocks (student), ctx 256, batch 4;
#   % of the sgemm peak at 6 x student params + 2 x teacher params FLOPs per token
#   (also reported: the student-only 6N convention);
#   PyTorch doing the same distillation step (bench/torch_distill.py), same threads.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
M="$SMOLLM2"; TEXT="$SH/llm_assets/text/tinystories_train_first2MiB.txt"
TORCH_PY="${TORCH_PY:-$CACHE/torch-venv/bin/python}"; STEPS=${STEPS:-4}; B=${B:-4}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p build/bench bench/results
mpicc -O3 -march=native -fopenmp -Isrc -I/usr/include/x86_64-linux-gnu/openblas-openmp bench/sgemm_peak.c src/backend/cpu_blas.c src/util/log.c -lopenblas -o build/bench/sgemm_peak
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 build/bench/sgemm_peak | tail -1 > "$tmp/sgemm1.json"
OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 build/bench/sgemm_peak | tail -1 > "$tmp/sgemm2.json"
OMP_NUM_THREADS=1 bin/minifuse prune --model "$M" --out "$tmp/student" --drop-layers 8 --metric random --seed 1 >/dev/null
for cfg in "1 1 p1" "2 1 p2" "2 2 dp2"; do
    set -- $cfg
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 mpirun --oversubscribe --bind-to none -np $1 bin/minifuse distill --teacher "$M" \
        --student "$tmp/student" --text "$TEXT" --out "$tmp/d$3" --tokens $(( (STEPS + 1) * B * 256 )) --batch $B --lr 1e-4 \
        --dp $2 --log "$tmp/mf_$3.jsonl" >/dev/null
done
if [ -x "$TORCH_PY" ]; then
    for t in 1 2; do "$TORCH_PY" bench/torch_distill.py --teacher "$M" --student "$tmp/student" --text "$TEXT" --batch $B \
        --steps $STEPS --threads $t 2>/dev/null | tail -1 > "$tmp/torch_t$t.json"; done
fi
python3 - "$tmp" <<'PY' | tee "bench/results/train-$(date +%Y%m%d-%H%M).md"
import json, os, sys
tmp = sys.argv[1]
def j(n):
    p = os.path.join(tmp, n)
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None
D, F, H, KV, HD, V = 576, 1536, 9, 3, 64, 49152
layer = D * (H * HD + 2 * KV * HD) + H * HD * D + 3 * D * F
Nt, Ns = 30 * layer + V * D, 22 * layer + V * D          # matmul params (tied head counted once)
flops_full = 6 * Ns + 2 * Nt
peak = {1: j("sgemm1.json")["aggregate_gflops"], 2: j("sgemm2.json")["aggregate_gflops"]}
print(f"teacher {Nt/1e6:.1f} M, student {Ns/1e6:.1f} M matmul params; FLOPs/token 6Ns+2Nt = {flops_full/1e6:.0f} M (6Ns = {6*Ns/1e6:.0f} M)")
print(f"sgemm peak: 1 thread {peak[1]:.1f}, 2 threads {peak[2]:.1f} GFLOP/s")
print("| run | cores | tokens/s | GFLOP/s (6Ns+2Nt) | % of peak | % of peak (6Ns only) | x PyTorch |")
print("|---|---|---|---|---|---|---|")
rows = {}
for tag, cores, name in (("p1", 1, "minifuse 1 rank"), ("p2", 2, "minifuse 2 pipeline stages"), ("dp2", 2, "minifuse 2 data-parallel replicas")):
    lines = [json.loads(l) for l in open(os.path.join(tmp, f"mf_{tag}.jsonl"))][1:]   # skip the first (warm-up) step
    rows[name] = (cores, sum(l["tokens_per_s"] for l in lines) / len(lines))
for t in (1, 2):
    r = j(f"torch_t{t}.json")
    if r: rows[f"pytorch {t} thread(s)"] = (t, r["tokens_per_s"])
for name, (c, tps) in rows.items():
    ref = rows.get(f"pytorch {c} thread(s)")
    x = f"{tps / ref[1]:.2f}" if ref and not name.startswith("pytorch") else "-"
    print(f"| {name} | {c} | {tps:.1f} | {tps*flops_full/1e9:.1f} | {100*tps*flops_full/1e9/peak[c]:.1f} | {100*tps*6*Ns/1e9/peak[c]:.1f} | {x} |")
PY
