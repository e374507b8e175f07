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

mnts=()
for r in 0 1 2 3; do
	mkdir "$WORK/mnt$r"
	mnts+=("$WORK/mnt$r")
done
at_exit unmount_all "${mnts[@]}"

mpirun -np 4 "$PYFS_MOUNT" --verbose --ranks-as-nodes "$NUMPY_ARCHIVE" "$WORK/mnt%r" \
	>"$WORK/out" 2>"$WORK/err" || fail "mpirun pyfs-mount failed: $(head -c 600 "$WORK/err")"
for m in "${mnts[@]}"; do
	is_mounted "$m" || fail "$m is not mounted"
done
for m in "${mnts[@]}"; do
	diff_trees "$NUMPY_TREE" "$m"
done
compare_trees "$NUMPY_TREE" "${mnts[3]}"

# "node N (rank R): read B bytes of the archive file for a S-byte share of the payload"
grep -E '^pyfs-mount\[rank 0\]: node [0-9]+ ' "$WORK/err" >"$WORK/nodes" || true
[ "$(wc -l <"$WORK/nodes")" -eq 4 ] || fail "expected 4 node reports: $(cat "$WORK/err")"
payload=$(sed -nE 's/.*all nodes read [0-9]+ bytes of the archive file for a ([0-9]+)-byte payload.*/\1/p' "$WORK/err")
[ -n "$payload" ] || fail "no total in the report: $(cat "$WORK/err")"
total_slices=0
while read -r node read slice; do
	# Each node reads its share and at most 1 MiB more (the metadata on node 0):
	# never another node's chunks.
	[ "$slice" -gt 20000000 ] || fail "node $node got a $slice-byte share of a ~120 MB payload"
	[ "$read" -ge "$slice" ] || fail "node $node read $read bytes for a $slice-byte share"
	[ "$read" -le $((slice + 1048576)) ] || fail "node $node read $read bytes for a $slice-byte share"
	total_slices=$((total_slices + slice))
done < <(sed -E 's/.*node ([0-9]+) \(rank [0-9]+\): read ([0-9]+) bytes .* a ([0-9]+)-byte share of the payload.*/\1 \2 \3/' "$WORK/nodes")
[ "$total_slices" -eq "$payload" ] || fail "shares add up to $total_slices bytes, the payload has $payload"
ratio=$(sed -nE 's/.*all nodes read .*: ([0-9.]+)x the payload/\1/p' "$WORK/err")
awk -v r="$ratio" 'BEGIN { exit !(r >= 1.0 && r <= 1.01) }' || fail "nodes read ${ratio}x the payload"
note "4 nodes read ${ratio}x the payload"
unmount_all "${mnts[@]}"

# Two ranks on one node: one mount, by rank 0.
mpirun -np 2 "$PYFS_MOUNT" "$NUMPY_ARCHIVE" "$WORK/mnt%r" 2>"$WORK/err" ||
	fail "mpirun -np 2 pyfs-mount failed: $(head -c 600 "$WORK/err")"
is_mounted "$WORK/mnt0" || fail "rank 0 did not mount"
is_mounted "$WORK/mnt1" && fail "rank 1 mounted although it shares the node with rank 0"
cmp "$NUMPY_TREE/numpy/version.py" "$WORK/mnt0/numpy/version.py" || fail "content differs"
exit 0
