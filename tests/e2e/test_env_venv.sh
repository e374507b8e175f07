#!/bin/bash
# A venv packed whole and mounted over its own path. The venv (made by
# /usr/bin/python3.11 -m venv) gets numpy and scipy copied in, a console script
# with an absolute shebang naming the venv's python, and an editable-style .pth
# naming a directory inside the venv, and a .pth that imports a module that has
# no byte-code. pyfs-pack, without -p, compiles with the venv's own interpreter
# (-I -B) and writes nothing into the venv (every file's type, size, mtime, mode
# and contents compared). Mounting over the non-empty venv is
# refused without -o nonempty; with it, ENV/bin/hello and ENV/bin/python import
# numpy, scipy.linalg and the editable package from the mount: the daemon's
# counters grow, every file the interpreter opens under ENV is in the archive,
# and a file added underneath after packing is invisible. After the unmount the
# original venv is back, untouched. Then the same through
# pyfs-prologue --at-source (PATH and PYFS_MOUNTPOINT) and pyfs-epilogue.
. "$(dirname "$0")/lib.sh"
need_fuse
need_debian_numpy
command -v strace >/dev/null || skip "strace is missing (apt-get install strace)"
command -v getfattr >/dev/null || skip "getfattr is missing (apt-get install attr)"

ENV=$WORK/env
"$PY" -m venv --without-pip "$ENV" 2>"$WORK/venv.err" ||
	skip "cannot create a venv with $PY (apt-get install python3.11-venv): $(cat "$WORK/venv.err")"
SP=$ENV/lib/python3.11/site-packages
[ -d "$SP" ] || fail "venv has no '$SP'"
cp -a "$DIST_PACKAGES/numpy" "$DIST_PACKAGES/scipy" "$SP/"
mkdir -p "$ENV/src/editpkg"
echo "VALUE = 42" >"$ENV/src/editpkg/__init__.py"
echo "$ENV/src" >"$SP/__editable__.editpkg-0.1.pth"
printf '#!%s\nimport editpkg, numpy\nprint("hello", editpkg.VALUE, numpy.__file__)\n' \
	"$ENV/bin/python" >"$ENV/bin/hello"
chmod 755 "$ENV/bin/hello"
# A .pth that imports a module without byte-code: site.py runs it in every
# interpreter of the venv, pyfs-pack's included (which must not write its .pyc).
echo "HOOKED = True" >"$SP/pyfs_test_hook.py"
echo "import pyfs_test_hook" >"$SP/zz-pyfs-test-hook.pth"
at_exit unmount_all "$ENV"

# Every entry of the venv: path, type, size, mtime (ns), mode, link target; then contents.
snapshot() {
	(
		cd "$ENV"
		find . -printf '%p %y %s %T@ %m %l\n' | LC_ALL=C sort
		find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum
	)
}
snapshot >"$WORK/before"

# --- pack without -p -----------------------------------------------------------
"$PYFS_PACK" -v "$WORK/env.h5" "$ENV" 2>"$WORK/pack.err" || fail "pack of the venv failed: $(cat "$WORK/pack.err")"
real_py=$(readlink -f "$PY")
grep -q "packing venv '$ENV' (Python 3.11) with its interpreter '$real_py'" "$WORK/pack.err" ||
	fail "venv not recognized: $(cat "$WORK/pack.err")"
grep -q "packed '$WORK/env.h5': .*, interpreter '$real_py' (Python 3\.11\.[0-9]*), " "$WORK/pack.err" ||
	fail "summary does not name the interpreter: $(tail -n 1 "$WORK/pack.err")"
# The venv's interpreter is a symlink to the base one: reported, not hidden.
grep -q "leaves the archive: 'bin/python3.11': symlink to '$real_py'" "$WORK/pack.err" ||
	grep -q "leaves the archive: 'bin/python3.11': symlink to '$PY'" "$WORK/pack.err" ||
	fail "the base interpreter symlink is not reported: $(cat "$WORK/pack.err")"
snapshot >"$WORK/after-pack"
diff -q "$WORK/before" "$WORK/after-pack" >/dev/null ||
	fail "pyfs-pack wrote into the venv: $(diff "$WORK/before" "$WORK/after-pack" | head -n 5)"
"$PYFS_PACK" --list "$WORK/env.h5" >"$WORK/list"
grep -q ' src/editpkg/__pycache__/__init__\.cpython-311\.pyc$' "$WORK/list" ||
	fail "no byte-code for the editable package in the archive"
"$PYFS_MOUNT" --info "$WORK/env.h5" >"$WORK/info" || fail "pyfs-mount --info failed"
grep -qxF "source_path=$ENV" "$WORK/info" || fail "source path not recorded: $(cat "$WORK/info")"
grep -qx "bin=yes" "$WORK/info" || fail "bin/ not seen: $(cat "$WORK/info")"

# A file added underneath after packing: hidden by the mount.
echo "SHADOW = 1" >"$SP/shadowmod.py"
snapshot >"$WORK/before-mount"

