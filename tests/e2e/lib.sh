# lib.sh - shared helpers for the end-to-end test scripts (sourced, not run).
# shellcheck shell=bash
#
# Each test script: `. "$(dirname "$0")/lib.sh"`, then uses $PYFS_PACK,
# $PYFS_MOUNT (set by CTest, or found in ./build), a private $WORK directory
# removed on exit, and the helpers below. Failures print one line and exit 1;
# skip (exit 77) says why.
set -euo pipefail

: "${PYFS_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${PYFS_BUILD_DIR:=$PYFS_SOURCE_DIR/build}"
: "${PYFS_PACK:=$PYFS_BUILD_DIR/packer/pyfs-pack}"
: "${PYFS_MOUNT:=$PYFS_BUILD_DIR/fusefs/pyfs-mount}"
: "${PYFS_PROLOGUE:=$PYFS_SOURCE_DIR/scripts/pyfs-prologue}"
: "${PYFS_EPILOGUE:=$PYFS_SOURCE_DIR/scripts/pyfs-epilogue}"
export PYFS_SOURCE_DIR PYFS_BUILD_DIR PYFS_PACK PYFS_MOUNT PYFS_PROLOGUE PYFS_EPILOGUE

# The Debian interpreter and corpus used by real-environment tests.
PY=/usr/bin/python3.11
PY_ISOLATED=("$PY" -s -S -P)
DIST_PACKAGES=/usr/lib/python3/dist-packages

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

TEST_NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyfs-$TEST_NAME.XXXXXX")
_cleanups=()

# Run "$@" at exit (last registered runs first), whatever happened.
at_exit() { _cleanups=("$*" "${_cleanups[@]}"); }
_run_cleanups() {
	local rc=$?
	for c in "${_cleanups[@]}"; do eval "$c" || true; done
	rm -rf "$WORK"
	exit $rc
}
trap _run_cleanups EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $TEST_NAME: $*" >&2; exit 1; }
skip() { echo "SKIP: $TEST_NAME: $*" >&2; exit 77; }
note() { echo "$TEST_NAME: $*" >&2; }

# expect_fail DESCRIPTION CMD...: CMD must exit non-zero (not by a signal) and
# print something on stderr; its stderr is kept in $WORK/last.err.
expect_fail() {
	local what=$1 rc=0; shift
	"$@" >"$WORK/last.out" 2>"$WORK/last.err" || rc=$?
	[ "$rc" -ne 0 ] || fail "$what: expected failure, got exit 0"
	[ "$rc" -lt 128 ] || fail "$what: died by signal $((rc - 128)): $(head -c 400 "$WORK/last.err")"
	[ -s "$WORK/last.err" ] || fail "$what: failed without a message"
}

# expect_message TEXT: the last expect_fail's stderr mentions TEXT.
expect_message() {
	grep -qiF -- "$1" "$WORK/last.err" || fail "expected message containing '$1', got: $(head -c 400 "$WORK/last.err")"
}

need_fuse() {
	[ -c /dev/fuse ] || skip "/dev/fuse is missing: no FUSE on this machine"
	command -v fusermount3 >/dev/null || skip "fusermount3 is missing (apt-get install fuse3)"
}

need_debian_numpy() {
	[ -x "$PY" ] || skip "$PY is missing (apt-get install python3-numpy python3-scipy)"
	[ -d "$DIST_PACKAGES/numpy" ] || skip "numpy is not in $DIST_PACKAGES (apt-get install python3-numpy)"
	[ -d "$DIST_PACKAGES/scipy" ] || skip "scipy is not in $DIST_PACKAGES (apt-get install python3-scipy)"
}

# need_numpy_stack: what numpy_archive packs (numpy, scipy, mpi4py, h5py) is installed.
need_numpy_stack() {
	need_debian_numpy
	local mod
	for mod in mpi4py h5py; do
		[ -d "$DIST_PACKAGES/$mod" ] || skip "$mod is not in $DIST_PACKAGES (apt-get install python3-$mod)"
	done
}

# make_sample_tree DIR: a small tree with every kind of entry: nested and empty
# directories, an empty file, duplicate contents, a hard link, a relative and a
# dangling symlink.
make_sample_tree() {
	mkdir -p "$1/a/b" "$1/z"
	echo hello >"$1/a/hello.txt"
	echo dup >"$1/b.txt"
	echo dup >"$1/copy.txt"
	: >"$1/empty"
	ln "$1/a/hello.txt" "$1/hard"
	ln -s a/hello.txt "$1/sym"
	ln -s ../../nowhere "$1/dangling"
}

