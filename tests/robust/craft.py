"""craft.py - write pyfs archives by hand (h5py), valid ones and hostile ones.

Usage: /usr/bin/python3.11 -s -S -P craft.py DIR
Writes DIR/CASE.h5 for every case below and DIR/cases.tsv: one line per case,
"CASE<TAB>EXPECTED", where EXPECTED is "valid" or a piece of the message with which
validation must refuse the archive.

The archives are built here from a tree, independently of the library's writer, laid
out as archive/pyfs_format.h says (inodes, dirents sorted per directory, names,
payload; XXH3-64 checksums through libxxhash). A hostile case changes the records
after the layout, then seals the metadata checksum again, so that validation, not
the checksum, has to catch it. The "valid" cases prove the builder right (they must
verify, extract and mount), plus trees that are valid but unusual: a symlink pointing
out of the tree, and a very deep directory chain.
"""
import ctypes
import os
import sys

sys.path.append("/usr/lib/python3/dist-packages")
import h5py  # noqa: E402
import numpy as np  # noqa: E402

S_IFDIR, S_IFREG, S_IFLNK = 0o040000, 0o100000, 0o120000

INODE = np.dtype([("data_offset", "<u8"), ("data_size", "<u8"), ("checksum", "<u8"),
                  ("mtime_sec", "<i8"), ("mtime_nsec", "<u4"), ("mode", "<u4"), ("nlink", "<u4"),
                  ("parent", "<u4"), ("first_entry", "<u4"), ("entry_count", "<u4")])
DIRENT = np.dtype([("name_offset", "<u8"), ("name_length", "<u4"), ("inode", "<u4")])

_xxh = ctypes.CDLL("libxxhash.so.0")
_xxh.XXH3_64bits.restype = ctypes.c_uint64
_xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def xxh3(data):
    return _xxh.XXH3_64bits(bytes(data), len(data))


class Tree:
    """Inodes in creation order (0 is the root); entries as (dir, name, inode)."""

    def __init__(self):
        self.nodes = [dict(mode=S_IFDIR | 0o755, data=b"")]
        self.entries = []

    def _add(self, parent, name, mode, data=b""):
        self.nodes.append(dict(mode=mode, data=data))
        self.entries.append((parent, os.fsencode(name) if isinstance(name, str) else name,
                             len(self.nodes) - 1))
        return len(self.nodes) - 1

    def dir(self, parent, name, perm=0o755):
        return self._add(parent, name, S_IFDIR | perm)

    def file(self, parent, name, data, perm=0o644):
        return self._add(parent, name, S_IFREG | perm, data)

    def symlink(self, parent, name, target):
        return self._add(parent, name, S_IFLNK | 0o777, os.fsencode(target))

    def link(self, parent, name, inode):
        self.entries.append((parent, os.fsencode(name), inode))


class Parts:
    """The four parts of an archive as numpy arrays and bytes, plus the two checksums."""

    def __init__(self, tree):
        n = len(tree.nodes)
        inodes = np.zeros(n, INODE)
        by_dir = {}
        for d, name, ino in tree.entries:
            by_dir.setdefault(d, []).append((name, ino))
        names, payload, entries = bytearray(), bytearray(), []
        for i, node in enumerate(tree.nodes):
            r = inodes[i]
            r["mode"] = node["mode"]
            r["mtime_sec"] = 1700000000 + i
            r["mtime_nsec"] = 1000 * i
            if node["mode"] & 0o170000 == S_IFDIR:
                kids = sorted(by_dir.get(i, []))
                r["first_entry"] = len(entries)
                r["entry_count"] = len(kids)
                r["nlink"] = 2
                for name, ino in kids:
                    entries.append((len(names), len(name), ino))
                    names += name
                    if tree.nodes[ino]["mode"] & 0o170000 == S_IFDIR:
                        if ino != 0:  # the root stays its own parent
                            inodes[ino]["parent"] = i
                        r["nlink"] += 1
        for i, node in enumerate(tree.nodes):
            r = inodes[i]
            kind = node["mode"] & 0o170000
            if kind == S_IFREG:
                r["data_offset"], r["data_size"] = len(payload), len(node["data"])
                payload += node["data"]
            elif kind == S_IFLNK:
                r["data_offset"], r["data_size"] = len(names), len(node["data"])
                names += node["data"]
            if kind != S_IFDIR:
                r["checksum"] = xxh3(node["data"])
                r["nlink"] = sum(1 for _, _, ino in tree.entries if ino == i)
        self.inodes = inodes
        self.dirents = np.array(entries, DIRENT) if entries else np.zeros(0, DIRENT)
        self.names = bytearray(names)
        self.payload = bytes(payload)
        self.payload_checksum = xxh3(self.payload)

    def find(self, d, name):
        """Dirent index of name in directory d."""
        r = self.inodes[d]
        for j in range(int(r["first_entry"]), int(r["first_entry"] + r["entry_count"])):
            e = self.dirents[j]
            if bytes(self.names[e["name_offset"]:e["name_offset"] + e["name_length"]]) == os.fsencode(name):
                return j
        raise KeyError(name)

    def rename(self, j, new):
        """Point dirent j at a new name appended to the names blob."""
        self.dirents[j]["name_offset"] = len(self.names)
        self.dirents[j]["name_length"] = len(new)
        self.names += new

    def write(self, path):
        meta = self.inodes.tobytes() + self.dirents.tobytes() + bytes(self.names)
        with h5py.File(path, "w", libver=("v108", "v108")) as f:
            f.create_dataset("payload", data=np.frombuffer(self.payload, np.uint8), dtype="<u1")
            f.create_dataset("inodes", data=self.inodes)
            f.create_dataset("dirents", data=self.dirents)
            f.create_dataset("names", data=np.frombuffer(bytes(self.names), np.uint8), dtype="<u1")
            f.attrs.create("format", np.bytes_(b"pyfs"))
            f.attrs.create("version", np.uint32(1))
            f.attrs.create("payload_checksum", np.uint64(self.payload_checksum))
            f.attrs.create("metadata_checksum", np.uint64(xxh3(meta)))


