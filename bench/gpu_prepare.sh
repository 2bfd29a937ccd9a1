#!/usr/bin/env bash
# gpu_prepare.sh - everything bench/gpu_check.sh needs on the GPU machine, made
# here (docs/gpu.md). Run after `make CUDA=1` (bin/minifuse and
# build-cuda/tests/run_tests of the CUDA build).
#
#   build/device.tar.xz   scripts/device_bundle.sh's libraries, Open MPI and env.sh, plus
#                         prog/  the programs, at their repository paths
#                         shared/llm_assets/  the test and benchmark assets (stories260K,
#                                texts, the llama2 tokenizer): MINIFUSE_SHARED there
#                         whl/   the gguf wheel (transformers reads SmolLM2's GGUF with it)
#                         smollm2.sha256
#   build/smollm2.part1, build/smollm2.part2   SmolLM2's GGUF (94 MiB, over one call's
#                         64 MiB) in two pieces, each carried by a call of its own
# Prints the three device calls to make.
set -euo pipefail
cd "$(dirname "$0")/.."
SH=${MINIFUSE_SHARED:-$(cd .. && pwd)/shared}
CACHE=${MINIFUSE_CACHE:-$HOME/.cache/minifuse}
SMOLLM2=$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_WHL=gguf-0.19.0-py3-none-any.whl

progs=()
for f in bin/minifuse build-cuda/tests/run_tests; do [ -x "$f" ] && progs+=("$f"); done
[ -x bin/minifuse ] || { echo "gpu_prepare: bin/minifuse missing (make CUDA=1)" >&2; exit 1; }
eval_help=$(bin/minifuse eval --help 2>/dev/null || true) # whole: grep -q in a pipe would SIGPIPE it (pipefail)
grep -q -- "--backend.*cuda" <<< "$eval_help" ||
    echo "gpu_prepare: warning: bin/minifuse does not list a cuda backend (not the CUDA build?)" >&2
[ -x build-cuda/tests/run_tests ] || echo "gpu_prepare: warning: build-cuda/tests/run_tests missing: the GPU tests will fail there" >&2

NO_TAR=1 bash scripts/device_bundle.sh "${progs[@]}"
D=build/device
for p in "${progs[@]}"; do mkdir -p "$D/prog/$(dirname "$p")" && cp -p "$p" "$D/prog/$p"; done
for a in models/stories260K models/stories260K_hf text/wikitext2_raw_test.txt text/tinystories_train_first2MiB.txt \
         tokenizers/llama2_tokenizer.bin; do
    mkdir -p "$D/shared/llm_assets/$(dirname "$a")"
    cp -r "$SH/llm_assets/$a" "$D/shared/llm_assets/$a"
done
mkdir -p "$D/whl" "$CACHE/wheels"
if [ ! -f "$CACHE/wheels/$GGUF_WHL" ]; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d "$CACHE/wheels" gguf==0.19.0
fi
cp "$CACHE/wheels/$GGUF_WHL" "$D/whl/"
if [ -f "$SMOLLM2" ]; then
    sha256sum "$SMOLLM2" | cut -d' ' -f1 >"$D/smollm2.sha256"
    head -c 48M "$SMOLLM2" >build/smollm2.part1
    tail -c +$((48 * 1024 * 1024 + 1)) "$SMOLLM2" >build/smollm2.part2
else
    echo "gpu_prepare: warning: $SMOLLM2 missing: gpu_check's SmolLM2 parts will fail" >&2
fi
rm -f build/device.tar.xz
tar -C build -cJf build/device.tar.xz device
mib() { echo $(( ($(du -k "$1" | cut -f1) + 1023) / 1024 )); }
tree=$(( ($(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) + (1 << 20) - 1) >> 20 ))
echo "gpu_prepare: build/device.tar.xz $(mib build/device.tar.xz) MiB, tracked tree ${tree} MiB"
[ -f build/smollm2.part1 ] && echo "gpu_prepare: build/smollm2.part1 $(mib build/smollm2.part1) MiB, part2 $(mib build/smollm2.part2) MiB"
cat <<EOT
device calls (docs/gpu.md), back to back (a machine stays warm 30 s after a call):
  1. run  carry ["build/smollm2.part1"]   command "ls -l build"                       (SmolLM2, first half)
  2. run  carry ["build/smollm2.part2"]   command "ls -l build"                       (second half; part1 stays)
  3. run  carry ["build/device.tar.xz"]   command "bash bench/gpu_check.sh"  timeout_s 540
then give_back; the raw output comes back as \$OUT/gpu_check.tar.gz and summary.txt.
EOT