# free_disk_gib DIR: free space of DIR's file system in whole GiB.
free_disk_gib() { df -P --block-size=1G "$1" | awk 'NR == 2 { print $4 }'; }

# ---- pyfs-mount helpers ----

# is_mounted DIR: DIR is a mount point (per /proc/self/mountinfo, so dead FUSE
# mounts left by a killed daemon count too; paths without spaces).
is_mounted() {
	local d
	d=$(realpath -m "$1")
	awk -v d="$d" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# unmount_all DIR...: unmount every DIR that is mounted, dead mounts included.
unmount_all() {
	local d
	for d in "$@"; do
		is_mounted "$d" || continue
		fusermount3 -u "$d" 2>/dev/null || fusermount3 -uz "$d" 2>/dev/null || umount -l "$d" 2>/dev/null || true
	done
}

# rank_mountpoints N: make $WORK/mnt0 .. mnt(N-1), one per rank as node (the
# pattern $WORK/mnt%r), list them in the array mnts, unmount them all at exit.
rank_mountpoints() {
	local r
	mnts=()
	for ((r = 0; r < $1; r++)); do
		mkdir -p "$WORK/mnt$r"
		mnts+=("$WORK/mnt$r")
	done
	at_exit unmount_all "${mnts[@]}"
}

# pid_alive PID: the process exists and is not a zombie (init may not reap here).
pid_alive() {
	local state
	state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# wait_until SECONDS CMD...: run CMD every 0.1 s until it succeeds; fail after SECONDS.
wait_until() {
	local limit=$(($1 * 10)) i=0
	shift
	until "$@"; do
		i=$((i + 1))
		[ "$i" -lt "$limit" ] || return 1
		sleep 0.1
	done
}

# numpy_archive: pack numpy, scipy, mpi4py and h5py from $DIST_PACKAGES, plus
# symlinks (relative, absolute, dangling) and an empty directory, once per build
# directory and packer binary (shared by tests, safe under parallel ctest). Sets
# NUMPY_TREE (the packed tree) and NUMPY_ARCHIVE.
numpy_archive() {
	local cache=$PYFS_BUILD_DIR/test-cache
	mkdir -p "$cache"
	NUMPY_TREE=$cache/numpy-tree
	NUMPY_ARCHIVE=$cache/numpy.h5
	(
		flock 9
		stamp=$(stat -c %Y:%s "$PYFS_PACK")
		[ -f "$NUMPY_ARCHIVE" ] && [ "$(cat "$cache/numpy.stamp" 2>/dev/null)" = "$stamp" ] && exit 0
		rm -rf "$NUMPY_TREE" "$NUMPY_ARCHIVE" "$cache/numpy.stamp"
		mkdir "$NUMPY_TREE"
		for p in numpy scipy mpi4py h5py; do
			# Hard links when the build directory shares the file system: instant.
			cp -al "$DIST_PACKAGES/$p" "$NUMPY_TREE/" 2>/dev/null || cp -a "$DIST_PACKAGES/$p" "$NUMPY_TREE/"
		done
		ln -s numpy/__init__.py "$NUMPY_TREE/link-relative"
		ln -s "$DIST_PACKAGES/numpy/version.py" "$NUMPY_TREE/link-absolute"
		ln -s no/such/target "$NUMPY_TREE/link-dangling"
		mkdir "$NUMPY_TREE/empty-dir"
		"$PYFS_PACK" -q -p "$PY" "$NUMPY_ARCHIVE" "$NUMPY_TREE" >&2
		echo "$stamp" >"$cache/numpy.stamp"
	) 9>"$cache/numpy.lock" || fail "cannot pack the numpy archive"
}

# numpy_archive_z: numpy_archive's tree packed with pyfs-pack -z (default level
# and block size), cached the same way. Sets NUMPY_TREE and NUMPY_ZARCHIVE.
numpy_archive_z() {
	numpy_archive
	local cache=$PYFS_BUILD_DIR/test-cache
	NUMPY_ZARCHIVE=$cache/numpy-z.h5
	(
		flock 9
		stamp=$(stat -c %Y:%s "$PYFS_PACK")
		[ -f "$NUMPY_ZARCHIVE" ] && [ "$(cat "$cache/numpy-z.stamp" 2>/dev/null)" = "$stamp" ] && exit 0
		rm -f "$NUMPY_ZARCHIVE" "$cache/numpy-z.stamp"
		"$PYFS_PACK" -q -z -p "$PY" "$NUMPY_ZARCHIVE" "$NUMPY_TREE" >&2
		echo "$stamp" >"$cache/numpy-z.stamp"
	) 9>"$cache/numpy-z.lock" || fail "cannot pack the compressed numpy archive"
}

# compare_trees SOURCE MOUNT: every entry of SOURCE exists in MOUNT with the same
# type, permission bits, size (files, symlinks), mtime in ns and link target;
# MOUNT may hold more only as __pycache__/*.pyc added by the packer.
compare_trees() {
	"${PY_ISOLATED[@]}" - "$1" "$2" <<'PYEOF' || fail "trees differ: $1 vs $2"
import os, stat, sys
src, mnt = sys.argv[1], sys.argv[2]
errors, count = [], 0
def walk(top):
    out = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, top)] = os.lstat(path)
    return out
a, b = walk(src), walk(mnt)
for rel, s in sorted(a.items()):
    count += 1
    t = b.get(rel)
    if t is None:
        errors.append(f"missing in mount: {rel}")
        continue
    if stat.S_IFMT(s.st_mode) != stat.S_IFMT(t.st_mode):
        errors.append(f"type differs: {rel}")
    if stat.S_IMODE(s.st_mode) & 0o777 != stat.S_IMODE(t.st_mode):
        errors.append(f"mode differs: {rel}: {oct(s.st_mode)} vs {oct(t.st_mode)}")
    if not stat.S_ISDIR(s.st_mode) and s.st_size != t.st_size:
        errors.append(f"size differs: {rel}: {s.st_size} vs {t.st_size}")
    if s.st_mtime_ns != t.st_mtime_ns:
        errors.append(f"mtime differs: {rel}: {s.st_mtime_ns} vs {t.st_mtime_ns}")
    if stat.S_ISLNK(s.st_mode) and os.readlink(os.path.join(src, rel)) != os.readlink(os.path.join(mnt, rel)):
        errors.append(f"link target differs: {rel}")
for rel in sorted(set(b) - set(a)):
    parts = rel.split(os.sep)
    if not (parts[-1] == "__pycache__" or (len(parts) > 1 and parts[-2] == "__pycache__" and rel.endswith(".pyc"))):
        errors.append(f"extra in mount: {rel}")
if count == 0:
    errors.append(f"nothing to compare in {src}")
for e in errors[:20]:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
PYEOF
}

