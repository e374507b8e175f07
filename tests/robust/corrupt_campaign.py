"""corrupt_campaign.py - damage a valid pyfs archive in many reproducible ways and check
that the tools refuse every damaged copy cleanly (or, when the damage is harmless to
the data, behave exactly as on the original).

Usage: /usr/bin/python3.11 -s -S -P corrupt_campaign.py ARCHIVE WORKDIR
Environment: PYFS_PACK, PYFS_MOUNT (the tools); PYFS_CORRUPT_SEED (default 20240601),
PYFS_CORRUPT_MUTATIONS (default 500: each is given to --verify, --list and --extract),
PYFS_CORRUPT_MOUNTS (default 30: given to pyfs-mount -f), PYFS_CORRUPT_MPI (default 1:
one harmful mutation under mpirun -np 2 --ranks-as-nodes), PYFS_CORRUPT_KEEP (a
directory where the archives of failed cases are kept).

Mutations: byte flips inside the raw data of each dataset (inodes, dirents, names,
payload) and inside HDF5's own metadata (superblock, object headers, attributes,
everything outside raw data that is not zero padding), truncations, extensions, and
structural rewrites with h5py (datasets swapped, deleted, retyped, rechunked, stored
externally; attributes swapped, deleted, retyped).

Verdict per case: no tool may die by a signal (exit >= 128), print a sanitizer report or
run longer than 20 s. If --verify refuses the copy, --extract and pyfs-mount must
refuse it too, with exit status 1 and a message, extract must create nothing and
nothing may be mounted; --list, which reads only the metadata, must refuse it too or
print exactly the original listing (the damage was in the contents only). If --verify accepts it (the damage hit padding, or a
conversion that yields the same values), it is "harmless": --list must print exactly
the original listing, --extract must write exactly the original tree, pyfs-mount must
serve exactly the original bytes. Exit status 0 when every case passed.
"""
import collections
import hashlib
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import time

sys.path.append("/usr/lib/python3/dist-packages")
import h5py  # noqa: E402
import numpy as np  # noqa: E402

TIMEOUT = 20
SANITIZER = re.compile(rb"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:")
DATASETS = ("inodes", "dirents", "names", "payload")

PACK = os.environ["PYFS_PACK"]
MOUNT = os.environ["PYFS_MOUNT"]
SEED = int(os.environ.get("PYFS_CORRUPT_SEED", "20240601"))
N_TOOLS = int(os.environ.get("PYFS_CORRUPT_MUTATIONS", "500"))
N_MOUNTS = int(os.environ.get("PYFS_CORRUPT_MOUNTS", "30"))
DO_MPI = os.environ.get("PYFS_CORRUPT_MPI", "1") == "1"
KEEP = os.environ.get("PYFS_CORRUPT_KEEP", "")


# ---- the archive and its regions -------------------------------------------------------

def regions(path):
    """Raw data ranges of the datasets, and the offsets of HDF5 metadata bytes."""
    size = os.path.getsize(path)
    raw = {}
    with h5py.File(path, "r") as f:
        # A compressed archive (pyfs-pack -z) also has its block index.
        for k in DATASETS + (("blocks",) if "blocks" in f else ()):
            off = f[k].id.get_offset()
            n = f[k].id.get_storage_size()
            if off is not None and n:
                raw[k] = (off, n)
    data = open(path, "rb").read()
    inside = bytearray(size)
    for off, n in raw.values():
        inside[off:off + n] = b"\1" * n
    meta = []
    grain = 64
    for start in range(0, size, grain):
        block = data[start:start + grain]
        if not any(block):
            continue  # zero padding (alignment holes) is not metadata
        meta.extend(i for i in range(start, min(start + grain, size)) if not inside[i])
    return raw, meta, size


# ---- mutations ---------------------------------------------------------------------------

class Mutation:
    def __init__(self, name, apply):
        self.name, self.apply = name, apply  # apply(original_bytes, out_path)


def write(out, data):
    with open(out, "wb") as f:
        f.write(data)


