"""benchlib.cluster_storm - the import storm: N hosts import the Python stack at once.

  direct      PYTHONPATH=/shared/stack: every import a round trip to the storage server
  squashfuse  squashfuse_ll on /shared/stack.sqfs on every host, then the imports
  pyfs        pyfs-mount of /shared/stack-LABEL.h5 on every host, then the imports

Timed from the first launch until the last import is done (one mpirun for the
imports, one more before it for the mounts), from cold client caches; the storage
server's counters cover the whole job (pull or mount included).
"""

from benchlib.common import PY, fmt_bytes, fmt_s
from benchlib.cluster_pull import MOUNTPOINT, job as pull_job

EXPORT = ("PYTHONPATH", "BENCH_ROOT", "MPLCONFIGDIR", "PYTHONDONTWRITEBYTECODE")


def methods(ctx, gluster):
    """With GlusterFS's metadata caches on, quick mode measures only the two methods that
    send metadata to the server at import time; a pyfs job's few operations are its pull."""
    if gluster != "default" and not ctx.b.mode_full:
        ms = ["direct", "squashfuse"]
    else:
        ms = ["direct", "squashfuse"] + [v["name"] for v in ctx.pyfs if v["storm"]]
    only = ctx.b.args.methods
    return [m for m in ms if m in only.split(",")] if only else ms


def imports(ctx, n, root):
    env = {"PYTHONPATH": root, "BENCH_ROOT": root, "MPLCONFIGDIR": ctx.b.cluster_mpl,
           "PYTHONDONTWRITEBYTECODE": "1"}
    return ctx.bed.mpirun(n, [PY, "-s", "-S", "-P", "-c", ctx.b.storm_code], env=env,
                          export=EXPORT)


def job(ctx, method, n):
    bed = ctx.bed
    res = {"ok": True, "stages": {}}
    if method == "direct":
        bed.remount()
        bed.profile_start()
        seconds, p = imports(ctx, n, ctx.files["stack"])
        res["stages"]["import"] = seconds
    else:
        # The mount, as in the pull measurement, but of the stack, counters kept running.
        mount = pull_job(ctx, method, n, tree="stack", keep=True)
        res["stages"]["mount"] = mount["seconds"]
        res["phases"] = mount.get("phases")
        if not mount["ok"]:
            bed.unmount_all(MOUNTPOINT, bed.hosts[:n])
            return {"ok": False, "log": mount.get("log", ""), "seconds": None,
                    "server": bed.profile_info()}
        seconds, p = imports(ctx, n, MOUNTPOINT)
        res["stages"]["import"] = seconds
        res["cpu_busy_mount"] = mount.get("cpu_busy")
    res["server"] = bed.profile_info()
    res["cpu_busy_import"] = getattr(p, "cpu_busy", None)
    res["seconds"] = sum(res["stages"].values())
    if p.returncode != 0:
        res["ok"] = False
        res["log"] = (p.stdout + p.stderr)[-800:]
    if method != "direct" and not bed.unmount_all(MOUNTPOINT, bed.hosts[:n]):
        raise RuntimeError("cannot unmount %s on the bed" % MOUNTPOINT)
    return res


def metadata_ops(server):
    return sum(c for op, c in server["ops"].items() if op not in ("READ", "WRITE"))


def bench(ctx, rng, gluster):
    out = ctx.data.setdefault("storm", {}).setdefault(gluster, {})
    for r in range(ctx.rounds):
        jobs = [(m, n) for m in methods(ctx, gluster) for n in ctx.nodes]
        rng.shuffle(jobs)
        ctx.b.log("cluster storm (%s GlusterFS) round %d/%d: %d jobs" % (
            gluster, r + 1, ctx.rounds, len(jobs)))
        for m, n in jobs:
            res = job(ctx, m, n)
            out.setdefault(m, {}).setdefault(str(n), []).append(res)
            s = res["server"]
            ctx.b.log("  storm %-10s %-14s %d hosts: last import done at %s s%s; server read "
                      "%s, %d metadata ops (%s)" % (
                          gluster, m, n, fmt_s(res["seconds"]),
                          "" if res["ok"] else " FAILED", fmt_bytes(s["bytes_read"]),
                          metadata_ops(s), ", ".join(
                              "%s %d" % kv for kv in sorted(s["ops"].items(),
                                                            key=lambda kv: -kv[1])[:5])))
            if not res["ok"]:
                ctx.b.note("cluster storm %s/%s at %d hosts failed: %s" % (
                    gluster, m, n, res.get("log", "").strip()[-300:]))
            ctx.save()
