/*
 * ops.c - FUSE low-level handlers serving a validated pyfs image from RAM.
 *
 * Every handler ends in exactly one fuse_reply_*(). Lookups and reads are
 * bounds-checked O(log n) / O(1) accessors of image.h, so no handler
 * allocates or logs, and none blocks but a store into the page cache
 * (ops_store_file_start), which can wait for another thread's answer.
 * Reads of a compressed image decompress through a block cache made for
 * each serving thread before serving (ops_prepare_reads); a thread beyond
 * them shares a spare cache under a lock, and a block that does not
 * decompress is logged once by the image. Modifying requests get EROFS (the
 * mount is also "ro", so the kernel refuses most of them itself).
 */
#include "ops.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "log.h"

#define OPS_BLOCK_SIZE 4096

/*
 * Largest directory reply built at once, on the stack of the serving thread:
 * a larger request gets a shorter reply and the kernel asks again from where
 * it ended. 64 KiB is more than glibc's readdir asks for (32 KiB).
 */
#define OPS_READDIR_MAX (64u << 10)

/*
 * readdirplus brings attributes along only for directories up to this many
 * entries: then the kernel makes a dentry and an inode (about 1 KiB) for
 * each entry, which pays when most of them are looked up next (a Python
 * package: its largest directory in Debian's numpy/scipy has 110 entries)
 * and costs ten times the listing itself when few are (`find` over 1M files
 * in directories of 1000: cold 2.3-7 s against 0.3-0.6 s). Larger listings
 * go out as plain entries (node id 0: the kernel makes nothing), and only
 * the names looked up later cost a lookup. Measured: docs/PERFORMANCE.md.
 */
#define OPS_READDIRPLUS_MAX_ENTRIES 512u

/* Recently decoded blocks of a compressed image shared by the serving threads. */
#define OPS_SHARED_BLOCKS 64u

#define OPS_COUNT(fs, name) atomic_fetch_add_explicit(&(fs)->counters.name, 1, memory_order_relaxed)

void ops_options_default(struct ops_options *options)
{
	options->timeout = OPS_TIMEOUT_FOREVER;
	options->open_calls = 0;
	options->decode_ahead = 1;
}

static struct ops_fs *ops_fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* The image index of a FUSE inode number, or false when it names no inode. */
static bool ops_index(const struct ops_fs *fs, fuse_ino_t ino, uint32_t *index)
{
	if (ino == 0 || ino - 1 >= pyfs_image_inode_count(fs->image))
		return false;
	*index = (uint32_t)(ino - 1);
	return true;
}

/* Attributes of index as the kernel sees them (the owner is the mounting user). */
static int ops_stat(const struct ops_fs *fs, uint32_t index, struct stat *st)
{
	int rc = pyfs_image_stat(fs->image, index, st);

	if (rc == 0) {
		st->st_uid = fs->uid;
		st->st_gid = fs->gid;
	}
	return rc;
}

static void ops_fill_entry(const struct ops_fs *fs, uint32_t index, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = (fuse_ino_t)index + 1;
	e->generation = 1;
	e->attr_timeout = fs->options.timeout;
	e->entry_timeout = fs->options.timeout;
	(void)ops_stat(fs, index, &e->attr);
}

static void ops_init(void *userdata, struct fuse_conn_info *conn)
{
	struct ops_fs *fs = userdata;
	unsigned int wanted = FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS |
			      FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_READDIRPLUS | FUSE_CAP_IOCTL_DIR;

	conn->want |= wanted & conn->capable;
	/* Nothing ever changes: no cache invalidation on attribute refresh. */
	conn->want &= ~(unsigned int)FUSE_CAP_AUTO_INVAL_DATA;
	/*
	 * Adaptive readdirplus: the kernel asks for attributes with the first
	 * part of a listing, and with the rest when names of it were looked up;
	 * ops_readdir_common() sends them for small directories only. Measured
	 * against always and never: docs/PERFORMANCE.md (readdirplus=yes|no).
	 */
	conn->want |= conn->capable & FUSE_CAP_READDIRPLUS_AUTO;
	/*
	 * Replies point into the payload and go out with one writev(); splicing
	 * them would copy them into a pipe first (-o splice_write turns it on).
	 */
	conn->want &= ~(unsigned int)FUSE_CAP_SPLICE_WRITE;
	if (!fs->options.open_calls) {
		fs->no_open = conn->capable & FUSE_CAP_NO_OPEN_SUPPORT;
		fs->no_opendir = conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT;
	}
	/*
	 * Read size: libfuse offers max_pages from its max_write (1 MiB, 256
	 * pages); the kernel's readahead window (128 KiB) sets the usual size.
	 * libfuse's -o max_readahead=, [no_]splice_write, readdirplus=... have
	 * the last word.
	 */
	if (fs->conn_opts)
		fuse_apply_conn_info_opts(fs->conn_opts, conn);
	fs->conn_want = conn->want;
	fs->conn_max_readahead = conn->max_readahead;
	pyfs_debug("fuse init: protocol %u.%u, capable 0x%x, want 0x%x, max_readahead %u, "
		   "max_write %u, no_open %d, no_opendir %d",
		   conn->proto_major, conn->proto_minor, conn->capable, conn->want,
		   conn->max_readahead, conn->max_write, fs->no_open, fs->no_opendir);
}

