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

#include <fuse_lowlevel.h>

#include "log.h"
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
	unsigned int max_threads;	       /* -o max_threads=N; 0: libfuse's default */
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
 * already a mount point (live or dead) and is empty. Fills real with its
 * canonical absolute path (the daemon works from '/', so it mounts and
 * unmounts by that). 0 or a negative errno with err naming the problem.
 */
int mount_check_mountpoint(const char *path, char real[PATH_MAX], struct pyfs_err *err);

/* For non-root users, allow_other needs user_allow_other in /etc/fuse.conf. */
int mount_check_allow_other(struct pyfs_err *err);

/* Identify the directory path as (st_dev, st_ino): two paths with one identity clash. */
int mount_path_identity(const char *path, uint64_t identity[2]);

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
 * the mount time (--verbose on rank 0). MPI must be finalized before this.
 */
int mount_serve(const struct mount_config *config, struct fuse_session *se, const char *mountpoint,
		const char *ready_file, bool report);

#endif /* MOUNT_H */
