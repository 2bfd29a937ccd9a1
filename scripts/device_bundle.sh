#!/usr/bin/env bash
# device_bundle.sh - everything bin/minifuse needs on a GPU machine that has
# CUDA but no MPI, HDF5, OpenBLAS, jansson (docs/gpu.md).
#
#   scripts/device_bundle.sh [ELF...]   (default: bin/minifuse, build-cuda/tests/run_tests
#                                        and build-cuda/tests/tools/*, those that exist)
#
# Writes build/device/ (git-ignored), and build/device.tar.xz of it:
#   lib/     every shared library the programs, Open MPI's daemons and its
#            components load (ldd, transitively), except glibc, libgcc_s,
#            libstdc++ and the CUDA libraries (cudart, cuBLAS, NCCL, driver),
#            which the GPU machine has in a newer or matching version
#   ompi/    an Open MPI prefix for OPAL_PREFIX: bin/ (mpirun, orterun, orted),
#            the MCA components (without the InfiniBand/UCX/OFI/PSM/OpenSHMEM
#            ones, whose libraries a one-node GPU box does not need), the help
#            and parameter files
#   pmix/    PMIx's plugins and help files (PMIX_PREFIX, PMIX_LIBDIR, PMIX_DATADIR: Debian's PMIx has absolute paths)
#   hwloc/   empty: hwloc's plugin folder (HWLOC_PLUGINS_PATH; the core topology needs none)
#   env.sh   `. build/device/env.sh` sets LD_LIBRARY_PATH (bundle first, then
#            the CUDA libraries found there), OPAL_PREFIX, PMIX_*,
#            PATH, the run-as-root variables; `bin/minifuse` then runs as an MPI
#            singleton and `mpirun -np 2 bin/minifuse ...` works
#   MANIFEST each bundled file and where it came from
# Ends by printing the bundle's size and failing if it is over MAX_MB (default
# 40: the device tool carries 64 MiB in all, the binaries and the tree too).
# NO_TAR=1 skips the .tar.xz (bench/gpu_prepare.sh adds more, then packs).
set -euo pipefail
cd "$(dirname "$0")/.."
OUTDIR=build/device
MAX_MB=${MAX_MB:-40}

