# pyfs-jobs.sh - what pyfs-prologue and pyfs-epilogue share (sourced, not run).
#
# Both scripts source this file from their own directory (scripts/ in the
# source tree; installed beside them). Before sourcing they set PROG, SELF
# and HERE; $verbose (-1 quiet, 0, 1 verbose) gates the messages.
# The node-side chores that pyfs-mount already knows how to do are asked of
# it ($mount_bin, see find_pyfs_mount): the "%r" expansion (--expand), the
# state of a mount point (--status), clearing a dead mount (--clear-stale),
# the pyfs mounts of a user (--mounts), its daemons (--daemons) and what an
# archive records (--info).
# shellcheck shell=bash

# What the callers' options set (the defaults): messages, launcher, layout.
verbose=0
opt_hostfile='' opt_hosts='' opt_launcher='' opt_mpirun=mpirun
opt_srun_args=${PYFS_SRUN_ARGS:-} opt_np='' ranks_as_nodes=0

die() { echo "$PROG: error: $*" >&2; exit 1; }
usage_error() { echo "$PROG: $*" >&2; echo "Try '$PROG --help'." >&2; exit 2; }
warn() { [ "$verbose" -lt 0 ] || echo "$PROG: warning: $*" >&2; }
note() { [ "$verbose" -lt 0 ] || echo "$PROG: $*" >&2; }
debug() { [ "$verbose" -lt 1 ] || echo "$PROG: $*" >&2; }

# find_pyfs_mount: absolute path of pyfs-mount ($PYFS_MOUNT, next to this
# script, or on PATH).
find_pyfs_mount() {
	local m
	if [ -n "${PYFS_MOUNT:-}" ]; then
		m=$PYFS_MOUNT
	elif [ -x "$HERE/pyfs-mount" ]; then
		m=$HERE/pyfs-mount
	else
		m=$(command -v pyfs-mount) || return 1
	fi
	[ -x "$m" ] && readlink -f -- "$m"
}

# need_pyfs_mount: set mount_bin, or fail saying where it was looked for.
need_pyfs_mount() {
	if ! mount_bin=$(find_pyfs_mount); then
		[ -z "${PYFS_MOUNT:-}" ] || die "\$PYFS_MOUNT '$PYFS_MOUNT' is not an executable file"
		die "pyfs-mount not found next to $PROG ($HERE) or on PATH; set \$PYFS_MOUNT"
	fi
}

# expand_mountpoint PATTERN: the mountpoint of this process, as pyfs-mount
# expands it (%r the rank, %n the node index, %% a '%'); 1 on another '%'.
expand_mountpoint() { "$mount_bin" --expand "$1" 2>/dev/null; }

# mount_status MOUNTPOINT: none, live or stale (a dead FUSE mount). A hung
# daemon can block even stat(2): after 10 s the mount counts as stale.
mount_status() { timeout -s KILL 10 "$mount_bin" --status "$1" 2>/dev/null || echo stale; }
is_mounted() { [ "$(mount_status "$1")" != none ]; }

# is_pyfs_mount MOUNTPOINT: a pyfs mount (of anyone) is on MOUNTPOINT.
is_pyfs_mount() { "$mount_bin" --mounts 2>/dev/null | grep -qxF -- "$1"; }

# absolute_path PATH: PATH made absolute with its parent resolved, as the
# kernel lists mounts; the last component is resolved only when it is a
# symlink (it may be a dead mount, which cannot be resolved).
absolute_path() {
	local parent base
	if [ -L "$1" ]; then
		readlink -f -- "$1"
		return
	fi
	parent=$(dirname -- "$1")
	base=$(basename -- "$1")
	parent=$(readlink -m -- "$parent")
	[ "$base" != / ] && [ "$base" != . ] && [ "$base" != .. ] || return 1
	echo "${parent%/}/$base"
}

# The mountpoint used when none is given: $PYFS_MOUNTPOINT, else /pyenv when
# it is usable or can be created, else a node-local directory of the user.
default_mountpoint() {
	if [ -n "${PYFS_MOUNTPOINT:-}" ]; then
		echo "$PYFS_MOUNTPOINT"
	elif is_pyfs_mount /pyenv || { [ -d /pyenv ] && [ -w /pyenv ]; } ||
		{ [ ! -e /pyenv ] && [ -w / ]; }; then
		echo /pyenv
	else
		echo "${TMPDIR:-/tmp}/pyenv-${USER:-$(id -un)}"
	fi
}

