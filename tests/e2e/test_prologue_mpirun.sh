#!/bin/bash
# test_prologue_mpirun.sh - pyfs-prologue and pyfs-epilogue under mpirun, with
# three ranks acting as nodes (--ranks-as-nodes, "%r" mountpoints):
# after the prologue every mountpoint serves the packed tree and python3.11
# imports numpy from it; after the epilogue nothing is mounted, no daemon is
# left and the created directories are gone; the epilogue exits 0 on mounts
# that are already gone and clears stale mounts (daemons SIGKILLed); the
# prologue clears stale mounts too, and refuses a live one without touching it.
# The PYTHONPATH it exports puts the mount in front of the job's own, and adds
# no empty entry (the current directory) when the job has none.
. "$(dirname "$0")/lib.sh"

need_fuse
need_numpy_stack # the shared archive: numpy, scipy, mpi4py, h5py
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"
[ -x "$PYFS_PACK" ] || fail "pyfs-pack not built: '$PYFS_PACK'"
[ -x "$PYFS_MOUNT" ] || fail "pyfs-mount not built: '$PYFS_MOUNT'"

N=3
MNT=$WORK/mnt # parent of the mountpoints, which the prologue creates
mkdir "$MNT"
pattern=$MNT/node-%r
mps=()
for r in $(seq 0 $((N - 1))); do mps+=("$MNT/node-$r"); done
at_exit 'unmount_all "${mps[@]}" "$MNT"/*; rm -f "/dev/shm/pyfs-$(id -u)/"*"${WORK//\//%2F}"*'
at_exit 'pkill -KILL -f -- "^[^ ]*pyfs-mount .*$WORK/" || true'

numpy_archive # numpy, scipy, mpi4py, h5py, packed once per build
ln -s "$NUMPY_ARCHIVE" "$WORK/env.h5"

prologue() { "$PYFS_PROLOGUE" --launcher mpirun "$@"; }
epilogue() { "$PYFS_EPILOGUE" --launcher mpirun "$@"; }
mounted() { grep -qF " $1 " /proc/mounts; }
daemons() { pgrep -f -- "^[^ ]*pyfs-mount .*$WORK/" || true; }

# nothing_left WHAT: no mount, no daemon, no mountpoint directory.
nothing_left() {
	local m
	for m in "${mps[@]}"; do
		! mounted "$m" || fail "$1: '$m' is still mounted"
		[ ! -e "$m" ] || fail "$1: '$m' was not removed"
	done
	[ -z "$(daemons)" ] || fail "$1: pyfs-mount still running: $(daemons | tr '\n' ' ')"
	[ -d "$MNT" ] || fail "$1: the parent directory '$MNT' was removed"
}

# kill_daemons MOUNTPOINT: SIGKILL every daemon of this test; MOUNTPOINT
# (and the others) must then be stale.
kill_daemons() {
	local pids
	pids=$(daemons)
	[ -n "$pids" ] || fail "no pyfs-mount daemon to kill"
	# shellcheck disable=SC2086 # split on purpose
	kill -KILL $pids
	for _ in $(seq 50); do [ -z "$(daemons)" ] && break; sleep 0.1; done
	stat "$1" >/dev/null 2>"$WORK/stat.err" && fail "'$1' still answers after SIGKILL"
	grep -Eq "Transport endpoint is not connected|Software caused connection abort" "$WORK/stat.err" ||
		fail "'$1' is not stale after SIGKILL: $(cat "$WORK/stat.err")"
}

# --- usage errors: exit 2, one message ---------------------------------------
rc=0; prologue >/dev/null 2>"$WORK/err" || rc=$?
[ "$rc" = 2 ] && grep -q "missing ARCHIVE" "$WORK/err" || fail "no ARCHIVE: exit $rc, $(cat "$WORK/err")"
rc=0; prologue --ranks-as-nodes "$WORK/env.h5" >/dev/null 2>"$WORK/err" || rc=$?
[ "$rc" = 2 ] && grep -q -- "--np" "$WORK/err" || fail "--ranks-as-nodes without --np: exit $rc"
rc=0; epilogue --bogus >/dev/null 2>"$WORK/err" || rc=$?
[ "$rc" = 2 ] && grep -q "unknown option '--bogus'" "$WORK/err" || fail "epilogue --bogus: exit $rc"
expect_fail "missing archive" prologue "$WORK/none.h5" "$MNT/x"
expect_message "cannot open archive"
[ ! -e "$MNT/x" ] || fail "missing archive: the mountpoint was created"

