#!/bin/bash
# Bad mountpoints are refused with a clear message before anything is pulled
# (the archive is not even opened): missing, not a directory, not empty,
# already mounted, the same directory for two nodes of one machine, a bad one on
# one rank only. Usage errors exit 2.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"

mkdir -p "$WORK/src/d" "$WORK/mnt" "$WORK/full" "$WORK/m0" "$WORK/m1"
echo hi >"$WORK/src/d/f"
echo x >"$WORK/full/something"
touch "$WORK/plain-file"
"$PYFS_PACK" -q -p "$PY" "$WORK/a.h5" "$WORK/src" || fail "pyfs-pack failed"
at_exit unmount_all "$WORK/mnt" "$WORK/m0" "$WORK/m1"
missing=$WORK/missing.h5 # never opened when the mountpoint is bad

# expect_status STATUS DESCRIPTION CMD...: CMD exits with STATUS and says why.
expect_status() {
	local want=$1 what=$2 rc=0
	shift 2
	"$@" >"$WORK/last.out" 2>"$WORK/last.err" || rc=$?
	[ "$rc" -eq "$want" ] || fail "$what: exit status $rc, expected $want: $(head -c 400 "$WORK/last.err")"
	[ -s "$WORK/last.err" ] || fail "$what: no message"
}

expect_status 1 "missing mountpoint" "$PYFS_MOUNT" "$missing" "$WORK/nope"
expect_message "mountpoint '$WORK/nope' does not exist"
expect_status 1 "file as mountpoint" "$PYFS_MOUNT" "$missing" "$WORK/plain-file"
expect_message "is not a directory"
expect_status 1 "non-empty mountpoint" "$PYFS_MOUNT" "$missing" "$WORK/full"
expect_message "mountpoint '$WORK/full' is not empty"

"$PYFS_MOUNT" "$WORK/a.h5" "$WORK/mnt" || fail "first mount failed"
expect_status 1 "busy mountpoint" "$PYFS_MOUNT" "$missing" "$WORK/mnt"
expect_message "is already a mount point"
[ "$(cat "$WORK/mnt/d/f")" = hi ] || fail "the first mount broke"
unmount_all "$WORK/mnt"

# Two nodes of one machine on one directory: refused on the second, nothing mounted.
expect_status 1 "shared mountpoint" mpirun -np 2 "$PYFS_MOUNT" --ranks-as-nodes "$WORK/a.h5" "$WORK/mnt"
expect_message "also the mountpoint of rank 0"
is_mounted "$WORK/mnt" && fail "shared mountpoint: mounted anyway"

# Only rank 1's mountpoint is bad: both ranks fail, rank 1 is named, nothing mounted.
rmdir "$WORK/m1"
expect_status 1 "bad mountpoint on rank 1" mpirun -np 2 "$PYFS_MOUNT" --ranks-as-nodes "$missing" "$WORK/m%r"
expect_message "pyfs-mount[rank 1]: mountpoint '$WORK/m1' does not exist"
[ "$(grep -c "^pyfs-mount" "$WORK/last.err")" -eq 1 ] || fail "expected one message: $(cat "$WORK/last.err")"
is_mounted "$WORK/m0" && fail "rank 0 mounted although rank 1 failed"

# Usage errors.
expect_status 2 "no arguments" "$PYFS_MOUNT"
expect_message "expected ARCHIVE and MOUNTPOINT"
expect_status 2 "unknown option" "$PYFS_MOUNT" --bogus "$WORK/a.h5" "$WORK/mnt"
expect_message "unknown option '--bogus'"
expect_status 2 "bad -o value" "$PYFS_MOUNT" -o timeout=soon "$WORK/a.h5" "$WORK/mnt"
expect_message "invalid -o option"
expect_status 2 "busy_poll too long" "$PYFS_MOUNT" -o busy_poll=100001 "$WORK/a.h5" "$WORK/mnt"
expect_message "invalid -o busy_poll=100001: at most 100000 microseconds"
expect_status 1 "unknown -o option" "$PYFS_MOUNT" -o no_such_option "$WORK/a.h5" "$WORK/mnt"
expect_message "no_such_option"
expect_status 1 "bad % in mountpoint" "$PYFS_MOUNT" "$WORK/a.h5" "$WORK/m%x"
expect_message "invalid '%' sequence"
is_mounted "$WORK/mnt" && fail "mounted after a usage error"
help=$("$PYFS_MOUNT" --help) || fail "--help failed"
grep -q -- "--ranks-as-nodes" <<<"$help" || fail "--help does not list --ranks-as-nodes"
grep -q -- "allow_other" <<<"$help" || fail "--help does not list libfuse's options"
version=$("$PYFS_MOUNT" --version) || fail "--version failed"
grep -q "^pyfs-mount " <<<"$version" || fail "--version: $version"
exit 0
