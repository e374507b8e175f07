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

rank_mountpoints 4
mpirun -np 4 "$PYFS_MOUNT" --verbose --ranks-as-nodes "$NUMPY_ZARCHIVE" "$WORK/mnt%r" \
	>"$WORK/out" 2>"$WORK/err" || fail "mpirun pyfs-mount failed: $(head -c 600 "$WORK/err")"
for m in "${mnts[@]}"; do
	is_mounted "$m" || fail "$m is not mounted"
	diff_trees "$NUMPY_TREE" "$m"
done

# Beyond the payload: the metadata, read once by node 0 (a larger share of a
# payload made smaller): up to 1.02x.
check_node_shares "$WORK/err" 4 $((stored / 8)) 1.02
[ "$payload" = "$stored" ] || fail "the pull moved a $payload-byte payload; the compressed one has $stored"
note "4 nodes read ${ratio}x the compressed payload ($stored bytes for $raw raw)"
exit 0
