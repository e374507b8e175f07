/*
 * list.c - --list and --verify: read an archive's metadata through the library
 * (which validates every offset, length, count and name), and print the tree
 * (--list: the metadata only) or a verdict (--verify: the contents are
 * streamed from the file in bounded pieces and every checksum is checked).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "archive_io.h"
#include "image.h"
#include "pack.h"
#include "stream.h"

/* Print err, naming the archive unless the message already does. */
static void report(const char *archive, const struct pyfs_err *err)
{
	if (strstr(err->msg, archive))
		pyfs_error("%s", err->msg);
	else
		pyfs_error("'%s': %s", archive, err->msg);
}

void pack_close_image(struct pack_archive *a)
{
	pyfs_stream_close(a->stream);
	pyfs_image_destroy(a->image);
	pyfs_archive_close(a->archive);
	memset(a, 0, sizeof(*a));
}

int pack_open_image(const char *archive, bool walk, bool verify, struct pack_archive *out)
{
	struct pyfs_image_parts parts = {0};
	struct pyfs_image_totals totals;
	struct pyfs_err err = {""};
	int ret;

	memset(out, 0, sizeof(*out));
	ret = pyfs_archive_open(archive, &out->archive, &err);
	if (ret == 0)
		ret = pyfs_archive_read_metadata(out->archive, &parts, &err);
	if (ret == 0)
		ret = pyfs_image_create(&parts, &out->image, &err);
	pyfs_image_parts_free(&parts); /* zeroed by a successful create */
	if (ret == 0 && verify)
		ret = pyfs_stream_open(out->archive, out->image, &out->stream, &err);
	if (ret == 0 && verify)
		ret = pyfs_stream_verify_payload(out->stream, &err);
	if (ret == 0 && verify)
		ret = pyfs_stream_verify_files(out->stream, &err);
	if (ret == 0 && walk) {
		pyfs_image_get_totals(out->image, &totals);
		if (totals.depth > PACK_DEPTH_MAX) {
			pyfs_err_set(&err,
				     "cannot walk '%s': its directories nest %" PRIu64
				     " levels deep, more than the %d pyfs-pack walks (use "
				     "pyfs-mount)",
				     archive, totals.depth, PACK_DEPTH_MAX);
			ret = -ELOOP;
		}
	}
	if (ret < 0) {
		if (!err.msg[0])
			snprintf(err.msg, sizeof(err.msg), "%s", strerror(-ret));
		report(archive, &err);
		pack_close_image(out);
		return ret;
	}
	return 0;
}

/* "drwxr-xr-x" for mode into buf (11 bytes). */
static void pack_mode_string(char *buf, uint32_t mode)
{
	static const char rwx[] = "rwxrwxrwx";
	int i;

	buf[0] = S_ISDIR(mode) ? 'd' : S_ISLNK(mode) ? 'l' : '-';
	for (i = 0; i < 9; i++)
		buf[i + 1] = mode & (1u << (8 - i)) ? rwx[i] : '-';
	buf[10] = '\0';
}

static int list_dir(const struct pyfs_image *image, uint32_t dir, struct pack_path *path,
		    char **escaped, size_t *escaped_cap)
{
	const struct pyfs_inode *inode;
	uint64_t pos, count = pyfs_image_entry_count(image, dir);
	size_t base = path->len, len, tlen, need;
	const char *name, *target;
	char mode[11], when[32];
	uint32_t index;
	struct stat st;
	struct tm tm;
	time_t mtime;
	char *buf;

	for (pos = 0; pos < count; pos++) {
		if (pyfs_image_entry(image, dir, pos, &name, &len, &index) < 0 ||
		    pyfs_image_stat(image, index, &st) < 0 || pack_path_push(path, name, len) < 0)
			return -EIO;
		inode = pyfs_image_inode(image, index);
		target = NULL;
		tlen = 0;
		if (S_ISLNK(inode->mode) && pyfs_image_readlink(image, index, &target, &tlen) < 0)
			return -EIO;
		need = 4 * (path->len > tlen ? path->len : tlen) + 1;
		if (need > *escaped_cap) {
			buf = realloc(*escaped, need);
			if (!buf)
				return -ENOMEM;
			*escaped = buf;
			*escaped_cap = need;
		}
		pack_mode_string(mode, inode->mode);
		mtime = (time_t)inode->mtime_sec;
		if (!localtime_r(&mtime, &tm) ||
		    !strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm))
			snprintf(when, sizeof(when), "@%" PRId64, inode->mtime_sec);
		pack_escape(*escaped, path->buf, path->len);
		printf("%s %3" PRIu32 " %12" PRIu64 " %s %s%s", mode, inode->nlink,
		       (uint64_t)st.st_size, when, *escaped, S_ISDIR(inode->mode) ? "/" : "");
		if (target) {
			pack_escape(*escaped, target, tlen);
			printf(" -> %s", *escaped);
		}
		putchar('\n');
		if (S_ISDIR(inode->mode) && list_dir(image, index, path, escaped, escaped_cap) < 0)
			return -EIO;
		pack_path_truncate(path, base);
	}
	return 0;
}

int pack_list(const char *archive)
{
	struct pack_archive a;
	struct pyfs_image *image;
	struct pack_path path = {0};
	char *escaped = NULL;
	size_t escaped_cap = 0;
	int ret;

	if (pack_open_image(archive, true, false, &a) < 0)
		return PACK_EXIT_FAILURE;
	image = a.image;
	ret = pack_path_set(&path, "", 0);
	if (ret == 0)
		ret = list_dir(image, PYFS_ROOT_INDEX, &path, &escaped, &escaped_cap);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		pyfs_error("cannot write the listing: %s", strerror(errno));
		ret = -EIO;
	} else if (ret < 0) {
		pyfs_error("cannot list '%s': %s", archive, strerror(-ret));
	}
	free(escaped);
	pack_path_free(&path);
	pack_close_image(&a);
	return ret < 0 ? PACK_EXIT_FAILURE : PACK_EXIT_OK;
}

int pack_verify(const char *archive)
{
	struct pyfs_image_totals t;
	struct pack_archive a;
	char zinfo[96] = "";

	if (pack_open_image(archive, false, true, &a) < 0)
		return PACK_EXIT_FAILURE;
	pyfs_image_get_totals(a.image, &t);
	if (t.blocks)
		snprintf(zinfo, sizeof(zinfo),
			 ", compressed from %" PRIu64 " in %" PRIu64 " blocks", t.raw_bytes,
			 t.blocks);
	if (pyfs_log_threshold >= PYFS_LOG_INFO)
		printf("%s: ok (%" PRIu64 " files, %" PRIu64 " directories, %" PRIu64
		       " symlinks, %" PRIu64 " bytes in files, %" PRIu64 " bytes stored%s)\n",
		       archive, t.files, t.directories, t.symlinks, t.file_bytes, t.payload_bytes,
		       zinfo);
	pack_close_image(&a);
	return PACK_EXIT_OK;
}