progs=("$@")
if [ ${#progs[@]} -eq 0 ]; then
    for f in bin/minifuse build-cuda/tests/run_tests build-cuda/tests/tools/*; do
        [ -f "$f" ] && [ -x "$f" ] && progs+=("$f")
    done
fi
[ ${#progs[@]} -gt 0 ] || { echo "device_bundle: no program to bundle (build bin/minifuse first: make CUDA=1)" >&2; exit 1; }
for p in "${progs[@]}"; do
    [[ $(file -L "$p") == *ELF* ]] || { echo "device_bundle: $p: not an ELF program" >&2; exit 1; }
done

command -v ompi_info >/dev/null || { echo "device_bundle: ompi_info not found (Open MPI is needed here)" >&2; exit 1; }
opath() { ompi_info --path "$1" --parsable | sed -n "s/^path:$1://p"; }
PREFIX=$(opath prefix)
PKGLIB=$(opath pkglibdir)
PKGDATA=$(opath pkgdatadir)
BINDIR=$(opath bindir)
[ -d "$PKGLIB" ] || { echo "device_bundle: Open MPI's component folder $PKGLIB not found" >&2; exit 1; }
PMIXLIB=$(ldd "$PKGLIB"/mca_pmix_ext*.so 2>/dev/null | awk '/libpmix\.so/{print $3; exit}')
PMIXPREFIX=${PMIXLIB:+$(dirname "$(dirname "$(readlink -f "$PMIXLIB")")")}

# libraries the GPU machine provides itself: glibc, the compiler runtime, CUDA and its driver
SYSTEM='^(ld-linux.*|linux-vdso.*|libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|libnsl|libmvec|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvidia-.*|libnvrtc.*|libnvJitLink|libcudnn.*)\.so'
# MCA components left out: interconnect stacks (and OpenSHMEM) a one-node GPU box does not use
HEAVY='lib(ucp|ucs|uct|ucm|fabric|ibverbs|rdmacm|efa|psm_infinipath|psm2|infinipath|oshmem)\.so'

rm -rf "$OUTDIR" "$OUTDIR.tar.xz"
mkdir -p "$OUTDIR/lib" "$OUTDIR/ompi/bin" "$OUTDIR/pmix" "$OUTDIR/hwloc"
rel_pkglib=${PKGLIB#"$PREFIX"/}
mkdir -p "$OUTDIR/ompi/$rel_pkglib" "$OUTDIR/ompi/share"
: >"$OUTDIR/MANIFEST"

add() { # src dst: copy one file (following links), record it
    cp -L "$1" "$2"
    echo "$2 <- $1" >>"$OUTDIR/MANIFEST"
}

# the ELF files whose dependencies are bundled
elfs=("${progs[@]}")
for b in orted orterun; do
    [ -x "$BINDIR/$b" ] || { echo "device_bundle: $BINDIR/$b not found" >&2; exit 1; }
    add "$BINDIR/$b" "$OUTDIR/ompi/bin/$b"
    elfs+=("$BINDIR/$b")
done
ln -s orterun "$OUTDIR/ompi/bin/mpirun"
ln -s orterun "$OUTDIR/ompi/bin/mpiexec"
kept=0 dropped=0
for c in "$PKGLIB"/*.so; do
    deps=$(ldd "$c") # (not piped into grep -q: under pipefail a SIGPIPE would read as "no match")
    if grep -Eq "$HEAVY" <<<"$deps"; then dropped=$((dropped + 1)); continue; fi
    add "$c" "$OUTDIR/ompi/$rel_pkglib/"
    elfs+=("$c")
    kept=$((kept + 1))
done
if [ -n "$PMIXPREFIX" ]; then
    mkdir -p "$OUTDIR/pmix/lib/pmix"
    for c in "$PMIXPREFIX"/lib/pmix/*.so; do
        [ -f "$c" ] || continue
        add "$c" "$OUTDIR/pmix/lib/pmix/"
        elfs+=("$c")
    done
    [ -d "$PMIXPREFIX/share" ] && cp -r "$PMIXPREFIX/share" "$OUTDIR/pmix/" && echo "$OUTDIR/pmix/share <- $PMIXPREFIX/share" >>"$OUTDIR/MANIFEST"
fi
cp -r "$PKGDATA" "$OUTDIR/ompi/share/" && echo "$OUTDIR/ompi/share/$(basename "$PKGDATA") <- $PKGDATA" >>"$OUTDIR/MANIFEST"

# their shared libraries, transitively (ldd resolves the whole closure)
missing=()
for e in "${elfs[@]}"; do
    while read -r name arrow path _; do
        [ "$arrow" = "=>" ] || continue
        if [ "$path" = "not" ]; then
            grep -Eq "$SYSTEM" <<<"$name" || missing+=("$e: $name")
            continue
        fi
        grep -Eq "$SYSTEM" <<<"$name" && continue
        [ -e "$OUTDIR/lib/$name" ] || add "$path" "$OUTDIR/lib/$name"
    done < <(ldd "$e")
done
if [ ${#missing[@]} -gt 0 ]; then
    printf 'device_bundle: not found here: %s\n' "${missing[@]}" >&2
    exit 1
fi

cat >"$OUTDIR/env.sh" <<'EOF'
# . build/device/env.sh - run the bundled bin/minifuse on a machine without
# MPI/HDF5/OpenBLAS/jansson (written by scripts/device_bundle.sh).
_mf_dev=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
# the CUDA libraries the program links (cudart, cuBLAS, cuBLASLt, NCCL): the
# toolkit's first, else those of the Python packages (PyTorch's wheels)
_mf_cuda=""
for _l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
    for _d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib \
              /usr/lib/x86_64-linux-gnu $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null | sed 's#\([^ ]*\)#\1/nvidia/cu13/lib \1/nvidia/nccl/lib#g'); do
        if [ -e "$_d/$_l" ]; then
            case ":$_mf_cuda:" in *":$_d:"*) ;; *) _mf_cuda="$_mf_cuda:$_d" ;; esac
            break
        fi
    done
done
export LD_LIBRARY_PATH="$_mf_dev/lib$_mf_cuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OPAL_PREFIX="$_mf_dev/ompi" PMIX_PREFIX="$_mf_dev/pmix" PMIX_LIBDIR="$_mf_dev/pmix/lib" PMIX_DATADIR="$_mf_dev/pmix/share"
export PATH="$_mf_dev/ompi/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# one box: shared memory and loopback; no cross-memory attach (containers may refuse ptrace)
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_btl_base_warn_component_unused=0
# hwloc's plugins (GL, OpenCL, PCI, libxml) are not bundled: look for none there
export HWLOC_PLUGINS_PATH="$_mf_dev/hwloc"
unset _mf_dev _mf_cuda _l _d
EOF

[ "${NO_TAR:-0}" = 1 ] && { echo "device_bundle: $OUTDIR ($(du -sh "$OUTDIR" | cut -f1)), not packed (NO_TAR=1)"; exit 0; }
tar -C build -cJf "$OUTDIR.tar.xz" device
kb=$(du -sk "$OUTDIR" | cut -f1)
xz_kb=$(du -k "$OUTDIR.tar.xz" | cut -f1)
echo "device_bundle: ${#progs[@]} programs (${progs[*]}), $(ls "$OUTDIR/lib" | wc -l) libraries, $kept Open MPI components ($dropped left out)"
echo "device_bundle: $OUTDIR $((kb / 1024)) MiB, $OUTDIR.tar.xz $((xz_kb / 1024)) MiB (carry one of them; gpu_check.sh unpacks the .tar.xz)"
if [ $((xz_kb / 1024)) -ge "$MAX_MB" ]; then
    echo "device_bundle: $OUTDIR.tar.xz is over MAX_MB=$MAX_MB MiB" >&2
    exit 1
fi
