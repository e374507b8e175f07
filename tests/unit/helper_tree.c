/*
 * helper_tree.c - the tree builder and archive writer of helper_tree.h.
 */
#include "helper_tree.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

struct helper_node {
	uint32_t mode;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint8_t *data; /* contents or symlink target */
	size_t size;
};

struct helper_entry {
	uint32_t dir;
	char *name;
	uint32_t inode;
};

struct helper_tree {
	struct helper_node *nodes;
	size_t node_count, node_cap;
	struct helper_entry *entries;
	size_t entry_count, entry_cap;
};

static void *helper_grow(void *array, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return array;
	*cap = *cap ? *cap * 2 : 64;
	if (*cap < need)
		*cap = need;
	array = realloc(array, *cap * elem);
	cr_assert_not_null(array, "out of memory");
	return array;
}

static uint32_t helper_add_node(struct helper_tree *tree, uint32_t mode, const void *data,
				size_t size)
{
	struct helper_node *node;

	tree->nodes =
	    helper_grow(tree->nodes, &tree->node_cap, tree->node_count + 1, sizeof(*tree->nodes));
	node = &tree->nodes[tree->node_count];
	memset(node, 0, sizeof(*node));
	node->mode = mode;
	node->size = size;
	node->data = malloc(size ? size : 1);
	cr_assert_not_null(node->data, "out of memory");
	if (size)
		memcpy(node->data, data, size);
	return (uint32_t)tree->node_count++;
}

void helper_tree_link(struct helper_tree *tree, uint32_t parent, const char *name, uint32_t inode)
{
	struct helper_entry *e;

	tree->entries = helper_grow(tree->entries, &tree->entry_cap, tree->entry_count + 1,
				    sizeof(*tree->entries));
	e = &tree->entries[tree->entry_count++];
	e->dir = parent;
	e->name = strdup(name);
	e->inode = inode;
	cr_assert_not_null(e->name, "out of memory");
}

struct helper_tree *helper_tree_new(void)
{
	struct helper_tree *tree = calloc(1, sizeof(*tree));

	if (tree)
		helper_add_node(tree, S_IFDIR | 0755, NULL, 0);
	return tree;
}

void helper_tree_free(struct helper_tree *tree)
{
	if (!tree)
		return;
	for (size_t i = 0; i < tree->node_count; i++)
		free(tree->nodes[i].data);
	for (size_t i = 0; i < tree->entry_count; i++)
		free(tree->entries[i].name);
	free(tree->nodes);
	free(tree->entries);
	free(tree);
}

uint32_t helper_tree_dir(struct helper_tree *tree, uint32_t parent, const char *name, uint32_t perm)
{
	uint32_t inode = helper_add_node(tree, S_IFDIR | perm, NULL, 0);

	helper_tree_link(tree, parent, name, inode);
	return inode;
}

uint32_t helper_tree_file(struct helper_tree *tree, uint32_t parent, const char *name,
			  const void *data, size_t size, uint32_t perm)
{
	uint32_t inode = helper_add_node(tree, S_IFREG | perm, data, size);

	helper_tree_link(tree, parent, name, inode);
	return inode;
}

uint32_t helper_tree_symlink(struct helper_tree *tree, uint32_t parent, const char *name,
			     const char *target)
{
	uint32_t inode = helper_add_node(tree, S_IFLNK | 0777, target, strlen(target));

	helper_tree_link(tree, parent, name, inode);
	return inode;
}

void helper_tree_set_mtime(struct helper_tree *tree, uint32_t inode, int64_t sec, uint32_t nsec)
{
	tree->nodes[inode].mtime_sec = sec;
	tree->nodes[inode].mtime_nsec = nsec;
}

/* Entries by directory, then by name (memcmp, then the shorter first). */
static int helper_entry_cmp(const void *pa, const void *pb)
{
	const struct helper_entry *a = pa, *b = pb;
	size_t la = strlen(a->name), lb = strlen(b->name);
	int c;

	if (a->dir != b->dir)
		return a->dir < b->dir ? -1 : 1;
	c = memcmp(a->name, b->name, la < lb ? la : lb);
	if (c)
		return c;
	return (la > lb) - (la < lb);
}

/* Open-addressing table of stored contents: (hash, size) -> payload offset. */
struct helper_dedup {
	uint64_t *hash;
	uint64_t *size;
	uint64_t *offset;
	size_t cap;
};

