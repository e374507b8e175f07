/*
 * image.c - the in-RAM image of an archive: one validation pass over the
 * untrusted parts (O(inodes + dirents) plus the name comparisons), then
 * bounds-checked accessors that serve the packer's tools and the daemon.
 * Messages about names escape control bytes so every error stays one line.
 */
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include "image.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

/* st_size and st_blksize reported for directories and every inode. */
#define IMAGE_DIR_SIZE 4096
#define IMAGE_BLKSIZE  4096

/* Room for one quoted name (every byte may become \xNN) or a path in messages. */
#define IMAGE_QUOTE_MAX (4 * PYFS_NAME_MAX + 1)
#define IMAGE_PATH_MAX	400 /* leaves room for the rest of a 512-byte message */

#define INVALID "invalid archive: "

struct pyfs_image {
	struct pyfs_image_parts parts;
	/* The directory holding each inode (one of them for a file with several names). */
	uint32_t *parent;
	struct pyfs_image_totals totals;
	atomic_bool decode_failure_logged;	   /* a block failed to decompress at read time */
	atomic_uint_fast64_t blocks_decoded;	   /* on demand, by reads */
	atomic_uint_fast64_t blocks_decoded_ahead; /* by pyfs_image_decode_ahead() */
	/* Compressed: recent blocks shared by the reader threads (pyfs_image_share_blocks). */
	struct image_shared_block *shared;
	unsigned int shared_count;
	uint8_t *shared_data; /* shared_count blocks of block_size bytes */
};

/* One slot of the shared cache: block number + 1 (0: empty), guarded by lock. */
struct image_shared_block {
	pthread_mutex_t lock;
	uint64_t tag;
};

/* What a reader thread keeps of a compressed image (see image.h). */
struct pyfs_block_cache {
	ZSTD_DCtx *dctx;
	uint8_t *slots;			  /* PYFS_CACHE_BLOCKS blocks of block_size bytes */
	uint64_t tag[PYFS_CACHE_BLOCKS];  /* block index + 1; 0: empty */
	uint64_t used[PYFS_CACHE_BLOCKS]; /* clock of the last use, for LRU */
	uint64_t clock;
	uint8_t *reply; /* PYFS_CACHE_REPLY_MAX bytes */
	uint32_t block_size;
	bool decoded;	      /* the current read decoded a block */
	uint64_t ahead_next;  /* what the last read suggests decoding ahead: */
	unsigned int ahead_n; /* blocks ahead_next.. (0: nothing) */
};

/* Let a child inherit buffer (advisory: MPI libraries mark pages they register DONTFORK). */
static void image_buffer_dofork(void *buffer, uint64_t size)
{
	if (buffer)
		(void)madvise(buffer, size ? (size_t)size : 1, MADV_DOFORK);
}

void *pyfs_buffer_alloc(uint64_t size)
{
	size_t len;
	void *buffer;

#if SIZE_MAX < UINT64_MAX
	if (size > SIZE_MAX)
		return NULL;
#endif
	len = size ? (size_t)size : 1;
	buffer = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buffer == MAP_FAILED)
		return NULL;
	image_buffer_dofork(buffer, size);
	return buffer;
}

void pyfs_buffer_free(void *buffer, uint64_t size)
{
	if (buffer)
		munmap(buffer, size ? (size_t)size : 1);
}

void pyfs_image_parts_free(struct pyfs_image_parts *parts)
{
	pyfs_buffer_free(parts->inodes, parts->inode_count * sizeof(struct pyfs_inode));
	pyfs_buffer_free(parts->dirents, parts->dirent_count * sizeof(struct pyfs_dirent));
	pyfs_buffer_free(parts->names, parts->names_size);
	pyfs_buffer_free(parts->payload, parts->payload_size);
	pyfs_buffer_free(parts->blocks, parts->block_count * sizeof(struct pyfs_block));
	memset(parts, 0, sizeof(*parts));
}

uint64_t pyfs_parts_metadata_checksum(const struct pyfs_image_parts *parts)
{
	XXH3_state_t state;

	XXH3_64bits_reset(&state);
	if (parts->inode_count)
		XXH3_64bits_update(&state, parts->inodes,
				   parts->inode_count * sizeof(struct pyfs_inode));
	if (parts->dirent_count)
		XXH3_64bits_update(&state, parts->dirents,
				   parts->dirent_count * sizeof(struct pyfs_dirent));
	if (parts->names_size)
		XXH3_64bits_update(&state, parts->names, parts->names_size);
	if (parts->block_count)
		XXH3_64bits_update(&state, parts->blocks,
				   parts->block_count * sizeof(struct pyfs_block));
	return XXH3_64bits_digest(&state);
}

/* Bytes of contents that file offsets address: raw_size when compressed. */
static uint64_t image_content_size(const struct pyfs_image_parts *parts)
{
	return parts->block_size ? parts->raw_size : parts->payload_size;
}

uint64_t pyfs_block_raw_length(const struct pyfs_image_parts *parts, uint64_t block)
{
	uint64_t start = block * parts->block_size;

	return parts->raw_size - start < parts->block_size ? parts->raw_size - start
							   : parts->block_size;
}

uint64_t pyfs_metadata_checksum(const struct pyfs_inode *inodes, uint64_t inode_count,
				const struct pyfs_dirent *dirents, uint64_t dirent_count,
				const uint8_t *names, uint64_t names_size)
{
	XXH3_state_t state;

	XXH3_64bits_reset(&state);
	if (inode_count)
		XXH3_64bits_update(&state, inodes, inode_count * sizeof(*inodes));
	if (dirent_count)
		XXH3_64bits_update(&state, dirents, dirent_count * sizeof(*dirents));
	if (names_size)
		XXH3_64bits_update(&state, names, names_size);
	return XXH3_64bits_digest(&state);
}

/* True when [offset, offset + size) lies inside [0, limit), without wrapping. */
static bool image_range_inside(uint64_t offset, uint64_t size, uint64_t limit)
{
	return offset <= limit && size <= limit - offset;
}

/* memcmp order, then the shorter name first: the order of the dirents. */
static int image_name_cmp(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
	int c = memcmp(a, b, a_len < b_len ? a_len : b_len);

	if (c)
		return c;
	return (a_len > b_len) - (a_len < b_len);
}

