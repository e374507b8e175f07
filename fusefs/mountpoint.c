/*
 * mountpoint.c - the checks run on every node before anything is pulled, so a
 * bad mountpoint costs nothing and is reported in plain words: missing, not a
 * directory, already mounted (or a dead mount left by a killed daemon), not
 * empty (unless -o nonempty), not writable for a non-root user; and the
 * "%r"/"%n" expansion.
 */
#include "mount.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

int mount_expand_path(const char *pattern, int rank, int node, char *out, size_t size,
		      struct pyfs_err *err)
{
	size_t used = 0;

	for (const char *p = pattern; *p; p++) {
		char piece[16];
		size_t len;

		if (*p != '%') {
			piece[0] = *p;
			len = 1;
		} else if (p[1] == 'r' || p[1] == 'n') {
			len =
			    (size_t)snprintf(piece, sizeof(piece), "%d", p[1] == 'r' ? rank : node);
			p++;
		} else if (p[1] == '%') {
			piece[0] = '%';
			len = 1;
			p++;
		} else {
			pyfs_err_set(err,
				     "invalid '%%' sequence in '%s': only %%r (rank), %%n (node) "
				     "and %%%% are expanded",
				     pattern);
			return -EINVAL;
		}
		if (used + len >= size) {
			pyfs_err_set(err, "path '%s' is too long", pattern);
			return -ENAMETOOLONG;
		}
		memcpy(out + used, piece, len);
		used += len;
	}
	out[used] = '\0';
	return 0;
}

/* Decode the octal escapes (\040 for a space...) of a /proc/self/mountinfo field in place. */
static void mount_unescape(char *s)
{
	char *o = s;

	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			*o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 3;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
}

/* True when the canonical path real is the mount point of some mount. */
static bool mount_is_mount_point(const char *real)
{
	char *line = NULL;
	size_t cap = 0;
	bool found = false;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return false;
	/* "36 35 98:0 /root /mnt/point rw,... - type source opts": field 5 is the point. */
	while (!found && getline(&line, &cap, f) > 0) {
		char *save = NULL, *field = strtok_r(line, " ", &save);

		for (int i = 1; field && i < 5; i++)
			field = strtok_r(NULL, " ", &save);
		if (field) {
			mount_unescape(field);
			found = strcmp(field, real) == 0;
		}
	}
	free(line);
	fclose(f);
	return found;
}

/* 0 when the directory path holds no entry, -ENOTEMPTY when it does. */
static int mount_check_empty(const char *path, struct pyfs_err *err)
{
	struct dirent *d;
	int rc = 0;
	DIR *dir = opendir(path);

	if (!dir) {
		rc = -errno;
		pyfs_err_set(err, "cannot read mountpoint '%s': %s", path, strerror(-rc));
		return rc;
	}
	while ((d = readdir(dir))) {
		if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0) {
			rc = -ENOTEMPTY;
			pyfs_err_set(err, "mountpoint '%s' is not empty (it holds '%s')", path,
				     d->d_name);
			break;
		}
	}
	closedir(dir);
	return rc;
}

int mount_check_mountpoint(const char *path, char real[PATH_MAX], bool nonempty,
			   struct pyfs_err *err)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		int rc = -errno;

		if (rc == -ENOENT)
			pyfs_err_set(err, "mountpoint '%s' does not exist", path);
		else if (rc == -ENOTCONN || rc == -ECONNABORTED)
			pyfs_err_set(err,
				     "mountpoint '%s' is a dead mount (%s): clear it with "
				     "'fusermount3 -u %s'",
				     path, strerror(-rc), path);
		else
			pyfs_err_set(err, "cannot access mountpoint '%s': %s", path, strerror(-rc));
		return rc;
	}
	if (!S_ISDIR(st.st_mode)) {
		pyfs_err_set(err, "mountpoint '%s' is not a directory", path);
		return -ENOTDIR;
	}
	if (!realpath(path, real)) {
		int rc = -errno;

		pyfs_err_set(err, "cannot resolve mountpoint '%s': %s", path, strerror(-rc));
		return rc;
	}
	if (mount_is_mount_point(real)) {
		struct statvfs sv;

		/* A dead FUSE mount may still answer stat from the kernel cache, not statfs. */
		if (statvfs(path, &sv) < 0 && (errno == ENOTCONN || errno == ECONNABORTED))
			pyfs_err_set(err,
				     "mountpoint '%s' is a dead mount (%s): clear it with "
				     "'fusermount3 -u %s'",
				     path, strerror(errno), path);
		else
			pyfs_err_set(err,
				     "mountpoint '%s' is already a mount point: unmount it "
				     "first (fusermount3 -u %s)",
				     path, path);
		return -EBUSY;
	}
	if (geteuid() != 0 && access(path, W_OK) < 0) {
		int rc = -errno;

		pyfs_err_set(err, "no write access to mountpoint '%s': %s", path, strerror(-rc));
		return rc;
	}
	/* -o nonempty: what is below is hidden on this node while mounted, never touched. */
	return nonempty ? 0 : mount_check_empty(path, err);
}

