#!/bin/bash
# pyfs-pack round trip of a real environment: Debian's dist-packages (numpy,
# scipy and everything else installed there, ~0.5 GB). --verify passes, the
# extracted tree equals the source (contents, modes, ns mtimes, symlinks,
# hard links; only byte-code the packer added may be extra), and the
# interpreter imports numpy and scipy from it without compiling any module:
# `python -v` names the .py file for every module it compiles and the .pyc
# file for every module it loads from byte-code.
. "$(dirname "$0")/lib.sh"
need_debian_numpy

"$PYFS_PACK" -p "$PY" "$WORK/env.h5" "$DIST_PACKAGES" 2>"$WORK/pack.err" ||
	fail "pack failed: $(cat "$WORK/pack.err")"
note "$(tail -1 "$WORK/pack.err")"
"$PYFS_PACK" --verify "$WORK/env.h5" >"$WORK/verify.out" || fail "verify failed"
grep -q "^$WORK/env.h5: ok (" "$WORK/verify.out" || fail "verify said: $(cat "$WORK/verify.out")"

"$PYFS_PACK" --extract "$WORK/env.h5" "$WORK/env" || fail "extract failed"
rm -f "$WORK/env.h5"
diff_trees "$DIST_PACKAGES" "$WORK/env"
compare_trees_strict "$DIST_PACKAGES" "$WORK/env" --allow-extra-pyc 2>"$WORK/cmp.err" ||
	fail "extract differs from source: $(head -5 "$WORK/cmp.err")"

# Import from the extracted tree only (-S: no site, so no dist-packages on sys.path).
before=$(find "$WORK/env" | wc -l)
PYTHONPATH=$WORK/env "${PY_ISOLATED[@]}" -v -c '
import sys
import numpy, scipy, scipy.linalg, scipy.sparse
for m in (numpy, scipy, scipy.linalg, scipy.sparse):
    assert m.__file__.startswith(sys.argv[1] + "/"), m.__file__
assert abs(scipy.linalg.det(numpy.eye(3) * 2) - 8) < 1e-9
print("imported", numpy.__version__, scipy.__version__)
' "$WORK/env" >"$WORK/import.out" 2>"$WORK/import.err" ||
	fail "import from the extracted tree failed: $(grep -v '^#' "$WORK/import.err" | tail -5)"
loaded=$(grep -c "^# code object from '$WORK/env/.*\.pyc'$" "$WORK/import.err" || true)
compiled=$(grep "^# code object from $WORK/env/" "$WORK/import.err" || true)
stale=$(grep "^# bytecode is stale for" "$WORK/import.err" || true)
[ -z "$compiled$stale" ] || fail "modules were compiled at import: $(printf '%s\n' "$compiled$stale" | head -3)"
[ "$loaded" -gt 100 ] || fail "only $loaded modules loaded from byte-code under $WORK/env"
[ "$(find "$WORK/env" | wc -l)" -eq "$before" ] || fail "the import wrote files into the tree"
note "$(cat "$WORK/import.out"): $loaded modules from byte-code, none compiled"
exit 0
