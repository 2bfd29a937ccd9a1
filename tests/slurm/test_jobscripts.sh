#!/usr/bin/env bash
# test_jobscripts.sh - the jobscripts/ under a real Slurm (slurmctld + slurmd on
# this machine, srun --mpi=pmix), on stories260K. Each result is compared with
# the same command run directly under mpirun:
#   eval.sbatch         JSON perplexity equal to mpirun's (same ranks)
#   score_prune.sbatch  pruned model byte-identical to mpirun score + prune
#   fuse.sbatch         SIGUSR1 mid-run (what --signal=USR1@180 sends before the
#                       time limit) -> checkpoint, exit 0, the script requeues the
#                       job, it resumes; weights byte-identical to an
#                       uninterrupted mpirun run with the same ranks
#   distill.sbatch      the same for distillation
# Ends with "jobscripts: N passed, M failed", or "jobscripts: skipped (reason)"
# where a Slurm daemon already runs (then nothing was tested). Needs root,
# slurm-wlm and munge.
set -uo pipefail
cd "$(dirname "$0")/../.."
W=$(mktemp -d /tmp/minifuse-jobscripts.XXXXXX)
NAME=jobscripts
source tests/slurm/lib.sh
start_slurm "a one-node Slurm cluster" '%n %c CPUs %T'

# ---- eval.sbatch: 2 tasks
j=$(submit jobscripts/eval.sbatch "MODEL=$MODEL,TEXT=$W/train.txt,MAX_WINDOWS=8")
st=$(wait_job "$j" 120)
got=$(ppl_of "$W"/eval-"$j".out)
want=$($MPIRUN -np 2 bin/minifuse eval --model "$MODEL" --text "$W/train.txt" --ctx 256 --max-windows 8 --json 2>/dev/null | ppl_of -)
if [ "$st" = COMPLETED ] && [ -n "$got" ] && [ "$got" = "$want" ]; then ok "eval.sbatch: ppl $got = mpirun's"
else fail "eval.sbatch: job $st, ppl '$got' vs mpirun '$want' (log $W/eval-$j.out)"; fi

# ---- score_prune.sbatch: 2 tasks, drop 1 block by MI
j=$(submit jobscripts/score_prune.sbatch "MODEL=$MODEL,TEXT=$W/train.txt,OUT=$W/sp,DROP=1")
st=$(wait_job "$j" 300)
mkdir -p "$W/sp-ref"
$MPIRUN -np 2 bin/minifuse score --model "$MODEL" --text "$W/train.txt" --out "$W/sp-ref/rankings.h5" --samples 32 --ctx 256 --mi-iters 1 >/dev/null 2>&1
$MPIRUN -np 2 bin/minifuse prune --model "$MODEL" --rankings "$W/sp-ref/rankings.h5" --out "$W/sp-ref/pruned" --drop-layers 1 --metric mi >/dev/null 2>&1
if [ "$st" = COMPLETED ] && same_weights "$W/sp/pruned" "$W/sp-ref/pruned" &&
   grep -q '"num_hidden_layers": *4' "$W/sp/pruned/config.json"; then ok "score_prune.sbatch: 4-layer model identical to mpirun's"
else fail "score_prune.sbatch: job $st; pruned model differs or missing (log $W/score_prune-$j.out)"; fi

# ---- fuse.sbatch: 4 tasks, SIGUSR1 during training, requeue, resume
FARGS="--ctx 128 --mi-samples 8"
j=$(submit jobscripts/fuse.sbatch "MODEL=$MODEL,TEXT=$W/train.txt,OUT=$W/fz,DROP=1,SAMPLES=64,EPOCHS=12,RANK=8,ARGS=$FARGS")
signal_after "$j" "$W/fz.fuse.jsonl" 3
st=$(wait_job "$j" 600); restarts=$(field "$j" Restarts)
$MPIRUN -np 4 bin/minifuse fuse --model "$MODEL" --text "$W/train.txt" --out "$W/fz-ref" --drop-layers 1 --samples 64 --epochs 12 \
    --rank 8 --lr 1e-2 --lr-base 1e-3 --checkpoint-every 20 $FARGS >/dev/null 2>&1
if [ "$st" = COMPLETED ] && [ "${restarts:-0}" -ge 1 ] && grep -q "requeueing job $j" "$W"/fuse-"$j".out &&
   same_weights "$W/fz" "$W/fz-ref"; then
    ok "fuse.sbatch: SIGUSR1 -> checkpoint, requeue ($restarts restart), resumed weights identical to an uninterrupted run"
else fail "fuse.sbatch: job $st, restarts ${restarts:-?}, weights $(same_weights "$W/fz" "$W/fz-ref" && echo same || echo differ) (log $W/fuse-$j.out)"; fi

# ---- distill.sbatch: 4 tasks = 2 stages x 2 replicas, student = the pruned model above
DARGS="--ctx 128 --checkpoint-every 10"
j=$(submit jobscripts/distill.sbatch "TEACHER=$MODEL,STUDENT=$W/sp/pruned,TEXT=$W/train.txt,OUT=$W/kd,DP=2,TOKENS=163840,ARGS=$DARGS")
signal_after "$j" "$W/kd.train.jsonl" 30
st=$(wait_job "$j" 600); restarts=$(field "$j" Restarts)
$MPIRUN -np 4 bin/minifuse distill --teacher "$MODEL" --student "$W/sp/pruned" --text "$W/train.txt" --out "$W/kd-ref" --tokens 163840 \
    --ctx 256 --batch 8 --dp 2 $DARGS >/dev/null 2>&1
if [ "$st" = COMPLETED ] && [ "${restarts:-0}" -ge 1 ] && grep -q "requeueing job $j" "$W"/distill-"$j".out &&
   same_weights "$W/kd" "$W/kd-ref"; then
    ok "distill.sbatch: SIGUSR1 -> checkpoint, requeue ($restarts restart), resumed weights identical to an uninterrupted run"
else fail "distill.sbatch: job $st, restarts ${restarts:-?}, weights $(same_weights "$W/kd" "$W/kd-ref" && echo same || echo differ) (log $W/distill-$j.out)"; fi