static struct ops_cache_slot *ops_thread_cache(struct ops_fs *fs);

/*
 * A file looked up is about to be opened and read: while the caller opens it
 * (about 140 us between a .pyc's lookup and its first read in a cold import,
 * longer than a block takes to decompress), decompress its first blocks.
 */
static void ops_decode_file_start(struct ops_fs *fs, uint32_t index)
{
	struct ops_cache_slot *slot;

	if (!fs->caches || !fs->options.decode_ahead)
		return;
	slot = ops_thread_cache(fs);
	if (slot)
		pyfs_image_decode_file_start(fs->image, slot->cache, index, fs->conn_max_readahead);
}

/*
 * Put the first bytes of a compressed file that is being opened (the kernel
 * readahead window, 128 KiB) into the kernel's page cache with
 * FUSE_NOTIFY_STORE, decompressed, before answering the request that told
 * us: the read that follows is then served by the kernel with no request.
 * Called (when fs->stored is set) at a file's first ioctl, which Python's
 * open() makes (isatty())
 * between the lookup and the first read: the kernel has the inode by then
 * (a store right after the lookup's reply usually came too early), and the
 * blocks are usually decoded already (ops_decode_file_start). Once per
 * inode and mount.
 *
 * A store waits for pages locked by a read of the same file that is in
 * flight, which another serving thread must answer: at most all threads but
 * one store at a time, so that one is always free to answer it, and the
 * serving loop serves on after a signal until no store is under way
 * (mount_loop_serve_while). A file refused for that reason may be stored at
 * a later open.
 */
static void ops_store_file_start(struct ops_fs *fs, uint32_t index, fuse_ino_t ino)
{
	const struct pyfs_inode *inode = pyfs_image_inode(fs->image, index);
	struct fuse_bufvec bufv = FUSE_BUFVEC_INIT(0);
	uint64_t bit = UINT64_C(1) << (index % 64);
	struct ops_cache_slot *slot;
	const uint8_t *data;
	size_t len;

	/*
	 * The bit first, with a plain load: every later ioctl of the inode (all
	 * of a warm import's) stops here. Inodes that are not files get the bit
	 * too, and are not looked at again.
	 */
	if ((atomic_load_explicit(&fs->stored[index / 64], memory_order_relaxed) & bit) ||
	    (atomic_fetch_or(&fs->stored[index / 64], bit) & bit) || !inode ||
	    (inode->mode & S_IFMT) != S_IFREG || inode->data_size == 0)
		return;
	if (atomic_fetch_add(&fs->stores_under_way, 1) + 1 >= atomic_load(fs->serving_threads)) {
		/* Busy (or no thread to spare yet): a later open may store it. */
		atomic_fetch_and(&fs->stored[index / 64], ~bit);
		goto out;
	}
	slot = ops_thread_cache(fs);
	if (!slot ||
	    pyfs_image_read_cached(fs->image, slot->cache, index, 0, fs->conn_max_readahead, &data,
				   &len) < 0 ||
	    len == 0)
		goto out;
	bufv.buf[0].size = len;
	bufv.buf[0].mem = (void *)data;
	if (fuse_lowlevel_notify_store(fs->se, ino, 0, &bufv, 0) == 0) {
		OPS_COUNT(fs, stores);
		atomic_fetch_add_explicit(&fs->counters.bytes_stored, len, memory_order_relaxed);
	}
out:
	atomic_fetch_sub(&fs->stores_under_way, 1);
}

