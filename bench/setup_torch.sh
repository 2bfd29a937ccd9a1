#!/usr/bin/env bash
# setup_torch.sh - the PyTorch side of the benchmarks and the oracle for goldens:
# a venv outside the repo with torch + transformers (loads GGUF) from PyPI.
# About 5.6 GB (PyPI's torch is the CUDA build; only its CPU path is used).
set -euo pipefail
CACHE="${MINIFUSE_CACHE:-$HOME/.cache/minifuse}"
VENV="$CACHE/torch-venv"
[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch, transformers, gguf, accelerate" 2>/dev/null && { echo "ok: $VENV"; exit 0; }
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch transformers gguf numpy accelerate safetensors h5py
echo "ok: $VENV (use TORCH_PY=$VENV/bin/python)"