enum mount_point_state mount_point_state(const char *path)
{
	char real[PATH_MAX], parent[PATH_MAX], *slash;
	struct statvfs sv;
	struct stat st;

	/* A dead mount cannot be resolved: resolve its parent, keep its last name. */
	if (!realpath(path, real)) {
		if (snprintf(parent, sizeof(parent), "%s", path) >= (int)sizeof(parent))
			return MOUNT_POINT_NONE;
		slash = strrchr(parent, '/');
		if (!slash || !slash[1])
			return MOUNT_POINT_NONE;
		*slash = '\0';
		if (!realpath(parent[0] ? parent : "/", real) ||
		    strlen(real) + strlen(slash + 1) + 2 > sizeof(real))
			return MOUNT_POINT_NONE;
		if (strcmp(real, "/") != 0)
			strcat(real, "/");
		strcat(real, slash + 1);
	}
	if (!mount_is_mount_point(real))
		return MOUNT_POINT_NONE;
	if ((stat(real, &st) < 0 && (errno == ENOTCONN || errno == ECONNABORTED)) ||
	    (statvfs(real, &sv) < 0 && (errno == ENOTCONN || errno == ECONNABORTED)))
		return MOUNT_POINT_STALE;
	return MOUNT_POINT_LIVE;
}

int mount_check_allow_other(struct pyfs_err *err)
{
	char *line = NULL;
	size_t cap = 0;
	bool allowed = false;
	FILE *f;

	if (geteuid() == 0)
		return 0;
	f = fopen("/etc/fuse.conf", "re");
	while (f && !allowed && getline(&line, &cap, f) > 0) {
		char *p = line + strspn(line, " \t");

		allowed = strncmp(p, "user_allow_other", 16) == 0 &&
			  (p[16] == '\0' || strchr(" \t\r\n", p[16]));
	}
	free(line);
	if (f)
		fclose(f);
	if (!allowed) {
		pyfs_err_set(err, "-o allow_other needs 'user_allow_other' in /etc/fuse.conf "
				  "(ask the administrator) when not mounting as root");
		return -EPERM;
	}
	return 0;
}

int mount_path_identity(const char *path, uint64_t identity[2])
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -errno;
	identity[0] = (uint64_t)st.st_dev;
	identity[1] = (uint64_t)st.st_ino;
	return 0;
}

int mount_list_pyfs(FILE *out, long uid)
{
	char *line = NULL, want[64];
	size_t cap = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return -errno;
	snprintf(want, sizeof(want), "user_id=%ld", uid);
	/* "36 35 0:52 / /mnt/point ro,... - fuse.pyfs pyfs ro,user_id=0,group_id=0" */
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *point = NULL, *type, *source, *super, *p;
		char *sep = strstr(line, " - ");
		bool mine = uid < 0;

		if (!sep)
			continue;
		*sep = '\0';
		p = strtok_r(line, " ", &save);
		for (int i = 1; p && i < 5; i++)
			p = strtok_r(NULL, " ", &save);
		point = p;
		save = NULL;
		type = strtok_r(sep + 3, " \n", &save);
		source = type ? strtok_r(NULL, " \n", &save) : NULL;
		super = source ? strtok_r(NULL, " \n", &save) : NULL;
		if (!point || !type || strncmp(type, "fuse", 4) != 0 ||
		    !(strstr(type, "pyfs") || (source && strstr(source, "pyfs"))))
			continue;
		for (char *opt = super ? strtok_r(super, ",", &save) : NULL; opt && !mine;
		     opt = strtok_r(NULL, ",", &save))
			mine = strcmp(opt, want) == 0;
		if (!mine)
			continue;
		mount_unescape(point);
		fprintf(out, "%s\n", point);
	}
	free(line);
	fclose(f);
	return 0;
}
