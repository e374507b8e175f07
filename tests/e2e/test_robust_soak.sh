#!/bin/bash
# Soak: 16 processes import the numpy/scipy stack (numpy, scipy.linalg, .sparse,
# .special, .fft, h5py, mpi4py) from one pyfs mount in a loop for PYFS_SOAK_SECONDS
# (default 120; 3600 for the long run), each a fresh interpreter that checks where its
# modules came from and computes with them. Meanwhile 40 random files are checksummed
# against the source every 5 s (page cache dropped, so the daemon serves them). Zero
# failed imports, zero wrong bytes, and the daemon's RSS flat: the last sample at most
# 5 % + 8 MiB above the first (taken once every process has imported once). In the
# ASan build the allocator's quarantine is capped and 32 MiB more are allowed.
. "$(dirname "$0")/lib.sh"
need_fuse
need_debian_numpy
numpy_archive

seconds=${PYFS_SOAK_SECONDS:-120}
mnt=$WORK/mnt
mkdir -p "$mnt"
at_exit unmount_all "$mnt"
slack=5,8
if [[ $(ldd "$PYFS_MOUNT") == *libasan* ]]; then
	export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=16:thread_local_quarantine_size_kb=256
	slack=5,40
fi
"$PYFS_MOUNT" -f --ready-file="$WORK/ready" "$NUMPY_ARCHIVE" "$mnt" 2>"$WORK/daemon.err" &
daemon=$!
wait_until 60 test -s "$WORK/ready" || fail "pyfs-mount did not mount: $(cat "$WORK/daemon.err")"

rc=0
PYFS_SOAK_RSS_SLACK=$slack "${PY_ISOLATED[@]}" "$PYFS_SOURCE_DIR/tests/robust/soak.py" \
	"$NUMPY_TREE" "$mnt" "$daemon" "$seconds" 16 2>"$WORK/soak.log" || rc=$?
sed "s/^/$TEST_NAME: /" "$WORK/soak.log" >&2
pid_alive "$daemon" || fail "the daemon died during the soak: $(tail -c 500 "$WORK/daemon.err")"
fusermount3 -u "$mnt" || fail "cannot unmount after the soak"
status=0
wait "$daemon" || status=$?
[ "$status" -eq 0 ] || fail "pyfs-mount exited $status after the soak: $(tail -c 500 "$WORK/daemon.err")"
[ "$rc" -eq 0 ] || fail "the soak failed (see above)"
exit 0
