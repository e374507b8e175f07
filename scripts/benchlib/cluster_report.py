"""benchlib.cluster_report - the cluster benchmark's tables, goals, model fit and plots.

Reads b.data["cluster"] (results.json) only, so `--cluster --report-only` redoes
everything from a saved run.
"""

import os
import shutil
import statistics

from benchlib.common import PY, fmt_bytes, fmt_s, md_table
from benchlib.bed import DATA_FOPS, FREE_FOPS, WRITE_FOPS

LABELS = {"bcast": "rank 0 reads + MPI_Bcast", "all-read": "every host reads the archive",
          "bcast-untar": "bcast + untar to tmpfs", "squashfuse": "squashfuse_ll on /shared",
          "none": "MPI start-up only", "direct": "direct from /shared"}


PYFS = set()  # names of the pyfs-mount variants of the run being reported


def is_pyfs(m):
    return m in PYFS or m.startswith("pyfs")


def label(m):
    return LABELS.get(m, "**%s**" % m if is_pyfs(m) else m)


def ok_runs(by_n, n):
    return [r for r in by_n.get(str(n), []) if r.get("ok") and r.get("seconds") is not None]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def med_time(by_n, n):
    return med([r["seconds"] for r in ok_runs(by_n, n)])


def meta_ops(ops):
    return sum(c for op, c in ops.items() if op not in DATA_FOPS and op not in FREE_FOPS)


def write_ops(ops):
    return {op: c for op, c in ops.items() if op in WRITE_FOPS}


def archive_of(c, m, tree="pull"):
    """The archive record (path, bytes, payload) method m reads: its variant's own (the
    compressed one for NAME-z), else the first, uncompressed one."""
    arch = c["meta"]["tree_" + tree]["archives"]
    for v in c["meta"]["pyfs"]:
        if v["name"] == m and arch.get(v.get("archive_key")):
            return arch[v["archive_key"]]
    return arch[sorted(arch)[0]] if arch else None


def archive_for(c, m, tree="pull"):
    """Bytes of the archive file method m reads (payload and metadata)."""
    return archive_of(c, m, tree)["bytes"]


def payload_for(c, m, tree="pull"):
    """The payload method m moves."""
    return archive_of(c, m, tree)["payload"]


def payload_of(c, tree="pull"):
    """The uncompressed payload: what the other methods move too."""
    return payload_for(c, None, tree)


def link_rate(c):
    """Bytes/s of one link: iperf3 between two compute hosts, else the cap."""
    m = c["meta"]
    r = (m.get("iperf3_mbit") or {}).get("node1->node2") or m["rate_mbit"]
    return r * 1e6 / 8


def storage_rate(c):
    m = c["meta"]
    r = (m.get("iperf3_mbit") or {}).get("storage->node1") or m["storage_rate_mbit"]
    return r * 1e6 / 8


