#!/usr/bin/env bash
# synth_memory.sh - does a rank hold only its share? Peak RSS of each of 2 pipeline ranks
# against the bytes of the weights it owns, on the 1.1B-parameter synthetic BF16 model
# (bench/make_synthetic.py: random weights, 4 safetensors shards, written once to
# $CACHE/synth-1b). `eval --json` reports weight_bytes (mf_model_weight_bytes) and
# peak_rss_bytes (getrusage ru_maxrss) per rank. N windows (default 2) of CTX tokens
# (default 128) of WikiText-2, P ranks (default 2) x 1 thread, for each of WEIGHTS
# (default "auto f32": the file's bf16 in place, then float32 copies).
# Writes bench/results/memory-DATE/: env.json, eval-W.json, stderr.txt, summary.md.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
SYN="${SYN:-$CACHE/synth-1b}"; N=${N:-2}; CTX=${CTX:-128}; WEIGHTS=${WEIGHTS:-auto f32}
OUT="bench/results/memory-$(date +%Y%m%d-%H%M)"
mkdir -p "$OUT"
trap 'echo "synth_memory: failed; see $OUT/stderr.txt" >&2' ERR
MINIFUSE_SHARED="$SH" python3 bench/make_synthetic.py "$SYN" >> "$OUT/stderr.txt"
python3 bench/prov.py "$OUT" script=bench/synth_memory.sh model="$SYN" text="$WIKI" ctx="$CTX" windows="$N" \
    ranks="$P" threads=1 weights="$WEIGHTS" note="shared machine: 2 cores, other jobs running, nice 19"
for w in $WEIGHTS; do
    $MPI eval --model "$SYN" --text "$WIKI" --ctx "$CTX" --max-windows "$N" --weights "$w" --json \
        > "$OUT/eval-$w.json" 2>> "$OUT/stderr.txt"
done
python3 - "$OUT" "$SYN" $WEIGHTS <<'PY' | tee "$OUT/summary.md"
import glob, json, os, sys
out, syn, ws = sys.argv[1], sys.argv[2], sys.argv[3:]
total = sum(os.path.getsize(f) for f in glob.glob(os.path.join(syn, "*.safetensors")))
print(f"synthetic model {syn}: {total / 2**30:.3f} GiB of safetensors (BF16)\n")
print("| --weights | held | rank | weight bytes (MiB) | peak RSS (MiB) | RSS - weights (MiB) | RSS / weights |")
print("|---|---|---|---|---|---|---|")
for w in ws:
    j = json.load(open(os.path.join(out, f"eval-{w}.json")))
    for r, (wb, rss) in enumerate(zip(j["weight_bytes"], j["peak_rss_bytes"])):
        print(f"| {w} | {j['weights']} | {r} | {wb / 2**20:.1f} | {rss / 2**20:.1f} | {(rss - wb) / 2**20:.1f} | {rss / wb:.3f} |")
PY
echo "synth_memory: wrote $OUT"
