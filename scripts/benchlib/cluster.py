"""benchlib.cluster - `scripts/bench --cluster`: pyfs on the multi-host test bed.

On a bed of N compute hosts and one storage host (tests/cluster/bed, links capped
with tc, the storage host's too, the archive on the GlusterFS volume /shared), at
N = 1, 2, 4, 8 in shuffled, interleaved order:

  pull   launch to every host mounted (or holding the data), and what the storage
         server delivered (its own counters: bytes read, operations by type), for
         pyfs-mount (each binary given, each exchange it offers), rank 0 reads +
         MPI_Bcast, every host reads the whole archive, python-mpi-bcast's bcast +
         untar to tmpfs, and every host mounting a SquashFS image with squashfuse_ll;
  storm  N hosts importing the Python stack at once straight from /shared, through
         pyfs (pull, then import) and through squashfuse_ll on /shared: the server's
         operations by type, bytes served and the time until the last import is done;
         then again with GlusterFS's metadata caches on.

Every run starts from cold client caches (/shared remounted on every host). The bed
is the benchmark's own (PYFS_BED_ID, default 1) and is taken down on exit, Ctrl-C
included. Set-up (trees, archives, images) lives in cluster_setup; the two
measurements in cluster_pull and cluster_storm; tables, fit and plots in
cluster_report.
"""

import json
import os
import random
import time

from benchlib import cluster_pull, cluster_report, cluster_setup, cluster_storm
from benchlib.bed import Bed

NODE_COUNTS = (1, 2, 4, 8)
GLUSTER_MD_CACHE = (("performance.nl-cache", "on"), ("performance.md-cache-timeout", "600"),
                    ("performance.stat-prefetch", "on"))


def add_arguments(ap):
    g = ap.add_argument_group("the cluster part (--cluster, on the multi-host test bed)")
    g.add_argument("--cluster", action="store_true",
                   help="run the multi-host benchmark on a test bed of its own instead of "
                        "the single-machine parts (quick: 1 round of each measurement, about "
                        "12 minutes, most of it the storms and the 8-host "
                        "pulls; --full: 3 rounds)")
    g.add_argument("--rate", type=int, default=200,
                   help="Mbit/s of every compute host's link (default %(default)s)")
    g.add_argument("--storage-rate", type=int,
                   help="Mbit/s of the storage host's link (default: --rate)")
    g.add_argument("--nodes", default=",".join(map(str, NODE_COUNTS)),
                   help="compute host counts (default %(default)s)")
    g.add_argument("--pyfs-mount", action="append", default=[], metavar="[LABEL=]PATH",
                   help="a pyfs-mount binary to measure (repeatable; default: this tree's "
                        "build). One with --exchange is measured with each exchange")
    g.add_argument("--cluster-rounds", type=int,
                   help="rounds of the pull and of each storm (default 1 quick, 3 full)")
    g.add_argument("--mca", action="append", default=[], metavar="NAME=VALUE",
                   help="an Open MPI MCA setting for every launch (repeatable; e.g. "
                        "mpi_yield_when_idle=1)")
    g.add_argument("--methods", help="comma list: measure only these methods (default: all)")
    g.add_argument("--parts", default="pull,storm,storm-cached",
                   help="cluster parts to run (default %(default)s)")


class Ctx:
    """State of one cluster run: the bed, the files on /shared, the figures."""

    def __init__(self, b):
        self.b = b
        a = b.args
        self.rate = a.rate
        self.storage_rate = a.storage_rate or a.rate
        self.nodes = [int(x) for x in a.nodes.split(",")]
        self.rounds = a.cluster_rounds or (3 if b.mode_full else 1)
        self.parts = set(a.parts.split(","))
        self.bed = Bed(b, os.environ.get("PYFS_BED_ID", "1"))
        self.pyfs = []       # {"name", "exe", "args", "binary"} per pyfs variant
        self.files = {}      # what lives on /shared
        self.data = b.data.setdefault("cluster", {})

    def save(self):
        with open(os.path.join(self.b.results, "results.json"), "w") as f:
            json.dump(self.b.data, f, indent=1, default=str)