# diff_trees SOURCE MOUNT: diff -r, allowing only byte-code the packer added.
diff_trees() {
	local out rc=0
	out=$(diff -r --no-dereference "$1" "$2" 2>&1) || rc=$?
	[ "$rc" -le 1 ] || fail "diff -r $1 $2 failed: $(printf '%s' "$out" | head -5)"
	out=$(printf '%s\n' "$out" | grep -v -E "^Only in $2(/.*)?: __pycache__\$|^Only in $2/(.*/)?__pycache__: .*\.pyc\$" | grep . || true)
	[ -z "$out" ] || fail "diff -r $1 $2: $(printf '%s' "$out" | head -5)"
}

# ---- pyfs-pack helpers ----

# compare_trees_strict SOURCE COPY [OPTION...]: COPY holds exactly the
# entries of SOURCE (any name bytes, paths of any length) with the same type,
# permission bits (SOURCE's & 0777: setuid/setgid/sticky must be gone), size,
# mtime in ns, symlink target, contents, and hard-link grouping (names sharing
# an inode in SOURCE share one in COPY, and no others). With --allow-extra-pyc,
# COPY may also hold __pycache__ directories and __pycache__/*.pyc files; with
# --allow-replaced-pyc, its __pycache__/*.pyc files may differ from SOURCE's
# (contents, size, mtime). With --skip-special, sockets, FIFOs and devices of
# SOURCE are not expected in COPY.
# Differences go to stderr; returns non-zero when there are any.
compare_trees_strict() {
	"${PY_ISOLATED[@]}" - "$@" <<'PYEOF'
import hashlib, os, stat, sys
src, dst = sys.argv[1], sys.argv[2]
allow_pyc = "--allow-extra-pyc" in sys.argv[3:]
skip_special = "--skip-special" in sys.argv[3:]
replaced_pyc = "--allow-replaced-pyc" in sys.argv[3:]
def is_pyc(rel):
    parts = rel.split(b"/")
    return len(parts) > 1 and parts[-2] == b"__pycache__" and rel.endswith(b".pyc")
def digest(dir_fd, name):
    h = hashlib.sha1()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        while True:
            block = os.read(fd, 1 << 22)
            if not block:
                return h.hexdigest()
            h.update(block)
    finally:
        os.close(fd)
def walk(top):
    out = {}
    def rec(fd, rel):
        for name in sorted(os.listdir(fd)):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            path = rel + b"/" + os.fsencode(name) if rel else os.fsencode(name)
            extra = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(name, dir_fd=fd)
            elif stat.S_ISREG(st.st_mode):
                extra = digest(fd, name)
            out[path] = (st, extra)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    rec(sub, path)
                finally:
                    os.close(sub)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    out[b""] = (os.fstat(fd), None)
    try:
        rec(fd, b"")
    finally:
        os.close(fd)
    return out
a, b = walk(src), walk(dst)
errors = []
def err(msg, rel):
    errors.append("%s: '%s'" % (msg, rel.decode("utf-8", "backslashreplace")))
links_a, links_b = {}, {}
special = [rel for rel, (s, _) in a.items() if skip_special and
           not (stat.S_ISREG(s.st_mode) or stat.S_ISDIR(s.st_mode) or stat.S_ISLNK(s.st_mode))]
for rel in special:
    del a[rel]
for rel, (s, x) in a.items():
    if rel not in b:
        err("missing", rel)
        continue
    t, y = b[rel]
    if replaced_pyc and is_pyc(rel) and stat.S_ISREG(s.st_mode) and stat.S_ISREG(t.st_mode):
        continue
    if stat.S_IFMT(s.st_mode) != stat.S_IFMT(t.st_mode):
        err("type differs", rel)
        continue
    if not stat.S_ISLNK(s.st_mode) and stat.S_IMODE(s.st_mode) & 0o777 != stat.S_IMODE(t.st_mode):
        err("mode differs (%o vs %o)" % (s.st_mode, t.st_mode), rel)
    if not stat.S_ISDIR(s.st_mode) and s.st_size != t.st_size:
        err("size differs (%d vs %d)" % (s.st_size, t.st_size), rel)
    if s.st_mtime_ns != t.st_mtime_ns:
        err("mtime differs (%d vs %d)" % (s.st_mtime_ns, t.st_mtime_ns), rel)
    if x != y:
        err("contents or target differ", rel)
    if stat.S_ISREG(s.st_mode):
        links_a.setdefault(s.st_ino, set()).add(rel)
for rel in set(b) - set(a):
    pyc = rel.split(b"/")[-1] == b"__pycache__" and stat.S_ISDIR(b[rel][0].st_mode) or is_pyc(rel)
    if not (allow_pyc and pyc):
        err("extra", rel)
for rel, (t, _) in b.items():
    if stat.S_ISREG(t.st_mode):
        links_b.setdefault(t.st_ino, set()).add(rel)
names_a = set(links_a and set().union(*links_a.values()))
groups_a = sorted(sorted(g) for g in links_a.values())
groups_b = sorted(sorted(g & names_a) for g in links_b.values() if g & names_a)
if groups_a != groups_b:
    errors.append("hard-link groups differ: %d groups vs %d" % (
        sum(len(g) > 1 for g in groups_a), sum(len(g) > 1 for g in groups_b)))
for rel, (t, _) in b.items():
    if stat.S_ISREG(t.st_mode) and t.st_nlink != len(links_b.get(t.st_ino, ())):
        err("nlink %d for %d names" % (t.st_nlink, len(links_b.get(t.st_ino, ()))), rel)
if len(a) < 2:
    errors.append("nothing to compare in " + src)
for e in sorted(errors)[:20]:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
PYEOF
}