/* Copy name into out (size bytes) with control bytes and '\' as \xNN; always terminated. */
static void image_quote(char *out, size_t size, const uint8_t *name, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		uint8_t c = name[i];

		if (c < 0x20 || c == 0x7f || c == '\\') {
			if (o + 4 >= size)
				break;
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			if (o + 1 >= size)
				break;
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
}

static const uint8_t *image_dirent_name(const struct pyfs_image_parts *parts, uint64_t dirent)
{
	return parts->names + parts->dirents[dirent].name_offset;
}

static void image_quote_dirent(char *out, size_t size, const struct pyfs_image_parts *parts,
			       uint64_t dirent)
{
	image_quote(out, size, image_dirent_name(parts, dirent),
		    parts->dirents[dirent].name_length);
}

static bool image_is_dir(const struct pyfs_inode *inode)
{
	return (inode->mode & S_IFMT) == S_IFDIR;
}

/* The rules that concern one inode record alone. */
static int image_check_inode(const struct pyfs_image_parts *parts, uint32_t i, struct pyfs_err *err)
{
	const struct pyfs_inode *ino = &parts->inodes[i];
	uint32_t type = ino->mode & S_IFMT;

	if (type != S_IFDIR && type != S_IFREG && type != S_IFLNK) {
		pyfs_err_set(err,
			     INVALID "inode %" PRIu32 ": unsupported file type (mode 0%" PRIo32
				     "; only directories, regular files and symlinks)",
			     i, ino->mode);
		return -EINVAL;
	}
	if (ino->mode & ~(uint32_t)(S_IFMT | PYFS_MODE_PERM_MASK)) {
		pyfs_err_set(err,
			     INVALID
			     "inode %" PRIu32 ": mode 0%" PRIo32
			     " has bits beyond the file type and 0777 (setuid, setgid or sticky)",
			     i, ino->mode);
		return -EINVAL;
	}
	if (ino->mtime_nsec >= 1000000000u) {
		pyfs_err_set(err,
			     INVALID "inode %" PRIu32 ": mtime_nsec %" PRIu32
				     " is not below 1000000000",
			     i, ino->mtime_nsec);
		return -EINVAL;
	}
	if (type == S_IFREG &&
	    !image_range_inside(ino->data_offset, ino->data_size, image_content_size(parts))) {
		pyfs_err_set(err,
			     INVALID "inode %" PRIu32 ": file data [offset %" PRIu64
				     ", size %" PRIu64 "] lies outside the %s (size %" PRIu64 ")",
			     i, ino->data_offset, ino->data_size,
			     parts->block_size ? "raw contents" : "payload",
			     image_content_size(parts));
		return -EINVAL;
	}
	if (type == S_IFLNK) {
		if (ino->data_size == 0 || ino->data_size > PYFS_SYMLINK_MAX) {
			pyfs_err_set(err,
				     INVALID "inode %" PRIu32 ": symlink target length %" PRIu64
					     " is not in 1..%u",
				     i, ino->data_size, PYFS_SYMLINK_MAX);
			return -EINVAL;
		}
		if (!image_range_inside(ino->data_offset, ino->data_size, parts->names_size)) {
			pyfs_err_set(err,
				     INVALID "inode %" PRIu32 ": symlink target [offset %" PRIu64
					     ", size %" PRIu64
					     "] lies outside the names (size %" PRIu64 ")",
				     i, ino->data_offset, ino->data_size, parts->names_size);
			return -EINVAL;
		}
		if (memchr(parts->names + ino->data_offset, '\0', ino->data_size)) {
			pyfs_err_set(
			    err, INVALID "inode %" PRIu32 ": symlink target contains a NUL byte",
			    i);
			return -EINVAL;
		}
	}
	if (type == S_IFDIR) {
		if (ino->data_offset || ino->data_size || ino->checksum) {
			pyfs_err_set(err,
				     INVALID "inode %" PRIu32 ": directory has data fields set "
					     "(offset %" PRIu64 ", size %" PRIu64
					     ", checksum 0x%" PRIx64 "; must be 0)",
				     i, ino->data_offset, ino->data_size, ino->checksum);
			return -EINVAL;
		}
		if ((uint64_t)ino->first_entry + ino->entry_count > parts->dirent_count) {
			pyfs_err_set(err,
				     INVALID "inode %" PRIu32 ": directory entries [first %" PRIu32
					     ", count %" PRIu32
					     "] lie outside the dirents (count %" PRIu64 ")",
				     i, ino->first_entry, ino->entry_count, parts->dirent_count);
			return -EINVAL;
		}
	} else if (ino->parent || ino->first_entry || ino->entry_count) {
		pyfs_err_set(err,
			     INVALID "inode %" PRIu32 ": non-directory has directory fields set "
				     "(parent %" PRIu32 ", first_entry %" PRIu32
				     ", entry_count %" PRIu32 "; must be 0)",
			     i, ino->parent, ino->first_entry, ino->entry_count);
		return -EINVAL;
	}
	return 0;
}

/* The block index of a compressed payload (rules in image.h). */
static int image_check_blocks(const struct pyfs_image_parts *parts, struct pyfs_err *err)
{
	uint64_t expected, next = 0;
	uint32_t bs = parts->block_size;

	if (bs == 0) {
		if (parts->block_count || parts->raw_size) {
			pyfs_err_set(err,
				     INVALID "%" PRIu64 " blocks and raw size %" PRIu64
					     " without a block size",
				     parts->block_count, parts->raw_size);
			return -EINVAL;
		}
		return 0;
	}
	if (bs < PYFS_BLOCK_SIZE_MIN || bs > PYFS_BLOCK_SIZE_MAX || (bs & (bs - 1))) {
		pyfs_err_set(err,
			     INVALID "block size %" PRIu32 " is not a power of two in %" PRIu32
				     "..%" PRIu32,
			     bs, PYFS_BLOCK_SIZE_MIN, PYFS_BLOCK_SIZE_MAX);
		return -EINVAL;
	}
	expected = parts->raw_size / bs + (parts->raw_size % bs != 0);
	if (parts->block_count != expected) {
		pyfs_err_set(err,
			     INVALID "%" PRIu64 " blocks for %" PRIu64
				     " raw bytes in blocks of %" PRIu32 " (expected %" PRIu64 ")",
			     parts->block_count, parts->raw_size, bs, expected);
		return -EINVAL;
	}
	for (uint64_t b = 0; b < parts->block_count; b++) {
		const struct pyfs_block *blk = &parts->blocks[b];
		uint64_t raw = pyfs_block_raw_length(parts, b);

		if (blk->offset != next) {
			pyfs_err_set(err,
				     INVALID "block %" PRIu64 ": stored at offset %" PRIu64
					     " but the previous block ends at %" PRIu64
					     " (blocks must be contiguous and in order)",
				     b, blk->offset, next);
			return -EINVAL;
		}
		if (!image_range_inside(blk->offset, blk->stored_size, parts->payload_size)) {
			pyfs_err_set(err,
				     INVALID "block %" PRIu64 ": [offset %" PRIu64 ", size %" PRIu32
					     "] lies outside the payload (size %" PRIu64 ")",
				     b, blk->offset, blk->stored_size, parts->payload_size);
			return -EINVAL;
		}
		if (blk->codec == PYFS_CODEC_RAW && blk->stored_size != raw) {
			pyfs_err_set(err,
				     INVALID "block %" PRIu64 ": stored raw in %" PRIu32
					     " bytes, but holds %" PRIu64,
				     b, blk->stored_size, raw);
			return -EINVAL;
		}
		if (blk->codec == PYFS_CODEC_ZSTD &&
		    (blk->stored_size == 0 || blk->stored_size >= raw)) {
			pyfs_err_set(err,
				     INVALID "block %" PRIu64 ": compressed size %" PRIu32
					     " is not in 1..%" PRIu64 " (its raw length less one)",
				     b, blk->stored_size, raw - 1);
			return -EINVAL;
		}
		if (blk->codec != PYFS_CODEC_RAW && blk->codec != PYFS_CODEC_ZSTD) {
			pyfs_err_set(err, INVALID "block %" PRIu64 ": unknown codec %" PRIu32, b,
				     blk->codec);
			return -EINVAL;
		}
		next = blk->offset + blk->stored_size;
	}
	if (next != parts->payload_size) {
		pyfs_err_set(err,
			     INVALID "the blocks end at %" PRIu64 " but the payload has %" PRIu64
				     " bytes",
			     next, parts->payload_size);
		return -EINVAL;
	}
	return 0;
}

/* The rules that concern one dirent record alone. */
static int image_check_dirent(const struct pyfs_image_parts *parts, uint32_t j,
			      struct pyfs_err *err)
{
	const struct pyfs_dirent *d = &parts->dirents[j];
	const char *problem = NULL;
	char quoted[IMAGE_QUOTE_MAX];
	const uint8_t *name;

	if (d->name_length == 0 || d->name_length > PYFS_NAME_MAX) {
		pyfs_err_set(err,
			     INVALID "dirent %" PRIu32 ": name length %" PRIu32 " is not in 1..%u",
			     j, d->name_length, PYFS_NAME_MAX);
		return -EINVAL;
	}
	if (!image_range_inside(d->name_offset, d->name_length, parts->names_size)) {
		pyfs_err_set(err,
			     INVALID "dirent %" PRIu32 ": name [offset %" PRIu64 ", length %" PRIu32
				     "] lies outside the names (size %" PRIu64 ")",
			     j, d->name_offset, d->name_length, parts->names_size);
		return -EINVAL;
	}
	name = image_dirent_name(parts, j);
	if (memchr(name, '/', d->name_length))
		problem = "contains '/'";
	else if (memchr(name, '\0', d->name_length))
		problem = "contains a NUL byte";
	else if (name[0] == '.' && (d->name_length == 1 || (d->name_length == 2 && name[1] == '.')))
		problem = "is reserved";
	if (problem) {
		image_quote(quoted, sizeof(quoted), name, d->name_length);
		pyfs_err_set(err, INVALID "dirent %" PRIu32 ": name '%s' %s", j, quoted, problem);
		return -EINVAL;
	}
	if (d->inode >= parts->inode_count) {
		pyfs_err_set(err,
			     INVALID "dirent %" PRIu32 ": inode %" PRIu32
				     " is out of range (inode count %" PRIu64 ")",
			     j, d->inode, parts->inode_count);
		return -EINVAL;
	}
	return 0;
}

/* Temporary arrays of the tree check. */
struct image_tree_scratch {
	uint32_t *names;  /* per inode: how many dirents name it */
	uint8_t *covered; /* per dirent, one bit: listed by some directory */
	uint32_t *queue;  /* directories to visit, breadth first */
};

/*
 * Directory by directory: entry ranges disjoint and sorted, nothing names the
 * root, every directory named once and by its recorded parent, directory nlink.
 * Fills parent[] and names[].
 */
static int image_check_directories(const struct pyfs_image_parts *parts,
				   struct image_tree_scratch *s, uint32_t *parent,
				   struct pyfs_err *err)
{
	char a[IMAGE_QUOTE_MAX], b[IMAGE_QUOTE_MAX];

	for (uint32_t d = 0; d < parts->inode_count; d++) {
		const struct pyfs_inode *dir = &parts->inodes[d];
		uint64_t subdirs = 0;
		uint32_t end;

		if (!image_is_dir(dir))
			continue;
		end = dir->first_entry + dir->entry_count; /* checked: fits the dirents */
		for (uint32_t j = dir->first_entry; j < end; j++) {
			const struct pyfs_dirent *e = &parts->dirents[j];
			int order;

			if (s->covered[j / 8] & (1u << (j % 8))) {
				pyfs_err_set(err,
					     INVALID "directory inode %" PRIu32
						     ": entries [first %" PRIu32 ", count %" PRIu32
						     "] overlap another "
						     "directory's entries at dirent %" PRIu32,
					     d, dir->first_entry, dir->entry_count, j);
				return -EINVAL;
			}
			s->covered[j / 8] |= (uint8_t)(1u << (j % 8));
			if (j > dir->first_entry) {
				order = image_name_cmp(image_dirent_name(parts, j - 1),
						       parts->dirents[j - 1].name_length,
						       image_dirent_name(parts, j), e->name_length);
				if (order >= 0) {
					image_quote_dirent(a, sizeof(a), parts, j - 1);
					image_quote_dirent(b, sizeof(b), parts, j);
					if (order == 0)
						pyfs_err_set(err,
							     INVALID "directory inode %" PRIu32
								     ": duplicate name '%s'",
							     d, b);
					else
						pyfs_err_set(
						    err,
						    INVALID
						    "directory inode %" PRIu32
						    ": names are not sorted ('%s' before '%s')",
						    d, a, b);
					return -EINVAL;
				}
			}
			if (e->inode == PYFS_ROOT_INDEX) {
				image_quote_dirent(a, sizeof(a), parts, j);
				pyfs_err_set(err,
					     INVALID "directory inode %" PRIu32 " names the root "
						     "directory as '%s' (cycle)",
					     d, a);
				return -EINVAL;
			}
			s->names[e->inode]++;
			parent[e->inode] = d;
			if (!image_is_dir(&parts->inodes[e->inode]))
				continue;
			subdirs++;
			if (s->names[e->inode] > 1) {
				image_quote_dirent(a, sizeof(a), parts, j);
				pyfs_err_set(err,
					     INVALID
					     "directory inode %" PRIu32 " is named more "
					     "than once (again as '%s' in directory inode %" PRIu32
					     ")",
					     e->inode, a, d);
				return -EINVAL;
			}
			if (parts->inodes[e->inode].parent != d) {
				image_quote_dirent(a, sizeof(a), parts, j);
				pyfs_err_set(err,
					     INVALID "directory inode %" PRIu32 " is named '%s' in "
						     "directory inode %" PRIu32
						     " but records parent %" PRIu32,
					     e->inode, a, d, parts->inodes[e->inode].parent);
				return -EINVAL;
			}
		}
		if (dir->nlink != 2 + subdirs) {
			pyfs_err_set(err,
				     INVALID "directory inode %" PRIu32 ": nlink %" PRIu32
					     " does not match its %" PRIu64
					     " subdirectories (expected %" PRIu64 ")",
				     d, dir->nlink, subdirs, 2 + subdirs);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * Every dirent in some directory, every inode named, file nlink, all
 * reachable. *depth gets how many levels of directories lie below the root.
 */
static int image_check_tree(const struct pyfs_image_parts *parts, struct image_tree_scratch *s,
			    uint32_t *parent, uint64_t *depth, struct pyfs_err *err)
{
	const struct pyfs_inode *root = &parts->inodes[PYFS_ROOT_INDEX];
	uint64_t head = 0, tail = 0, level_end;
	int ret;

	if (!image_is_dir(root)) {
		pyfs_err_set(err, INVALID "the root inode is not a directory (mode 0%" PRIo32 ")",
			     root->mode);
		return -EINVAL;
	}
	if (root->parent != PYFS_ROOT_INDEX) {
		pyfs_err_set(err,
			     INVALID "the root directory records parent %" PRIu32
				     " (must be itself, 0)",
			     root->parent);
		return -EINVAL;
	}
	ret = image_check_directories(parts, s, parent, err);
	if (ret)
		return ret;
	for (uint64_t j = 0; j < parts->dirent_count; j++) {
		if (!(s->covered[j / 8] & (1u << (j % 8)))) {
			pyfs_err_set(err, INVALID "dirent %" PRIu64 " belongs to no directory", j);
			return -EINVAL;
		}
	}
	for (uint32_t i = 1; i < parts->inode_count; i++) {
		const struct pyfs_inode *ino = &parts->inodes[i];

		if (s->names[i] == 0) {
			pyfs_err_set(err,
				     INVALID "inode %" PRIu32 " is not named in any directory "
					     "(orphan)",
				     i);
			return -EINVAL;
		}
		if (!image_is_dir(ino) && ino->nlink != s->names[i]) {
			pyfs_err_set(err,
				     INVALID "inode %" PRIu32 ": nlink %" PRIu32
					     " does not match its %" PRIu32 " names",
				     i, ino->nlink, s->names[i]);
			return -EINVAL;
		}
	}
	/*
	 * Every directory but the root is named exactly once, so a breadth-first
	 * walk from the root meets each reachable one once; names[] marks them.
	 * queue[head, level_end) is the level being walked.
	 */
	*depth = 0;
	s->queue[tail++] = PYFS_ROOT_INDEX;
	level_end = tail;
	while (head < tail) {
		const struct pyfs_inode *dir = &parts->inodes[s->queue[head++]];

		for (uint32_t j = dir->first_entry; j < dir->first_entry + dir->entry_count; j++) {
			uint32_t child = parts->dirents[j].inode;

			if (image_is_dir(&parts->inodes[child])) {
				s->names[child] = 0;
				s->queue[tail++] = child;
			}
		}
		if (head == level_end && head < tail) {
			(*depth)++;
			level_end = tail;
		}
	}
	for (uint32_t i = 1; i < parts->inode_count; i++) {
		if (image_is_dir(&parts->inodes[i]) && s->names[i]) {
			pyfs_err_set(err,
				     INVALID "directory inode %" PRIu32 " is not reachable from "
					     "the root (cycle)",
				     i);
			return -EINVAL;
		}
	}
	return 0;
}

static void image_count_totals(const struct pyfs_image_parts *parts,
			       struct pyfs_image_totals *totals)
{
	memset(totals, 0, sizeof(*totals));
	totals->inodes = parts->inode_count;
	totals->payload_bytes = parts->payload_size;
	totals->raw_bytes = image_content_size(parts);
	totals->blocks = parts->block_count;
	for (uint64_t i = 0; i < parts->inode_count; i++) {
		switch (parts->inodes[i].mode & S_IFMT) {
		case S_IFDIR:
			totals->directories++;
			break;
		case S_IFREG:
			totals->files++;
			totals->file_bytes += parts->inodes[i].data_size;
			break;
		default:
			totals->symlinks++;
			break;
		}
	}
}

/*
 * Every rule of pyfs_image_create() (see image.h), on parts as they are: the
 * payload bytes are not read, only payload_size. On success *parent_out gets
 * the directory of each inode (inode_count entries, from pyfs_buffer_alloc)
 * and *depth the levels of directories below the root.
 */
static int image_check(const struct pyfs_image_parts *parts, uint32_t **parent_out, uint64_t *depth,
		       struct pyfs_err *err)
{
	struct image_tree_scratch scratch = {NULL, NULL, NULL};
	uint32_t *parent = NULL;
	uint64_t computed;
	int ret = -EINVAL;

	if (parts->inode_count == 0) {
		pyfs_err_set(err, INVALID "no inodes (not even the root directory)");
		goto out;
	}
	if (parts->inode_count > PYFS_INODES_MAX || parts->dirent_count > PYFS_DIRENTS_MAX) {
		pyfs_err_set(err,
			     INVALID "%" PRIu64 " inodes and %" PRIu64 " dirents exceed the "
				     "limit of %" PRIu32 " each",
			     parts->inode_count, parts->dirent_count, UINT32_MAX);
		goto out;
	}
	computed = pyfs_parts_metadata_checksum(parts);
	if (computed != parts->metadata_checksum) {
		pyfs_err_set(err,
			     INVALID "metadata checksum mismatch (stored 0x%016" PRIx64
				     ", computed 0x%016" PRIx64 ")",
			     parts->metadata_checksum, computed);
		goto out;
	}
	ret = image_check_blocks(parts, err);
	if (ret)
		goto out;
	for (uint32_t i = 0; i < parts->inode_count; i++) {
		ret = image_check_inode(parts, i, err);
		if (ret)
			goto out;
	}
	for (uint32_t j = 0; j < parts->dirent_count; j++) {
		ret = image_check_dirent(parts, j, err);
		if (ret)
			goto out;
	}

	parent = pyfs_buffer_alloc(parts->inode_count * sizeof(uint32_t));
	scratch.names = calloc(parts->inode_count, sizeof(uint32_t));
	scratch.queue = malloc(parts->inode_count * sizeof(uint32_t));
	scratch.covered = calloc(parts->dirent_count / 8 + 1, 1);
	if (!parent || !scratch.names || !scratch.queue || !scratch.covered) {
		pyfs_err_set(err, "cannot check the tree of %" PRIu64 " inodes: %s",
			     parts->inode_count, strerror(ENOMEM));
		ret = -ENOMEM;
		goto out_free;
	}
	ret = image_check_tree(parts, &scratch, parent, depth, err);
	if (ret)
		goto out_free;
	*parent_out = parent;
	parent = NULL;

out_free:
	if (parent)
		pyfs_buffer_free(parent, parts->inode_count * sizeof(uint32_t));
	free(scratch.names);
	free(scratch.queue);
	free(scratch.covered);
out:
	return ret;
}

int pyfs_image_check_metadata(const struct pyfs_image_parts *parts, struct pyfs_err *err)
{
	uint32_t *parent = NULL;
	uint64_t depth;
	int ret = image_check(parts, &parent, &depth, err);

	if (ret == 0)
		pyfs_buffer_free(parent, parts->inode_count * sizeof(uint32_t));
	return ret;
}

int pyfs_image_create(struct pyfs_image_parts *parts, struct pyfs_image **out, struct pyfs_err *err)
{
	struct pyfs_image *image;
	uint32_t *parent = NULL;
	uint64_t depth;
	int ret;

	ret = image_check(parts, &parent, &depth, err);
	if (ret)
		goto out;
	image = calloc(1, sizeof(*image));
	if (!image) {
		pyfs_err_set(err, "cannot allocate the image of %" PRIu64 " inodes: %s",
			     parts->inode_count, strerror(ENOMEM));
		ret = -ENOMEM;
		goto out_free_parent;
	}
	image->parent = parent;
	image_count_totals(parts, &image->totals);
	image->totals.depth = depth;
	image->parts = *parts;
	memset(parts, 0, sizeof(*parts));
	*out = image;
	goto out;

out_free_parent:
	pyfs_buffer_free(parent, parts->inode_count * sizeof(uint32_t));
out:
	return ret;
}

void pyfs_image_keep_on_fork(const struct pyfs_image *image)
{
	const struct pyfs_image_parts *parts = &image->parts;

	image_buffer_dofork(parts->inodes, parts->inode_count * sizeof(struct pyfs_inode));
	image_buffer_dofork(parts->dirents, parts->dirent_count * sizeof(struct pyfs_dirent));
	image_buffer_dofork(parts->names, parts->names_size);
	image_buffer_dofork(parts->payload, parts->payload_size);
	image_buffer_dofork(parts->blocks, parts->block_count * sizeof(struct pyfs_block));
	image_buffer_dofork(image->parent, parts->inode_count * sizeof(uint32_t));
}

static void image_unshare_blocks(struct pyfs_image *image)
{
	for (unsigned int i = 0; image->shared && i < image->shared_count; i++)
		pthread_mutex_destroy(&image->shared[i].lock);
	free(image->shared);
	pyfs_buffer_free(image->shared_data,
			 (uint64_t)image->shared_count * image->parts.block_size);
	image->shared = NULL;
	image->shared_data = NULL;
	image->shared_count = 0;
}

int pyfs_image_share_blocks(struct pyfs_image *image, unsigned int slots)
{
	if (!image->parts.block_size || image->shared || slots == 0)
		return 0;
	image->shared = calloc(slots, sizeof(*image->shared));
	image->shared_data = pyfs_buffer_alloc((uint64_t)slots * image->parts.block_size);
	if (!image->shared || !image->shared_data) {
		free(image->shared);
		image->shared = NULL;
		pyfs_buffer_free(image->shared_data, (uint64_t)slots * image->parts.block_size);
		image->shared_data = NULL;
		return -ENOMEM;
	}
	for (unsigned int i = 0; i < slots; i++)
		pthread_mutex_init(&image->shared[i].lock, NULL);
	image->shared_count = slots;
	return 0;
}

void pyfs_image_destroy(struct pyfs_image *image)
{
	if (!image)
		return;
	image_unshare_blocks(image);
	pyfs_buffer_free(image->parent, image->parts.inode_count * sizeof(uint32_t));
	pyfs_image_parts_free(&image->parts);
	free(image);
}

void pyfs_image_path(const struct pyfs_image *image, uint32_t index, char *buf, size_t size)
{
	const struct pyfs_image_parts *parts = &image->parts;
	char path[IMAGE_PATH_MAX];
	size_t start = sizeof(path) - 1;
	uint32_t node = index;

	path[start] = '\0';
	while (node != PYFS_ROOT_INDEX) {
		const struct pyfs_inode *dir = &parts->inodes[image->parent[node]];
		char quoted[IMAGE_QUOTE_MAX] = "?";
		size_t len;
		bool leaf;

		for (uint32_t j = dir->first_entry; j < dir->first_entry + dir->entry_count; j++) {
			if (parts->dirents[j].inode == node) {
				image_quote_dirent(quoted, sizeof(quoted), parts, j);
				break;
			}
		}
		len = strlen(quoted);
		leaf = start == sizeof(path) - 1;
		/* The name, a '/' before what follows it, and room left for ".../". */
		if (len + !leaf + 4 > start) {
			if (leaf) {
				/* A leaf name longer than the buffer: "..." and its end. */
				memcpy(path + 3, quoted + len - (start - 3), start - 3);
				memcpy(path, "...", 3);
				start = 0;
			} else {
				start -= 4;
				memcpy(path + start, ".../", 4);
			}
			break;
		}
		if (!leaf)
			path[--start] = '/';
		start -= len;
		memcpy(path + start, quoted, len);
		node = image->parent[node];
	}
	snprintf(buf, size, "%s", path + start);
}

int pyfs_block_check(const struct pyfs_image_parts *parts, uint64_t block, const uint8_t *src,
		     struct pyfs_err *err)
{
	const struct pyfs_block *blk = &parts->blocks[block];
	uint64_t computed = XXH3_64bits(src, blk->stored_size);

	if (computed != blk->checksum) {
		pyfs_err_set(err,
			     "block %" PRIu64 " checksum mismatch (stored 0x%016" PRIx64
			     ", computed 0x%016" PRIx64 ")",
			     block, blk->checksum, computed);
		return -EIO;
	}
	if (blk->codec == PYFS_CODEC_ZSTD && ZSTD_getFrameContentSize(src, blk->stored_size) !=
						 pyfs_block_raw_length(parts, block)) {
		pyfs_err_set(err,
			     "block %" PRIu64 ": the zstd frame does not announce its %" PRIu64
			     " raw bytes",
			     block, pyfs_block_raw_length(parts, block));
		return -EIO;
	}
	return 0;
}

int pyfs_image_verify_payload(const struct pyfs_image *image, struct pyfs_err *err)
{
	if (!image->parts.payload) {
		pyfs_err_set(err, "the payload is not loaded");
		return -EIO;
	}
	return pyfs_image_verify_payload_digest(
	    image, XXH3_64bits(image->parts.payload, image->parts.payload_size), err);
}

/*
 * The blocks of a compressed payload are checked here too, whatever computed
 * the payload's digest: each one's checksum, and that its zstd frame announces
 * the raw length the index gives it (no decompression).
 */
int pyfs_image_verify_payload_digest(const struct pyfs_image *image, uint64_t computed,
				     struct pyfs_err *err)
{
	const struct pyfs_image_parts *parts = &image->parts;

	if (!parts->payload) {
		pyfs_err_set(err, "the payload is not loaded");
		return -EIO;
	}
	for (uint64_t b = 0; b < parts->block_count; b++) {
		int rc = pyfs_block_check(parts, b, parts->payload + parts->blocks[b].offset, err);

		if (rc < 0)
			return rc;
	}
	if (computed != image->parts.payload_checksum) {
		pyfs_err_set(err,
			     "payload checksum mismatch (stored 0x%016" PRIx64
			     ", computed 0x%016" PRIx64 ")",
			     image->parts.payload_checksum, computed);
		return -EIO;
	}
	return 0;
}

int pyfs_image_verify_files(const struct pyfs_image *image, struct pyfs_err *err)
{
	const struct pyfs_image_parts *parts = &image->parts;
	char path[IMAGE_PATH_MAX];

	if (!parts->payload || parts->block_size) {
		pyfs_err_set(err, "file checksums of a %s payload need a stream (stream.h)",
			     parts->payload ? "compressed" : "missing");
		return -EIO;
	}
	for (uint32_t i = 0; i < parts->inode_count; i++) {
		const struct pyfs_inode *ino = &parts->inodes[i];
		const uint8_t *base;
		uint64_t computed;

		switch (ino->mode & S_IFMT) {
		case S_IFREG:
			base = parts->payload;
			break;
		case S_IFLNK:
			base = parts->names;
			break;
		default:
			continue;
		}
		computed = XXH3_64bits(base + ino->data_offset, ino->data_size);
		if (computed != ino->checksum) {
			pyfs_image_path(image, i, path, sizeof(path));
			pyfs_err_set(err,
				     "checksum mismatch in '%s' (stored 0x%016" PRIx64
				     ", computed 0x%016" PRIx64 ")",
				     path, ino->checksum, computed);
			return -EIO;
		}
	}
	return 0;
}

uint32_t pyfs_image_inode_count(const struct pyfs_image *image)
{
	return (uint32_t)image->parts.inode_count;
}

const struct pyfs_inode *pyfs_image_inode(const struct pyfs_image *image, uint32_t index)
{
	if (index >= image->parts.inode_count)
		return NULL;
	return &image->parts.inodes[index];
}

int pyfs_image_stat(const struct pyfs_image *image, uint32_t index, struct stat *st)
{
	const struct pyfs_inode *ino = pyfs_image_inode(image, index);
	uint64_t size;

	if (!ino)
		return -ENOENT;
	size = image_is_dir(ino) ? IMAGE_DIR_SIZE : ino->data_size;
	memset(st, 0, sizeof(*st));
	st->st_ino = (ino_t)index + 1;
	st->st_mode = ino->mode;
	st->st_nlink = ino->nlink;
	st->st_size = (off_t)size;
	st->st_blksize = IMAGE_BLKSIZE;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	st->st_mtim.tv_sec = ino->mtime_sec;
	st->st_mtim.tv_nsec = ino->mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
	return 0;
}

int pyfs_image_lookup(const struct pyfs_image *image, uint32_t dir, const char *name, size_t len,
		      uint32_t *found)
{
	const struct pyfs_image_parts *parts = &image->parts;
	const struct pyfs_inode *ino = pyfs_image_inode(image, dir);
	uint64_t lo, hi;

	if (!ino)
		return -ENOENT;
	if (!image_is_dir(ino))
		return -ENOTDIR;
	if (len > PYFS_NAME_MAX)
		return -ENAMETOOLONG;
	if (len == 0)
		return -ENOENT;
	if (name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.'))) {
		*found = len == 1 ? dir : ino->parent;
		return 0;
	}
	lo = ino->first_entry;
	hi = lo + ino->entry_count;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		int c = image_name_cmp(image_dirent_name(parts, mid),
				       parts->dirents[mid].name_length, (const uint8_t *)name, len);

		if (c == 0) {
			*found = parts->dirents[mid].inode;
			return 0;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

int pyfs_image_resolve(const struct pyfs_image *image, const char *path, uint32_t *found)
{
	uint32_t node = PYFS_ROOT_INDEX;
	const char *p = path;

	while (*p) {
		const char *slash;
		size_t len;
		int ret;

		if (*p == '/') {
			p++;
			continue;
		}
		slash = strchr(p, '/');
		len = slash ? (size_t)(slash - p) : strlen(p);
		ret = pyfs_image_lookup(image, node, p, len, &node);
		if (ret)
			return ret;
		p += len;
	}
	*found = node;
	return 0;
}

int pyfs_image_entry(const struct pyfs_image *image, uint32_t dir, uint64_t pos, const char **name,
		     size_t *len, uint32_t *index)
{
	const struct pyfs_inode *ino = pyfs_image_inode(image, dir);
	const struct pyfs_dirent *e;

	if (!ino)
		return -ENOENT;
	if (!image_is_dir(ino))
		return -ENOTDIR;
	if (pos >= ino->entry_count)
		return -ENOENT;
	e = &image->parts.dirents[ino->first_entry + pos];
	*name = (const char *)image->parts.names + e->name_offset;
	*len = e->name_length;
	*index = e->inode;
	return 0;
}

uint64_t pyfs_image_entry_count(const struct pyfs_image *image, uint32_t dir)
{
	const struct pyfs_inode *ino = pyfs_image_inode(image, dir);

	if (!ino || !image_is_dir(ino))
		return 0;
	return ino->entry_count;
}

int pyfs_image_read(const struct pyfs_image *image, uint32_t index, uint64_t offset, uint64_t size,
		    const uint8_t **data, size_t *len)
{
	const struct pyfs_inode *ino = pyfs_image_inode(image, index);
	uint64_t avail;

	if (!ino)
		return -EINVAL;
	if (image_is_dir(ino))
		return -EISDIR;
	if ((ino->mode & S_IFMT) != S_IFREG)
		return -EINVAL;
	if (!image->parts.payload || image->parts.block_size)
		return -EIO;
	avail = offset < ino->data_size ? ino->data_size - offset : 0;
	*data = image->parts.payload + ino->data_offset + (ino->data_size - avail);
	*len = (size_t)(size < avail ? size : avail);
	return 0;
}

int pyfs_image_readlink(const struct pyfs_image *image, uint32_t index, const char **target,
			size_t *len)
{
	const struct pyfs_inode *ino = pyfs_image_inode(image, index);

	if (!ino || (ino->mode & S_IFMT) != S_IFLNK)
		return -EINVAL;
	*target = (const char *)image->parts.names + ino->data_offset;
	*len = (size_t)ino->data_size;
	return 0;
}

void pyfs_image_get_totals(const struct pyfs_image *image, struct pyfs_image_totals *totals)
{
	*totals = image->totals;
}

const uint8_t *pyfs_image_payload(const struct pyfs_image *image, uint64_t *size)
{
	*size = image->parts.payload_size;
	return image->parts.payload;
}

struct pyfs_checksum {
	XXH3_state_t state;
};

struct pyfs_checksum *pyfs_checksum_create(void)
{
	struct pyfs_checksum *sum = aligned_alloc(64, sizeof(*sum));

	if (sum)
		XXH3_64bits_reset(&sum->state);
	return sum;
}

void pyfs_checksum_update(struct pyfs_checksum *sum, const void *data, uint64_t size)
{
	if (size)
		XXH3_64bits_update(&sum->state, data, (size_t)size);
}

uint64_t pyfs_checksum_digest(const struct pyfs_checksum *sum)
{
	return XXH3_64bits_digest(&sum->state);
}

void pyfs_checksum_destroy(struct pyfs_checksum *sum)
{
	free(sum);
}

const struct pyfs_image_parts *pyfs_image_parts(const struct pyfs_image *image)
{
	return &image->parts;
}

bool pyfs_image_compressed(const struct pyfs_image *image)
{
	return image->parts.block_size != 0;
}

/* --- compressed payloads: decoding, the per-thread cache, inflating ---------------------- */

int pyfs_block_decode(const struct pyfs_image_parts *parts, uint64_t block, const uint8_t *src,
		      uint8_t *dst, struct ZSTD_DCtx_s *dctx)
{
	const struct pyfs_block *blk = &parts->blocks[block];
	uint64_t raw = pyfs_block_raw_length(parts, block);
	size_t n;

	if (blk->codec == PYFS_CODEC_RAW) {
		memcpy(dst, src, raw);
		return 0;
	}
	n = dctx ? ZSTD_decompressDCtx(dctx, dst, raw, src, blk->stored_size)
		 : ZSTD_decompress(dst, raw, src, blk->stored_size);
	return ZSTD_isError(n) || n != raw ? -EIO : 0;
}

struct pyfs_block_cache *pyfs_block_cache_create(const struct pyfs_image *image)
{
	struct pyfs_block_cache *cache = calloc(1, sizeof(*cache));
	uint32_t bs = image->parts.block_size;

	if (!cache || !bs)
		return cache;
	cache->block_size = bs;
	cache->dctx = ZSTD_createDCtx();
	cache->slots = pyfs_buffer_alloc((uint64_t)PYFS_CACHE_BLOCKS * bs);
	cache->reply = pyfs_buffer_alloc(PYFS_CACHE_REPLY_MAX);
	if (!cache->dctx || !cache->slots || !cache->reply) {
		pyfs_block_cache_destroy(cache);
		return NULL;
	}
	return cache;
}

void pyfs_block_cache_destroy(struct pyfs_block_cache *cache)
{
	if (!cache)
		return;
	ZSTD_freeDCtx(cache->dctx);
	pyfs_buffer_free(cache->slots, (uint64_t)PYFS_CACHE_BLOCKS * cache->block_size);
	pyfs_buffer_free(cache->reply, PYFS_CACHE_REPLY_MAX);
	free(cache);
}

/* The shared cache's slot for block (its lock and tag) and, in *data, its bytes. */
static struct image_shared_block *image_shared_slot(const struct pyfs_image *image, uint64_t block,
						    uint8_t **data)
{
	size_t i = (size_t)(block % image->shared_count);

	*data = image->shared_data + i * image->parts.block_size;
	return &image->shared[i];
}

/* The raw bytes of block: in the payload (stored raw), cached, or decoded into the LRU slot. */
static int image_cached_block(const struct pyfs_image *image, struct pyfs_block_cache *cache,
			      uint64_t block, const uint8_t **out)
{
	const struct pyfs_image_parts *parts = &image->parts;
	const struct pyfs_block *blk = &parts->blocks[block];
	unsigned int victim = 0;
	uint8_t *slot;

	if (blk->codec == PYFS_CODEC_RAW) {
		*out = parts->payload + blk->offset;
		return 0;
	}
	cache->clock++;
	for (unsigned int i = 0; i < PYFS_CACHE_BLOCKS; i++) {
		if (cache->tag[i] == block + 1) {
			cache->used[i] = cache->clock;
			*out = cache->slots + (size_t)i * cache->block_size;
			return 0;
		}
		if (cache->used[i] < cache->used[victim])
			victim = i;
	}
	slot = cache->slots + (size_t)victim * cache->block_size;
	cache->tag[victim] = 0;
	if (image->shared) {
		/* Decoded lately by another thread? A copy costs a tenth of a decode. */
		uint8_t *data;
		struct image_shared_block *sh = image_shared_slot(image, block, &data);
		bool hit;

		pthread_mutex_lock(&sh->lock);
		hit = sh->tag == block + 1;
		if (hit)
			memcpy(slot, data, pyfs_block_raw_length(parts, block));
		pthread_mutex_unlock(&sh->lock);
		if (hit)
			goto out_cached;
	}
	cache->decoded = true;
	atomic_fetch_add_explicit(&((struct pyfs_image *)image)->blocks_decoded, 1,
				  memory_order_relaxed);
	if (pyfs_block_decode(parts, block, parts->payload + blk->offset, slot, cache->dctx) < 0) {
		bool logged = false;

		if (atomic_compare_exchange_strong(
			&((struct pyfs_image *)image)->decode_failure_logged, &logged, true))
			pyfs_error("cannot decompress block %" PRIu64 " of the payload: reads of "
				   "it fail with EIO (logged once)",
				   block);
		return -EIO;
	}
	if (image->shared) {
		uint8_t *data;
		struct image_shared_block *sh = image_shared_slot(image, block, &data);

		pthread_mutex_lock(&sh->lock);
		memcpy(data, slot, pyfs_block_raw_length(parts, block));
		sh->tag = block + 1;
		pthread_mutex_unlock(&sh->lock);
	}
out_cached:
	cache->tag[victim] = block + 1;
	cache->used[victim] = cache->clock;
	*out = slot;
	return 0;
}

/* Plan pyfs_image_decode_ahead(): count blocks from first, PYFS_DECODE_AHEAD_MAX at most. */
static void image_plan_ahead(struct pyfs_block_cache *cache, uint64_t first, uint64_t count)
{
	cache->ahead_next = first;
	cache->ahead_n =
	    count < PYFS_DECODE_AHEAD_MAX ? (unsigned int)count : PYFS_DECODE_AHEAD_MAX;
}

int pyfs_image_read_cached(const struct pyfs_image *image, struct pyfs_block_cache *cache,
			   uint32_t index, uint64_t offset, uint64_t size, const uint8_t **data,
			   size_t *len)
{
	const struct pyfs_image_parts *parts = &image->parts;
	const struct pyfs_inode *ino = pyfs_image_inode(image, index);
	uint64_t avail, start, end, bs = parts->block_size, first, last;
	const uint8_t *block;
	int rc;

	if (!parts->block_size || !ino || (ino->mode & S_IFMT) != S_IFREG)
		return pyfs_image_read(image, index, offset, size, data, len);
	if (!parts->payload || !cache || !cache->block_size)
		return -EIO;
	avail = offset < ino->data_size ? ino->data_size - offset : 0;
	if (size > avail)
		size = avail;
	if (size > PYFS_CACHE_REPLY_MAX)
		size = PYFS_CACHE_REPLY_MAX;
	*data = cache->reply;
	*len = 0;
	cache->ahead_n = 0;
	if (size == 0)
		return 0;
	start = ino->data_offset + offset;
	end = start + size;
	first = start / bs;
	last = (end - 1) / bs;
	cache->decoded = false;
	if (first == last) {
		rc = image_cached_block(image, cache, first, &block);
		if (rc < 0)
			return rc;
		*data = block + (start - first * bs);
	} else {
		for (uint64_t b = first; b <= last; b++) {
			uint64_t from = b == first ? start - b * bs : 0;
			uint64_t to = b == last ? end - b * bs : bs;

			rc = image_cached_block(image, cache, b, &block);
			if (rc < 0)
				return rc;
			memcpy(cache->reply + (b * bs + from - start), block + from, to - from);
		}
	}
	*len = (size_t)size;
	/* A read that had to decode is cold: its continuation is probably next. */
	if (cache->decoded && image->shared)
		image_plan_ahead(cache, last + 1, last - first + 1);
	return 0;
}

void pyfs_image_decode_ahead(const struct pyfs_image *image, struct pyfs_block_cache *cache)
{
	const struct pyfs_image_parts *parts = &image->parts;

	for (unsigned int i = 0; i < cache->ahead_n; i++) {
		uint64_t b = cache->ahead_next + i;
		struct image_shared_block *sh;
		uint8_t *data;
		bool mine = false;

		if (b >= parts->block_count)
			break;
		if (parts->blocks[b].codec == PYFS_CODEC_RAW)
			continue;
		for (unsigned int k = 0; k < PYFS_CACHE_BLOCKS; k++)
			mine |= cache->tag[k] == b + 1;
		if (mine)
			continue;
		/*
		 * Decoded in place under the slot's lock: a thread that needs the
		 * block meanwhile waits for it instead of decoding it too.
		 */
		sh = image_shared_slot(image, b, &data);
		pthread_mutex_lock(&sh->lock);
		if (sh->tag != b + 1) {
			sh->tag = 0;
			if (pyfs_block_decode(parts, b, parts->payload + parts->blocks[b].offset,
					      data, cache->dctx) == 0)
				sh->tag = b + 1;
			atomic_fetch_add_explicit(
			    &((struct pyfs_image *)image)->blocks_decoded_ahead, 1,
			    memory_order_relaxed);
		}
		pthread_mutex_unlock(&sh->lock);
	}
	cache->ahead_n = 0;
}

void pyfs_image_decode_file_start(const struct pyfs_image *image, struct pyfs_block_cache *cache,
				  uint32_t index, uint64_t bytes)
{
	const struct pyfs_inode *ino = pyfs_image_inode(image, index);
	uint64_t bs = image->parts.block_size, first;

	if (!bs || !image->shared || !cache || !ino || (ino->mode & S_IFMT) != S_IFREG ||
	    ino->data_size == 0 || bytes == 0)
		return;
	if (bytes > ino->data_size)
		bytes = ino->data_size;
	first = ino->data_offset / bs;
	image_plan_ahead(cache, first, (ino->data_offset + bytes - 1) / bs - first + 1);
	pyfs_image_decode_ahead(image, cache);
}

void pyfs_image_decode_counts(const struct pyfs_image *image, uint64_t *on_demand, uint64_t *ahead)
{
	*on_demand = atomic_load_explicit(&image->blocks_decoded, memory_order_relaxed);
	*ahead = atomic_load_explicit(&image->blocks_decoded_ahead, memory_order_relaxed);
}

/* Work shared by the threads of pyfs_image_inflate(). */
struct image_inflate {
	const struct pyfs_image_parts *parts;
	uint8_t *raw;
	atomic_uint_fast64_t next;
	atomic_uint_fast64_t failed; /* first failing block + 1 seen; 0: none */
	atomic_bool nomem;
};

static void *image_inflate_worker(void *arg)
{
	struct image_inflate *w = arg;
	ZSTD_DCtx *dctx = ZSTD_createDCtx();

	if (!dctx) {
		atomic_store(&w->nomem, true);
		return NULL;
	}
	for (;;) {
		uint64_t b = atomic_fetch_add(&w->next, 1);
		const struct pyfs_block *blk;

		if (b >= w->parts->block_count || atomic_load(&w->failed) || atomic_load(&w->nomem))
			break;
		blk = &w->parts->blocks[b];
		if (pyfs_block_decode(w->parts, b, w->parts->payload + blk->offset,
				      w->raw + b * w->parts->block_size, dctx) < 0) {
			uint_fast64_t none = 0;

			atomic_compare_exchange_strong(&w->failed, &none, b + 1);
		}
	}
	ZSTD_freeDCtx(dctx);
	return NULL;
}

#define IMAGE_INFLATE_THREADS_MAX 256u

int pyfs_image_inflate(struct pyfs_image *image, unsigned int threads, struct pyfs_err *err)
{
	struct pyfs_image_parts *parts = &image->parts;
	pthread_t tids[IMAGE_INFLATE_THREADS_MAX];
	struct image_inflate w = {.parts = parts};
	unsigned int started = 0;
	long cpus;

	if (!parts->block_size)
		return 0;
	if (!parts->payload) {
		pyfs_err_set(err, "cannot inflate: the payload is not loaded");
		return -EIO;
	}
	if (threads == 0) {
		cpus = sysconf(_SC_NPROCESSORS_ONLN);
		threads = cpus > 0 ? (unsigned int)cpus : 1;
	}
	if (threads > IMAGE_INFLATE_THREADS_MAX)
		threads = IMAGE_INFLATE_THREADS_MAX;
	w.raw = pyfs_buffer_alloc(parts->raw_size);
	if (!w.raw) {
		pyfs_err_set(err, "cannot inflate the payload (%" PRIu64 " bytes): %s",
			     parts->raw_size, strerror(ENOMEM));
		return -ENOMEM;
	}
	/* This thread works too; threads that cannot start leave their share to the others. */
	for (unsigned int i = 1; i < threads; i++)
		if (pthread_create(&tids[started], NULL, image_inflate_worker, &w) == 0)
			started++;
	image_inflate_worker(&w);
	for (unsigned int i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	if (atomic_load(&w.failed) || atomic_load(&w.nomem)) {
		pyfs_buffer_free(w.raw, parts->raw_size);
		if (atomic_load(&w.nomem)) {
			pyfs_err_set(err, "cannot inflate the payload: %s", strerror(ENOMEM));
			return -ENOMEM;
		}
		pyfs_err_set(err, "cannot decompress block %" PRIu64 " of the payload",
			     (uint64_t)atomic_load(&w.failed) - 1);
		return -EIO;
	}
	image_unshare_blocks(image);
	pyfs_buffer_free(parts->payload, parts->payload_size);
	pyfs_buffer_free(parts->blocks, parts->block_count * sizeof(struct pyfs_block));
	parts->payload = w.raw;
	parts->payload_size = parts->raw_size;
	parts->blocks = NULL;
	parts->block_count = 0;
	parts->block_size = 0;
	parts->raw_size = 0;
	/* The stored checksum was of the compressed bytes, verified before. */
	parts->payload_checksum = XXH3_64bits(parts->payload, parts->payload_size);
	image->totals.payload_bytes = parts->payload_size;
	image->totals.blocks = 0;
	return 0;
}
