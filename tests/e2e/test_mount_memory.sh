#!/bin/bash
# Memory limits never kill a live mount; a limit too small fails the mount.
#  1. ulimit -v: the lowest limit (1 MiB steps) at which the mount comes up, and
#     every limit up to 40 MiB above it: each mount that comes up survives 16
#     parallel readers (page cache dropped before each read, so the daemon serves
#     them with all its threads); every mount that does not come up failed with
#     one line saying memory was short, and left nothing mounted. (libfuse's own
#     loop allocated each thread's request buffer at its first request and ended
#     the session when that failed: readers got ENOTCONN.)
#  2. a cgroup memory limit (v2 memory.max or v1 memory.limit_in_bytes, as Slurm's
#     --mem sets): half the payload (120 MiB) fails at mount time with "not enough memory"
#     and how much to ask for, on one rank and under mpirun -np 2 (once, exit 1 on
#     every rank), nothing mounted, no rank killed; payload + 100 MiB mounts and
#     serves 16 readers (both limits on top of what a mount of a tiny archive
#     takes in the group). Prints the peak memory of the group (for docs/JOBS.md).
# Not in the ASan build (its shadow memory needs terabytes of address space).
. "$(dirname "$0")/lib.sh"
need_fuse
[ -x "$PY" ] || skip "$PY is missing (apt-get install python3.11)"
ldd "$PYFS_MOUNT" | grep -q libasan && skip "ASan build: address-space limits do not apply"

src=$WORK/src mnt=$WORK/mnt
mkdir -p "$src/a" "$src/b" "$mnt" "$WORK/m0" "$WORK/m1"
for i in $(seq 60); do head -c 300000 /dev/urandom >"$src/$([ $((i % 2)) = 0 ] && echo a || echo b)/f$i"; done
# For the cgroup part: a payload that dwarfs what MPI and HDF5 take (tens of MiB).
mkdir -p "$WORK/big"
cp -r "$src/a" "$WORK/big/"
head -c 120000000 /dev/urandom >"$WORK/big/blob"
"$PYFS_PACK" -q --no-compile "$WORK/big.h5" "$WORK/big" || fail "pyfs-pack failed"
big_kib=$(du -sk "$WORK/big" | cut -f1)
"$PYFS_PACK" -q --no-compile "$WORK/a.h5" "$src" || fail "pyfs-pack failed"
payload_kib=$(du -sk "$src" | cut -f1)
at_exit unmount_all "$mnt" "$WORK/m0" "$WORK/m1"
at_exit 'for p in $(pgrep -f -- "pyfs-mount.*$WORK/" || true); do kill -KILL "$p" 2>/dev/null || true; done'

