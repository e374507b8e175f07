"""benchlib.cluster_setup - what the cluster benchmark needs before it measures.

Two trees cut from Debian's dist-packages, kept in OUT/work/cluster while their
source is unchanged: *pull* (numpy, scipy, mpi4py, h5py: the payload of the pull
measurement) and *stack* (every top-level package the storm's imports load, found by
running them). For each: a pyfs archive (packed by the pyfs-pack next to each
pyfs-mount measured, so that a binary reads its own format; also with -z where that
pyfs-pack compresses), a zstd SquashFS image,
and for the pull a tar file. On the bed they are copied onto /shared (the stack tree
also as a plain tree, for the direct import), and the links are measured with iperf3.
"""

import os
import shutil
import subprocess

from benchlib.common import DIST_PACKAGES, PY, WORKLOAD_FULL, CHECK, payload_size, tree_bytes

PULL_PACKAGES = ("numpy", "scipy", "mpi4py", "h5py")

# Prints the top-level entries of dist-packages that the storm's imports load.
TOPS = r"""
import sys
r = sys.argv[1] + "/"
tops = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if isinstance(f, str) and f.startswith(r):
        tops.add(f[len(r):].split("/")[0])
print("\n".join(sorted(tops)))
"""


def binary_info(b, path):
    """Where a pyfs-mount binary comes from: its source tree's commit, if it has one."""
    info = {"path": path}
    cache = os.path.join(os.path.dirname(os.path.dirname(path)), "CMakeCache.txt")
    src = None
    if os.path.exists(cache):
        for line in open(cache):
            if line.startswith("CMAKE_HOME_DIRECTORY:INTERNAL="):
                src = line.split("=", 1)[1].strip()
    if src:
        p = subprocess.run(["git", "-C", src, "log", "-1", "--format=%h %s"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        d = subprocess.run(["git", "-C", src, "status", "--porcelain", "--untracked-files=no"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        info.update({"source": src, "commit": p.stdout.strip(),
                     "modified_files": len(d.stdout.split("\n")) - 1 if d.stdout else 0})
    pack = os.path.join(os.path.dirname(os.path.dirname(path)), "packer", "pyfs-pack")
    info["pack"] = pack if os.access(pack, os.X_OK) else b.pack
    return info


def stack_entries(b):
    env = b.env({"PYTHONPATH": DIST_PACKAGES, "MPLCONFIGDIR": b.cluster_mpl})
    p = subprocess.run([PY, "-s", "-S", "-P", "-c", WORKLOAD_FULL + "\n" + TOPS, DIST_PACKAGES],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       cwd="/")
    if p.returncode != 0:
        raise RuntimeError("the storm's imports fail from %s: %s" % (DIST_PACKAGES,
                                                                     p.stderr[-500:]))
    return p.stdout.split()


def copy_entries(b, entries, dest):
    """Copy top-level entries of dist-packages (and single modules' byte-code) to dest."""
    os.makedirs(os.path.join(dest, "__pycache__"))
    for e in entries:
        b.run(["cp", "-a", os.path.join(DIST_PACKAGES, e), dest])
        if e.endswith(".py"):
            cache = os.path.join(DIST_PACKAGES, "__pycache__")
            for n in os.listdir(cache):
                if n.startswith(e[:-3] + "."):
                    shutil.copy2(os.path.join(cache, n), os.path.join(dest, "__pycache__"))


def make_tree(ctx, name, entries):
    """OUT/work/cluster/NAME: the tree, its SquashFS image and tar (kept while unchanged)."""
    b = ctx.b
    w = b.cluster_work
    tree = os.path.join(w, name)
    stamp = os.path.join(w, name + ".stamp")
    sig = " ".join(entries) + "\n"
    for e in entries:
        st = os.lstat(os.path.join(DIST_PACKAGES, e))
        sig += "%s %d\n" % (e, st.st_mtime_ns)
    if not (os.path.exists(stamp) and open(stamp).read() == sig and os.path.isdir(tree)):
        b.log("cluster: copying %d entries of %s to %s" % (len(entries), DIST_PACKAGES, tree))
        shutil.rmtree(tree, ignore_errors=True)
        for suffix in (".sqfs", ".tar"):
            if os.path.exists(tree + suffix):
                os.unlink(tree + suffix)
        copy_entries(b, entries, tree)
        with open(stamp, "w") as f:
            f.write(sig)
    if not os.path.exists(tree + ".sqfs"):
        b.log("cluster: making %s.sqfs (mksquashfs -comp zstd)" % tree)
        b.run(["mksquashfs", tree, tree + ".sqfs.tmp", "-comp", "zstd", "-noappend", "-quiet",
               "-no-progress"], timeout=1800)
        os.rename(tree + ".sqfs.tmp", tree + ".sqfs")
    if name == "pull" and not os.path.exists(tree + ".tar"):
        b.run(["tar", "cf", tree + ".tar", "-C", tree, "."])
    nbytes, files = tree_bytes(tree)
    info = {"entries": entries, "bytes": nbytes, "files": files,
            "sqfs_bytes": os.path.getsize(tree + ".sqfs")}
    if name == "pull":
        info["tar_bytes"] = os.path.getsize(tree + ".tar")
    # One archive per pyfs-pack in use (a binary under test reads its own format).
    info["archives"] = {}
    for v in ctx.pyfs:
        pack = v["binary"]["pack"]
        label = v["archive_key"]
        if label in info["archives"]:
            continue
        out = os.path.join(w, "%s-%s.h5" % (name, label))
        b.run([pack, "-q", "-f"] + (["-z"] if v.get("compress") else []) + ["-p", PY, out, tree])
        payload = payload_size(b, out)
        if payload is None:
            raise RuntimeError("cannot read the payload size of %s" % out)
        info["archives"][label] = {"path": out, "bytes": os.path.getsize(out),
                                   "payload": payload, "pack": pack}
    ctx.data["meta"]["tree_" + name] = info
    return info


def prepare(ctx):
    b = ctx.b
    for exe in ("squashfuse_ll", "mksquashfs", "iperf3", "mpirun"):
        if not shutil.which(exe):
            raise RuntimeError("'%s' is missing (scripts/bench installs it; or "
                               "scripts/install-deps)" % exe)
    if not b.pack:
        raise RuntimeError("pyfs-pack is missing: build pyfs first")
    b.cluster_mpl = os.path.join(b.cluster_work, "mplconfig")
    os.makedirs(b.cluster_mpl, exist_ok=True)
    ctx.trees = {"pull": make_tree(ctx, "pull", list(PULL_PACKAGES)),
                 "stack": make_tree(ctx, "stack", stack_entries(b))}
    # The storm's program: the imports, then the check that every module outside the
    # standard library came from BENCH_ROOT (the tree under test).
    b.storm_code = WORKLOAD_FULL + "\n" + CHECK
    # matplotlib's font cache, built once here; every host reads it, none writes it.
    env = b.env({"PYTHONPATH": os.path.join(b.cluster_work, "stack"),
                 "BENCH_ROOT": os.path.join(b.cluster_work, "stack"),
                 "MPLCONFIGDIR": b.cluster_mpl, "PYTHONDONTWRITEBYTECODE": "1"})
    b.run([PY, "-s", "-S", "-P", "-c", b.storm_code], env=env)


def measure_links(ctx):
    """iperf3 between two compute hosts and from the storage host, on the bed's subnet."""
    bed = ctx.bed
    rates = {}
    if len(bed.hosts) >= 2:
        rates["node1->node2"] = bed.iperf("node2", "node1")
    rates["storage->node1"] = bed.iperf("node1", "storage")
    ctx.data["meta"]["iperf3_mbit"] = rates
    ctx.b.log("cluster: iperf3 " + ", ".join("%s %.0f Mbit/s" % (k, v or 0)
                                             for k, v in rates.items()))


def stage(ctx):
    """The files on /shared, written from node1 as a user would from a login node."""
    b, bed = ctx.b, ctx.bed
    w = b.cluster_work
    f = ctx.files
    storm = bool(ctx.parts & {"storm", "storm-cached"})
    for name, info in ctx.trees.items():
        if name == "stack" and not storm:
            continue
        for label, a in info["archives"].items():
            f["%s.h5/%s" % (name, label)] = "/shared/%s-%s.h5" % (name, label)
            bed.exec("node1", ["cp", a["path"], f["%s.h5/%s" % (name, label)]])
        f[name + ".sqfs"] = "/shared/%s.sqfs" % name
        bed.exec("node1", ["cp", os.path.join(w, name + ".sqfs"), f[name + ".sqfs"]])
    f["pull.tar"] = "/shared/pull.tar"
    bed.exec("node1", ["cp", os.path.join(w, "pull.tar"), f["pull.tar"]])
    if storm:
        b.log("cluster: copying the stack tree (%d files) onto /shared" %
              ctx.trees["stack"]["files"])
        f["stack"] = "/shared/stack"
        bed.exec("node1", ["cp", "-a", os.path.join(w, "stack"), f["stack"]], timeout=1800)
    bed.on_hosts(bed.hosts, ["mkdir", "-p", "/dev/shm/pyfs-bench-untar"])
