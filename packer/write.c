/*
 * write.c - pass 2 of pyfs-pack: lay the tree out and write the archive.
 *
 * The layout is decided before a byte is copied: inodes are numbered in tree
 * order (a directory's entries get consecutive numbers, then its
 * subdirectories follow, recursively), names are stored once each, and
 * regular files are stored once per distinct content. Duplicates are found by
 * size first; only files sharing a size are read ahead and compared by their
 * XXH3-128 (a collision is not a practical concern at 128 bits). Then the
 * writer creates the archive at a temporary name with the payload dataset
 * allocated, and the contents are copied in payload order through one large
 * buffer straight into the file at pyfs_writer_payload_file_offset(), with
 * each file's XXH3-64 and the whole payload's XXH3-64 computed on the way.
 * A file whose identity, size or times change between pass 1 and the end of
 * its copy is an error. All-zero blocks are left as holes. At the end the
 * writer adds the metadata, which is read back and checked as every reader
 * checks it (an internal error if not), and the file is synced and renamed
 * into place.
 *
 * With compression (-z) the same raw payload is cut into blocks as it is
 * copied: each full buffer's blocks are compressed by one thread per core
 * (each block independently, so the output does not depend on the number of
 * threads), a block that does not shrink is kept raw, and the stored blocks
 * go in order to an unlinked spool file next to the archive. Once the stored
 * size is known the archive is created with a payload of that size, the
 * spool is copied into it, and the block index joins the metadata.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "archive_io.h"
#include "pack.h"
#include "pyfs_format.h"

#define COPY_BUFFER (8u << 20)	/* bytes copied per write */
#define ZERO_BLOCK  (64u << 10) /* granularity of holes */

/* Names stored once: open addressing over (hash, offset, length). */
struct name_slot {
	uint64_t hash;
	uint64_t offset;
	uint32_t length;
	bool used;
};

struct layout {
	struct pack_inode **inodes; /* by index */
	uint32_t inode_count;
	uint32_t inode_cap;
	struct pyfs_inode *records;
	struct pyfs_dirent *dirents;
	uint64_t dirent_count;
	uint8_t *names;
	uint64_t names_size;
	uint64_t names_cap;
	struct name_slot *name_slots;
	size_t name_slot_cap;
	size_t name_slot_count;
	uint64_t payload_size;
	uint64_t pad_bytes; /* zeros before block-aligned files (compressed only) */
	uint64_t file_bytes;
	uint64_t copy_files; /* distinct non-empty contents */
	uint64_t files;
	uint64_t dirs;
	uint64_t symlinks;
	uint64_t file_names;
};

/* Compression state of a -z pack (see the file comment). */
struct compressor {
	int level;
	uint32_t block_size;
	unsigned int threads;
	ZSTD_CCtx **cctx;	   /* one per thread */
	uint8_t *out;		   /* one slot of out_bound bytes per block of a buffer */
	size_t out_bound;	   /* ZSTD_compressBound(block_size) */
	size_t *out_size;	   /* per block of the buffer: compressed size or an error */
	uint8_t *staging;	   /* the stored bytes of one buffer, in order */
	struct pyfs_block *blocks; /* the index, block_count records */
	uint64_t block_count;
	uint64_t next_block; /* first block of the buffer being flushed */
	uint64_t stored;     /* bytes written to the spool */
	int spool_fd;
	/* One flush's batch, shared by its threads. */
	const uint8_t *batch_in;
	size_t batch_fill;
	uint64_t batch_blocks;
	atomic_uint_fast64_t batch_next;
	uint64_t zstd_blocks;
};

/* The copy: an output buffer flushed into the archive file. */
struct copier {
	int fd;
	const char *archive;  /* the name given, for messages */
	uint64_t file_offset; /* where payload byte 0 is */
	uint8_t *buf;
	size_t fill;
	uint64_t flushed; /* payload bytes written (or left as holes) */
	XXH3_state_t *payload_state;
	XXH3_state_t *file_state;
	uint8_t *read_buf; /* for the dedup pass */
	struct pack_progress progress;
	uint64_t files_done;
	struct compressor *z; /* NULL: no compression */
};

static void layout_free(struct layout *l)
{
	free(l->inodes);
	free(l->records);
	free(l->dirents);
	free(l->names);
	free(l->name_slots);
}

static int add_inode(struct layout *l, struct pack_inode *inode)
{
	struct pack_inode **inodes;
	uint32_t cap;

	if (l->inode_count == l->inode_cap) {
		if (l->inode_cap >= PYFS_INODES_MAX / 2)
			return -EOVERFLOW;
		cap = l->inode_cap ? l->inode_cap * 2 : 1024;
		inodes = realloc(l->inodes, (size_t)cap * sizeof(*inodes));
		if (!inodes)
			return -ENOMEM;
		l->inodes = inodes;
		l->inode_cap = cap;
	}
	inode->numbered = true;
	inode->index = l->inode_count;
	inode->nlink = 0;
	inode->same_as = NULL;
	l->inodes[l->inode_count++] = inode;
	return 0;
}

