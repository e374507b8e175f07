#!/bin/bash
# The life of a daemon: -f with --ready-file serves in the foreground and exits 0
# on SIGTERM (unmounting) or on fusermount3 -u; SIGKILL leaves a dead mount that
# is refused as a mountpoint and that fusermount3 -u clears; in the default mode
# under mpirun the command returns once both mounts are ready, the daemons
# outlive mpirun, and fusermount3 -u ends them; all serving threads are running
# when the mount is ready.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"

mkdir -p "$WORK/src/d" "$WORK/mnt" "$WORK/m0" "$WORK/m1"
echo hi >"$WORK/src/d/f"
"$PYFS_PACK" -q -p "$PY" "$WORK/a.h5" "$WORK/src" || fail "pyfs-pack failed"
at_exit unmount_all "$WORK/mnt" "$WORK/m0" "$WORK/m1"
mnt=$WORK/mnt

# start_foreground: pyfs-mount -f in the background of this shell; sets $fg_pid.
start_foreground() {
	rm -f "$WORK/ready"
	"$PYFS_MOUNT" -f --ready-file="$WORK/ready" "$WORK/a.h5" "$mnt" 2>"$WORK/fg.err" &
	fg_pid=$!
	wait_until 20 test -s "$WORK/ready" || fail "no ready file from -f: $(cat "$WORK/fg.err")"
	[ "$(cat "$WORK/ready")" = "$fg_pid" ] || fail "ready file holds $(cat "$WORK/ready"), the daemon is $fg_pid"
	[ "$(cat "$mnt/d/f")" = hi ] || fail "-f mount not serving"
}

# SIGTERM: clean unmount, exit 0, ready file removed.
start_foreground
kill -TERM "$fg_pid"
rc=0
wait "$fg_pid" || rc=$?
[ "$rc" -eq 0 ] || fail "-f daemon exited $rc after SIGTERM: $(cat "$WORK/fg.err")"
is_mounted "$mnt" && fail "still mounted after SIGTERM"
[ -e "$WORK/ready" ] && fail "ready file left after SIGTERM"

# fusermount3 -u: exit 0.
start_foreground
fusermount3 -u "$mnt" || fail "fusermount3 -u failed"
rc=0
wait "$fg_pid" || rc=$?
[ "$rc" -eq 0 ] || fail "-f daemon exited $rc after fusermount3 -u"

# SIGKILL: a dead mount, refused as a mountpoint, cleared by fusermount3 -u.
start_foreground
kill -KILL "$fg_pid"
wait "$fg_pid" 2>/dev/null || true
is_mounted "$mnt" || fail "no mount left after SIGKILL (expected a dead one)"
stat -f "$mnt" >/dev/null 2>&1 && fail "dead mount still answers statfs"
expect_fail "mount on a dead mount" "$PYFS_MOUNT" "$WORK/a.h5" "$mnt"
expect_message "is a dead mount"
fusermount3 -u "$mnt" || fail "fusermount3 -u of the dead mount failed"
is_mounted "$mnt" && fail "dead mount not cleared by fusermount3 -u"

# Default mode under mpirun: ready on return, daemons outlive mpirun.
mpirun -np 2 "$PYFS_MOUNT" --ranks-as-nodes --ready-file="$WORK/ready%r" "$WORK/a.h5" "$WORK/m%r" \
	2>"$WORK/err" || fail "mpirun pyfs-mount failed: $(cat "$WORK/err")"
for r in 0 1; do
	[ "$(cat "$WORK/m$r/d/f")" = hi ] || fail "m$r not serving right after mpirun returned"
	pid=$(cat "$WORK/ready$r")
	pid_alive "$pid" || fail "daemon of m$r (pid $pid) did not outlive mpirun"
	[ "$(ps -o sid= -p "$pid" | tr -d ' ')" = "$pid" ] || fail "daemon $pid is not a session leader"
	fusermount3 -u "$WORK/m$r" || fail "fusermount3 -u m$r failed"
	wait_until 5 eval '! pid_alive '"$pid" || fail "daemon $pid still running 5 s after unmount"
done
# Default mode with no launcher (an MPI singleton) and its output on a pipe: the
# pipe ends when the command returns, so nothing the daemon inherited (such as
# the singleton helper's liveness pipe) keeps the reader waiting.
timeout 60 bash -c '"$0" "$1" "$2" 2>&1 | cat' "$PYFS_MOUNT" "$WORK/a.h5" "$mnt" >/dev/null ||
	fail "'pyfs-mount ... | cat' did not return: the daemon holds an inherited descriptor"
