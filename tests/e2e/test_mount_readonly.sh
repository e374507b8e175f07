#!/bin/bash
# Every modifying call on the mount fails with EROFS ("Read-only file system"):
# writes, creates, truncates, renames, links, chmod/chown/utime, mkdir/rmdir,
# unlink, xattrs; reading still works and the packed source is untouched.
. "$(dirname "$0")/lib.sh"
need_fuse

src=$WORK/src
mkdir -p "$src/dir/sub" "$WORK/mnt"
echo "hello" >"$src/file.txt"
echo "data" >"$src/dir/sub/inner.txt"
ln -s file.txt "$src/link"
"$PYFS_PACK" -q -p "$PY" "$WORK/a.h5" "$src" || fail "pyfs-pack failed"
snapshot() { (cd "$src" && find . -printf '%p %y %m %s %T@ %l\n' | sort | md5sum); }
before=$(snapshot)

mnt=$WORK/mnt
at_exit unmount_all "$mnt"
"$PYFS_MOUNT" "$WORK/a.h5" "$mnt" || fail "pyfs-mount failed"

"${PY_ISOLATED[@]}" - "$mnt" <<'EOF' || fail "a modifying call did not fail with EROFS"
import errno, os, sys
m = sys.argv[1]
f, d, l = f"{m}/file.txt", f"{m}/dir", f"{m}/link"
calls = {
    "open O_WRONLY": lambda: os.open(f, os.O_WRONLY),
    "open O_RDWR": lambda: os.open(f, os.O_RDWR),
    "open O_TRUNC": lambda: os.open(f, os.O_WRONLY | os.O_TRUNC),
    "open O_APPEND": lambda: os.open(f, os.O_WRONLY | os.O_APPEND),
    "create": lambda: os.open(f"{m}/new.txt", os.O_WRONLY | os.O_CREAT, 0o644),
    "create excl": lambda: os.open(f"{d}/new.txt", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644),
    "truncate": lambda: os.truncate(f, 0),
    "mkdir": lambda: os.mkdir(f"{m}/newdir"),
    "rmdir": lambda: os.rmdir(f"{d}/sub"),
    "unlink": lambda: os.unlink(f),
    "unlink symlink": lambda: os.unlink(l),
    "rename": lambda: os.rename(f, f"{m}/renamed.txt"),
    "rename dir": lambda: os.rename(d, f"{m}/dir2"),
    "link": lambda: os.link(f, f"{m}/hard"),
    "symlink": lambda: os.symlink("file.txt", f"{m}/link2"),
    "chmod": lambda: os.chmod(f, 0o600),
    "chown": lambda: os.chown(f, 1, 1),
    "utime": lambda: os.utime(f, (0, 0)),
    "mknod fifo": lambda: os.mkfifo(f"{m}/fifo"),
    "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
    "removexattr": lambda: os.removexattr(f, "user.x"),
}
bad = []
for name, call in calls.items():
    try:
        call()
        bad.append(f"{name}: succeeded")
    except OSError as e:
        if e.errno != errno.EROFS:
            bad.append(f"{name}: {e.strerror} instead of EROFS")
assert open(f).read() == "hello\n", "content changed"
assert os.access(f, os.R_OK) and not os.access(f, os.W_OK), "access() does not say read-only"
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

# The shell says it in words too.
# shellcheck disable=SC2116 # the command substitution is the test
out=$(echo x 2>&1 >>"$mnt/file.txt") && fail "appending with the shell succeeded"
grep -q "Read-only file system" <<<"$out" || fail "unexpected message: $out"
out=$(touch "$mnt/new" 2>&1) && fail "touch succeeded"
grep -q "Read-only file system" <<<"$out" || fail "unexpected message: $out"

[ "$(cat "$mnt/dir/sub/inner.txt")" = data ] || fail "reading after the refused calls failed"
[ "$(snapshot)" = "$before" ] || fail "the source tree changed"
exit 0
