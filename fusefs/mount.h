/*
 * mount.h - what the modules of pyfs-mount share: the configuration from the
 * command line, the mountpoint checks (mountpoint.c) and serving a mounted
 * image (serve.c). The MPI pull has its own header (pull.h), the FUSE
 * handlers theirs (ops.h).
 */
#ifndef MOUNT_H
#define MOUNT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <fuse_lowlevel.h>

#include "log.h"
#include "loop.h"
#include "ops.h"

/* Exit statuses of pyfs-mount (documented in --help). */
#define MOUNT_EXIT_OK	   0
#define MOUNT_EXIT_FAILURE 1
#define MOUNT_EXIT_USAGE   2

struct mount_config {
	const char *archive;
	const char *mountpoint; /* as given: "%r" and "%n" are expanded per node */
	const char *ready_file; /* --ready-file, expanded the same way; NULL: none */
	bool foreground;
	bool ranks_as_nodes;
	bool verify;
	/* --inflate: decompress the whole payload right after the pull */
	bool inflate;
	bool verbose;			       /* rank 0 reports the pull (-v) */
	bool allow_other;		       /* -o allow_other was given */
	bool has_fsname;		       /* -o fsname= was given */
	bool has_subtype;		       /* -o subtype= was given */
	bool debug;			       /* -o debug was given */
	struct fuse_args args;		       /* argv[0] and the -o options left for libfuse */
	struct ops_options ops;		       /* our -o options */
	struct fuse_conn_info_opts *conn_opts; /* libfuse's connection -o options */
	int clone_fd;			       /* -o clone_fd */
	int nonempty;			       /* -o nonempty: mount over a non-empty directory */
	unsigned int max_threads;	       /* -o max_threads=N; 0: libfuse's default */
	unsigned int busy_poll_us;	       /* -o busy_poll=US (our loop only) */
	unsigned int timeout; /* --timeout: seconds the MPI part may take; 0: no limit */
	int exchange;	      /* --exchange: enum pull_exchange */
	int readers;	      /* --readers */
	uint64_t chunk_bytes; /* --chunk; 0: automatic */
};

/* ---- mountpoint.c ---- */

/*
 * Expand "%r" (MPI rank), "%n" (node index) and "%%" in pattern into out.
 * Returns 0, or -EINVAL (unknown '%' sequence) / -ENAMETOOLONG with err set.
 */
int mount_expand_path(const char *pattern, int rank, int node, char *out, size_t size,
		      struct pyfs_err *err);

/*
 * Check that path can be mounted on: it exists, is a directory, is not
 * already a mount point (live or dead) and is empty (unless nonempty). Fills
 * real with its canonical absolute path (the daemon works from '/', so it
 * mounts and unmounts by that). 0 or a negative errno with err naming the
 * problem.
 */
int mount_check_mountpoint(const char *path, char real[PATH_MAX], bool nonempty,
			   struct pyfs_err *err);

/* Is path a mount point (per /proc/self/mountinfo), and does it answer? */
enum mount_point_state { MOUNT_POINT_NONE, MOUNT_POINT_LIVE, MOUNT_POINT_STALE };
enum mount_point_state mount_point_state(const char *path);

/*
 * Print the mount point of every pyfs mount (FUSE, "pyfs" in its type or
 * source) of user uid (any when uid < 0) to out, one a line. 0 or -errno.
 */
int mount_list_pyfs(FILE *out, long uid);

/* ---- node.c: commands for the job scripts (no MPI, no mount) ---- */

/*
 * When argv[1] is one of them (--expand, --status, --clear-stale, --info,
 * --daemons, --mounts), run it and return its exit status; otherwise -1.
 */
int mount_node_command(int argc, char **argv);

/* This process's rank as its launcher announces it (mpirun, srun), or NULL without one. */
const char *mount_launcher_rank(void);

/* For non-root users, allow_other needs user_allow_other in /etc/fuse.conf. */
int mount_check_allow_other(struct pyfs_err *err);

/* Identify the directory path as (st_dev, st_ino): two paths with one identity clash. */
int mount_path_identity(const char *path, uint64_t identity[2]);

/*
 * The node-local lock of a mountpoint, held from the checks until the mount
 * is up, so that of two pyfs-mount started together on one directory (two
 * jobs, two users) one fails: fd -1 when not held.
 */
struct mount_lock {
	int fd;
	char path[PATH_MAX];
};

/*
 * Take the lock of the canonical mountpoint real without waiting, then check
 * again that nothing is mounted there. 0, or -EWOULDBLOCK (another
 * pyfs-mount is mounting it), -EBUSY (mounted meanwhile) or another negative
 * errno with err set; lock->fd is -1 then.
 */
int mount_lock_take(const char *real, struct mount_lock *lock, struct pyfs_err *err);

/* The mount is up, or will not be: remove the lock file and let go of the lock. */
void mount_lock_release(struct mount_lock *lock);

/* Close this process's descriptor only; a forked child still holds the lock. */
void mount_lock_forget(struct mount_lock *lock);

/* ---- memory.c ---- */

/* Beyond the image and the serving threads: the pull's HDF5 and MPI buffers, the daemon's heap. */
#define MOUNT_MEMORY_SLACK (UINT64_C(32) << 20)

/*
 * Before the payload is pulled (its buffer is mapped, not yet filled): do
 * image_bytes (payload and metadata) and serving_bytes fit in what the
 * cgroup memory limits of this process leave, and serving_bytes and the
 * pull's own needs in what ulimit -v leaves? 0 (also without limits), or
 * -ENOMEM with err saying how much more to ask for.
 */
int mount_check_memory(const char *archive, uint64_t image_bytes, uint64_t serving_bytes,
		       struct pyfs_err *err);

/* ---- serve.c ---- */

/*
 * Route libfuse's messages into our logger. While capture is set, error
 * messages are stored there instead (to report them after an MPI agreement).
 */
void mount_fuse_log_init(void);
void mount_fuse_log_capture(struct pyfs_err *capture);

/*
 * Mount session se on mountpoint and serve until unmounted, or until
 * SIGTERM/SIGINT (and SIGHUP in the foreground) unmount it. Returns an exit
 * status. In the foreground, once the mount is over. Otherwise it forks: the
 * parent returns MOUNT_EXIT_OK as soon as the child reports the mount ready,
 * or MOUNT_EXIT_FAILURE if the child fails (the child prints why); the child
 * serves detached, logging to syslog, and returns when the mount is over.
 * ready_file (may be NULL) gets the serving PID once mounted. report prints
 * the mount time (--verbose on rank 0). lock (held) is released once the
 * mount is up or has failed. loop holds the reserved serving threads (not
 * used with -o clone_fd, which needs libfuse's own loop). MPI must be
 * finalized before this.
 */
int mount_serve(const struct mount_config *config, struct fuse_session *se, const char *mountpoint,
		const char *ready_file, bool report, struct mount_lock *lock,
		struct mount_loop *loop);

/*
 * From MPI_Init until the mount is up, SIGINT and SIGTERM print
 * "pyfs-mount: interrupted" (on the speaker only: rank 0) and exit 1,
 * dropping lock (and stopping a daemon being started).
 */
void mount_interrupt_init(struct mount_lock *lock);
void mount_interrupt_speaker(bool speaker);

#endif /* MOUNT_H */