def pyfs_variants(ctx):
    """Each binary given (or this tree's build), once per exchange its --help offers."""
    b = ctx.b
    given = ctx.b.args.pyfs_mount or ["pyfs=" + (b.mount or "")]
    out = []
    for i, spec in enumerate(given):
        label, _, path = spec.rpartition("=")
        label = label or ("pyfs" if i == 0 else "pyfs%d" % (i + 1))
        path = os.path.abspath(path)
        if not os.access(path, os.X_OK):
            raise RuntimeError("pyfs-mount binary '%s' is not executable" % path)
        help_text = b.run([path, "--help"], check=False, quiet=True)
        help_text = help_text.stdout + help_text.stderr
        info = cluster_setup.binary_info(b, path)
        # The storm imports through the default exchange only (the last one offered:
        # the ring, the default again since its order by hops).
        if "--exchange" in help_text:
            exchanges = [x for x in ("allgatherv", "ring") if x in help_text]
            for x in exchanges:
                out.append({"name": "%s/%s" % (label, x), "exe": path,
                            "args": ["--exchange=" + x], "binary": info, "label": label,
                            "archive_key": label, "storm": x == exchanges[-1]})
        else:
            out.append({"name": label, "exe": path, "args": [], "binary": info,
                        "label": label, "archive_key": label, "storm": True})
        # With a pyfs-pack that compresses: the -z archive too, default exchange.
        pack_help = b.run([info["pack"], "--help"], check=False, quiet=True)
        if "--compress" in pack_help.stdout + pack_help.stderr:
            out.append({"name": label + "-z", "exe": path, "args": [], "binary": info,
                        "label": label, "archive_key": label + "-z", "compress": True,
                        "storm": True})
    return out


def run(b):
    """The whole cluster benchmark; raises on failure, always takes the bed down."""
    ctx = Ctx(b)
    b.cluster_work = os.path.join(b.work, "cluster")
    os.makedirs(b.cluster_work, exist_ok=True)
    ctx.pyfs = pyfs_variants(ctx)
    ctx.data["meta"] = {"rate_mbit": ctx.rate, "storage_rate_mbit": ctx.storage_rate,
                        "nodes": ctx.nodes, "rounds": ctx.rounds, "bed_id": ctx.bed.id,
                        "pyfs": ctx.pyfs, "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                        "cores": os.cpu_count(), "mode": b.args.mode}
    t_start = time.monotonic()
    n_max = max(ctx.nodes)
    try:
        cluster_setup.prepare(ctx)
        b.log("cluster: bed %s up, %d compute hosts, links %d Mbit/s, storage %d Mbit/s" % (
            ctx.bed.id, n_max, ctx.rate, ctx.storage_rate))
        ctx.bed.up(n_max, ctx.rate, ctx.storage_rate)
        ctx.data["meta"]["bed_up_seconds"] = ctx.bed.up_seconds
        for kv in b.args.mca:
            name, _, value = kv.partition("=")
            ctx.bed.mpi_env["OMPI_MCA_" + name] = value
        ctx.data["meta"]["mca"] = b.args.mca
        cluster_setup.measure_links(ctx)
        ctx.save()
        cluster_setup.stage(ctx)
        ctx.save()
        rng = random.Random(b.args.seed + 10)
        if "pull" in ctx.parts:
            cluster_pull.bench(ctx, rng)
            ctx.save()
        if "storm" in ctx.parts:
            cluster_storm.bench(ctx, rng, "default")
            ctx.save()
        if "storm-cached" in ctx.parts:
            for opt, val in GLUSTER_MD_CACHE:
                ctx.bed.gluster("volume", "set", "pyfs", opt, val)
            ctx.data["meta"]["gluster_md_cache"] = dict(GLUSTER_MD_CACHE)
            cluster_storm.bench(ctx, rng, "md-cache")
            for opt, _ in GLUSTER_MD_CACHE:
                ctx.bed.gluster("volume", "reset", "pyfs", opt)
            ctx.save()
    finally:
        b.log("cluster: taking bed %s down" % ctx.bed.id)
        ctx.bed.down()
        ctx.data["meta"]["seconds"] = time.monotonic() - t_start
        ctx.save()


def report(b):
    return cluster_report.report(b)


def plots(b):
    cluster_report.plots(b)


def copy_to_docs(b, text):
    cluster_report.copy_to_docs(b, text)
