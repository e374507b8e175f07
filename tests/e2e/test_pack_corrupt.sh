#!/bin/bash
# pyfs-pack refuses corrupt archives: truncation, a flipped byte in each
# dataset, a wrong format name or version, wrong checksums, and offsets,
# lengths and indexes out of range (with the metadata checksum recomputed, so
# the range checks themselves are reached). For each, --verify, --list and
# --extract exit non-zero (never by a signal or a sanitizer report) with a
# message naming the problem, and --extract writes nothing. --list reads only
# the metadata: damage to the contents alone (a payload byte, a payload or file
# checksum) is for --verify and --extract to find, and --list still lists.
. "$(dirname "$0")/lib.sh"
[ -x "$PY" ] || skip "$PY is missing"
"$PY" -s -c 'import h5py' 2>/dev/null || skip "h5py is missing for $PY (apt-get install python3-h5py)"

SRC=$WORK/src
mkdir -p "$SRC/pkg/sub" "$SRC/empty"
for i in 1 2 3; do head -c $((i * 5000)) /dev/urandom >"$SRC/pkg/file$i"; done
cp "$SRC/pkg/file2" "$SRC/pkg/sub/dup"
echo hello >"$SRC/hello.txt"
ln -s pkg/file1 "$SRC/link"
"$PYFS_PACK" -q --no-compile "$WORK/good.h5" "$SRC" || fail "pack failed"
"$PYFS_PACK" -q --verify "$WORK/good.h5" || fail "verify of the good archive failed"

# poke.py CASE IN OUT: copy IN to OUT and damage it as CASE says.
cat >"$WORK/poke.py" <<'PYEOF'
import ctypes, shutil, sys
import h5py, numpy as np
case, src, dst = sys.argv[1:4]
shutil.copyfile(src, dst)
xx = ctypes.CDLL("libxxhash.so.0")
xx.XXH3_64bits.restype = ctypes.c_uint64
xx.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
xxh3 = lambda b: xx.XXH3_64bits(b, len(b))
S_IFMT, S_IFREG, S_IFDIR, S_IFLNK = 0o170000, 0o100000, 0o040000, 0o120000

def flip(offset):
    with open(dst, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))