def pull_tables(c, goals):
    pull = c["pull"]
    nodes = c["meta"]["nodes"]
    payload = payload_of(c)
    R = link_rate(c)
    out = ["### Pull on the bed\n",
           "Seconds from `mpirun` to every host mounted (pyfs, squashfuse_ll) or holding the "
           "data (the others), median of %d round(s); /shared remounted on every host before "
           "each launch (cold client caches). Payload %s (archive %s, tar %s, SquashFS %s). "
           "One payload over one link takes P/R = %.1f s (R from iperf3).\n" % (
               c["meta"]["rounds"], fmt_bytes(payload),
               fmt_bytes(c["meta"]["tree_pull"]["archives"][sorted(
                   c["meta"]["tree_pull"]["archives"])[0]]["bytes"]),
               fmt_bytes(c["meta"]["tree_pull"].get("tar_bytes")),
               fmt_bytes(c["meta"]["tree_pull"]["sqfs_bytes"]), payload / R)]
    zs = ["%s %s" % (m, fmt_bytes(payload_for(c, m))) for m in pull
          if is_pyfs(m) and payload_for(c, m) != payload]
    if zs:
        out.append("Compressed payloads (`pyfs-pack -z`): %s; their bytes read and their "
                   "limit below are counted against it.\n" % ", ".join(zs))
    rows = []
    for m, by_n in pull.items():
        row = [label(m)]
        for n in nodes:
            busy = med([r.get("cpu_busy") for r in ok_runs(by_n, n)])
            row.append(fmt_s(med_time(by_n, n)) +
                       (" (CPU %.0f%%)" % (100 * busy) if busy is not None else ""))
        rows.append(row)
    out.append("CPU: the fraction of the machine's two cores busy during the launch (all "
               "hosts, the storage server and the rest of the machine), where recorded.\n")
    out.append(md_table(["method"] + ["%d host%s" % (n, "s" if n > 1 else "") for n in nodes],
                        rows))
    rows = []
    for m, by_n in pull.items():
        if m == "none":
            continue
        row = [label(m)]
        for n in nodes:
            rs = ok_runs(by_n, n)
            if not rs:
                row.append("-")
                continue
            b = med([r["server"]["bytes_read"] for r in rs])
            ops = med([meta_ops(r["server"]["ops"]) for r in rs])
            w = med([sum(write_ops(r["server"]["ops"]).values()) for r in rs])
            row.append("%.2f× / %d / %d" % (b / payload_for(c, m), ops, w))
        rows.append(row)
    out.append("What the storage server did per launch (GlusterFS volume profile): bytes read / "
               "payload, metadata operations (all but READ, WRITE and the client's FORGET/"
               "RELEASE notices), of which writes (CREATE, UNLINK, WRITE, SETATTR, ...).\n\n" +
               md_table(["method"] + ["%d hosts" % n for n in nodes], rows))
    ph_rows = []
    for m, by_n in pull.items():
        if not is_pyfs(m) and m != "bcast":
            continue
        for n in nodes:
            ps = [r.get("phases") or {} for r in ok_runs(by_n, n)]
            if ps:
                ph_rows.append([label(m), n] + [fmt_s(med([p.get(k) for p in ps]))
                                                for k in ("read", "exchange", "verify", "pull")])
    if ph_rows:
        out.append("Stages on rank 0 (median s; pyfs-mount -v: with the new exchange the read, "
                   "exchange and checksum overlap, so they do not add up to the pull).\n\n" +
                   md_table(["method", "hosts", "read", "exchange", "verify", "pull"], ph_rows))
    # Goals on the pull.
    limit_rows = []
    for m, by_n in pull.items():
        if not is_pyfs(m):
            continue
        t1 = med_time(by_n, 1)
        own = payload_for(c, m)
        row = [label(m)]
        for n in nodes:
            t = med_time(by_n, n)
            if n == 1 or t is None or t1 is None:
                continue
            lim = (n - 1) / n * own / R
            row.append("%s s vs %.1f s: %.2f×" % (fmt_s(t - t1), lim, (t - t1) / lim))
        limit_rows.append(row)
        extra = [(t - t1) / ((n - 1) / n * own / R) for n in nodes if n > 1
                 for t in [med_time(by_n, n)] if t is not None and t1 is not None]
        if extra:
            goals.append(["%s: launch-to-mounted − 1-host time ≤ 1.3 × (N−1)/N·P/R at 2, 4, 8 "
                          "hosts" % m, ", ".join("%.2f×" % x for x in extra),
                          "yes" if all(x <= 1.3 for x in extra) else "no"])
        t8 = med_time(by_n, max(nodes))
        if t1 and t8:
            goals.append(["%s at %d hosts ≤ 1.25 × its 1-host time (storage link capped)" % (
                m, max(nodes)), "%.2f× (%s s vs %s s)" % (t8 / t1, fmt_s(t8), fmt_s(t1)),
                "yes" if t8 / t1 <= 1.25 else "no"])
        bs = [med([r["server"]["bytes_read"] for r in ok_runs(by_n, n)]) for n in nodes]
        if all(bs):
            # The payload plus the metadata rank 0 reads, once: the archive file once.
            size = archive_for(c, m)
            goals.append(["%s: storage-server bytes = 1.00× payload at every N (the archive "
                          "file once: payload + metadata)" % m,
                          "%s × payload; %s × the archive file" % (
                              ", ".join("%.3f" % (x / own) for x in bs),
                              ", ".join("%.3f" % (x / size) for x in bs)),
                          "yes" if all(x / size < 1.01 for x in bs) else "no"])
        ops = [med([meta_ops(r["server"]["ops"]) for r in ok_runs(by_n, n)]) for n in nodes]
        ws = {}
        for n in nodes:
            for r in ok_runs(by_n, n):
                for op, cnt in write_ops(r["server"]["ops"]).items():
                    ws[op] = max(ws.get(op, 0), cnt)
        if all(x is not None for x in ops):
            goals.append(["%s: server metadata ops per job ≤ 100, none a write" % m,
                          "%s at %s hosts; writes: %s" % (
                              " / ".join("%d" % x for x in ops), "/".join(map(str, nodes)),
                              ", ".join("%s %d" % kv for kv in sorted(ws.items())) or "none"),
                          "yes" if max(ops) <= 100 and not ws else "no"])
    ar = pull.get("all-read", {})
    a1, a8 = med_time(ar, 1), med_time(ar, max(nodes))
    if a1 and a8:
        goals.append(["every-host-reads grows ~N-fold (reference)", "%.1f× from 1 to %d hosts" % (
            a8 / a1, max(nodes)), "-"])
    if limit_rows:
        out.append("Launch-to-mounted minus the 1-host time, against the physical limit "
                   "(N−1)/N·P/R of receiving the rest of the payload over one link.\n\n" +
                   md_table(["method"] + ["%d hosts" % n for n in nodes if n > 1],
                            limit_rows))
    return "\n".join(out)


