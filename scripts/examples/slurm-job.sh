#!/bin/bash
# slurm-job.sh - run a Python program from a pyfs archive under Slurm.
#
# Before submitting, pack the environment once (on a login node):
#     pyfs-pack env.h5                       # site-packages of python3
#     pyfs-pack -p ~/venv/bin/python env.h5  # or those of another interpreter
# then submit, naming the archive and the program (or edit the defaults below):
#     sbatch --nodes=4 --ntasks-per-node=32 \
#         --export=ALL,PYFS_ARCHIVE=$PWD/env.h5,APP=$PWD/app.py slurm-job.sh
#
# What happens: pyfs-prologue starts one pyfs-mount per node (as a background
# `srun --overlap` step), the nodes read env.h5 together, each node serves it
# from RAM at the mountpoint (/pyenv, or a node-local directory when /pyenv
# cannot be created), and PYTHONPATH points there. The trap runs
# pyfs-epilogue when the script ends, whether the program succeeded or not,
# so every node is unmounted. pyfs-prologue, pyfs-epilogue and pyfs-mount must
# be on PATH on the nodes (or set PYFS_MOUNT to pyfs-mount's path).
#SBATCH --job-name=pyfs-job
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --time=00:30:00
set -euo pipefail

PYFS_ARCHIVE=${PYFS_ARCHIVE:-$HOME/env.h5} # the archive made by pyfs-pack
PYTHON=${PYTHON:-python3}                  # interpreter, with options if any
APP=${APP:-app.py}                         # the program to run

# Mount on every node; sets PYFS_MOUNTPOINT and PYTHONPATH. Options for
# pyfs-mount go after --, e.g.: pyfs-prologue "$PYFS_ARCHIVE" -- --no-verify
eval "$(pyfs-prologue "$PYFS_ARCHIVE")"
trap pyfs-epilogue EXIT

# Every task imports from the node's mount. $PYTHON is split on spaces on
# purpose, so that it may carry interpreter options.
# shellcheck disable=SC2086 # PYTHON is split on purpose
srun $PYTHON "$APP"