if case.startswith("flip-"):
    with h5py.File(dst, "r") as f:
        ds = f[case[5:]]
        offset, size = ds.id.get_offset(), ds.id.get_storage_size()
    flip(offset + size // 2)
    sys.exit(0)

with h5py.File(dst, "r+") as f:
    inodes, dirents, names = f["inodes"][()], f["dirents"][()], f["names"][()]
    payload = f["payload"][()]
    meta = lambda: xxh3(inodes.tobytes() + dirents.tobytes() + names.tobytes())
    assert meta() == f.attrs["metadata_checksum"], "metadata checksum not reproduced"
    assert xxh3(payload.tobytes()) == f.attrs["payload_checksum"], "payload checksum not reproduced"
    kind = lambda t: [i for i in range(len(inodes)) if inodes["mode"][i] & S_IFMT == t]
    files = [i for i in kind(S_IFREG) if inodes["data_size"][i] > 0]
    dirs, links = kind(S_IFDIR), kind(S_IFLNK)
    if case == "version":
        f.attrs.modify("version", np.uint32(3))
    elif case == "format":
        f.attrs.modify("format", np.bytes_(b"pyfz"))
    elif case == "payload-checksum":
        f.attrs.modify("payload_checksum", np.uint64(int(f.attrs["payload_checksum"]) ^ 1))
    elif case == "metadata-checksum":
        f.attrs.modify("metadata_checksum", np.uint64(int(f.attrs["metadata_checksum"]) ^ 1))
    elif case == "file-checksum":
        # A changed file behind a payload checksum that matches: only the
        # per-file checksum can tell.
        payload[inodes["data_offset"][files[0]]] ^= 0x5A
        f["payload"][...] = payload
        f.attrs.modify("payload_checksum", np.uint64(xxh3(payload.tobytes())))
    else:
        if case == "file-offset":
            inodes["data_offset"][files[0]] = len(payload) - inodes["data_size"][files[0]] + 1
        elif case == "file-size":
            inodes["data_size"][files[0]] = 1 << 63
        elif case == "offset-wraps":
            inodes["data_offset"][files[0]] = (1 << 64) - 16
        elif case == "symlink-offset":
            inodes["data_offset"][links[0]] = len(names)
        elif case == "symlink-size":
            inodes["data_size"][links[0]] = 5000
        elif case == "name-offset":
            dirents["name_offset"][0] = len(names) - 1
        elif case == "name-length":
            dirents["name_length"][0] = 256
        elif case == "dirent-inode":
            dirents["inode"][0] = len(inodes)
        elif case == "dir-entries":
            inodes["entry_count"][0] = len(dirents) + 1
        elif case == "dir-first-entry":
            inodes["first_entry"][dirs[-1]] = 0xFFFFFFFF
        elif case == "dir-cycle":
            sub = [j for j in range(len(dirents)) if dirents["inode"][j] in dirs[1:]][0]
            dirents["inode"][sub] = 0
        elif case == "nlink":
            inodes["nlink"][files[0]] += 1
        elif case == "mode":
            inodes["mode"][files[0]] = 0o010644  # a FIFO
        elif case == "nsec":
            inodes["mtime_nsec"][files[0]] = 1_000_000_000
        else:
            sys.exit("unknown case " + case)
        f["inodes"][...] = inodes
        f["dirents"][...] = dirents
        f.attrs.modify("metadata_checksum", np.uint64(meta()))
PYEOF

# check_refused CASE ARCHIVE TEXT [contents]: all three commands refuse ARCHIVE
# (with "contents": --verify and --extract refuse it, --list lists it); --verify says TEXT.
check_refused() {
	local what=$1 archive=$2 text=$3 cmd cmds=(--verify --list --extract)
	if [ "${4:-}" = contents ]; then
		cmds=(--verify --extract)
		"$PYFS_PACK" --list "$archive" >/dev/null 2>"$WORK/last.err" ||
			fail "$what: --list reads only the metadata, yet failed: $(head -c 400 "$WORK/last.err")"
	fi
	for cmd in "${cmds[@]}"; do
		local args=("$cmd" "$archive")
		[ "$cmd" != --extract ] || args+=("$WORK/out-$what")
		expect_fail "$what: pyfs-pack $cmd" "$PYFS_PACK" "${args[@]}"
		! grep -qE "Sanitizer|runtime error" "$WORK/last.err" || fail "$what: $cmd: $(head -c 600 "$WORK/last.err")"
		[ "$(wc -l <"$WORK/last.err")" -eq 1 ] || fail "$what: $cmd: not one line: $(head -c 600 "$WORK/last.err")"
		[ "$cmd" != --verify ] || expect_message "$text"
	done
	[ ! -e "$WORK/out-$what" ] || fail "$what: --extract wrote $WORK/out-$what"
}

# Truncation anywhere: in the superblock, the payload, the metadata after it.
size=$(stat -c %s "$WORK/good.h5")
payload_at=$("$PY" -s -c 'import h5py, sys; print(h5py.File(sys.argv[1])["payload"].id.get_offset())' "$WORK/good.h5")
for cut in 0 100 4096 $((payload_at + 7000)) $((size / 2)) $((size - 1)); do
	cp "$WORK/good.h5" "$WORK/cut.h5"
	truncate -s "$cut" "$WORK/cut.h5"
	check_refused "truncated-$cut" "$WORK/cut.h5" "cut.h5"
done

# A flipped byte inside each dataset.
for ds in inodes dirents names payload; do
	"$PY" -s "$WORK/poke.py" "flip-$ds" "$WORK/good.h5" "$WORK/bad.h5" || fail "cannot damage $ds"
	check_refused "flip-$ds" "$WORK/bad.h5" "checksum mismatch" "$([ "$ds" = payload ] && echo contents)"
done

while read -r what text; do
	"$PY" -s "$WORK/poke.py" "$what" "$WORK/good.h5" "$WORK/bad.h5" || fail "cannot make case $what"
	case $what in
	payload-checksum | file-checksum) check_refused "$what" "$WORK/bad.h5" "$text" contents ;;
	*) check_refused "$what" "$WORK/bad.h5" "$text" ;;
	esac
done <<'EOF'
version version 3
format not a pyfs archive
payload-checksum payload checksum mismatch
metadata-checksum metadata checksum mismatch
file-checksum checksum mismatch in 'hello.txt'
file-offset invalid archive
file-size invalid archive
offset-wraps invalid archive
symlink-offset invalid archive
symlink-size invalid archive
name-offset invalid archive
name-length invalid archive
dirent-inode invalid archive
dir-entries invalid archive
dir-first-entry invalid archive
dir-cycle invalid archive
nlink invalid archive
mode invalid archive
nsec invalid archive
EOF

# Not an archive at all.
echo "not hdf5" >"$WORK/junk.h5"
check_refused junk "$WORK/junk.h5" "not an HDF5 file"
"$PY" -s -c 'import h5py, sys; h5py.File(sys.argv[1], "w")["x"] = [1, 2, 3]' "$WORK/other.h5"
check_refused other-hdf5 "$WORK/other.h5" "not a pyfs archive"
check_refused missing "$WORK/no-such.h5" "No such file or directory"
mkdir "$WORK/dir.h5"
check_refused directory "$WORK/dir.h5" "dir.h5"
exit 0