# readers SRC MNT: 16 processes read every file (page cache dropped first) and compare.
readers() {
	"${PY_ISOLATED[@]}" - "$1" "$2" <<'EOF'
import multiprocessing, os, sys
src, mnt = sys.argv[1], sys.argv[2]
rels = [os.path.relpath(os.path.join(r, n), src) for r, d, ns in os.walk(src) for n in ns]
def work(i):
    for rel in rels[i % 7:] + rels:
        with open(os.path.join(mnt, rel), "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            data = f.read()
        with open(os.path.join(src, rel), "rb") as f:
            if f.read() != data:
                return f"{rel}: wrong bytes"
    return None
with multiprocessing.Pool(16) as pool:
    errors = [e for e in pool.map(work, range(16)) if e]
sys.exit(errors[0] if errors else 0)
EOF
}

# try_limit KIB: mount under ulimit -v KIB; 0 when mounted (then read and unmounted).
try_limit() {
	local rc=0
	(
		ulimit -v "$1"
		exec "$PYFS_MOUNT" "$WORK/a.h5" "$mnt"
	) >/dev/null 2>"$WORK/limit.err" || rc=$?
	if [ "$rc" -ne 0 ]; then
		is_mounted "$mnt" && fail "ulimit -v $1: exit $rc but mounted"
		return 1
	fi
	readers "$src" "$mnt" 2>"$WORK/readers.err" ||
		fail "ulimit -v $1: readers failed on a live mount: $(tail -c 300 "$WORK/readers.err")"
	pgrep -f -- "pyfs-mount $WORK/a.h5" >/dev/null || fail "ulimit -v $1: the daemon died under 16 readers"
	fusermount3 -u "$mnt" || fail "ulimit -v $1: cannot unmount"
	return 0
}

# ---- 1. ulimit -v ----------------------------------------------------------------------------
lo=$((payload_kib)) hi=$((payload_kib + 1024 * 1024))
try_limit "$hi" || fail "no mount even under ulimit -v $hi"
while [ $((hi - lo)) -gt 1024 ]; do
	mid=$(((lo + hi) / 2))
	if try_limit "$mid"; then hi=$mid; else lo=$mid; fi
done
# Just below: our one line (far below, Open MPI itself cannot start and says so at length).
try_limit $((hi - 1024)) && fail "ulimit -v $((hi - 1024)) mounted, but $hi was the lowest"
[ "$(wc -l <"$WORK/limit.err")" -eq 1 ] && grep -q "^pyfs-mount: .*Cannot allocate memory" "$WORK/limit.err" ||
	fail "ulimit -v $((hi - 1024)): not one line about memory: $(head -c 600 "$WORK/limit.err")"
below=$(cat "$WORK/limit.err")
mounted=0
for kib in $(seq "$hi" 1024 $((hi + 40 * 1024))); do
	try_limit "$kib" && mounted=$((mounted + 1))
done
note "ulimit -v: lowest mountable ${hi} KiB for a $((payload_kib / 1024)) MiB payload ($below just below); $mounted mounts up to 40 MiB above it each served 16 readers"

# ---- 2. cgroup memory limit -------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "creating a cgroup needs root"
cg=
v2=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
# v2: a child group gets memory.max when this group hands the controller down.
if [ -n "$v2" ] && grep -qw memory "/sys/fs/cgroup${v2%/}/cgroup.subtree_control" 2>/dev/null; then
	cg=/sys/fs/cgroup${v2%/}/pyfs-test-$$ limit_file=memory.max peak_file=memory.peak
else
	v1=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' /proc/self/cgroup)
	[ -n "$v1" ] && [ -d "/sys/fs/cgroup/memory${v1%/}" ] || skip "no memory cgroup (v2 or v1) to limit"
	cg=/sys/fs/cgroup/memory${v1%/}/pyfs-test-$$ limit_file=memory.limit_in_bytes peak_file=memory.max_usage_in_bytes
fi
mkdir "$cg" 2>/dev/null || skip "cannot create a cgroup under $(dirname "$cg")"
at_exit "for p in \$(cat '$cg/cgroup.procs'); do kill -KILL \$p; done; wait_until 10 rmdir '$cg'"
[ -f "$cg/$limit_file" ] || skip "$cg has no $limit_file"

# in_cgroup CMD...: run CMD inside the test group.
in_cgroup() { sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" "$@"; }

# What a pyfs-mount costs before any payload: a tiny archive, no limit, the group's peak.
mkdir "$WORK/tiny"
echo tiny >"$WORK/tiny/f"
"$PYFS_PACK" -q --no-compile "$WORK/tiny.h5" "$WORK/tiny" || fail "pyfs-pack failed"
[ -f "$cg/memory.max_usage_in_bytes" ] && echo 0 >"$cg/memory.max_usage_in_bytes" 2>/dev/null
in_cgroup "$PYFS_MOUNT" "$WORK/tiny.h5" "$mnt" 2>"$WORK/cg.err" || fail "tiny archive in the cgroup: $(cat "$WORK/cg.err")"
base=$(cat "$cg/$peak_file" 2>/dev/null || echo 0)
fusermount3 -u "$mnt"
wait_until 10 eval '[ -z "$(cat "$cg/cgroup.procs")" ]' || fail "processes left in $cg"
[ "$base" -gt 0 ] || skip "the cgroup reports no peak usage ($peak_file)"
note "cgroup: a mount of a tiny archive peaks at $((base / 1048576)) MiB"

# Below the need: the base plus half the payload.
echo $((base + big_kib * 1024 / 2)) >"$cg/$limit_file"
expect_fail "cgroup limit of half the payload" in_cgroup "$PYFS_MOUNT" "$WORK/big.h5" "$mnt"
expect_message "not enough memory for archive '$WORK/big.h5'"
expect_message "ask for at least"
[ "$(wc -l <"$WORK/last.err")" -eq 1 ] || fail "cgroup limit: more than one line: $(cat "$WORK/last.err")"
is_mounted "$mnt" && fail "cgroup limit too small: mounted anyway"
if command -v mpirun >/dev/null; then
	expect_fail "cgroup limit, mpirun -np 2" in_cgroup mpirun -np 2 "$PYFS_MOUNT" --ranks-as-nodes "$WORK/big.h5" "$WORK/m%r"
	[ "$(grep -c "not enough memory" "$WORK/last.err")" -eq 1 ] ||
		fail "mpirun -np 2 under a small cgroup limit: expected one 'not enough memory': $(head -c 800 "$WORK/last.err")"
	grep -qi "killed\|signal" "$WORK/last.err" && fail "a rank was killed: $(head -c 800 "$WORK/last.err")"
	is_mounted "$WORK/m0" || is_mounted "$WORK/m1" && fail "mounted under a too small cgroup limit"
fi
note "cgroup limit of base + half the payload: $(head -1 "$WORK/last.err")"

echo $((base + (big_kib + 100 * 1024) * 1024)) >"$cg/$limit_file"
[ -f "$cg/memory.max_usage_in_bytes" ] && echo 0 >"$cg/memory.max_usage_in_bytes" 2>/dev/null
in_cgroup "$PYFS_MOUNT" "$WORK/big.h5" "$mnt" 2>"$WORK/cg.err" || fail "payload + 100 MiB: mount failed: $(cat "$WORK/cg.err")"
readers "$WORK/big" "$mnt" 2>"$WORK/readers.err" || fail "cgroup limit: readers failed: $(tail -c 300 "$WORK/readers.err")"
pgrep -f -- "pyfs-mount $WORK/big.h5" >/dev/null || fail "cgroup limit: the daemon died under 16 readers"
peak=$(cat "$cg/$peak_file" 2>/dev/null || echo 0)
fusermount3 -u "$mnt" || fail "cannot unmount"
wait_until 10 eval '[ -z "$(cat "$cg/cgroup.procs")" ]' || fail "processes left in $cg"
note "cgroup limit base + payload + 100 MiB: mounted, 16 readers served; peak $((peak / 1048576)) MiB for a $((big_kib / 1024)) MiB payload (page cache included)"