static uint64_t helper_store(struct helper_dedup *d, uint8_t *payload, uint64_t *used,
			     const uint8_t *data, uint64_t size, uint64_t hash)
{
	size_t slot = (size_t)hash & (d->cap - 1);

	for (; d->offset[slot] != UINT64_MAX; slot = (slot + 1) & (d->cap - 1)) {
		if (d->hash[slot] == hash && d->size[slot] == size &&
		    memcmp(payload + d->offset[slot], data, size) == 0)
			return d->offset[slot];
	}
	d->hash[slot] = hash;
	d->size[slot] = size;
	d->offset[slot] = *used;
	if (size)
		memcpy(payload + *used, data, size);
	*used += size;
	return d->offset[slot];
}

int helper_tree_build(const struct helper_tree *tree, struct pyfs_image_parts *parts)
{
	struct helper_entry *entries;
	struct helper_dedup dedup = {NULL, NULL, NULL, 1};
	uint64_t names_size = 0, payload_size = 0, names_used = 0, payload_used = 0;
	size_t e = 0;

	entries = malloc((tree->entry_count + 1) * sizeof(*entries));
	cr_assert_not_null(entries);
	memcpy(entries, tree->entries, tree->entry_count * sizeof(*entries));
	qsort(entries, tree->entry_count, sizeof(*entries), helper_entry_cmp);
	for (size_t i = 0; i < tree->entry_count; i++)
		names_size += strlen(entries[i].name);
	for (size_t i = 0; i < tree->node_count; i++) {
		if (S_ISLNK(tree->nodes[i].mode))
			names_size += tree->nodes[i].size;
		else if (S_ISREG(tree->nodes[i].mode))
			payload_size += tree->nodes[i].size;
	}
	helper_parts_alloc(parts, tree->node_count, tree->entry_count, names_size, payload_size);

	while (dedup.cap < 2 * tree->node_count)
		dedup.cap *= 2;
	dedup.hash = calloc(dedup.cap, sizeof(uint64_t));
	dedup.size = calloc(dedup.cap, sizeof(uint64_t));
	dedup.offset = malloc(dedup.cap * sizeof(uint64_t));
	cr_assert(dedup.hash && dedup.size && dedup.offset, "out of memory");
	memset(dedup.offset, 0xff, dedup.cap * sizeof(uint64_t));

	for (uint32_t i = 0; i < tree->node_count; i++) {
		const struct helper_node *node = &tree->nodes[i];
		struct pyfs_inode *ino = &parts->inodes[i];

		ino->mode = node->mode;
		ino->mtime_sec = node->mtime_sec;
		ino->mtime_nsec = node->mtime_nsec;
		if (S_ISDIR(node->mode)) {
			ino->nlink = 2;
			ino->first_entry = (uint32_t)e;
			while (e < tree->entry_count && entries[e].dir == i) {
				const struct helper_entry *en = &entries[e];
				struct pyfs_dirent *d = &parts->dirents[e];

				d->name_offset = names_used;
				d->name_length = (uint32_t)strlen(en->name);
				d->inode = en->inode;
				memcpy(parts->names + names_used, en->name, d->name_length);
				names_used += d->name_length;
				if (S_ISDIR(tree->nodes[en->inode].mode)) {
					ino->nlink++;
					parts->inodes[en->inode].parent = i;
				} else {
					parts->inodes[en->inode].nlink++;
				}
				e++;
			}
			ino->entry_count = (uint32_t)(e - ino->first_entry);
			continue;
		}
		ino->data_size = node->size;
		ino->checksum = XXH3_64bits(node->data, node->size);
		if (S_ISLNK(node->mode)) {
			ino->data_offset = names_used;
			memcpy(parts->names + names_used, node->data, node->size);
			names_used += node->size;
		} else {
			ino->data_offset = helper_store(&dedup, parts->payload, &payload_used,
							node->data, node->size, ino->checksum);
		}
	}
	cr_assert_eq(e, tree->entry_count, "an entry names a directory created after it");
	/* Dedup leaves the tail unused: the payload is exactly the stored bytes. */
	if (payload_used < payload_size) {
		uint8_t *payload = pyfs_buffer_alloc(payload_used);

		cr_assert_not_null(payload);
		memcpy(payload, parts->payload, payload_used);
		pyfs_buffer_free(parts->payload, payload_size);
		parts->payload = payload;
		parts->payload_size = payload_used;
	}
	parts->payload_checksum = XXH3_64bits(parts->payload, parts->payload_size);
	helper_parts_reseal(parts);
	free(dedup.hash);
	free(dedup.size);
	free(dedup.offset);
	free(entries);
	return 0;
}