static void ops_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ops_fs *fs = ops_fs_of(req);
	struct fuse_entry_param e;
	uint32_t dir, found;
	int rc;

	OPS_COUNT(fs, lookups);
	if (!ops_index(fs, parent, &dir)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	rc = pyfs_image_lookup(fs->image, dir, name, strlen(name), &found);
	if (rc == -ENOENT) {
		/* Inode 0 with a timeout: the kernel caches the miss. */
		OPS_COUNT(fs, misses);
		memset(&e, 0, sizeof(e));
		e.entry_timeout = fs->options.timeout;
		fuse_reply_entry(req, &e);
	} else if (rc < 0) {
		fuse_reply_err(req, -rc);
	} else {
		ops_fill_entry(fs, found, &e);
		fuse_reply_entry(req, &e);
		ops_decode_file_start(fs, found);
	}
}

/* The image never drops an inode: the kernel's reference counts need no bookkeeping. */
static void ops_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)ino;
	(void)nlookup;
	fuse_reply_none(req);
}

static void ops_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	(void)count;
	(void)forgets;
	fuse_reply_none(req);
}

static void ops_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_fs *fs = ops_fs_of(req);
	struct stat st;
	uint32_t index;

	(void)fi;
	OPS_COUNT(fs, getattrs);
	if (!ops_index(fs, ino, &index) || ops_stat(fs, index, &st) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fuse_reply_attr(req, &st, fs->options.timeout);
}

static void ops_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct ops_fs *fs = ops_fs_of(req);
	char target[PYFS_SYMLINK_MAX + 1];
	const char *data;
	size_t len;
	uint32_t index;

	OPS_COUNT(fs, readlinks);
	if (!ops_index(fs, ino, &index)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (pyfs_image_readlink(fs->image, index, &data, &len) < 0 || len >= sizeof(target)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	memcpy(target, data, len);
	target[len] = '\0';
	fuse_reply_readlink(req, target);
}

static void ops_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_fs *fs = ops_fs_of(req);
	uint32_t index;

	OPS_COUNT(fs, opens);
	if (!ops_index(fs, ino, &index)) {
		fuse_reply_err(req, ENOENT);
	} else if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
	} else if (fs->no_open) {
		/* The kernel stops sending opens and keeps file pages cached. */
		fuse_reply_err(req, ENOSYS);
	} else {
		fi->keep_cache = 1;
		fi->noflush = 1;
		fuse_reply_open(req, fi);
	}
}

static void ops_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_fs *fs = ops_fs_of(req);
	uint32_t index;

	OPS_COUNT(fs, opendirs);
	if (!ops_index(fs, ino, &index)) {
		fuse_reply_err(req, ENOENT);
	} else if (fs->no_opendir) {
		/* The kernel stops sending opendirs and caches listings. */
		fuse_reply_err(req, ENOSYS);
	} else {
		fi->keep_cache = 1;
		fi->cache_readdir = 1;
		fuse_reply_open(req, fi);
	}
}

static void ops_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

/*
 * One directory listing: position 0 is ".", 1 is "..", 2 + k is entry k;
 * each entry records the position of the next. With plus, every entry of a
 * directory of up to OPS_READDIRPLUS_MAX_ENTRIES carries its attributes so
 * that `ls -l` and imports need no lookups. No allocation: the reply is
 * built in a buffer on the stack.
 */
static void ops_readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct ops_fs *fs = ops_fs_of(req);
	char buf[OPS_READDIR_MAX];
	char name[PYFS_NAME_MAX + 1];
	struct fuse_entry_param e;
	uint64_t count, pos;
	uint32_t dir, child;
	size_t used = 0;
	bool attrs;

	OPS_COUNT(fs, readdirs);
	if (!ops_index(fs, ino, &dir)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!S_ISDIR(pyfs_image_inode(fs->image, dir)->mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (size > sizeof(buf))
		size = sizeof(buf);
	count = pyfs_image_entry_count(fs->image, dir);
	attrs = plus && count <= OPS_READDIRPLUS_MAX_ENTRIES;
	for (pos = off < 0 ? 0 : (uint64_t)off; pos < count + 2; pos++) {
		size_t len, need;

		if (pos < 2) {
			child = pos == 0 ? dir : pyfs_image_inode(fs->image, dir)->parent;
			len = pos + 1;
			memcpy(name, "..", len);
		} else {
			const char *entry;

			if (pyfs_image_entry(fs->image, dir, pos - 2, &entry, &len, &child) < 0)
				break;
			memcpy(name, entry, len);
		}
		name[len] = '\0';
		ops_fill_entry(fs, child, &e);
		if (plus) {
			/* No references on "." and "..", nor on entries sent without attributes. */
			if (pos < 2 || !attrs)
				e.ino = 0;
			need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						      (off_t)pos + 1);
		} else {
			need = fuse_add_direntry(req, buf + used, size - used, name, &e.attr,
						 (off_t)pos + 1);
		}
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
}

static void ops_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	(void)fi;
	ops_readdir_common(req, ino, size, off, false);
}

