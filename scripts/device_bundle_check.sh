#!/usr/bin/env bash
# device_bundle_check.sh - does build/device/ (scripts/device_bundle.sh) carry
# everything? Runs bin/minifuse from the bundle alone, as on the GPU machine.
#
#   scripts/device_bundle_check.sh [MODEL TEXT]   (default: stories260K on TinyStories, 2 windows)
#
# As root, in a private mount namespace (unshare -m: nothing leaks out), the
# system's Open MPI, PMIx and every system copy of a bundled library are
# hidden (an empty folder or /dev/null bind-mounted over them), then with only
# `. build/device/env.sh`:
#   1. ldd: every library of bin/minifuse is the bundle's, glibc's or CUDA's
#      (LD_DEBUG=libs of the singleton run agrees);
#   2. bin/minifuse eval as an MPI singleton;
#   3. mpirun -np 2 bin/minifuse eval;
# and both perplexities must equal the one of the same eval run normally.
# Without root or unshare it runs 1-3 with the system copies visible and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
D=$PWD/build/device
[ -f "$D/env.sh" ] || { echo "bundle_check: $D/env.sh missing: run scripts/device_bundle.sh" >&2; exit 1; }
SH=${MINIFUSE_SHARED:-$(cd .. && pwd)/shared}
MODEL=${1:-$SH/llm_assets/models/stories260K/stories260K.bin}
TEXT=${2:-$SH/llm_assets/text/tinystories_train_first2MiB.txt}
ARGS=(eval --model "$MODEL" --text "$TEXT" --ctx 64 --max-windows 2 --json)
ppl_of() { grep -o '"ppl": *[0-9.eE+-]*' | head -1 | sed 's/.*: *//'; }

if [ "${1:-}" != "--inside" ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MINIFUSE_QUIET=1
    want=$(bin/minifuse "${ARGS[@]}" | ppl_of)
    echo "bundle_check: system libraries: ppl $want"
    if [ "$(id -u)" = 0 ] && unshare -m --propagation private true 2>/dev/null; then
        exec unshare -m --propagation private env WANT="$want" MINIFUSE_SHARED="$SH" bash "$0" --inside "$MODEL" "$TEXT"
    fi
    echo "bundle_check: not root or no unshare: the system's copies stay visible (a weaker check)"
    WANT=$want HIDDEN=0 bash "$0" --inside "$MODEL" "$TEXT"
    exit
fi
shift
MODEL=$1 TEXT=$2
ARGS=(eval --model "$MODEL" --text "$TEXT" --ctx 64 --max-windows 2 --json)

# shellcheck disable=SC1091
. "$D/env.sh"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MINIFUSE_QUIET=1
if [ "${HIDDEN:-1}" = 1 ]; then
    empty=$(mktemp -d)
    n=0
    for dir in /usr/lib/x86_64-linux-gnu/openmpi /usr/lib/x86_64-linux-gnu/pmix2 /usr/lib/x86_64-linux-gnu/hwloc /usr/share/openmpi /etc/openmpi; do
        [ -d "$dir" ] && mount --bind "$empty" "$dir" && n=$((n + 1))
    done
    for f in /usr/bin/orted /usr/bin/orterun "$D"/lib/*; do
        sys=$f
        case $f in "$D"/lib/*) sys=/usr/lib/x86_64-linux-gnu/$(basename "$f") ;; esac
        [ -e "$sys" ] || continue
        mount --bind /dev/null "$(readlink -f "$sys")" && n=$((n + 1))
    done
    echo "bundle_check: $n system folders and files hidden (Open MPI, PMIx, orted, the bundled libraries' system copies)"
fi

# what the GPU machine has itself: glibc, the compiler runtime (as in device_bundle.sh's SYSTEM), CUDA
SYS='(/usr)?/lib(64)?/(x86_64-linux-gnu/)?(ld-linux.*|lib(c|m|dl|pthread|rt|resolv|util|anl|nsl|mvec|gcc_s|stdc\+\+)\.so.*)'
bad=$(ldd bin/minifuse | awk '/=>/{print $1, $3}' | grep -v -E " ($D/lib/|/usr/local/cuda|$SYS$)" || true)
[ -z "$bad" ] || { echo "bundle_check: FAIL: not from the bundle:"; echo "$bad"; exit 1; }
echo "bundle_check: ldd: every library from the bundle, glibc or CUDA"

log=$(mktemp)
got1=$(LD_DEBUG=libs LD_DEBUG_OUTPUT=$log bin/minifuse "${ARGS[@]}" | ppl_of)
outside=$(cat "$log".* | grep "calling init:" | awk '{print $NF}' | grep -v -E "^($D/|/usr/local/cuda|$SYS$)" | sort -u || true)
rm -f "$log".*
[ -z "$outside" ] || { echo "bundle_check: FAIL: loaded from outside the bundle:"; echo "$outside"; exit 1; }
echo "bundle_check: singleton: ppl $got1 (LD_DEBUG: every library loaded from the bundle or glibc)"
got2=$(mpirun -np 2 --bind-to none bin/minifuse "${ARGS[@]}" | ppl_of)
echo "bundle_check: mpirun -np 2: ppl $got2"
if [ -n "$WANT" ] && [ "$got1" = "$WANT" ] && [ "$got2" = "$WANT" ]; then
    echo "bundle_check: OK"
else
    echo "bundle_check: FAIL: ppl $got1 / $got2, want $WANT"
    exit 1
fi