def sample():
    """root: a/ (hello.txt, link -> hello.txt, sub/), b.txt, c/, z.txt"""
    t = Tree()
    a = t.dir(0, "a")
    t.file(a, "hello.txt", b"hello, world\n")
    t.symlink(a, "link", "hello.txt")
    t.dir(a, "sub")
    t.file(0, "b.txt", b"bbb\n")
    t.dir(0, "c")
    t.file(0, "z.txt", b"zzz\n")
    return t, a


def case_valid():
    return Parts(sample()[0])


def renamed(dir_path, name, new):
    def make():
        t, a = sample()
        p = Parts(t)
        d = {"": 0, "a": a}[dir_path]
        p.rename(p.find(d, name), new)
        return p
    return make


def case_duplicate():
    t, a = sample()
    p = Parts(t)
    j = p.find(0, "c")
    # 'b.txt', 'b.txt': the second entry takes the name of the first.
    p.dirents[j]["name_offset"] = p.dirents[j - 1]["name_offset"]
    p.dirents[j]["name_length"] = p.dirents[j - 1]["name_length"]
    return p


def case_unsorted():
    t, a = sample()
    p = Parts(t)
    j, k = p.find(0, "b.txt"), p.find(0, "z.txt")
    p.dirents[[j, k]] = p.dirents[[k, j]]
    return p


def case_cycle():
    """x/ and y/ name each other and nothing names them from the root."""
    t = Tree()
    t.file(0, "f", b"f\n")
    x = len(t.nodes)
    t.nodes.append(dict(mode=S_IFDIR | 0o755, data=b""))
    y = len(t.nodes)
    t.nodes.append(dict(mode=S_IFDIR | 0o755, data=b""))
    t.entries.append((x, b"y", y))
    t.entries.append((y, b"x", x))
    return Parts(t)


def case_dir_hard_link():
    t, a = sample()
    t.link(0, "a2", a)
    return Parts(t)


def case_root_named():
    t, a = sample()
    t.link(a, "up", 0)
    return Parts(t)


def case_file_as_parent():
    """Directory c/ records the file b.txt as its parent."""
    t, a = sample()
    p = Parts(t)
    c = int(p.dirents[p.find(0, "c")]["inode"])
    p.inodes[c]["parent"] = int(p.dirents[p.find(0, "b.txt")]["inode"])
    return p


def case_file_with_entries():
    """The file b.txt claims the entries of directory a/ (a directory under a file)."""
    t, a = sample()
    p = Parts(t)
    b = int(p.dirents[p.find(0, "b.txt")]["inode"])
    p.inodes[b]["first_entry"] = p.inodes[a]["first_entry"]
    p.inodes[b]["entry_count"] = p.inodes[a]["entry_count"]
    return p


def case_inode_out_of_range():
    t, a = sample()
    p = Parts(t)
    p.dirents[p.find(0, "z.txt")]["inode"] = len(p.inodes) + 5
    return p


def case_symlink_out():
    """Valid: symlinks that point out of the tree ($PYFS_CRAFT_ESCAPE, an absolute path,
    default /tmp/pyfs-robust-escape) are stored and served verbatim."""
    escape = os.environ.get("PYFS_CRAFT_ESCAPE", "/tmp/pyfs-robust-escape")
    t, a = sample()
    t.symlink(0, "escape-abs", escape + "/abs")
    t.symlink(a, "escape-rel", "../../../../../../../../../.." + escape + "/rel")
    return Parts(t)


def case_deep():
    """Valid: a chain of 100000 nested directories named 'd', a file at the bottom."""
    t = Tree()
    d = 0
    for _ in range(100000):
        d = t.dir(d, "d")
    t.file(d, "bottom", b"bottom\n")
    return Parts(t)


CASES = [
    ("valid", case_valid, "valid"),
    ("dotdot", renamed("a", "hello.txt", b".."), "name '..' is reserved"),
    ("dot", renamed("a", "hello.txt", b"."), "name '.' is reserved"),
    ("slash", renamed("", "b.txt", b"../../etc/passwd"), "contains '/'"),
    ("absolute", renamed("", "b.txt", b"/etc"), "contains '/'"),
    ("nul", renamed("", "b.txt", b"b\0txt"), "contains a NUL byte"),
    ("duplicate", case_duplicate, "duplicate name"),
    ("unsorted", case_unsorted, "not sorted"),
    ("cycle", case_cycle, "cycle"),
    ("dir-hard-link", case_dir_hard_link, "named more than once"),
    ("root-named", case_root_named, "names the root directory"),
    ("file-as-parent", case_file_as_parent, "records parent"),
    ("file-with-entries", case_file_with_entries, "non-directory has directory fields"),
    ("inode-out-of-range", case_inode_out_of_range, "out of range"),
    ("symlink-out", case_symlink_out, "valid"),
    ("deep", case_deep, "valid"),
]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    wanted = set(sys.argv[2:])
    with open(os.path.join(out, "cases.tsv"), "w") as tsv:
        for name, make, expect in CASES:
            if wanted and name not in wanted:
                continue
            make().write(os.path.join(out, name + ".h5"))
            tsv.write(f"{name}\t{expect}\n")


main()
