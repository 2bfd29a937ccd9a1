# env.sh - what every bench script shares (sourced from the repository root):
# where the shared assets and the model cache are, and mpirun as root, quiet logs.
SH="${MINIFUSE_SHARED:-../shared}"
CACHE="${MINIFUSE_CACHE:-$HOME/.cache/minifuse}"
SMOLLM2="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 MINIFUSE_QUIET=1