def flip(offset, xor):
    def apply(orig, out):
        d = bytearray(orig)
        d[offset] ^= xor
        write(out, d)
    return apply


def truncate(length):
    return lambda orig, out: write(out, orig[:length])


def extend(extra):
    return lambda orig, out: write(out, orig + extra)


def rewrite(edit):
    """A structural change made with h5py on a copy."""
    def apply(orig, out):
        write(out, orig)
        with h5py.File(out, "r+") as f:
            edit(f)
    return apply


def recreate(f, name, data, **kw):
    del f[name]
    f.create_dataset(name, data=data, **kw)


def swap(f, a, b):
    f.move(a, "tmp-swap")
    f.move(b, a)
    f.move("tmp-swap", b)


def retype(f, name, change):
    """Rewrite a record dataset with a changed compound type (change(list of fields))."""
    data = f[name][()]
    fields = [(n, data.dtype.fields[n][0]) for n in data.dtype.names]
    fields = change(fields)
    new = np.zeros(data.shape, dtype=np.dtype(fields))
    for n, _ in fields:
        if n in data.dtype.names:
            new[n] = data[n]
    recreate(f, name, new)


def external_payload(f):
    data = f["payload"][()]
    ext = f.filename + ".external"
    with open(ext, "wb") as e:
        e.write(data.tobytes())
    del f["payload"]
    f.create_dataset("payload", shape=data.shape, dtype=data.dtype, external=[(ext, 0, data.size)])


def lookup3(data):
    """Bob Jenkins' lookup3 hashlittle with seed 0: HDF5's metadata checksum."""
    m = 0xffffffff

    def rot(x, k):
        return ((x << k) | (x >> (32 - k))) & m

    def word(chunk, k):
        return int.from_bytes(chunk[4 * k:4 * k + 4], "little")

    n = len(data)
    v = [(0xdeadbeef + n) & m] * 3
    i = 0
    while n - i > 12:
        v = [(v[k] + word(data[i:i + 12], k)) & m for k in range(3)]
        for x, y, z, r in ((0, 2, 1, 4), (1, 0, 2, 6), (2, 1, 0, 8),
                           (0, 2, 1, 16), (1, 0, 2, 19), (2, 1, 0, 4)):
            v[x] = ((v[x] - v[y]) & m) ^ rot(v[y], r)
            v[y] = (v[y] + v[z]) & m
        i += 12
    if n == 0:
        return v[2]
    tail = bytes(data[i:]) + bytes(12 - (n - i))
    v = [(v[k] + word(tail, k)) & m for k in range(3)]
    for x, y, r in ((2, 1, 14), (0, 2, 11), (1, 0, 25), (2, 1, 16), (0, 2, 4), (1, 0, 14), (2, 1, 24)):
        v[x] = ((v[x] ^ v[y]) - rot(v[y], r)) & m
    return v[2]


def reseal_object_header(d, pos):
    """Recompute the checksum of the version-2 object header chunk holding byte pos."""
    start = d.rfind(b"OHDR", 0, pos + 1)
    flags = d[start + 5]
    p = start + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    width = 1 << (flags & 3)
    end = p + width + int.from_bytes(d[p:p + width], "little")
    d[end:end + 4] = lookup3(d[start:end]).to_bytes(4, "little")


def member_offset(offset, old_format):
    """Move member mtime_nsec of the inodes' compound type to another offset. In the
    writer's format (datatype message version 3: the offset takes 1 byte, the object
    header has a checksum, recomputed here), or rewritten in HDF5's earliest format
    (version 1: NUL-padded name, 4-byte offset, no checksum anywhere)."""
    def apply(orig, out):
        write(out, orig)
        if old_format:
            with h5py.File(out, "r") as f:
                data = {k: f[k][()] for k in DATASETS}
                attrs = {k: f.attrs[k] for k in f.attrs}
            with h5py.File(out, "w", libver=("earliest", "v108")) as f:
                for k in DATASETS:
                    f.create_dataset(k, data=data[k])
                f.attrs.create("format", np.bytes_(attrs["format"]))
                f.attrs.create("version", np.uint32(attrs["version"]))
                f.attrs.create("payload_checksum", np.uint64(attrs["payload_checksum"]))
                f.attrs.create("metadata_checksum", np.uint64(attrs["metadata_checksum"]))
        d = bytearray(open(out, "rb").read())
        name = b"mtime_nsec\0"
        i = d.find(name)
        if old_format:
            j = i + (len(name) + 7) // 8 * 8
            d[j:j + 4] = offset.to_bytes(4, "little")
        else:
            d[i + len(name)] = offset
            reseal_object_header(d, i)
        write(out, d)
    return apply


