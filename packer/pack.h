/*
 * pack.h - the modules of pyfs-pack and what they share.
 *
 * Packing runs in two passes. Pass 1 (tree.c) walks every source into one
 * in-memory tree of pack_inode records, merging the sources at the archive
 * root; bytecode.c then asks the target interpreter, in one run, which .py
 * files lack valid byte-code and adds the .pyc files it compiles (into a
 * temporary directory, never into a source). Pass 2 (write.c) numbers the
 * tree, finds duplicate contents, and copies every distinct content once into
 * the archive's payload (compressed in blocks with -z). pack.c runs the
 * whole; list.c and extract.c serve --list, --verify and --extract from the
 * library's validated metadata image and a stream of the contents.
 */
#ifndef PACK_H
#define PACK_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "log.h"

/* Exit statuses of pyfs-pack (documented in --help). */
#define PACK_EXIT_OK	  0
#define PACK_EXIT_FAILURE 1
#define PACK_EXIT_USAGE	  2

/*
 * Deepest directory nesting (levels below the archive root) that pyfs-pack
 * packs, lists and extracts. Its walks recurse once per level, so this
 * bounds their stack to well under 1 MiB; no path can name a deeper file
 * anyway (PATH_MAX is 4096 bytes, at least 2 a level).
 */
#define PACK_DEPTH_MAX 1024

struct pack_options {
	const char *archive;
	char **sources;
	int source_count;
	const char *python; /* NULL: the default, "python3" */
	char **excludes;
	int exclude_count;
	bool no_compile;
	bool force;
	bool quiet;
	bool verbose;
	bool dereference;	/* -L */
	bool strict;		/* --strict: escapes are errors */
	const char *mount_path; /* --mount-path; NULL: the source's own path */
	int compress_level;	/* 0: no compression (-z sets PACK_COMPRESS_LEVEL_DEFAULT) */
	uint32_t block_size;	/* raw bytes per compressed block */
};

/* zstd level of a bare -z, and the levels accepted by -z LEVEL. */
#define PACK_COMPRESS_LEVEL_DEFAULT 9
#define PACK_COMPRESS_LEVEL_MAX	    19

/* ---- pack.c: the pack command ---- */

int pack_run(const struct pack_options *opts);

/* ---- list.c, extract.c: commands on an existing archive (return exit statuses) ---- */

int pack_list(const char *archive);
int pack_verify(const char *archive);
int pack_extract(const char *archive, const char *dir);

struct pyfs_archive;
struct pyfs_image;
struct pyfs_stream;

/* An open archive: its metadata image, and a stream of its contents when verified. */
struct pack_archive {
	struct pyfs_archive *archive;
	struct pyfs_image *image; /* metadata only: contents come through stream */
	struct pyfs_stream *stream;
};

/*
 * Open archive and read its metadata through the library (which validates
 * its structure and metadata checksum); the payload is never held whole.
 * With verify, also stream the payload once against its checksums and every
 * file against its own checksum, and keep the stream for reading contents.
 * With walk (the caller recurses through the tree), also refuse directories
 * nested deeper than PACK_DEPTH_MAX. Prints what is wrong; 0 or a negative
 * errno (nothing to close then).
 */
int pack_open_image(const char *archive, bool walk, bool verify, struct pack_archive *out);
void pack_close_image(struct pack_archive *a);

/* ---- util.c ---- */

/* Set by SIGINT/SIGTERM; long loops check it and stop with -EINTR. */
extern volatile sig_atomic_t pack_interrupted;

/*
 * Catch SIGINT and SIGTERM: the handler removes the registered temporary
 * archive at once (so nothing partial survives even a stuck write) and sets
 * pack_interrupted.
 */
void pack_signals_install(void);
void pack_signals_guard_file(const char *path); /* NULL: nothing to remove */
void pack_signals_reraise(void);		/* die by the caught signal, if any */

/* A growable path (NUL-terminated); push appends "/name" (or name when empty). */
struct pack_path {
	char *buf;
	size_t len;
	size_t cap;
};