# --- mount over the venv ---------------------------------------------------------
expect_fail "mount over the non-empty venv without -o nonempty" "$PYFS_MOUNT" "$WORK/env.h5" "$ENV"
expect_message "is not empty"
is_mounted "$ENV" && fail "a refused mount left a mount"
"$PYFS_MOUNT" -o nonempty "$WORK/env.h5" "$ENV" || fail "mount -o nonempty failed"
is_mounted "$ENV" || fail "'$ENV' is not mounted"
[ ! -e "$SP/shadowmod.py" ] || fail "the directory underneath shows through the mount"

stats() { getfattr -n user.pyfs.stats --only-values "$ENV" | awk -v k="$1" '$1 == k { print $2 }'; }
lookups0=$(stats lookups)
opens0=$(stats opens)
got=$(cd / && "$ENV/bin/hello") || fail "'$ENV/bin/hello' failed"
[ "$got" = "hello 42 $SP/numpy/__init__.py" ] || fail "bin/hello printed '$got'"
got=$(cd / && strace -f -qq -e trace=%file -e signal=none -o "$WORK/trace" "$ENV/bin/python" -c '
import numpy, scipy.linalg, editpkg, sys
print(sys.prefix, numpy.__file__, scipy.linalg.__file__, editpkg.__file__)') ||
	fail "'$ENV/bin/python' cannot import numpy, scipy.linalg and editpkg"
[ "$got" = "$ENV $SP/numpy/__init__.py $SP/scipy/linalg/__init__.py $ENV/src/editpkg/__init__.py" ] ||
	fail "imports not from the mount: $got"
(cd / && "$ENV/bin/python" -c 'import shadowmod' 2>/dev/null) && fail "a module underneath the mount was imported"
lookups1=$(stats lookups)
opens1=$(stats opens)
[ "$lookups1" -gt "$lookups0" ] && [ "$opens1" -gt "$opens0" ] ||
	fail "daemon counters did not grow: lookups $lookups0 -> $lookups1, opens $opens0 -> $opens1"

# Every file call under ENV that succeeded names an entry of the archive (so pyfs
# answered it: the directory underneath differs by shadowmod.py alone).
awk -v env="$ENV/" '
	!/= -1 / && !/unfinished/ && match($0, /"[^"]*"/) {
		p = substr($0, RSTART + 1, RLENGTH - 2)
		if (index(p, env) == 1) print substr(p, length(env) + 1)
	}' "$WORK/trace" | sed 's|/$||' | LC_ALL=C sort -u >"$WORK/touched"
[ -s "$WORK/touched" ] || fail "strace saw no file call under '$ENV'"
sed -E 's/^[^ ]+ +[0-9]+ +[0-9]+ [0-9-]+ [0-9:]+ //; s/ -> .*//; s|/$||' "$WORK/list" |
	LC_ALL=C sort -u >"$WORK/names"
missing=$(LC_ALL=C comm -23 "$WORK/touched" "$WORK/names" | grep -v '^$' || true)
[ -z "$missing" ] || fail "file calls under '$ENV' for paths the archive lacks: $(head -n 5 <<<"$missing")"
outside=$(grep -c '"/usr/lib/python3.11/' "$WORK/trace" || true)
note "$(wc -l <"$WORK/touched") paths under the venv served by pyfs (lookups $lookups0 -> $lookups1);" \
	"$outside file calls still go to the base interpreter's /usr/lib/python3.11 (a venv's nature)"

fusermount3 -u "$ENV" || fail "unmount failed"
snapshot >"$WORK/after-mount"
diff -q "$WORK/before-mount" "$WORK/after-mount" >/dev/null ||
	fail "the venv changed under the mount: $(diff "$WORK/before-mount" "$WORK/after-mount" | head -n 5)"

# --- the same through the job scripts --------------------------------------------
out=$("$PYFS_PROLOGUE" -q --launcher local --at-source "$WORK/env.h5") || fail "pyfs-prologue --at-source failed"
eval "$out"
[ "$PYFS_MOUNTPOINT" = "$ENV" ] || fail "PYFS_MOUNTPOINT is '$PYFS_MOUNTPOINT', not '$ENV'"
[ "${PATH%%:*}" = "$ENV/bin" ] || fail "PATH does not start with '$ENV/bin': $PATH"
is_mounted "$ENV" || fail "pyfs-prologue --at-source did not mount '$ENV'"
got=$(cd / && hello) || fail "hello from PATH failed"
[ "$got" = "hello 42 $SP/numpy/__init__.py" ] || fail "hello from PATH printed '$got'"
"$PYFS_EPILOGUE" -q --local || fail "pyfs-epilogue failed"
is_mounted "$ENV" && fail "pyfs-epilogue left '$ENV' mounted"
[ -d "$ENV" ] || fail "pyfs-epilogue removed the venv directory"
snapshot >"$WORK/after-scripts"
diff -q "$WORK/before-mount" "$WORK/after-scripts" >/dev/null ||
	fail "the venv changed: $(diff "$WORK/before-mount" "$WORK/after-scripts" | head -n 5)"
exit 0