static void ops_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			    struct fuse_file_info *fi)
{
	(void)fi;
	ops_readdir_common(req, ino, size, off, true);
}

/* A serving thread gives its cache back when it ends. */
static void ops_cache_release(void *slot)
{
	atomic_store(&((struct ops_cache_slot *)slot)->busy, false);
}

int ops_prepare_reads(struct ops_fs *fs, unsigned int threads)
{
	if (!pyfs_image_compressed(fs->image))
		return 0;
	/* The last slot is the spare, never claimed. */
	fs->cache_count = threads + 1;
	fs->caches = calloc(fs->cache_count, sizeof(*fs->caches));
	if (!fs->caches)
		return -ENOMEM;
	for (unsigned int i = 0; i < fs->cache_count; i++) {
		fs->caches[i].cache = pyfs_block_cache_create(fs->image);
		if (!fs->caches[i].cache)
			return -ENOMEM;
		atomic_init(&fs->caches[i].busy, false);
	}
	if (pyfs_image_share_blocks(fs->image, OPS_SHARED_BLOCKS) < 0 ||
	    pthread_key_create(&fs->cache_key, ops_cache_release) != 0)
		return -ENOMEM;
	fs->cache_key_made = true;
	pthread_mutex_init(&fs->spare_lock, NULL);
	return 0;
}

int ops_prepare_stores(struct ops_fs *fs, struct fuse_session *se,
		       const atomic_uint *serving_threads)
{
	if (!fs->caches || !fs->options.decode_ahead || !serving_threads)
		return 0;
	fs->stored = calloc(pyfs_image_inode_count(fs->image) / 64 + 1, sizeof(*fs->stored));
	if (!fs->stored)
		return -ENOMEM;
	fs->se = se;
	fs->serving_threads = serving_threads;
	atomic_init(&fs->stores_under_way, 0);
	return 0;
}

void ops_release_reads(struct ops_fs *fs)
{
	free(fs->stored);
	fs->stored = NULL;
	for (unsigned int i = 0; fs->caches && i < fs->cache_count; i++)
		pyfs_block_cache_destroy(fs->caches[i].cache);
	free(fs->caches);
	fs->caches = NULL;
	if (fs->cache_key_made) {
		pthread_key_delete(fs->cache_key);
		pthread_mutex_destroy(&fs->spare_lock);
		fs->cache_key_made = false;
	}
}

/* This thread's cache slot, claimed on its first read; NULL when all are taken. */
static struct ops_cache_slot *ops_thread_cache(struct ops_fs *fs)
{
	struct ops_cache_slot *slot = pthread_getspecific(fs->cache_key);

	for (unsigned int i = 0; !slot && i + 1 < fs->cache_count; i++) {
		if (!atomic_exchange(&fs->caches[i].busy, true)) {
			slot = &fs->caches[i];
			if (pthread_setspecific(fs->cache_key, slot) != 0) {
				atomic_store(&slot->busy, false);
				slot = NULL;
				break;
			}
		}
	}
	return slot;
}

/* Reply with len bytes at data: one buffer, sent with one writev(), no copy here. */
static void ops_reply_bytes(struct ops_fs *fs, fuse_req_t req, const uint8_t *data, size_t len)
{
	struct fuse_bufvec bufv = FUSE_BUFVEC_INIT(0);

	atomic_fetch_add_explicit(&fs->counters.bytes_read, len, memory_order_relaxed);
	bufv.buf[0].size = len;
	bufv.buf[0].mem = (void *)data;
	fuse_reply_data(req, &bufv, 0);
}

/*
 * A compressed image: decompress through this thread's cache (or the spare
 * one, under its lock, held until the reply is sent). A block that does not
 * decompress fails this read with EIO; the image logs it once.
 */
