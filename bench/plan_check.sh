#!/usr/bin/env bash
# plan_check.sh - the planner (`minifuse plan`) against measurements on this machine.
#
# Runs small real jobs with the CPU backend, one OpenMP/BLAS thread per rank:
#   distill SmolLM2-135M (teacher, Q4_1 GGUF) -> SmolLM2 without 8 blocks
#   (`prune --drop-layers 8 --metric random --seed 1`), ctx 256, batch B (default 4),
#   STEPS steps (default 5; the first is a warm-up and not timed), a checkpoint at
#   the last step, on 1 rank, 2 ranks as 2 pipeline stages, 2 ranks as --dp 2;
#   eval of SmolLM2 (ctx 256, EVAL_WINDOWS windows) on 1 and 2 ranks;
# measures each rank's peak RSS (/usr/bin/time -v), the step time (median of the
# timed steps of distill's --log), the checkpoint's size and write time, eval's
# time per window; then runs `minifuse plan` with the same settings and prints
# predicted vs measured and their ratio.
#
# The CPU peak is the measured sgemm peak at SmolLM2's shapes on 1 thread
# (bench/sgemm_peak.c); the planner's compute efficiency is a calibration: it is
# fitted to the 1-rank distill step (CALIBRATE=1, default) and then used
# unchanged for the 2-rank layouts and for eval, which are the check. Set
# EFF=x to pass a fixed --efficiency instead.
#
# Writes bench/results/plan-check-DATE/: the raw outputs (time -v of every rank,
# distill logs and stderr, eval JSON, sgemm JSON, the planner's JSON), env.json
# and table.md. MEASURED=DIR reuses the runs of an earlier DIR (only the planner
# and the table are redone). REF_MD=bench/results/train-DATE.md and
# REF_FORWARD=bench/results/forward-DATE.json add quiet references (bench/plan_check.py).
#
# MODEL=synth1b: the same check on the 1.1B-parameter synthetic model of
# bench/make_synthetic.py (TinyLlama shapes, random BF16 weights, 4 shards; the
# teacher held in bf16 as distill's --teacher-weights auto does), student: 11 of
# its 22 blocks dropped; defaults CTX 128, B 2, STEPS 4, EVAL_WINDOWS 4, and no
# --dp 2 run (two full replicas with their AdamW state do not fit 24 GiB).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
MODEL=${MODEL:-smollm2}
case "$MODEL" in
    smollm2) M="$SMOLLM2"; DROP=8; DEF_CTX=256; DEF_B=4; DEF_STEPS=5; DEF_EW=16; DP2=1; export PLAN_WEIGHTS=${PLAN_WEIGHTS:-f32} ;;
    synth1b) M="$CACHE/synth-1b"; DROP=11; DEF_CTX=128; DEF_B=2; DEF_STEPS=4; DEF_EW=4; DP2=0; export PLAN_WEIGHTS=${PLAN_WEIGHTS:-bf16}
             [ -f "$M/config.json" ] || { echo "plan_check: no $M (python3 bench/make_synthetic.py)" >&2; exit 1; } ;;
    *) echo "plan_check: MODEL is smollm2 or synth1b" >&2; exit 1 ;;
esac
STEPS=${STEPS:-$DEF_STEPS}; B=${B:-$DEF_B}; CTX=${CTX:-$DEF_CTX}; EVAL_WINDOWS=${EVAL_WINDOWS:-$DEF_EW}
export EVAL_WINDOWS
OUT="bench/results/plan-check-$(date +%Y%m%d-%H%M)${MODEL:+-$MODEL}"
mkdir -p "$OUT"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
trap 'echo "plan_check: failed; see $OUT/*.stderr" >&2' ERR
head -c 400000 "$TS" > "$tmp/train.txt"
tail -c 209716 "$TS" > "$tmp/heldout.txt"
bin/minifuse prune --model "$M" --out "$tmp/student" --drop-layers "$DROP" --metric random --seed 1 >/dev/null 2> "$OUT/prune.stderr"
cp "$tmp/student/config.json" "$OUT/student_config.json"