# no_temp_archives DIR: DIR holds no temporary archive (.NAME.tmp.PID) of pyfs-pack.
no_temp_archives() {
	local left
	[ -d "$1" ] || return 0
	left=$(find "$1" -maxdepth 1 -name '.*.tmp.*' -printf '%f ')
	[ -z "$left" ] || fail "temporary archive left behind in $1: $left"
}

# pause_shim: build tests/robust/pmpi_pause.c (stops a rank mid-pull; see there)
# into $WORK and set preload to the LD_PRELOAD value for pyfs-mount: the shim,
# after the ASan runtime when pyfs-mount is a sanitizer build.
pause_shim() {
	local asan
	mpicc -shared -fPIC -O1 -o "$WORK/pmpi_pause.so" "$PYFS_SOURCE_DIR/tests/robust/pmpi_pause.c" ||
		fail "cannot build the pause shim"
	preload=$WORK/pmpi_pause.so
	asan=$(ldd "$PYFS_MOUNT" | awk '/libasan/ && !found { print $3; found = 1 }')
	[ -z "$asan" ] || preload=$asan:$preload
}

# check_node_shares ERR NODES MIN_SHARE MAX_RATIO: in the -v report ERR of a
# pull by NODES nodes, every node read its own share of the payload (each more
# than MIN_SHARE bytes, at most 1 MiB beyond it: the metadata on node 0, never
# another node's chunks), the shares add up to the payload, and all nodes read
# at most MAX_RATIO times it. Sets payload and ratio. Report lines:
# "node N (rank R): read B bytes of the archive file for a S-byte share of the payload"
check_node_shares() {
	local err=$1 nodes=$2 min=$3 max=$4 node read share total=0
	grep -E '^pyfs-mount\[rank 0\]: node [0-9]+ ' "$err" >"$WORK/nodes" || true
	[ "$(wc -l <"$WORK/nodes")" -eq "$nodes" ] || fail "expected $nodes node reports: $(cat "$err")"
	payload=$(sed -nE 's/.*all nodes read [0-9]+ bytes of the archive file for a ([0-9]+)-byte payload.*/\1/p' "$err")
	[ -n "$payload" ] || fail "no total in the report: $(cat "$err")"
	while read -r node read share; do
		[ "$share" -gt "$min" ] || fail "node $node got a $share-byte share of a $payload-byte payload"
		[ "$read" -ge "$share" ] && [ "$read" -le $((share + 1048576)) ] ||
			fail "node $node read $read bytes for a $share-byte share"
		total=$((total + share))
	done < <(sed -E 's/.*node ([0-9]+) \(rank [0-9]+\): read ([0-9]+) bytes .* a ([0-9]+)-byte share of the payload.*/\1 \2 \3/' "$WORK/nodes")
	[ "$total" -eq "$payload" ] || fail "shares add up to $total bytes, the payload has $payload"
	ratio=$(sed -nE 's/.*all nodes read .*: ([0-9.]+)x the payload/\1/p' "$err")
	awk -v r="$ratio" -v m="$max" 'BEGIN { exit !(r >= 1.0 && r <= m) }' || fail "nodes read ${ratio}x the payload"
}