# state_dir [UID]: node-local state of a user (default: this one): which
# mountpoints were created, the token of the last prologue per mountpoint.
state_dir() {
	local base=/dev/shm
	[ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
	echo "$base/pyfs-${1:-$(id -u)}"
}
state_file() { # MOUNTPOINT SUFFIX [UID]
	local name=${1//%/%25}
	echo "$(state_dir "${3:-}")/${name//\//%2F}.$2"
}

# state_trusted [UID]: the state directory exists and belongs to UID (default:
# this user), so that nobody else can have planted state in it.
state_trusted() {
	local dir uid=${1:-$(id -u)}
	dir=$(state_dir "$uid")
	[ -d "$dir" ] && [ ! -L "$dir" ] && [ "$(stat -c %u -- "$dir")" = "$uid" ]
}

# choose_launcher: mpirun for an explicit host list, else srun inside a Slurm
# job, else mpirun, else (one node, no mpirun) local.
choose_launcher() {
	if [ -n "$opt_launcher" ]; then
		echo "$opt_launcher"
	elif [ -z "$opt_hostfile$opt_hosts" ] && [ -n "${SLURM_JOB_ID:-}" ] &&
		command -v srun >/dev/null; then
		echo srun
	elif command -v "${opt_mpirun%% *}" >/dev/null; then
		echo mpirun
	elif [ -z "$opt_hostfile$opt_hosts${PBS_NODEFILE:-}" ] && [ "$ranks_as_nodes" = 0 ]; then
		echo local
	else
		die "'${opt_mpirun%% *}' not found: install Open MPI or pass --mpirun CMD"
	fi
}

# srun_layout: srun options for one task per node (or --np tasks with
# --ranks-as-nodes), on the nodes of the job.
srun_layout() {
	local nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
	if [ "$ranks_as_nodes" = 1 ]; then
		printf '%s\n' "--ntasks=$opt_np"
	else
		printf '%s\n' "--nodes=$nodes" "--ntasks=$nodes" --ntasks-per-node=1
	fi
}

# srun_daemon_options: options for the daemon step that depend on the cluster:
# --mpi=pmix when its default is none and srun has pmix (unless the user chose:
# SLURM_MPI_TYPE or --mpi in --srun-args); --cpu-bind=none unless binding is off.
srun_daemon_options() {
	local config
	config=$(scontrol show config 2>/dev/null) || true
	if [ -z "${SLURM_MPI_TYPE:-}" ] && [[ " $opt_srun_args " != *" --mpi"* ]] &&
		[ "$(awk '$1 == "MpiDefault" { print $3 }' <<<"$config")" = none ] &&
		srun --mpi=list 2>&1 | grep -qw pmix; then
		echo --mpi=pmix
	fi
	if [ "$(awk '$1 == "TaskPlugin" { print $3 }' <<<"$config")" != task/none ]; then
		echo --cpu-bind=none
	fi
}

# mpirun_command: the mpirun command line for one process per node (or --np
# processes with --ranks-as-nodes) over the job's hosts.
mpirun_command() {
	local -a cmd
	read -r -a cmd <<<"$opt_mpirun"
	if [ -n "$opt_hostfile" ]; then
		cmd+=(--hostfile "$opt_hostfile")
	elif [ -n "$opt_hosts" ]; then
		cmd+=(--host "$opt_hosts")
	elif [ -n "${PBS_NODEFILE:-}" ]; then
		cmd+=(--hostfile "$PBS_NODEFILE")
	fi
	if [ "$ranks_as_nodes" = 1 ]; then
		cmd+=(-np "$opt_np" --map-by slot)
	else
		cmd+=(--map-by ppr:1:node)
	fi
	printf '%s\n' "${cmd[@]}"
}

# check_launcher_options: the checks both scripts make of the options above.
check_launcher_options() {
	case $opt_launcher in '' | srun | mpirun | local) ;;
	*) usage_error "unknown launcher '$opt_launcher' (srun, mpirun or local)" ;; esac
	if [ "$ranks_as_nodes" = 1 ]; then
		case $opt_np in '' | *[!0-9]* | 0) usage_error "--ranks-as-nodes needs --np N (N >= 1)" ;; esac
	elif [ -n "$opt_np" ]; then
		usage_error "--np is only for --ranks-as-nodes${1:-}"
	fi
}
