#!/bin/bash
# mpirun -np 4 --ranks-as-nodes with the compressed numpy/scipy archive: the
# four nodes together read the compressed payload once (1.00x of it, each its
# own slice, bytes counted by the daemons from /proc/self/io), verify its block
# checksums without decompressing, and every mount serves the source tree.
. "$(dirname "$0")/lib.sh"
need_fuse
need_numpy_stack
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"
numpy_archive_z

stored=$("${PY_ISOLATED[@]}" -c '
import sys
sys.path.append("/usr/lib/python3/dist-packages")
import h5py
with h5py.File(sys.argv[1], "r") as f:
    assert f.attrs["version"] == 2
    print(f["payload"].shape[0], int(f.attrs["raw_size"]))' "$NUMPY_ZARCHIVE") ||
	fail "cannot read the payload size of $NUMPY_ZARCHIVE"
read -r stored raw <<<"$stored"

mnts=()
for r in 0 1 2 3; do
	mkdir "$WORK/mnt$r"
	mnts+=("$WORK/mnt$r")
done
at_exit unmount_all "${mnts[@]}"
mpirun -np 4 "$PYFS_MOUNT" --verbose --ranks-as-nodes "$NUMPY_ZARCHIVE" "$WORK/mnt%r" \
	>"$WORK/out" 2>"$WORK/err" || fail "mpirun pyfs-mount failed: $(head -c 600 "$WORK/err")"
for m in "${mnts[@]}"; do
	is_mounted "$m" || fail "$m is not mounted"
	diff_trees "$NUMPY_TREE" "$m"
done

grep -E '^pyfs-mount\[rank 0\]: node [0-9]+ ' "$WORK/err" >"$WORK/nodes" || true
[ "$(wc -l <"$WORK/nodes")" -eq 4 ] || fail "expected 4 node reports: $(cat "$WORK/err")"
payload=$(sed -nE 's/.*all nodes read [0-9]+ bytes of the archive file for a ([0-9]+)-byte payload.*/\1/p' "$WORK/err")
[ "$payload" = "$stored" ] || fail "the pull moved a $payload-byte payload; the compressed one has $stored"
total_slices=0
while read -r node read slice; do
	[ "$slice" -gt $((stored / 8)) ] || fail "node $node got a $slice-byte share of a $stored-byte payload"
	[ "$read" -ge "$slice" ] || fail "node $node read $read bytes for a $slice-byte share"
	[ "$read" -le $((slice + 1048576)) ] || fail "node $node read $read bytes for a $slice-byte share"
	total_slices=$((total_slices + slice))
done < <(sed -E 's/.*node ([0-9]+) \(rank [0-9]+\): read ([0-9]+) bytes .* a ([0-9]+)-byte share of the payload.*/\1 \2 \3/' "$WORK/nodes")
[ "$total_slices" -eq "$stored" ] || fail "shares add up to $total_slices bytes, the payload has $stored"
ratio=$(sed -nE 's/.*all nodes read .*: ([0-9.]+)x the payload/\1/p' "$WORK/err")
# Beyond the payload: the metadata, read once by node 0 (a larger share of a
# payload made smaller).
awk -v r="$ratio" 'BEGIN { exit !(r >= 1.0 && r <= 1.02) }' || fail "nodes read ${ratio}x the payload"
note "4 nodes read ${ratio}x the compressed payload ($stored bytes for $raw raw)"
exit 0
