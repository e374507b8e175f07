#!/bin/bash
# Names and trees that would escape or confuse a tree, in archives written by hand
# (tests/robust/craft.py) with a correct metadata checksum, so that validation must
# catch them: "..", ".", "/" and NUL inside names, duplicates and disorder in one
# directory, a cycle of directories, a directory hard link, the root named as a child,
# a directory whose parent is a file, a file holding directory entries, an entry naming
# an inode out of range. pyfs-pack --verify, --list, --extract and pyfs-mount each
# refuse every one with exit status 1 and a message naming the problem, create
# nothing, mount nothing. The hand-made valid archives (the builder's proof, symlinks
# pointing out of the tree, a chain of 100000 nested directories) are served as they
# are: symlinks verbatim and never followed when extracting, deep trees without a
# crash (a tool may refuse a tree deeper than it supports, with a message).
. "$(dirname "$0")/lib.sh"
need_fuse
[ -x "$PY" ] || skip "$PY is missing (apt-get install python3.11)"
"${PY_ISOLATED[@]}" -c 'import sys; sys.path.append("'"$DIST_PACKAGES"'"); import h5py' 2>/dev/null ||
	skip "h5py is missing for $PY (apt-get install python3-h5py)"

export LSAN_OPTIONS=suppressions=$PYFS_SOURCE_DIR/tests/robust/lsan-hdf5.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}
# Where the symlinks of symlink-out.h5 point: outside $WORK, and nothing may create it.
escape=$WORK.escape
at_exit rm -rf "$escape"
PYFS_CRAFT_ESCAPE=$escape "${PY_ISOLATED[@]}" "$PYFS_SOURCE_DIR/tests/robust/craft.py" "$WORK/a" ||
	fail "craft.py failed"
mnt=$WORK/mnt
mkdir -p "$mnt"
at_exit unmount_all "$mnt"

# run_tool WHAT CMD...: CMD must not die by a signal, hang or report a sanitizer error;
# sets $rc; stderr in $WORK/last.err.
run_tool() {
	local what=$1
	shift
	rc=0
	timeout -s KILL 60 "$@" >"$WORK/last.out" 2>"$WORK/last.err" || rc=$?
	[ "$rc" -ne 137 ] || fail "$what: hung (killed after 60 s) or died by SIGKILL"
	[ "$rc" -lt 128 ] || fail "$what: died by signal $((rc - 128)): $(tail -c 300 "$WORK/last.err")"
	! grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$WORK/last.err" ||
		fail "$what: sanitizer report: $(grep -m1 -E 'Sanitizer|runtime error' "$WORK/last.err")"
}

# refused WHAT EXPECTED: the last run_tool exited 1 with a message containing EXPECTED.
refused() {
	[ "$rc" -eq 1 ] || fail "$1: exit status $rc, expected 1 (refusal): $(head -c 300 "$WORK/last.err")"
	grep -qF -- "$2" "$WORK/last.err" || fail "$1: expected a message with '$2', got: $(head -c 300 "$WORK/last.err")"
}

# mount_case ARCHIVE: pyfs-mount -f; sets $rc; 0 with the daemon serving ($fg_pid), or
# the daemon's exit status with nothing mounted.
mount_case() {
	rm -f "$WORK/ready"
	"$PYFS_MOUNT" -f --ready-file="$WORK/ready" "$1" "$mnt" >"$WORK/last.out" 2>"$WORK/last.err" &
	fg_pid=$!
	wait_until 60 eval '[ -s "$WORK/ready" ] || ! pid_alive $fg_pid' ||
		{ kill -KILL "$fg_pid"; fail "$(basename "$1"): pyfs-mount neither mounted nor exited in 60 s"; }
	if [ -s "$WORK/ready" ]; then
		rc=0
		return
	fi
	rc=0
	wait "$fg_pid" || rc=$?
	[ "$rc" -lt 128 ] || fail "$(basename "$1"): pyfs-mount died by signal $((rc - 128)): $(tail -c 300 "$WORK/last.err")"
	! grep -qE 'AddressSanitizer|runtime error:' "$WORK/last.err" ||
		fail "$(basename "$1"): pyfs-mount sanitizer report: $(grep -m1 -E 'Sanitizer|runtime error' "$WORK/last.err")"
	is_mounted "$mnt" && fail "$(basename "$1"): pyfs-mount exited $rc but left a mount"
	return 0
}

unmount_case() {
	fusermount3 -u "$mnt" || fail "cannot unmount $mnt"
	local s=0
	wait "$fg_pid" || s=$?
	[ "$s" -eq 0 ] || fail "pyfs-mount exited $s after the unmount: $(tail -c 300 "$WORK/last.err")"
}

