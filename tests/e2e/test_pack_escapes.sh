#!/bin/bash
# References that leave the archive are reported at pack time, each one with -v,
# counted in the summary, and refused with --strict (nothing written):
#   - a .so with an absolute RUNPATH (built here with gcc -Wl,-rpath) and one
#     with an absolute DT_NEEDED; $ORIGIN-relative RUNPATHs are not escapes;
#   - an absolute shebang (not /usr/bin/env, nor one into the source itself);
#   - .pth lines, at the root and deeper, absolute or climbing out;
#   - symlinks, absolute or climbing out.
# --mount-path moves the place references may point into. The directories a
# root .pth adds inside the archive are recorded and appended to PYTHONPATH by
# pyfs-prologue; a .pth line that imports is warned about.
. "$(dirname "$0")/lib.sh"
command -v gcc >/dev/null || skip "gcc is missing (apt-get install build-essential)"
[ -x "$PY" ] || skip "$PY is missing (apt-get install python3.11)"

S=$WORK/src
mkdir -p "$S/lib" "$S/bin" "$S/sub/deeper" "$S/extra" "$WORK/dep" "$WORK/out"
echo 'int dep(void) { return 1; }' >"$WORK/dep.c"
gcc -shared -fPIC -o "$WORK/dep/libdep.so" "$WORK/dep.c"
echo 'int f(void) { return 2; }' >"$WORK/f.c"
gcc -shared -fPIC -o "$S/lib/librunpath.so" "$WORK/f.c" -Wl,--enable-new-dtags,-rpath,/opt/elsewhere/lib
gcc -shared -fPIC -o "$S/lib/liborigin.so" "$WORK/f.c" -Wl,--enable-new-dtags,-rpath,'$ORIGIN/../lib'
echo 'int dep(void); int g(void) { return dep(); }' >"$WORK/g.c"
# No soname in libdep.so: the linker records the path it was given.
gcc -shared -fPIC -o "$S/lib/libneeded.so" "$WORK/g.c" -Wl,--no-as-needed "$WORK/dep/libdep.so"
printf '#!/opt/python/bin/python3\nprint(1)\n' >"$S/bin/tool"
printf '#!/usr/bin/env python3\nprint(1)\n' >"$S/bin/portable"
printf '#!%s/bin/tool\n' "$S" >"$S/bin/inside"
chmod 755 "$S/bin/tool" "$S/bin/portable" "$S/bin/inside"
printf '/opt/elsewhere/site\nextra\nimport os\n# comment\n' >"$S/abs.pth"
echo "../../../outside" >"$S/sub/deeper/up.pth"
echo "VALUE = 7" >"$S/extra/extramod.py"
ln -s /etc/hostname "$S/hostname"
ln -s ../../etc "$S/sub/up"
ln -s ../extra "$S/sub/fine"

"$PYFS_PACK" -v --no-compile "$WORK/e.h5" "$S" 2>"$WORK/pack.err" || fail "pack failed: $(cat "$WORK/pack.err")"
expect() { grep -qF -- "leaves the archive: '$1': $2" "$WORK/pack.err" || fail "not reported: '$1': $2"; }
expect lib/librunpath.so "RUNPATH '/opt/elsewhere/lib'"
expect lib/libneeded.so "DT_NEEDED '$WORK/dep/libdep.so'"
expect bin/tool "shebang '/opt/python/bin/python3'"
expect abs.pth ".pth line 1 '/opt/elsewhere/site'"
expect sub/deeper/up.pth ".pth line 1 '../../../outside'"
expect hostname "symlink to '/etc/hostname'"
expect sub/up "symlink to '../../etc'"
n=$(grep -c "leaves the archive:" "$WORK/pack.err")
[ "$n" = 7 ] || fail "$n escapes listed, not 7 (false positives?): $(grep "leaves the archive" "$WORK/pack.err")"
grep -q "warning: 7 references leave the archive (2 symlinks, 1 shebangs, 2 ELF paths, 2 .pth lines)" "$WORK/pack.err" ||
	fail "no counts: $(cat "$WORK/pack.err")"
grep -q "packed '$WORK/e.h5': .*, 7 references leave it, [0-9.]* s$" "$WORK/pack.err" || fail "summary without the count"
grep -q "warning: 'abs.pth' line 3 runs code ('import os')" "$WORK/pack.err" || fail ".pth import line not warned about"

# Without -v, the counts only.
"$PYFS_PACK" --no-compile "$WORK/q.h5" "$S" 2>"$WORK/q.err" || fail "pack without -v failed"
! grep -q "leaves the archive:" "$WORK/q.err" || fail "escapes listed without -v"

# --strict: each is an error, nothing is written.
expect_fail "pack --strict" "$PYFS_PACK" --strict --no-compile "$WORK/out/s.h5" "$S"
expect_message "7 references leave the archive"
expect_message "--strict refuses them"
grep -qF "pyfs-pack: 'lib/librunpath.so': RUNPATH '/opt/elsewhere/lib'" "$WORK/last.err" || fail "--strict does not name each escape"
[ -z "$(ls -A "$WORK/out")" ] || fail "--strict left $(ls -A "$WORK/out")"

# --mount-path /opt/elsewhere: the RUNPATH and the absolute .pth line point into it.
"$PYFS_PACK" -v --no-compile --mount-path /opt/elsewhere "$WORK/m.h5" "$S" 2>"$WORK/m.err" ||
	fail "pack --mount-path failed"
! grep -q "RUNPATH '/opt/elsewhere/lib'" "$WORK/m.err" || fail "--mount-path: RUNPATH into it still reported"
grep -q "shebang '$S/bin/tool'" "$WORK/m.err" || fail "--mount-path: a shebang into the source is not reported"

# The directory the root .pth adds: recorded, and appended to PYTHONPATH by the prologue.
"$PYFS_MOUNT" --info "$WORK/e.h5" | grep -qx "pth_dir=extra" || fail "pth_dir not recorded: $("$PYFS_MOUNT" --info "$WORK/e.h5")"
if [ -c /dev/fuse ] && command -v fusermount3 >/dev/null; then
	mkdir "$WORK/mnt"
	at_exit unmount_all "$WORK/mnt"
	out=$(PYTHONPATH=/job/path "$PYFS_PROLOGUE" -q --launcher local "$WORK/e.h5" "$WORK/mnt") || fail "prologue failed"
	got=$(PYTHONPATH=/job/path bash -c "$out"'; echo "$PYTHONPATH"')
	[ "$got" = "$WORK/mnt:/job/path:$WORK/mnt/extra" ] || fail "PYTHONPATH is '$got'"
	got=$(cd / && PYTHONPATH=/job/path bash -c "$out"'; "$0" -s -S -c "import extramod; print(extramod.__file__)"' "$PY") ||
		fail "module of the .pth directory not importable"
	[ "$got" = "$WORK/mnt/extra/extramod.py" ] || fail "extramod from '$got'"
	"$PYFS_EPILOGUE" -q --local "$WORK/mnt" || fail "epilogue failed"
fi
exit 0