struct helper_tree *helper_sample_tree(void)
{
	struct helper_tree *t = helper_tree_new();
	uint32_t a, hello;

	cr_assert_not_null(t);
	a = helper_tree_dir(t, SAMPLE_ROOT, "a", 0750);
	helper_tree_set_mtime(t, a, SAMPLE_A_MTIME_SEC, SAMPLE_A_MTIME_NSEC);
	hello =
	    helper_tree_file(t, a, "hello.txt", SAMPLE_HELLO_DATA, strlen(SAMPLE_HELLO_DATA), 0644);
	helper_tree_symlink(t, a, "link", "hello.txt");
	helper_tree_file(t, SAMPLE_ROOT, "b.txt", SAMPLE_DUP_DATA, strlen(SAMPLE_DUP_DATA), 0600);
	helper_tree_file(t, SAMPLE_ROOT, "copy.txt", SAMPLE_DUP_DATA, strlen(SAMPLE_DUP_DATA),
			 0644);
	helper_tree_file(t, SAMPLE_ROOT, "empty", NULL, 0, 0644);
	helper_tree_link(t, SAMPLE_ROOT, "hard", hello);
	helper_tree_symlink(t, SAMPLE_ROOT, "sym", SAMPLE_SYM_TARGET);
	helper_tree_dir(t, SAMPLE_ROOT, "z", 0755);
	return t;
}

void helper_sample_parts(struct pyfs_image_parts *parts)
{
	struct helper_tree *t = helper_sample_tree();

	cr_assert_eq(helper_tree_build(t, parts), 0);
	cr_assert_eq(parts->inode_count, SAMPLE_INODES);
	helper_tree_free(t);
}

uint32_t helper_find_dirent(const struct pyfs_image_parts *parts, uint32_t dir, const char *name)
{
	const struct pyfs_inode *d = &parts->inodes[dir];

	for (uint32_t j = d->first_entry; j < d->first_entry + d->entry_count; j++) {
		const struct pyfs_dirent *e = &parts->dirents[j];

		if (e->name_length == strlen(name) &&
		    memcmp(parts->names + e->name_offset, name, e->name_length) == 0)
			return j;
	}
	return UINT32_MAX;
}

void helper_parts_reseal(struct pyfs_image_parts *parts)
{
	parts->metadata_checksum = pyfs_parts_metadata_checksum(parts);
}

void helper_parts_compress(struct pyfs_image_parts *parts, uint32_t block_size)
{
	uint64_t raw_size = parts->payload_size;
	uint64_t count = raw_size / block_size + (raw_size % block_size != 0);
	size_t bound = ZSTD_compressBound(block_size);
	uint8_t *stored = pyfs_buffer_alloc(count * bound);
	uint8_t *out = malloc(bound);
	uint64_t used = 0;

	cr_assert(stored && out, "out of memory");
	parts->blocks = pyfs_buffer_alloc(count * sizeof(struct pyfs_block));
	cr_assert_not_null(parts->blocks, "out of memory");
	for (uint64_t b = 0; b < count; b++) {
		uint64_t from = b * block_size;
		size_t len = raw_size - from < block_size ? raw_size - from : block_size;
		size_t n = ZSTD_compress(out, bound, parts->payload + from, len, 3);
		struct pyfs_block *blk = &parts->blocks[b];

		cr_assert(!ZSTD_isError(n), "zstd: %s", ZSTD_getErrorName(n));
		blk->offset = used;
		if (n < len) {
			blk->codec = PYFS_CODEC_ZSTD;
			memcpy(stored + used, out, n);
		} else {
			blk->codec = PYFS_CODEC_RAW;
			n = len;
			memcpy(stored + used, parts->payload + from, n);
		}
		blk->stored_size = (uint32_t)n;
		blk->checksum = XXH3_64bits(stored + used, n);
		used += n;
	}
	free(out);
	pyfs_buffer_free(parts->payload, parts->payload_size);
	parts->payload = pyfs_buffer_alloc(used);
	cr_assert_not_null(parts->payload, "out of memory");
	memcpy(parts->payload, stored, used);
	pyfs_buffer_free(stored, count * bound);
	parts->payload_size = used;
	parts->payload_checksum = XXH3_64bits(parts->payload, used);
	parts->block_count = count;
	parts->block_size = block_size;
	parts->raw_size = raw_size;
	helper_parts_reseal(parts);
}