refused_cases=0
while IFS=$'\t' read -r name expect; do
	a=$WORK/a/$name.h5
	x=$WORK/x-$name
	case $expect in
	valid)
		continue ;;
	esac
	run_tool "$name: --verify" "$PYFS_PACK" --verify "$a"
	refused "$name: --verify" "$expect"
	run_tool "$name: --list" "$PYFS_PACK" --list "$a"
	refused "$name: --list" "$expect"
	[ ! -s "$WORK/last.out" ] || fail "$name: --list printed entries of a refused archive"
	run_tool "$name: --extract" "$PYFS_PACK" --extract "$a" "$x"
	refused "$name: --extract" "$expect"
	[ ! -e "$x" ] || fail "$name: --extract created '$x' for a refused archive"
	mount_case "$a"
	[ "$rc" -ne 0 ] || { unmount_case; fail "$name: pyfs-mount MOUNTED a hostile archive"; }
	refused "$name: pyfs-mount" "$expect"
	refused_cases=$((refused_cases + 1))
done <"$WORK/a/cases.tsv"
[ "$refused_cases" -ge 13 ] || fail "only $refused_cases hostile cases ran"
note "$refused_cases hostile archives refused by --verify, --list, --extract and pyfs-mount"

# The builder's own valid archive: everything works (proves the hostile cases are
# refused for their defect, not for the way they were written).
run_tool "valid: --verify" "$PYFS_PACK" --verify "$WORK/a/valid.h5"
[ "$rc" -eq 0 ] || fail "the hand-made valid archive does not verify: $(cat "$WORK/last.err")"
run_tool "valid: --extract" "$PYFS_PACK" --extract "$WORK/a/valid.h5" "$WORK/x-valid"
[ "$rc" -eq 0 ] && [ "$(cat "$WORK/x-valid/a/hello.txt")" = "hello, world" ] ||
	fail "the hand-made valid archive does not extract: $(cat "$WORK/last.err")"
mount_case "$WORK/a/valid.h5"
[ "$rc" -eq 0 ] || fail "the hand-made valid archive does not mount: $(cat "$WORK/last.err")"
[ "$(readlink "$mnt/a/link")" = hello.txt ] && [ "$(cat "$mnt/a/hello.txt")" = "hello, world" ] ||
	fail "the hand-made valid archive is not served right"
unmount_case

# Symlinks that point out of the tree: stored and served verbatim, never followed.
a=$WORK/a/symlink-out.h5
run_tool "symlink-out: --extract" "$PYFS_PACK" --extract "$a" "$WORK/x-symlink-out"
[ "$rc" -eq 0 ] || fail "symlink-out: --extract failed: $(cat "$WORK/last.err")"
[ "$(readlink "$WORK/x-symlink-out/escape-abs")" = "$escape/abs" ] &&
	[ "$(readlink "$WORK/x-symlink-out/a/escape-rel")" = "../../../../../../../../../..$escape/rel" ] ||
	fail "symlink-out: --extract changed the link targets"
[ ! -e "$escape" ] || fail "symlink-out: --extract wrote outside its directory ($escape exists)"
mount_case "$a"
[ "$rc" -eq 0 ] || fail "symlink-out: pyfs-mount failed: $(cat "$WORK/last.err")"
[ "$(readlink "$mnt/escape-abs")" = "$escape/abs" ] || fail "symlink-out: mount serves another target"
[ ! -e "$escape" ] || fail "symlink-out: serving created $escape"
unmount_case

# 100000 nested directories: valid, but deeper than any path. No tool may crash.
a=$WORK/a/deep.h5
run_tool "deep: --verify" "$PYFS_PACK" --verify "$a"
deep_valid=$rc
[ "$rc" -eq 0 ] || refused "deep: --verify" "deep"
run_tool "deep: --list" "$PYFS_PACK" --list "$a"
[ "$rc" -eq 0 ] || refused "deep: --list" ""
note "deep: --verify exit $deep_valid, --list exit $rc"
run_tool "deep: --extract" "$PYFS_PACK" --extract "$a" "$WORK/x-deep"
[ "$rc" -eq 0 ] || refused "deep: --extract" ""
note "deep: --extract exit $rc: $(head -c 200 "$WORK/last.err")"
rm -rf "$WORK/x-deep"
mount_case "$a"
if [ "$deep_valid" -eq 0 ]; then
	[ "$rc" -eq 0 ] || fail "deep: pyfs-mount refuses an archive that --verify accepts: $(cat "$WORK/last.err")"
	# Walk all the way down with relative opens (no path is that short).
	"${PY_ISOLATED[@]}" - "$mnt" <<'EOF' || fail "deep: cannot walk the mount down to the bottom"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
depth = 0
while True:
    try:
        new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    except FileNotFoundError:
        break
    os.close(fd)
    fd, depth = new, depth + 1
data = os.read(os.open("bottom", os.O_RDONLY, dir_fd=fd), 100)
assert depth == 100000 and data == b"bottom\n", (depth, data)
EOF
	unmount_case
else
	[ "$rc" -ne 0 ] || { unmount_case; fail "deep: pyfs-mount mounts what --verify refuses"; }
fi
exit 0
