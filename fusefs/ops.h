/*
 * ops.h - the read-only FUSE low-level file system over a validated pyfs image.
 *
 * FUSE inode numbers are image indexes + 1 (the root, index 0, is FUSE_ROOT_ID).
 * The image never changes while it is mounted, so every answer is cached by the
 * kernel for as long as the mount lives: entries, attributes and misses (a miss
 * is an entry with inode 0), symlink targets, directory listings and file pages.
 * Every request is counted; the counters are read from the live mount with
 * the ioctl OPS_IOC_STATS on its root directory (pyfs-mount --stats), which
 * costs nothing on the paths of other requests. Extended attributes are not
 * served at all, so the kernel stops asking after the first getxattr (and
 * `ls -l` makes no round trip for them).
 */
#ifndef OPS_H
#define OPS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/types.h>

#include <fuse_lowlevel.h>

#include "image.h"

/* The counters as text, "name value" lines, NUL-padded: what OPS_IOC_STATS fills. */
struct ops_stats_text {
	char text[2048];
};

/*
 * ioctl(fd of the mount root, OPS_IOC_STATS, struct ops_stats_text *): a
 * "restricted" FUSE ioctl (size and direction in the number), so the kernel
 * copies the reply out itself; any other ioctl gets ENOTTY.
 */
#define OPS_IOC_STATS _IOR('P', 0x73, struct ops_stats_text)

/* Kernel cache lifetime of entries, attributes and misses: the life of the mount. */
#define OPS_TIMEOUT_FOREVER 1e9

/* Choices exposed as -o options (see mount_opts in main.c), mostly to measure them. */
struct ops_options {
	double timeout;	  /* entry, attribute and miss timeout in seconds */
	int open_calls;	  /* answer open/opendir even when the kernel can skip them */
	int decode_ahead; /* compressed: decode after a cold read and at lookups (default on) */
};

/* One counter per kind of request; relaxed atomics, never a lock. */
struct ops_counters {
	atomic_uint_fast64_t lookups;
	atomic_uint_fast64_t misses; /* lookups of names that do not exist */
	atomic_uint_fast64_t getattrs;
	atomic_uint_fast64_t readlinks;
	atomic_uint_fast64_t opens;
	atomic_uint_fast64_t opendirs;
	atomic_uint_fast64_t readdirs;
	atomic_uint_fast64_t reads;
	atomic_uint_fast64_t bytes_read;
	atomic_uint_fast64_t statfs;
	atomic_uint_fast64_t ioctls; /* isatty() and the like, and the stats query */
	atomic_uint_fast64_t access;
	atomic_uint_fast64_t refused; /* modifying requests answered EROFS */
	atomic_uint_fast64_t stores;  /* files whose first bytes went to the page cache */
	atomic_uint_fast64_t bytes_stored;
};

/* One reader thread's decompression cache (compressed images; see ops_prepare_reads). */
struct ops_cache_slot {
	struct pyfs_block_cache *cache;
	atomic_bool busy; /* claimed by a live serving thread */
};

struct ops_fs {
	struct pyfs_image *image;
	uid_t uid; /* owner of every inode: the user who mounted */
	gid_t gid;
	struct ops_options options;
	struct fuse_conn_info_opts *conn_opts; /* libfuse's -o max_readahead=, ... */
	bool no_open;			       /* set in init when the kernel supports it */
	bool no_opendir;
	unsigned int conn_want; /* capabilities agreed in init, for stats */
	unsigned int conn_max_readahead;
	struct ops_counters counters;
	/* Compressed images: one cache per serving thread, made before serving. */
	struct ops_cache_slot *caches;
	unsigned int cache_count;
	pthread_key_t cache_key;
	bool cache_key_made;
	pthread_mutex_t spare_lock; /* guards caches[cache_count - 1] when all are claimed */
	/*
	 * Storing into the page cache (ops_store_file_start): the session, the
	 * threads serving it, the stores under way, and one bit per inode for
	 * those already seen (NULL: never store).
	 */
	struct fuse_session *se;
	const atomic_uint *serving_threads;
	atomic_uint stores_under_way;
	atomic_uint_fast64_t *stored;
};

/*
 * Before serving a compressed image: one block cache for each of up to
 * threads serving threads, plus a spare shared under a lock by any thread
 * beyond them, so a read never allocates. No-op for an uncompressed image.
 * 0 or -ENOMEM. ops_release_reads() frees them after serving.
 */
int ops_prepare_reads(struct ops_fs *fs, unsigned int threads);
void ops_release_reads(struct ops_fs *fs);

/*
 * After ops_prepare_reads(), for a compressed image served by the serving
 * loop (serving_threads: the count of its running threads): let the
 * handlers store the first bytes of files being opened into the kernel's
 * page cache through se. No-op for an uncompressed image (measured: no
 * gain there) and with -o no_decode_ahead. 0 or -ENOMEM;
 * ops_release_reads() frees it.
 */
int ops_prepare_stores(struct ops_fs *fs, struct fuse_session *se,
		       const atomic_uint *serving_threads);

/* Defaults of the -o options. */
void ops_options_default(struct ops_options *options);

/* The handlers; userdata of the session is a struct ops_fs. */
extern const struct fuse_lowlevel_ops ops_lowlevel;

#endif /* OPS_H */
