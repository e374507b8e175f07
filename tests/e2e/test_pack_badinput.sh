#!/bin/bash
# pyfs-pack on bad input: one clear line, a non-zero exit, and never an
# archive or a temporary file left behind. Missing source, unreadable file
# and directory (as an unprivileged user), archive inside a source (also
# through a symlink), existing archive without --force (left untouched),
# archive directory missing, interpreter that cannot run or is not Python,
# usage errors (exit 2), a file that grows while it is read, and SIGTERM or
# SIGINT in the middle of a pack.
. "$(dirname "$0")/lib.sh"

SRC=$WORK/src OUT=$WORK/out
mkdir -p "$SRC/sub" "$OUT"
echo data >"$SRC/sub/file"

# refused WHAT TEXT ARCHIVE ARGS...: pyfs-pack ARGS fails with TEXT, leaves no
# ARCHIVE and no temporary file ($RUN_AS, if set, runs it as another user).
RUN_AS=()
refused() {
	local what=$1 text=$2 archive=$3
	shift 3
	expect_fail "$what" "${RUN_AS[@]}" "$PYFS_PACK" "$@"
	expect_message "$text"
	[ "$(wc -l <"$WORK/last.err")" -eq 1 ] || fail "$what: more than one line: $(cat "$WORK/last.err")"
	[ ! -e "$archive" ] || fail "$what: archive $archive was created"
	no_temp_archives "$(dirname "$archive")"
}

refused "missing source" "cannot read source '$WORK/nope': No such file or directory" "$OUT/a.h5" \
	--no-compile "$OUT/a.h5" "$SRC" "$WORK/nope"
if [ -x "$PY" ]; then # the interpreter is already running when the source is found missing
	refused "missing source, interpreter started" "cannot read source '$WORK/nope'" "$OUT/a.h5" \
		-p "$PY" "$OUT/a.h5" "$WORK/nope"
fi
refused "archive inside source" "is inside source '$SRC'" "$SRC/a.h5" --no-compile "$SRC/a.h5" "$SRC"
refused "archive deep inside source" "is inside source '$SRC'" "$SRC/sub/a.h5" --no-compile "$SRC/sub/a.h5" "$SRC"
ln -s "$SRC" "$WORK/alias"
refused "archive inside source through a symlink" "is inside source" "$WORK/alias/sub/a.h5" \
	--no-compile "$WORK/alias/sub/a.h5" "$SRC"
refused "archive directory missing" "No such file or directory" "$WORK/no/dir/a.h5" --no-compile "$WORK/no/dir/a.h5" "$SRC"
refused "archive is a directory" "is a directory" "$OUT/x.h5/a" --no-compile "$OUT" "$SRC"
refused "interpreter missing" "cannot run interpreter '$WORK/python9': No such file or directory; pass --python PATH or --no-compile" \
	"$OUT/a.h5" -p "$WORK/python9" "$OUT/a.h5" "$SRC"
refused "interpreter not python" "interpreter '/bin/false' does not work as a Python 3 interpreter" \
	"$OUT/a.h5" -p /bin/false "$OUT/a.h5" "$SRC"
refused "default sources of a missing interpreter" "cannot run interpreter" "$OUT/a.h5" \
	--no-compile -p "$WORK/python9" "$OUT/a.h5"

# An existing archive is left alone without --force, replaced with it.
echo "precious" >"$OUT/exists.h5"
touch -d 2001-01-01 "$OUT/exists.h5"
before=$(stat -c '%s %Y' "$OUT/exists.h5")
expect_fail "archive exists" "$PYFS_PACK" --no-compile "$OUT/exists.h5" "$SRC"
expect_message "archive '$OUT/exists.h5' exists; pass --force to overwrite it"
[ "$(cat "$OUT/exists.h5")" = precious ] && [ "$(stat -c '%s %Y' "$OUT/exists.h5")" = "$before" ] ||
	fail "existing archive was touched"
