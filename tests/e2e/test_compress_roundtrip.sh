#!/bin/bash
# pyfs-pack -z on a sample tree with every kind of entry, a compressible file
# spanning many blocks, an incompressible one and a real shared library: the
# archive is format version 2 with a block index that h5py reads like every
# other dataset; it is smaller than the uncompressed one; two packs are
# byte-identical; --verify, --list and --extract work (contents, modes,
# mtimes, links, hard links); the mount serves the same tree, dlopen and mmap
# of the .so work from it, and --inflate serves the same bytes.
. "$(dirname "$0")/lib.sh"
need_fuse

SRC=$WORK/src
make_sample_tree "$SRC"
mkdir "$SRC/lib"
cp /usr/lib/x86_64-linux-gnu/libxxhash.so.0.8.1 "$SRC/lib/libxxhash.so.0"
"${PY_ISOLATED[@]}" - "$SRC" <<'PYEOF'
import os, sys
src = sys.argv[1]
with open(os.path.join(src, "text.txt"), "w") as f:
    for i in range(60000):
        f.write(f"line {i}: import numpy as np; np.linalg.inv(np.eye({i % 7 + 1}))\n")
with open(os.path.join(src, "a/noise.bin"), "wb") as f:
    f.write(os.urandom(700000))
PYEOF
touch -d '2021-03-04 05:06:07.123456789' "$SRC/text.txt"
chmod 0750 "$SRC/a/noise.bin"

"$PYFS_PACK" -q --no-compile "$WORK/raw.h5" "$SRC" || fail "uncompressed pack failed"
"$PYFS_PACK" -q --no-compile -z --block-size=64K "$WORK/z.h5" "$SRC" || fail "pack -z failed"
"$PYFS_PACK" -q --no-compile --compress=9 --block-size=64K "$WORK/z2.h5" "$SRC" ||
	fail "second pack -z failed"
cmp "$WORK/z.h5" "$WORK/z2.h5" || fail "two packs -z of the same tree differ"
# Usage errors: exit 2 with a message.
for args in "-z20" "-z0" "--compress=x" "-z --block-size=3000" "-z --block-size=2M" "--block-size=64K"; do
	rc=0
	# shellcheck disable=SC2086 # one word per option
	"$PYFS_PACK" $args "$WORK/bad.h5" "$SRC" 2>"$WORK/usage.err" || rc=$?
	[ "$rc" -eq 2 ] && [ -s "$WORK/usage.err" ] || fail "pyfs-pack $args: exit $rc, $(cat "$WORK/usage.err")"
	[ ! -e "$WORK/bad.h5" ] || fail "pyfs-pack $args wrote an archive"
done
raw=$(stat -c %s "$WORK/raw.h5")
z=$(stat -c %s "$WORK/z.h5")
[ "$z" -lt $((raw * 2 / 3)) ] || fail "compressed archive $z bytes, uncompressed $raw"
note "archive $raw bytes uncompressed, $z compressed"

# h5py reads every dataset and the new attributes; the index tiles the payload.
"${PY_ISOLATED[@]}" - "$WORK/z.h5" <<'PYEOF' || fail "h5py cannot read the compressed archive"
import sys
sys.path.append("/usr/lib/python3/dist-packages")
import h5py
with h5py.File(sys.argv[1], "r") as f:
    assert f.attrs["version"] == 2, f.attrs["version"]
    assert f.attrs["block_size"] == 65536
    for name in ("inodes", "dirents", "names", "payload", "blocks"):
        f[name][...]
    b = f["blocks"][...]
    assert b["offset"][0] == 0
    assert (b["offset"][1:] == b["offset"][:-1] + b["stored_size"][:-1]).all()
    assert b["offset"][-1] + b["stored_size"][-1] == f["payload"].shape[0]
    assert set(b["codec"]) == {0, 1}, set(b["codec"])  # raw and zstd blocks
    assert len(b) == -(-int(f.attrs["raw_size"]) // 65536)
PYEOF

"$PYFS_PACK" --verify "$WORK/z.h5" >"$WORK/verify" || fail "--verify failed"
grep -q "ok (.*compressed from" "$WORK/verify" || fail "--verify: $(cat "$WORK/verify")"
"$PYFS_PACK" --list "$WORK/raw.h5" >"$WORK/list.raw" || fail "--list of raw failed"
"$PYFS_PACK" --list "$WORK/z.h5" >"$WORK/list.z" || fail "--list of -z failed"
cmp "$WORK/list.raw" "$WORK/list.z" || fail "--list differs between the two archives"
"$PYFS_PACK" --extract "$WORK/z.h5" "$WORK/out" || fail "--extract failed"
compare_trees_strict "$SRC" "$WORK/out" || fail "extracted tree differs"

mnt=$WORK/mnt
imnt=$WORK/imnt
mkdir "$mnt" "$imnt"
at_exit unmount_all "$mnt" "$imnt"
"$PYFS_MOUNT" "$WORK/z.h5" "$mnt" || fail "pyfs-mount of -z failed"
"$PYFS_MOUNT" --inflate "$WORK/z.h5" "$imnt" || fail "pyfs-mount --inflate failed"
for m in "$mnt" "$imnt"; do
	diff_trees "$SRC" "$m"
	compare_trees "$SRC" "$m"
	[ "$(stat -c %i "$m/a/hello.txt")" = "$(stat -c %i "$m/hard")" ] || fail "$m: hard link lost"
	# dlopen and mmap of the shared library, straight from the mount.
	"${PY_ISOLATED[@]}" - "$m" "$SRC" <<'PYEOF' || fail "dlopen or mmap from $m failed"
import ctypes, mmap, sys
m, src = sys.argv[1], sys.argv[2]
lib = ctypes.CDLL(m + "/lib/libxxhash.so.0")
lib.XXH3_64bits.restype = ctypes.c_uint64
lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
assert lib.XXH3_64bits(b"", 0) == 0x2D06800538D394C2
for rel in ("lib/libxxhash.so.0", "text.txt", "a/noise.bin"):
    with open(m + "/" + rel, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[:] == open(src + "/" + rel, "rb").read(), rel
PYEOF
	# Reads at odd offsets and sizes, across block boundaries.
	"${PY_ISOLATED[@]}" - "$m/text.txt" "$SRC/text.txt" <<'PYEOF' || fail "$m: random reads differ"
import os, random, sys
a, b = open(sys.argv[1], "rb"), open(sys.argv[2], "rb")
size = os.path.getsize(sys.argv[2])
rng = random.Random(7)
for _ in range(2000):
    off, n = rng.randrange(size), rng.choice((1, 100, 4095, 65535, 65536, 65537, 300000))
    a.seek(off); b.seek(off)
    assert os.pread(a.fileno(), n, off) == os.pread(b.fileno(), n, off), (off, n)
PYEOF
done
exit 0