# --- prologue: three "nodes" ------------------------------------------------
t0=$(date +%s%N)
out=$(prologue --ranks-as-nodes --np $N "$WORK/env.h5" "$pattern") || fail "prologue failed"
note "prologue ($N ranks-as-nodes) $((($(date +%s%N) - t0) / 1000000)) ms"
export PYTHONPATH="$WORK/job's own" # evaluated after the prologue ran
eval "$out"
[ "$PYFS_MOUNTPOINT" = "$pattern" ] || fail "prologue exported PYFS_MOUNTPOINT='$PYFS_MOUNTPOINT'"
[ "$PYTHONPATH" = "${mps[0]}:$WORK/job's own" ] || fail "prologue exported PYTHONPATH='$PYTHONPATH'"
(cd "$NUMPY_TREE" && find . | sort) >"$WORK/tree.list"
for m in "${mps[@]}"; do
	mounted "$m" || fail "'$m' is not mounted after the prologue"
	# every entry of the tree (the mount may hold more: .pyc added by the packer)
	missing=$( (cd "$m" && find . | sort) | comm -23 "$WORK/tree.list" -)
	[ -z "$missing" ] || fail "'$m' lacks $(wc -l <<<"$missing") entries, e.g. '$(head -n 1 <<<"$missing")'"
	cmp -s "$m/numpy/__init__.py" "$NUMPY_TREE/numpy/__init__.py" || fail "'$m' serves wrong contents"
	got=$(cd / && PYTHONPATH=$m "${PY_ISOLATED[@]}" -c '
import numpy
print(numpy.__file__, int(numpy.arange(10).sum()))') || fail "python cannot import numpy from '$m'"
	[ "$got" = "$m/numpy/__init__.py 45" ] || fail "numpy from '$m': got '$got'"
done

# A second prologue on live mounts fails and leaves them alone.
expect_fail "prologue on live mounts" prologue --ranks-as-nodes --np $N "$WORK/env.h5" "$pattern"
expect_message "already a mount"
for m in "${mps[@]}"; do
	[ -f "$m/numpy/__init__.py" ] || fail "a failed prologue broke the live mount '$m'"
done

# --- epilogue (mountpoint from $PYFS_MOUNTPOINT), then again -------------------
t0=$(date +%s%N)
epilogue --ranks-as-nodes --np $N || fail "epilogue failed"
note "epilogue $((($(date +%s%N) - t0) / 1000000)) ms"
nothing_left "after the epilogue"
epilogue -q --ranks-as-nodes --np $N 2>"$WORK/err" || fail "epilogue on gone mounts: exit $?"
[ ! -s "$WORK/err" ] || fail "epilogue -q on gone mounts printed: $(cat "$WORK/err")"

# --- stale mounts: the prologue clears them, so does the epilogue -----------
eval "$(prologue -q --ranks-as-nodes --np $N "$WORK/env.h5" "$pattern")" || fail "prologue 2 failed"
kill_daemons "${mps[0]}"
eval "$(prologue --ranks-as-nodes --np $N "$WORK/env.h5" "$pattern" 2>"$WORK/err")" ||
	fail "prologue over stale mounts failed: $(cat "$WORK/err")"
grep -q "clearing stale mount" "$WORK/err" || fail "prologue did not report the stale mounts"
for m in "${mps[@]}"; do
	[ -f "$m/numpy/__init__.py" ] || fail "prologue over a stale mount: '$m' does not serve"
done
kill_daemons "${mps[2]}"
epilogue --ranks-as-nodes --np $N 2>"$WORK/err" || fail "epilogue on stale mounts: exit $?"
grep -q "clearing stale mount" "$WORK/err" || fail "epilogue did not report the stale mounts"
nothing_left "after the epilogue on stale mounts"

# --- $PBS_NODEFILE (one line per slot): one pyfs-mount per host; --local ---
unset PYFS_MOUNTPOINT PYTHONPATH
printf 'localhost\nlocalhost\n' >"$WORK/nodefile"
eval "$(PBS_NODEFILE=$WORK/nodefile prologue -q "$WORK/env.h5" "$MNT/single")" ||
	fail "single-node prologue failed"
[ "$PYTHONPATH" = "$MNT/single" ] && mounted "$MNT/single" || fail "single-node prologue did not mount"
[ "$(daemons | wc -l)" = 1 ] || fail "single-node prologue started $(daemons | wc -l) daemons"
kill_daemons "$MNT/single"
"$PYFS_EPILOGUE" --local "$MNT/single" 2>/dev/null || fail "epilogue --local on a stale mount: exit $?"
! mounted "$MNT/single" && [ ! -e "$MNT/single" ] || fail "epilogue --local left '$MNT/single'"
nothing_left "after the single-node epilogue"

# --- the README's examples for plain mpirun and PBS, as users run them -------
cat >"$WORK/check.py" <<'EOF'
import os, sys
mp = os.environ["PYTHONPATH"].split(os.pathsep)[0]
import numpy, mpi4py
from mpi4py import MPI
for m in (numpy, mpi4py, MPI):
    if not m.__file__.startswith(mp + "/"):
        sys.exit(f"{m.__name__} imported from {m.__file__}, not from {mp}")
print(f"pyfs-ok rank {MPI.COMM_WORLD.rank} of {MPI.COMM_WORLD.size}", flush=True)
EOF
examples=$PYFS_SOURCE_DIR/scripts/examples
PATH="$(dirname "$PYFS_PROLOGUE"):$(dirname "$PYFS_EPILOGUE"):$PATH"
export PATH PYFS_ARCHIVE=$WORK/env.h5 PYTHON="$PY -s -S -P" APP=$WORK/check.py
for example in mpirun pbs; do
	mp=$MNT/$example
	rc=0
	(
		unset SLURM_JOB_ID
		export PYFS_MOUNTPOINT=$mp NP=2 HOSTFILE='' PBS_NODEFILE=$WORK/nodefile
		[ "$example" = pbs ] || unset PBS_NODEFILE
		cd "$WORK" && bash "$examples/$example-job.sh"
	) >"$WORK/$example.out" 2>&1 || rc=$?
	[ "$rc" = 0 ] || { cat "$WORK/$example.out" >&2; fail "$example-job.sh: exit $rc"; }
	# (mpirun may join the lines of two ranks: count matches, not lines)
	[ "$(grep -o "pyfs-ok rank [01] of 2" "$WORK/$example.out" | sort -u | wc -l)" = 2 ] ||
		{ cat "$WORK/$example.out" >&2; fail "$example-job.sh: the program did not run twice"; }
	! mounted "$mp" && [ ! -e "$mp" ] || fail "$example-job.sh left '$mp' behind"
done
nothing_left "after the examples"

# --- --all (the admin's Epilog form), in private mount and PID namespaces so
# that the mounts and daemons of anything else on this machine are not seen ---
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
	unshare --mount --pid --fork --mount-proc bash -c '
		set -eu
		for m in a b; do
			"$PYFS_PROLOGUE" -q --launcher local "$1/env.h5" "$1/mnt/all-$m" >/dev/null
		done
		pkill -KILL -f "^[^ ]*pyfs-mount .*/all-b\$" # one stale mount
		sleep 0.3
		[ "$(grep -c " $1/mnt/all-" /proc/self/mountinfo)" = 2 ] || exit 3
		"$PYFS_EPILOGUE" -q --local --all --user "$(id -un)" || exit 4
		! grep -q " $1/mnt/all-" /proc/self/mountinfo || exit 5
		! pgrep -f "^[^ ]*pyfs-mount " >/dev/null || exit 6
		[ ! -e "$1/mnt/all-a" ] && [ ! -e "$1/mnt/all-b" ] || exit 7
	' all "$WORK" || fail "epilogue --all: check $? failed (3 mount, 4 exit, 5 mounts left, 6 daemons left, 7 dirs left)"
else
	note "epilogue --all not tested: needs root and unshare"
fi