def storm_tables(c, goals):
    nodes = c["meta"]["nodes"]
    out = ["### The import storm on the bed\n",
           "N hosts import numpy, scipy.linalg/sparse/optimize, pandas, matplotlib.pyplot, "
           "sympy, mpi4py and h5py at once (one process per host), from cold client caches; "
           "seconds from the first launch until the last import is done (pyfs and "
           "squashfuse_ll: mount, then import). Stack tree: %d files, %s; pyfs payload %s; "
           "SquashFS image %s.\n" % (
               c["meta"]["tree_stack"]["files"], fmt_bytes(c["meta"]["tree_stack"]["bytes"]),
               fmt_bytes(payload_of(c, "stack")), fmt_bytes(c["meta"]["tree_stack"]["sqfs_bytes"]))]
    for gl, title in (("default", "GlusterFS defaults"),
                      ("md-cache", "GlusterFS metadata caches on (nl-cache, md-cache-timeout 600, "
                                   "stat-prefetch)")):
        st = c.get("storm", {}).get(gl)
        if not st:
            continue
        rows = []
        for m, by_n in st.items():
            row = [label(m)]
            for n in nodes:
                rs = ok_runs(by_n, n)
                if not rs:
                    row.append("-")
                    continue
                stages = [r["stages"] for r in rs]
                t = med([r["seconds"] for r in rs])
                row.append("%s s (%s) · %s · %d ops" % (
                    fmt_s(t), "+".join(fmt_s(med([s.get(k) for s in stages]))
                                       for k in ("mount", "import") if k in stages[0]),
                    fmt_bytes(med([r["server"]["bytes_read"] for r in rs])),
                    med([meta_ops(r["server"]["ops"]) for r in rs])))
            rows.append(row)
        out.append("**%s**: time to the last import (mount + import) · bytes the server read · "
                   "server metadata operations\n\n" % title +
                   md_table(["method"] + ["%d hosts" % n for n in nodes], rows))
        # Operations by type at the largest N.
        n = max(nodes)
        fops = sorted({op for by_n in st.values() for r in ok_runs(by_n, n)
                       for op in r["server"]["ops"]},
                      key=lambda op: (-max(r["server"]["ops"].get(op, 0) for by_n in st.values()
                                           for r in ok_runs(by_n, n)), op))
        rows = []
        for m, by_n in st.items():
            rs = ok_runs(by_n, n)
            if rs:
                rows.append([label(m)] + ["%d" % med([r["server"]["ops"].get(op, 0) for r in rs])
                                          for op in fops])
        if rows:
            out.append("Server operations by type at %d hosts (%s):\n\n" % (n, title) +
                       md_table(["method"] + fops, rows))
        if gl == "default":
            d8 = med_time(st.get("direct", {}), n)
            s8 = med_time(st.get("squashfuse", {}), n)
            for m, by_n in st.items():
                if not is_pyfs(m):
                    continue
                p8, p1 = med_time(by_n, n), med_time(by_n, 1)
                if p8 and s8:
                    goals.append(["%s: last import at %d hosts ≤ squashfuse_ll's" % (m, n),
                                  "%s s vs %s s (%.2f×)" % (fmt_s(p8), fmt_s(s8), p8 / s8),
                                  "yes" if p8 <= s8 else "no"])
                if p8 and d8:
                    goals.append(["%s: last import at %d hosts ≤ 0.5 × direct from /shared" % (
                        m, n), "%s s vs %s s (%.2f×)" % (fmt_s(p8), fmt_s(d8), p8 / d8),
                        "yes" if p8 <= 0.5 * d8 else "no"])
                if p8 and p1:
                    goals.append(["%s: last import at %d hosts within 1.3 × its 1-host time" % (
                        m, n), "%.2f× (%s s vs %s s)" % (p8 / p1, fmt_s(p8), fmt_s(p1)),
                        "yes" if p8 <= 1.3 * p1 else "no"])
    return "\n".join(out)


