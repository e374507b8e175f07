#!/bin/bash
# test_cluster_slurm.sh - the README's Slurm batch script on 3 hosts of the
# test bed: slurmctld on the storage host, one slurmd per compute host, the
# archive on /shared. The script (scripts/examples/slurm-job.sh with only
# `#SBATCH --nodes=3` changed) mounts /pyenv on every host with the prologue,
# runs an mpi4py program with srun on all hosts that checks numpy.__file__
# and does an allreduce across them, and unmounts with the epilogue; then no
# mount and no pyfs process is left on any host. A second job right after
# mounts again, and a job whose program fails still leaves nothing behind.
. "$(dirname "$0")/lib.sh"

need_numpy_stack
command -v slurmctld >/dev/null && command -v munged >/dev/null ||
	skip "slurm-wlm and munge are missing (scripts/install-deps installs them)"
bed_up 3 --no-cap --slurm
stack_archive /shared/env.h5

sed 's/^#SBATCH --nodes=.*/#SBATCH --nodes=3/' "$PYFS_SOURCE_DIR/scripts/examples/slurm-job.sh" >"$WORK/job.sh"
grep -q '^#SBATCH --nodes=3$' "$WORK/job.sh" || fail "the example has no '#SBATCH --nodes=' line to change"
cat >"$WORK/check.py" <<'PYEOF'
import os, socket, sys
mp = os.environ["PYFS_MOUNTPOINT"]
import numpy, mpi4py
from mpi4py import MPI
for m in (numpy, mpi4py, MPI):
    if not m.__file__.startswith(mp + "/"):
        sys.exit(f"{socket.gethostname()}: {m.__name__} imported from {m.__file__}, not from {mp}")
comm = MPI.COMM_WORLD
names = sorted(set(comm.allgather(socket.gethostname())))
total = comm.allreduce(int(numpy.arange(comm.rank + 2).sum()))
print(f"pyfs-ok {socket.gethostname()} rank {comm.rank} of {comm.size} total {total} hosts {','.join(names)}", flush=True)
PYEOF
printf 'import sys, numpy\nprint("pyfs-fail-imported", flush=True)\nsys.exit(3)\n' >"$WORK/fail.py"

PATH="$(dirname "$PYFS_PROLOGUE"):$PATH"
export PATH PYFS_ARCHIVE=/shared/env.h5 PYTHON="${PY_ISOLATED[*]}"

# submit NAME APP: sbatch --wait the job; exit status in $job_rc, output in $WORK/NAME.out.
submit() {
	job_rc=0
	APP=$2 timeout 180 sbatch --wait --parsable -J "$1" -o "$WORK/$1.out" -D "$WORK" "$WORK/job.sh" \
		>"$WORK/$1.id" || job_rc=$?
	[ "$job_rc" != 124 ] || { cat "$WORK/$1.out" >&2; fail "$1: job not done after 180 s"; }
	wait_until 20 sh -c "[ -z \"\$(squeue -h -j $(cat "$WORK/$1.id") 2>/dev/null)\" ]" ||
		fail "$1: still in the queue"
}

for job in first second; do
	t0=$SECONDS
	submit "$job" "$WORK/check.py"
	[ "$job_rc" = 0 ] || { cat "$WORK/$job.out" >&2; fail "$job job: exit status $job_rc"; }
	# 3 hosts x 4 tasks (the example's --ntasks-per-node=4): 12 ranks, sum of
	# 0+1+...+(r+1) over r: 364.
	[ "$(grep -oE 'pyfs-ok node[1-3] rank [0-9]+ of 12 total 364 hosts node1,node2,node3' "$WORK/$job.out" | sort -u | wc -l)" = 12 ] ||
		{ cat "$WORK/$job.out" >&2; fail "$job job: not 12 ranks on 3 hosts importing from the mount"; }
	grep -q "pyfs-prologue: mounted '/shared/env.h5' on '/pyenv'" "$WORK/$job.out" ||
		{ cat "$WORK/$job.out" >&2; fail "$job job: the prologue did not report its mount"; }
	grep -q "pyfs-epilogue: '/pyenv' is unmounted" "$WORK/$job.out" ||
		{ cat "$WORK/$job.out" >&2; fail "$job job: the epilogue did not run"; }
	wait_until 15 no_pyfs_left "$job job" 2>/dev/null || no_pyfs_left "$job job"
	note "$job job: 12 ranks on 3 hosts imported from /pyenv, allreduce ok, nothing left ($((SECONDS - t0)) s)"
done

submit failing "$WORK/fail.py"
[ "$job_rc" != 0 ] || fail "a failing program gave a successful job"
grep -q pyfs-fail-imported "$WORK/failing.out" || { cat "$WORK/failing.out" >&2; fail "the failing program did not run"; }
wait_until 15 no_pyfs_left "failing job" 2>/dev/null || no_pyfs_left "failing job"
note "failing job: exit $job_rc, nothing left; ok in $SECONDS s"
