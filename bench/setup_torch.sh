#!/usr/bin/env bash
# setup_torch.sh - the PyTorch side of the benchmarks and the oracle for goldens:
# a venv outside the repo with the pinned packages of bench/requirements-torch.txt
# (torch, transformers that loads GGUF, ...) from PyPI. About 5.6 GB (PyPI's torch
# is the CUDA build; only its CPU path is used). An existing venv that already has
# exactly those versions is left as it is (checked without the network).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MINIFUSE_CACHE:-$HOME/.cache/minifuse}"
VENV="$CACHE/torch-venv"
REQ=bench/requirements-torch.txt
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if "$VENV/bin/pip" install -q --no-index -r "$REQ" 2>/dev/null; then
    echo "ok: $VENV has the pinned versions of $REQ"
else
    "$VENV/bin/pip" install -q -r "$REQ"
    echo "ok: $VENV (use TORCH_PY=$VENV/bin/python)"
fi