struct helper_tree *helper_compressible_tree(void)
{
	struct helper_tree *tree = helper_sample_tree();
	static uint8_t text[HELPER_BIG_SIZE], noise[HELPER_NOISE_SIZE];
	uint64_t x = 88172645463325252u;

	cr_assert_not_null(tree, "out of memory");
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (uint8_t)("import numpy as np\n"[i % 19] + (i / 4096) % 3);
	for (size_t i = 0; i < sizeof(noise); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		noise[i] = (uint8_t)x;
	}
	helper_tree_file(tree, SAMPLE_ROOT, "big.txt", text, sizeof(text), 0644);
	helper_tree_file(tree, SAMPLE_A, "noise.bin", noise, sizeof(noise), 0644);
	return tree;
}

void helper_parts_alloc(struct pyfs_image_parts *parts, uint64_t inode_count, uint64_t dirent_count,
			uint64_t names_size, uint64_t payload_size)
{
	memset(parts, 0, sizeof(*parts));
	parts->inodes = pyfs_buffer_alloc(inode_count * sizeof(struct pyfs_inode));
	parts->dirents = pyfs_buffer_alloc(dirent_count * sizeof(struct pyfs_dirent));
	parts->names = pyfs_buffer_alloc(names_size);
	parts->payload = pyfs_buffer_alloc(payload_size);
	cr_assert(parts->inodes && parts->dirents && parts->names && parts->payload,
		  "out of memory");
	parts->inode_count = inode_count;
	parts->dirent_count = dirent_count;
	parts->names_size = names_size;
	parts->payload_size = payload_size;
}

int helper_write_archive(const char *path, const struct pyfs_image_parts *parts,
			 struct pyfs_err *err)
{
	struct pyfs_writer_shape shape = {
	    .inode_count = parts->inode_count,
	    .dirent_count = parts->dirent_count,
	    .names_size = parts->names_size,
	    .payload_size = parts->payload_size,
	    .block_size = parts->block_size,
	    .block_count = parts->block_count,
	    .raw_size = parts->raw_size,
	};
	struct pyfs_writer *writer = NULL;
	uint64_t offset, done = 0;
	int fd = -1, ret;

	ret = pyfs_writer_create(path, &shape, &writer, err);
	if (ret)
		return ret;
	offset = pyfs_writer_payload_file_offset(writer);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "cannot open '%s': %s", path, strerror(errno));
	while (done < parts->payload_size) {
		ssize_t n = pwrite(fd, parts->payload + done, parts->payload_size - done,
				   (off_t)(offset + done));

		cr_assert_gt(n, 0, "cannot write '%s': %s", path, strerror(errno));
		done += (uint64_t)n;
	}
	cr_assert_eq(close(fd), 0);
	if (parts->block_size)
		pyfs_writer_set_blocks(writer, parts->blocks);
	return pyfs_writer_finish(writer, parts->inodes, parts->dirents, parts->names,
				  parts->payload_checksum, err);
}

static char helper_temp_dir[64];

static int helper_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void helper_temp_cleanup(void)
{
	if (helper_temp_dir[0])
		nftw(helper_temp_dir, helper_remove, 16, FTW_DEPTH | FTW_PHYS);
	helper_temp_dir[0] = '\0';
}

const char *helper_temp_path(const char *name)
{
	static char paths[4][256];
	static unsigned next;
	char *path = paths[next++ % 4];

	if (!helper_temp_dir[0]) {
		snprintf(helper_temp_dir, sizeof(helper_temp_dir), "/tmp/pyfs-unit.XXXXXX");
		cr_assert_not_null(mkdtemp(helper_temp_dir), "mkdtemp: %s", strerror(errno));
		atexit(helper_temp_cleanup);
	}
	snprintf(path, sizeof(paths[0]), "%s/%s", helper_temp_dir, name);
	return path;
}
