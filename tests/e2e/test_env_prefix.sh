#!/bin/bash
# A self-contained prefix (interpreter, standard library, site-packages) packed
# whole without -p, mounted at ANOTHER path and run as M/bin/python3.11 with the
# original renamed away: sys.prefix, the standard library (json, encodings) and
# numpy come from M, nothing on sys.path lies outside M, and no module is
# compiled (strace sees no .py file opened: every import loads its .pyc).
#
# The prefix is a copy of Debian's python3.11 (binary and /usr/lib/python3.11).
# Debian patches site.py so that a non-venv prefix gets lib/python3/dist-packages
# (Debian's layout), never lib/python3.11/site-packages: numpy goes there. A
# conda or python.org build uses lib/python3.11/site-packages; the venv case
# (test_env_venv) covers the portable layout.
. "$(dirname "$0")/lib.sh"
need_fuse
need_debian_numpy
command -v strace >/dev/null || skip "strace is missing (apt-get install strace)"
[ -f /usr/lib/python3.11/os.py ] || skip "/usr/lib/python3.11 is missing (apt-get install python3.11)"

P=$WORK/prefix
M=$WORK/m
mkdir -p "$P/bin" "$P/lib/python3/dist-packages" "$M"
cp -a "$(readlink -f "$PY")" "$P/bin/python3.11"
cp -a /usr/lib/python3.11 "$P/lib/"
cp -a "$DIST_PACKAGES/numpy" "$P/lib/python3/dist-packages/"
at_exit unmount_all "$M"

"$PYFS_PACK" "$WORK/p.h5" "$P" 2>"$WORK/pack.err" || fail "pack of the prefix failed: $(cat "$WORK/pack.err")"
grep -q "packing environment '$P' (Python 3.11) with its interpreter '$P/bin/python3.11'" "$WORK/pack.err" ||
	fail "prefix not recognized: $(cat "$WORK/pack.err")"
grep -q ", interpreter '$P/bin/python3.11' (Python 3\.11\.[0-9]*), " "$WORK/pack.err" ||
	fail "summary does not name the interpreter: $(tail -n 1 "$WORK/pack.err")"

"$PYFS_MOUNT" "$WORK/p.h5" "$M" || fail "mount failed"
mv "$P" "$P.away"
at_exit mv "$P.away" "$P"
got=$(cd / && env -u PYTHONPATH -u PYTHONHOME strace -f -qq -e trace=open,openat -e signal=none \
	-o "$WORK/trace" "$M/bin/python3.11" -s -c '
import sys, json, encodings, numpy
outside = [p for p in sys.path if p and not p.startswith(sys.prefix + "/")]
print(sys.prefix, json.__file__, encodings.__file__, numpy.__file__, outside)') ||
	fail "'$M/bin/python3.11' cannot import json, encodings and numpy"
want="$M $M/lib/python3.11/json/__init__.py $M/lib/python3.11/encodings/__init__.py"
want+=" $M/lib/python3/dist-packages/numpy/__init__.py []"
[ "$got" = "$want" ] || fail "not everything from the mount: got '$got'"
compiled=$(grep -v ' = -1 ' "$WORK/trace" | grep -E '"[^"]*\.py"' || true)
[ -z "$compiled" ] || fail "modules were compiled (their .py read): $(head -n 3 <<<"$compiled")"
pycs=$(grep -v ' = -1 ' "$WORK/trace" | grep -c "\"$M/.*\.pyc\"" || true)
[ "$pycs" -gt 50 ] || fail "only $pycs .pyc files opened from the mount"
note "$pycs modules loaded from their .pyc in the mount, none compiled"
exit 0
