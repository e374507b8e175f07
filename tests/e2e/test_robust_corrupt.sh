#!/bin/bash
# Corruption campaign (tests/robust/corrupt_campaign.py) on a real archive: a small
# synthetic tree plus a piece of dist-packages, packed by pyfs-pack. Reproducible random
# byte flips in every dataset and in HDF5's own metadata, truncations, extensions and
# structural rewrites (swapped, deleted, retyped, rechunked datasets and attributes):
# pyfs-pack --verify, --list, --extract (PYFS_CORRUPT_MUTATIONS cases, default 500),
# pyfs-mount -f (PYFS_CORRUPT_MOUNTS, default 30) and mpirun -np 2 pyfs-mount (2 cases)
# never die by a signal, never hang (20 s), never print a sanitizer report, and refuse
# every copy that --verify refuses with exit status 1 and a message, creating nothing;
# a copy that still verifies (damage in padding) must list, extract and mount exactly
# like the original. PYFS_CORRUPT_SEED picks another reproducible campaign. A second,
# shorter campaign does the same to the tree packed with -z in 4 KiB blocks (the block
# index and the compressed blocks among the damaged bytes).
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"
[ -x "$PY" ] || skip "$PY is missing (apt-get install python3.11)"
"${PY_ISOLATED[@]}" -c 'import sys; sys.path.append("'"$DIST_PACKAGES"'"); import h5py' 2>/dev/null ||
	skip "h5py is missing for $PY (apt-get install python3-h5py)"
[ -d "$DIST_PACKAGES/packaging" ] || skip "$DIST_PACKAGES/packaging is missing (apt-get install python3-packaging)"

# HDF5 1.10.8 leaks inside libhdf5 on a bad object-header checksum (see the file).
export LSAN_OPTIONS=suppressions=$PYFS_SOURCE_DIR/tests/robust/lsan-hdf5.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}

tree=$WORK/tree
make_sample_tree "$tree"
head -c 20000 /dev/urandom >"$tree/a/b/random.bin"
cp -a "$DIST_PACKAGES/packaging" "$tree/"
[ -f "$DIST_PACKAGES/six.py" ] && cp -a "$DIST_PACKAGES/six.py" "$tree/"
"$PYFS_PACK" -q -p "$PY" "$WORK/good.h5" "$tree" || fail "pyfs-pack failed"

at_exit 'for d in "$WORK"/campaign/mnt "$WORK"/campaign/mpi0 "$WORK"/campaign/mpi1; do unmount_all "$d"; done'
rc=0
PYFS_CORRUPT_KEEP=${PYFS_CORRUPT_KEEP:-$PYFS_BUILD_DIR/robust-artifacts/corrupt} \
	"${PY_ISOLATED[@]}" "$PYFS_SOURCE_DIR/tests/robust/corrupt_campaign.py" "$WORK/good.h5" \
	"$WORK/campaign" 2>"$WORK/campaign.log" || rc=$?
sed "s/^/$TEST_NAME: /" "$WORK/campaign.log" >&2
[ "$rc" -eq 0 ] || fail "the corruption campaign found failures (damaged archives kept in ${PYFS_CORRUPT_KEEP:-$PYFS_BUILD_DIR/robust-artifacts/corrupt})"

"$PYFS_PACK" -q -p "$PY" -z --block-size=4K "$WORK/good-z.h5" "$tree" || fail "pyfs-pack -z failed"
PYFS_CORRUPT_KEEP=${PYFS_CORRUPT_KEEP:-$PYFS_BUILD_DIR/robust-artifacts/corrupt-z} \
	PYFS_CORRUPT_MUTATIONS=${PYFS_CORRUPT_MUTATIONS:-250} PYFS_CORRUPT_MOUNTS=${PYFS_CORRUPT_MOUNTS:-15} \
	"${PY_ISOLATED[@]}" "$PYFS_SOURCE_DIR/tests/robust/corrupt_campaign.py" "$WORK/good-z.h5" \
	"$WORK/campaign" 2>"$WORK/campaign-z.log" || rc=$?
sed "s/^/$TEST_NAME: -z: /" "$WORK/campaign-z.log" >&2
[ "$rc" -eq 0 ] || fail "the corruption campaign of the -z archive found failures (damaged archives kept in ${PYFS_CORRUPT_KEEP:-$PYFS_BUILD_DIR/robust-artifacts/corrupt-z})"
exit 0
