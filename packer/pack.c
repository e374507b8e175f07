/*
 * pack.c - the pack command: check the request, choose the sources, run
 * pass 1 (tree.c), add byte-code (bytecode.c), run pass 2 (write.c) and
 * print the summary.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pack.h"
#include "pyfs_format.h"

struct source_id {
	dev_t dev;
	ino_t ino;
	const char *path;
};

/* Refuse an archive that exists (without --force) or cannot be one. */
static int check_archive(const char *archive, bool force, struct pyfs_err *err)
{
	struct stat st;

	if (lstat(archive, &st) < 0) {
		int ret = -errno;

		if (ret == -ENOENT)
			return 0;
		pyfs_err_set(err, "cannot use archive '%s': %s", archive, strerror(-ret));
		return ret;
	}
	if (S_ISDIR(st.st_mode)) {
		pyfs_err_set(err, "archive '%s' is a directory", archive);
		return -EISDIR;
	}
	if (!force) {
		pyfs_err_set(err, "archive '%s' exists; pass --force to overwrite it", archive);
		return -EEXIST;
	}
	return 0;
}

/*
 * Refuse an archive written inside one of the sources: walk up from its
 * directory comparing (st_dev, st_ino), which sees through symlinks and
 * bind mounts alike.
 */
static int check_not_inside(const char *archive, const struct source_id *ids, size_t count,
			    struct pyfs_err *err)
{
	char *copy = strdup(archive);
	struct stat st, up;
	int fd, parent, ret = 0;
	size_t i;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot create archive '%s': %s", archive, strerror(errno));
		goto out_free;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot create archive '%s': %s", archive, strerror(errno));
		goto out_close;
	}
	for (;;) {
		for (i = 0; i < count; i++) {
			if (ids[i].dev == st.st_dev && ids[i].ino == st.st_ino) {
				pyfs_err_set(err,
					     "archive '%s' is inside source '%s'; write it "
					     "elsewhere",
					     archive, ids[i].path);
				ret = -EINVAL;
				goto out_close;
			}
		}
		parent = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (parent < 0 || fstat(parent, &up) < 0) {
			if (parent >= 0)
				close(parent);
			break;
		}
		close(fd);
		fd = parent;
		if (up.st_dev == st.st_dev && up.st_ino == st.st_ino)
			break; /* the root is its own parent */
		st = up;
	}
out_close:
	close(fd);
out_free:
	free(copy);
	return ret;
}

/* Warn about the .pth files at the root: PYTHONPATH entries do not run them. */
static void report_pth(struct pack_inode *root)
{
	const struct pack_entry *e;
	uint32_t i;

	for (i = 0; i < root->entry_count; i++) {
		e = &root->entries[i];
		if (S_ISDIR(e->inode->mode) || e->name_len <= 4 ||
		    memcmp(e->name + e->name_len - 4, ".pth", 4) != 0)
			continue;
		pyfs_warn("'%.*s' is not processed when the archive is used through PYTHONPATH "
			  "(see README: .pth files)",
			  (int)e->name_len, (const char *)e->name);
	}
}

static void print_summary(const char *archive, const struct pack_write_stats *w, double seconds)
{
	char bytes[32], saved[32], size[32], zsaved[48] = "";

	if (w->blocks)
		snprintf(zsaved, sizeof(zsaved), ", compressed to %.3fx",
			 w->payload_bytes ? (double)w->stored_bytes / (double)w->payload_bytes
					  : 1.0);
	pyfs_info("packed '%s': %" PRIu64 " files, %" PRIu64 " dirs, %" PRIu64 " symlinks, %" PRIu64
		  " hard links, %s, %s saved by dedup%s, archive %s, %.2f s",
		  archive, w->files, w->dirs, w->symlinks, w->hard_links,
		  pack_human_bytes(bytes, sizeof(bytes), w->file_bytes),
		  pack_human_bytes(saved, sizeof(saved), w->file_bytes - w->payload_bytes), zsaved,
		  pack_human_bytes(size, sizeof(size), w->archive_bytes), seconds);
}

