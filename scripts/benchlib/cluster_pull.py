"""benchlib.cluster_pull - the pull on the bed: launch to every host ready, and what the
storage server delivered, for each method at each host count.

Methods (one rank per host, all launched by mpirun from the machine):
  pyfs variants   pyfs-mount -v ARCHIVE /pyenv (each binary, each exchange; NAME-z:
                  the -z archive, default exchange)
  bcast           rank 0 reads the archive, MPI_Bcast (bench/pull_alternatives)
  all-read        every host reads the whole archive from /shared
  bcast-untar     python-mpi-bcast: bcast of a tar file, written to tmpfs, untarred
  squashfuse      squashfuse_ll on a SquashFS image on /shared, on every host
  none            MPI start-up and a barrier: the launcher's fixed cost
"""

import os
import re

from benchlib.common import fmt_bytes, fmt_s

UNTAR_DIR = "/dev/shm/pyfs-bench-untar"
MOUNTPOINT = "/pyenv"


def methods(ctx):
    ms = [v["name"] for v in ctx.pyfs] + ["bcast", "all-read", "bcast-untar", "squashfuse",
                                          "none"]
    only = ctx.b.args.methods
    return [m for m in ms if m in only.split(",")] if only else ms


def parse_pyfs(text):
    """Figures pyfs-mount -v prints on rank 0 (both the old and the new exchange)."""
    out = {}
    m = re.search(r"pull ([\d.]+) s", text)
    if m:
        out["pull"] = float(m.group(1))
    for key, pat in (("metadata", r"metadata ([\d.]+) s"), ("read", r"read ([\d.]+) s"),
                     ("exchange", r"exchange ([\d.]+) s"),
                     ("verify", r"validate\+verify ([\d.]+) s")):
        m = re.search(r"pull [\d.]+ s.*?" + pat, text)
        if m:
            out[key] = float(m.group(1))
    m = re.search(r"all nodes read (\d+) bytes", text)
    if m:
        out["archive_bytes_read"] = int(m.group(1))
    return out


def job(ctx, method, n, tree="pull", keep=False):
    """One launch of method on the first n hosts, from cold client caches; keep: leave
    the mounts in place (the storm imports from them)."""
    b, bed = ctx.b, ctx.bed
    hosts = bed.hosts[:n]
    pyfs = {v["name"]: v for v in ctx.pyfs}
    alt = os.path.join(b.bin, "pull_alternatives")
    if method in pyfs:
        v = pyfs[method]
        archive = ctx.files["%s.h5/%s" % (tree, v["archive_key"])]
        argv = [v["exe"], "-v"] + v["args"] + [archive, MOUNTPOINT]
    elif method == "squashfuse":
        argv = ["squashfuse_ll", ctx.files[tree + ".sqfs"], MOUNTPOINT]
    elif method == "bcast-untar":
        argv = [alt, "bcast-untar", ctx.files["pull.tar"], UNTAR_DIR]
    elif method in ("bcast", "all-read", "none"):
        argv = [alt, method, ctx.files["%s.h5/%s" % (tree, ctx.pyfs[0]["label"])]]
    else:
        raise ValueError(method)
    bed.remount()
    bed.profile_start()
    seconds, p = bed.mpirun(n, argv)
    server = bed.profile_info()
    res = {"seconds": seconds, "ok": p.returncode == 0, "server": server,
           "cpu_busy": getattr(p, "cpu_busy", None)}
    text = p.stdout + p.stderr
    if p.returncode != 0:
        res["log"] = text[-800:]
    if method in pyfs:
        res["phases"] = parse_pyfs(text)
        res["verbose"] = [ln for ln in text.splitlines() if "pyfs-mount[rank 0]" in ln][-12:]
    elif method != "squashfuse":
        m = re.search(r"seconds_read ([\d.]+)\s+seconds_bcast ([\d.]+)", text)
        if m:
            res["phases"] = {"read": float(m.group(1)), "exchange": float(m.group(2))}
    if method in pyfs or method == "squashfuse":
        mounted = sum(1 for h in hosts if bed.fuse_mounts(h, MOUNTPOINT))
        res["mounted"] = mounted
        if mounted != n:
            res["ok"] = False
            res.setdefault("log", "%d of %d hosts mounted" % (mounted, n))
        if not keep and not bed.unmount_all(MOUNTPOINT, hosts):
            raise RuntimeError("cannot unmount %s on the bed" % MOUNTPOINT)
    elif method == "bcast-untar":
        # Rank i (host i+1) untars into UNTAR_DIR/i.
        rs = [bed.exec(h, ["test", "-f", UNTAR_DIR + "/%d/numpy/__init__.py" % i], check=False)
              for i, h in enumerate(hosts)]
        if res["ok"] and any(r.returncode != 0 for r in rs):
            res["ok"] = False
            res["log"] = "the untarred tree is missing on a host"
        bed.on_hosts(hosts, ["sh", "-c", "rm -rf %s/*" % UNTAR_DIR], check=False)
    return res


def show(ctx, method, n, res, payload):
    s = res["server"]
    meta = sum(c for op, c in s["ops"].items() if op not in ("READ", "WRITE"))
    ph = res.get("phases", {})
    busy = res.get("cpu_busy")
    ctx.b.log("  pull %-18s %d hosts: %s s%s%s; server read %s (%.2fx payload), %d metadata ops%s"
              % (method, n, fmt_s(res["seconds"]), "" if res["ok"] else " FAILED",
                 " (CPU %.0f%% busy)" % (100 * busy) if busy is not None else "",
                 fmt_bytes(s["bytes_read"]), s["bytes_read"] / payload, meta,
                 ("; read %s s, exchange %s s" % (fmt_s(ph.get("read")), fmt_s(ph.get("exchange")))
                  if "exchange" in ph else "")))
    if not res["ok"]:
        ctx.b.note("cluster pull %s at %d hosts failed: %s" % (method, n,
                                                              res.get("log", "").strip()[-300:]))


def bench(ctx, rng):
    out = ctx.data.setdefault("pull", {})
    payload = ctx.trees["pull"]["archives"][ctx.pyfs[0]["label"]]["payload"]
    for r in range(ctx.rounds):
        jobs = [(m, n) for m in methods(ctx) for n in ctx.nodes]
        rng.shuffle(jobs)
        ctx.b.log("cluster pull round %d/%d: %d launches" % (r + 1, ctx.rounds, len(jobs)))
        for m, n in jobs:
            res = job(ctx, m, n)
            out.setdefault(m, {}).setdefault(str(n), []).append(res)
            show(ctx, m, n, res, payload)
            ctx.save()
