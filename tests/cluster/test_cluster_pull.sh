#!/bin/bash
# test_cluster_pull.sh - pyfs across 4 hosts of the test bed, as on a cluster:
# the archive on the GlusterFS volume (/shared), one pyfs-mount per host
# through mpirun --hostfile with nodes found by MPI (no --ranks-as-nodes),
# every host mounting the same path (/pyenv).
#
# Checks: every host's /pyenv equals the packed tree (type, mode, size, mtime,
# link target, contents) and imports numpy, scipy and mpi4py from it; the storage
# server delivered the archive once (its own counters: 1.00x the payload plus
# metadata) and every host read only its own share; two ranks per host give
# exactly one mount per host; the mpirun and PBS-style example job scripts run
# an mpi4py program across the hosts and leave nothing behind.
. "$(dirname "$0")/lib.sh"

need_numpy_stack
bed_up 4 --no-cap
stack_archive /shared/env.h5
payload=$("$PY" -c '
import h5py, sys
with h5py.File(sys.argv[1], "r") as f: print(f["payload"].shape[0])' "$NUMPY_ARCHIVE")
archive_size=$(stat -c %s "$NUMPY_ARCHIVE")

cat >"$WORK/check.py" <<'PYEOF'
import os, socket, sys
mp = os.environ.get("PYFS_MOUNTPOINT", "/pyenv")
import numpy, scipy.linalg, mpi4py
from mpi4py import MPI
for m in (numpy, scipy.linalg, mpi4py, MPI):
    if not m.__file__.startswith(mp + "/"):
        sys.exit(f"{socket.gethostname()}: {m.__name__} imported from {m.__file__}, not from {mp}")
comm = MPI.COMM_WORLD
total = comm.allreduce(int(numpy.arange(comm.rank + 2).sum()))
print(f"pyfs-ok {socket.gethostname()} rank {comm.rank} of {comm.size} total {total}", flush=True)
PYEOF

# --- the pull, one rank per host -----------------------------------------
"$BED" profile start
t0=$(date +%s.%N)
bed_mpirun --map-by ppr:1:node "$PYFS_MOUNT" -v /shared/env.h5 /pyenv >"$WORK/pull.out" 2>&1 ||
	{ cat "$WORK/pull.out" >&2; fail "mpirun pyfs-mount failed on the bed"; }
note "4-host pull: launch to mounted $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
grep -E 'pull|all nodes' "$WORK/pull.out" >&2 || true
grep -q "2 rank" "$WORK/pull.out" && fail "not one rank per host"
grep -q "4 node(s) of 4 rank(s)" "$WORK/pull.out" ||
	{ cat "$WORK/pull.out" >&2; fail "MPI did not find 4 nodes on 4 hosts"; }

served=$(server_bytes_read)
note "storage server read $served bytes for a $payload-byte payload ($archive_size-byte archive)"
[ "$served" -ge "$payload" ] || fail "the server delivered $served bytes, less than the $payload-byte payload: a client cache served some"
[ "$served" -le $((archive_size + archive_size / 100)) ] ||
	fail "the server delivered $served bytes for a $archive_size-byte archive: more than once"
# Every host read its own share of the chunks and no more (bytes it read from the
# archive, per node; node 0 also reads the metadata).
for i in 0 1 2 3; do
	line=$(grep "node $i (rank [0-9]*): read" "$WORK/pull.out") || fail "no read figure for node $i"
	read_bytes=$(sed -E 's/.*: read ([0-9]+) bytes.* ([0-9]+)-byte share of the payload.*/\1/' <<<"$line")
	slice=$(sed -E 's/.* ([0-9]+)-byte share of the payload.*/\1/' <<<"$line")
	[ "$read_bytes" -ge "$slice" ] && [ "$read_bytes" -le $((slice + slice / 50 + 4194304)) ] ||
		fail "node $i read $read_bytes bytes for its $slice-byte slice"
done

for h in "${HOSTS[@]}"; do
	[ "$(on "$h" awk '$2 == "/pyenv" && $3 == "fuse.pyfs"' /proc/self/mounts | wc -l)" = 1 ] ||
		fail "$h: /pyenv is not mounted once"
	on "$h" bash -c "$(declare -f compare_trees diff_trees fail); PY_ISOLATED=(${PY_ISOLATED[*]}); TEST_NAME=$TEST_NAME@$h; compare_trees '$NUMPY_TREE' /pyenv && diff_trees '$NUMPY_TREE' /pyenv"
	on "$h" "${PY_ISOLATED[@]}" -c '
import socket, sys
sys.path.insert(0, "/pyenv")
import numpy, scipy.linalg, mpi4py.MPI
for m in (numpy, scipy.linalg, mpi4py.MPI):
    assert m.__file__.startswith("/pyenv/"), (socket.gethostname(), m.__file__)
assert abs(float(scipy.linalg.det(numpy.eye(3) * 2)) - 8) < 1e-9' ||
		fail "$h: numpy, scipy or mpi4py do not import from /pyenv"
done
note "every host: /pyenv equals the packed tree (metadata and contents); numpy, scipy, mpi4py import from it"
bed_mpirun --map-by ppr:1:node fusermount3 -u /pyenv || fail "cannot unmount the hosts"
wait_until 10 no_pyfs_left "after unmount" 2>/dev/null || no_pyfs_left "after unmount"

# --- two ranks per host: one mount per host ------------------------------
bed_mpirun --map-by ppr:2:node "$PYFS_MOUNT" /shared/env.h5 /pyenv >"$WORK/pull2.out" 2>&1 ||
	{ cat "$WORK/pull2.out" >&2; fail "two ranks per host: mpirun pyfs-mount failed"; }
for h in "${HOSTS[@]}"; do
	[ "$(on "$h" awk '$3 == "fuse.pyfs"' /proc/self/mounts | wc -l)" = 1 ] || fail "$h: not exactly one mount with 2 ranks per host"
	[ "$(on "$h" pgrep -x pyfs-mount | wc -l)" = 1 ] || fail "$h: not exactly one daemon with 2 ranks per host"
done
bed_mpirun --map-by ppr:1:node fusermount3 -u /pyenv || fail "cannot unmount the hosts"
wait_until 10 no_pyfs_left "two ranks per host" 2>/dev/null || no_pyfs_left "two ranks per host"
note "two ranks per host: one mount and one daemon per host"

# --- the example job scripts, run on the first host as a job would -----
PATH="$(dirname "$PYFS_PROLOGUE"):$PATH"
export PATH PYFS_ARCHIVE=/shared/env.h5 APP=$WORK/check.py PYTHON="${PY_ISOLATED[*]}"
HOSTFILE=$HOSTFILE NP=4 timeout 300 "$BED" exec "${HOSTS[0]}" \
	"$PYFS_SOURCE_DIR/scripts/examples/mpirun-job.sh" >"$WORK/mpirun-job.out" 2>&1 ||
	{ cat "$WORK/mpirun-job.out" >&2; fail "scripts/examples/mpirun-job.sh failed"; }
# (lines of different ranks may be interleaved by mpirun: match, do not anchor)
[ "$(grep -o 'pyfs-ok node[1-4] rank [0-3] of 4 total 20' "$WORK/mpirun-job.out" | sort -u | wc -l)" = 4 ] &&
	[ "$(grep -o 'pyfs-ok node[1-4]' "$WORK/mpirun-job.out" | sort -u | wc -l)" = 4 ] ||
	{ cat "$WORK/mpirun-job.out" >&2; fail "mpirun-job.sh: not 4 hosts importing from the mount"; }
no_pyfs_left "after mpirun-job.sh"
note "mpirun-job.sh: 4 hosts imported from the mount, allreduce ok, nothing left"

awk '{ print $1 }' "$HOSTFILE" >"$WORK/pbs_nodefile"
(cd "$WORK" && PBS_NODEFILE=$WORK/pbs_nodefile PBS_O_WORKDIR=$WORK timeout 300 \
	"$BED" exec "${HOSTS[0]}" "$PYFS_SOURCE_DIR/scripts/examples/pbs-job.sh") >"$WORK/pbs-job.out" 2>&1 ||
	{ cat "$WORK/pbs-job.out" >&2; fail "scripts/examples/pbs-job.sh failed"; }
[ "$(grep -oE 'pyfs-ok node[1-4] rank [0-9]+ of [0-9]+' "$WORK/pbs-job.out" | cut -d' ' -f2 | sort -u | wc -l)" = 4 ] ||
	{ cat "$WORK/pbs-job.out" >&2; fail "pbs-job.sh: not 4 hosts importing from the mount"; }
no_pyfs_left "after pbs-job.sh"
note "pbs-job.sh: 4 hosts imported from the mount, nothing left; ok in $SECONDS s"
