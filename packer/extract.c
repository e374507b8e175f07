/*
 * extract.c - --extract: write an archive's tree into a directory, the
 * fallback where FUSE is missing.
 *
 * Nothing is written before the archive has been validated and every
 * checksum proven. Contents are streamed from the file in pieces of a few
 * MiB (stream.h), compressed archives decompressed block by block, so an
 * archive of any size extracts with little more memory than its metadata. The target directory must
 * be empty (it is created when missing). Everything is created relative to directory descriptors
 * with O_NOFOLLOW/O_EXCL, so nothing outside the target can be reached; hard links are made with
 * linkat() to the first name, whose directory is resolved beneath the target without following
 * symlinks; all-zero blocks of files become holes; modes and mtimes (ns) are set last, a
 * directory's after its contents so a read-only directory can still be filled.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "image.h"
#include "pack.h"
#include "pyfs_format.h"
#include "stream.h"

#define WRITE_CHUNK (8u << 20)
#define HOLE_BLOCK  (64u << 10)

struct extract {
	const struct pyfs_image *image;
	struct pyfs_stream *stream; /* the contents, read in pieces */
	int root_fd;
	const char *dir;
	struct pack_path rel; /* path of the entry being written, from dir */
	char **first_name;    /* by inode index: first path of a hard-linked file */
};

static void times_of(const struct pyfs_inode *inode, struct timespec times[2])
{
	times[0].tv_sec = (time_t)inode->mtime_sec;
	times[0].tv_nsec = inode->mtime_nsec;
	times[1] = times[0];
}

static int fail(struct extract *x, const char *what, int errnum)
{
	pyfs_error("cannot %s '%s/%s': %s", what, x->dir, x->rel.buf, strerror(errnum));
	return -errnum;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static int write_contents(struct extract *x, int fd, uint32_t index, uint64_t size)
{
	const uint8_t *data;
	uint64_t pos = 0;
	size_t len, block;
	ssize_t n;

	while (pos < size) {
		struct pyfs_err err = {""};

		if (pyfs_stream_read(x->stream, index, pos, WRITE_CHUNK, &data, &len, &err) < 0 ||
		    len == 0) {
			pyfs_error("cannot read '%s' from the archive: %s", x->rel.buf,
				   err.msg[0] ? err.msg : strerror(EIO));
			return -EIO;
		}
		while (len > 0) {
			block = len < HOLE_BLOCK ? len : HOLE_BLOCK;
			if (all_zero(data, block)) {
				data += block;
				len -= block;
				pos += block;
				continue;
			}
			n = pwrite(fd, data, block, (off_t)pos);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return fail(x, "write", n < 0 ? errno : EIO);
			data += n;
			len -= (size_t)n;
			pos += (uint64_t)n;
		}
	}
	if (ftruncate(fd, (off_t)size) < 0)
		return fail(x, "write", errno);
	return 0;
}

/*
 * Make name in dir_fd a hard link to first, the path (from the target) of a
 * file extracted before. The directory of first is opened beneath the target
 * without following any symlink (openat2), so a directory replaced by a
 * symlink while we extract cannot point the link at a file elsewhere.
 * Where openat2 is missing (or filtered out by a container's seccomp
 * profile: EPERM), first is resolved as a plain path.
 */
static int link_first_name(struct extract *x, char *first, int dir_fd, const char *name)
{
	struct open_how how = {
	    .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	char *slash = strrchr(first, '/');
	int parent_fd = x->root_fd, rc = 0;

	if (slash) {
		*slash = '\0';
		parent_fd = (int)syscall(SYS_openat2, x->root_fd, first, &how, sizeof(how));
		*slash = '/';
		if (parent_fd < 0 && errno != ENOSYS && errno != EPERM)
			return fail(x, "link", errno);
	}
	if (parent_fd < 0)
		rc = linkat(x->root_fd, first, dir_fd, name, 0);
	else
		rc = linkat(parent_fd, slash ? slash + 1 : first, dir_fd, name, 0);
	if (rc < 0)
		rc = fail(x, "link", errno);
	if (parent_fd >= 0 && parent_fd != x->root_fd)
		close(parent_fd);
	return rc;
}

static int extract_file(struct extract *x, int dir_fd, const char *name, uint32_t index,
			const struct pyfs_inode *inode)
{
	struct timespec times[2];
	int fd, ret;

	if (inode->nlink > 1 && x->first_name[index])
		return link_first_name(x, x->first_name[index], dir_fd, name);
	fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return fail(x, "create", errno);
	ret = write_contents(x, fd, index, inode->data_size);
	times_of(inode, times);
	if (ret == 0 && fchmod(fd, inode->mode & PYFS_MODE_PERM_MASK) < 0)
		ret = fail(x, "chmod", errno);
	if (ret == 0 && futimens(fd, times) < 0)
		ret = fail(x, "set the times of", errno);
	if (close(fd) < 0 && ret == 0)
		ret = fail(x, "write", errno);
	if (ret == 0 && inode->nlink > 1) {
		x->first_name[index] = strdup(x->rel.buf);
		if (!x->first_name[index])
			ret = -ENOMEM;
	}
	return ret;
}

static int extract_symlink(struct extract *x, int dir_fd, const char *name, uint32_t index,
			   const struct pyfs_inode *inode)
{
	char target[PYFS_SYMLINK_MAX + 1];
	struct timespec times[2];
	const char *data;
	size_t len;

	if (pyfs_image_readlink(x->image, index, &data, &len) < 0 || len > PYFS_SYMLINK_MAX)
		return fail(x, "read", EIO);
	memcpy(target, data, len);
	target[len] = '\0';
	if (symlinkat(target, dir_fd, name) < 0)
		return fail(x, "create", errno);
	times_of(inode, times);
	if (utimensat(dir_fd, name, times, AT_SYMLINK_NOFOLLOW) < 0)
		return fail(x, "set the times of", errno);
	return 0;
}

static int extract_dir(struct extract *x, uint32_t dir, int dir_fd);

static int extract_subdir(struct extract *x, int dir_fd, const char *name, uint32_t index,
			  const struct pyfs_inode *inode)
{
	struct timespec times[2];
	int fd, ret;

	if (mkdirat(dir_fd, name, 0700) < 0)
		return fail(x, "create", errno);
	fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return fail(x, "open", errno);
	ret = extract_dir(x, index, fd);
	times_of(inode, times);
	if (ret == 0 && fchmod(fd, inode->mode & PYFS_MODE_PERM_MASK) < 0)
		ret = fail(x, "chmod", errno);
	if (ret == 0 && futimens(fd, times) < 0)
		ret = fail(x, "set the times of", errno);
	close(fd);
	return ret;
}

static int extract_dir(struct extract *x, uint32_t dir, int dir_fd)
{
	uint64_t pos, count = pyfs_image_entry_count(x->image, dir);
	const struct pyfs_inode *inode;
	char name[PYFS_NAME_MAX + 1];
	size_t base = x->rel.len, len;
	const char *entry;
	uint32_t index;
	int ret = 0;

	for (pos = 0; pos < count && ret == 0; pos++) {
		if (pyfs_image_entry(x->image, dir, pos, &entry, &len, &index) < 0 ||
		    len > PYFS_NAME_MAX)
			return fail(x, "read", EIO);
		memcpy(name, entry, len);
		name[len] = '\0';
		if (pack_path_push(&x->rel, entry, len) < 0)
			return -ENOMEM;
		inode = pyfs_image_inode(x->image, index);
		if (S_ISDIR(inode->mode))
			ret = extract_subdir(x, dir_fd, name, index, inode);
		else if (S_ISLNK(inode->mode))
			ret = extract_symlink(x, dir_fd, name, index, inode);
		else
			ret = extract_file(x, dir_fd, name, index, inode);
		pack_path_truncate(&x->rel, base);
	}
	return ret;
}

/* Create dir, or accept it when it is an empty directory. Returns an fd. */
static int open_target(const char *dir)
{
	struct dirent *de;
	int fd, probe;
	DIR *d;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		pyfs_error("cannot create directory '%s': %s", dir, strerror(errno));
		return -1;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		pyfs_error("cannot open directory '%s': %s", dir, strerror(errno));
		return -1;
	}
	probe = dup(fd);
	d = probe >= 0 ? fdopendir(probe) : NULL;
	if (!d) {
		pyfs_error("cannot read directory '%s': %s", dir, strerror(errno));
		if (probe >= 0)
			close(probe);
		close(fd);
		return -1;
	}
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			pyfs_error("directory '%s' is not empty; extract into a new or empty "
				   "directory",
				   dir);
			closedir(d);
			close(fd);
			return -1;
		}
	}
	closedir(d);
	return fd;
}

