/*
 * helper_tree.h - build archive parts from a tree described in C, for unit tests.
 *
 * A test adds directories, files, symlinks and hard links under parents it got
 * back from earlier calls (0 is the root), then helper_tree_build() lays them
 * out exactly as the format wants: inodes in creation order, each directory's
 * entries contiguous and sorted, identical contents stored once, checksums
 * computed. helper_write_archive() writes such parts through the writer, the
 * payload copied with pwrite() on a separate descriptor like the packer does.
 */
#ifndef HELPER_TREE_H
#define HELPER_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "archive_io.h"
#include "image.h"

struct helper_tree;

/* A tree holding only the root directory (mode 0755, mtime 0). NULL on ENOMEM. */
struct helper_tree *helper_tree_new(void);
void helper_tree_free(struct helper_tree *tree);

/* Each returns the new inode's index; perm is the permission bits (e.g. 0644). */
uint32_t helper_tree_dir(struct helper_tree *tree, uint32_t parent, const char *name,
			 uint32_t perm);
uint32_t helper_tree_file(struct helper_tree *tree, uint32_t parent, const char *name,
			  const void *data, size_t size, uint32_t perm);
uint32_t helper_tree_symlink(struct helper_tree *tree, uint32_t parent, const char *name,
			     const char *target);
/* Another name for inode (a hard link; files and symlinks only). */
void helper_tree_link(struct helper_tree *tree, uint32_t parent, const char *name, uint32_t inode);
void helper_tree_set_mtime(struct helper_tree *tree, uint32_t inode, int64_t sec, uint32_t nsec);

/* Lay the tree out as parts (buffers from pyfs_buffer_alloc). 0 or -ENOMEM. */
int helper_tree_build(const struct helper_tree *tree, struct pyfs_image_parts *parts);

/*
 * The sample tree most tests use (indexes in enum helper_sample):
 *
 *   /            0755 dir
 *   a/           0750 dir, mtime 1700000000.123456789
 *     hello.txt  0644 "hello, world\n"
 *     link       symlink -> "hello.txt"
 *   b.txt        0600 "duplicate contents\n"
 *   copy.txt     0644 "duplicate contents\n" (stored once with b.txt)
 *   empty        0644 empty file
 *   hard         second name of a/hello.txt
 *   sym          symlink -> "../outside/target" (dangling)
 *   z/           0755 empty dir
 */
enum helper_sample {
	SAMPLE_ROOT,
	SAMPLE_A,
	SAMPLE_HELLO,
	SAMPLE_LINK,
	SAMPLE_B,
	SAMPLE_COPY,
	SAMPLE_EMPTY,
	SAMPLE_SYM,
	SAMPLE_Z,
	SAMPLE_INODES,
};
#define SAMPLE_HELLO_DATA   "hello, world\n"
#define SAMPLE_DUP_DATA	    "duplicate contents\n"
#define SAMPLE_SYM_TARGET   "../outside/target"
#define SAMPLE_A_MTIME_SEC  1700000000
#define SAMPLE_A_MTIME_NSEC 123456789u

struct helper_tree *helper_sample_tree(void);
/* helper_sample_tree() built into parts; aborts the test on failure. */
void helper_sample_parts(struct pyfs_image_parts *parts);

/* The dirent index of name in directory dir of parts, or UINT32_MAX. */
uint32_t helper_find_dirent(const struct pyfs_image_parts *parts, uint32_t dir, const char *name);

/*
 * Turn parts (built uncompressed) into a compressed payload: zstd level 3 in
 * blocks of block_size, raw where a block does not shrink, checksums set.
 */
void helper_parts_compress(struct pyfs_image_parts *parts, uint32_t block_size);

/*
 * The sample tree plus "big.txt" (HELPER_BIG_SIZE bytes of repetitive text:
 * compresses well) and "a/noise.bin" (HELPER_NOISE_SIZE pseudo-random
 * bytes: blocks of it stay raw), so 4 KiB blocks give both kinds.
 */
#define HELPER_BIG_SIZE	  20000u
#define HELPER_NOISE_SIZE 9000u
struct helper_tree *helper_compressible_tree(void);

/* Recompute parts->metadata_checksum after a test changed the metadata. */
void helper_parts_reseal(struct pyfs_image_parts *parts);

/* Fresh zeroed parts of these sizes (buffers from pyfs_buffer_alloc). */
void helper_parts_alloc(struct pyfs_image_parts *parts, uint64_t inode_count, uint64_t dirent_count,
			uint64_t names_size, uint64_t payload_size);

/*
 * Write parts to path with the writer, the payload through a separate
 * descriptor at pyfs_writer_payload_file_offset(). Returns as the writer.
 */
int helper_write_archive(const char *path, const struct pyfs_image_parts *parts,
			 struct pyfs_err *err);

/*
 * name in a per-process temporary directory removed at exit; the result stays
 * valid for the next three calls.
 */
const char *helper_temp_path(const char *name);

#endif /* HELPER_TREE_H */
