/*
 * util.c - small helpers of pyfs-pack: signals, paths of any length,
 * escaping names for display, human-readable sizes.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pack.h"

volatile sig_atomic_t pack_interrupted;

/* The temporary archive the signal handler removes; empty when none. */
static char guarded_file[PATH_MAX];
static volatile sig_atomic_t guarded_file_set;

static void on_signal(int sig)
{
	int saved_errno = errno;

	if (guarded_file_set)
		unlink(guarded_file);
	pack_interrupted = sig;
	errno = saved_errno;
}

void pack_signals_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a blocking read returns EINTR and the loop notices. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

void pack_signals_guard_file(const char *path)
{
	sigset_t block, old;

	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &old);
	guarded_file_set = 0;
	if (path && strlen(path) < sizeof(guarded_file)) {
		memcpy(guarded_file, path, strlen(path) + 1);
		guarded_file_set = 1;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
}

void pack_signals_reraise(void)
{
	int sig = pack_interrupted;

	if (!sig)
		return;
	signal(sig, SIG_DFL);
	raise(sig);
}

static int path_reserve(struct pack_path *path, size_t need)
{
	size_t cap = path->cap ? path->cap : 256;
	char *buf;

	if (need <= path->cap)
		return 0;
	while (cap < need)
		cap *= 2;
	buf = realloc(path->buf, cap);
	if (!buf)
		return -ENOMEM;
	path->buf = buf;
	path->cap = cap;
	return 0;
}

int pack_path_set(struct pack_path *path, const char *str, size_t len)
{
	if (path_reserve(path, len + 1) < 0)
		return -ENOMEM;
	memcpy(path->buf, str, len);
	path->buf[len] = '\0';
	path->len = len;
	return 0;
}

int pack_path_push(struct pack_path *path, const void *name, size_t len)
{
	size_t sep = path->len > 0 && path->buf[path->len - 1] != '/';

	if (path_reserve(path, path->len + sep + len + 1) < 0)
		return -ENOMEM;
	if (sep)
		path->buf[path->len++] = '/';
	memcpy(path->buf + path->len, name, len);
	path->len += len;
	path->buf[path->len] = '\0';
	return 0;
}

void pack_path_truncate(struct pack_path *path, size_t len)
{
	if (path->buf && len <= path->len) {
		path->len = len;
		path->buf[len] = '\0';
	}
}

void pack_path_free(struct pack_path *path)
{
	free(path->buf);
	path->buf = NULL;
	path->len = 0;
	path->cap = 0;
}

int pack_open_path(const char *path, int flags)
{
	const char *p = path, *slash;
	char name[NAME_MAX + 1];
	int dirfd = AT_FDCWD, fd, ret;
	size_t len;

	fd = open(path, flags | O_CLOEXEC);
	if (fd >= 0 || errno != ENAMETOOLONG)
		return fd >= 0 ? fd : -errno;

	if (*p == '/') {
		dirfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dirfd < 0)
			return -errno;
		while (*p == '/')
			p++;
	}
	for (;;) {
		slash = strchr(p, '/');
		len = slash ? (size_t)(slash - p) : strlen(p);
		if (len > NAME_MAX) {
			ret = -ENAMETOOLONG;
			break;
		}
		memcpy(name, p, len);
		name[len] = '\0';
		if (!slash) {
			fd = openat(dirfd, name, flags | O_CLOEXEC);
			ret = fd >= 0 ? fd : -errno;
			break;
		}
		fd = openat(dirfd, len ? name : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			break;
		}
		if (dirfd != AT_FDCWD)
			close(dirfd);
		dirfd = fd;
		p = slash + 1;
	}
	if (dirfd != AT_FDCWD)
		close(dirfd);
	return ret;
}

void pack_escape(char *buf, const void *name, size_t len)
{
	const unsigned char *s = name;
	size_t i;

	for (i = 0; i < len; i++) {
		if (s[i] == '\\') {
			*buf++ = '\\';
			*buf++ = '\\';
		} else if (s[i] >= ' ' && s[i] <= '~') {
			*buf++ = (char)s[i];
		} else {
			*buf++ = '\\';
			*buf++ = (char)('0' + (s[i] >> 6));
			*buf++ = (char)('0' + ((s[i] >> 3) & 7));
			*buf++ = (char)('0' + (s[i] & 7));
		}
	}
	*buf = '\0';
}

const char *pack_human_bytes(char *buf, size_t size, uint64_t n)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	unsigned u = 0;

	while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, size, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, size, "%.1f %s", v, units[u]);
	return buf;
}
