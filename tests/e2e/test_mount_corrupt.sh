#!/bin/bash
# Corrupt archives under mpirun -np 2 --ranks-as-nodes: a flipped payload byte
# (payload checksum), a file extent outside the payload (with a recomputed
# metadata checksum, so the range check must catch it), a truncated file, a
# missing file. Every rank exits 1, one clear message is printed, nothing is
# mounted and no daemon is left.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"

src=$WORK/src
mkdir -p "$src/d" "$WORK/mnt0" "$WORK/mnt1"
echo "hello" >"$src/a.txt"
head -c 3000000 /dev/urandom >"$src/d/big.bin"
"$PYFS_PACK" -q -p "$PY" "$WORK/good.h5" "$src" || fail "pyfs-pack failed"
at_exit unmount_all "$WORK/mnt0" "$WORK/mnt1"

corrupt() { # corrupt KIND FILE: damage a copy of good.h5 in place
	cp "$WORK/good.h5" "$2"
	"${PY_ISOLATED[@]}" - "$1" "$2" <<'EOF'
import ctypes, os, sys
sys.path.append("/usr/lib/python3/dist-packages")
import h5py
import numpy as np
kind, path = sys.argv[1], sys.argv[2]
with h5py.File(path, "r") as f:
    at = {k: f[k].id.get_offset() for k in ("inodes", "dirents", "names", "payload")}
    inodes = f["inodes"][()]
    payload_size = f["payload"].shape[0]
if kind == "payload":
    with open(path, "r+b") as out:
        out.seek(at["payload"] + payload_size // 2)
        b = out.read(1)
        out.seek(-1, 1)
        out.write(bytes([b[0] ^ 0x40]))
elif kind == "range":
    i = next(i for i, r in enumerate(inodes) if (r["mode"] & 0o170000) == 0o100000 and r["data_size"] > 0)
    inodes[i]["data_offset"] = payload_size - 1  # runs past the end of the payload
    with open(path, "r+b") as out:
        out.seek(at["inodes"])
        out.write(inodes.tobytes())
    xxh = ctypes.CDLL("libxxhash.so.0")
    xxh.XXH3_64bits.restype = ctypes.c_uint64
    xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    with h5py.File(path, "r+") as f:
        blob = inodes.tobytes() + f["dirents"][()].tobytes() + f["names"][()].tobytes()
        f.attrs.modify("metadata_checksum", np.uint64(xxh.XXH3_64bits(blob, len(blob))))
elif kind == "truncated":
    os.truncate(path, os.path.getsize(path) // 2)
EOF
}

# run_bad ARCHIVE EXPECTED: two ranks each record their exit status; one message.
run_bad() {
	rm -f "$WORK/status"
	mpirun -np 2 sh -c '"$0" --ranks-as-nodes "$1" "$2"; echo "$?" >>"$3"' \
		"$PYFS_MOUNT" "$1" "$WORK/mnt%r" "$WORK/status" >"$WORK/out" 2>"$WORK/err" ||
		fail "$1: mpirun failed: $(head -c 400 "$WORK/err")"
	[ "$(sort "$WORK/status" | tr '\n' ' ')" = "1 1 " ] ||
		fail "$1: rank exit statuses: $(tr '\n' ' ' <"$WORK/status"), expected 1 1"
	[ "$(grep -c . "$WORK/err")" -eq 1 ] || fail "$1: expected one message, got: $(cat "$WORK/err")"
	grep -qiF -- "$2" "$WORK/err" || fail "$1: expected '$2' in: $(cat "$WORK/err")"
	grep -qE '^pyfs-mount\[rank [0-9]+\]: ' "$WORK/err" || fail "$1: message without its rank: $(cat "$WORK/err")"
	is_mounted "$WORK/mnt0" && fail "$1: mnt0 mounted"
	is_mounted "$WORK/mnt1" && fail "$1: mnt1 mounted"
	note "$(basename "$1"): $(cat "$WORK/err")"
}

corrupt payload "$WORK/payload.h5"
run_bad "$WORK/payload.h5" "checksum"
corrupt range "$WORK/range.h5"
run_bad "$WORK/range.h5" "invalid archive"
corrupt truncated "$WORK/truncated.h5"
run_bad "$WORK/truncated.h5" "truncated.h5"
run_bad "$WORK/missing.h5" "No such file"

# The intact archive mounts with the same command line (the failures were the archives').
mpirun -np 2 "$PYFS_MOUNT" --ranks-as-nodes "$WORK/good.h5" "$WORK/mnt%r" 2>"$WORK/err" ||
	fail "good archive: $(cat "$WORK/err")"
cmp "$src/d/big.bin" "$WORK/mnt1/d/big.bin" || fail "good archive: content differs"
exit 0
