#!/usr/bin/env python3
"""prov.py - the provenance of a benchmark run, in one place: writes DIR/env.json.

    python3 bench/prov.py DIR|FILE.json [--torch-py PYTHON] [key=value ...]

Records the date, the minifuse commit (and whether the tree had local changes)
and the sha256 of bin/minifuse, the compiler (mpicc), mpirun, the OpenBLAS
package and build, the OpenBLAS core bin/minifuse runs (its own log line, with
this environment's thread settings), the CPU (`lscpu` model name, flags,
counts), the load average when the run started, the thread/core environment
variables, the PyTorch side (torch, transformers and the other pinned packages
of bench/requirements-torch.txt, torch's BLAS and CPU capability) when
--torch-py names a python that has them, and every key=value given (the
script, its ranks and threads, RUNS, ...). Run from the repository root.
"""
import hashlib, json, os, platform, subprocess, sys, time

PKGS = ("torch", "transformers", "tokenizers", "numpy", "safetensors", "gguf", "accelerate", "huggingface_hub")


def sh(*cmd, stderr=False):
    """First lines of a command's output ('' when it fails)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return (p.stderr if stderr else p.stdout).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def lscpu():
    d = {}
    for line in sh("lscpu").splitlines():
        k, _, v = line.partition(":")
        d[k.strip()] = v.strip()
    return {"model_name": d.get("Model name"), "vendor": d.get("Vendor ID"), "cpus": d.get("CPU(s)"),
            "threads_per_core": d.get("Thread(s) per core"), "sockets": d.get("Socket(s)"),
            "hypervisor": d.get("Hypervisor vendor"), "flags": d.get("Flags", "").split()}


def openblas():
    lib = next((l.split("=>")[1].split()[0] for l in sh("ldd", "bin/minifuse").splitlines() if "openblas" in l), None)
    pkgs = [l for l in sh("dpkg-query", "-W", "-f", "${Package} ${Version}\n").splitlines() if "openblas" in l]
    config = None
    if lib:
        import ctypes
        try:
            f = ctypes.CDLL(lib).openblas_get_config
            f.restype = ctypes.c_char_p
            config = f().decode()
        except (OSError, AttributeError):
            pass
    # bin/minifuse logs the core it runs (after its own kernel check) even when quiet
    core = [l for l in sh("bin/minifuse", "--version", stderr=True).splitlines() if "OpenBLAS core" in l]
    return {"library": lib and os.path.realpath(lib), "packages": pkgs, "config": config,
            "minifuse_core_log": core[0] if core else None}


def torch_side(py):
    code = ("import json, importlib.metadata as m, torch\n"
            "def ver(p):\n    try: return m.version(p)\n    except m.PackageNotFoundError: return None\n"
            f"v = {{p: ver(p) for p in {PKGS!r}}}\n"
            "v['cpu_capability'] = torch.backends.cpu.get_cpu_capability()\n"
            "v['config'] = torch.__config__.show()\n"
            "v['parallel_info'] = torch.__config__.parallel_info()\n"
            "print(json.dumps(v))")
    out = sh(py, "-c", code)
    return json.loads(out) if out else {"error": f"{py} has no torch"}


def read_first(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def busy_others():
    """Other processes that have been using CPU (ps: %CPU over their lifetime
    >= 5, not this script or its ps), so a loaded machine shows in the record. With
    sched_autogroup on, `nice` does not shield a benchmark from other
    sessions: run benchmarks with nothing else running."""
    out = sh("ps", "-eo", "pid,ppid,ni,pcpu,comm", "--no-headers")
    mine, rows = {os.getpid(), os.getppid()}, []
    for line in out.splitlines():
        f = line.split(None, 4)
        if len(f) == 5 and int(f[0]) not in mine and int(f[1]) != os.getpid() and float(f[3]) >= 5.0:
            rows.append({"pid": int(f[0]), "nice": f[2], "pcpu": float(f[3]), "comm": f[4]})
    return rows


def sha256(path):
    if not os.path.exists(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main(argv):
    args, extra, torch_py = [], {}, None
    it = iter(argv)
    for a in it:
        if a == "--torch-py":
            torch_py = next(it)
        elif "=" in a:
            k, _, v = a.partition("=")
            extra[k] = v
        else:
            args.append(a)
    if len(args) != 1:
        sys.exit(__doc__)
    env = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "minifuse": {"commit": sh("git", "rev-parse", "HEAD"),
                     "local_changes": sh("git", "status", "--porcelain", "--untracked-files=no").splitlines(),
                     "binary_sha256": sha256("bin/minifuse")},
        "compiler": sh("mpicc", "--version").splitlines()[:1],
        "mpirun": sh("mpirun", "--version").splitlines()[:1],
        "openblas": openblas(),
        "cpu": lscpu(),
        "nproc": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "others_busy_at_start": busy_others(),
        "sched_autogroup": read_first("/proc/sys/kernel/sched_autogroup_enabled"),
        "environment": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                                                       "MINIFUSE_BLAS_AUTO", "OMP_PROC_BIND", "OMP_PLACES")},
        "python": sys.version.split()[0],
    }
    if torch_py:
        env["pytorch"] = torch_side(torch_py) if os.access(torch_py, os.X_OK) else {"error": f"no {torch_py}"}
    env["run"] = extra
    dest = args[0] if args[0].endswith(".json") else os.path.join(args[0], "env.json")
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    with open(dest, "w") as f:
        json.dump(env, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
