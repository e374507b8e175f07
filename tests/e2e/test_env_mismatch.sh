#!/bin/bash
# Byte-code must come from the environment's own Python. Only 3.11 is installed
# here, so 3.12 is faked: a wrapper that runs 3.11 reporting version 3.12 and
# cache tag cpython-312, in an environment laid out as 3.12 (pyvenv.cfg,
# bin/python3.12, lib/python3.12). Refused with a message naming both, and
# nothing written (no archive, no temporary file, the sources unchanged):
#   - the 3.12 environment with -p /usr/bin/python3.11;
#   - a 3.11 venv with -p the "3.12" interpreter;
#   - a "3.12" environment whose bin/python3.12 is really 3.11.
# Without -p the 3.12 environment is compiled by its own interpreter (.cpython-312.pyc).
. "$(dirname "$0")/lib.sh"
[ -x "$PY" ] || skip "$PY is missing (apt-get install python3.11)"

fake=$WORK/fake/python3.12
mkdir -p "$WORK/fake" "$WORK/out"
cat >"$fake" <<FAKE
#!/bin/sh
# pyfs-pack runs: python -I -B -c HELPER
exec $PY -I -B -c 'import sys, types
sys.version_info = (3, 12, 0, "final", 0)
sys.implementation = types.SimpleNamespace(**dict(vars(sys.implementation), cache_tag="cpython-312"))
exec(compile(sys.argv[1], "<helper>", "exec"))' "\$4"
FAKE
chmod 755 "$fake"

E12=$WORK/env312
mkdir -p "$E12/bin" "$E12/lib/python3.12/site-packages"
printf 'home = %s\nversion = 3.12.0\n' "$WORK/fake" >"$E12/pyvenv.cfg"
ln -s "$fake" "$E12/bin/python3.12"
echo "X = 1" >"$E12/lib/python3.12/site-packages/m12.py"

"$PY" -m venv --without-pip "$WORK/env311" 2>"$WORK/venv.err" ||
	skip "cannot create a venv with $PY (apt-get install python3.11-venv): $(cat "$WORK/venv.err")"
echo "X = 1" >"$WORK/env311/lib/python3.11/site-packages/m11.py"

snapshot() { find "$E12" "$WORK/env311" -printf '%p %y %s %T@ %m\n' | LC_ALL=C sort; }
snapshot >"$WORK/before"
nothing_written() {
	[ -z "$(ls -A "$WORK/out")" ] || fail "$1: left $(ls -A "$WORK/out")"
	snapshot | diff -q "$WORK/before" - >/dev/null || fail "$1: the sources changed"
}
real_py=$(readlink -f "$PY")

expect_fail "3.12 environment with -p 3.11" "$PYFS_PACK" -p "$PY" "$WORK/out/a.h5" "$E12"
expect_message "interpreter '$PY' ('$real_py', Python 3.11"
expect_message "cache tag 'cpython-311') does not match environment '$E12' (Python 3.12, cache tag 'cpython-312')"
nothing_written "3.12 environment with -p 3.11"

expect_fail "3.11 venv with -p 3.12" "$PYFS_PACK" -p "$fake" "$WORK/out/b.h5" "$WORK/env311"
expect_message "interpreter '$fake'"
expect_message "Python 3.12.0, cache tag 'cpython-312') does not match environment '$WORK/env311' (Python 3.11, cache tag 'cpython-311')"
nothing_written "3.11 venv with -p 3.12"

# A "3.12" layout whose interpreter is 3.11.
ln -sf "$PY" "$E12/bin/python3.12"
snapshot >"$WORK/before"
expect_fail "3.12 environment running 3.11" "$PYFS_PACK" "$WORK/out/c.h5" "$E12"
expect_message "environment '$E12' is Python 3.12 (lib/python3.12, cache tag 'cpython-312') but its interpreter '$E12/bin/python3.12' ('$real_py') is Python 3.11"
nothing_written "3.12 environment running 3.11"

# Without -p: the environment's own (fake 3.12) interpreter compiles.
ln -sf "$fake" "$E12/bin/python3.12"
"$PYFS_PACK" "$WORK/ok.h5" "$E12" 2>"$WORK/ok.err" || fail "pack of the 3.12 environment failed: $(cat "$WORK/ok.err")"
"$PYFS_PACK" --list "$WORK/ok.h5" | grep -q ' lib/python3.12/site-packages/__pycache__/m12\.cpython-312\.pyc$' ||
	fail "not compiled by the environment's interpreter: $("$PYFS_PACK" --list "$WORK/ok.h5")"
# (the wrapper runs 3.11: that is the executable it reports)
grep -q ", interpreter '$real_py' (Python 3.12.0), " "$WORK/ok.err" ||
	fail "summary does not name the environment's interpreter: $(cat "$WORK/ok.err")"
exit 0