int pack_path_set(struct pack_path *path, const char *str, size_t len);
int pack_path_push(struct pack_path *path, const void *name, size_t len);
void pack_path_truncate(struct pack_path *path, size_t len);
void pack_path_free(struct pack_path *path);

/*
 * open(2) for paths of any length: longer than PATH_MAX are opened one
 * component at a time. Returns an fd or a negative errno.
 */
int pack_open_path(const char *path, int flags);

/*
 * Write name (len bytes) to buf as printable ASCII: '\\' as "\\\\", other
 * bytes outside ' '..'~' as "\\ooo". buf holds at least 4 * len + 1 bytes.
 */
void pack_escape(char *buf, const void *name, size_t len);

/* "1.5 MiB"-style text for n bytes into buf (at least 32 bytes). */
const char *pack_human_bytes(char *buf, size_t size, uint64_t n);

/* ---- tree.c: the in-memory tree of pass 1 ---- */

struct pack_inode;

/* One name in a directory. */
struct pack_entry {
	const uint8_t *name;
	uint32_t name_len;
	struct pack_inode *inode;
};

/*
 * One inode of the archive to be. A regular file reads its contents from
 * path, a symlink keeps its target (size bytes, NUL-terminated), a directory
 * its entries (sorted by name unless dirty).
 */
struct pack_inode {
	uint32_t mode; /* S_IFREG, S_IFDIR or S_IFLNK | permission bits */
	uint32_t mtime_nsec;
	int64_t mtime_sec;
	int64_t ctime_sec; /* regular file from a source: for change detection */
	uint32_t ctime_nsec;
	int source; /* index of the source it came from, -1 when generated */
	uint64_t size;
	const char *path;
	const char *target;
	dev_t dev;
	ino_t ino;

	struct pack_inode *parent;
	struct pack_entry *entries;
	uint32_t entry_count;
	uint32_t entry_cap;
	bool dirty;

	/* Pass 2 (write.c). */
	bool numbered;
	uint32_t index;
	uint32_t nlink;
	uint64_t data_offset;
	uint64_t checksum;
	struct pack_inode *same_as; /* identical contents stored by this earlier file */
};

/* What pass 1 saw, for --verbose and the summary. */
struct pack_tree_stats {
	uint64_t files;
	uint64_t dirs;
	uint64_t symlinks;
	uint64_t hard_links; /* names beyond the first of a regular file */
	uint64_t skipped;    /* sockets, FIFOs, devices */
	uint64_t excluded;
	uint64_t conflicts;
	uint64_t file_bytes;
};

struct pack_tree;

int pack_tree_create(struct pack_tree **out, char *const *excludes, int exclude_count);
void pack_tree_destroy(struct pack_tree *tree);
struct pack_inode *pack_tree_root(struct pack_tree *tree);
const struct pack_tree_stats *pack_tree_stats(const struct pack_tree *tree);

/*
 * Merge source into the tree: a directory's contents go to the archive root,
 * any other file goes there under its own name. A name already taken by an
 * earlier source keeps the earlier entry (directories merge) and is reported
 * as a warning. Returns 0 or a negative errno (err says which path failed).
 */
int pack_tree_add_source(struct pack_tree *tree, const char *source, int source_index,
			 struct pyfs_err *err);

/*
 * -L: symlinks whose canonical target lies outside every source are replaced
 * by what they point to (directories walked, files copied); dangling ones
 * stay. pack_tree_dereferenced() counts the links replaced.
 */
void pack_tree_set_dereference(struct pack_tree *tree, bool dereference);
uint64_t pack_tree_dereferenced(const struct pack_tree *tree);

/*
 * "KEY=VALUE" strings for the archive's optional environment attribute
 * (pyfs_format.h), in the order added. Add returns 0 or -ENOMEM.
 */
int pack_tree_add_environment(struct pack_tree *tree, const char *key, const char *value);
const char *const *pack_tree_environment(const struct pack_tree *tree, size_t *count);

/* Is the archive path rel (no leading '/') left out by an --exclude? */
bool pack_tree_excluded(const struct pack_tree *tree, const char *rel);

/* Entry name in directory dir (whose entries must not be dirty), or NULL. */
struct pack_entry *pack_tree_lookup(struct pack_inode *dir, const void *name, size_t len);

