/*
 * pack.c - the pack command: check the request, choose the sources, run
 * pass 1 (tree.c), add byte-code (bytecode.c), run pass 2 (write.c) and
 * print the summary.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "env.h"
#include "escape.h"
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

static void print_summary(const char *archive, const struct pack_write_stats *w, double seconds,
			  const char *extra)
{
	char bytes[32], saved[32], size[32], zsaved[48] = "";

	if (w->blocks)
		snprintf(zsaved, sizeof(zsaved), ", compressed to %.3fx",
			 w->payload_bytes ? (double)w->stored_bytes / (double)w->payload_bytes
					  : 1.0);
	pyfs_info("packed '%s': %" PRIu64 " files, %" PRIu64 " dirs, %" PRIu64 " symlinks, %" PRIu64
		  " hard links, %s, %s saved by dedup%s, archive %s, %s%.2f s",
		  archive, w->files, w->dirs, w->symlinks, w->hard_links,
		  pack_human_bytes(bytes, sizeof(bytes), w->file_bytes),
		  pack_human_bytes(saved, sizeof(saved), w->file_bytes - w->payload_bytes), zsaved,
		  pack_human_bytes(size, sizeof(size), w->archive_bytes), extra, seconds);
}

/* "3.11" of "3.11.7" into out. */
static void major_minor(const char *version, char *out, size_t size)
{
	const char *dot = strchr(version, '.');

	dot = dot ? strchr(dot + 1, '.') : NULL;
	snprintf(out, size, "%.*s", dot ? (int)(dot - version) : (int)strlen(version), version);
}

/*
 * An environment's byte-code must come from its own Python: the same version
 * and, for CPython, the cache tag "cpython-3X" its imports look for.
 */
static int check_env_python(const struct pack_env *env, const struct pack_python *py,
			    const char *python, bool given, struct pyfs_err *err)
{
	const char *tag = pack_python_tag(py);
	char mm[16], want_tag[32];
	bool ok;

	major_minor(pack_python_version(py), mm, sizeof(mm));
	snprintf(want_tag, sizeof(want_tag), "cpython-%.1s%s", env->version, env->version + 2);
	ok = strcmp(mm, env->version) == 0 &&
	     (strncmp(tag, "cpython-", 8) != 0 || strcmp(tag, want_tag) == 0);
	if (ok)
		return 0;
	if (given)
		pyfs_err_set(err,
			     "interpreter '%s' ('%s', Python %s, cache tag '%s') does not match "
			     "environment '%s' (Python %s, cache tag '%s'): its byte-code would "
			     "not be used there; leave out --python to use the environment's own",
			     python, pack_python_executable(py), pack_python_version(py),
			     tag[0] ? tag : "none", env->path, env->version, want_tag);
	else
		pyfs_err_set(err,
			     "environment '%s' is Python %s (lib/python%s, cache tag '%s') but its "
			     "interpreter '%s' ('%s') is Python %s (cache tag '%s'); pass --python "
			     "PATH",
			     env->path, env->version, env->version, want_tag, python,
			     pack_python_executable(py), pack_python_version(py),
			     tag[0] ? tag : "none");
	return -EINVAL;
}

/* Where the archive will be mounted, for the escape scan: up to two spellings. */
static int escape_mount_paths(const struct pack_options *opts, const char *single_source,
			      char abs[PATH_MAX], char real[PATH_MAX],
			      struct pack_escape_config *config, struct pyfs_err *err)
{
	const char *path = opts->mount_path ? opts->mount_path : single_source;
	int ret;

	config->mount_path_count = 0;
	if (!path)
		return 0;
	ret = pack_absolute_path(path, abs);
	if (ret < 0) {
		pyfs_err_set(err, "cannot resolve '%s': %s", path, strerror(-ret));
		return ret;
	}
	config->mount_paths[config->mount_path_count++] = abs;
	if (realpath(path, real) && strcmp(real, abs) != 0)
		config->mount_paths[config->mount_path_count++] = real;
	return 0;
}

/* "reference leaves" or "references leave", for n references. */
static const char *pack_references_leave(uint64_t n)
{
	return n == 1 ? "reference leaves" : "references leave";
}

/* The kinds of escapes that occur, with their counts: "2 symlinks, 1 shebang". */
static void pack_escape_counts(const struct pack_escape_stats *e, char *out, size_t size)
{
	const struct {
		uint64_t n;
		const char *one, *many;
	} kinds[] = {{e->symlinks, "symlink", "symlinks"},
		     {e->shebangs, "shebang", "shebangs"},
		     {e->elf, "ELF path", "ELF paths"},
		     {e->pth, ".pth line", ".pth lines"}};
	size_t len = 0;

	out[0] = '\0';
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		int n;

		if (!kinds[i].n || len >= size)
			continue;
		n = snprintf(out + len, size - len, "%s%" PRIu64 " %s", len ? ", " : "", kinds[i].n,
			     kinds[i].n == 1 ? kinds[i].one : kinds[i].many);
		len += n > 0 ? (size_t)n : 0;
	}
}

