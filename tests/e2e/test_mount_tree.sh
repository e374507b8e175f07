#!/bin/bash
# pyfs-mount, default (background) mode, on the Debian numpy/scipy archive: the
# command returns only once the mount is usable; the tree matches its source
# (diff -r, then type, mode, size, mtime in ns and link target of every entry);
# statfs reports the archive's totals; the counters are readable as an xattr of
# the live mount; fusermount3 -u ends the daemon.
. "$(dirname "$0")/lib.sh"
need_fuse
need_debian_numpy
numpy_archive

mnt=$WORK/mnt
mkdir "$mnt"
at_exit unmount_all "$mnt"

"$PYFS_MOUNT" --ready-file="$WORK/ready" "$NUMPY_ARCHIVE" "$mnt" || fail "pyfs-mount failed"
# Ready when the command returns: no waiting, no retry.
stat "$mnt/numpy/__init__.py" >/dev/null || fail "mount not usable right after pyfs-mount returned"
pid=$(cat "$WORK/ready")
pid_alive "$pid" || fail "the daemon (pid $pid) is not running"
grep -q " $(realpath "$mnt") .* - fuse.pyfs pyfs " /proc/self/mountinfo ||
	fail "mount not listed as fuse.pyfs: $(grep "$mnt" /proc/self/mountinfo)"
grep -E " $(realpath "$mnt") " /proc/self/mountinfo | grep -q "ro,nosuid,nodev" ||
	fail "mount is not ro,nosuid,nodev"

diff_trees "$NUMPY_TREE" "$mnt"
compare_trees "$NUMPY_TREE" "$mnt"
[ -d "$mnt/empty-dir" ] && [ -z "$(ls -A "$mnt/empty-dir")" ] || fail "empty-dir is not an empty directory"
[ "$(readlink "$mnt/link-dangling")" = no/such/target ] || fail "dangling symlink target differs"

# Owner: the mounting user.
[ "$(stat -c %u:%g "$mnt/numpy/__init__.py")" = "$(id -u):$(id -g)" ] || fail "owner is not the mounting user"

# statfs: the archive's totals, nothing free.
inodes=$(find "$NUMPY_TREE" | wc -l)
read -r files free bsize <<<"$(stat -f -c '%c %f %S' "$mnt")"
[ "$files" -ge "$inodes" ] || fail "statfs reports $files inodes, the tree has $inodes"
[ "$free" = 0 ] && [ "$bsize" = 4096 ] || fail "statfs: free $free, block size $bsize"

# Counters on the live mount.
stats=$("$PYFS_MOUNT" --stats "$mnt") || fail "pyfs-mount --stats $mnt failed"
for name in lookups misses opens reads bytes_read; do
	grep -qE "^$name [0-9]+$" <<<"$stats" || fail "no counter '$name' in: $stats"
done
served=$(awk '$1 == "bytes_read" { print $2 }' <<<"$stats")
[ "$served" -gt 100000000 ] || fail "bytes_read $served after reading the whole tree"
# No extended attributes at all (so that `ls -l` asks for none): the kernel says ENOTSUP.
for name in user.other user.pyfs.stats; do
	"${PY_ISOLATED[@]}" - "$mnt" "$name" <<'EOF' || fail "getxattr $name: not ENOTSUP"
import errno, os, sys
for path in (sys.argv[1], os.path.join(sys.argv[1], "numpy", "__init__.py")):
    for call in (lambda: os.getxattr(path, sys.argv[2]), lambda: os.listxattr(path)):
        try:
            call()
            sys.exit(f"{path}: getxattr/listxattr succeeded")
        except OSError as e:
            if e.errno != errno.ENOTSUP:
                sys.exit(f"{path}: {e}")
EOF
done
# --stats refuses what is not the root of a pyfs mount.
expect_fail "--stats of a subdirectory" "$PYFS_MOUNT" --stats "$mnt/numpy"
expect_message "is not the root of a pyfs mount"
expect_fail "--stats of a plain directory" "$PYFS_MOUNT" --stats "$WORK"
expect_message "is not the root of a pyfs mount"

fusermount3 -u "$mnt" || fail "fusermount3 -u failed"
wait_until 5 eval '! pid_alive '"$pid" || fail "daemon $pid still running 5 s after unmount"
is_mounted "$mnt" && fail "still mounted after fusermount3 -u"
[ -e "$WORK/ready" ] && fail "ready file left after unmount"
exit 0