static void ops_read_compressed(struct ops_fs *fs, fuse_req_t req, uint32_t index, size_t size,
				uint64_t off)
{
	struct ops_cache_slot *slot = ops_thread_cache(fs);
	struct pyfs_block_cache *cache;
	const uint8_t *data;
	size_t len;
	int rc;

	if (slot) {
		cache = slot->cache;
	} else {
		pthread_mutex_lock(&fs->spare_lock);
		cache = fs->caches[fs->cache_count - 1].cache;
	}
	rc = pyfs_image_read_cached(fs->image, cache, index, off, size, &data, &len);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		ops_reply_bytes(fs, req, data, len);
	/* Not on the spare cache: its lock would keep other threads waiting meanwhile. */
	if (rc >= 0 && slot && fs->options.decode_ahead)
		pyfs_image_decode_ahead(fs->image, cache);
	if (!slot)
		pthread_mutex_unlock(&fs->spare_lock);
}

static void ops_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct ops_fs *fs = ops_fs_of(req);
	const uint8_t *data;
	uint32_t index;
	size_t len;
	int rc;

	(void)fi;
	OPS_COUNT(fs, reads);
	if (!ops_index(fs, ino, &index) || off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (fs->caches) {
		ops_read_compressed(fs, req, index, size, (uint64_t)off);
		return;
	}
	rc = pyfs_image_read(fs->image, index, (uint64_t)off, size, &data, &len);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	/* The reply points straight into the payload: no copy in user space. */
	ops_reply_bytes(fs, req, data, len);
}

static void ops_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ops_fs *fs = ops_fs_of(req);
	struct pyfs_image_totals totals;
	struct statvfs st;

	(void)ino;
	OPS_COUNT(fs, statfs);
	pyfs_image_get_totals(fs->image, &totals);
	memset(&st, 0, sizeof(st));
	st.f_bsize = OPS_BLOCK_SIZE;
	st.f_frsize = OPS_BLOCK_SIZE;
	st.f_blocks = (totals.payload_bytes + OPS_BLOCK_SIZE - 1) / OPS_BLOCK_SIZE;
	st.f_files = totals.inodes;
	st.f_namemax = PYFS_NAME_MAX;
	fuse_reply_statfs(req, &st);
}

/* Write the counters as "name value\n" lines into buf; returns the length (may truncate). */
static size_t ops_format_stats(struct ops_fs *fs, char *buf, size_t size)
{
	const struct {
		const char *name;
		atomic_uint_fast64_t *value;
	} rows[] = {
	    {"lookups", &fs->counters.lookups},
	    {"misses", &fs->counters.misses},
	    {"getattrs", &fs->counters.getattrs},
	    {"readlinks", &fs->counters.readlinks},
	    {"opens", &fs->counters.opens},
	    {"opendirs", &fs->counters.opendirs},
	    {"readdirs", &fs->counters.readdirs},
	    {"reads", &fs->counters.reads},
	    {"bytes_read", &fs->counters.bytes_read},
	    {"statfs", &fs->counters.statfs},
	    {"ioctls", &fs->counters.ioctls},
	    {"access", &fs->counters.access},
	    {"refused", &fs->counters.refused},
	    {"stores", &fs->counters.stores},
	    {"bytes_stored", &fs->counters.bytes_stored},
	};
	size_t used = 0;

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]) && used < size; i++) {
		uint64_t v = atomic_load_explicit(rows[i].value, memory_order_relaxed);
		int n = snprintf(buf + used, size - used, "%s %" PRIu64 "\n", rows[i].name, v);

		if (n < 0)
			break;
		used += (size_t)n < size - used ? (size_t)n : size - used - 1;
	}
	if (used < size) {
		uint64_t decoded, ahead;
		int n;

		pyfs_image_decode_counts(fs->image, &decoded, &ahead);
		n = snprintf(buf + used, size - used,
			     "blocks_decoded %" PRIu64 "\nblocks_decoded_ahead %" PRIu64 "\n"
			     "no_open %d\nno_opendir %d\nconn_want 0x%x\nmax_readahead %u\n",
			     decoded, ahead, fs->no_open, fs->no_opendir, fs->conn_want,
			     fs->conn_max_readahead);

		if (n > 0)
			used += (size_t)n < size - used ? (size_t)n : size - used - 1;
	}
	return used;
}

/*
 * Only the stats query, on the root; ENOTTY for the rest (isatty() on every
 * file Python opens lands here: the kernel forwards every ioctl of a FUSE
 * file, whatever the answer, so the reply is the cheapest one). A
 * compressed file's first ioctl first stores its first bytes in the page
 * cache (ops_store_file_start).
 */
