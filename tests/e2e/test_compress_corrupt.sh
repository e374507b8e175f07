#!/bin/bash
# Corrupt compressed archives: a flipped byte in a block, a truncated file, and
# block indexes that lie (a gap, an overlap, a block past the payload, a raw
# block of the wrong size; metadata checksum recomputed, so validation must
# catch them) are refused by --verify, --extract (nothing written) and
# pyfs-mount under mpirun -np 2 (every rank exits 1, nothing mounted). A block
# whose checksums were forged but that does not decompress passes the mount's
# checks: reading it gives EIO, the daemon logs it once and keeps serving.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"

src=$WORK/src
mkdir -p "$src/d" "$WORK/mnt0" "$WORK/mnt1"
echo "hello" >"$src/a.txt"
seq 1 400000 >"$src/d/big.txt"
head -c 300000 /dev/urandom >"$src/noise.bin"
"$PYFS_PACK" -q --no-compile -z --block-size=64K "$WORK/good.h5" "$src" || fail "pyfs-pack -z failed"
at_exit unmount_all "$WORK/mnt0" "$WORK/mnt1"

corrupt() { # corrupt KIND FILE: damage a copy of good.h5 in place
	cp "$WORK/good.h5" "$2"
	"${PY_ISOLATED[@]}" - "$1" "$2" <<'PYEOF'
import ctypes, os, sys
sys.path.append("/usr/lib/python3/dist-packages")
import h5py
import numpy as np
kind, path = sys.argv[1], sys.argv[2]
xxh = ctypes.CDLL("libxxhash.so.0")
xxh.XXH3_64bits.restype = ctypes.c_uint64
xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
h = lambda b: xxh.XXH3_64bits(b, len(b))
with h5py.File(path, "r") as f:
    at = {k: f[k].id.get_offset() for k in ("blocks", "payload")}
    blocks = f["blocks"][()]
    payload = f["payload"][()].tobytes()
zstd = [i for i, b in enumerate(blocks) if b["codec"] == 1]
b = zstd[len(zstd) // 2]
def write(offset, data):
    with open(path, "r+b") as out:
        out.seek(offset)
        out.write(data)
def reseal():
    write(at["blocks"], blocks.tobytes())
    with h5py.File(path, "r+") as f:
        blob = (f["inodes"][()].tobytes() + f["dirents"][()].tobytes() +
                f["names"][()].tobytes() + blocks.tobytes())
        f.attrs.modify("metadata_checksum", np.uint64(h(blob)))
if kind == "flip":
    o = int(blocks[b]["offset"]) + int(blocks[b]["stored_size"]) // 2
    write(at["payload"] + o, bytes([payload[o] ^ 0x10]))
elif kind == "truncated":
    os.truncate(path, at["payload"] + len(payload) // 2)
elif kind == "gap":
    blocks[b]["offset"] += 1
    reseal()
elif kind == "overlap":
    blocks[b]["offset"] -= 1
    reseal()
elif kind == "past":
    blocks[-1]["stored_size"] += 1000
    blocks[-1]["codec"] = 1
    reseal()
elif kind == "rawsize":
    blocks[b]["codec"] = 0
    reseal()
elif kind == "undecodable":
    # Garbage after the zstd frame header, every checksum forged to match.
    o, n = int(blocks[b]["offset"]), int(blocks[b]["stored_size"])
    bad = bytearray(payload)
    bad[o + 8:o + n] = b"\xff" * (n - 8)
    blocks[b]["checksum"] = h(bytes(bad[o:o + n]))
    write(at["payload"], bytes(bad))
    reseal()
    with h5py.File(path, "r+") as f:
        f.attrs.modify("payload_checksum", np.uint64(h(bytes(bad))))
    print(b)
PYEOF
}

# refused ARCHIVE EXPECTED: --verify, --extract and a 2-rank mount all fail with EXPECTED.
refused() {
	expect_fail "$1: --verify" "$PYFS_PACK" --verify "$1"
	expect_message "$2"
	expect_fail "$1: --extract" "$PYFS_PACK" --extract "$1" "$WORK/out"
	expect_message "$2"
	[ -z "$(ls -A "$WORK/out" 2>/dev/null)" ] || fail "$1: --extract wrote files"
	rm -rf "$WORK/out"
	rm -f "$WORK/status"
	mpirun -np 2 sh -c '"$0" --ranks-as-nodes "$1" "$2"; echo "$?" >>"$3"' \
		"$PYFS_MOUNT" "$1" "$WORK/mnt%r" "$WORK/status" >"$WORK/out.log" 2>"$WORK/err" ||
		fail "$1: mpirun failed: $(head -c 400 "$WORK/err")"
	[ "$(sort "$WORK/status" | tr '\n' ' ')" = "1 1 " ] ||
		fail "$1: rank exit statuses: $(tr '\n' ' ' <"$WORK/status"), expected 1 1"
	[ "$(grep -c . "$WORK/err")" -eq 1 ] || fail "$1: expected one message, got: $(cat "$WORK/err")"
	grep -qiF -- "$2" "$WORK/err" || fail "$1: expected '$2' in: $(cat "$WORK/err")"
	is_mounted "$WORK/mnt0" && fail "$1: mnt0 mounted"
	is_mounted "$WORK/mnt1" && fail "$1: mnt1 mounted"
	note "$(basename "$1"): $(cat "$WORK/err")"
}

"$PYFS_PACK" --verify "$WORK/good.h5" >/dev/null || fail "the intact archive does not verify"
for kind in flip truncated gap overlap past rawsize; do
	corrupt "$kind" "$WORK/$kind.h5" >/dev/null
done
refused "$WORK/flip.h5" "checksum mismatch (stored 0x"
refused "$WORK/truncated.h5" "truncated.h5"
refused "$WORK/gap.h5" "but the previous block ends at"
refused "$WORK/overlap.h5" "but the previous block ends at"
refused "$WORK/past.h5" "lies outside the payload"
refused "$WORK/rawsize.h5" "stored raw in"

# Forged checksums over a block that does not decompress: --verify still finds it.
block=$(corrupt undecodable "$WORK/undecodable.h5")
expect_fail "undecodable: --verify" "$PYFS_PACK" --verify "$WORK/undecodable.h5"
expect_message "cannot decompress block $block"
# The mount's checks read no block: it mounts, and only that block's reads fail.
"$PYFS_MOUNT" -f --ready-file="$WORK/ready" "$WORK/undecodable.h5" "$WORK/mnt0" 2>"$WORK/daemon.err" &
wait_until 30 test -e "$WORK/ready" || fail "undecodable: not mounted: $(cat "$WORK/daemon.err")"
pid=$(cat "$WORK/ready")
for _ in 1 2 3; do
	cat "$WORK/mnt0/d/big.txt" >/dev/null 2>"$WORK/cat.err" && fail "reading the broken block succeeded"
	grep -q "Input/output error" "$WORK/cat.err" || fail "broken block: $(cat "$WORK/cat.err")"
done
cmp "$src/a.txt" "$WORK/mnt0/a.txt" || fail "a.txt unreadable after the failed reads"
cmp "$src/noise.bin" "$WORK/mnt0/noise.bin" || fail "noise.bin unreadable after the failed reads"
head -c 1000 "$WORK/mnt0/d/big.txt" | cmp - <(head -c 1000 "$src/d/big.txt") ||
	fail "the start of big.txt (another block) is unreadable"
pid_alive "$pid" || fail "the daemon died"
[ "$(grep -c "cannot decompress block $block" "$WORK/daemon.err")" -eq 1 ] ||
	fail "expected the failure logged once: $(cat "$WORK/daemon.err")"
fusermount3 -u "$WORK/mnt0"
wait

# The intact archive mounts with the same command line.
mpirun -np 2 "$PYFS_MOUNT" --ranks-as-nodes "$WORK/good.h5" "$WORK/mnt%r" 2>"$WORK/err" ||
	fail "good archive: $(cat "$WORK/err")"
cmp "$src/d/big.txt" "$WORK/mnt1/d/big.txt" || fail "good archive: content differs"
exit 0
