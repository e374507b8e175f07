#!/bin/bash
# Faults during the pull and while serving:
#  1. a rank killed with SIGKILL in the middle of the pull (mpirun -np 3 --ranks-as-nodes;
#     tests/robust/pmpi_pause.c stops the rank at the start of the payload exchange,
#     after the metadata broadcast, until it is killed): mpirun returns non-zero within
#     30 s, no pyfs-mount of the job is left, nothing is mounted; once for rank 2 in the
#     ring exchange, once for rank 0 in the Allgatherv exchange;
#  1b. a reader whose reads fail with EIO after its first chunk (the shim again), with
#     each exchange: every rank exits 1 with that error, nothing is mounted, no hang
#     (not in the ASan build, whose own pread64 interceptor bypasses the shim's);
#  2. the archive truncated, overwritten in place, deleted, then replaced by another one
#     after the mount: every file still reads back its original bytes (the page cache is
#     dropped before each check and the daemon's read counter proves it served them);
#  3. the daemon killed with SIGKILL under load (4 readers in a loop): every reader gets
#     ENOTCONN (or ECONNABORTED for a request in flight) within 10 s, none hangs, none
#     reads wrong bytes; pyfs-epilogue MOUNTPOINT then clears the dead mount;
#  4. not enough memory for the image (ulimit -v below the payload; not in the ASan
#     build, whose shadow memory needs terabytes of address space): one clear error,
#     exit status 1 on every rank (single rank, and mpirun -np 2), nothing mounted; the
#     same limit lets a small archive mount, so the payload is what does not fit.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v mpirun >/dev/null || skip "mpirun is missing (apt-get install openmpi-bin)"
command -v mpicc >/dev/null || skip "mpicc is missing (apt-get install libopenmpi-dev)"
[ -x "$PY" ] || skip "$PY is missing (apt-get install python3.11)"

asan_lib=$(ldd "$PYFS_MOUNT" | awk '/libasan/ && !found { print $3; found = 1 }')

# The archive: 40 files of 64 KiB, one of 4 MiB, a symlink, a few directories.
src=$WORK/src
mkdir -p "$src/d1/d2" "$src/d3"
dirs=("$src" "$src/d1" "$src/d1/d2" "$src/d3")
for i in $(seq 40); do head -c 65536 /dev/urandom >"${dirs[i % 4]}/f$i.bin"; done
head -c 4194304 /dev/urandom >"$src/big.bin"
ln -s big.bin "$src/link"
"$PYFS_PACK" -q --no-compile "$WORK/a.h5" "$src" || fail "pyfs-pack failed"
mkdir "$WORK/other"
echo "another archive" >"$WORK/other/big.bin"
"$PYFS_PACK" -q --no-compile "$WORK/other.h5" "$WORK/other" || fail "pyfs-pack failed"

mnt=$WORK/mnt
mkdir -p "$mnt" "$WORK/r0" "$WORK/r1" "$WORK/r2"
at_exit unmount_all "$mnt" "$WORK/r0" "$WORK/r1" "$WORK/r2"
# Daemons of this test that a failure may leave behind.
at_exit 'for p in $(pgrep -f -- "$WORK/" || true); do kill -KILL "$p" 2>/dev/null || true; done'

# job_pids: pyfs-mount processes working on this test's files.
job_pids() { pgrep -f -- "pyfs-mount.*$WORK/" || true; }

start_daemon() { # start_daemon ARCHIVE: pyfs-mount -f on $mnt; sets $daemon
	rm -f "$WORK/ready"
	"$PYFS_MOUNT" -f --ready-file="$WORK/ready" "$1" "$mnt" 2>"$WORK/daemon.err" &
	daemon=$!
	wait_until 30 test -s "$WORK/ready" || fail "pyfs-mount did not mount: $(cat "$WORK/daemon.err")"
}

