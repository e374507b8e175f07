#!/bin/bash
# pyfs-pack byte-code for a tree without any __pycache__: sources before and
# after a subpackage (a.py, b/, c.py) give an archive that --verify accepts,
# with exactly one __pycache__ per directory holding one .pyc per module, each
# the code of its own module; an --exclude that leaves out one .pyc still gives
# every other module its own code.
. "$(dirname "$0")/lib.sh"
[ -x "$PY" ] || skip "$PY is missing"
TAG=$("${PY_ISOLATED[@]}" -c 'import sys; print(sys.implementation.cache_tag)')

SRC=$WORK/src
mkdir -p "$SRC/b"
# Distinct values and sizes: a .pyc of another module cannot pass for this one's.
echo "VALUE = 'a'" >"$SRC/a.py"
echo "VALUE = 'b' + ''" >"$SRC/b/__init__.py"
echo "VALUE = 'b.inner' * 1" >"$SRC/b/inner.py"
printf "VALUE = 'c'\n# the last module\n" >"$SRC/c.py"

# check_archive ARCHIVE MODULE...: ARCHIVE passes --verify, has a __pycache__
# exactly in the directories of the MODULEs (paths without .py), and holds
# byte-code for exactly those MODULEs, each with the code of its source.
check_archive() {
	# shellcheck disable=SC2155 # basename does not fail
	local archive=$1 out=$WORK/out-$(basename "$1" .h5) m want got
	shift
	"$PYFS_PACK" --verify "$archive" >/dev/null 2>"$WORK/verify.err" ||
		fail "--verify refuses $(basename "$archive"): $(cat "$WORK/verify.err")"
	"$PYFS_PACK" --list "$archive" >"$WORK/list" || fail "--list $(basename "$archive") failed"
	want=$(for m in "$@"; do d=$(dirname "$m"); [ "$d" = . ] && echo __pycache__/ || echo "$d/__pycache__/"; done | sort -u)
	got=$(awk '$NF ~ /(^|\/)__pycache__\/$/ { print $NF }' "$WORK/list" | sort)
	[ "$got" = "$want" ] || fail "$(basename "$archive"): __pycache__ directories: '$got', expected '$want'"
	want=$(for m in "$@"; do echo "$(dirname "$m")/__pycache__/$(basename "$m").$TAG.pyc"; done | sed 's|^\./||' | sort)
	got=$(awk '$NF ~ /\.pyc$/ { print $NF }' "$WORK/list" | sort)
	[ "$got" = "$want" ] || fail "$(basename "$archive"): byte-code: '$got', expected '$want'"
	"$PYFS_PACK" --extract "$archive" "$out" || fail "--extract $(basename "$archive") failed"
	# Run each .pyc's code object on its own: it must define its module's VALUE.
	"${PY_ISOLATED[@]}" - "$out" "$TAG" "$@" <<'PYEOF' || fail "$(basename "$archive"): byte-code does not match its module"
import marshal, os, sys
out, tag, modules = sys.argv[1], sys.argv[2], sys.argv[3:]
bad = 0
for m in modules:
    d, name = os.path.split(m)
    with open(os.path.join(out, d, "__pycache__", f"{name}.{tag}.pyc"), "rb") as f:
        code = marshal.loads(f.read()[16:])
    ns = {}
    exec(code, ns)
    want = d.replace("/", ".") if name == "__init__" else m.replace("/", ".")
    if ns.get("VALUE") != want or not ("/" + code.co_filename).endswith("/" + m + ".py"):
        print(f"{m}: code of {code.co_filename} defines {ns.get('VALUE')!r}", file=sys.stderr)
        bad += 1
sys.exit(bad)
PYEOF
	# And the interpreter imports them from the byte-code, compiling nothing.
	PYTHONPATH=$out "${PY_ISOLATED[@]}" -B -v -c '
import a, b, b.inner, c
assert (a.VALUE, b.VALUE, b.inner.VALUE, c.VALUE) == ("a", "b", "b.inner", "c")
' 2>"$WORK/import.err" || fail "import from $(basename "$archive") failed: $(grep -v '^#' "$WORK/import.err" | tail -5)"
	got=$(grep -c "^# code object from '$out/.*\.pyc'$" "$WORK/import.err" || true)
	[ "$got" -eq "$#" ] || fail "$(basename "$archive"): $got modules imported from byte-code, expected $#"
}

"$PYFS_PACK" -q -p "$PY" "$WORK/all.h5" "$SRC" || fail "pack failed"
check_archive "$WORK/all.h5" a b/__init__ b/inner c

"$PYFS_PACK" -q -p "$PY" -x 'a.*.pyc' "$WORK/no-a.h5" "$SRC" 2>"$WORK/pack.err" ||
	fail "pack -x 'a.*.pyc' failed: $(cat "$WORK/pack.err")"
check_archive "$WORK/no-a.h5" b/__init__ b/inner c
[ ! -e "$SRC/__pycache__" ] && [ ! -e "$SRC/b/__pycache__" ] || fail "the source tree was written to"
exit 0