int pack_extract(const char *archive, const char *dir)
{
	struct extract x = {.root_fd = -1, .dir = dir};
	struct pyfs_image *image;
	struct pack_archive a;
	const struct pyfs_inode *root;
	struct timespec times[2];
	uint32_t i, count;
	int ret = -1;

	if (pack_open_image(archive, true, true, &a) < 0)
		return PACK_EXIT_FAILURE;
	image = a.image;
	x.image = image;
	x.stream = a.stream;
	count = pyfs_image_inode_count(image);
	x.first_name = calloc(count, sizeof(*x.first_name));
	if (!x.first_name || pack_path_set(&x.rel, "", 0) < 0) {
		pyfs_error("out of memory");
		goto out_free;
	}
	x.root_fd = open_target(dir);
	if (x.root_fd < 0)
		goto out_free;
	ret = extract_dir(&x, PYFS_ROOT_INDEX, x.root_fd);
	if (ret == -ENOMEM)
		pyfs_error("out of memory");
	root = pyfs_image_inode(image, PYFS_ROOT_INDEX);
	times_of(root, times);
	if (ret == 0 && (fchmod(x.root_fd, root->mode & PYFS_MODE_PERM_MASK) < 0 ||
			 futimens(x.root_fd, times) < 0)) {
		ret = -errno;
		pyfs_error("cannot set the mode and times of '%s': %s", dir, strerror(-ret));
	}
out_free:
	if (x.root_fd >= 0)
		close(x.root_fd);
	if (x.first_name) {
		for (i = 0; i < count; i++)
			free(x.first_name[i]);
		free(x.first_name);
	}
	pack_path_free(&x.rel);
	pack_close_image(&a);
	return ret < 0 ? PACK_EXIT_FAILURE : PACK_EXIT_OK;
}