# timed NAME NP CMD...: CMD on NP ranks, each rank under /usr/bin/time -v (NAME.rankR.time)
timed() {
    local name=$1 np=$2; shift 2
    mpirun --oversubscribe --bind-to none -np "$np" \
        sh -c 'exec /usr/bin/time -v -o "$0.rank${OMPI_COMM_WORLD_RANK}.time" "$@"' "$OUT/$name" "$@"
}
distill() { # NAME NP DP (not quiet: stderr keeps the "checkpoint ... in X s" line)
    rm -rf "$tmp/d" "$tmp/d.ckpt"
    MINIFUSE_QUIET= timed "$1" "$2" bin/minifuse distill --teacher "$M" --student "$tmp/student" --text "$tmp/train.txt" --out "$tmp/d" \
        --tokens $((STEPS * B * CTX)) --batch "$B" --ctx "$CTX" --lr 1e-4 --dp "$3" --checkpoint-every "$STEPS" \
        --checkpoint-dir "$tmp/d.ckpt" --log "$OUT/$1.jsonl" > /dev/null 2> "$OUT/$1.stderr"
    stat -c %s "$tmp"/d.ckpt/ckpt-*.h5 > "$OUT/$1.ckpt_bytes"
}
evalrun() { # NAME NP
    timed "$1" "$2" bin/minifuse eval --model "$M" --text "$tmp/heldout.txt" --ctx "$CTX" --max-windows "$EVAL_WINDOWS" \
        --json > "$OUT/$1.json" 2> "$OUT/$1.stderr"
}

if [ -z "${MEASURED:-}" ]; then
    python3 bench/prov.py "$OUT" script=bench/plan_check.sh teacher="$M" ctx=$CTX batch="$B" steps="$STEPS" \
        student="prune --drop-layers $DROP --metric random --seed 1" eval_windows="$EVAL_WINDOWS" model_name="$MODEL" \
        note="${NOTE:-}" > /dev/null
    uptime > "$OUT/load_before.txt"
    build_sgemm_peak
    sgemm_peak 1 > "$OUT/sgemm_t1.json"
    distill distill_p1 1 1;  echo "plan_check: distill 1 rank done" >&2
    distill distill_pp2 2 1; echo "plan_check: distill 2 stages done" >&2
    if [ "$DP2" = 1 ]; then distill distill_dp2 2 2; echo "plan_check: distill --dp 2 done" >&2; fi
    evalrun eval_p1 1; evalrun eval_p2 2; echo "plan_check: eval done" >&2
    sgemm_peak 1 > "$OUT/sgemm_t1.after.json"
    uptime > "$OUT/load_after.txt"
else
    cp "$MEASURED"/*.time "$MEASURED"/*.jsonl "$MEASURED"/*.json "$MEASURED"/*.ckpt_bytes "$MEASURED"/*.stderr "$MEASURED"/*.txt "$OUT"/ 2>/dev/null || true
fi
# the planner models the distill this binary runs: 1F1B with the joint partition once `distill --schedule`
# exists (issue 15), else GPipe with teacher and student split separately
# (the help read whole first: under pipefail, grep -q's early exit would SIGPIPE minifuse and fail the test)
distill_help=$(bin/minifuse distill --help 2>/dev/null || true)
if grep -q -- '--schedule' <<< "$distill_help"; then
    export PLAN_SCHEDULE=${PLAN_SCHEDULE:-1f1b} PLAN_PARTITION=${PLAN_PARTITION:-joint}
fi
python3 bench/plan_check.py "$OUT" "$M" "$OUT/student_config.json" "$B" "$CTX" "${EFF:-}" | tee "$OUT/table.md"
echo "plan_check: $OUT" >&2
