#!/bin/bash
# No root at run time. An unprivileged user (created here, removed at exit) packs a
# tree, mounts it through the setuid fusermount3, imports from the mount and unmounts;
# of 6 mounts the user starts at once on one directory, one succeeds (and none starts
# an MPI helper daemon whose session directory could make it fail).
# The tree holds a setuid file, a setgid file, setgid and sticky directories, a FIFO, a
# socket and a character device: in the mount no setuid, setgid or sticky bit is left,
# the special files are absent, files belong to the mounting user, the mount is
# nosuid,nodev. A second user cannot look into the mount (EACCES); -o allow_other is
# refused with a message while /etc/fuse.conf lacks user_allow_other and works once it
# has it (the file is edited for the test and restored at exit).
. "$(dirname "$0")/lib.sh"
need_fuse
! why=$(users_cannot_mount) || skip "$why"
[ -x "$PY" ] || skip "$PY is missing (apt-get install python3.11)"
[ -f /etc/fuse.conf ] || skip "/etc/fuse.conf is missing (apt-get install fuse3)"
# /dev/fuse and /etc/fuse.conf are changed for a moment: one run at a time per machine.
open_fuse_to_users

user=pyfsu$$
other=pyfso$$
add_test_user "$user"
add_test_user "$other"
uid=$(id -u "$user")

# The user's own directory, with copies of the tools (any build directory may be private).
user_home "$user" bin mnt tmp
install -o "$user" -g "$user" -m 755 "$PYFS_PACK" "$PYFS_MOUNT" "$home/bin/"
mnt=$home/mnt
at_exit unmount_all "$mnt"
as_user() { runuser -u "$user" -- env HOME="$home" "$@"; }
as_other() { runuser -u "$other" -- env HOME=/nonexistent "$@"; }

# The tree, made by the user (root adds the device node).
as_user sh -c '
	set -e
	t=$HOME/tree
	mkdir -p "$t/robustpkg/sub" "$t/setgid-dir" "$t/sticky-dir"
	printf "VALUE = 42\n" >"$t/robustpkg/__init__.py"
	printf "def answer():\n    return 42\n" >"$t/robustpkg/sub/mod.py"
	: >"$t/robustpkg/sub/__init__.py"
	printf "#!/bin/sh\necho hi\n" >"$t/setuid-file"
	chmod 4755 "$t/setuid-file"
	printf "x\n" >"$t/setgid-file"
	chmod 2755 "$t/setgid-file"
	chmod 2755 "$t/setgid-dir"
	chmod 1777 "$t/sticky-dir"
	mkfifo "$t/fifo"
	'"$PY"' -S -c "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$t/socket"
' || fail "the user cannot create the tree"
mknod "$home/tree/chardev" c 1 3 && chown "$user:$user" "$home/tree/chardev" || fail "mknod failed"
[ -u "$home/tree/setuid-file" ] && [ -p "$home/tree/fifo" ] && [ -S "$home/tree/socket" ] &&
	[ -c "$home/tree/chardev" ] || fail "the special entries of the tree are missing"

# Pack, as the user.
as_user "$home/bin/pyfs-pack" -q -p "$PY" "$home/env.h5" "$home/tree" 2>"$WORK/pack.err" ||
	fail "pyfs-pack as $user failed: $(cat "$WORK/pack.err")"
for kind in fifo socket chardev; do
	grep -q "$kind" "$WORK/pack.err" || fail "pyfs-pack did not warn about skipping '$kind': $(cat "$WORK/pack.err")"
done

# start_mount [OPTIONS...]: pyfs-mount -f as the user; sets $daemon (runuser's pid).
start_mount() {
	rm -f "$home/ready"
	as_user "$home/bin/pyfs-mount" -f --ready-file="$home/ready" "$@" "$home/env.h5" "$mnt" \
		2>"$WORK/mount.err" &
	daemon=$!
	wait_until 30 test -s "$home/ready" || fail "pyfs-mount as $user did not mount: $(cat "$WORK/mount.err")"
}
stop_mount() {
	as_user fusermount3 -u "$mnt" || fail "fusermount3 -u as $user failed"
	local rc=0
	wait "$daemon" || rc=$?
	[ "$rc" -eq 0 ] || fail "pyfs-mount exited $rc after the unmount: $(cat "$WORK/mount.err")"
	is_mounted "$mnt" && fail "still mounted after fusermount3 -u"
	return 0
}

start_mount
line=$(awk -v d="$mnt" '$5 == d' /proc/self/mountinfo)
[[ $line == *nosuid* && $line == *nodev* ]] || fail "the mount is not nosuid,nodev: $line"
[[ $line == *"user_id=$uid"* ]] || fail "the mount does not belong to $user: $line"
[ "$(stat -c %u "/proc/$(cat "$home/ready")")" = "$uid" ] || fail "the daemon does not run as $user"
# What the user sees.
as_user env PYTHONPATH="$mnt" "${PY_ISOLATED[@]}" - "$mnt" "$uid" <<'EOF' || fail "the user's view of the mount is wrong"
import os, stat, sys
mnt, uid = sys.argv[1], int(sys.argv[2])
import robustpkg, robustpkg.sub.mod
assert robustpkg.VALUE == 42 and robustpkg.sub.mod.answer() == 42
assert robustpkg.__file__.startswith(mnt + "/"), robustpkg.__file__
names = set(os.listdir(mnt))
for special in ("fifo", "socket", "chardev"):
    assert special not in names, f"{special} appears in the mount"
