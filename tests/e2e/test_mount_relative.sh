#!/bin/bash
# A relative mountpoint and ready file, given from their parent directory:
# SIGTERM ends the daemon with exit 0, no mount left (dead or alive) and the
# ready file removed, in the foreground (-f) and in the default mode, whose
# daemon works from '/' and so must unmount and unlink by absolute paths.
. "$(dirname "$0")/lib.sh"
need_fuse

mkdir -p "$WORK/src" "$WORK/mnt"
echo hi >"$WORK/src/f"
"$PYFS_PACK" -q --no-compile "$WORK/a.h5" "$WORK/src" || fail "pyfs-pack failed"
at_exit unmount_all "$WORK/mnt"
at_exit cd /
cd "$WORK"

# stopped_cleanly MODE: after SIGTERM, nothing is mounted and the ready file is gone.
stopped_cleanly() {
	is_mounted "$WORK/mnt" && fail "$1: still mounted after SIGTERM: $(grep -F "$WORK/mnt" /proc/self/mountinfo)"
	[ ! -e "$WORK/ready" ] || fail "$1: ready file left after SIGTERM"
}

# Foreground: the daemon is our child, so its exit status is seen.
"$PYFS_MOUNT" -f --ready-file=ready a.h5 mnt 2>"$WORK/fg.err" &
pid=$!
wait_until 20 test -s ready || fail "-f: no ready file: $(cat "$WORK/fg.err")"
[ "$(cat mnt/f)" = hi ] || fail "-f: relative mount not serving"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || fail "-f: exited $rc after SIGTERM: $(cat "$WORK/fg.err")"
stopped_cleanly -f

# Default mode: the command returns once mounted; the daemon's PID is in the ready file.
"$PYFS_MOUNT" --ready-file=ready a.h5 mnt 2>"$WORK/bg.err" || fail "pyfs-mount failed: $(cat "$WORK/bg.err")"
pid=$(cat ready)
[ "$(cat mnt/f)" = hi ] || fail "default mode: relative mount not serving"
kill -TERM "$pid"
wait_until 10 eval '! pid_alive '"$pid" || fail "default mode: daemon $pid still running 10 s after SIGTERM"
stopped_cleanly "default mode"
exit 0
