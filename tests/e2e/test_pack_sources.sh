#!/bin/bash
# pyfs-pack sources: several sources merge at the archive root (directories
# merge, any other clash keeps the first source's entry and is reported), a
# file source lands at the root under its name, --exclude leaves paths out
# (by last name, or by path from the root), a source given twice is packed
# once, and without SOURCE the interpreter's site-packages are packed (a
# venv's here) with the code lines of its top-level .pth files reported.
. "$(dirname "$0")/lib.sh"
[ -x "$PY" ] || skip "$PY is missing"

A=$WORK/a B=$WORK/b
mkdir -p "$A/pkg" "$A/shared/x" "$B/pkg" "$B/shared/y" "$B/thing" "$A/tests" "$B/pkg/tests"
echo a >"$A/pkg/a.txt"
echo b >"$B/pkg/b.txt"
echo first >"$A/common.txt"
echo second >"$B/common.txt"
echo file >"$A/thing"
echo inside >"$B/thing/inside"
echo x >"$A/shared/x/f"
echo y >"$B/shared/y/f"
echo t >"$A/tests/t.txt"
echo t >"$B/pkg/tests/t.txt"
echo skip >"$B/pkg/skip.me"
ln -s pkg "$B/common.link"
ln -s other "$A/common.link"
echo single >"$WORK/single.txt"

"$PYFS_PACK" --no-compile "$WORK/m.h5" "$A" "$B" "$WORK/single.txt" 2>"$WORK/pack.err" ||
	fail "pack of two sources failed: $(cat "$WORK/pack.err")"
"$PYFS_PACK" --list "$WORK/m.h5" | sed -E 's/^.{10} +[0-9]+ +[0-9]+ [0-9-]+ [0-9:]+ //' >"$WORK/list"
cat >"$WORK/expected" <<'EOF'
common.link -> other
common.txt
pkg/
pkg/a.txt
pkg/b.txt
pkg/skip.me
pkg/tests/
pkg/tests/t.txt
shared/
shared/x/
shared/x/f
shared/y/
shared/y/f
single.txt
tests/
tests/t.txt
thing
EOF
diff -u "$WORK/expected" "$WORK/list" >&2 || fail "merged tree is not as expected"
for clash in common.txt thing common.link; do
	grep -q "warning: '$clash' of source '$B' conflicts with the one of source '$A': keeping the first" \
		"$WORK/pack.err" || fail "clash on $clash not reported: $(cat "$WORK/pack.err")"
done
[ "$(grep -c conflicts "$WORK/pack.err")" -eq 3 ] || fail "wrong number of clashes reported"
"$PYFS_PACK" --extract "$WORK/m.h5" "$WORK/m"
[ "$(cat "$WORK/m/common.txt")" = first ] || fail "the first source did not win"

# --exclude: a name anywhere, or a path from the root.
"$PYFS_PACK" -q --no-compile -x tests -x '/pkg/*.me' -x 'shared/y' "$WORK/x.h5" "$A" "$B" 2>/dev/null ||
	fail "pack with --exclude failed"
"$PYFS_PACK" --list "$WORK/x.h5" >"$WORK/xlist"
! grep -qE 'tests|skip\.me|shared/y' "$WORK/xlist" || fail "--exclude did not exclude: $(cat "$WORK/xlist")"
grep -q 'shared/x/f$' "$WORK/xlist" || fail "--exclude excluded too much"

# A source given twice (here through a symlink) is packed once, without clashes.
ln -s "$A" "$WORK/a-link"
"$PYFS_PACK" --no-compile "$WORK/t.h5" "$A" "$WORK/a-link/" 2>"$WORK/twice.err" || fail "pack of a source twice failed"
grep -q "source '$WORK/a-link/' is '$A' again: packing it once" "$WORK/twice.err" ||
	fail "repeated source not reported: $(cat "$WORK/twice.err")"
! grep -q conflicts "$WORK/twice.err" || fail "a repeated source clashed with itself"

# No SOURCE: the interpreter's site-packages, here a venv's.
"$PY" -m venv --without-pip "$WORK/venv" 2>/dev/null || skip "cannot create a venv with $PY"
SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir "$SITE/venvpkg"
echo "VALUE = 42" >"$SITE/venvpkg/__init__.py"
echo "import venvpkg" >"$SITE/zz-hook.pth"
"$PYFS_PACK" -p "$WORK/venv/bin/python" "$WORK/v.h5" 2>"$WORK/venv.err" || fail "pack of the venv failed: $(cat "$WORK/venv.err")"
grep -q "packing site-packages of '$WORK/venv/bin/python' ('$(readlink -f "$PY")', Python 3\.[0-9.]*): '$SITE'" "$WORK/venv.err" ||
	fail "packed directories not reported: $(cat "$WORK/venv.err")"
grep -q "warning: 'zz-hook.pth' line 1 runs code ('import venvpkg'), which does not happen when the archive is used through PYTHONPATH" "$WORK/venv.err" ||
	fail ".pth file not reported: $(cat "$WORK/venv.err")"
"$PYFS_PACK" --list "$WORK/v.h5" >"$WORK/vlist"
grep -q " venvpkg/__pycache__/__init__\..*\.pyc$" "$WORK/vlist" || fail "venv package or its byte-code missing: $(cat "$WORK/vlist")"
exit 0