for root, dirs, files in os.walk(mnt):
    for n in dirs + files:
        st = os.lstat(os.path.join(root, n))
        kind = stat.S_IFMT(st.st_mode)
        assert kind in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK), f"{n}: type {oct(kind)}"
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), f"{n}: mode {oct(st.st_mode)}"
        assert st.st_uid == uid, f"{n}: owner {st.st_uid}"
assert stat.S_IMODE(os.stat(os.path.join(mnt, "setuid-file")).st_mode) == 0o755
assert stat.S_IMODE(os.stat(os.path.join(mnt, "sticky-dir")).st_mode) == 0o777
EOF
# What another user sees: nothing.
rc=0
as_other ls "$mnt" >/dev/null 2>"$WORK/other.err" || rc=$?
[ "$rc" -ne 0 ] && grep -q "Permission denied" "$WORK/other.err" ||
	fail "another user can look into the mount without allow_other (ls exit $rc: $(cat "$WORK/other.err"))"
rc=0
as_other cat "$mnt/robustpkg/__init__.py" >/dev/null 2>"$WORK/other.err" || rc=$?
[ "$rc" -ne 0 ] || fail "another user can read from the mount without allow_other"
stop_mount
note "$user packed, mounted (nosuid,nodev, no special files, no setuid/setgid/sticky bits), imported, unmounted; $other got EACCES"

# Racing mounts as the user: 6 at once, 2 rounds; one mount each time, never two stacked.
for round in 1 2; do
	pids=()
	for i in 1 2 3 4 5 6; do
		as_user env TMPDIR="$home/tmp" "$home/bin/pyfs-mount" "$home/env.h5" "$mnt" >/dev/null 2>"$WORK/race.$i" &
		pids+=($!)
	done
	ok=0
	for i in 1 2 3 4 5 6; do
		if wait "${pids[i - 1]}"; then
			ok=$((ok + 1))
		else
			grep -q "is already" "$WORK/race.$i" || fail "racing mount $i as $user: $(cat "$WORK/race.$i")"
		fi
	done
	n=$(awk -v d="$mnt" '$5 == d { n++ } END { print n + 0 }' /proc/self/mountinfo)
	[ "$ok" -eq 1 ] && [ "$n" -eq 1 ] || fail "racing mounts as $user, round $round: $ok succeeded, $n mounts"
	# Without a launcher no MPI helper daemon starts, so the serving daemon keeps no
	# session directory (Open MPI's ompi.HOST.UID) under TMPDIR: racing creations and
	# removals of one made such mounts fail in MPI_Init.
	session=$(find "$home/tmp" -mindepth 1 -maxdepth 1 -name 'ompi.*' -print -quit)
	[ -z "$session" ] || fail "a mount without a launcher keeps an MPI session directory: $session"
	as_user fusermount3 -u "$mnt" || fail "fusermount3 -u as $user failed"
done
note "6 racing mounts as $user, 2 rounds: one mount each time, no MPI session directory"

# allow_other: refused while /etc/fuse.conf does not allow it, then allowed.
cp -p /etc/fuse.conf "$WORK/fuse.conf.orig"
at_exit 'cp -p "$WORK/fuse.conf.orig" /etc/fuse.conf'
grep -vE '^[[:space:]]*user_allow_other' "$WORK/fuse.conf.orig" >/etc/fuse.conf || true
rc=0
as_user "$home/bin/pyfs-mount" -f -o allow_other "$home/env.h5" "$mnt" >/dev/null 2>"$WORK/refused.err" || rc=$?
[ "$rc" -eq 1 ] || { is_mounted "$mnt" && as_user fusermount3 -u "$mnt"; fail "-o allow_other without user_allow_other: exit $rc (expected 1): $(cat "$WORK/refused.err")"; }
grep -q "user_allow_other" "$WORK/refused.err" || fail "-o allow_other refused without naming user_allow_other: $(cat "$WORK/refused.err")"
is_mounted "$mnt" && fail "-o allow_other without user_allow_other left a mount"
{ cat "$WORK/fuse.conf.orig"; echo user_allow_other; } >/etc/fuse.conf
start_mount -o allow_other
[ "$(as_other cat "$mnt/robustpkg/__init__.py")" = "VALUE = 42" ] ||
	fail "another user cannot read the mount with allow_other"
[ -u "$mnt/setuid-file" ] && fail "setuid bit visible with allow_other"
stop_mount
cp -p "$WORK/fuse.conf.orig" /etc/fuse.conf
note "-o allow_other: refused without user_allow_other ($(head -c 200 "$WORK/refused.err")), served to $other with it"
exit 0
