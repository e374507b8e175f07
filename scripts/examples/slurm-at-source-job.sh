#!/bin/bash
# slurm-at-source-job.sh - run a program from a venv (or any environment) with
# the archive mounted over the environment's own path, so that every absolute
# path recorded inside it (console scripts' shebangs, VIRTUAL_ENV in activate,
# RPATHs, editable .pth entries) is served from node RAM too.
#
# Pack the environment once; the archive records where it was packed from:
#     pyfs-pack env.h5 ~/venvs/sim
# then submit:
#     sbatch --nodes=4 --ntasks-per-node=32 \
#         --export=ALL,PYFS_ARCHIVE=$PWD/env.h5,APP=$PWD/app.py slurm-at-source-job.sh
#
# pyfs-prologue --at-source mounts the archive on each node over ~/venvs/sim
# (pyfs-mount -o nonempty: the directory on the shared file system is hidden
# on the job's nodes only, and is never written to) and puts its bin/ first
# on PATH; pyfs-epilogue unmounts it. A venv still uses its base interpreter's
# standard library (pyvenv.cfg home); pack a whole prefix to serve that too.
#SBATCH --job-name=pyfs-at-source
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --time=00:30:00
set -euo pipefail

PYFS_ARCHIVE=${PYFS_ARCHIVE:-$HOME/env.h5} # the archive of the environment
APP=${APP:-app.py}                         # the program to run
RUN=${RUN-srun}                            # how to start the tasks ("": directly)

eval "$(pyfs-prologue --at-source "$PYFS_ARCHIVE")" # mounts over the env's own path
trap pyfs-epilogue EXIT

# "python" is the environment's (its bin/ comes first on PATH), and so are its
# console scripts: the same paths as without pyfs.
# shellcheck disable=SC2086 # RUN is split on purpose
$RUN python "$APP"
