#!/bin/bash
# The real stack (numpy, scipy, mpi4py, h5py) packed with -z: the archive is
# well under half the uncompressed one; the mount serves the same tree; the
# Debian interpreter imports numpy and scipy (compiled submodules: dlopen of
# .so files decompressed on demand) from the mount with no .py opened, so no
# module was compiled; blocks were decoded ahead of their reads, and a
# lookup alone decodes the file's first block, and opening it stores its
# first bytes in the page cache; --inflate
# serves the same bytes, decoding nothing at read time; the daemon's memory
# after the import stays below the raw payload.
. "$(dirname "$0")/lib.sh"
need_fuse
need_numpy_stack
command -v strace >/dev/null || skip "strace is missing (apt-get install strace)"
numpy_archive_z

raw=$(stat -c %s "$NUMPY_ARCHIVE")
z=$(stat -c %s "$NUMPY_ZARCHIVE")
[ "$z" -lt $((raw / 2)) ] || fail "compressed archive has $z bytes, uncompressed $raw"
note "archive ${z} bytes, $(awk -v a="$z" -v b="$raw" 'BEGIN { printf "%.3f", a / b }')x the uncompressed one"

mnt=$WORK/mnt
imnt=$WORK/imnt
mkdir "$mnt" "$imnt"
at_exit unmount_all "$mnt" "$imnt"
"$PYFS_MOUNT" --ready-file="$WORK/ready" "$NUMPY_ZARCHIVE" "$mnt" || fail "pyfs-mount failed"
pid=$(cat "$WORK/ready")

cat >"$WORK/imports.py" <<'PYEOF'
import sys
import mpi4py
mpi4py.rc.initialize = False  # load mpi4py.MPI without starting MPI
import numpy, scipy, scipy.linalg, scipy.sparse, scipy.special, h5py
from mpi4py import MPI
assert abs(numpy.linalg.inv(numpy.eye(3) * 2)[0, 0] - 0.5) < 1e-12
assert abs(scipy.special.gamma(5) - 24) < 1e-9
mnt = sys.argv[1] + "/"
files = [(name, m.__file__) for name, m in list(sys.modules.items())
         if name.split(".")[0] in ("numpy", "scipy", "mpi4py", "h5py")
         and getattr(m, "__file__", None)]
bad = [f"{name}: {path}" for name, path in files if not path.startswith(mnt)]
for line in bad[:10]:
    print("not from the mount:", line, file=sys.stderr)
sys.exit(1 if bad or len(files) < 100 else 0)
PYEOF
PYTHONPATH=$mnt strace -f -qq -e trace=open,openat -o "$WORK/strace.log" \
	"${PY_ISOLATED[@]}" "$WORK/imports.py" "$mnt" || fail "imports from the compressed mount failed"
opened() { grep -F "\"$mnt/" "$WORK/strace.log" | grep -v ' = -1 ' | grep -cE "\\.$1\"" || true; }
so=$(opened so)
py=$(opened py)
[ "$so" -ge 10 ] || fail "only $so .so files opened from the mount"
[ "$py" -eq 0 ] || fail "$py .py files opened from the mount"

# Reads decompressed blocks, and decoded some ahead of their reads; the
# inflated mount below decompresses nothing at read time.
stat_of() { "$PYFS_MOUNT" --stats "$1" | awk -v k="$2" '$1 == k { print $2 }'; }
decoded=$(stat_of "$mnt" blocks_decoded)
ahead=$(stat_of "$mnt" blocks_decoded_ahead)
note "blocks decoded by reads: $decoded, ahead of them: $ahead"
[ "${decoded:-0}" -gt 0 ] || fail "the import decoded no block (blocks_decoded '$decoded')"
[ "${ahead:-0}" -gt 0 ] || fail "no block decoded ahead of a read (blocks_decoded_ahead '$ahead')"

