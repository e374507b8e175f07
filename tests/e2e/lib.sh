# lib.sh - shared helpers for the end-to-end test scripts (sourced, not run).
#
# Each test script: `. "$(dirname "$0")/lib.sh"`, then uses $PYFS_PACK,
# $PYFS_MOUNT (set by CTest, or found in ./build), a private $WORK directory
# removed on exit, and the helpers below. Failures print one line and exit 1;
# skip (exit 77) says why.
set -euo pipefail

: "${PYFS_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${PYFS_BUILD_DIR:=$PYFS_SOURCE_DIR/build}"
: "${PYFS_PACK:=$PYFS_BUILD_DIR/packer/pyfs-pack}"
: "${PYFS_MOUNT:=$PYFS_BUILD_DIR/fusefs/pyfs-mount}"
: "${PYFS_PROLOGUE:=$PYFS_SOURCE_DIR/scripts/pyfs-prologue}"
: "${PYFS_EPILOGUE:=$PYFS_SOURCE_DIR/scripts/pyfs-epilogue}"
export PYFS_SOURCE_DIR PYFS_BUILD_DIR PYFS_PACK PYFS_MOUNT PYFS_PROLOGUE PYFS_EPILOGUE

# The Debian interpreter and corpus used by real-environment tests.
PY=/usr/bin/python3.11
PY_ISOLATED=("$PY" -s -S -P)
DIST_PACKAGES=/usr/lib/python3/dist-packages

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

TEST_NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyfs-$TEST_NAME.XXXXXX")
_cleanups=()

# Run "$@" at exit (last registered runs first), whatever happened.
at_exit() { _cleanups=("$*" "${_cleanups[@]}"); }
_run_cleanups() {
	local rc=$?
	for c in "${_cleanups[@]}"; do eval "$c" || true; done
	rm -rf "$WORK"
	exit $rc
}
trap _run_cleanups EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $TEST_NAME: $*" >&2; exit 1; }
skip() { echo "SKIP: $TEST_NAME: $*" >&2; exit 77; }
note() { echo "$TEST_NAME: $*" >&2; }

# expect_fail DESCRIPTION CMD...: CMD must exit non-zero (not by a signal) and
# print something on stderr; its stderr is kept in $WORK/last.err.
expect_fail() {
	local what=$1 rc=0; shift
	"$@" >"$WORK/last.out" 2>"$WORK/last.err" || rc=$?
	[ "$rc" -ne 0 ] || fail "$what: expected failure, got exit 0"
	[ "$rc" -lt 128 ] || fail "$what: died by signal $((rc - 128)): $(head -c 400 "$WORK/last.err")"
	[ -s "$WORK/last.err" ] || fail "$what: failed without a message"
}

# expect_message TEXT: the last expect_fail's stderr mentions TEXT.
expect_message() {
	grep -qiF -- "$1" "$WORK/last.err" || fail "expected message containing '$1', got: $(head -c 400 "$WORK/last.err")"
}

need_fuse() {
	[ -c /dev/fuse ] || skip "/dev/fuse is missing: no FUSE on this machine"
	command -v fusermount3 >/dev/null || skip "fusermount3 is missing (apt-get install fuse3)"
}

need_debian_numpy() {
	[ -x "$PY" ] || skip "$PY is missing (apt-get install python3-numpy python3-scipy)"
	[ -d "$DIST_PACKAGES/numpy" ] || skip "numpy is not in $DIST_PACKAGES (apt-get install python3-numpy)"
	[ -d "$DIST_PACKAGES/scipy" ] || skip "scipy is not in $DIST_PACKAGES (apt-get install python3-scipy)"
}

# free_disk_gib DIR: free space of DIR's file system in whole GiB.
free_disk_gib() { df -P --block-size=1G "$1" | awk 'NR == 2 { print $4 }'; }

# unmount_quietly DIR: lazy-unmount DIR if it is a mount, ignoring errors.
unmount_quietly() {
	if mountpoint -q "$1" 2>/dev/null; then
		fusermount3 -u "$1" 2>/dev/null || fusermount3 -uz "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
	fi
}
