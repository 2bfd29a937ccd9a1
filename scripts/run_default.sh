#!/usr/bin/env bash
# run_default.sh - `make run`: evaluate the default model (SmolLM2-135M-Instruct)
# across 2 MPI ranks on real English text and print the report.
# Text: ../shared/llm_assets/text/wikitext2_raw_test.txt when present, else the
# fortunes installed by scripts/setup.sh (so it runs on any Debian machine).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MINIFUSE_CACHE:-$HOME/.cache/minifuse}"
MODEL="${MODEL:-$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf}"
SHARED="${MINIFUSE_SHARED:-../shared}"
TEXT="${TEXT:-$SHARED/llm_assets/text/wikitext2_raw_test.txt}"
if [ ! -f "$TEXT" ]; then
    TEXT=$(mktemp /tmp/minifuse-fortunes-XXXXXX.txt)
    cat /usr/share/games/fortunes/{fortunes,literature,riddles} | tr -d '\r' > "$TEXT"
fi
WINDOWS="${WINDOWS:-40}"
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
echo "minifuse: eval of $(basename "$MODEL") on $TEXT, 2 pipeline ranks, ctx 256, $WINDOWS windows"
mpirun --oversubscribe --bind-to none -np 2 bin/minifuse eval --model "$MODEL" --text "$TEXT" --ctx 256 --max-windows "$WINDOWS"