[ "$(cat "$mnt/d/f")" = hi ] || fail "singleton mount not serving"
fusermount3 -u "$mnt" || fail "fusermount3 -u of the singleton mount failed"

# Every serving thread runs before the mount is ready (their memory is reserved
# then, so none has to be had later): one per CPU (2 to 10) by default, N with
# -o max_threads=N. Each isatty() on a file reaches the daemon once (ENOTTY).
cpus=$(nproc)
want=$((cpus < 2 ? 2 : cpus > 10 ? 10 : cpus))
for opts in "" "-o max_threads=5"; do
	rm -f "$WORK/ready"
	# shellcheck disable=SC2086 # word splitting of $opts is wanted
	"$PYFS_MOUNT" -f $opts --ready-file="$WORK/ready" "$WORK/a.h5" "$mnt" 2>"$WORK/fg.err" &
	fg_pid=$!
	wait_until 20 test -s "$WORK/ready" || fail "no ready file: $(cat "$WORK/fg.err")"
	threads=$(find "/proc/$fg_pid/task" -mindepth 1 -maxdepth 1 | wc -l)
	[ -n "$opts" ] && want=5
	[ "$threads" -eq $((want + 1)) ] ||
		fail "${opts:-default}: $threads threads when the mount is ready, expected $want serving + 1"
	before=$("$PYFS_MOUNT" --stats "$mnt" | awk '$1 == "ioctls" { print $2 }')
	"${PY_ISOLATED[@]}" -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
assert not any(os.isatty(fd) for _ in range(50))' "$mnt/d/f" || fail "isatty on the mount"
	after=$("$PYFS_MOUNT" --stats "$mnt" | awk '$1 == "ioctls" { print $2 }')
	# 50 isatty calls plus the first --stats query itself.
	[ $((after - before)) -eq 51 ] || fail "50 isatty calls made $((after - before)) ioctl requests (expected 51)"
	kill -TERM "$fg_pid"
	wait "$fg_pid" || fail "-f daemon exited $? after SIGTERM"
done
note "serving threads ready at mount time: $want by default on $cpus CPUs, 5 with -o max_threads=5"

# Busy polling: after a request, a thread polls for the next one for at most
# busy_poll microseconds (here the longest allowed, 0.1 s: about 10 clock
# ticks of the daemon's CPU), then sleeps. One lookup at a time from a caller
# that then sleeps (so that the node has a CPU to spare): with polling, one of
# them costs the daemon 0.05 s of CPU or more; without, none does; and either
# way the daemon uses no CPU once idle.
daemon_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
for opts in "-o busy_poll=100000" "-o busy_poll=0"; do
	rm -f "$WORK/ready"
	# shellcheck disable=SC2086 # word splitting of $opts is wanted
	"$PYFS_MOUNT" -f $opts --ready-file="$WORK/ready" "$WORK/a.h5" "$mnt" 2>"$WORK/fg.err" &
	fg_pid=$!
	wait_until 20 test -s "$WORK/ready" || fail "$opts: no ready file: $(cat "$WORK/fg.err")"
	most=0
	for i in $(seq 10); do
		t0=$(daemon_cpu_ticks "$fg_pid")
		"${PY_ISOLATED[@]}" -c 'import os, sys, time
assert not os.path.exists(sys.argv[1])
time.sleep(0.3)' "$mnt/missing$i" || fail "$opts: lookup on the mount"
		t1=$(daemon_cpu_ticks "$fg_pid")
		[ $((t1 - t0)) -gt "$most" ] && most=$((t1 - t0))
		[ "$most" -ge 5 ] && break
	done
	if [ "$opts" = "-o busy_poll=0" ]; then
		[ "$most" -le 2 ] || fail "$opts: a lookup cost the daemon $most ticks of CPU"
	else
		[ "$most" -ge 5 ] || fail "$opts: no lookup was followed by polling (at most $most ticks of CPU)"
	fi
	t0=$(daemon_cpu_ticks "$fg_pid")
	sleep 2
	t1=$(daemon_cpu_ticks "$fg_pid")
	[ $((t1 - t0)) -le 2 ] || fail "$opts: idle daemon used $((t1 - t0)) ticks of CPU in 2 s"
	kill -TERM "$fg_pid"
	wait "$fg_pid" || fail "$opts: -f daemon exited $? after SIGTERM"
done
exit 0
