#!/bin/bash
# test_slurm.sh - the user's Slurm recipe (scripts/examples/slurm-job.sh) under
# a real Slurm: munged, slurmctld and slurmd on this host with a private
# configuration in $WORK, jobs submitted with `sbatch --wait`.
#
# Jobs: (1) the example imports numpy and mpi4py from the mount in 2 tasks;
# (2) the same with a program that fails: the job fails, the trap still
# unmounts; (3) right after, the example mounts again; (4) a job whose daemon
# is SIGKILLed and that never runs pyfs-epilogue: Slurm's Epilog= (running
# `pyfs-epilogue --local`) clears the stale mount. After each job: no pyfs
# mount, no pyfs-mount process, the created mountpoint directory removed.
# Job (5): two srun tasks acting as two nodes pull the archive collectively.
. "$(dirname "$0")/lib.sh"

need_fuse
need_numpy_stack # the shared archive: numpy, scipy, mpi4py, h5py
[ -x "$PYFS_PACK" ] || fail "pyfs-pack not built: '$PYFS_PACK'"
[ -x "$PYFS_MOUNT" ] || fail "pyfs-mount not built: '$PYFS_MOUNT'"

# --- Slurm and munge from Debian, installed when missing ---------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
	! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
	[ "$(id -u)" = 0 ] || skip "slurm-wlm and munge are not installed and we are not root"
	command -v apt-get >/dev/null || skip "slurm-wlm and munge are not installed and there is no apt-get"
	note "installing slurm-wlm and munge with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q slurm-wlm munge >"$WORK/apt.log" 2>&1 ||
		{ apt-get update -q >>"$WORK/apt.log" 2>&1 &&
			apt-get install -y -q slurm-wlm munge >>"$WORK/apt.log" 2>&1; } ||
		skip "cannot install slurm-wlm and munge: $(tail -n 1 "$WORK/apt.log")"
fi
[ "$(id -u)" = 0 ] || skip "slurmd must run as root to start jobs"

# --- a private single-host cluster --------------------------------------------
S=$WORK/slurm
mkdir -p "$S/state" "$S/spool" "$S/log" "$S/munge"
chmod 755 "$S" "$S/munge" # munged wants its socket directory searchable
host=$(hostname -s)
export SLURM_CONF=$S/slurm.conf

mp=$WORK/mnt/pyenv # the mountpoint used by every job; created by the prologue
cgroups_ours=''     # slurmd's cgroups that this test creates

# alive PID: PID runs (a zombie, exited but not yet waited for, does not).
alive() {
	local stat
	stat=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${stat:0:1}" != Z ]
}

