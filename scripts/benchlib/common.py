"""benchlib.common - what every part of the benchmark shares: the workload, the
paths and packages it needs, and small helpers (running tools, /proc, formatting)."""

import os
import statistics
import subprocess
import tempfile

PY = "/usr/bin/python3.11"
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
STDLIB = "/usr/lib/python3.11/"
GIB = 1 << 30
MIB = 1 << 20

WORKLOAD_FULL = ('import numpy, scipy.linalg, scipy.sparse, scipy.optimize, pandas, matplotlib; '
                 'matplotlib.use("Agg"); import matplotlib.pyplot, sympy, mpi4py, h5py')
WORKLOAD_NUMPY = "import numpy"
WORKLOADS = {"full": WORKLOAD_FULL, "numpy": WORKLOAD_NUMPY}
TOP_MODULES = ("numpy", "scipy", "pandas", "matplotlib", "sympy", "mpi4py", "h5py")

# Appended to every timed workload: the run fails unless every module that is
# not part of the standard library was loaded from the variant under test.
CHECK = r"""
import sys as _s, os as _o
_r = _o.environ["BENCH_ROOT"] + "/"
_bad = [n for n, m in list(_s.modules.items())
        if isinstance(getattr(m, "__file__", None), str)
        and not m.__file__.startswith((_r, %r))]
_bad += [n for n in %r if n in _s.modules and not _s.modules[n].__file__.startswith(_r)]
if _bad:
    _s.exit("modules not loaded from " + _r + ": " + " ".join(sorted(set(_bad))[:8]))
""" % (STDLIB, TOP_MODULES)

# Lists the files outside the variant that the workload uses (interpreter, standard
# library, system shared libraries): the cold mode reads them back into the page
# cache after dropping it, so that "cold" means the variant's tree alone is cold.
OUTSIDE_FILES = r"""
import sys as _s, os as _o
_r = _o.environ["BENCH_ROOT"] + "/"
_f = set()
for _m in list(_s.modules.values()):
    for _a in ("__file__", "__cached__"):
        _p = getattr(_m, _a, None)
        if isinstance(_p, str) and not _p.startswith(_r) and _o.path.isfile(_p):
            _f.add(_p)
for _l in open("/proc/self/maps"):
    _p = _l.split(None, 5)[-1].strip()
    if _p.startswith("/") and not _p.startswith(_r) and _o.path.isfile(_p):
        _f.add(_p)
print("\n".join(sorted(_f)))
"""

APT_PACKAGES = {
    # package: a file it installs (checked before asking apt)
    "squashfs-tools": "/usr/bin/mksquashfs",
    "squashfuse": "/usr/bin/squashfuse_ll",
    "fuse3": "/usr/bin/fusermount3",
    "hyperfine": "/usr/bin/hyperfine",
    "python3-numpy": DIST_PACKAGES + "/numpy/__init__.py",
    "python3-scipy": DIST_PACKAGES + "/scipy/__init__.py",
    "python3-pandas": DIST_PACKAGES + "/pandas/__init__.py",
    "python3-matplotlib": DIST_PACKAGES + "/matplotlib/__init__.py",
    "python3-sympy": DIST_PACKAGES + "/sympy/__init__.py",
    "python3-mpi4py": DIST_PACKAGES + "/mpi4py/__init__.py",
    "python3-h5py": DIST_PACKAGES + "/h5py/__init__.py",
    "openmpi-bin": "/usr/bin/mpirun",
    "libopenmpi-dev": "/usr/bin/mpicc",
    "cmake": "/usr/bin/cmake",
    "gcc": "/usr/bin/cc",
    "tar": "/bin/tar",
    "util-linux": "/usr/bin/fincore",
    "iperf3": "/usr/bin/iperf3",
}

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def payload_size(b, archive):
    """Bytes of a pyfs archive's payload dataset (read with h5py), or None."""
    p = b.run([PY, "-c", "import h5py,sys; f=h5py.File(sys.argv[1],'r'); "
               "print(f['payload'].shape[0])", archive], check=False)
    return int(p.stdout.strip()) if p.returncode == 0 else None


def run_captured(argv, env, timeout=None):
    """subprocess.run with output through temporary files, not pipes: a tool that leaves a
    daemon behind (and the daemon a helper that inherited the pipes) cannot block us."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                           timeout=timeout)
        out.seek(0)
        err.seek(0)
        p.stdout = out.read().decode(errors="replace")
        p.stderr = err.read().decode(errors="replace")
    return p


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out


def proc_status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def pids_of(exe_name, needle=None):
    """Pids whose argv[0] basename is exe_name and whose argv contains needle."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0].decode(errors="replace")) != exe_name:
            continue
        if needle is None or any(needle.encode() in a for a in argv):
            found.append(int(d))
    return found


def is_mount(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            if line.split()[1].replace("\\040", " ") == path:
                return True
    return False


def mounts_under(prefix):
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mnt = line.split()[1].replace("\\040", " ")
            if mnt == prefix or mnt.startswith(prefix.rstrip("/") + "/"):
                out.append(mnt)
    return out


def tree_bytes(root):
    total = files = 0
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                total += os.path.getsize(p)
                files += 1
    return total, files


def read_files(paths):
    """Read every file through, to put it in the page cache."""
    buf = bytearray(MIB)
    for p in paths:
        try:
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
        except OSError:
            pass


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs), "n": len(xs)}


def paired_ratios(a, b):
    return [x / y for x, y in zip(a, b) if x is not None and y is not None and y > 0]


def fmt_s(x):
    if x is None:
        return "-"
    return "%.3f" % x if x < 10 else "%.1f" % x


def fmt_ratio(st):
    if not st:
        return "-"
    return "%.2f (%.2f–%.2f)" % (st["median"], st["min"], st["max"])


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d B" % n


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"