STRUCTURAL = [
    ("swap datasets names<->payload", lambda f: swap(f, "names", "payload")),
    ("swap datasets inodes<->dirents", lambda f: swap(f, "inodes", "dirents")),
    ("swap attributes payload_checksum<->metadata_checksum", lambda f: (
        lambda p, m: (f.attrs.modify("payload_checksum", m), f.attrs.modify("metadata_checksum", p)))(
        f.attrs["payload_checksum"], f.attrs["metadata_checksum"])),
    ("delete dataset inodes", lambda f: f.__delitem__("inodes")),
    ("delete dataset dirents", lambda f: f.__delitem__("dirents")),
    ("delete dataset names", lambda f: f.__delitem__("names")),
    ("delete dataset payload", lambda f: f.__delitem__("payload")),
    ("delete attribute format", lambda f: f.attrs.__delitem__("format")),
    ("delete attribute version", lambda f: f.attrs.__delitem__("version")),
    ("delete attribute payload_checksum", lambda f: f.attrs.__delitem__("payload_checksum")),
    ("delete attribute metadata_checksum", lambda f: f.attrs.__delitem__("metadata_checksum")),
    ("version 2", lambda f: f.attrs.create("version", np.uint32(2))),
    ("version 0", lambda f: f.attrs.create("version", np.uint32(0))),
    ("format 'pyfx'", lambda f: f.attrs.create("format", np.bytes_(b"pyfx"))),
    ("format as a variable-length string", lambda f: f.attrs.__setitem__("format", "pyfs")),
    ("metadata_checksum as a float", lambda f: f.attrs.create(
        "metadata_checksum", np.float64(f.attrs["metadata_checksum"]))),
    ("version as an array of 2", lambda f: f.attrs.create("version", np.array([1, 1], np.uint32))),
    ("payload chunked", lambda f: recreate(f, "payload", f["payload"][()], chunks=(4096,))),
    ("names chunked and compressed", lambda f: recreate(
        f, "names", f["names"][()], chunks=(64,), compression="gzip")),
    ("names two-dimensional", lambda f: recreate(f, "names", f["names"][()].reshape(-1, 1))),
    ("names as int16", lambda f: recreate(f, "names", f["names"][()].astype(np.int16))),
    ("payload as int8", lambda f: recreate(f, "payload", f["payload"][()].view(np.int8))),
    ("payload stored in an external file", external_payload),
    ("inodes big-endian (same values)", lambda f: retype(
        f, "inodes", lambda fl: [(n, t.newbyteorder(">")) for n, t in fl])),
    ("inodes with an extra member", lambda f: retype(
        f, "inodes", lambda fl: fl + [("extra", np.dtype("<u4"))])),
    ("inodes without member nlink", lambda f: retype(
        f, "inodes", lambda fl: [x for x in fl if x[0] != "nlink"])),
    ("dirents name_offset as uint32", lambda f: retype(
        f, "dirents", lambda fl: [(n, np.dtype("<u4") if n == "name_offset" else t) for n, t in fl])),
    ("dirents inode signed", lambda f: retype(
        f, "dirents", lambda fl: [(n, np.dtype("<i4") if n == "inode" else t) for n, t in fl])),
    ("no inodes (empty dataset)", lambda f: recreate(f, "inodes", f["inodes"][()][:0])),
    ("payload emptied", lambda f: recreate(f, "payload", np.zeros(0, np.uint8))),
    ("names soft link to payload", lambda f: (
        f.__delitem__("names"), f.__setitem__("names", h5py.SoftLink("/payload")))),
    ("inodes member offset past the record, object header resealed", None),
    ("inodes member offset past the record, earliest HDF5 format", None),
    ("extra dataset and attribute (harmless)", lambda f: (
        f.create_dataset("extra", data=np.arange(10)), f.attrs.create("extra", 1))),
]