slurm_logs() {
	local f
	for f in "$S"/log/*; do
		[ -s "$f" ] || continue
		echo "--- $f" >&2
		tail -n 15 "$f" >&2
	done
}

# Stop everything of this cluster, whatever happened: jobs, then the daemons,
# then any slurmstepd left (they carry our SLURM_CONF), then the mount.
stop_cluster() {
	local pid
	if [ -n "${ctld_pid:-}" ]; then
		scancel --full --quiet "--user=$(id -un)" 2>/dev/null || true
		for _ in $(seq 50); do
			[ -z "$(squeue -h 2>/dev/null)" ] && break
			sleep 0.2
		done
	fi
	for pid in ${slurmd_pid:-} ${ctld_pid:-} ${munged_pid:-}; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in ${slurmd_pid:-} ${ctld_pid:-} ${munged_pid:-}; do
		for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	for pid in $(pgrep -x slurmstepd || true); do
		if tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "SLURM_CONF=$SLURM_CONF"; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for pid in $(pgrep -f -- "$WORK/" || true); do
		[ "$pid" = $$ ] || kill -KILL "$pid" 2>/dev/null || true
	done
	unmount_all "$mp" "$mp-0" "$mp-1"
	rm -f "/dev/shm/pyfs-$(id -u)/"*"${WORK//\//%2F}"*
	# slurmd's cgroups, unless they were there before us (another slurmd)
	for cg in $cgroups_ours; do
		find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}
at_exit stop_cluster

head -c 1024 /dev/urandom >"$S/munge/munge.key"
chmod 400 "$S/munge/munge.key"
munged -F -f --socket="$S/munge/munge.sock" --key-file="$S/munge/munge.key" \
	--pid-file="$S/munge/munged.pid" --seed-file="$S/munge/munged.seed" \
	--log-file="$S/log/munged.log" >"$S/log/munged.out" 2>&1 &
munged_pid=$!
for _ in $(seq 50); do [ -S "$S/munge/munge.sock" ] && break; sleep 0.1; done
[ -S "$S/munge/munge.sock" ] || { slurm_logs; fail "munged did not start"; }

# Free TCP ports for slurmctld and slurmd.
read -r ctld_port slurmd_port < <("$PY" -s -S -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')

# proctrack/cgroup (what clusters use: a step's processes cannot escape it)
# needs a cgroup v1 freezer here; without it, proctrack/linuxproc.
proctrack=proctrack/linuxproc
if [ -d /sys/fs/cgroup/freezer ] && grep -q ' /sys/fs/cgroup/freezer cgroup ' /proc/mounts; then
	proctrack=proctrack/cgroup
	for cg in /sys/fs/cgroup/*/; do
		[ -e "${cg}slurm_$host" ] || cgroups_ours+=" ${cg}slurm_$host"
	done
	cat >"$S/cgroup.conf" <<-EOF
		CgroupPlugin=cgroup/v1
		CgroupMountpoint=/sys/fs/cgroup
		ConstrainCores=no
		ConstrainRAMSpace=no
		ConstrainDevices=no
	EOF
fi

# Slurm's Epilog: the admin's safety net, on each node at job end, as root.
mkdir -p "$WORK/mnt"
cat >"$S/epilog.sh" <<EOF
#!/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin PYFS_MOUNT='$PYFS_MOUNT' '$PYFS_EPILOGUE' --local -q '$mp' >>'$S/log/epilog.log' 2>&1
exit 0 # a failing Epilog drains the node; the test checks the result itself
EOF
chmod 755 "$S/epilog.sh"

mem_mib=$(awk '/^MemTotal:/ { print int($2 / 1024) - 1024 }' /proc/meminfo)
cat >"$SLURM_CONF" <<EOF
ClusterName=pyfstest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$S/munge/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
PlugStackConfig=$S/plugstack.conf
ProctrackType=$proctrack
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=4
Epilog=$S/epilog.sh
NodeName=$host CPUs=2 RealMemory=$mem_mib State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
: >"$S/plugstack.conf"


(cd "$S" && exec slurmctld -D -i >"$S/log/slurmctld.out" 2>&1) &
ctld_pid=$!
(cd "$S" && exec slurmd -D >"$S/log/slurmd.out" 2>&1) &
slurmd_pid=$!

state=''
for _ in $(seq 150); do
	state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
	[ "$state" = idle ] && break
	alive "$ctld_pid" || { slurm_logs; fail "slurmctld exited"; }
	alive "$slurmd_pid" || { slurm_logs; fail "slurmd exited"; }
	sleep 0.2
done
[ "$state" = idle ] || { slurm_logs; fail "node '$host' is not idle after 30 s (state '$state')"; }
note "slurm up ($proctrack) in ${SECONDS} s"

# --- the archive: numpy, scipy, mpi4py, h5py (packed once per build) ---------
numpy_archive

cat >"$WORK/check.py" <<'EOF'
import os, sys
mp = os.environ["PYFS_MOUNTPOINT"]
import numpy, mpi4py
from mpi4py import MPI
for m in (numpy, mpi4py, MPI):
    if not m.__file__.startswith(mp + "/"):
        sys.exit(f"{m.__name__} imported from {m.__file__}, not from {mp}")
comm = MPI.COMM_WORLD
total = comm.allreduce(int(numpy.arange(comm.rank + 2).sum()))
print(f"pyfs-ok rank {comm.rank} of {comm.size} total {total} {numpy.__file__}", flush=True)
EOF
cat >"$WORK/fail.py" <<'EOF'
import os, sys, numpy
assert numpy.__file__.startswith(os.environ["PYFS_MOUNTPOINT"] + "/"), numpy.__file__
print("pyfs-fail-imported", flush=True)
sys.exit(3)
EOF

PATH="$(dirname "$PYFS_PROLOGUE"):$(dirname "$PYFS_EPILOGUE"):$PATH"
export PATH
export PYFS_ARCHIVE=$NUMPY_ARCHIVE PYFS_MOUNTPOINT=$mp PYTHON="$PY -s -S -P"

# submit NAME SCRIPT [APP]: sbatch --wait SCRIPT with 2 tasks; its exit status
# in $job_rc, its output in $WORK/NAME.out. Returns once Slurm is done with the
# job, Epilog included.
submit() {
	local name=$1 script=$2 id
	job_rc=0
	APP=${3:-$WORK/check.py} timeout 120 sbatch --wait --parsable -N1 -n2 --ntasks-per-node=2 \
		-J "$name" -o "$WORK/$name.out" -D "$WORK" "$script" >"$WORK/$name.id" || job_rc=$?
	[ "$job_rc" != 124 ] || { show_job "$name"; slurm_logs; fail "$name: job not done after 120 s"; }
	id=$(cat "$WORK/$name.id")
	for _ in $(seq 100); do
		[ -z "$(squeue -h -j "$id" 2>/dev/null)" ] && break
		sleep 0.1
	done
}

# nothing_left WHAT: no mount on $mp, no pyfs-mount process of this test, and
# the mountpoint directory the prologue created is gone.
nothing_left() {
	local pids
	! grep -qF " $mp " /proc/mounts || fail "$1: '$mp' is still mounted"
	pids=$(pgrep -f -- "pyfs-mount.*$WORK/" || true)
	[ -z "$pids" ] || fail "$1: pyfs-mount still running: $(ps -o pid=,args= -p "${pids//$'\n'/,}")"
	[ ! -e "$mp" ] || fail "$1: mountpoint directory '$mp' was not removed"
}

# show_job NAME: the job's output, for a failure message.
show_job() { echo "--- $WORK/$1.out" >&2; cat "$WORK/$1.out" >&2 || true; }

example=$PYFS_SOURCE_DIR/scripts/examples/slurm-job.sh

t0=$SECONDS
submit ok1 "$example"
[ "$job_rc" = 0 ] || { show_job ok1; slurm_logs; fail "job 1: exit status $job_rc"; }
for r in 0 1; do
	grep -q "pyfs-ok rank $r of 2 total 4 $mp/numpy/__init__.py" "$WORK/ok1.out" ||
		{ show_job ok1; fail "job 1: rank $r did not import numpy and mpi4py from the mount"; }
done
grep -q "pyfs-prologue: mounted '$NUMPY_ARCHIVE' on '$mp'" "$WORK/ok1.out" ||
	{ show_job ok1; fail "job 1: the prologue did not report its mount"; }
nothing_left "job 1"
note "job 1 (example, 2 tasks) ok in $((SECONDS - t0)) s"

t0=$SECONDS
submit fail "$example" "$WORK/fail.py"
[ "$job_rc" != 0 ] || { show_job fail; fail "job 2: a failing program gave a successful job"; }
grep -q "pyfs-fail-imported" "$WORK/fail.out" || { show_job fail; fail "job 2: the program did not run"; }
grep -q "pyfs-epilogue: '$mp' is unmounted" "$WORK/fail.out" ||
	{ show_job fail; fail "job 2: the trap did not run pyfs-epilogue"; }
nothing_left "job 2 (failed program)"
note "job 2 (failing program, exit $job_rc) cleaned up in $((SECONDS - t0)) s"

t0=$SECONDS
submit ok2 "$example"
[ "$job_rc" = 0 ] || { show_job ok2; slurm_logs; fail "job 3: exit status $job_rc"; }
[ "$(grep -o "pyfs-ok rank [01] of 2" "$WORK/ok2.out" | sort -u | wc -l)" = 2 ] ||
	{ show_job ok2; fail "job 3: did not mount again"; }
nothing_left "job 3"
note "job 3 (mount again) ok in $((SECONDS - t0)) s"

# Job 4: the daemon dies (SIGKILL) and the script never calls pyfs-epilogue.
cat >"$WORK/crash-job.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
eval "$(pyfs-prologue "$PYFS_ARCHIVE")"
ls "$PYFS_MOUNTPOINT/numpy/__init__.py"
pkill -KILL -f -- "^[^ ]*pyfs-mount .* $PYFS_MOUNTPOINT\$"
sleep 0.5
if ls "$PYFS_MOUNTPOINT" 2>&1; then echo "mount still alive"; exit 1; fi
echo "pyfs-crashed"
EOF
t0=$SECONDS
submit crash "$WORK/crash-job.sh"
grep -q "pyfs-crashed" "$WORK/crash.out" || { show_job crash; fail "job 4: the daemon was not killed"; }
nothing_left "job 4 (daemon killed, no pyfs-epilogue: Slurm Epilog)"
note "job 4 (dead daemon, Epilog) cleaned up in $((SECONDS - t0)) s"

# Job 5: two srun tasks as two "nodes" (--ranks-as-nodes): one collective pull
# over PMIx, each rank reads its slice, two mounts, each serving.
cat >"$WORK/ranks-job.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
eval "$(pyfs-prologue -v --ranks-as-nodes --np 2 "$PYFS_ARCHIVE" "$PYFS_MOUNTPOINT-%r")"
trap 'pyfs-epilogue --ranks-as-nodes --np 2' EXIT
srun -n2 bash -c 'PYTHONPATH=${PYFS_MOUNTPOINT//%r/$SLURM_PROCID} exec $PYTHON -c "
import numpy, os
print(\"pyfs-rank\", os.environ[\"SLURM_PROCID\"], numpy.__file__)"'
EOF
t0=$SECONDS
submit ranks "$WORK/ranks-job.sh"
[ "$job_rc" = 0 ] || { show_job ranks; fail "job 5: exit status $job_rc"; }
for r in 0 1; do
	grep -q "pyfs-rank $r $mp-$r/numpy/__init__.py" "$WORK/ranks.out" ||
		{ show_job ranks; fail "job 5: rank $r did not import from its own mount"; }
	grep -q "node $r (rank $r): read [0-9]* bytes of the archive file" "$WORK/ranks.out" ||
		{ show_job ranks; fail "job 5: rank $r did not read its slice"; }
	! grep -qF " $mp-$r " /proc/mounts || fail "job 5: '$mp-$r' is still mounted"
	[ ! -e "$mp-$r" ] || fail "job 5: '$mp-$r' was not removed"
done
note "job 5 (2 ranks as nodes, collective pull) ok in $((SECONDS - t0)) s"
note "ok in ${SECONDS} s"