no_temp_archives "$OUT"
"$PYFS_PACK" -q --no-compile --force "$OUT/exists.h5" "$SRC" || fail "--force did not overwrite"
"$PYFS_PACK" -q --verify "$OUT/exists.h5" || fail "overwritten archive does not verify"

# Usage errors exit 2 with a hint.
usage() {
	local rc=0
	"$PYFS_PACK" "$@" >/dev/null 2>"$WORK/usage.err" || rc=$?
	[ "$rc" -eq 2 ] || fail "pyfs-pack $*: exit $rc, expected 2"
	grep -q "Try 'pyfs-pack --help'" "$WORK/usage.err" || fail "pyfs-pack $*: no hint: $(cat "$WORK/usage.err")"
}
usage --bogus
usage -Z "$OUT/u.h5" "$SRC"
usage
usage --list
usage --list a.h5 b.h5
usage --extract a.h5
usage --verify --list a.h5
usage --verify -p python3 a.h5
usage -q -v "$OUT/u.h5" "$SRC"
[ ! -e "$OUT/u.h5" ] || fail "a usage error packed something"
"$PYFS_PACK" --help | grep -q "^Exit status:" || fail "--help does not document exit statuses"
"$PYFS_PACK" -V | grep -qE '^pyfs-pack [0-9]+\.[0-9]+' || fail "-V does not print a version"

# Unreadable file and directory, as an unprivileged user (root reads anything).
if [ "$(id -u)" -eq 0 ]; then
	command -v setpriv >/dev/null || skip "setpriv is missing (util-linux) to drop root"
	RUN_AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi
chmod 755 "$WORK"
mkdir -p "$WORK/u/src/dir" "$WORK/u/locked/closed" "$WORK/u/out"
echo secret >"$WORK/u/src/dir/secret"
chmod 000 "$WORK/u/src/dir/secret" "$WORK/u/locked/closed"
chmod 777 "$WORK/u/out"
refused "unreadable file" "cannot read '$WORK/u/src/dir/secret': Permission denied" "$WORK/u/out/a.h5" \
	--no-compile "$WORK/u/out/a.h5" "$WORK/u/src"
refused "unreadable directory" "cannot open directory '$WORK/u/locked/closed': Permission denied" \
	"$WORK/u/out/a.h5" --no-compile "$WORK/u/out/a.h5" "$WORK/u/locked"
refused "unreadable source" "cannot read source '$WORK/u/locked/closed': Permission denied" \
	"$WORK/u/out/a.h5" --no-compile "$WORK/u/out/a.h5" "$WORK/u/locked/closed"
RUN_AS=()

# A file that grows while it is packed: a background writer appends to it
# thousands of times a second while the packer reads its 64 MiB.
mkdir "$WORK/g"
head -c $((64 << 20)) /dev/urandom >"$WORK/g/growing"
(while :; do echo x >>"$WORK/g/growing"; done) &
writer=$!
at_exit "kill $writer 2>/dev/null"
sleep 0.1
refused "file growing while read" "'$WORK/g/growing' changed while being packed" "$OUT/g.h5" \
	--no-compile "$OUT/g.h5" "$WORK/g"
kill "$writer"
wait "$writer" 2>/dev/null || true

# A signal in the middle of a pack (of an 8 GiB sparse file: seconds of work)
# removes the temporary archive; the packer dies by that signal.
mkdir "$WORK/s"
truncate -s 8G "$WORK/s/sparse"
for sig in TERM INT; do
	"$PYFS_PACK" -q --no-compile "$OUT/s.h5" "$WORK/s" 2>"$WORK/sig.err" &
	pid=$!
	sleep 0.7
	kill -"$sig" "$pid" 2>/dev/null || fail "SIG$sig: the pack ended before the signal"
	rc=0
	wait "$pid" || rc=$?
	[ "$rc" -eq $((128 + $(kill -l "$sig"))) ] || fail "SIG$sig: exit status $rc: $(cat "$WORK/sig.err")"
	[ ! -e "$OUT/s.h5" ] || fail "SIG$sig: archive created"
	no_temp_archives "$OUT"
done
exit 0