stop_daemon() {
	fusermount3 -u "$mnt" || fail "cannot unmount $mnt"
	local rc=0
	wait "$daemon" || rc=$?
	[ "$rc" -eq 0 ] || fail "pyfs-mount exited $rc after the unmount: $(tail -c 300 "$WORK/daemon.err")"
}

# ---- 1. a rank killed during the pull ----------------------------------------------------
pause_shim

kill_rank_during_pull() { # kill_rank_during_pull RANK EXCHANGE
	local victim=$1 exchange=$2 rc=0 t0 t1 pid job
	rm -f "$WORK/mark"
	mpirun -np 3 env LD_PRELOAD="$preload" PYFS_FAULT_RANK="$victim" PYFS_FAULT_MARK="$WORK/mark" \
		PYFS_FAULT_SECONDS=120 "$PYFS_MOUNT" --ranks-as-nodes --exchange="$exchange" --chunk=1024 \
		"$WORK/a.h5" "$WORK/r%r" \
		</dev/null >"$WORK/mpirun.out" 2>&1 &
	job=$!
	wait_until 60 test -s "$WORK/mark" || fail "rank $victim never reached the pull: $(tail -c 500 "$WORK/mpirun.out")"
	pid=$(cat "$WORK/mark")
	pid_alive "$pid" || fail "paused rank $victim (pid $pid) is not running"
	t0=$(date +%s)
	kill -KILL "$pid"
	wait_until 30 eval '! pid_alive $job' ||
		fail "mpirun did not return within 30 s after rank $victim was killed during the pull"
	t1=$(date +%s)
	wait "$job" || rc=$?
	[ "$rc" -ne 0 ] || fail "mpirun exited 0 although rank $victim was killed"
	wait_until 10 eval '[ -z "$(job_pids)" ]' ||
		fail "pyfs-mount processes left after rank $victim was killed: $(job_pids | tr '\n' ' ')"
	for r in 0 1 2; do
		is_mounted "$WORK/r$r" && fail "r$r is mounted after rank $victim was killed during the pull"
	done
	note "rank $victim killed during the $exchange exchange: mpirun returned $rc after $((t1 - t0)) s, no mount, no process left"
}
kill_rank_during_pull 2 ring
kill_rank_during_pull 0 allgatherv

exchanges=(ring allgatherv)
[ -z "$asan_lib" ] || { exchanges=(); note "ASan build: the failing-reader case is not run"; }
for exchange in "${exchanges[@]}"; do
	rm -f "$WORK/status"
	timeout 60 mpirun -np 3 env LD_PRELOAD="$preload" PYFS_FAULT_EIO_RANK=1 \
		sh -c '"$0" --ranks-as-nodes --exchange="$1" --chunk=1024 "$2" "$3"; echo "$?" >>"$4"' \
		"$PYFS_MOUNT" "$exchange" "$WORK/a.h5" "$WORK/r%r" "$WORK/status" \
		</dev/null >"$WORK/mpirun.out" 2>&1 || fail "$exchange: mpirun with a failing reader failed or hung: $(tail -c 500 "$WORK/mpirun.out")"
	[ "$(sort "$WORK/status" | tr '\n' ' ')" = "1 1 1 " ] ||
		fail "$exchange: exit statuses with a failing reader: $(tr '\n' ' ' <"$WORK/status"), expected 1 1 1"
	grep -q "rank 1\].*cannot read archive '.*a.h5': Input/output error" "$WORK/mpirun.out" ||
		fail "$exchange: no clear error for the failing reader: $(tail -c 500 "$WORK/mpirun.out")"
	[ "$(grep -c "cannot read archive" "$WORK/mpirun.out")" -eq 1 ] ||
		fail "$exchange: the error was not printed once: $(cat "$WORK/mpirun.out")"
	for r in 0 1 2; do
		is_mounted "$WORK/r$r" && fail "$exchange: r$r is mounted after a reader failed"
	done
	note "$exchange: a reader failing mid-pull: every rank exited 1 with '$(grep -o "cannot read.*" "$WORK/mpirun.out")'"
done