static void ops_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		      struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		      size_t in_bufsz, size_t out_bufsz)
{
	struct ops_fs *fs = ops_fs_of(req);
	struct ops_stats_text stats;
	uint32_t index;
	size_t len;

	(void)arg, (void)fi, (void)flags, (void)in_buf, (void)in_bufsz;
	OPS_COUNT(fs, ioctls);
	if (fs->stored && ops_index(fs, ino, &index))
		ops_store_file_start(fs, index, ino);
	if (cmd != OPS_IOC_STATS || ino != FUSE_ROOT_ID || out_bufsz < sizeof(stats)) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	len = ops_format_stats(fs, stats.text, sizeof(stats.text));
	memset(stats.text + len, 0, sizeof(stats.text) - len);
	fuse_reply_ioctl(req, 0, &stats, sizeof(stats));
}

static void ops_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct ops_fs *fs = ops_fs_of(req);
	uint32_t index;

	OPS_COUNT(fs, access);
	if (!ops_index(fs, ino, &index))
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

/* ---- every modifying request: EROFS ---- */

static void ops_refuse(fuse_req_t req)
{
	OPS_COUNT(ops_fs_of(req), refused);
	fuse_reply_err(req, EROFS);
}

static void ops_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	(void)ino, (void)attr, (void)to_set, (void)fi;
	ops_refuse(req);
}

static void ops_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)parent, (void)name, (void)mode, (void)rdev;
	ops_refuse(req);
}

static void ops_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)parent, (void)name, (void)mode;
	ops_refuse(req);
}

static void ops_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent, (void)name;
	ops_refuse(req);
}

static void ops_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link, (void)parent, (void)name;
	ops_refuse(req);
}

static void ops_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		       const char *newname, unsigned int flags)
{
	(void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
	ops_refuse(req);
}

static void ops_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino, (void)newparent, (void)newname;
	ops_refuse(req);
}

static void ops_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	(void)ino, (void)buf, (void)size, (void)off, (void)fi;
	ops_refuse(req);
}

static void ops_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		       struct fuse_file_info *fi)
{
	(void)parent, (void)name, (void)mode, (void)fi;
	ops_refuse(req);
}

static void ops_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			 size_t size, int flags)
{
	(void)ino, (void)name, (void)value, (void)size, (void)flags;
	ops_refuse(req);
}

static void ops_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino, (void)name;
	ops_refuse(req);
}

static void ops_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			  struct fuse_file_info *fi)
{
	(void)ino, (void)mode, (void)offset, (void)length, (void)fi;
	ops_refuse(req);
}

static void ops_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
				struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
				struct fuse_file_info *fi_out, size_t len, int flags)
{
	(void)ino_in, (void)off_in, (void)fi_in, (void)ino_out, (void)off_out, (void)fi_out;
	(void)len, (void)flags;
	ops_refuse(req);
}

/*
 * Not set, on purpose: flush, fsync and fsyncdir, getxattr and listxattr
 * (libfuse answers ENOSYS and the kernel stops sending them: an archive has
 * no extended attributes, and `ls -l` then asks for none), locks (the kernel
 * keeps them locally), lseek (the kernel's generic SEEK_DATA/SEEK_HOLE is
 * right for us).
 */
const struct fuse_lowlevel_ops ops_lowlevel = {
    .init = ops_init,
    .lookup = ops_lookup,
    .forget = ops_forget,
    .forget_multi = ops_forget_multi,
    .getattr = ops_getattr,
    .readlink = ops_readlink,
    .open = ops_open,
    .read = ops_read,
    .release = ops_release,
    .opendir = ops_opendir,
    .readdir = ops_readdir,
    .readdirplus = ops_readdirplus,
    .releasedir = ops_release,
    .statfs = ops_statfs,
    .ioctl = ops_ioctl,
    .access = ops_access,
    .setattr = ops_setattr,
    .mknod = ops_mknod,
    .mkdir = ops_mkdir,
    .unlink = ops_unlink,
    .rmdir = ops_unlink,
    .symlink = ops_symlink,
    .rename = ops_rename,
    .link = ops_link,
    .write = ops_write,
    .create = ops_create,
    .setxattr = ops_setxattr,
    .removexattr = ops_removexattr,
    .fallocate = ops_fallocate,
    .copy_file_range = ops_copy_file_range,
};
