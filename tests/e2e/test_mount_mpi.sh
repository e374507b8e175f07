#!/bin/bash
# mpirun -np 4 --ranks-as-nodes: four nodes pull the numpy/scipy archive together
# and mount it at MNT%r; every mount matches the source, and each node read only
# its own share of the payload from the archive file (its chunks; bytes counted
# by the daemon, reported by --verbose), 1.0x the payload in all.
# Then 2 ranks without --ranks-as-nodes are one node: only rank 0 mounts.
. "$(dirname "$0")/lib.sh"
need_fuse
need_debian_numpy
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"
numpy_archive

rank_mountpoints 4

mpirun -np 4 "$PYFS_MOUNT" --verbose --ranks-as-nodes "$NUMPY_ARCHIVE" "$WORK/mnt%r" \
	>"$WORK/out" 2>"$WORK/err" || fail "mpirun pyfs-mount failed: $(head -c 600 "$WORK/err")"
for m in "${mnts[@]}"; do
	is_mounted "$m" || fail "$m is not mounted"
done
for m in "${mnts[@]}"; do
	diff_trees "$NUMPY_TREE" "$m"
done
compare_trees "$NUMPY_TREE" "${mnts[3]}"

# Each of the 4 nodes reads its share of the ~120 MB payload, 1.00x in all.
check_node_shares "$WORK/err" 4 20000000 1.01
note "4 nodes read ${ratio}x the payload"
unmount_all "${mnts[@]}"

# Two ranks on one node: one mount, by rank 0.
mpirun -np 2 "$PYFS_MOUNT" "$NUMPY_ARCHIVE" "$WORK/mnt%r" 2>"$WORK/err" ||
	fail "mpirun -np 2 pyfs-mount failed: $(head -c 600 "$WORK/err")"
is_mounted "$WORK/mnt0" || fail "rank 0 did not mount"
is_mounted "$WORK/mnt1" && fail "rank 1 mounted although it shares the node with rank 0"
cmp "$NUMPY_TREE/numpy/version.py" "$WORK/mnt0/numpy/version.py" || fail "content differs"
exit 0
