#!/bin/bash
# Mounts racing for one mountpoint: one wins, every other one fails with an
# "already" message, and exactly one mount is left (never two stacked):
#  1. 8 pyfs-mount started together on one directory, 4 rounds;
#  2. two jobs on one node (two mpirun): the first one is stopped in the middle
#     of its pull (tests/robust/pmpi_pause.c), after its busy check; the second
#     one starts then and must fail at once, not mount now and be stacked over
#     later; the first one then mounts;
#  3. SIGTERM to the first job while it is stopped in the pull: its lock goes
#     with it, and a new mount on the same directory succeeds.
# (The same race as an unprivileged user is in test_robust_noroot.)
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"
command -v mpicc >/dev/null || skip "mpicc is missing (apt-get install libopenmpi-dev)"

src=$WORK/src mnt=$WORK/mnt
mkdir -p "$src/d" "$mnt"
for i in $(seq 20); do head -c 100000 /dev/urandom >"$src/d/f$i"; done
"$PYFS_PACK" -q --no-compile "$WORK/a.h5" "$src" || fail "pyfs-pack failed"
at_exit unmount_all "$mnt"
at_exit 'for p in $(pgrep -f -- "pyfs-mount.*$WORK/" || true); do kill -KILL "$p" 2>/dev/null || true; done'

# mounts_at DIR: how many mounts are stacked on DIR.
mounts_at() { awk -v d="$(realpath "$1")" '$5 == d { n++ } END { print n + 0 }' /proc/self/mountinfo; }

# ---- 1. many tries at once ---------------------------------------------------------------
for round in 1 2 3 4; do
	pids=()
	for i in $(seq 8); do
		"$PYFS_MOUNT" "$WORK/a.h5" "$mnt" >"$WORK/out.$i" 2>"$WORK/err.$i" &
		pids+=($!)
	done
	ok=0
	for i in $(seq 8); do
		rc=0
		wait "${pids[i - 1]}" || rc=$?
		if [ "$rc" -eq 0 ]; then
			ok=$((ok + 1))
		else
			[ "$rc" -eq 1 ] || fail "round $round: try $i exited $rc: $(cat "$WORK/err.$i")"
			grep -q "mountpoint '.*' is already" "$WORK/err.$i" ||
				fail "round $round: try $i failed without the 'already' message: $(cat "$WORK/err.$i")"
			[ "$(wc -l <"$WORK/err.$i")" -eq 1 ] || fail "round $round: more than one line: $(cat "$WORK/err.$i")"
		fi
	done
	n=$(mounts_at "$mnt")
	if [ "$ok" -ne 1 ] || [ "$n" -ne 1 ]; then
		fail "round $round: $ok of 8 tries succeeded, $n mounts on $mnt"
	fi
	cmp "$mnt/d/f1" "$src/d/f1" || fail "round $round: the mount serves wrong bytes"
	unmount_all "$mnt"
done
note "8 tries at once, 4 rounds: one mount each time, 7 'already' messages"

# ---- 2. two jobs, the first one stopped in its pull ----------------------------------------
pause_shim

# start_paused_job SECONDS: job A, stopped for SECONDS in its pull; sets $job_a.
start_paused_job() {
	rm -f "$WORK/mark"
	mpirun -np 1 env LD_PRELOAD="$preload" PYFS_FAULT_AT=read PYFS_FAULT_RANK=0 PYFS_FAULT_MARK="$WORK/mark" \
		PYFS_FAULT_SECONDS="$1" "$PYFS_MOUNT" "$WORK/a.h5" "$mnt" </dev/null >"$WORK/a.out" 2>&1 &
	job_a=$!
	wait_until 60 test -s "$WORK/mark" || fail "job A never reached its pull: $(cat "$WORK/a.out")"
}

start_paused_job 4
rc=0
mpirun -np 1 "$PYFS_MOUNT" "$WORK/a.h5" "$mnt" </dev/null >"$WORK/b.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "job B mounted while job A was pulling for the same mountpoint"
grep -q "mountpoint '.*' is already being mounted" "$WORK/b.out" ||
	fail "job B: no 'already being mounted' message: $(cat "$WORK/b.out")"
rc=0
wait "$job_a" || rc=$?
[ "$rc" -eq 0 ] || fail "job A failed after its pause: $(cat "$WORK/a.out")"
[ "$(mounts_at "$mnt")" -eq 1 ] || fail "$(mounts_at "$mnt") mounts on $mnt after the two jobs"
cmp "$mnt/d/f2" "$src/d/f2" || fail "the mount of job A serves wrong bytes"
unmount_all "$mnt"
note "a second job during the pull of the first: refused at once, one mount"

# ---- 3. the lock goes with an interrupted job ---------------------------------------------
start_paused_job 60
kill -TERM "$job_a"
rc=0
wait "$job_a" || rc=$?
[ "$rc" -ne 0 ] || fail "job A exited 0 after SIGTERM during its pull"
wait_until 10 eval '[ -z "$(pgrep -f -- "pyfs-mount.*$WORK/")" ]' || fail "job A left pyfs-mount processes"
"$PYFS_MOUNT" "$WORK/a.h5" "$mnt" 2>"$WORK/c.err" || fail "mount after the interrupted job failed: $(cat "$WORK/c.err")"
[ "$(mounts_at "$mnt")" -eq 1 ] || fail "$(mounts_at "$mnt") mounts after the interrupted job"
unmount_all "$mnt"
note "after an interrupted job the mountpoint is free again"