/* Add a new empty directory name to dir. Returns it, or NULL without memory. */
struct pack_inode *pack_tree_add_dir(struct pack_tree *tree, struct pack_inode *dir,
				     const void *name, size_t len, uint32_t mode, int64_t mtime_sec,
				     uint32_t mtime_nsec);

/*
 * Add (or, if entry is not NULL, point entry at) a new regular file read
 * from path. Returns 0 or -ENOMEM.
 */
int pack_tree_put_file(struct pack_tree *tree, struct pack_inode *dir, struct pack_entry *entry,
		       const void *name, size_t len, const char *path, uint32_t mode,
		       int64_t mtime_sec, uint32_t mtime_nsec, uint64_t size);

/* Sort the entries of every dirty directory. */
void pack_tree_sort(struct pack_tree *tree);

/* Byte order of names inside a directory (the order the archive requires). */
int pack_name_compare(const void *a, size_t a_len, const void *b, size_t b_len);

/* ---- bytecode.c: the target interpreter ---- */

struct pack_python;

/*
 * Start the interpreter's helper (one process for the whole run) and read
 * what it reports: cache tag, magic number, site-packages directories.
 */
int pack_python_start(const char *python, struct pack_python **out, struct pyfs_err *err);

/*
 * What it reported: cache tag ("cpython-311", "" when it caches nothing),
 * version ("3.11.7") and the real path of its executable.
 */
const char *pack_python_tag(const struct pack_python *py);
const char *pack_python_version(const struct pack_python *py);
const char *pack_python_executable(const struct pack_python *py);

/* Its existing site-packages directories (purelib, platlib, site), deduplicated. */
size_t pack_python_site_dirs(const struct pack_python *py, const char *const **dirs);

/*
 * Give every .py in the tree that lacks valid byte-code for this interpreter
 * a compiled __pycache__/NAME.TAG.pyc; *added counts them. With compile false,
 * only end the helper. Compiled files live in a temporary directory until
 * pack_python_destroy().
 */
int pack_python_compile(struct pack_python *py, struct pack_tree *tree, bool compile,
			uint64_t *added, struct pyfs_err *err);

void pack_python_destroy(struct pack_python *py);

/* ---- write.c: pass 2 ---- */

struct pack_write_stats {
	uint64_t files;
	uint64_t dirs; /* the root included */
	uint64_t symlinks;
	uint64_t hard_links; /* names of regular files beyond their first */
	uint64_t inodes;
	uint64_t dirents;
	uint64_t names_size;
	uint64_t file_bytes;	/* every inode once */
	uint64_t payload_bytes; /* after dedup (alignment padding not counted) */
	uint64_t stored_bytes;	/* after compression (payload_bytes without) */
	uint64_t blocks;	/* compressed blocks, of which zstd_blocks shrank */
	uint64_t zstd_blocks;
	uint64_t archive_bytes;
	double hash_seconds;
	double copy_seconds;
	double finish_seconds;
};

struct pack_write_options {
	bool force;	     /* replace an existing archive */
	bool progress;	     /* show the progress line */
	int level;	     /* zstd level; 0: no compression (a version 1 archive) */
	uint32_t block_size; /* raw bytes per block when compressing */
};

/*
 * Write the tree to archive through a temporary file renamed at the end (over
 * an existing archive only with force).
 */
int pack_write(struct pack_tree *tree, const char *archive, const struct pack_write_options *opts,
	       struct pack_write_stats *stats, struct pyfs_err *err);

/* ---- progress.c: the progress line on a terminal ---- */

struct pack_progress {
	bool enabled;
	double start;
	double last;
	uint64_t files_total;
	uint64_t bytes_total;
	uint64_t files_done;
	uint64_t bytes_done;
	bool shown;
};

void pack_progress_start(struct pack_progress *progress, bool enabled, uint64_t files_total,
			 uint64_t bytes_total);
void pack_progress_update(struct pack_progress *progress, uint64_t files_done, uint64_t bytes_done);
void pack_progress_end(struct pack_progress *progress);

#endif /* PACK_H */
