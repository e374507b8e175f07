#!/bin/bash
# Valgrind memcheck of the tools: pyfs-pack packing a small tree (byte-code compiled by
# the interpreter, which runs outside valgrind), --verify, --list and --extract of it,
# --verify of an archive with a damaged object header (an error path); pyfs-mount -f
# loading the archive, serving stat, readdir, read, readlink and the stats xattr, then
# unmounted; pyfs-mount refusing an archive with a bad payload checksum. Each must
# report no memory error and no definite leak (--error-exitcode). The suppressions in
# tests/robust/valgrind.supp cover only what Open MPI allocates in MPI_Init/MPI_Finalize
# and HDF5's own leak on a damaged object header (see that file). Skipped in the ASan
# build: valgrind cannot run AddressSanitizer binaries.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v valgrind >/dev/null || skip "valgrind is missing (apt-get install valgrind)"
if [[ $(ldd "$PYFS_PACK" "$PYFS_MOUNT") == *libasan* ]]; then
	skip "the tools are built with AddressSanitizer, which valgrind cannot run (use the normal build)"
fi
[ -x "$PY" ] || skip "$PY is missing (apt-get install python3.11)"

VG=(valgrind --error-exitcode=99 --num-callers=50 --leak-check=full
	--errors-for-leak-kinds=definite --show-leak-kinds=definite --track-fds=no
	--suppressions="$PYFS_SOURCE_DIR/tests/robust/valgrind.supp")

# vg WHAT EXPECTED_STATUS TAG CMD...: CMD under valgrind (log vg-TAG.log) exits
# EXPECTED_STATUS; 99 means valgrind found errors.
vg() {
	local what=$1 want=$2 rc=0 log=$WORK/vg-$3.log
	shift 3
	"${VG[@]}" --log-file="$log" "$@" >"$WORK/vg.out" 2>"$WORK/vg.err" || rc=$?
	[ "$rc" -ne 99 ] || fail "$what: valgrind errors: $(grep -E -A12 'Invalid|uninitialised|definitely lost|Syscall param|Mismatched|overlap' "$log" | head -40)"
	[ "$rc" -eq "$want" ] || fail "$what: exit status $rc under valgrind, expected $want: $(tail -c 400 "$WORK/vg.err")"
	note "$what: $(grep -h 'ERROR SUMMARY' "$log" | sed 's/==[0-9]*== //')"
}

src=$WORK/src
mkdir -p "$src/pkg/sub" "$src/empty"
printf 'VALUE = 42\n' >"$src/pkg/__init__.py"
printf 'def f():\n    return 1\n' >"$src/pkg/sub/mod.py"
head -c 100000 /dev/urandom >"$src/pkg/data.bin"
cp "$src/pkg/data.bin" "$src/pkg/copy.bin"
ln "$src/pkg/__init__.py" "$src/hard"
ln -s pkg/data.bin "$src/link"
vg "pack" 0 pack "$PYFS_PACK" -q -p "$PY" "$WORK/a.h5" "$src"
vg "--verify" 0 verify "$PYFS_PACK" --verify "$WORK/a.h5"
vg "--list" 0 list "$PYFS_PACK" --list "$WORK/a.h5"
vg "--extract" 0 extract "$PYFS_PACK" --extract "$WORK/a.h5" "$WORK/x"
cmp "$src/pkg/data.bin" "$WORK/x/pkg/data.bin" || fail "extract under valgrind differs"

# An error path: a damaged object header (HDF5 refuses the 'dirents' dataset).
"${PY_ISOLATED[@]}" - "$WORK/a.h5" "$WORK/bad-header.h5" <<'EOF' || fail "cannot damage the archive"
import shutil, sys
sys.path.append("/usr/lib/python3/dist-packages")
import h5py
shutil.copyfile(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r") as f:
    where = h5py.h5o.get_info(f["dirents"].id).addr + 20
    payload = f["payload"].id.get_offset()
with open(sys.argv[2], "r+b") as out:
    out.seek(where)
    b = out.read(1)
    out.seek(where)
    out.write(bytes([b[0] ^ 0x10]))
shutil.copyfile(sys.argv[1], sys.argv[2] + ".payload")
with open(sys.argv[2] + ".payload", "r+b") as out:
    out.seek(payload + 10)
    b = out.read(1)
    out.seek(payload + 10)
    out.write(bytes([b[0] ^ 0x01]))
EOF
vg "--verify of a damaged object header" 1 verify-bad "$PYFS_PACK" --verify "$WORK/bad-header.h5"

# The mount's load path and a little serving, then unmount.
mnt=$WORK/mnt
mkdir -p "$mnt"
at_exit unmount_all "$mnt"
rc=0
(
	rc=0
	"${VG[@]}" --log-file="$WORK/vg-mount.log" "$PYFS_MOUNT" -f --ready-file="$WORK/ready" \
		"$WORK/a.h5" "$mnt" 2>"$WORK/mount.err" || rc=$?
	echo "$rc" >"$WORK/mount.rc"
) &
wait_until 120 test -s "$WORK/ready" || fail "pyfs-mount under valgrind did not mount: $(cat "$WORK/mount.err")"
cmp "$src/pkg/data.bin" "$mnt/pkg/data.bin" || fail "mount under valgrind serves other bytes"
[ "$(readlink "$mnt/link")" = pkg/data.bin ] || fail "readlink under valgrind"
ls -laR "$mnt" >/dev/null || fail "readdir under valgrind"
"$PYFS_MOUNT" --stats "$mnt" | grep -q "^reads [0-9]" || fail "--stats of a mount under valgrind"
PYTHONPATH=$mnt "${PY_ISOLATED[@]}" -c 'import pkg, pkg.sub.mod; assert pkg.VALUE == 42' ||
	fail "import from the mount under valgrind"
fusermount3 -u "$mnt" || fail "cannot unmount"
wait_until 60 test -s "$WORK/mount.rc" || fail "pyfs-mount under valgrind did not exit after the unmount"
rc=$(cat "$WORK/mount.rc")
[ "$rc" -ne 99 ] || fail "pyfs-mount: valgrind errors: $(grep -E -A12 'Invalid|uninitialised|definitely lost|Syscall param' "$WORK/vg-mount.log" | head -40)"
[ "$rc" -eq 0 ] || fail "pyfs-mount exited $rc under valgrind: $(tail -c 400 "$WORK/mount.err")"
note "pyfs-mount -f, served, unmounted: $(grep -h 'ERROR SUMMARY' "$WORK/vg-mount.log" | sed 's/==[0-9]*== //')"

# The daemon refusing an archive (payload checksum): its error path, no mount.
vg "pyfs-mount of a bad payload" 1 mount-bad "$PYFS_MOUNT" -f "$WORK/bad-header.h5.payload" "$mnt"
grep -q "checksum" "$WORK/vg.err" || fail "pyfs-mount of a bad payload: no checksum message: $(cat "$WORK/vg.err")"
is_mounted "$mnt" && fail "pyfs-mount mounted a bad payload"
exit 0
