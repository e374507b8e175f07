#!/bin/bash
# pyfs-pack round trip of a synthetic tree with every kind of entry: empty
# files and directories, deep nesting (and paths longer than PATH_MAX),
# 255-byte names, names with spaces, newlines and invalid UTF-8, hard links,
# duplicate contents, relative/absolute/dangling symlinks, odd modes
# (setuid and sticky dropped), mtimes with nanoseconds (before 1970 and after
# 2038), files larger than the copy buffer and files with zero blocks.
# --extract must give back the source exactly; --list prints one line per
# entry; duplicates are stored once; sockets and FIFOs are skipped.
. "$(dirname "$0")/lib.sh"
[ -x "$PY" ] || skip "$PY is missing"

SRC=$WORK/src
"${PY_ISOLATED[@]}" - "$SRC" <<'PYEOF'
import os, socket, sys
top = os.fsencode(sys.argv[1])
os.mkdir(top)
def write(path, data=b"", mode=0o644):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
j = lambda *parts: os.path.join(top, *parts)

write(j(b"empty"))
os.makedirs(j(b"empty-dir"))
os.makedirs(j(b"nested-empty", b"a", b"b"))
write(j(b"with space.txt"), b"space\n")
write(j(b"new\nline"), b"newline\n")
write(j(b"tab\there"), b"tab\n")
write(j(b"bad-utf8-\xff\xfe\x80"), b"invalid utf-8 name\n")
write(j(b"back\\slash"), b"backslash\n")
write(j(b"-dash"), b"dash\n")
write(j("caf\u00e9".encode()), b"utf-8 name\n")
write(j(b"n" * 255), b"255-byte name\n")
os.mkdir(j(b"d" * 255))
write(j(b"d" * 255, b"f" * 255), b"inside a 255-byte directory\n")

# 60 levels deep, and a path longer than PATH_MAX (4096) made with *at calls.
deep = j(*[b"l%02d" % i for i in range(60)])
os.makedirs(deep)
write(os.path.join(deep, b"bottom"), b"60 levels down\n")
fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
for i in range(20):
    name = b"long%02d-" % i + b"x" * 200
    os.mkdir(name, dir_fd=fd)
    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = sub
leaf = os.open(b"leaf", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd)
os.write(leaf, b"beyond PATH_MAX\n")
os.close(leaf)
os.close(fd)

# Hard links, in one directory and across directories.
os.mkdir(j(b"links"))
write(j(b"links", b"one"), b"hard-linked contents\n")
os.link(j(b"links", b"one"), j(b"links", b"two"))
os.link(j(b"links", b"one"), j(b"nested-empty", b"three"))

# Duplicates: five copies of one content, and same-size files that differ.
os.mkdir(j(b"dups"))
block = bytes(range(256)) * 400
for i in range(5):
    write(j(b"dups", b"copy%d" % i), block)
for i in range(3):
    write(j(b"dups", b"same-size-%d" % i), block[:-1] + bytes([i]))

# Symlinks.
os.mkdir(j(b"sym"))
os.symlink(b"../with space.txt", j(b"sym", b"relative"))
os.symlink(b"/etc/hostname", j(b"sym", b"absolute"))
os.symlink(b"no/such/target", j(b"sym", b"dangling"))
os.symlink(b"../links", j(b"sym", b"to-dir"))
os.symlink(b"odd \xff target\nwith newline", j(b"sym", b"odd-target"))

# Modes.
os.mkdir(j(b"modes"))
modes = [(b"m600", 0o600), (b"m755", 0o755), (b"m444", 0o444), (b"setuid", 0o4755),
         (b"setgid", 0o2750)]
if os.geteuid() == 0:
    modes.append((b"m000", 0o000))  # only root can pack it
for name, mode in modes:
    write(j(b"modes", name), name + b"\n", mode)
os.mkdir(j(b"modes", b"readonly-dir"))
write(j(b"modes", b"readonly-dir", b"inside"), b"in a read-only directory\n")
os.chmod(j(b"modes", b"readonly-dir"), 0o555)
os.mkdir(j(b"modes", b"sticky-dir"))
os.chmod(j(b"modes", b"sticky-dir"), 0o1777)
os.mkdir(j(b"modes", b"private-dir"))
os.chmod(j(b"modes", b"private-dir"), 0o700)

# Large and sparse-ish contents: bigger than the 8 MiB copy buffer, zero blocks.
os.mkdir(j(b"big"))
data = os.urandom(1 << 20)
write(j(b"big", b"nine-mib"), data * 9 + b"tail")
write(j(b"big", b"zero-middle"), data + bytes(3 << 20) + data[:12345])
write(j(b"big", b"all-zero"), bytes(2 << 20))

# Things the packer skips.
os.mkfifo(j(b"fifo"))
s = socket.socket(socket.AF_UNIX)
s.bind(j(b"socket"))
s.close()

# Times with nanoseconds, before 1970 and after 2038; directories last.
times = [1_700_000_000_123_456_789, -123_456_789, 4_102_444_800_000_000_001, 1]
for i, (root, dirs, files) in enumerate(os.walk(top)):
    for k, name in enumerate(files):
        p = os.path.join(root, name)
        os.utime(p, ns=(1, times[(i + k) % len(times)]), follow_symlinks=False)
