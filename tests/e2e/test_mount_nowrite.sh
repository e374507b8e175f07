#!/bin/bash
# pyfs never writes beside the archive: no lock file, no test file, nothing (Open
# MPI's sharedfp/lockedfile used to create, lock and unlink '<archive>.locktest.N'
# at every MPI_File_open).
#  1. Under strace -f -y, mpirun -np 2 and -np 4 --ranks-as-nodes mount an archive
#     packed into its own directory: no process makes any call that would change that
#     directory or the archive (open for writing or creating, unlink, rename, mkdir,
#     link, chmod, chown, truncate, utimes, write, flock or fcntl locks), while the
#     archive is opened and read there.
#  2. As an unprivileged user (created here, removed at exit), with the archive in a
#     root-owned directory of mode 555: mpirun -np 2 and -np 4 mount it, every node
#     serves the source tree, and the directory is untouched (same entries, same
#     mtime and ctime to the nanosecond: nothing was created there, not even briefly).
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"
command -v strace >/dev/null || skip "strace is missing (apt-get install strace)"

src=$WORK/src
make_sample_tree "$src"
head -c 3000000 /dev/urandom >"$src/a/big.bin"
arch_dir=$WORK/archives
mkdir "$arch_dir"
"$PYFS_PACK" -q --no-compile "$arch_dir/env.h5" "$src" || fail "pyfs-pack failed"
chmod 555 "$arch_dir"
at_exit chmod 755 "$arch_dir"

rank_mountpoints 4

# ---- 1. strace: nothing but reads touch the archive's directory ----
for n in 2 4; do
	rm -f "$WORK"/ready* "$WORK/trace"
	# strace follows the daemons too, so it ends once they are unmounted.
	strace -f -y -qq -o "$WORK/trace" -e trace=%file,%desc,flock,fcntl \
		mpirun -np "$n" "$PYFS_MOUNT" --ranks-as-nodes --ready-file="$WORK/ready%r" \
		"$arch_dir/env.h5" "$WORK/mnt%r" >"$WORK/out" 2>&1 &
	tracer=$!
	for ((r = 0; r < n; r++)); do
		wait_until 60 test -s "$WORK/ready$r" || fail "-np $n: rank $r did not mount under strace: $(tail -c 600 "$WORK/out")"
		diff_trees "$src" "$WORK/mnt$r"
	done
	unmount_all "${mnts[@]}"
	wait "$tracer" || fail "-np $n: mpirun under strace failed: $(tail -c 600 "$WORK/out")"
	grep -F "$arch_dir" "$WORK/trace" >"$WORK/touched" || true
	grep -qE 'open(at)?\(.*env\.h5", O_RDONLY' "$WORK/touched" ||
		fail "-np $n: strace saw no read-only open of the archive: $(head -c 600 "$WORK/trace")"
	grep -qE '^[0-9]+ +p?read(64)?\([0-9]+<[^>]*env\.h5>' "$WORK/touched" ||
		fail "-np $n: strace saw no read of the archive"
	if grep -E 'O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|^[0-9]+ +(unlink|unlinkat|rename|renameat2?|mkdir|mkdirat|rmdir|link|linkat|symlink|symlinkat|chmod|fchmod|fchmodat|chown|fchown|fchownat|lchown|truncate|ftruncate|utimensat|futimesat|utimes|utime|write|pwrite64|pwritev2?|writev|flock|fallocate|setxattr|fsetxattr|lsetxattr|removexattr)\(|fcntl\([0-9]+<[^>]*>, F_(SETLK|SETLKW|OFD_SETLK|OFD_SETLKW)' \
		"$WORK/touched" >"$WORK/writes"; then
		fail "-np $n: calls that change '$arch_dir': $(head -5 "$WORK/writes")"
	fi
	note "-np $n: $(wc -l <"$WORK/touched") calls touched the archive's directory, none of them a change"
done

# ---- 2. a user for whom the directory is read-only ----
if why=$(users_cannot_mount); then
	note "$why: part 2 (the read-only directory as another user) skipped"
	exit 0
fi
open_fuse_to_users
user=pyfsw$$
add_test_user "$user"
user_home "$user" bin
install -o "$user" -g "$user" -m 755 "$PYFS_MOUNT" "$home/bin/"
chmod -R a+rX "$src"
umnts=()
for r in 0 1 2 3; do
	install -d -o "$user" -g "$user" -m 755 "$home/mnt$r"
	umnts+=("$home/mnt$r")
done
at_exit unmount_all "${umnts[@]}"
as_user() { runuser -u "$user" -- env -u OMPI_ALLOW_RUN_AS_ROOT -u OMPI_ALLOW_RUN_AS_ROOT_CONFIRM HOME="$home" "$@"; }
as_user test -w "$arch_dir" && fail "'$arch_dir' is writable by $user"
# The directory's own mtime and ctime (ns) change with any entry created or removed
# there, even one removed again (like the lock test files); then every entry.
dir_state() { stat -c '%y %z' "$arch_dir" && ls -A --full-time "$arch_dir"; }
before=$(dir_state)
for n in 2 4; do
	rm -f "$home"/ready* "$WORK/trace"
	strace -f -y -qq -o "$WORK/trace" -e trace=%file,%desc,flock,fcntl \
		runuser -u "$user" -- env -u OMPI_ALLOW_RUN_AS_ROOT -u OMPI_ALLOW_RUN_AS_ROOT_CONFIRM \
		HOME="$home" mpirun -np "$n" "$home/bin/pyfs-mount" --ranks-as-nodes \
		--ready-file="$home/ready%r" "$arch_dir/env.h5" "$home/mnt%r" >"$WORK/user.out" 2>&1 &
	tracer=$!
	for ((r = 0; r < n; r++)); do
		wait_until 60 test -s "$home/ready$r" ||
			fail "-np $n as $user: node $r did not mount: $(tail -c 600 "$WORK/user.out")"
		as_user diff -r --no-dereference "$src" "$home/mnt$r" >"$WORK/diff" 2>&1 ||
			fail "-np $n as $user: node $r differs from the source: $(head -5 "$WORK/diff")"
	done
	for ((r = 0; r < n; r++)); do
		as_user fusermount3 -u "$home/mnt$r" || fail "fusermount3 -u as $user failed"
	done
	wait "$tracer" || fail "-np $n as $user: mpirun failed: $(tail -c 600 "$WORK/user.out")"
	[ "$(dir_state)" = "$before" ] || fail "-np $n as $user: '$arch_dir' changed: $(dir_state)"
	# Open MPI 4.1 survived its failed lock file here, so also: nothing even tried.
	if grep -F "$arch_dir" "$WORK/trace" | grep -E '= -1 E(ACCES|PERM|ROFS)' >"$WORK/denied"; then
		fail "-np $n as $user: calls refused in '$arch_dir': $(head -3 "$WORK/denied")"
	fi
	note "-np $n as $user: mounted from a directory of mode 555, nothing created or tried there"
done
exit 0
