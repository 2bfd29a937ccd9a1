#!/usr/bin/env bash
# identity_check.sh - the outputs a refactoring must not change.
#
#   bash bench/identity_check.sh OUTDIR [BINARY]
#
# Runs eval, logits, score, prune, distill and fuse on stories260K and on
# SmolLM2-135M (short runs) with a fixed layout (ranks, 1 thread each) and
# writes OUTDIR/digest.txt: one line per output, the SHA-256 of its content
# (safetensors and config.json byte for byte; HDF5 files dataset by dataset
# with their attributes, less the wall times and creation stamps; eval/score
# figures from --json less the timings). Run it with the binary before a change
# and after it, then `diff before/digest.txt after/digest.txt`: no line may differ.
# DIGEST_ONLY=1 recomputes OUTDIR/digest.txt from the outputs already there.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: identity_check.sh OUTDIR [BINARY]}
BIN=$(realpath "${2:-bin/minifuse}")
SHARED=${MINIFUSE_SHARED:-$(cd .. && pwd)/shared}
CACHE=${MINIFUSE_CACHE:-$HOME/.cache/minifuse}
S=$SHARED/llm_assets/models/stories260K_hf
M=$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
TS=$SHARED/llm_assets/text/tinystories_train_first2MiB.txt
WIKI=$SHARED/llm_assets/text/wikitext2_raw_test.txt
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MINIFUSE_QUIET=1
if [ "${DIGEST_ONLY:-0}" != 1 ]; then
rm -rf "$OUT"; mkdir -p "$OUT"
run() { local np=$1; shift; mpirun --bind-to none -np "$np" "$BIN" "$@"; }
# JSON without the keys that carry wall times or rates
strip_json() { python3 -c '
import json, sys
def clean(o):
    if isinstance(o, dict):
        return {k: clean(v) for k, v in o.items() if not any(w in k for w in ("second", "per_s", "time", "out"))}
    if isinstance(o, list):
        return [clean(v) for v in o]
    return o
print(json.dumps(clean(json.load(sys.stdin)), sort_keys=True))'; }

# --- stories260K
for np in 1 2 3; do run $np eval --model "$S" --text "$WIKI" --ctx 128 --max-windows 8 --json | strip_json > "$OUT/s-eval-$np.json"; done
run 2 logits --model "$S" --ids 1,403,407,261,378,100,55 --out "$OUT/s-logits.f32" >/dev/null
run 2 score --model "$S" --text "$TS" --samples 8 --ctx 128 --out "$OUT/s-rankings.h5" --json | strip_json > "$OUT/s-score.json"
run 2 prune --model "$S" --rankings "$OUT/s-rankings.h5" --drop-layers 1 --metric mi --ffn-keep 0.75 --out "$OUT/s-pruned" >/dev/null
run 2 prune --model "$S" --rankings "$OUT/s-rankings.h5" --drop-layers 1 --metric mi --out "$OUT/s-depth" >/dev/null
run 2 distill --teacher "$S" --student "$OUT/s-depth" --text "$TS" --out "$OUT/s-kd-pp" --tokens 8192 --batch 4 --ctx 128 --lr 1e-3 >/dev/null
run 4 distill --teacher "$S" --student "$OUT/s-depth" --text "$TS" --out "$OUT/s-kd-dp" --tokens 8192 --batch 4 --ctx 128 --lr 1e-3 --dp 2 >/dev/null
run 2 distill --teacher "$S" --student "$OUT/s-depth" --text "$TS" --out "$OUT/s-kd-hid" --tokens 4096 --batch 4 --ctx 128 --lr 1e-3 --hidden 1 --ce 0.5 >/dev/null
run 2 distill --teacher "$S" --student "$OUT/s-depth" --text "$TS" --out "$OUT/s-kd-topk" --tokens 4096 --batch 4 --ctx 128 --lr 1e-3 --teacher-topk 16 >/dev/null
for loss in kl-batch nmse; do
    run 2 fuse --model "$S" --text "$TS" --out "$OUT/s-fuse-$loss" --drop-layers 2 --samples 8 --batch 4 --epochs 2 --ctx 128 --rank 8 --loss $loss --json | strip_json > "$OUT/s-fuse-$loss.json"
done
run 3 fuse --model "$S" --text "$TS" --out "$OUT/s-fuse-3" --drop-layers 1 --samples 9 --batch 3 --epochs 1 --ctx 64 --rank 4 --json | strip_json > "$OUT/s-fuse-3.json"
# --- SmolLM2-135M
run 2 eval --model "$M" --text "$WIKI" --ctx 128 --max-windows 4 --json | strip_json > "$OUT/m-eval.json"
run 2 logits --model "$M" --ids 1,504,3000,28,17,900 --out "$OUT/m-logits.f32" >/dev/null
run 2 score --model "$M" --text "$TS" --samples 2 --ctx 64 --mi-iters 2 --out "$OUT/m-rankings.h5" --json | strip_json > "$OUT/m-score.json"
run 2 prune --model "$M" --rankings "$OUT/m-rankings.h5" --drop-layers 2 --metric mi --out "$OUT/m-depth" >/dev/null
run 2 distill --teacher "$M" --student "$OUT/m-depth" --text "$TS" --out "$OUT/m-kd" --tokens 512 --batch 4 --ctx 64 --lr 1e-4 >/dev/null
run 2 fuse --model "$M" --text "$TS" --out "$OUT/m-fuse" --drop-layers 1 --blocks 4 --samples 4 --batch 2 --epochs 1 --ctx 64 --rank 4 --window 4 >/dev/null
fi

# --- digest
python3 - "$OUT" > "$OUT/digest.txt" <<'EOF'
import hashlib, json, os, sys
import h5py, numpy as np
root = sys.argv[1]
SKIP = ("seconds", "created", "time", "software_version", "commit", "blas")
def h5digest(path):
    h = hashlib.sha256()
    def attrs(obj):
        for k in sorted(obj.attrs):
            if any(w in k for w in SKIP): continue
            h.update(k.encode()); h.update(repr(np.asarray(obj.attrs[k]).tolist()).encode())
    with h5py.File(path, "r") as f:
        attrs(f)
        def visit(name, obj):
            h.update(name.encode()); attrs(obj)
            if isinstance(obj, h5py.Dataset): h.update(np.ascontiguousarray(obj[()]).tobytes())
        f.visititems(visit)
    return h.hexdigest()
for dirpath, dirs, files in sorted(os.walk(root)):
    dirs.sort()
    for fn in sorted(files):
        p = os.path.join(dirpath, fn); rel = os.path.relpath(p, root)
        if fn == "digest.txt" or fn.endswith((".jsonl", ".lock")) or ".ckpt" in rel: continue
        if fn.endswith(".h5"): d = h5digest(p)
        elif fn.endswith(".json"):  # paths inside name the output directory: compare them relative to it
            d = hashlib.sha256(open(p, "rb").read().replace(os.path.abspath(root).encode(), b"OUT")).hexdigest()
        else: d = hashlib.sha256(open(p, "rb").read()).hexdigest()
        print(d, rel)
EOF
wc -l < "$OUT/digest.txt" | xargs echo "identity_check: outputs digested:"