/* Number the entries of dir, then its subdirectories (depth first). */
static int number_dir(struct layout *l, struct pack_inode *dir)
{
	struct pack_inode *child;
	uint32_t i;
	int ret;

	dir->nlink = 2;
	for (i = 0; i < dir->entry_count; i++) {
		child = dir->entries[i].inode;
		if (!child->numbered) {
			ret = add_inode(l, child);
			if (ret < 0)
				return ret;
		}
		child->nlink++;
		if (S_ISDIR(child->mode)) {
			dir->nlink++;
			child->parent = dir;
		}
		l->dirent_count++;
	}
	for (i = 0; i < dir->entry_count; i++) {
		child = dir->entries[i].inode;
		if (S_ISDIR(child->mode)) {
			ret = number_dir(l, child);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

static void clear_numbers(struct pack_inode *dir)
{
	uint32_t i;

	dir->numbered = false;
	for (i = 0; i < dir->entry_count; i++) {
		dir->entries[i].inode->numbered = false;
		if (S_ISDIR(dir->entries[i].inode->mode))
			clear_numbers(dir->entries[i].inode);
	}
}

/* Offset of bytes in the names blob, storing them on first use. */
static int intern_name(struct layout *l, const void *bytes, uint32_t len, uint64_t *offset)
{
	uint64_t hash = XXH3_64bits(bytes, len);
	struct name_slot *slots, *slot;
	uint64_t cap;
	size_t i, j, scap;
	uint8_t *names;

	if (2 * (l->name_slot_count + 1) > l->name_slot_cap) {
		scap = l->name_slot_cap ? l->name_slot_cap * 2 : 4096;
		slots = calloc(scap, sizeof(*slots));
		if (!slots)
			return -ENOMEM;
		for (i = 0; i < l->name_slot_cap; i++) {
			if (!l->name_slots[i].used)
				continue;
			for (j = l->name_slots[i].hash & (scap - 1); slots[j].used;
			     j = (j + 1) & (scap - 1))
				;
			slots[j] = l->name_slots[i];
		}
		free(l->name_slots);
		l->name_slots = slots;
		l->name_slot_cap = scap;
	}
	for (i = hash & (l->name_slot_cap - 1); l->name_slots[i].used;
	     i = (i + 1) & (l->name_slot_cap - 1)) {
		slot = &l->name_slots[i];
		if (slot->hash == hash && slot->length == len &&
		    memcmp(l->names + slot->offset, bytes, len) == 0) {
			*offset = slot->offset;
			return 0;
		}
	}
	if (l->names_size + len > l->names_cap) {
		cap = l->names_cap ? l->names_cap * 2 : 65536;
		while (cap < l->names_size + len)
			cap *= 2;
		names = realloc(l->names, cap);
		if (!names)
			return -ENOMEM;
		l->names = names;
		l->names_cap = cap;
	}
	memcpy(l->names + l->names_size, bytes, len);
	slot = &l->name_slots[i];
	slot->used = true;
	slot->hash = hash;
	slot->offset = l->names_size;
	slot->length = len;
	l->name_slot_count++;
	*offset = l->names_size;
	l->names_size += len;
	return 0;
}

/* Fill records, dirents and names from the numbered inodes. */
static int build_metadata(struct layout *l)
{
	struct pyfs_inode *r;
	struct pack_inode *inode;
	uint64_t next_dirent = 0;
	uint32_t i, j;
	int ret;

	l->records = calloc(l->inode_count, sizeof(*l->records));
	l->dirents = calloc(l->dirent_count ? l->dirent_count : 1, sizeof(*l->dirents));
	if (!l->records || !l->dirents)
		return -ENOMEM;
	for (i = 0; i < l->inode_count; i++) {
		inode = l->inodes[i];
		r = &l->records[i];
		r->mode = inode->mode;
		r->mtime_sec = inode->mtime_sec;
		r->mtime_nsec = inode->mtime_nsec;
		r->nlink = inode->nlink;
		if (S_ISDIR(inode->mode)) {
			l->dirs++;
			r->parent = inode->parent->index;
			r->first_entry = (uint32_t)next_dirent;
			r->entry_count = inode->entry_count;
			for (j = 0; j < inode->entry_count; j++) {
				struct pyfs_dirent *d = &l->dirents[next_dirent++];

				d->name_length = inode->entries[j].name_len;
				if (S_ISREG(inode->entries[j].inode->mode))
					l->file_names++;
				d->inode = inode->entries[j].inode->index;
				ret = intern_name(l, inode->entries[j].name, d->name_length,
						  &d->name_offset);
				if (ret < 0)
					return ret;
			}
		} else if (S_ISLNK(inode->mode)) {
			l->symlinks++;
			r->data_size = inode->size;
			r->checksum = XXH3_64bits(inode->target, inode->size);
			ret = intern_name(l, inode->target, (uint32_t)inode->size, &r->data_offset);
			if (ret < 0)
				return ret;
		} else {
			l->files++;
			r->data_size = inode->size;
			l->file_bytes += inode->size;
		}
	}
	return 0;
}

/* Progress and summaries count a file once its copy (or its dedup) is done. */
static int compare_by_size(const void *a, const void *b)
{
	const struct pack_inode *x = *(struct pack_inode *const *)a;
	const struct pack_inode *y = *(struct pack_inode *const *)b;

	if (x->size != y->size)
		return x->size < y->size ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/*
 * Open inode's file and check it is still what pass 1 saw: identity, size,
 * mtime and ctime (so a chmod since counts too). Generated files (byte-code)
 * are only checked for size.
 */
static int open_checked(const struct pack_inode *inode, int *fd_out, struct stat *st,
			struct pyfs_err *err)
{
	int fd, ret;

	*fd_out = -1;
	fd = pack_open_path(inode->path, O_RDONLY | O_NOFOLLOW);
	if (fd < 0) {
		pyfs_err_set(err, "cannot read '%s': %s", inode->path, strerror(-fd));
		return fd;
	}
	if (fstat(fd, st) < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot stat '%s': %s", inode->path, strerror(errno));
		close(fd);
		return ret;
	}
	if (!S_ISREG(st->st_mode) || (uint64_t)st->st_size != inode->size ||
	    (inode->source >= 0 && (st->st_dev != inode->dev || st->st_ino != inode->ino ||
				    st->st_mtim.tv_sec != inode->mtime_sec ||
				    (uint32_t)st->st_mtim.tv_nsec != inode->mtime_nsec ||
				    st->st_ctim.tv_sec != inode->ctime_sec ||
				    (uint32_t)st->st_ctim.tv_nsec != inode->ctime_nsec))) {
		pyfs_err_set(err, "'%s' changed while being packed", inode->path);
		close(fd);
		return -ESTALE;
	}
	*fd_out = fd;
	return 0;
}

/* Close fd, checking that the file did not change since open_checked(). */
static int close_checked(const struct pack_inode *inode, int fd, const struct stat *before,
			 struct pyfs_err *err)
{
	struct stat after;
	int ret = 0;

	if (fstat(fd, &after) < 0 || after.st_size != before->st_size ||
	    after.st_mtim.tv_sec != before->st_mtim.tv_sec ||
	    after.st_mtim.tv_nsec != before->st_mtim.tv_nsec ||
	    after.st_ctim.tv_sec != before->st_ctim.tv_sec ||
	    after.st_ctim.tv_nsec != before->st_ctim.tv_nsec) {
		pyfs_err_set(err, "'%s' changed while being packed", inode->path);
		ret = -ESTALE;
	}
	close(fd);
	return ret;
}

/* Read exactly len bytes (the file is len bytes long unless it changed). */
static int read_exact(const struct pack_inode *inode, int fd, uint8_t *dst, size_t len,
		      struct pyfs_err *err)
{
	ssize_t n;

	while (len > 0) {
		if (pack_interrupted) {
			pyfs_err_set(err, "interrupted");
			return -EINTR;
		}
		n = read(fd, dst, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			n = -errno;
			pyfs_err_set(err, "cannot read '%s': %s", inode->path, strerror(errno));
			return (int)n;
		}
		if (n == 0) {
			pyfs_err_set(
			    err, "'%s' changed while being packed (shorter than %" PRIu64 " bytes)",
			    inode->path, inode->size);
			return -ESTALE;
		}
		dst += n;
		len -= (size_t)n;
	}
	return 0;
}

/* XXH3-128 of a file's contents, for finding duplicates. */
static int hash128_file(struct copier *cp, const struct pack_inode *inode, XXH128_hash_t *out,
			struct pyfs_err *err)
{
	XXH3_state_t *state = cp->file_state;
	uint64_t left = inode->size;
	struct stat st;
	size_t chunk;
	int fd, ret;

	ret = open_checked(inode, &fd, &st, err);
	if (ret < 0)
		return ret;
	XXH3_128bits_reset(state);
	while (left > 0) {
		chunk = left < COPY_BUFFER ? (size_t)left : COPY_BUFFER;
		ret = read_exact(inode, fd, cp->read_buf, chunk, err);
		if (ret < 0) {
			close(fd);
			return ret;
		}
		XXH3_128bits_update(state, cp->read_buf, chunk);
		left -= chunk;
	}
	*out = XXH3_128bits_digest(state);
	return close_checked(inode, fd, &st, err);
}

struct hashed {
	struct pack_inode *inode;
	XXH128_hash_t hash;
};

static int compare_hashed(const void *a, const void *b)
{
	const struct hashed *x = a, *y = b;
	int c = XXH128_cmp(&x->hash, &y->hash);

	if (c)
		return c;
	return x->inode->index < y->inode->index ? -1 : x->inode->index > y->inode->index;
}

/* Mark files whose contents an earlier file already stores (same_as). */
static int find_duplicates(struct layout *l, struct copier *cp, struct pyfs_err *err)
{
	struct pack_inode **files;
	struct hashed *group = NULL;
	size_t count = 0, i, j, k, n, cap = 0;
	int ret = 0;

	files = malloc((l->inode_count ? l->inode_count : 1) * sizeof(*files));
	if (!files)
		return -ENOMEM;
	for (i = 0; i < l->inode_count; i++) {
		if (S_ISREG(l->inodes[i]->mode) && l->inodes[i]->size > 0)
			files[count++] = l->inodes[i];
	}
	qsort(files, count, sizeof(*files), compare_by_size);
	for (i = 0; i < count && ret == 0; i = j) {
		for (j = i + 1; j < count && files[j]->size == files[i]->size; j++)
			;
		n = j - i;
		if (n < 2)
			continue;
		if (n > cap) {
			free(group);
			cap = n * 2;
			group = malloc(cap * sizeof(*group));
			if (!group) {
				ret = -ENOMEM;
				break;
			}
		}
		for (k = 0; k < n && ret == 0; k++) {
			group[k].inode = files[i + k];
			ret = hash128_file(cp, files[i + k], &group[k].hash, err);
		}
		if (ret < 0)
			break;
		qsort(group, n, sizeof(*group), compare_hashed);
		for (k = 1; k < n; k++) {
			if (XXH128_isEqual(group[k].hash, group[k - 1].hash))
				group[k].inode->same_as = group[k - 1].inode->same_as
							      ? group[k - 1].inode->same_as
							      : group[k - 1].inode;
		}
	}
	free(group);
	free(files);
	return ret;
}

/*
 * Payload offsets: distinct contents in index order, duplicates share. With
 * block_size (compressed), a file of at least a block starts on a block
 * boundary (the zeros before it compress to almost nothing), so the kernel's
 * aligned reads of it decompress one block each instead of two half ones;
 * smaller files pack together.
 */
static void assign_offsets(struct layout *l, uint32_t block_size)
{
	struct pack_inode *inode;
	uint32_t i;

	for (i = 0; i < l->inode_count; i++) {
		inode = l->inodes[i];
		if (!S_ISREG(inode->mode) || inode->same_as || inode->size == 0)
			continue;
		if (block_size && inode->size >= block_size && l->payload_size % block_size) {
			l->pad_bytes += block_size - l->payload_size % block_size;
			l->payload_size += block_size - l->payload_size % block_size;
		}
		inode->data_offset = l->payload_size;
		l->payload_size += inode->size;
		l->copy_files++;
	}
	for (i = 0; i < l->inode_count; i++) {
		inode = l->inodes[i];
		if (S_ISREG(inode->mode) && inode->same_as)
			inode->data_offset = inode->same_as->data_offset;
	}
}

static bool is_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Write len bytes at offset of fd, whatever the short writes. */
static int write_all(int fd, const uint8_t *buf, size_t len, uint64_t offset, struct pyfs_err *err)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, (off_t)offset);

		if (n < 0 && errno == EINTR && !pack_interrupted)
			continue;
		if (n <= 0) {
			pyfs_err_set(err, "cannot write the archive: %s",
				     n < 0 ? strerror(errno) : "short write");
			return n < 0 ? -errno : -EIO;
		}
		buf += n;
		len -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

/* A thread of a flush: compress blocks of the batch until none is left. */
static void *compress_worker(void *arg)
{
	struct compressor *z = ((void **)arg)[0];
	ZSTD_CCtx *cctx = ((void **)arg)[1];

	for (;;) {
		uint64_t b = atomic_fetch_add(&z->batch_next, 1);
		size_t from, len;

		if (b >= z->batch_blocks)
			break;
		from = (size_t)b * z->block_size;
		len = z->batch_fill - from < z->block_size ? z->batch_fill - from : z->block_size;
		z->out_size[b] = ZSTD_compress2(cctx, z->out + (size_t)b * z->out_bound,
						z->out_bound, z->batch_in + from, len);
	}
	return NULL;
}

/*
 * Compress the whole blocks of the buffer (all of it when final) on every
 * core, append them to the spool in order and index them; what follows the
 * last whole block moves to the front of the buffer.
 */
static int flush_compressed(struct copier *cp, bool final, struct pyfs_err *err)
{
	struct compressor *z = cp->z;
	size_t whole = cp->fill / z->block_size * z->block_size;
	size_t take = final ? cp->fill : whole, staged = 0;
	pthread_t tids[64];
	void *args[64][2];
	unsigned int started = 0;
	int ret;

	if (take == 0)
		return 0;
	z->batch_in = cp->buf;
	z->batch_fill = take;
	z->batch_blocks = (take + z->block_size - 1) / z->block_size;
	atomic_store(&z->batch_next, 0);
	for (unsigned int t = 1; t < z->threads && t < 64; t++) {
		args[started][0] = z;
		args[started][1] = z->cctx[t];
		if (pthread_create(&tids[started], NULL, compress_worker, args[started]) == 0)
			started++;
	}
	args[63][0] = z;
	args[63][1] = z->cctx[0];
	compress_worker(args[63]);
	for (unsigned int t = 0; t < started; t++)
		pthread_join(tids[t], NULL);

	for (uint64_t b = 0; b < z->batch_blocks; b++) {
		struct pyfs_block *blk = &z->blocks[z->next_block + b];
		size_t from = (size_t)b * z->block_size;
		size_t len = take - from < z->block_size ? take - from : z->block_size;
		const uint8_t *bytes = cp->buf + from;
		size_t stored = len;

		if (z->next_block + b >= z->block_count) {
			pyfs_err_set(err, "internal error: more blocks than the payload holds");
			return -EIO;
		}
		if (ZSTD_isError(z->out_size[b])) {
			pyfs_err_set(err, "cannot compress block %" PRIu64 ": %s",
				     z->next_block + b, ZSTD_getErrorName(z->out_size[b]));
			return -EIO;
		}
		blk->codec = PYFS_CODEC_RAW;
		if (z->out_size[b] < len) {
			bytes = z->out + (size_t)b * z->out_bound;
			stored = z->out_size[b];
			blk->codec = PYFS_CODEC_ZSTD;
			z->zstd_blocks++;
		}
		blk->offset = z->stored + staged;
		blk->stored_size = (uint32_t)stored;
		blk->checksum = XXH3_64bits(bytes, stored);
		memcpy(z->staging + staged, bytes, stored);
		staged += stored;
	}
	XXH3_64bits_update(cp->payload_state, z->staging, staged);
	ret = write_all(z->spool_fd, z->staging, staged, z->stored, err);
	if (ret < 0)
		return ret;
	z->stored += staged;
	z->next_block += z->batch_blocks;
	memmove(cp->buf, cp->buf + take, cp->fill - take);
	cp->flushed += take;
	cp->fill -= take;
	return 0;
}

/* Write the buffer to the archive, leaving all-zero blocks as holes. */
static int flush(struct copier *cp, struct pyfs_err *err)
{
	size_t pos = 0, run, len;
	ssize_t n;

	if (cp->z)
		return flush_compressed(cp, false, err);
	XXH3_64bits_update(cp->payload_state, cp->buf, cp->fill);
	while (pos < cp->fill) {
		len = cp->fill - pos < ZERO_BLOCK ? cp->fill - pos : ZERO_BLOCK;
		if (is_zero(cp->buf + pos, len)) {
			pos += len;
			continue;
		}
		/* A run of blocks up to the next all-zero one. */
		for (run = len; pos + run < cp->fill; run += len) {
			len = cp->fill - pos - run < ZERO_BLOCK ? cp->fill - pos - run : ZERO_BLOCK;
			if (is_zero(cp->buf + pos + run, len))
				break;
		}
		while (run > 0) {
			n = pwrite(cp->fd, cp->buf + pos, run,
				   (off_t)(cp->file_offset + cp->flushed + pos));
			if (n < 0 && errno == EINTR && !pack_interrupted)
				continue;
			if (n <= 0) {
				pyfs_err_set(err, "cannot write archive '%s': %s", cp->archive,
					     n < 0 ? strerror(errno) : "short write");
				return n < 0 ? -errno : -EIO;
			}
			pos += (size_t)n;
			run -= (size_t)n;
		}
	}
	/* Start writeback now so the final fsync has little left to do. */
	if (cp->fill)
		sync_file_range(cp->fd, (off_t)(cp->file_offset + cp->flushed), (off_t)cp->fill,
				SYNC_FILE_RANGE_WRITE);
	cp->flushed += cp->fill;
	cp->fill = 0;
	return 0;
}

/* Copy one distinct file into the payload and set its checksum. */
static int copy_file(struct copier *cp, struct pack_inode *inode, struct pyfs_err *err)
{
	uint64_t left = inode->size;
	struct stat st;
	size_t chunk;
	int fd, ret;

	ret = open_checked(inode, &fd, &st, err);
	if (ret < 0)
		return ret;
	/* Compressed, a flush keeps up to a block: whole files only up to half the buffer. */
	if (inode->size <= (cp->z ? COPY_BUFFER / 2 : COPY_BUFFER)) {
		/* Whole file into the buffer: one read, one one-shot hash. */
		if (COPY_BUFFER - cp->fill < inode->size) {
			ret = flush(cp, err);
			if (ret < 0)
				goto out_close;
		}
		ret = read_exact(inode, fd, cp->buf + cp->fill, (size_t)inode->size, err);
		if (ret < 0)
			goto out_close;
		inode->checksum = XXH3_64bits(cp->buf + cp->fill, (size_t)inode->size);
		cp->fill += (size_t)inode->size;
	} else {
		XXH3_64bits_reset(cp->file_state);
		while (left > 0) {
			if (cp->fill == COPY_BUFFER) {
				ret = flush(cp, err);
				if (ret < 0)
					goto out_close;
			}
			chunk = COPY_BUFFER - cp->fill;
			if (chunk > left)
				chunk = (size_t)left;
			ret = read_exact(inode, fd, cp->buf + cp->fill, chunk, err);
			if (ret < 0)
				goto out_close;
			XXH3_64bits_update(cp->file_state, cp->buf + cp->fill, chunk);
			cp->fill += chunk;
			left -= chunk;
			pack_progress_update(&cp->progress, cp->files_done, cp->flushed + cp->fill);
		}
		inode->checksum = XXH3_64bits_digest(cp->file_state);
	}
	ret = close_checked(inode, fd, &st, err);
	fd = -1;
out_close:
	if (fd >= 0)
		close(fd);
	return ret;
}

/* Zeros up to payload offset (the block alignment of assign_offsets). */
static int pad_to(struct copier *cp, uint64_t offset, struct pyfs_err *err)
{
	while (cp->flushed + cp->fill < offset) {
		uint64_t gap = offset - cp->flushed - cp->fill;
		size_t room = COPY_BUFFER - cp->fill;
		size_t n = gap < room ? (size_t)gap : room;
		int ret;

		memset(cp->buf + cp->fill, 0, n);
		cp->fill += n;
		if (cp->fill == COPY_BUFFER) {
			ret = flush(cp, err);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

static int copy_all(struct layout *l, struct copier *cp, struct pyfs_err *err)
{
	struct pack_inode *inode;
	uint64_t empty = XXH3_64bits("", 0);
	uint32_t i;
	int ret;

	for (i = 0; i < l->inode_count; i++) {
		inode = l->inodes[i];
		if (!S_ISREG(inode->mode) || inode->same_as)
			continue;
		if (inode->size == 0) {
			inode->checksum = empty;
			continue;
		}
		ret = pad_to(cp, inode->data_offset, err);
		if (ret < 0)
			return ret;
		ret = copy_file(cp, inode, err);
		if (ret < 0)
			return ret;
		cp->files_done++;
		pack_progress_update(&cp->progress, cp->files_done, cp->flushed + cp->fill);
	}
	ret = pad_to(cp, l->payload_size, err);
	if (ret == 0)
		ret = cp->z ? flush_compressed(cp, true, err) : flush(cp, err);
	if (ret < 0)
		return ret;
	if (cp->z && cp->z->next_block != cp->z->block_count) {
		pyfs_err_set(err, "internal error: %" PRIu64 " blocks written of %" PRIu64,
			     cp->z->next_block, cp->z->block_count);
		return -EIO;
	}
	for (i = 0; i < l->inode_count; i++) {
		inode = l->inodes[i];
		if (S_ISREG(inode->mode) && inode->same_as)
			inode->checksum = inode->same_as->checksum;
		if (S_ISREG(inode->mode)) {
			l->records[i].data_offset = inode->data_offset;
			l->records[i].checksum = inode->checksum;
		}
	}
	return 0;
}

/* "DIR/.NAME.tmp.PID" next to archive. */
static char *temp_name(const char *archive)
{
	const char *slash = strrchr(archive, '/');
	size_t dir_len = slash ? (size_t)(slash - archive + 1) : 0;
	const char *base = archive + dir_len;
	size_t size = strlen(archive) + 48;
	char *tmp = malloc(size);

	if (tmp)
		snprintf(tmp, size, "%.*s.%s.tmp.%ld", (int)dir_len, archive, base, (long)getpid());
	return tmp;
}

/* Open the directory holding archive (for fsync after the rename). */
static int open_parent(const char *archive)
{
	char *copy = strdup(archive);
	int fd;

	if (!copy)
		return -1;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	return fd;
}

static int rename_into_place(const char *tmp, const char *archive, bool force, struct pyfs_err *err)
{
	int ret;

	if (force) {
		ret = rename(tmp, archive);
	} else {
		ret = renameat2(AT_FDCWD, tmp, AT_FDCWD, archive, RENAME_NOREPLACE);
		if (ret < 0 && errno == EINVAL) {
			/* No RENAME_NOREPLACE on this file system: check, then rename. */
			ret = access(archive, F_OK) == 0 ? (errno = EEXIST, -1)
							 : rename(tmp, archive);
		}
	}
	if (ret < 0) {
		ret = -errno;
		if (ret == -EEXIST)
			pyfs_err_set(err, "archive '%s' exists; pass --force to overwrite it",
				     archive);
		else
			pyfs_err_set(err, "cannot rename '%s' to '%s': %s", tmp, archive,
				     strerror(errno));
	}
	return ret;
}

/*
 * Read the metadata of the archive just written at tmp back through the
 * library and run every reader's checks on it (format attributes, dataset
 * shapes, structure, metadata checksum), the payload left unread. Failing
 * them is a bug of pyfs-pack, reported as an internal error.
 */
static int check_written(const char *tmp, struct pyfs_err *err)
{
	struct pyfs_image_parts parts = {0};
	struct pyfs_archive *written = NULL;
	struct pyfs_err why = {""};
	int ret;

	ret = pyfs_archive_open(tmp, &written, &why);
	if (ret == 0)
		ret = pyfs_archive_read_metadata(written, &parts, &why);
	if (ret == 0)
		ret = pyfs_image_check_metadata(&parts, &why);
	pyfs_image_parts_free(&parts);
	pyfs_archive_close(written);
	if (ret == -ENOMEM)
		pyfs_err_set(err, "%s", why.msg);
	else if (ret < 0)
		pyfs_err_set(err, "internal error: the archive written fails validation: %s",
			     why.msg);
	return ret;
}

/*
 * The writer names the file it writes, the temporary one: in err, say the
 * archive instead (the temporary file is removed, it means nothing to users).
 */
static void name_archive(struct pyfs_err *err, const char *tmp, const char *archive)
{
	char msg[sizeof(err->msg)];
	const char *at = strstr(err->msg, tmp);
	size_t len = strlen(tmp);

	if (!at)
		return;
	snprintf(msg, sizeof(msg), "%.*s%s%s", (int)(at - err->msg), err->msg, archive, at + len);
	memcpy(err->msg, msg, sizeof(msg));
}

static void compressor_free(struct compressor *z)
{
	if (!z)
		return;
	for (unsigned int t = 0; z->cctx && t < z->threads; t++)
		ZSTD_freeCCtx(z->cctx[t]);
	free(z->cctx);
	free(z->out);
	free(z->out_size);
	free(z->staging);
	free(z->blocks);
	if (z->spool_fd >= 0)
		close(z->spool_fd);
	free(z);
}

/*
 * Compression of raw_size payload bytes at level in blocks of block_size,
 * spooled to an unlinked file next to tmp. 0, -ENOMEM or an open error.
 */
static int compressor_create(const char *tmp, uint64_t raw_size, int level, uint32_t block_size,
			     struct compressor **out, struct pyfs_err *err)
{
	size_t per_buffer = COPY_BUFFER / block_size;
	struct compressor *z = calloc(1, sizeof(*z));
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	char *spool = NULL;
	int ret = -ENOMEM;

	if (!z)
		goto out_nomem;
	z->spool_fd = -1;
	z->level = level;
	z->block_size = block_size;
	z->threads = cpus > 0 ? (unsigned int)(cpus < 64 ? cpus : 64) : 1;
	z->block_count = raw_size / block_size + (raw_size % block_size != 0);
	z->out_bound = ZSTD_compressBound(block_size);
	z->cctx = calloc(z->threads, sizeof(*z->cctx));
	z->out = malloc(per_buffer * z->out_bound);
	z->out_size = calloc(per_buffer, sizeof(*z->out_size));
	z->staging = malloc(COPY_BUFFER);
	z->blocks = calloc(z->block_count ? z->block_count : 1, sizeof(*z->blocks));
	if (!z->cctx || !z->out || !z->out_size || !z->staging || !z->blocks)
		goto out_nomem;
	for (unsigned int t = 0; t < z->threads; t++) {
		z->cctx[t] = ZSTD_createCCtx();
		if (!z->cctx[t] ||
		    ZSTD_isError(
			ZSTD_CCtx_setParameter(z->cctx[t], ZSTD_c_compressionLevel, level)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx[t], ZSTD_c_checksumFlag, 0)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx[t], ZSTD_c_contentSizeFlag, 1)))
			goto out_nomem;
	}
	spool = malloc(strlen(tmp) + 8);
	if (!spool)
		goto out_nomem;
	sprintf(spool, "%s.blocks", tmp);
	z->spool_fd = open(spool, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (z->spool_fd < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot create '%s': %s", spool, strerror(errno));
		goto out_free;
	}
	unlink(spool);
	free(spool);
	*out = z;
	return 0;

out_nomem:
	pyfs_err_set(err, "out of memory");
out_free:
	free(spool);
	compressor_free(z);
	return ret;
}

/* Copy the spool into the archive at offset: in the kernel, or through buf (COPY_BUFFER). */
static int copy_spool(struct compressor *z, int fd, uint64_t offset, uint8_t *buf,
		      struct pyfs_err *err)
{
	loff_t in = 0, at = (loff_t)offset;
	bool kernel = true;

	while ((uint64_t)in < z->stored) {
		size_t want = z->stored - (uint64_t)in < COPY_BUFFER
				  ? (size_t)(z->stored - (uint64_t)in)
				  : COPY_BUFFER;
		ssize_t n = -1;

		if (kernel) {
			n = copy_file_range(z->spool_fd, &in, fd, &at, want, 0);
			if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
				      errno == EOPNOTSUPP)) {
				kernel = false; /* not between these files: copy through buf */
				continue;
			}
		} else {
			n = pread(z->spool_fd, buf, want, in);
			if (n > 0) {
				int ret = write_all(fd, buf, (size_t)n, (uint64_t)at, err);

				if (ret < 0)
					return ret;
				in += n;
				at += n;
			}
		}
		if (n < 0 && errno == EINTR && !pack_interrupted)
			continue;
		if (n <= 0) {
			pyfs_err_set(err, "cannot write the archive: %s",
				     n < 0 ? strerror(errno) : "short copy");
			return n < 0 ? -errno : -EIO;
		}
	}
	return 0;
}

int pack_write(struct pack_tree *tree, const char *archive, const struct pack_write_options *opts,
	       struct pack_write_stats *stats, struct pyfs_err *err)
{
	struct pack_inode *root = pack_tree_root(tree);
	struct pyfs_writer_shape shape;
	struct pyfs_writer *writer = NULL;
	struct layout l = {0};
	struct copier cp = {.fd = -1, .archive = archive};
	struct stat st;
	char *tmp = NULL;
	double t0 = pyfs_now(), t1, t2;
	bool force = opts->force;
	int ret, dir_fd;

	memset(stats, 0, sizeof(*stats));
	cp.buf = malloc(COPY_BUFFER);
	cp.read_buf = malloc(COPY_BUFFER);
	cp.payload_state = XXH3_createState();
	cp.file_state = XXH3_createState();
	tmp = temp_name(archive);
	if (!cp.buf || !cp.read_buf || !cp.payload_state || !cp.file_state || !tmp) {
		ret = -ENOMEM;
		goto out_nomem;
	}

	/* Layout. */
	pack_tree_sort(tree);
	clear_numbers(root);
	ret = add_inode(&l, root);
	if (ret == 0)
		ret = number_dir(&l, root);
	root->parent = root;
	if (ret == 0)
		ret = build_metadata(&l);
	if (ret == -EOVERFLOW) {
		pyfs_err_set(err, "too many files for one archive");
		goto out_free;
	}
	if (ret < 0)
		goto out_nomem;
	ret = find_duplicates(&l, &cp, err);
	if (ret == -ENOMEM)
		goto out_nomem;
	if (ret < 0)
		goto out_free;
	assign_offsets(&l, opts->level ? opts->block_size : 0);
	t1 = pyfs_now();
	stats->hash_seconds = t1 - t0;

	/* The archive, at a temporary name until complete. */
	memset(&shape, 0, sizeof(shape));
	shape.inode_count = l.inode_count;
	shape.dirent_count = l.dirent_count;
	shape.names_size = l.names_size;
	shape.payload_size = l.payload_size;
	XXH3_64bits_reset(cp.payload_state);
	if (opts->level) {
		/* Compressed: the stored size is known once every block is. */
		ret = compressor_create(tmp, l.payload_size, opts->level, opts->block_size, &cp.z,
					err);
		if (ret < 0)
			goto out_free;
		pack_progress_start(&cp.progress, opts->progress, l.copy_files, l.payload_size);
		ret = copy_all(&l, &cp, err);
		pack_progress_end(&cp.progress);
		if (ret < 0)
			goto out_free;
		shape.payload_size = cp.z->stored;
		shape.block_size = opts->block_size;
		shape.block_count = cp.z->block_count;
		shape.raw_size = l.payload_size;
		stats->copy_seconds = pyfs_now() - t1;
	}
	/*
	 * Created here, exclusively and not through a symlink, so that the writer
	 * and the copy below use a file that is ours even in a shared directory.
	 */
	cp.fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (cp.fd < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot create archive '%s' (as '%s'): %s", archive, tmp,
			     strerror(-ret));
		goto out_free;
	}
	pack_signals_guard_file(tmp);
	ret = pyfs_writer_create(tmp, &shape, &writer, err);
	if (ret < 0) {
		name_archive(err, tmp, archive);
		goto out_unlink;
	}
	{
		size_t env_count;
		const char *const *env = pack_tree_environment(tree, &env_count);

		ret = pyfs_writer_set_environment(writer, env, env_count, err);
		if (ret < 0)
			goto out_abort;
	}
	cp.file_offset = pyfs_writer_payload_file_offset(writer);
	if (cp.z) {
		ret = copy_spool(cp.z, cp.fd, cp.file_offset, cp.buf, err);
		if (ret < 0)
			goto out_abort;
		pyfs_writer_set_blocks(writer, cp.z->blocks);
	} else {
		pack_progress_start(&cp.progress, opts->progress, l.copy_files, l.payload_size);
		ret = copy_all(&l, &cp, err);
		pack_progress_end(&cp.progress);
		if (ret < 0)
			goto out_abort;
		stats->copy_seconds = pyfs_now() - t1;
	}
	/* Trailing holes still belong to the payload. */
	if (fstat(cp.fd, &st) == 0 && (uint64_t)st.st_size < cp.file_offset + shape.payload_size &&
	    ftruncate(cp.fd, (off_t)(cp.file_offset + shape.payload_size)) < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot write archive '%s': %s", archive, strerror(errno));
		goto out_abort;
	}
	t1 = pyfs_now();

	ret = pyfs_writer_finish(writer, l.records, l.dirents, l.names,
				 XXH3_64bits_digest(cp.payload_state), err);
	writer = NULL;
	if (ret < 0) {
		name_archive(err, tmp, archive);
		goto out_unlink;
	}
	if (pack_interrupted) {
		pyfs_err_set(err, "interrupted");
		ret = -EINTR;
		goto out_unlink;
	}
	t2 = pyfs_now();
	ret = check_written(tmp, err);
	if (ret < 0)
		goto out_unlink;
	pyfs_debug("archive written passes validation (checked in %.3f s)", pyfs_now() - t2);
	if (fsync(cp.fd) < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot write archive '%s': %s", archive, strerror(errno));
		goto out_unlink;
	}
	ret = rename_into_place(tmp, archive, force, err);
	if (ret < 0)
		goto out_unlink;
	pack_signals_guard_file(NULL);
	dir_fd = open_parent(archive);
	if (dir_fd >= 0) {
		fsync(dir_fd);
		close(dir_fd);
	}
	stats->finish_seconds = pyfs_now() - t1;
	stats->files = l.files;
	stats->dirs = l.dirs;
	stats->symlinks = l.symlinks;
	stats->hard_links = l.file_names - l.files;
	stats->inodes = l.inode_count;
	stats->dirents = l.dirent_count;
	stats->names_size = l.names_size;
	stats->file_bytes = l.file_bytes;
	stats->payload_bytes = l.payload_size - l.pad_bytes;
	stats->stored_bytes = shape.payload_size;
	stats->blocks = shape.block_count;
	stats->zstd_blocks = cp.z ? cp.z->zstd_blocks : 0;
	stats->archive_bytes = stat(archive, &st) == 0 ? (uint64_t)st.st_size : 0;
	goto out_free;

out_abort:
	pyfs_writer_abort(writer);
out_unlink:
	pack_signals_guard_file(NULL);
	unlink(tmp);
	goto out_free;
out_nomem:
	pyfs_err_set(err, "out of memory");
out_free:
	if (cp.fd >= 0)
		close(cp.fd);
	XXH3_freeState(cp.payload_state);
	XXH3_freeState(cp.file_state);
	free(cp.buf);
	free(cp.read_buf);
	free(tmp);
	compressor_free(cp.z);
	layout_free(&l);
	return ret;
}
