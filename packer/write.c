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
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

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
	uint64_t file_bytes;
	uint64_t copy_files; /* distinct non-empty contents */
	uint64_t files;
	uint64_t dirs;
	uint64_t symlinks;
	uint64_t file_names;
};

/* The copy: an output buffer flushed into the archive file. */
struct copier {
	int fd;
	uint64_t file_offset; /* where payload byte 0 is */
	uint8_t *buf;
	size_t fill;
	uint64_t flushed; /* payload bytes written (or left as holes) */
	XXH3_state_t *payload_state;
	XXH3_state_t *file_state;
	uint8_t *read_buf; /* for the dedup pass */
	struct pack_progress progress;
	uint64_t files_done;
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

/* Payload offsets: distinct contents in index order, duplicates share. */
static void assign_offsets(struct layout *l)
{
	struct pack_inode *inode;
	uint32_t i;

	for (i = 0; i < l->inode_count; i++) {
		inode = l->inodes[i];
		if (!S_ISREG(inode->mode) || inode->same_as || inode->size == 0)
			continue;
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

/* Write the buffer to the archive, leaving all-zero blocks as holes. */
static int flush(struct copier *cp, struct pyfs_err *err)
{
	size_t pos = 0, run, len;
	ssize_t n;

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
				pyfs_err_set(err, "cannot write the archive: %s",
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
	if (inode->size <= COPY_BUFFER) {
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
		ret = copy_file(cp, inode, err);
		if (ret < 0)
			return ret;
		cp->files_done++;
		pack_progress_update(&cp->progress, cp->files_done, cp->flushed + cp->fill);
	}
	ret = flush(cp, err);
	if (ret < 0)
		return ret;
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

int pack_write(struct pack_tree *tree, const char *archive, bool force, bool progress,
	       struct pack_write_stats *stats, struct pyfs_err *err)
{
	struct pack_inode *root = pack_tree_root(tree);
	struct pyfs_writer_shape shape;
	struct pyfs_writer *writer = NULL;
	struct layout l = {0};
	struct copier cp = {.fd = -1};
	struct stat st;
	char *tmp = NULL;
	double t0 = pyfs_now(), t1, t2;
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
	assign_offsets(&l);
	t1 = pyfs_now();
	stats->hash_seconds = t1 - t0;

	/* The archive, at a temporary name until complete. */
	shape.inode_count = l.inode_count;
	shape.dirent_count = l.dirent_count;
	shape.names_size = l.names_size;
	shape.payload_size = l.payload_size;
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
	if (ret < 0)
		goto out_unlink;
	{
		size_t env_count;
		const char *const *env = pack_tree_environment(tree, &env_count);

		ret = pyfs_writer_set_environment(writer, env, env_count, err);
		if (ret < 0)
			goto out_abort;
	}
	cp.file_offset = pyfs_writer_payload_file_offset(writer);
	XXH3_64bits_reset(cp.payload_state);
	pack_progress_start(&cp.progress, progress, l.copy_files, l.payload_size);
	ret = copy_all(&l, &cp, err);
	pack_progress_end(&cp.progress);
	if (ret < 0)
		goto out_abort;
	/* Trailing holes still belong to the payload. */
	if (fstat(cp.fd, &st) == 0 && (uint64_t)st.st_size < cp.file_offset + l.payload_size &&
	    ftruncate(cp.fd, (off_t)(cp.file_offset + l.payload_size)) < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot extend '%s': %s", tmp, strerror(errno));
		goto out_abort;
	}
	stats->copy_seconds = pyfs_now() - t1;
	t1 = pyfs_now();

	ret = pyfs_writer_finish(writer, l.records, l.dirents, l.names,
				 XXH3_64bits_digest(cp.payload_state), err);
	writer = NULL;
	if (ret < 0)
		goto out_unlink;
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
		pyfs_err_set(err, "cannot write '%s': %s", tmp, strerror(errno));
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
	stats->payload_bytes = l.payload_size;
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
	layout_free(&l);
	return ret;
}