def fit(c):
    """Least squares of T(N) = a + k·x(N) per method, x chosen by the method's model."""
    pull = c.get("pull", {})
    nodes = c["meta"]["nodes"]
    R, S = link_rate(c), storage_rate(c)
    models = {"sequential": lambda n, p: (n - 1) * p / R,      # N bcasts of P/N, one by one
              "flat": lambda n, p: (n - 1) / n * p / R,        # ring / all-gather
              "all-read": lambda n, p: n * p / S}              # N copies through one link
    # pyfs-mount binaries with the new exchange (and their -z variants) are flat.
    flat = {v["name"] for v in c["meta"]["pyfs"]
            if v.get("compress") or any(a.startswith("--exchange") for a in v["args"])}
    rows = []
    for m, by_n in pull.items():
        if m in ("none", "squashfuse"):
            continue
        kind = ("all-read" if m == "all-read" else "flat" if m in flat else "sequential")
        payload = payload_for(c, m)
        pts = [(n, med_time(by_n, n)) for n in nodes if med_time(by_n, n) is not None]
        if len(pts) < 2:
            continue
        xs = [models[kind](n, payload) for n, _ in pts]
        ys = [t for _, t in pts]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        var = sum((x - mx) ** 2 for x in xs)
        k = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
        a = my - k * mx
        res = [y - (a + k * x) for x, y in zip(xs, ys)]
        rows.append({"method": m, "model": kind, "a": a, "k": k,
                     "points": pts, "residuals": res})
    return rows


def fit_table(c):
    rows = fit(c)
    if not rows:
        return ""
    desc = {"sequential": "a + k·(N−1)·P/R", "flat": "a + k·(N−1)/N·P/R",
            "all-read": "a + k·N·P/S"}
    t = []
    for r in rows:
        t.append([label(r["method"]), desc[r["model"]], "%.2f s" % r["a"], "%.2f" % r["k"],
                  " / ".join("%+.1f" % x for x in r["residuals"])])
    return ("Model fitted to the medians (least squares; P payload, R compute link and S "
            "storage link from iperf3; residuals in s at %s hosts):\n\n" % "/".join(
                str(n) for n, _ in rows[0]["points"]) +
            md_table(["method", "model T(N)", "a (fixed)", "k (× ideal)", "residuals"], t))


def report(b):
    c = b.data["cluster"]
    m = c["meta"]
    PYFS.clear()
    PYFS.update(v["name"] for v in m["pyfs"])
    md = ["Measured %s on the test bed (bed %s): up to %d compute hosts + 1 storage host on "
          "one machine of %d cores, links capped at %d Mbit/s, storage link at %d Mbit/s "
          "(iperf3: %s); %s mode, %d round(s), %.0f s in all. Raw figures: "
          "results.json.\n" % (
              m["date"], m["bed_id"], max(m["nodes"]), m["cores"], m["rate_mbit"],
              m["storage_rate_mbit"], ", ".join("%s %.0f Mbit/s" % (k, v or 0) for k, v in
                                                (m.get("iperf3_mbit") or {}).items()) or "-",
              m["mode"], m["rounds"], m.get("seconds") or 0)]
    bins = []
    measured = set(c.get("pull", {})) | {k for st in c.get("storm", {}).values() for k in st}
    for v in (v for v in m["pyfs"] if v["name"] in measured):
        bi = v["binary"]
        # The commit's hash only (results.json keeps its subject too).
        bins.append("`%s`: %s%s%s" % (v["name"], bi.get("commit", bi["path"]).split(" ")[0],
                                      " (+%d modified files)" % bi["modified_files"]
                                      if bi.get("modified_files") else "",
                                      " " + " ".join(v["args"]) if v["args"] else ""))
    md.append("pyfs-mount measured: " + "; ".join(bins) + "." +
              (" Open MPI settings: %s." % ", ".join(m["mca"]) if m.get("mca") else "") + "\n")
    goals = []
    if c.get("pull"):
        md.append(pull_tables(c, goals))
        md.append(fit_table(c))
    if c.get("storm"):
        md.append(storm_tables(c, goals))
    if goals:
        md.insert(2, "### Goals (cluster)\n\n" + md_table(["goal", "measured", "met"], goals))
    notes = b.data.get("notes") or []
    if notes:
        md.append("### Notes\n\n" + "".join("- %s\n" % n for n in notes))
    text = "\n".join(md)
    with open(os.path.join(b.results, "summary.md"), "w") as f:
        f.write(text)
    return text


