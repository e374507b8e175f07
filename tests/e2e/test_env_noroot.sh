#!/bin/bash
# No root: an unprivileged user (created here, removed at exit) makes a venv in
# their own directory, packs it whole, mounts the archive over the venv itself
# (-o nonempty, through the setuid fusermount3), runs its console script and
# its python from the mount, unmounts, and finds the venv untouched; then the
# same with pyfs-prologue --at-source and pyfs-epilogue, installed side by side
# with their library (pyfs-jobs.sh) in the user's bin directory.
. "$(dirname "$0")/lib.sh"
need_fuse
! why=$(users_cannot_mount) || skip "$why"
[ -x "$PY" ] || skip "$PY is missing (apt-get install python3.11)"
open_fuse_to_users

user=pyfse$$
add_test_user "$user"
user_home "$user" bin
install -o "$user" -g "$user" -m 755 "$PYFS_PACK" "$PYFS_MOUNT" "$PYFS_PROLOGUE" "$PYFS_EPILOGUE" "$home/bin/"
install -o "$user" -g "$user" -m 644 "$(dirname "$PYFS_PROLOGUE")/pyfs-jobs.sh" "$home/bin/"
ENV=$home/env
at_exit unmount_all "$ENV"
as_user() { runuser -u "$user" -- env -u PYFS_MOUNT -u PYFS_MOUNTPOINT HOME="$home" PATH="$home/bin:/usr/bin:/bin" "$@"; }

as_user sh -c '
	set -e
	"$0" -m venv --without-pip "$HOME/env"
	mkdir -p "$HOME/env/src/userpkg"
	echo "VALUE = 5" >"$HOME/env/src/userpkg/__init__.py"
	echo "$HOME/env/src" >"$HOME/env/lib/python3.11/site-packages/__editable__.userpkg.pth"
	printf "#!%s\nimport userpkg\nprint(\"hello\", userpkg.VALUE, userpkg.__file__)\n" "$HOME/env/bin/python" >"$HOME/env/bin/hello"
	chmod 755 "$HOME/env/bin/hello"' "$PY" || skip "the user cannot create a venv with $PY (apt-get install python3.11-venv)"
snapshot() { (cd "$ENV" && find . -printf '%p %y %s %T@ %m %u %l\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum); }

as_user pyfs-pack -q "$home/env.h5" "$ENV" || fail "the user cannot pack the venv"
snapshot >"$WORK/before"
as_user pyfs-mount -o nonempty "$home/env.h5" "$ENV" || fail "the user cannot mount over the venv"
is_mounted "$ENV" || fail "'$ENV' is not mounted"
grep -E " $ENV .* fuse\.pyfs " /proc/self/mountinfo | grep -q "user_id=$(id -u "$user")" ||
	fail "the mount is not the user's: $(grep " $ENV " /proc/self/mountinfo)"
got=$(as_user sh -c 'cd / && "$HOME/env/bin/hello"') || fail "bin/hello failed as the user"
[ "$got" = "hello 5 $ENV/src/userpkg/__init__.py" ] || fail "bin/hello printed '$got'"
as_user "$ENV/bin/python" -c 'import os, sys; assert sys.prefix == os.environ["HOME"] + "/env"' ||
	fail "the venv's python does not run from the mount"
as_user fusermount3 -u "$ENV" || fail "the user cannot unmount"
snapshot | diff -q "$WORK/before" - >/dev/null || fail "the venv changed"

out=$(as_user pyfs-prologue -q --launcher local --at-source "$home/env.h5") || fail "pyfs-prologue --at-source failed as the user"
got=$(as_user bash -c "$out"'; cd / && hello && pyfs-epilogue -q --local') || fail "hello through the prologue's PATH failed: $out"
[ "$got" = "hello 5 $ENV/src/userpkg/__init__.py" ] || fail "hello through PATH printed '$got'"
is_mounted "$ENV" && fail "pyfs-epilogue left '$ENV' mounted"
snapshot | diff -q "$WORK/before" - >/dev/null || fail "the venv changed after the job scripts"
exit 0
