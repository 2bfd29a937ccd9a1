#!/usr/bin/env bash
# gen_pruned_smollm2_golden.sh - golden for "transformers loads a pruned SmolLM2
# written by minifuse and gives the same logits" (run by hand; needs the torch
# venv of bench/setup_torch.sh as TORCH_PY).
#  1. width importance of SmolLM2 on 4 x 64 TinyStories tokens -> rankings.h5
#     (committed, so that CI prunes exactly the same units on any CPU);
#  2. prune: drop 2 blocks by BI + MLP 1536 -> 1024, 9 -> 6 query heads, hidden 576 -> 512;
#  3. transformers loads the pruned directory (float32) and writes the logits
#     of 16 ids; the sha256 of the pruned weights is recorded with them.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MINIFUSE_CACHE:-$HOME/.cache/minifuse}"; SH="${MINIFUSE_SHARED:-../shared}"
TORCH_PY="${TORCH_PY:-$CACHE/torch-venv/bin/python}"
G=tests/golden/pruned_smollm2
M="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 MINIFUSE_QUIET=1
bin/minifuse score --model "$M" --text "$SH/llm_assets/text/tinystories_train_first2MiB.txt" --samples 4 --ctx 64 \
    --metrics width,bi --out "$G/rankings.h5"
out=$(mktemp -d)/pruned
bin/minifuse prune --model "$M" --rankings "$G/rankings.h5" --out "$out" $(cat "$G/prune_args.txt")
IDS="1 504 3250 28 253 1345"
"$TORCH_PY" tests/check_hf_load.py "$out" $IDS --out "$G/logits_transformers.f32"
( cd "$out" && sha256sum model.safetensors ) > "$G/weights.sha256"
echo "$IDS" > "$G/ids.txt"
echo "golden written to $G"