PLOT = r"""
import json, sys, statistics
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
d = json.load(open(sys.argv[1]))["cluster"]; out = sys.argv[2]
nodes = d["meta"]["nodes"]
pyfs = [v["name"] for v in d["meta"]["pyfs"]]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")
def ok(by_n, n):
    return [r for r in by_n.get(str(n), []) if r.get("ok") and r.get("seconds") is not None]
def meta(ops):
    return sum(c for op, c in ops.items() if op not in ("READ", "WRITE", "FORGET", "RELEASE", "RELEASEDIR"))
def axes_n(ax):
    ax.set_xscale("log", base=2); ax.set_xticks(nodes); ax.set_xticklabels([str(n) for n in nodes])
    ax.set_xlabel("compute hosts")
if d.get("pull"):
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=90)
    for m, by_n in d["pull"].items():
        ax.plot(nodes, [med([r["seconds"] for r in ok(by_n, n)]) for n in nodes], marker="o", label=m,
                lw=2.2 if m in pyfs else 1.2)
    axes_n(ax); ax.set_ylabel("s, launch to every host ready")
    ax.set_title("pull, %d Mbit/s links (storage %d)" % (d["meta"]["rate_mbit"], d["meta"]["storage_rate_mbit"]))
    ax.legend(fontsize=7); fig.tight_layout(); fig.savefig(out + "/cluster-pull.png"); plt.close(fig)
if d.get("storm"):
    for what, fname, ylab, log in (("ops", "cluster-ops.png", "server metadata operations per job", True),
                                   ("time", "cluster-storm.png", "s, launch to last import done", False)):
        fig, ax = plt.subplots(figsize=(6.4, 4), dpi=90)
        for gl, st in d["storm"].items():
            for m, by_n in st.items():
                ys = [med([meta(r["server"]["ops"]) if what == "ops" else r["seconds"] for r in ok(by_n, n)])
                      for n in nodes]
                ax.plot(nodes, ys, marker="o", ls="-" if gl == "default" else "--",
                        label="%s (%s)" % (m, "Gluster defaults" if gl == "default" else "md caches on"))
        if what == "ops" and d.get("pull"):
            for m, by_n in d["pull"].items():
                if m in pyfs:
                    ax.plot(nodes, [med([meta(r["server"]["ops"]) for r in ok(by_n, n)]) for n in nodes],
                            marker="x", ls=":", label="%s (pull only)" % m)
        axes_n(ax); ax.set_ylabel(ylab)
        if log:
            ax.set_yscale("log")
        ax.set_title("import storm: " + ("metadata operations at the server" if what == "ops" else "time to the last import"))
        ax.legend(fontsize=6); fig.tight_layout(); fig.savefig(out + "/" + fname); plt.close(fig)
"""


def plots(b):
    p = b.run([PY, "-c", PLOT, os.path.join(b.results, "results.json"), b.results], check=False)
    if p.returncode != 0:
        b.note("plots failed: " + p.stderr.strip()[-300:])


def copy_to_docs(b, text):
    img = os.path.join(b.src, "docs", "img")
    os.makedirs(img, exist_ok=True)
    for name in ("cluster-pull.png", "cluster-ops.png", "cluster-storm.png"):
        src = os.path.join(b.results, name)
        if os.path.exists(src) and os.path.getsize(src) <= 200 * 1024:
            shutil.copy(src, os.path.join(img, "bench-" + name))
    doc = os.path.join(b.src, "docs", "PERFORMANCE.md")
    begin, end = "<!-- bench-cluster:begin -->", "<!-- bench-cluster:end -->"
    s = open(doc).read()
    if begin in s and end in s:
        s = s[:s.index(begin) + len(begin)] + "\n" + text + "\n" + s[s.index(end):]
        with open(doc, "w") as f:
            f.write(s)
        b.log("updated %s and docs/img/bench-cluster-*.png" % doc)
    else:
        b.note("docs/PERFORMANCE.md has no bench-cluster:begin/end markers: tables not copied")