def random_mutation(rng, kind, raw, meta, size):
    if kind in raw:
        off, n = raw[kind]
        where = off + rng.randrange(n)
        xor = 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
        return Mutation(f"flip {kind} raw byte {where - off} (file {where}) ^0x{xor:02x}", flip(where, xor))
    if kind == "hdf5":
        where = rng.choice(meta) if rng.random() < 0.85 else rng.randrange(min(48, size))
        xor = 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
        return Mutation(f"flip HDF5 metadata byte {where} ^0x{xor:02x}", flip(where, xor))
    if kind == "truncate":
        special = [0, 8, 48, size - 1] + [o for o, _ in raw.values()] + [o + n for o, n in raw.values()]
        length = rng.choice(special) if rng.random() < 0.4 else rng.randrange(size)
        length = max(0, min(length, size - 1))
        return Mutation(f"truncate to {length} of {size} bytes", truncate(length))
    if kind == "extend":
        n = rng.choice([1, 511, 4096, 65536, 1 << 20])
        extra = bytes(n) if rng.random() < 0.5 else rng.randbytes(n)
        return Mutation(f"extend by {n} {'zero' if not any(extra) else 'random'} bytes", extend(extra))
    raise ValueError(kind)


# Byte-level structural cases (the type decoded by HDF5 itself is damaged).
BYTE_STRUCTURAL = {
    "inodes member offset past the record, object header resealed": member_offset(0xF0, False),
    "inodes member offset past the record, earliest HDF5 format": member_offset(0x7FFFFFF0, True),
}


def plan(rng, count, raw, meta, size, weights, structural):
    muts = [Mutation("structural: " + name, BYTE_STRUCTURAL.get(name) or rewrite(edit))
            for name, edit in structural]
    kinds = [k for k, w in weights for _ in range(w)]
    while len(muts) < count:
        muts.append(random_mutation(rng, rng.choice(kinds), raw, meta, size))
    return muts[:count]


# ---- running the tools -------------------------------------------------------------------

class Run:
    def __init__(self, argv, timeout=TIMEOUT):
        self.argv = argv
        start = time.monotonic()
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=timeout)
            self.rc, self.out, self.err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            self.rc, self.out, self.err = None, e.stdout or b"", e.stderr or b""
        self.seconds = time.monotonic() - start

    def problem(self):
        """Why this run is a failure whatever the archive: a hang, a signal, a report."""
        if self.rc is None:
            return f"hung (killed after {TIMEOUT} s)"
        if self.rc < 0 or self.rc >= 128:
            return f"died by signal {-self.rc if self.rc < 0 else self.rc - 128}"
        if SANITIZER.search(self.err):
            return "sanitizer report: " + first_line(self.err[SANITIZER.search(self.err).start():])
        return None

    def refused(self):
        """Exit status 1 with a message."""
        if self.rc != 1:
            return f"exit status {self.rc} (expected 1)"
        if not self.err.strip():
            return "failed without a message"
        return None


def first_line(b):
    """The first line that says something (not a rule of dashes, as mpirun prints)."""
    for line in b.decode("utf-8", "replace").split("\n"):
        if line.strip().strip("-"):
            return line.strip()[:300]
    return ""


def category(msg):
    m = msg.lower()
    for key, label in (("checksum mismatch", "checksum mismatch"),
                       ("incorrect metadata checksum", "HDF5 metadata checksum"),
                       ("invalid archive", "invalid archive (structure)"),
                       ("not a pyfs archive", "not a pyfs archive"),
                       ("version", "version"),
                       ("truncated", "truncated file"),
                       ("not an hdf5 file", "not an HDF5 file"),
                       ("cannot open", "HDF5 cannot open"),
                       ("cannot read", "HDF5 cannot read")):
        if key in m:
            return label
    return "other: " + msg[:60]