for k, name in enumerate(os.listdir(j(b"sym"))):
    os.utime(j(b"sym", name), ns=(1, 1_600_000_000_000_000_000 + k), follow_symlinks=False)
for root, dirs, files in sorted(os.walk(top), key=lambda w: -len(w[0])):
    os.utime(root, ns=(1, 1_650_000_000_000_000_000 + len(root)))
PYEOF

# Names expected in the archive: everything but the FIFO and the socket.
expected=$(find "$SRC" -mindepth 1 ! -type p ! -type s -printf . | wc -c)

"$PYFS_PACK" --no-compile "$WORK/a.h5" "$SRC" 2>"$WORK/pack.err" || fail "pack failed: $(cat "$WORK/pack.err")"
grep -q "skipping '.*fifo': a FIFO" "$WORK/pack.err" || fail "no warning for the FIFO: $(cat "$WORK/pack.err")"
grep -q "skipping '.*socket': a socket" "$WORK/pack.err" || fail "no warning for the socket"
grep -q "^pyfs-pack: packed '$WORK/a.h5': .* files, .* dirs, .* symlinks, 2 hard links, .* saved by dedup, archive .*, .* s$" \
	"$WORK/pack.err" || fail "no summary line: $(cat "$WORK/pack.err")"
! grep -q $'\r' "$WORK/pack.err" || fail "progress line written to a file"
no_temp_archives "$WORK"

# --verify passes, and the duplicates are stored once: 4 copies of 102400 bytes saved.
out=$("$PYFS_PACK" --verify "$WORK/a.h5") || fail "verify failed"
[[ $out =~ \ ([0-9]+)\ bytes\ in\ files,\ ([0-9]+)\ bytes\ stored ]] || fail "verify said: $out"
saved=$((BASH_REMATCH[1] - BASH_REMATCH[2]))
[ "$saved" -eq $((4 * 102400)) ] || fail "dedup saved $saved bytes, expected 4 copies of 102400 ($out)"

# --list: one line per entry, whatever the names hold.
"$PYFS_PACK" --list "$WORK/a.h5" >"$WORK/list" || fail "list failed"
[ "$(wc -l <"$WORK/list")" -eq "$expected" ] || fail "--list printed $(wc -l <"$WORK/list") lines for $expected entries"
grep -qF 'new\012line' "$WORK/list" || fail "newline in a name not escaped in --list"
grep -qF 'bad-utf8-\377\376\200' "$WORK/list" || fail "invalid UTF-8 not escaped in --list"
grep -qF 'back\\slash' "$WORK/list" || fail "backslash not escaped in --list"
grep -qE '^lrwxrwxrwx .* sym/relative -> \.\./with space\.txt$' "$WORK/list" || fail "symlink line wrong"
grep -qE '^-rwxr-xr-x +1 +7 .* modes/setuid$' "$WORK/list" || fail "setuid not dropped in --list"
grep -qE '^-rw-r--r-- +3 +21 .* links/one$' "$WORK/list" || fail "hard link count wrong in --list"
grep -qE '^drwxr-xr-x .* empty-dir/$' "$WORK/list" || fail "empty directory missing in --list"

# --extract gives the source back exactly.
"$PYFS_PACK" --extract "$WORK/a.h5" "$WORK/out" || fail "extract failed"
compare_trees_strict "$SRC" "$WORK/out" --skip-special 2>"$WORK/cmp.err" ||
	fail "extract differs from source: $(head -5 "$WORK/cmp.err")"
[ "$(stat -c %a "$WORK/out/modes/setuid")" = 755 ] || fail "setuid bit survived"
[ "$(stat -c %a "$WORK/out/modes/sticky-dir")" = 777 ] || fail "sticky bit survived"
# Zero blocks came back as holes.
[ "$(stat -c %b "$WORK/out/big/all-zero")" -lt 64 ] || fail "all-zero file was not written sparse"

# Extracting into a non-empty directory is refused.
expect_fail "extract into a non-empty directory" "$PYFS_PACK" --extract "$WORK/a.h5" "$WORK/out"
expect_message "not empty"

# An empty tree packs and extracts too.
mkdir "$WORK/empty-src"
"$PYFS_PACK" -q --no-compile "$WORK/empty.h5" "$WORK/empty-src" || fail "packing an empty directory failed"
"$PYFS_PACK" -q --verify "$WORK/empty.h5" || fail "verify of the empty archive failed"
[ -z "$("$PYFS_PACK" --list "$WORK/empty.h5")" ] || fail "empty archive lists entries"
"$PYFS_PACK" --extract "$WORK/empty.h5" "$WORK/empty-out" || fail "extract of the empty archive failed"
[ -z "$(ls -A "$WORK/empty-out")" ] || fail "empty archive extracted to something"
[ "$(stat -c %Y.%y "$WORK/empty-src")" = "$(stat -c %Y.%y "$WORK/empty-out")" ] ||
	fail "root mtime not restored"
exit 0