int pack_run(const struct pack_options *opts)
{
	const char *python = opts->python ? opts->python : "python3";
	struct pack_escape_config escape_config = {{NULL}, 0, false, opts->strict};
	struct pack_escape_stats escapes;
	char mount_abs[PATH_MAX], mount_real[PATH_MAX], source_abs[PATH_MAX], extra[PATH_MAX + 128];
	struct pack_env env;
	bool is_env = false;
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

	/* A whole environment brings its own interpreter (the first one among the sources). */
	for (i = 0; i < source_count && !is_env; i++) {
		ret = pack_env_detect(sources[i], &env, &err);
		if (ret < 0)
			goto out_error;
		is_env = ret == 1;
	}
	if (is_env && !opts->python)
		python = env.python;

	/* The interpreter runs alongside the walk: started first, asked last. */
	if (!opts->no_compile || source_count == 0 || (is_env && opts->python)) {
		ret = pack_python_start(python, &py, &err);
		if (ret < 0)
			goto out_error;
	}
	if (is_env && py) {
		ret = check_env_python(&env, py, python, opts->python != NULL, &err);
		if (ret < 0)
			goto out_error;
	}
	if (is_env) {
		pyfs_info("packing %s '%s' (Python %s)%s%s%s", env.venv ? "venv" : "environment",
			  env.path, env.version, py ? " with its interpreter '" : "",
			  py ? pack_python_executable(py) : "", py ? "'" : "");
		if (env.venv && env.home[0])
			pyfs_info("venv '%s' uses the standard library of its base interpreter in "
				  "'%s' (pyvenv.cfg home), which is not packed",
				  env.path, env.home);
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
			pyfs_info("packing site-packages of '%s' ('%s', Python %s): '%s'", python,
				  pack_python_executable(py), pack_python_version(py), sources[i]);
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
	pack_tree_set_dereference(tree, opts->dereference);
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
	if (opts->dereference)
		pyfs_debug("-L: %" PRIu64
			   " symlinks leaving the sources packed as what they point to",
			   pack_tree_dereferenced(tree));

	if (py) {
		t = pyfs_now();
		ret = pack_python_compile(py, tree, !opts->no_compile, &compiled, &err);
		if (ret < 0)
			goto out_error;
		if (compiled)
			pyfs_info("added %" PRIu64
				  " .pyc files compiled by '%s' (Python %s, %.2f s)",
				  compiled, pack_python_executable(py), pack_python_version(py),
				  pyfs_now() - t);
		else if (!opts->no_compile)
			pyfs_debug("byte-code: all valid (checked in %.3f s)", pyfs_now() - t);
	}

	/* One directory source: where it mounts by default (and, for an environment, recorded). */
	source_abs[0] = '\0';
	if (id_count == 1 && stat(ids[0].path, &st) == 0 && S_ISDIR(st.st_mode)) {
		ret = pack_absolute_path(ids[0].path, source_abs);
		/* Only an environment's: a plain tree packs the same from anywhere. */
		if (ret == 0 && is_env)
			ret = pack_tree_add_environment(tree, PYFS_ENV_SOURCE_PATH, source_abs);
		if (ret < 0) {
			pyfs_err_set(&err, "cannot record the source path: %s", strerror(-ret));
			goto out_error;
		}
	}
	ret = escape_mount_paths(opts, source_abs[0] ? source_abs : NULL, mount_abs, mount_real,
				 &escape_config, &err);
	if (ret < 0)
		goto out_error;
	escape_config.pythonpath_use = !is_env;
	ret = pack_escape_scan(tree, &escape_config, &escapes, &err);
	if (ret < 0)
		goto out_error;
	if (escapes.total) {
		char counts[256];

		pack_escape_counts(&escapes, counts, sizeof(counts));
		if (opts->strict) {
			pyfs_err_set(&err,
				     "%" PRIu64 " %s the archive (%s, listed above) "
				     "and --strict refuses them: pack their targets too (-L), or "
				     "give the --mount-path they point into",
				     escapes.total, pack_references_leave(escapes.total), counts);
			ret = -EINVAL;
			goto out_error;
		}
		pyfs_warn("%" PRIu64 " %s the archive (%s): on the nodes they read "
			  "outside the mount%s; -v lists them, --strict refuses them",
			  escapes.total, pack_references_leave(escapes.total), counts,
			  escape_config.mount_path_count ? ""
							 : " (no mount path: see --mount-path)");
	}
	if (escapes.pth_dirs)
		pyfs_info("%" PRIu64 " directories added by .pth files recorded for PYTHONPATH "
			  "(pyfs-prologue appends them)",
			  escapes.pth_dirs);

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
	snprintf(extra, sizeof(extra), "%" PRIu64 " %s it, %s%s%s%s%s", escapes.total,
		 pack_references_leave(escapes.total), py ? "interpreter '" : "",
		 py ? pack_python_executable(py) : "", py ? "' (Python " : "",
		 py ? pack_python_version(py) : "", py ? "), " : "");
	print_summary(opts->archive, &wstats, pyfs_now() - start, extra);
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