def manifest(top):
    """Everything --extract wrote: type, mode, size, mtime, contents or target, link groups."""
    out, inodes = {}, collections.defaultdict(list)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, top)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    extra = hashlib.sha1(f.read()).hexdigest()
                inodes[(st.st_dev, st.st_ino)].append(rel)
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            else:
                extra = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                        st.st_size if not stat.S_ISDIR(st.st_mode) else 0, st.st_mtime_ns, extra)
    out["<hard links>"] = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return out


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def unmount(path):
    for args in (["fusermount3", "-u", path], ["fusermount3", "-uz", path], ["umount", "-l", path]):
        if not mounted(path):
            return
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def compare_mount(mnt, base):
    """The mount serves exactly the original tree (contents, types, modes, sizes, targets)."""
    for rel, entry in base.items():
        if rel == "<hard links>":
            continue
        fmt, mode, size, mtime, extra = entry
        p = os.path.join(mnt, rel)
        st = os.lstat(p)
        if stat.S_IFMT(st.st_mode) != fmt or stat.S_IMODE(st.st_mode) != mode:
            return f"type or mode of '{rel}' differs"
        if st.st_mtime_ns != mtime:
            return f"mtime of '{rel}' differs"
        if stat.S_ISREG(fmt):
            with open(p, "rb") as f:
                if st.st_size != size or hashlib.sha1(f.read()).hexdigest() != extra:
                    return f"contents of '{rel}' differ"
        elif stat.S_ISLNK(fmt) and os.readlink(p) != extra:
            return f"target of '{rel}' differs"
    return None


# ---- the campaign ------------------------------------------------------------------------

