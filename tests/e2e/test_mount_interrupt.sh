#!/bin/bash
# SIGINT or SIGTERM during the pull (tests/robust/pmpi_pause.c stops one rank
# in it): "interrupted" is printed exactly once, the exit status is non-zero,
# no pyfs-mount process and no mount is left, no lock file either. Sent to
# mpirun -np 2 (which passes it on to every rank), the paused rank being 0 or
# 1, and to a pyfs-mount run without a launcher.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"
command -v mpicc >/dev/null || skip "mpicc is missing (apt-get install libopenmpi-dev)"

src=$WORK/src
mkdir -p "$src" "$WORK/m0" "$WORK/m1"
for i in $(seq 10); do head -c 100000 /dev/urandom >"$src/f$i"; done
"$PYFS_PACK" -q --no-compile "$WORK/a.h5" "$src" || fail "pyfs-pack failed"
at_exit unmount_all "$WORK/m0" "$WORK/m1"
at_exit 'for p in $(pgrep -f -- "pyfs-mount.*$WORK/" || true); do kill -KILL "$p" 2>/dev/null || true; done'
pause_shim
# locks: lock files of pyfs-mount for m0 or m1 (named by device and inode).
locks() {
	local m ino
	for m in m0 m1; do
		ino=$(printf '%x' "$(stat -c %i "$WORK/$m")")
		find /dev/shm "${XDG_RUNTIME_DIR:-/dev/shm}" /tmp -maxdepth 1 -name "pyfs-mount.*.$ino.lock" 2>/dev/null
	done
}

# interrupt SIGNAL PAUSED_RANK LAUNCHER... -- ARGS...: run pyfs-mount ARGS under
# LAUNCHER (may be none) with PAUSED_RANK stopped in the pull, send SIGNAL to the
# launcher (or pyfs-mount), check the outcome.
interrupt() {
	local sig=$1 victim=$2 rc=0 job n launcher=()
	shift 2
	while [ "$1" != -- ]; do launcher+=("$1"); shift; done
	shift
	rm -f "$WORK/mark"
	# Stopped in the exchange, or with one node (no exchange) in its first read.
	"${launcher[@]}" env LD_PRELOAD="$preload" PYFS_FAULT_AT="$([ ${#launcher[@]} -gt 0 ] || echo read)" \
		PYFS_FAULT_RANK="$victim" PYFS_FAULT_MARK="$WORK/mark" \
		PYFS_FAULT_SECONDS=60 "$PYFS_MOUNT" "$@" </dev/null >"$WORK/out" 2>&1 &
	job=$!
	wait_until 60 test -s "$WORK/mark" || fail "rank $victim never reached the pull: $(cat "$WORK/out")"
	kill "-$sig" "$job"
	wait_until 30 eval '! pid_alive $job' || fail "SIG$sig: $* still running after 30 s"
	wait "$job" || rc=$?
	[ "$rc" -ne 0 ] || fail "SIG$sig: $*: exit 0 after an interrupted pull"
	n=$(grep -c "interrupted" "$WORK/out" || true)
	[ "$n" -eq 1 ] || fail "SIG$sig to '$*' (rank $victim paused): 'interrupted' $n times: $(head -c 500 "$WORK/out")"
	wait_until 10 eval '[ -z "$(pgrep -f -- "pyfs-mount.*$WORK/")" ]' ||
		fail "SIG$sig: pyfs-mount processes left: $(pgrep -af -- "pyfs-mount.*$WORK/")"
	for m in m0 m1; do is_mounted "$WORK/$m" && fail "SIG$sig: $m is mounted"; done
	[ -z "$(locks)" ] || fail "SIG$sig: lock files left: $(locks)"
	note "SIG$sig to ${launcher[*]:-pyfs-mount} $* (rank $victim paused): exit $rc, one 'interrupted'"
}

for sig in TERM INT; do
	for victim in 0 1; do
		interrupt "$sig" "$victim" mpirun -np 2 -- --ranks-as-nodes "$WORK/a.h5" "$WORK/m%r"
	done
	interrupt "$sig" 0 -- "$WORK/a.h5" "$WORK/m0"
	interrupt "$sig" 0 -- -f "$WORK/a.h5" "$WORK/m0"
done
