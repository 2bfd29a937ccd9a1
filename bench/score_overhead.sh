#!/usr/bin/env bash
# score_overhead.sh - cost of `score` relative to a plain `eval` forward over the
# same tokens (32 windows x 256 of TinyStories), same ranks and threads:
#   width + BI statistics are fused into the forward (target: <= 10% over eval);
#   drop-one PPL and MI are reported in forward-pass equivalents (FLOP count
#   from the run, and measured time / eval time).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
M="${MODEL:-$SMOLLM2}"
T="$SH/llm_assets/text/tinystories_train_first2MiB.txt"
P=${P:-1}; N=${N:-32}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
MPI="mpirun --oversubscribe --bind-to none -np $P bin/minifuse"
ev=$($MPI eval --model "$M" --text "$T" --ctx 256 --max-windows "$N" --json)
wb=$($MPI score --model "$M" --text "$T" --ctx 256 --samples "$N" --metrics width,bi --out /tmp/mf-overhead.h5 --json)
ev2=$($MPI eval --model "$M" --text "$T" --ctx 256 --max-windows "$N" --json)
pp=$($MPI score --model "$M" --text "$T" --ctx 256 --samples "${NPPL:-4}" --metrics ppl --out /tmp/mf-overhead.h5 --json)
mi=$($MPI score --model "$M" --text "$T" --ctx 256 --samples "${NPPL:-4}" --metrics mi --mi-iters 1 --out /tmp/mf-overhead.h5 --json)
rm -f /tmp/mf-overhead.h5
python3 - "$ev" "$wb" "$ev2" "$pp" "$mi" "$N" "${NPPL:-4}" <<'PY'
import json, sys
ev, wb, ev2, pp, mi = (json.loads(a) for a in sys.argv[1:6]); n, npl = int(sys.argv[6]), int(sys.argv[7])
t_eval = min(ev["seconds"], ev2["seconds"])            # best of two plain forwards
print(f"eval forward: {t_eval:.2f} s for {n} windows ({ev['tokens_per_s']:.1f} tokens/s)")
print(f"score width+bi: {wb['seconds']:.2f} s -> overhead {100*(wb['seconds']/t_eval-1):+.1f}% over eval (target <= 10%)")
per_win = t_eval / n
for name, r in (("drop-one ppl", pp), ("MI (1 iteration)", mi)):
    print(f"score {name}: {r['forward_equivalents_per_window']:.2f} forward equivalents per window (FLOPs); "
          f"measured {r['seconds']/npl/per_win:.2f} x the eval time per window")
PY
