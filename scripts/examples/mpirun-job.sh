#!/bin/bash
# mpirun-job.sh - run a Python program from a pyfs archive with plain mpirun
# (no batch system, or one that gives you a host file).
#
# Pack the environment once:
#     pyfs-pack env.h5
# Write a host file, one node per line (Open MPI syntax, slots = cores):
#     node01 slots=32
#     node02 slots=32
# then run:
#     PYFS_ARCHIVE=$PWD/env.h5 HOSTFILE=$PWD/hosts APP=$PWD/app.py ./mpirun-job.sh
#
# pyfs-prologue runs `mpirun --hostfile HOSTFILE --map-by ppr:1:node
# pyfs-mount ...`: one daemon per node, the nodes read env.h5 together, and it
# returns when every node serves it. pyfs-prologue, pyfs-epilogue and
# pyfs-mount must be on PATH on every node (or set PYFS_MOUNT). Without
# HOSTFILE, everything runs on this machine.
set -euo pipefail

PYFS_ARCHIVE=${PYFS_ARCHIVE:-$HOME/env.h5} # the archive made by pyfs-pack
HOSTFILE=${HOSTFILE:-}                     # host file; empty: this machine
PYTHON=${PYTHON:-python3}                  # interpreter, with options if any
APP=${APP:-app.py}                         # the program to run
NP=${NP:-4}                                # MPI processes of the program

hosts=()
[ -z "$HOSTFILE" ] || hosts=(--hostfile "$HOSTFILE")

# Mount on every node; sets PYFS_MOUNTPOINT and PYTHONPATH.
eval "$(pyfs-prologue "${hosts[@]}" "$PYFS_ARCHIVE")"
trap 'pyfs-epilogue "${hosts[@]}"' EXIT

# -x passes PYTHONPATH to the processes on the other nodes.
# shellcheck disable=SC2086 # PYTHON is split on purpose
mpirun "${hosts[@]}" -np "$NP" -x PYTHONPATH $PYTHON "$APP"