int pack_run(const struct pack_options *opts)
{
	const char *python = opts->python ? opts->python : "python3";
	const char *const *sources = (const char *const *)opts->sources;
	size_t source_count = (size_t)opts->source_count, id_count = 0, i, j;
	struct pack_python *py = NULL;
	struct pack_tree *tree = NULL;
	struct source_id *ids = NULL;
	struct pack_write_stats wstats;
	struct pack_write_options wopts;
	struct pyfs_err err = {""};
	uint64_t compiled = 0;
	double start = pyfs_now(), t;
	struct stat st;
	int ret;

	ret = check_archive(opts->archive, opts->force, &err);
	if (ret < 0)
		goto out_error;

	/* The interpreter runs alongside the walk: started first, asked last. */
	if (!opts->no_compile || source_count == 0) {
		ret = pack_python_start(python, &py, &err);
		if (ret < 0)
			goto out_error;
	}
	if (source_count == 0) {
		source_count = pack_python_site_dirs(py, &sources);
		if (source_count == 0) {
			pyfs_err_set(&err,
				     "interpreter '%s' has no site-packages directory; name "
				     "the sources to pack",
				     python);
			ret = -ENOENT;
			goto out_error;
		}
		for (i = 0; i < source_count; i++)
			pyfs_info("packing site-packages of '%s': '%s'", python, sources[i]);
	}

	ids = calloc(source_count, sizeof(*ids));
	if (!ids) {
		ret = -ENOMEM;
		pyfs_err_set(&err, "out of memory");
		goto out_error;
	}
	for (i = 0; i < source_count; i++) {
		if (stat(sources[i], &st) < 0) {
			ret = -errno;
			pyfs_err_set(&err, "cannot read source '%s': %s", sources[i],
				     strerror(errno));
			goto out_error;
		}
		for (j = 0; j < id_count; j++) {
			if (ids[j].dev == st.st_dev && ids[j].ino == st.st_ino)
				break;
		}
		if (j < id_count) {
			pyfs_warn("source '%s' is '%s' again: packing it once", sources[i],
				  ids[j].path);
			continue;
		}
		ids[id_count].dev = st.st_dev;
		ids[id_count].ino = st.st_ino;
		ids[id_count].path = sources[i];
		id_count++;
	}
	ret = check_not_inside(opts->archive, ids, id_count, &err);
	if (ret < 0)
		goto out_error;

	/* Pass 1. */
	ret = pack_tree_create(&tree, opts->excludes, opts->exclude_count);
	if (ret < 0) {
		pyfs_err_set(&err, "out of memory");
		goto out_error;
	}
	for (i = 0; i < id_count; i++) {
		const struct pack_tree_stats *s = pack_tree_stats(tree);
		uint64_t files = s->files, bytes = s->file_bytes;

		t = pyfs_now();
		ret = pack_tree_add_source(tree, ids[i].path, (int)i, &err);
		if (ret < 0)
			goto out_error;
		pyfs_debug("source '%s': %" PRIu64 " files, %" PRIu64 " bytes, read in %.3f s",
			   ids[i].path, s->files - files, s->file_bytes - bytes, pyfs_now() - t);
	}
	{
		const struct pack_tree_stats *s = pack_tree_stats(tree);

		pyfs_debug("tree: %" PRIu64 " files, %" PRIu64 " dirs, %" PRIu64
			   " symlinks, %" PRIu64 " hard links; %" PRIu64 " excluded, %" PRIu64
			   " clashes, %" PRIu64 " skipped",
			   s->files, s->dirs, s->symlinks, s->hard_links, s->excluded, s->conflicts,
			   s->skipped);
	}
	report_pth(pack_tree_root(tree));

	if (py) {
		t = pyfs_now();
		ret = pack_python_compile(py, tree, !opts->no_compile, &compiled, &err);
		if (ret < 0)
			goto out_error;
		if (compiled)
			pyfs_info("added %" PRIu64 " .pyc files compiled by '%s' (%.2f s)",
				  compiled, python, pyfs_now() - t);
		else if (!opts->no_compile)
			pyfs_debug("byte-code: all valid (checked in %.3f s)", pyfs_now() - t);
	}

	/* Pass 2. */
	wopts.force = opts->force;
	wopts.progress = !opts->quiet && isatty(STDERR_FILENO);
	wopts.level = opts->compress_level;
	wopts.block_size = opts->block_size ? opts->block_size : PYFS_BLOCK_SIZE_DEFAULT;
	ret = pack_write(tree, opts->archive, &wopts, &wstats, &err);
	if (ret < 0)
		goto out_error;
	if (wstats.blocks)
		pyfs_debug("compressed %" PRIu64 " bytes into %" PRIu64 " (%.3fx) in %" PRIu64
			   " blocks of %" PRIu32 " bytes at zstd level %d; %" PRIu64 " stored raw",
			   wstats.payload_bytes, wstats.stored_bytes,
			   wstats.payload_bytes
			       ? (double)wstats.stored_bytes / (double)wstats.payload_bytes
			       : 1.0,
			   wstats.blocks, wopts.block_size, wopts.level,
			   wstats.blocks - wstats.zstd_blocks);
	pyfs_debug("layout and duplicates %.3f s, copy %.3f s (%.0f MB/s), metadata and sync "
		   "%.3f s",
		   wstats.hash_seconds, wstats.copy_seconds,
		   wstats.copy_seconds > 0
		       ? (double)wstats.payload_bytes / wstats.copy_seconds / 1e6
		       : 0.0,
		   wstats.finish_seconds);
	print_summary(opts->archive, &wstats, pyfs_now() - start);
	ret = 0;
	goto out_free;

out_error:
	pyfs_error("%s", err.msg[0] ? err.msg : strerror(-ret));
out_free:
	pack_tree_destroy(tree);
	pack_python_destroy(py);
	free(ids);
	return ret < 0 ? PACK_EXIT_FAILURE : PACK_EXIT_OK;
}
