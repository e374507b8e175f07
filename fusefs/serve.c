/*
 * serve.c - the life of a mounted image: mount, report ready, serve with a
 * multithreaded FUSE loop until unmounted or signalled, unmount.
 *
 * In the default mode the process forks after MPI is finalized: the parent
 * waits on a pipe until the child has mounted (so the command returns only
 * when the mount is usable) and exits; the child, in its own session, closes
 * its standard streams, logs to syslog and serves. The image memory is
 * inherited by the child (anonymous mappings, MADV_DOFORK), never copied.
 */
#include "mount.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fuse_log.h>

/* While capturing: where the first error goes, and its text so far (libfuse writes in pieces). */
static struct pyfs_err *log_capture;
static char log_captured[sizeof(((struct pyfs_err *)0)->msg)];

/* Drop a "fuse: " prefix and the trailing newline from a libfuse message, in place. */
static const char *mount_fuse_text(char *line)
{
	size_t len = strlen(line);

	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		line[--len] = '\0';
	return strncmp(line, "fuse: ", 6) == 0 ? line + 6 : line;
}

__attribute__((format(printf, 2, 0))) static void mount_fuse_log(enum fuse_log_level level,
								 const char *fmt, va_list ap)
{
	char line[1024];
	const char *text;

	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_capture && level <= FUSE_LOG_ERR) {
		size_t used = strlen(log_captured);

		/* Keep the first message, which may come in several calls up to its newline. */
		if (!strchr(log_captured, '\n')) {
			size_t n = strlen(line);

			if (n > sizeof(log_captured) - 1 - used)
				n = sizeof(log_captured) - 1 - used;
			memcpy(log_captured + used, line, n);
			log_captured[used + n] = '\0';
		}
		return;
	}
	text = mount_fuse_text(line);
	if (level <= FUSE_LOG_ERR)
		pyfs_error("%s", text);
	else if (level == FUSE_LOG_WARNING)
		pyfs_warn("%s", text);
	else if (level <= FUSE_LOG_INFO)
		pyfs_info("%s", text);
	else
		pyfs_debug("%s", text);
}

void mount_fuse_log_init(void)
{
	fuse_set_log_func(mount_fuse_log);
}

void mount_fuse_log_capture(struct pyfs_err *capture)
{
	if (log_capture) {
		char *newline = strchr(log_captured, '\n');

		if (newline)
			*newline = '\0';
		pyfs_err_set(log_capture, "%s", mount_fuse_text(log_captured));
	}
	log_captured[0] = '\0';
	log_capture = capture;
}

/* Write our PID to path through a temporary name, so readers see all or nothing. */
static int serve_write_ready_file(const char *path)
{
	char tmp[PATH_MAX];
	int fd, rc = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof(tmp)) {
		pyfs_error("cannot write ready file '%s': %s", path, strerror(ENAMETOOLONG));
		return -ENAMETOOLONG;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || dprintf(fd, "%d\n", (int)getpid()) < 0)
		rc = -errno;
	if (fd >= 0 && close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		pyfs_error("cannot write ready file '%s': %s", path, strerror(-rc));
		unlink(tmp);
	}
	return rc;
}

/* ---- interruption before the mount is up ---- */

static volatile sig_atomic_t interrupt_speaker = 1;
static volatile pid_t interrupt_child;
static struct mount_lock *interrupt_lock;

/*
 * SIGINT/SIGTERM before serving (mpirun forwards both to every rank): say
 * "interrupted" once (rank 0, or the parent of the daemon being started),
 * stop the daemon being started, drop the mountpoint lock, exit 1. Nothing
 * is mounted yet, or the child unmounts on the SIGTERM it gets here.
 */
static void serve_on_interrupt(int sig)
{
	static const char msg[] = "pyfs-mount: interrupted\n";

	(void)sig;
	if (interrupt_child > 0)
		kill(interrupt_child, SIGTERM);
	else if (interrupt_lock && interrupt_lock->fd >= 0 && interrupt_lock->path[0])
		unlink(interrupt_lock->path);
	if (interrupt_speaker) {
		(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	} else {
		/*
		 * Let the speaker exit first: once a rank has exited, mpirun may
		 * end before it has passed on the output of the others.
		 */
		struct timespec pause = {0, 300000000L};

		nanosleep(&pause, NULL);
	}
	_exit(MOUNT_EXIT_FAILURE);
}

void mount_interrupt_init(struct mount_lock *lock)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = serve_on_interrupt;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGINT);
	sigaddset(&sa.sa_mask, SIGTERM);
	interrupt_lock = lock;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

