#!/bin/bash
# pyfs-pack byte-code: every .py without valid byte-code for the interpreter
# gets a compiled __pycache__/NAME.TAG.pyc in the archive (missing, stale,
# wrong magic, stale checked-hash), valid ones (timestamp, checked and
# unchecked hash) are kept byte for byte, a .py that does not compile is a
# warning, the source tree is never written to, and the interpreter imports
# everything from the extracted archive without compiling. --no-compile adds
# nothing; an --exclude that matches the .pyc keeps it out.
. "$(dirname "$0")/lib.sh"
[ -x "$PY" ] || skip "$PY is missing"
TAG=$("${PY_ISOLATED[@]}" -c 'import sys; print(sys.implementation.cache_tag)')

SRC=$WORK/src
mkdir -p "$SRC/pkg/sub"
cat >"$SRC/pkg/__init__.py" <<'EOF'
from . import fresh, ok, stale, unchecked, checked, checked_stale, wrong_magic
from .sub import deep
EOF
for m in fresh ok stale unchecked checked checked_stale wrong_magic; do
	echo "NAME = '$m'" >"$SRC/pkg/$m.py"
done
echo "DEEP = True" >"$SRC/pkg/sub/deep.py"
echo "TOP = 1" >"$SRC/mod.py"
echo "def broken(:" >"$SRC/pkg/bad.py"
echo "not python" >"$SRC/pkg/data.txt"
"${PY_ISOLATED[@]}" - "$SRC" <<'PYEOF'
import os, py_compile, sys
from py_compile import PycInvalidationMode as M
pkg = os.path.join(sys.argv[1], "pkg")
def comp(name, mode=M.TIMESTAMP):
    py_compile.compile(os.path.join(pkg, name + ".py"), doraise=True, invalidation_mode=mode)
comp("__init__")
comp("ok")
comp("stale")
comp("unchecked", M.UNCHECKED_HASH)
comp("checked", M.CHECKED_HASH)
comp("checked_stale", M.CHECKED_HASH)
comp("wrong_magic")
import importlib.util
path = importlib.util.cache_from_source(os.path.join(pkg, "wrong_magic.py"))
data = bytearray(open(path, "rb").read())
data[0] ^= 0xFF
open(path, "wb").write(data)
for name in ("stale", "checked_stale"):
    with open(os.path.join(pkg, name + ".py"), "a") as f:
        f.write("CHANGED = True\n")
PYEOF
touch -d '2020-01-01 00:00:00.5' "$SRC/pkg/stale.py" "$SRC/pkg/checked_stale.py"

snapshot() { (cd "$SRC" && find . -printf '%p %y %s %T@ %m\n' | sort && find . -type f -exec md5sum {} + | sort); }
snapshot >"$WORK/before"

"$PYFS_PACK" -p "$PY" "$WORK/a.h5" "$SRC" 2>"$WORK/pack.err" || fail "pack failed: $(cat "$WORK/pack.err")"
grep -q "cannot compile '.*pkg/bad.py': SyntaxError" "$WORK/pack.err" ||
	fail "no warning for the .py that does not compile: $(cat "$WORK/pack.err")"
snapshot >"$WORK/after"
cmp -s "$WORK/before" "$WORK/after" || fail "the source tree changed: $(diff "$WORK/before" "$WORK/after" | head -5)"

"$PYFS_PACK" --extract "$WORK/a.h5" "$WORK/out" || fail "extract failed"
compare_trees_strict "$SRC" "$WORK/out" --allow-extra-pyc --allow-replaced-pyc 2>"$WORK/cmp.err" ||
	fail "extract differs from source: $(head -5 "$WORK/cmp.err")"
pyc() { echo "$1/$(dirname "$2")/__pycache__/$(basename "$2" .py).$TAG.pyc"; }
for m in pkg/fresh.py pkg/sub/deep.py mod.py; do
	[ -f "$(pyc "$WORK/out" "$m")" ] || fail "no byte-code added for $m"
	[ "$(stat -c %y "$(pyc "$WORK/out" "$m")")" = "$(stat -c %y "$SRC/$m")" ] ||
		fail "byte-code of $m does not carry the source's mtime"
done
for m in ok unchecked checked __init__; do
	cmp -s "$(pyc "$SRC" "pkg/$m.py")" "$(pyc "$WORK/out" "pkg/$m.py")" || fail "valid byte-code of pkg/$m.py was replaced"
done
for m in stale checked_stale wrong_magic; do
	! cmp -s "$(pyc "$SRC" "pkg/$m.py")" "$(pyc "$WORK/out" "pkg/$m.py")" || fail "stale byte-code of pkg/$m.py was kept"
done
[ ! -e "$(pyc "$WORK/out" pkg/bad.py)" ] || fail "byte-code for a .py that does not compile"
[ "$(stat -c %a "$WORK/out/pkg/sub/__pycache__")" = 755 ] || fail "added __pycache__ is not 0755"

# Importing everything from the extract compiles nothing.
PYTHONPATH=$WORK/out "${PY_ISOLATED[@]}" -v -c '
import mod, pkg
assert pkg.stale.CHANGED and pkg.checked_stale.CHANGED and pkg.deep.DEEP and mod.TOP == 1
' 2>"$WORK/import.err" || fail "import failed: $(grep -v '^#' "$WORK/import.err" | tail -5)"
compiled=$(grep -E "^# code object from $WORK/out/|^# bytecode is stale" "$WORK/import.err" || true)
[ -z "$compiled" ] || fail "modules compiled at import: $(printf '%s\n' "$compiled" | head -3)"
loaded=$(grep -c "^# code object from '$WORK/out/.*\.pyc'$" "$WORK/import.err" || true)
[ "$loaded" -eq 10 ] || fail "$loaded modules loaded from byte-code, expected 10"

# --no-compile adds nothing.
"$PYFS_PACK" -q --no-compile "$WORK/b.h5" "$SRC" || fail "pack --no-compile failed"
"$PYFS_PACK" --list "$WORK/b.h5" >"$WORK/list-b"
! grep -q "fresh.$TAG.pyc\|sub/__pycache__" "$WORK/list-b" || fail "--no-compile added byte-code"
grep -q "pkg/__pycache__/stale.$TAG.pyc" "$WORK/list-b" || fail "--no-compile dropped existing byte-code"

# An --exclude that matches byte-code keeps the generated files out too.
"$PYFS_PACK" -q -p "$PY" -x '*.pyc' "$WORK/c.h5" "$SRC" 2>/dev/null || fail "pack -x '*.pyc' failed"
"$PYFS_PACK" --list "$WORK/c.h5" >"$WORK/list-c"
! grep -q '\.pyc$' "$WORK/list-c" || fail "-x '*.pyc' still packed byte-code: $(grep '\.pyc$' "$WORK/list-c" | head -3)"
exit 0