# ---- 2. the archive changes under a live mount -------------------------------------------
# check_served WHAT: every file reads back its source bytes, from the daemon (the page
# cache of each file is dropped first; the daemon's read counter must grow).
check_served() {
	"${PY_ISOLATED[@]}" - "$src" "$mnt" "$1" <<'EOF' || fail "after $1: the mount does not serve the original bytes"
import os, subprocess, sys
src, mnt, what = sys.argv[1:4]
def reads():
    stats = subprocess.run([os.environ["PYFS_MOUNT"], "--stats", mnt], capture_output=True,
                           check=True).stdout.decode().split("\n")
    return int(next(l.split()[1] for l in stats if l.startswith("reads ")))
before, n = reads(), 0
for root, dirs, files in os.walk(src):
    for name in files:
        rel = os.path.relpath(os.path.join(root, name), src)
        with open(os.path.join(mnt, rel), "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            data = f.read()
        with open(os.path.join(src, rel), "rb") as f:
            if data != f.read():
                sys.exit(f"{what}: {rel} differs")
        n += 1
assert os.readlink(os.path.join(mnt, "link")) == "big.bin"
if reads() - before < n:
    sys.exit(f"{what}: only {reads() - before} reads reached the daemon for {n} files")
EOF
}
cp "$WORK/a.h5" "$WORK/moving.h5"
start_daemon "$WORK/moving.h5"
check_served "mounting"
truncate -s 4096 "$WORK/moving.h5"
check_served "truncating the archive to 4 KiB"
dd if=/dev/urandom of="$WORK/moving.h5" bs=1M count=2 conv=notrunc status=none
check_served "overwriting the archive in place"
rm "$WORK/moving.h5"
check_served "deleting the archive"
cp "$WORK/other.h5" "$WORK/moving.h5"
check_served "replacing the archive by another one"
stop_daemon
note "archive truncated, overwritten, deleted and replaced: the mount kept serving the original bytes"

# ---- 3. the daemon killed under load -----------------------------------------------------
start_daemon "$WORK/a.h5"
for i in 1 2 3 4; do
	"${PY_ISOLATED[@]}" - "$src" "$mnt" "$WORK/reader$i" <<'EOF' &
import errno, os, sys, time
src, mnt, out = sys.argv[1:4]
files = []
for root, dirs, names in os.walk(src):
    files += [os.path.relpath(os.path.join(root, n), src) for n in names]
expect = {rel: open(os.path.join(src, rel), "rb").read() for rel in files}
open(out + ".started", "w").close()
deadline, result = time.monotonic() + 40, "no error within 40 s"
while time.monotonic() < deadline:
    try:
        for rel in files:
            with open(os.path.join(mnt, rel), "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                if f.read() != expect[rel]:
                    result = "WRONG BYTES in " + rel
                    break
        else:
            continue
        break
    except OSError as e:
        result = errno.errorcode.get(e.errno, str(e.errno))
        break
open(out, "w").write(result + "\n")
EOF
done
wait_until 30 eval 'ls "$WORK"/reader[1-4].started >/dev/null 2>&1 && [ "$(ls "$WORK"/reader[1-4].started | wc -l)" -eq 4 ]' ||
	fail "the readers did not start"
sleep 1
kill -KILL "$daemon"
wait "$daemon" 2>/dev/null || true
wait_until 10 eval '[ "$(cat "$WORK"/reader[1-4] 2>/dev/null | wc -l)" -eq 4 ]' ||
	fail "readers still blocked 10 s after the daemon was killed: $(cat "$WORK"/reader[1-4] 2>/dev/null | tr '\n' ' ')"
results=$(cat "$WORK"/reader[1-4] | sort | uniq -c | tr -s ' \n' ' ')
grep -qvxE 'ENOTCONN|ECONNABORTED' "$WORK"/reader[1-4] && fail "readers after the daemon was killed: $results (expected ENOTCONN)"
grep -qx ENOTCONN "$WORK"/reader[1-4] || fail "no reader saw ENOTCONN: $results"
note "daemon killed under load: readers got$results"
is_mounted "$mnt" || fail "no dead mount left after SIGKILL (expected one for the epilogue)"
"$PYFS_EPILOGUE" "$mnt" >"$WORK/epilogue.out" 2>&1 || fail "pyfs-epilogue failed: $(cat "$WORK/epilogue.out")"
is_mounted "$mnt" && fail "pyfs-epilogue left the dead mount"
[ -d "$mnt" ] || mkdir -p "$mnt"
note "pyfs-epilogue cleared the dead mount"

# ---- 4. no memory for the image ----------------------------------------------------------
if [ -n "$asan_lib" ]; then
	note "SKIPPED part 4 (ulimit -v): the ASan build reserves terabytes of address space for its shadow memory"
	exit 0
fi
start_daemon "$WORK/a.h5"
peak=$(awk '/^VmPeak:/ { print $2 }' "/proc/$daemon/status")
stop_daemon
limit=$((peak + 256 * 1024)) # KiB: what a small archive needs, plus 256 MiB
mkdir "$WORK/huge"
truncate -s 1G "$WORK/huge/zeros.bin"
"$PYFS_PACK" -q --no-compile "$WORK/huge.h5" "$WORK/huge" || fail "cannot pack the 1 GiB archive"
rm -rf "$WORK/huge"
# The limit is not too tight for a small archive...
rm -f "$WORK/ready"
(ulimit -v "$limit" && exec "$PYFS_MOUNT" -f --ready-file="$WORK/ready" "$WORK/a.h5" "$mnt") 2>"$WORK/daemon.err" &
daemon=$!
wait_until 30 test -s "$WORK/ready" ||
	fail "a small archive does not mount under ulimit -v $limit: $(cat "$WORK/daemon.err")"
stop_daemon
# ...but a 1 GiB payload does not fit, on one rank or on two.
rc=0
(ulimit -v "$limit" && exec "$PYFS_MOUNT" -f "$WORK/huge.h5" "$mnt") >"$WORK/oom.out" 2>"$WORK/oom.err" || rc=$?
[ "$rc" -eq 1 ] || fail "1 GiB payload under ulimit -v $limit KiB: exit status $rc (expected 1): $(cat "$WORK/oom.err")"
grep -q "Cannot allocate memory" "$WORK/oom.err" || fail "no clear out-of-memory message: $(cat "$WORK/oom.err")"
is_mounted "$mnt" && fail "mounted without memory for the image"
note "1 GiB payload under ulimit -v: $(cat "$WORK/oom.err")"
rm -f "$WORK/status"
mpirun -np 2 sh -c 'ulimit -v "$4" && "$0" --ranks-as-nodes "$1" "$2"; echo "$?" >>"$3"' \
	"$PYFS_MOUNT" "$WORK/huge.h5" "$WORK/r%r" "$WORK/status" "$limit" >"$WORK/oom.out" 2>"$WORK/oom.err" ||
	fail "mpirun failed: $(head -c 500 "$WORK/oom.err")"
[ "$(sort "$WORK/status" | tr '\n' ' ')" = "1 1 " ] ||
	fail "mpirun -np 2 under ulimit -v: rank exit statuses $(tr '\n' ' ' <"$WORK/status"), expected 1 1: $(cat "$WORK/oom.err")"
grep -q "Cannot allocate memory" "$WORK/oom.err" || fail "mpirun -np 2: no clear out-of-memory message: $(cat "$WORK/oom.err")"
[ "$(grep -c . "$WORK/oom.err")" -eq 1 ] || fail "mpirun -np 2: expected one message, got: $(cat "$WORK/oom.err")"
is_mounted "$WORK/r0" && fail "r0 mounted without memory for the image"
is_mounted "$WORK/r1" && fail "r1 mounted without memory for the image"
note "mpirun -np 2 under ulimit -v: $(cat "$WORK/oom.err")"
exit 0
