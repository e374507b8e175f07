#!/bin/bash
# The Debian interpreter imports numpy, scipy (with compiled submodules), mpi4py
# and h5py from the mount alone: every __file__ of those packages lies under the
# mount (so their .so files were mmap'ed from it), and no .py file under the
# mount is opened (strace): all byte-code came from the archived .pyc files.
. "$(dirname "$0")/lib.sh"
need_fuse
need_debian_numpy
command -v strace >/dev/null || skip "strace is missing (apt-get install strace)"
numpy_archive

mnt=$WORK/mnt
mkdir "$mnt"
at_exit unmount_all "$mnt"
"$PYFS_MOUNT" "$NUMPY_ARCHIVE" "$mnt" || fail "pyfs-mount failed"

cat >"$WORK/imports.py" <<'EOF'
import sys
import mpi4py
mpi4py.rc.initialize = False  # load mpi4py.MPI without starting MPI
import numpy, scipy, scipy.linalg, scipy.sparse, scipy.special, h5py
from mpi4py import MPI
numpy.linalg.inv(numpy.eye(3))
mnt = sys.argv[1] + "/"
files = [(name, m.__file__) for name, m in list(sys.modules.items())
         if name.split(".")[0] in ("numpy", "scipy", "mpi4py", "h5py")
         and getattr(m, "__file__", None)]
bad = [f"{name}: {path}" for name, path in files if not path.startswith(mnt)]
for line in bad[:10]:
    print("not from the mount:", line, file=sys.stderr)
if len(files) < 100:
    print(f"only {len(files)} modules imported", file=sys.stderr)
sys.exit(1 if bad or len(files) < 100 else 0)
EOF

PYTHONPATH=$mnt strace -f -qq -e trace=open,openat -o "$WORK/strace.log" \
	"${PY_ISOLATED[@]}" "$WORK/imports.py" "$mnt" || fail "imports from the mount failed"

# Successful opens under the mount, by suffix.
opened() { grep -F "\"$mnt/" "$WORK/strace.log" | grep -v ' = -1 ' | grep -cE "\\.$1\"" || true; }
pyc=$(opened pyc)
so=$(opened so)
py=$(opened py)
[ "$pyc" -ge 100 ] || fail "only $pyc .pyc files opened from the mount"
[ "$so" -ge 10 ] || fail "only $so .so files opened from the mount"
[ "$py" -eq 0 ] || fail "$py .py files opened from the mount, e.g.: $(grep -F "\"$mnt/" "$WORK/strace.log" | grep -v ' = -1 ' | grep -E '\.py"' | head -3)"
note "imports opened $pyc .pyc and $so .so files from the mount, no .py"
exit 0
