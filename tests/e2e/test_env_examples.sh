#!/bin/bash
# The batch scripts of the two whole-environment ways, run outside Slurm (the
# prologue then uses mpirun on this machine; RUN starts the program directly):
# slurm-prefix-job.sh runs a self-contained prefix's interpreter from
# /pyenv-like MOUNTPOINT; slurm-at-source-job.sh runs `python` of a venv
# mounted over its own path. Both leave nothing mounted.
. "$(dirname "$0")/lib.sh"
need_fuse
[ -f /usr/lib/python3.11/os.py ] || skip "/usr/lib/python3.11 is missing (apt-get install python3.11)"
examples=$PYFS_SOURCE_DIR/scripts/examples
PATH="$(dirname "$PYFS_PROLOGUE"):$PATH"
export PATH RUN=
unset SLURM_JOB_ID PBS_NODEFILE PYTHONPATH PYFS_MOUNTPOINT

cat >"$WORK/app.py" <<'APP'
import sys, json, appmod
print("app", sys.prefix, json.__file__, appmod.__file__)
APP

# --- a whole prefix, mounted elsewhere ---------------------------------------------
P=$WORK/prefix
mkdir -p "$P/bin" "$P/lib/python3/dist-packages" "$WORK/mnt"
cp -a "$(readlink -f "$PY")" "$P/bin/python3.11"
ln -s python3.11 "$P/bin/python3"
cp -a /usr/lib/python3.11 "$P/lib/"
echo "X = 1" >"$P/lib/python3/dist-packages/appmod.py" # Debian's site.py layout
"$PYFS_PACK" -q "$WORK/prefix.h5" "$P" 2>/dev/null || fail "pack of the prefix failed"
at_exit unmount_all "$WORK/mnt/p"
out=$(cd "$WORK" && PYFS_MOUNTPOINT=$WORK/mnt/p PYFS_ARCHIVE=$WORK/prefix.h5 APP=$WORK/app.py \
	bash "$examples/slurm-prefix-job.sh" 2>&1) || fail "slurm-prefix-job.sh failed: $out"
m=$WORK/mnt/p
grep -qxF "app $m $m/lib/python3.11/json/__init__.py $m/lib/python3/dist-packages/appmod.py" <<<"$out" ||
	fail "slurm-prefix-job.sh did not run from the mount: $out"
is_mounted "$m" && fail "slurm-prefix-job.sh left '$m' mounted"

# --- a venv over its own path ------------------------------------------------------
ENV=$WORK/venv
"$PY" -m venv --without-pip "$ENV" 2>/dev/null || skip "cannot create a venv (apt-get install python3.11-venv)"
echo "X = 2" >"$ENV/lib/python3.11/site-packages/appmod.py"
"$PYFS_PACK" -q "$WORK/venv.h5" "$ENV" 2>/dev/null || fail "pack of the venv failed"
at_exit unmount_all "$ENV"
out=$(cd "$WORK" && PYFS_ARCHIVE=$WORK/venv.h5 APP=$WORK/app.py bash "$examples/slurm-at-source-job.sh" 2>&1) ||
	fail "slurm-at-source-job.sh failed: $out"
grep -q "^app $ENV /usr/lib/python3.11/json/__init__.py $ENV/lib/python3.11/site-packages/appmod.py$" <<<"$out" ||
	fail "slurm-at-source-job.sh did not run the venv's python: $out"
grep -q "pyfs-prologue: mounted '$WORK/venv.h5' on '$ENV'" <<<"$out" || fail "not mounted over the venv: $out"
is_mounted "$ENV" && fail "slurm-at-source-job.sh left '$ENV' mounted"
exit 0
