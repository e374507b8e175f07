#!/bin/bash
# pbs-job.sh - run a Python program from a pyfs archive under PBS / Torque.
#
# Pack the environment once (on a login node):
#     pyfs-pack env.h5
# then submit:
#     qsub -v PYFS_ARCHIVE=$PWD/env.h5,APP=$PWD/app.py pbs-job.sh
#
# pyfs-prologue takes the nodes from $PBS_NODEFILE and runs one pyfs-mount per
# node through `mpirun --hostfile $PBS_NODEFILE --map-by ppr:1:node`; the
# nodes read env.h5 together and it returns when every node serves it.
# pyfs-prologue, pyfs-epilogue and pyfs-mount must be on PATH on every node
# (or set PYFS_MOUNT). Ask your admin to run `pyfs-epilogue --local --all
# --user $USER` in the PBS epilogue too: that also cleans up after a job that
# was killed before its trap could run.
#PBS -N pyfs-job
#PBS -l select=2:ncpus=32:mpiprocs=32
#PBS -l walltime=00:30:00
set -euo pipefail
cd "${PBS_O_WORKDIR:-.}"

PYFS_ARCHIVE=${PYFS_ARCHIVE:-$HOME/env.h5} # the archive made by pyfs-pack
PYTHON=${PYTHON:-python3}                  # interpreter, with options if any
APP=${APP:-app.py}                         # the program to run

# Mount on every node of $PBS_NODEFILE; sets PYFS_MOUNTPOINT and PYTHONPATH.
eval "$(pyfs-prologue "$PYFS_ARCHIVE")"
trap pyfs-epilogue EXIT

# One process per line of $PBS_NODEFILE; -x passes PYTHONPATH to all nodes.
# shellcheck disable=SC2086 # PYTHON is split on purpose
mpirun --hostfile "$PBS_NODEFILE" -x PYTHONPATH $PYTHON "$APP"