void mount_interrupt_speaker(bool speaker)
{
	interrupt_speaker = speaker;
}

/*
 * Mount se on mountpoint and install the signal handlers that end the loop,
 * with SIGINT and SIGTERM held back in between (a signal there would leave a
 * dead mount); then the mountpoint lock is released, whatever happened.
 */
static int serve_mount(struct fuse_session *se, const char *mountpoint, struct mount_lock *lock)
{
	struct pyfs_err err = {{0}};
	sigset_t block, old;
	int rc = 0;

	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &old);
	mount_fuse_log_capture(&err);
	if (fuse_session_mount(se, mountpoint) != 0)
		rc = -EIO;
	mount_fuse_log_capture(NULL);
	/* Ours go: libfuse installs its handlers only over the default ones. */
	if (rc < 0) {
		pyfs_error("cannot mount on '%s'%s%s", mountpoint, err.msg[0] ? ": " : "", err.msg);
	} else if (signal(SIGINT, SIG_DFL) == SIG_ERR || signal(SIGTERM, SIG_DFL) == SIG_ERR ||
		   fuse_set_signal_handlers(se) != 0) {
		pyfs_error("cannot install signal handlers");
		fuse_session_unmount(se);
		rc = -EIO;
	}
	mount_lock_release(lock);
	interrupt_lock = NULL;
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* libfuse's loop, for -o clone_fd (one /dev/fuse descriptor per thread needs its internals). */
static int serve_libfuse_loop(const struct mount_config *config, struct fuse_session *se)
{
	struct fuse_loop_config *loop = fuse_loop_cfg_create();
	int rc;

	if (!loop)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(loop, (unsigned int)config->clone_fd);
	if (config->max_threads)
		fuse_loop_cfg_set_max_threads(loop, config->max_threads);
	/* 0 when unmounted, the signal number when signalled, or -errno. */
	rc = fuse_session_loop_mt(se, loop);
	fuse_loop_cfg_destroy(loop);
	return rc;
}

/* Serve until unmounted or signalled, then unmount. Returns an exit status. */
static int serve_loop(const struct mount_config *config, struct fuse_session *se,
		      const char *ready_file, struct mount_loop *loop)
{
	int rc;

	if (config->clone_fd)
		rc = serve_libfuse_loop(config, se);
	else
		rc = mount_loop_run(loop, se, config->busy_poll_us);
	if (rc < 0)
		pyfs_error("serving failed: %s", strerror(-rc));
	fuse_remove_signal_handlers(se);
	fuse_session_unmount(se);
	if (ready_file)
		unlink(ready_file);
	return rc < 0 ? MOUNT_EXIT_FAILURE : MOUNT_EXIT_OK;
}

static int serve_foreground(const struct mount_config *config, struct fuse_session *se,
			    const char *mountpoint, const char *ready_file, bool report,
			    struct mount_lock *lock, struct mount_loop *loop)
{
	double start = pyfs_now();

	if (serve_mount(se, mountpoint, lock) < 0)
		return MOUNT_EXIT_FAILURE;
	if (ready_file && serve_write_ready_file(ready_file) < 0) {
		fuse_remove_signal_handlers(se);
		fuse_session_unmount(se);
		return MOUNT_EXIT_FAILURE;
	}
	if (report)
		pyfs_info("mounted '%s' in %.3f s; serving in the foreground (pid %d)", mountpoint,
			  pyfs_now() - start, (int)getpid());
	return serve_loop(config, se, ready_file, loop);
}

/*
 * Drop every descriptor inherited from the launcher but the ready pipe and
 * the lock: one of them may tell Open MPI's singleton helper (orted) that we
 * are alive, and that helper holds our caller's output pipe open until then.
 */
