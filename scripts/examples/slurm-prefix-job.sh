#!/bin/bash
# slurm-prefix-job.sh - run a program with the interpreter of a whole
# environment (a conda env, a spack environment, a self-contained Python
# installation) served from a pyfs archive mounted anywhere (/pyenv by default).
#
# Pack the whole prefix once (it is recognized by its bin/python3.X and
# lib/python3.X/os.py; its own interpreter compiles the byte-code):
#     pyfs-pack env.h5 ~/miniconda3/envs/sim
# then submit:
#     sbatch --nodes=4 --ntasks-per-node=32 \
#         --export=ALL,PYFS_ARCHIVE=$PWD/env.h5,APP=$PWD/app.py slurm-prefix-job.sh
#
# The interpreter, the standard library, site-packages and the extension
# modules all come from node RAM: nothing is read from the shared file system
# at import time. pyfs-prologue also puts MOUNTPOINT/bin first on PATH. Use
# this when the environment is relocatable (conda, most prefixes); when
# absolute paths inside it must keep working (console scripts' shebangs,
# RPATHs, editable installs), mount it over its own path instead
# (slurm-at-source-job.sh). pyfs-pack reports such paths ("references leave
# the archive"; -v lists them).
#SBATCH --job-name=pyfs-prefix
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --time=00:30:00
set -euo pipefail

PYFS_ARCHIVE=${PYFS_ARCHIVE:-$HOME/env.h5} # the archive of the whole prefix
APP=${APP:-app.py}                         # the program to run
RUN=${RUN-srun}                            # how to start the tasks ("": directly)

eval "$(pyfs-prologue "$PYFS_ARCHIVE")" # sets PYFS_MOUNTPOINT, PATH, PYTHONPATH
trap pyfs-epilogue EXIT

# The environment's own interpreter, from the mount ($RUN split on purpose).
# shellcheck disable=SC2086 # RUN is split on purpose
$RUN "$PYFS_MOUNTPOINT/bin/python3" "$APP"