rss=$(awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$pid/status")
payload=$("${PY_ISOLATED[@]}" -c 'import os, sys; print(sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(sys.argv[1]) for f in fs if not os.path.islink(os.path.join(r, f))))' "$NUMPY_TREE")
note "daemon RSS $((rss >> 20)) MiB after the import; files hold $((payload >> 20)) MiB"
[ "$rss" -lt "$payload" ] || fail "daemon RSS $rss bytes, not below the $payload bytes of the files"

diff_trees "$NUMPY_TREE" "$mnt"
compare_trees "$NUMPY_TREE" "$mnt"

# A file looked up is about to be read: the lookup alone (stat) decodes its
# first block ahead, unless -o no_decode_ahead; nothing is decoded on demand.
# Opened by Python (isatty() before the first read), a file's first bytes
# are stored in the page cache: reading it then asks the daemon nothing,
# unless -o no_decode_ahead, or with one serving thread (a store can wait
# for a read that only another thread can answer). Either way the bytes are
# the packed ones.
pyc=numpy/__pycache__/__init__.cpython-311.pyc
[ -f "$NUMPY_TREE/$pyc" ] || fail "no $pyc in the packed tree"
size=$(stat -c %s "$NUMPY_TREE/$pyc")
for opts in "" "-o no_decode_ahead" "-o max_threads=1"; do
	# shellcheck disable=SC2086 # word splitting of $opts is wanted
	"$PYFS_MOUNT" $opts "$NUMPY_ZARCHIVE" "$imnt" || fail "pyfs-mount $opts failed"
	stat "$imnt/numpy/__init__.py" >/dev/null || fail "stat on the mount failed"
	looked=$(stat_of "$imnt" blocks_decoded_ahead)
	[ "$(stat_of "$imnt" blocks_decoded)" = 0 ] || fail "${opts:-default}: a stat decoded on demand"
	if [ "$opts" != "-o no_decode_ahead" ]; then
		[ "${looked:-0}" -ge 1 ] || fail "a lookup decoded nothing ahead ('$looked')"
	else
		[ "$looked" = 0 ] || fail "$opts: a lookup decoded $looked blocks ahead"
	fi
	"${PY_ISOLATED[@]}" -c 'import sys; sys.stdout.buffer.write(open(sys.argv[1], "rb").read())' \
		"$imnt/$pyc" >"$WORK/pyc.out" || fail "${opts:-default}: reading $pyc failed"
	cmp -s "$WORK/pyc.out" "$NUMPY_TREE/$pyc" || fail "${opts:-default}: $pyc differs on the mount"
	stores=$(stat_of "$imnt" stores)
	stored=$(stat_of "$imnt" bytes_stored)
	reads=$(stat_of "$imnt" reads)
	note "${opts:-default}: opened $pyc ($size bytes): $stores stores ($stored bytes), $reads reads"
	window=$(stat_of "$imnt" max_readahead)
	[ "$size" -le "${window:-0}" ] || fail "$pyc has $size bytes, more than one readahead window ('$window')"
	if [ -z "$opts" ]; then
		[ "$stores" = 1 ] && [ "$stored" = "$size" ] ||
			fail "opening $pyc stored $stores files, $stored bytes (expected 1, $size)"
		[ "$reads" = 0 ] || fail "$pyc was stored, yet reading it asked the daemon $reads reads"
	else
		[ "$stores" = 0 ] || fail "$opts: $stores files stored in the page cache"
		[ "${reads:-0}" -ge 1 ] || fail "$opts: reading $pyc asked the daemon nothing"
	fi
	fusermount3 -u "$imnt" || fail "fusermount3 -u $imnt failed"
done
# Stores under load: two serving threads, eight readers of the same cold
# files at once (a store can wait for a read of another thread): all end,
# with the packed bytes. Then a daemon stopped by SIGTERM in the middle of
# such a load ends within 10 s and leaves no mount behind.
(cd "$NUMPY_TREE" && find . -path '*/__pycache__/*.pyc' | sort | awk 'NR <= 400') >"$WORK/pycs"
cat >"$WORK/readall.py" <<'PYEOF'
import hashlib, sys
root, names = sys.argv[1], open(sys.argv[2]).read().split()
digest = hashlib.sha256()
for name in names:
    with open(root + "/" + name, "rb") as f:
        digest.update(f.read())
print(digest.hexdigest())
PYEOF
want=$("${PY_ISOLATED[@]}" "$WORK/readall.py" "$NUMPY_TREE" "$WORK/pycs")
"$PYFS_MOUNT" -o max_threads=2 "$NUMPY_ZARCHIVE" "$imnt" || fail "pyfs-mount -o max_threads=2 failed"
readers=()
for i in 1 2 3 4 5 6 7 8; do
	timeout 120 "${PY_ISOLATED[@]}" "$WORK/readall.py" "$imnt" "$WORK/pycs" >"$WORK/digest.$i" &
	readers+=($!)
done
for i in 1 2 3 4 5 6 7 8; do
	wait "${readers[$((i - 1))]}" || fail "reader $i of 8 failed or hung (2 serving threads)"
	[ "$(cat "$WORK/digest.$i")" = "$want" ] || fail "reader $i of 8 read other bytes"
done
note "8 readers of $(wc -l <"$WORK/pycs") files at once, 2 threads: $(stat_of "$imnt" stores) stores"
fusermount3 -u "$imnt" || fail "fusermount3 -u $imnt failed"

"$PYFS_MOUNT" -o max_threads=2 --ready-file="$WORK/ready2" "$NUMPY_ZARCHIVE" "$imnt" ||
	fail "pyfs-mount -o max_threads=2 failed"
daemon=$(cat "$WORK/ready2")
for i in 1 2 3 4 5 6 7 8; do
	timeout 120 "${PY_ISOLATED[@]}" "$WORK/readall.py" "$imnt" "$WORK/pycs" >/dev/null 2>&1 &
done
sleep 0.3
kill -TERM "$daemon"
for _ in $(seq 100); do
	kill -0 "$daemon" 2>/dev/null || break
	sleep 0.1
done
! kill -0 "$daemon" 2>/dev/null || fail "the daemon still runs 10 s after SIGTERM under load"
wait
! mountpoint -q "$imnt" || fail "$imnt is still mounted after the daemon ended"

"$PYFS_MOUNT" --inflate "$NUMPY_ZARCHIVE" "$imnt" || fail "pyfs-mount --inflate failed"
diff_trees "$NUMPY_TREE" "$imnt"
PYTHONPATH=$imnt "${PY_ISOLATED[@]}" "$WORK/imports.py" "$imnt" || fail "imports from the inflated mount failed"
[ "$(stat_of "$imnt" blocks_decoded)" = 0 ] || fail "the inflated mount decoded blocks at read time"
exit 0