# ---- unprivileged users ----

# users_cannot_mount: print why test users cannot mount FUSE here (not root to
# create them, no useradd/runuser, no setuid fusermount3) and succeed; fail
# (return 1) when they can.
users_cannot_mount() {
	local fm
	[ "$(id -u)" -eq 0 ] || { echo "needs root to create test users (useradd)"; return 0; }
	command -v useradd >/dev/null && command -v runuser >/dev/null ||
		{ echo "useradd or runuser is missing"; return 0; }
	fm=$(command -v fusermount3)
	[ "$(stat -c %U "$fm")" = root ] && [ -u "$fm" ] ||
		{ echo "$fm is not setuid root: users cannot mount FUSE here"; return 0; }
	return 1
}

# open_fuse_to_users: the tests that mount as users run one at a time on this
# machine (a lock held until exit), with /dev/fuse mode 0666 meanwhile.
# Debian's udev makes it 0666; a machine without udev (a container, a bare VM)
# may leave it 0600, and then libfuse fails as a user before it tries
# fusermount3 ("failed to open /dev/fuse: Permission denied").
open_fuse_to_users() {
	local mode
	exec 8>/tmp/pyfs-test-robust-noroot.lock
	flock -w 300 8 || fail "another test has held /tmp/pyfs-test-robust-noroot.lock for 300 s"
	mode=$(stat -c %a /dev/fuse)
	if [ "$mode" != 666 ]; then
		chmod 0666 /dev/fuse || skip "/dev/fuse is mode $mode and cannot be opened to users"
		at_exit chmod "$mode" /dev/fuse
		note "/dev/fuse was mode $mode (users cannot mount); set to 0666 for the test, restored at exit"
	fi
}

# add_test_user NAME: a user NAME (its own group, no home of the system's),
# removed at exit.
add_test_user() {
	useradd --no-create-home --user-group --shell /bin/sh "$1" || fail "useradd $1 failed"
	at_exit userdel "$1"
}

# user_home USER DIR...: $WORK/home and the DIRs below it, owned by USER, the
# way there searchable; sets home.
user_home() {
	local user=$1 d
	shift
	chmod 755 "$WORK"
	home=$WORK/home
	install -d -o "$user" -g "$user" -m 755 "$home"
	for d in "$@"; do install -d -o "$user" -g "$user" -m 755 "$home/$d"; done
}
