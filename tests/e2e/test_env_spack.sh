#!/bin/bash
# A spack-style view: an environment whose packages are symlinks into a store
# outside it. Without -L the archive would hold links back to the shared file
# system: each one is reported (and --strict refuses them). With -L (as cp -L)
# the targets are packed: the archive mounted over the view, with the store
# renamed away, imports numpy and a one-file module from the mount.
. "$(dirname "$0")/lib.sh"
need_fuse
need_debian_numpy

STORE=$WORK/store
VIEW=$WORK/view
"$PY" -m venv --without-pip "$VIEW" 2>"$WORK/venv.err" ||
	skip "cannot create a venv with $PY (apt-get install python3.11-venv): $(cat "$WORK/venv.err")"
SP=lib/python3.11/site-packages
mkdir -p "$STORE/py-numpy-1.24-abcdef/$SP" "$STORE/py-six-1.16-012345/$SP"
cp -a "$DIST_PACKAGES/numpy" "$STORE/py-numpy-1.24-abcdef/$SP/"
echo "VERSION = '1.16'" >"$STORE/py-six-1.16-012345/$SP/sixish.py"
ln -s "$STORE/py-numpy-1.24-abcdef/$SP/numpy" "$VIEW/$SP/numpy"
ln -s "$STORE/py-six-1.16-012345/$SP/sixish.py" "$VIEW/$SP/sixish.py"
at_exit unmount_all "$VIEW"

# --- without -L: the links are reported, --strict refuses them -----------------
"$PYFS_PACK" -v --no-compile "$WORK/links.h5" "$VIEW" 2>"$WORK/links.err" ||
	fail "pack without -L failed: $(cat "$WORK/links.err")"
for l in numpy sixish.py; do
	grep -q "leaves the archive: '$SP/$l': symlink to '$STORE/" "$WORK/links.err" ||
		fail "link '$l' into the store not reported: $(cat "$WORK/links.err")"
done
grep -q "warning: [0-9]* references leave the archive ([3-9] symlinks" "$WORK/links.err" ||
	fail "no escape count: $(cat "$WORK/links.err")"
expect_fail "pack --strict of the view" "$PYFS_PACK" --strict --no-compile "$WORK/strict.h5" "$VIEW"
expect_message "--strict refuses them"
[ ! -e "$WORK/strict.h5" ] || fail "--strict left an archive"

# --- with -L: self-contained -----------------------------------------------------
"$PYFS_PACK" -L -v "$WORK/view.h5" "$VIEW" 2>"$WORK/deref.err" || fail "pack -L failed: $(cat "$WORK/deref.err")"
! grep -q "leaves the archive: '$SP/" "$WORK/deref.err" ||
	fail "-L still reports links into the store: $(grep "leaves the archive" "$WORK/deref.err")"
"$PYFS_PACK" --list "$WORK/view.h5" >"$WORK/list"
grep -q "^-.* $SP/numpy/__init__\.py$" "$WORK/list" || fail "-L did not pack numpy's files"
grep -q "^-.* $SP/sixish\.py$" "$WORK/list" || fail "-L did not pack the one-file module"
grep -q "^-.* $SP/__pycache__/sixish\.cpython-311\.pyc$" "$WORK/list" || fail "no byte-code for the dereferenced module"

"$PYFS_MOUNT" -o nonempty "$WORK/view.h5" "$VIEW" || fail "mount over the view failed"
mv "$STORE" "$STORE.away"
at_exit mv "$STORE.away" "$STORE"
got=$(cd / && "$VIEW/bin/python" -c 'import numpy, sixish; print(numpy.__file__, sixish.__file__, int(numpy.arange(4).sum()))') ||
	fail "imports from the mounted view failed"
[ "$got" = "$VIEW/$SP/numpy/__init__.py $VIEW/$SP/sixish.py 6" ] || fail "imports not from the mount: $got"
exit 0