static void serve_close_inherited(int keep1, int keep2)
{
	int lo = keep1 < keep2 ? keep1 : keep2, hi = keep1 < keep2 ? keep2 : keep1;

	if (lo < 0)
		lo = hi;
	if (lo > STDERR_FILENO + 1)
		close_range(STDERR_FILENO + 1, (unsigned int)lo - 1, 0);
	if (hi > lo + 1)
		close_range((unsigned int)lo + 1, (unsigned int)hi - 1, 0);
	close_range((unsigned int)hi + 1, ~0U, 0);
}

/* The child of the default mode: mount, report to the parent through ready_fd, serve. */
static int serve_child(const struct mount_config *config, struct fuse_session *se,
		       const char *mountpoint, const char *ready_file, bool report, int ready_fd,
		       struct mount_lock *lock, struct mount_loop *loop)
{
	double start = pyfs_now();
	int null_fd;

	/* The parent says "interrupted"; a SIGTERM from it before the mount just ends us. */
	interrupt_speaker = 0;
	setsid();
	serve_close_inherited(ready_fd, lock->fd);
	if (serve_mount(se, mountpoint, lock) < 0) {
		(void)!write(ready_fd, "E", 1);
		return MOUNT_EXIT_FAILURE;
	}
	/* The daemon outlives the terminal and the launcher: a hangup is no reason to stop. */
	signal(SIGHUP, SIG_IGN);
	if (ready_file && serve_write_ready_file(ready_file) < 0) {
		fuse_remove_signal_handlers(se);
		fuse_session_unmount(se);
		(void)!write(ready_fd, "E", 1);
		return MOUNT_EXIT_FAILURE;
	}
	if (report)
		pyfs_info("mounted '%s' in %.3f s; serving in the background (pid %d)", mountpoint,
			  pyfs_now() - start, (int)getpid());
	/*
	 * Let go of the launcher's streams before saying ready, so that whoever
	 * reads our output sees its end when the parent exits.
	 */
	pyfs_log_use_syslog();
	if (chdir("/") < 0)
		pyfs_warn("cannot change to '/': %s", strerror(errno));
	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null_fd >= 0) {
		dup2(null_fd, STDIN_FILENO);
		dup2(null_fd, STDOUT_FILENO);
		dup2(null_fd, STDERR_FILENO);
		if (null_fd > STDERR_FILENO)
			close(null_fd);
	}
	(void)!write(ready_fd, "R", 1);
	close(ready_fd);
	return serve_loop(config, se, ready_file, loop);
}

static int serve_background(const struct mount_config *config, struct fuse_session *se,
			    const char *mountpoint, const char *ready_file, bool report,
			    struct mount_lock *lock, struct mount_loop *loop)
{
	int fds[2], wstatus;
	char status = 0;
	ssize_t n;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0) {
		pyfs_error("cannot create a pipe: %s", strerror(errno));
		return MOUNT_EXIT_FAILURE;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		pyfs_error("cannot fork the daemon: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return MOUNT_EXIT_FAILURE;
	}
	if (pid == 0) {
		close(fds[0]);
		return serve_child(config, se, mountpoint, ready_file, report, fds[1], lock, loop);
	}
	/* The child holds the lock now; a signal from here on is passed on to it. */
	interrupt_child = pid;
	mount_lock_forget(lock);
	close(fds[1]);
	do
		n = read(fds[0], &status, 1);
	while (n < 0 && errno == EINTR);
	close(fds[0]);
	if (n == 1 && status == 'R')
		return MOUNT_EXIT_OK;
	/* The child said why (status 'E') or died without a word. */
	while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
		;
	if (n != 1)
		pyfs_error("the daemon for '%s' exited before the mount was ready", mountpoint);
	return MOUNT_EXIT_FAILURE;
}

int mount_serve(const struct mount_config *config, struct fuse_session *se, const char *mountpoint,
		const char *ready_file, bool report, struct mount_lock *lock,
		struct mount_loop *loop)
{
	if (config->foreground)
		return serve_foreground(config, se, mountpoint, ready_file, report, lock, loop);
	return serve_background(config, se, mountpoint, ready_file, report, lock, loop);
}