class Campaign:
    def __init__(self, archive, work):
        self.archive, self.work = archive, work
        self.orig = open(archive, "rb").read()
        self.raw, self.meta, self.size = regions(archive)
        self.case = os.path.join(work, "case.h5")
        self.failures = []
        self.stats = collections.defaultdict(collections.Counter)
        v = Run([PACK, "--verify", archive])
        if v.rc != 0:
            sys.exit(f"the original archive does not verify: {first_line(v.err)}")
        self.base_list = Run([PACK, "--list", archive]).out
        base_dir = os.path.join(work, "base")
        shutil.rmtree(base_dir, ignore_errors=True)
        x = Run([PACK, "-q", "--extract", archive, base_dir])
        if x.rc != 0:
            sys.exit(f"the original archive does not extract: {first_line(x.err)}")
        self.base = manifest(base_dir)

    def fail(self, mut, tool, why, run=None):
        detail = f" [{first_line(run.err)}]" if run is not None and run.err.strip() else ""
        self.failures.append(f"{tool} on '{mut.name}': {why}{detail}")
        self.stats[tool]["FAILED"] += 1
        if KEEP:
            os.makedirs(KEEP, exist_ok=True)
            keep = os.path.join(KEEP, re.sub(r"[^A-Za-z0-9_.-]+", "_", mut.name)[:100] + ".h5")
            if os.path.exists(self.case):
                shutil.copyfile(self.case, keep)

    def prepare(self, mut):
        for p in (self.case, self.case + ".external"):
            if os.path.exists(p):
                os.unlink(p)
        mut.apply(self.orig, self.case)

    def tools(self, mut):
        """--verify, --list, --extract on one damaged copy."""
        self.prepare(mut)
        v = Run([PACK, "--verify", self.case])
        why = v.problem()
        if why:
            return self.fail(mut, "verify", why, v)
        harmless = v.rc == 0
        if not harmless:
            why = v.refused()
            if why:
                return self.fail(mut, "verify", why, v)
            self.stats["verify"]["refused: " + category(first_line(v.err))] += 1
        else:
            self.stats["verify"]["harmless (verifies)"] += 1
        lst = Run([PACK, "--list", self.case])
        xdir = os.path.join(self.work, "x")
        shutil.rmtree(xdir, ignore_errors=True)
        x = Run([PACK, "-q", "--extract", self.case, xdir])
        for tool, run in (("list", lst), ("extract", x)):
            why = run.problem()
            if why:
                self.fail(mut, tool, why, run)
                continue
            if harmless:
                if run.rc != 0:
                    self.fail(mut, tool, f"refuses an archive that --verify accepts (exit {run.rc})", run)
                elif tool == "list" and run.out != self.base_list:
                    self.fail(mut, tool, "listing differs from the original's", run)
                elif tool == "extract" and manifest(xdir) != self.base:
                    self.fail(mut, tool, "extracted tree differs from the original", run)
                else:
                    self.stats[tool]["harmless: same result as the original"] += 1
            elif tool == "list" and run.rc == 0:
                # --list reads only the metadata: damage to the contents is not its to see.
                if run.out != self.base_list:
                    self.fail(mut, tool, "lists an archive --verify refuses, differently", run)
                else:
                    self.stats[tool]["lists (damage in the contents only)"] += 1
            else:
                why = run.refused()
                if why:
                    self.fail(mut, tool, why + " on an archive that --verify refuses", run)
                elif tool == "extract" and os.path.exists(xdir):
                    self.fail(mut, tool, "refused, but created the target directory", run)
                else:
                    self.stats[tool]["refused"] += 1

    def mount(self, mut):
        """pyfs-mount -f on one damaged copy: refuse it, or serve exactly the original."""
        self.prepare(mut)
        v = Run([PACK, "--verify", self.case])
        harmless = v.rc == 0
        mnt = os.path.join(self.work, "mnt")
        ready = os.path.join(self.work, "ready")
        os.makedirs(mnt, exist_ok=True)
        if os.path.exists(ready):
            os.unlink(ready)
        start = time.monotonic()
        p = subprocess.Popen([MOUNT, "-f", "--ready-file=" + ready, self.case, mnt],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while p.poll() is None and not os.path.exists(ready) and time.monotonic() - start < TIMEOUT:
            time.sleep(0.02)
        try:
            if p.poll() is None and not os.path.exists(ready):
                p.kill()
                p.communicate()
                return self.fail(mut, "mount", f"hung (no exit and no mount after {TIMEOUT} s)")
            if os.path.exists(ready):
                if not harmless:
                    return self.fail(mut, "mount", "MOUNTED an archive that --verify refuses: "
                                     + first_line(v.err))
                why = compare_mount(mnt, self.base)
                if why:
                    return self.fail(mut, "mount", "serves other bytes than the original: " + why)
                unmount(mnt)
                try:
                    p.wait(timeout=TIMEOUT)
                except subprocess.TimeoutExpired:
                    p.kill()
                    return self.fail(mut, "mount", "did not exit after the unmount")
                run = Run.__new__(Run)
                run.rc, run.out, run.err = p.returncode, b"", p.stderr.read()
                why = run.problem() or (f"exit status {run.rc} after the unmount" if run.rc else None)
                if why:
                    return self.fail(mut, "mount", why, run)
                self.stats["mount"]["harmless: served the original bytes"] += 1
                return None
            run = Run.__new__(Run)
            run.rc, run.out, run.err = p.returncode, p.stdout.read(), p.stderr.read()
            why = run.problem()
            if why:
                return self.fail(mut, "mount", why, run)
            if mounted(mnt):
                return self.fail(mut, "mount", "exited but left a mount", run)
            if harmless:
                return self.fail(mut, "mount", "refuses an archive that --verify accepts", run)
            why = run.refused()
            if why:
                return self.fail(mut, "mount", why, run)
            self.stats["mount"]["refused: " + category(first_line(run.err))] += 1
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            unmount(mnt)
        return None

    def mpi(self, mut):
        """mpirun -np 2 --ranks-as-nodes on a damaged copy: both ranks exit 1 and nothing is
        mounted, or (when --verify accepts the copy) both mount the original tree."""
        self.prepare(mut)
        harmless = Run([PACK, "--verify", self.case]).rc == 0
        status = os.path.join(self.work, "mpi-status")
        if os.path.exists(status):
            os.unlink(status)
        mnts = [os.path.join(self.work, f"mpi{r}") for r in (0, 1)]
        for m in mnts:
            os.makedirs(m, exist_ok=True)
        cmd = ["mpirun", "-np", "2", "sh", "-c", '"$0" --ranks-as-nodes "$1" "$2"; echo "$?" >>"$3"',
               MOUNT, self.case, os.path.join(self.work, "mpi%r"), status]
        run = Run(cmd, timeout=60)
        try:
            if run.rc is None:
                return self.fail(mut, "mpirun -np 2", "hung (killed after 60 s)")
            codes = sorted(open(status).read().split()) if os.path.exists(status) else []
            if SANITIZER.search(run.err):
                return self.fail(mut, "mpirun -np 2", "sanitizer report", run)
            if harmless:
                if codes != ["0", "0"] or not all(mounted(m) for m in mnts):
                    return self.fail(mut, "mpirun -np 2", f"rank exit statuses {codes} on an archive "
                                     "that --verify accepts, expected 0 0 and two mounts", run)
                for m in mnts:
                    why = compare_mount(m, self.base)
                    if why:
                        return self.fail(mut, "mpirun -np 2", "serves other bytes: " + why)
                self.stats["mpirun -np 2"]["harmless: served the original bytes"] += 1
                return None
            if codes != ["1", "1"]:
                return self.fail(mut, "mpirun -np 2", f"rank exit statuses {codes}, expected 1 1", run)
            if any(mounted(m) for m in mnts):
                return self.fail(mut, "mpirun -np 2", "left a mount", run)
            if not run.err.strip():
                return self.fail(mut, "mpirun -np 2", "failed without a message", run)
            self.stats["mpirun -np 2"]["refused: " + category(first_line(run.err))] += 1
        finally:
            for m in mnts:
                unmount(m)
        return None


def main():
    archive, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    c = Campaign(archive, work)
    rng = random.Random(SEED)
    print(f"archive: {c.size} bytes; raw data: " +
          ", ".join(f"{k} [{o}, +{n})" for k, (o, n) in c.raw.items()) +
          f"; {len(c.meta)} HDF5 metadata bytes; seed {SEED}", file=sys.stderr)
    weights = [("payload", 4), ("inodes", 3), ("dirents", 3), ("names", 3), ("hdf5", 6),
               ("truncate", 2), ("extend", 1)]
    start = time.monotonic()
    tool_muts = plan(rng, N_TOOLS, c.raw, c.meta, c.size, weights, STRUCTURAL)
    for mut in tool_muts:
        c.tools(mut)
    tools_seconds = time.monotonic() - start
    mount_structural = [s for s in STRUCTURAL
                        if s[0].startswith(("payload chunked", "inodes big-endian", "inodes member offset"))]
    mount_muts = plan(rng, N_MOUNTS, c.raw, c.meta, c.size,
                      [("payload", 2), ("inodes", 1), ("dirents", 1), ("names", 1), ("hdf5", 4),
                       ("truncate", 1), ("extend", 1)], mount_structural)
    start = time.monotonic()
    for mut in mount_muts:
        c.mount(mut)
    if DO_MPI:
        for name, apply in (
                ("flip payload raw byte 0 ^0x01", flip(c.raw["payload"][0], 0x01)),
                ("flip HDF5 metadata of 'payload' (object header)", None)):
            if apply is None:
                with h5py.File(archive, "r") as f:
                    where = h5py.h5o.get_info(f["payload"].id).addr + 20
                apply = flip(where, 0x10)
            c.mpi(Mutation(name, apply))
    mount_seconds = time.monotonic() - start
    for tool in ("verify", "list", "extract", "mount", "mpirun -np 2"):
        counts = c.stats[tool]
        total = sum(counts.values())
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        print(f"{tool}: {total} cases: {detail}", file=sys.stderr)
    print(f"time: tools {tools_seconds:.0f} s, mounts {mount_seconds:.0f} s", file=sys.stderr)
    for f in c.failures[:20]:
        print("FAILED: " + f, file=sys.stderr)
    sys.exit(1 if c.failures else 0)


main()
