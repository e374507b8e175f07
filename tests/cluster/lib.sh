# shellcheck shell=bash
# lib.sh - helpers for the multi-host tests (sourced): the end-to-end helpers
# of tests/e2e/lib.sh, plus a test bed (tests/cluster/bed) brought up by
# bed_up and torn down at exit, whatever happened.
#
# Test files live in $WORK under /var/tmp, which every host sees (like a home
# directory on a cluster); each host's /tmp and /dev/shm are its own.
export TMPDIR=/var/tmp
# shellcheck source=../e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"

BED=$PYFS_SOURCE_DIR/tests/cluster/bed
# A state directory of this test's own: tests may run one after another only
# (CTest RUN_SERIAL), but a developer's own bed in /var/tmp/pyfs-bed0 is left alone.
export PYFS_BED_STATE=/var/tmp/pyfs-bed-$TEST_NAME

# bed_up ARG...: `bed up ARG...`, skipping (77) where this machine cannot host it.
bed_up() {
	[ "$(id -u)" = 0 ] || skip "the test bed needs root (namespaces, veth links, mounts)"
	local c
	for c in unshare nsenter ip tc glusterd mount.glusterfs; do
		command -v "$c" >/dev/null || skip "'$c' is missing (scripts/install-deps installs it)"
	done
	need_fuse
	at_exit bed_down
	"$BED" up "$@" 2>"$WORK/bed-up.log" || fail "bed up $*: $(tail -n 3 "$WORK/bed-up.log")"
	cat "$WORK/bed-up.log" >&2
	# shellcheck disable=SC1090
	. "$("$BED" env >"$WORK/bed.env" && echo "$WORK/bed.env")"
	HOSTFILE=$PYFS_HOSTFILE
	# The compute hosts by name (the host file has their addresses).
	mapfile -t HOSTS < <(grep -vx storage "$PYFS_BED_STATE/names")
}

# bed_down: tear the bed down; afterwards nothing of it may be left.
bed_down() {
	"$BED" down 2>/dev/null
	! ip netns list 2>/dev/null | grep -q "^pyfsbed${PYFS_BED_ID:-0}-" || echo "FAIL: $TEST_NAME: a namespace was left" >&2
}

# on HOST CMD...: CMD on HOST.
on() { "$BED" exec "$@"; }

# on_all CMD...: CMD on every compute host, in turn; fails naming the first host that fails.
on_all() {
	local h
	for h in "${HOSTS[@]}"; do on "$h" "$@" || fail "on $h: '$*' failed"; done
}

# bed_mpirun ARG...: mpirun over the compute hosts, bounded in time.
bed_mpirun() { timeout 300 mpirun --hostfile "$HOSTFILE" "$@"; }

# stack_archive PATH: pack numpy, scipy, mpi4py and h5py (tests/e2e's numpy
# archive) into PATH on the shared file system, then remount /shared on every
# host so that no client holds its pages (cold caches, as at job start).
stack_archive() {
	numpy_archive
	on "${HOSTS[0]}" cp "$NUMPY_ARCHIVE" "$1"
	"$BED" remount
}

# server_bytes_read: bytes the storage server read for clients since `bed profile start`.
server_bytes_read() {
	"$BED" profile info | awk '/Data Read:/ { n += $3 } END { print n + 0 }'
}

# server_ops: "FOP count" lines of the server since `bed profile start`.
server_ops() {
	"$BED" profile info | awk '$NF ~ /^[A-Z]+$/ && $(NF-1) ~ /^[0-9]+$/ { c[$NF] += $(NF-1) } END { for (f in c) print f, c[f] }'
}

# no_pyfs_left WHAT: no pyfs mount and no pyfs-mount process on any host.
no_pyfs_left() {
	local h left
	for h in "${HOSTS[@]}"; do
		left=$(on "$h" awk '$3 == "fuse.pyfs" { print $2 }' /proc/self/mounts)
		[ -z "$left" ] || fail "$1: $h still has a pyfs mount on $left"
		left=$(on "$h" pgrep -x pyfs-mount || true)
		[ -z "$left" ] || fail "$1: pyfs-mount still runs on $h (pid $left)"
	done
}
