/*
 * image.h - the in-RAM image of an archive: validated once, then served.
 *
 * An image is the four parts of an archive (inodes, dirents, names, payload)
 * held in memory. pyfs_image_create() takes ownership of the parts and refuses
 * them unless every offset, length, count and name is in range and the tree is
 * a tree (see the rules below); after that, every accessor here is a bounds-
 * checked O(1) or O(log n) lookup that never fails on a valid image for a valid
 * index. Nothing here links FUSE, MPI or HDF5: the daemon, the packer's
 * --list/--verify/--extract and the fuzzer all serve from this.
 *
 * Inode numbers in this API are indexes into the inode table; index 0 is the
 * root. (FUSE inode numbers are index + 1.)
 */
#ifndef PYFS_IMAGE_H
#define PYFS_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "log.h"
#include "pyfs_format.h"

struct pyfs_image;

/*
 * Buffers for image parts. They are anonymous mmap()s (page-aligned, returned
 * to the system on free, inherited by a forked daemon: see
 * pyfs_image_keep_on_fork). A zero size gives a valid pointer.
 */
void *pyfs_buffer_alloc(uint64_t size);
void pyfs_buffer_free(void *buffer, uint64_t size);

/* The parts of an archive as read from disk; all buffers from pyfs_buffer_alloc. */
struct pyfs_image_parts {
	struct pyfs_inode *inodes;
	uint64_t inode_count;
	struct pyfs_dirent *dirents;
	uint64_t dirent_count;
	uint8_t *names;
	uint64_t names_size;
	uint8_t *payload;	    /* NULL: an image of the metadata only (see below) */
	uint64_t payload_size;	    /* bytes as stored */
	uint64_t payload_checksum;  /* from the archive's attributes */
	uint64_t metadata_checksum; /* from the archive's attributes */
	/* Version 2 (compressed blocks); all 0 and NULL for an uncompressed payload. */
	struct pyfs_block *blocks;
	uint64_t block_count;
	uint32_t block_size; /* raw bytes per block; 0: the payload is not compressed */
	uint64_t raw_size;   /* bytes of contents the blocks decode to */
};

/* Free every buffer of parts and zero it (for error paths before create). */
void pyfs_image_parts_free(struct pyfs_image_parts *parts);

/*
 * Check parts and wrap them in an image. On success the image owns the
 * buffers and *parts is zeroed; on failure parts is left to the caller and err
 * names the first problem ("invalid archive: ..."). Returns 0 or -EINVAL
 * (invalid archive), -ENOMEM. Linear in inodes and dirents.
 *
 * Checked, in order (the counts first: the checksum reads that many records):
 *  - counts: at least the root inode; inode and dirent counts fit in uint32;
 *  - the metadata checksum (inodes, dirents, names as stored);
 *  - every inode: type is directory, regular file or symlink; no mode bits
 *    beyond the type and 0777; mtime_nsec < 1e9; a file's bytes lie inside the
 *    payload, a symlink's target inside names (1..PYFS_SYMLINK_MAX bytes, no
 *    NUL); a directory's entries inside dirents; fields unused by the type are
 *    zero (a directory's data_offset, data_size, checksum; a non-directory's
 *    parent, first_entry, entry_count);
 *  - every dirent: name inside names, 1..PYFS_NAME_MAX bytes, no '/' or NUL,
 *    not "." or ".."; inode index in range; names strictly increasing inside a
 *    directory (so no duplicates);
 *  - the tree: the root is a directory and its own parent; every other inode
 *    is named at least once; every directory is named exactly once, by its
 *    parent, and is reachable from the root (no cycles, no directory hard
 *    links); directory entry ranges do not overlap; nlink matches;
 *  - the block index (compressed payloads, checked before the inodes, whose
 *    file ranges then lie inside raw_size): block_size a power of two in
 *    PYFS_BLOCK_SIZE_MIN..MAX; block_count = raw_size / block_size rounded
 *    up; each block starts where the previous one ends (the first at 0: no
 *    gaps, no overlaps) and the last ends at payload_size; codec raw with
 *    stored_size = the block's raw length, or zstd with 1 <= stored_size <
 *    that length.
 * The bytes of the blocks (checksums, zstd frame headers) are checked by
 * pyfs_image_verify_payload(). parts->payload may be NULL: the image then
 * serves the tree and metadata only (pyfs-pack --list, streamed --verify and
 * --extract), and reads of file contents fail with -EIO.
 */
int pyfs_image_create(struct pyfs_image_parts *parts, struct pyfs_image **out,
		      struct pyfs_err *err);

/*
 * The checks of pyfs_image_create() alone, on parts that stay the caller's:
 * the payload is not read (it may be NULL; payload_size bounds the files).
 * For a writer checking the metadata it wrote. Returns as pyfs_image_create().
 */
int pyfs_image_check_metadata(const struct pyfs_image_parts *parts, struct pyfs_err *err);

void pyfs_image_destroy(struct pyfs_image *image);

/*
 * Mark every buffer of image inherited by a child again (MADV_DOFORK), for a
 * daemon that forks after MPI: an MPI library may have marked the pages it
 * registered for RDMA as not inherited (MADV_DONTFORK).
 */
void pyfs_image_keep_on_fork(const struct pyfs_image *image);

/*
 * Check the payload against payload_checksum and, when compressed, every
 * block against its checksum and every zstd block's frame header against its
 * raw length (no decompression). 0 or -EIO (err names the block).
 */
int pyfs_image_verify_payload(const struct pyfs_image *image, struct pyfs_err *err);

/* Does image hold a compressed (version 2) payload? */
bool pyfs_image_compressed(const struct pyfs_image *image);

/*
 * Decompress every block of a compressed image into one raw payload with
 * threads threads (0: one per online CPU), then free the compressed one; the
 * image then serves like an uncompressed one. Any block that fails to
 * decompress fails the whole (-EIO, err names it; the image is unchanged).
 * No-op on an uncompressed image. 0, -EIO or -ENOMEM.
 */
int pyfs_image_inflate(struct pyfs_image *image, unsigned int threads, struct pyfs_err *err);

/*
 * Decompressed blocks of one reader thread: a few recent blocks and a reply
 * buffer of PYFS_CACHE_REPLY_MAX bytes for reads that span blocks. Created
 * once per thread before serving; reads through it never allocate.
 */
struct pyfs_block_cache;

#define PYFS_CACHE_BLOCKS    4u
#define PYFS_CACHE_REPLY_MAX (UINT32_C(1) << 20) /* FUSE's largest read (256 pages) */

/*
 * Before serving a compressed image from several threads: a cache of slots
 * recently decoded blocks shared by every reader (direct-mapped by block
 * number, one lock per slot), so that a block one thread decompressed is
 * copied, not decompressed again, by the next thread that needs it (readers
 * of neighbouring small files). 0 or -ENOMEM; a no-op when uncompressed.
 */
int pyfs_image_share_blocks(struct pyfs_image *image, unsigned int slots);

/* NULL without memory; for an uncompressed image it holds nothing (reads point into the payload).
 */
struct pyfs_block_cache *pyfs_block_cache_create(const struct pyfs_image *image);
void pyfs_block_cache_destroy(struct pyfs_block_cache *cache);

/*
 * pyfs_image_read() for any image: up to size bytes (at most
 * PYFS_CACHE_REPLY_MAX) of file index from offset. Points into the payload
 * (uncompressed), into a cached block, or into cache's reply buffer (valid
 * until the next read through cache). A block that fails to decompress
 * gives -EIO; the first such failure of an image is logged once.
 */
int pyfs_image_read_cached(const struct pyfs_image *image, struct pyfs_block_cache *cache,
			   uint32_t index, uint64_t offset, uint64_t size, const uint8_t **data,
			   size_t *len);

/*
 * After replying to a read through cache that had to decompress (a cold
 * region): decompress the blocks that follow it, as many as the read
 * covered (at most PYFS_DECODE_AHEAD_MAX), into the shared cache, so that
 * the next read of this file, or of the next files in the archive, finds
 * them decoded. Call it once the reply is sent, on the same thread; a no-op
 * after a read that decoded nothing, or without a shared cache.
 */
#define PYFS_DECODE_AHEAD_MAX 4u
void pyfs_image_decode_ahead(const struct pyfs_image *image, struct pyfs_block_cache *cache);

/*
 * The same for a file about to be read (just looked up): decompress the
 * blocks of its first bytes (at most PYFS_DECODE_AHEAD_MAX blocks) into the
 * shared cache. Call it after the reply, on the serving thread; a no-op for
 * anything but a non-empty regular file of a compressed image with a shared
 * cache.
 */
void pyfs_image_decode_file_start(const struct pyfs_image *image, struct pyfs_block_cache *cache,
				  uint32_t index, uint64_t bytes);

/* Blocks decompressed so far by reads (on demand) and ahead of them. */
void pyfs_image_decode_counts(const struct pyfs_image *image, uint64_t *on_demand, uint64_t *ahead);

/*
 * Decompress block of parts (a validated compressed image's parts, or the
 * parts pyfs_image_create() accepted) from stored bytes src into dst (raw
 * length of the block). 0 or -EIO. dctx is a ZSTD_DCtx (NULL: one is made).
 */
struct ZSTD_DCtx_s;
int pyfs_block_decode(const struct pyfs_image_parts *parts, uint64_t block, const uint8_t *src,
		      uint8_t *dst, struct ZSTD_DCtx_s *dctx);

/* Raw length of block of parts (block_size, the last one shorter). */
uint64_t pyfs_block_raw_length(const struct pyfs_image_parts *parts, uint64_t block);

/*
 * Check block's stored bytes at src against its checksum, and that a zstd
 * frame announces the block's raw length (nothing is decompressed). 0, or
 * -EIO with err naming the block.
 */
int pyfs_block_check(const struct pyfs_image_parts *parts, uint64_t block, const uint8_t *src,
		     struct pyfs_err *err);

/* The parts of image (read-only), for streaming readers. */
const struct pyfs_image_parts *pyfs_image_parts(const struct pyfs_image *image);

/*
 * The path of index from the root (no leading '/', control bytes escaped,
 * a too-long path keeps its end behind ".../"), for messages.
 */
void pyfs_image_path(const struct pyfs_image *image, uint32_t index, char *buf, size_t size);

/*
 * Check every regular file and symlink against its own checksum; err names
 * the first bad path ("checksum mismatch in 'dir/file' ..."). 0 or -EIO.
 */
int pyfs_image_verify_files(const struct pyfs_image *image, struct pyfs_err *err);

uint32_t pyfs_image_inode_count(const struct pyfs_image *image);

/* The record of inode index, or NULL when index is out of range. */
const struct pyfs_inode *pyfs_image_inode(const struct pyfs_image *image, uint32_t index);

/*
 * Fill st from the archive: mode, size, nlink, mtime (ns; atime and ctime
 * equal it), st_ino = index + 1, blocks (size / 512 rounded up), st_blksize
 * 4096; directories have size 4096. uid/gid are left 0 for the caller.
 * Returns 0 or -ENOENT for an out-of-range index.
 */
int pyfs_image_stat(const struct pyfs_image *image, uint32_t index, struct stat *st);

/*
 * Find name (len bytes, not NUL-terminated) in directory dir by binary
 * search; "." is dir itself and ".." its parent. Returns 0 and *found, -ENOENT
 * (a plain miss, or dir out of range), -ENOTDIR, or -ENAMETOOLONG.
 */
int pyfs_image_lookup(const struct pyfs_image *image, uint32_t dir, const char *name, size_t len,
		      uint32_t *found);

/*
 * Resolve a '/'-separated path from the root without following symlinks
 * ("" and "/" are the root; empty components are skipped). Returns as
 * pyfs_image_lookup.
 */
int pyfs_image_resolve(const struct pyfs_image *image, const char *path, uint32_t *found);

/*
 * The pos-th entry (0-based, "." and ".." not included) of directory dir.
 * Returns 0, -ENOENT past the end, or -ENOTDIR. *name is not NUL-terminated.
 */
int pyfs_image_entry(const struct pyfs_image *image, uint32_t dir, uint64_t pos, const char **name,
		     size_t *len, uint32_t *index);

/* Number of entries of directory dir (0 for non-directories). */
uint64_t pyfs_image_entry_count(const struct pyfs_image *image, uint32_t dir);

/*
 * Up to size bytes of regular file index from offset: *data points into the
 * payload, *len is 0 at or past the end. Returns 0, -EISDIR, -EINVAL (not
 * a regular file, or index out of range), or -EIO when the image holds no
 * raw payload (compressed: see pyfs_image_read_cached; metadata only).
 */
int pyfs_image_read(const struct pyfs_image *image, uint32_t index, uint64_t offset, uint64_t size,
		    const uint8_t **data, size_t *len);

/* The target of symlink index (not NUL-terminated). 0 or -EINVAL. */
int pyfs_image_readlink(const struct pyfs_image *image, uint32_t index, const char **target,
			size_t *len);

/* What the archive holds, for statfs, --verbose and the packer's summary. */
struct pyfs_image_totals {
	uint64_t inodes;
	uint64_t directories;
	uint64_t files;
	uint64_t symlinks;
	uint64_t file_bytes;	/* sum of file sizes, each inode once */
	uint64_t payload_bytes; /* stored: file_bytes less what dedup saved (and compression) */
	uint64_t raw_bytes;	/* contents before compression (payload_bytes when none) */
	uint64_t blocks;	/* compressed blocks (0: not compressed) */
	uint64_t depth;		/* levels of directories below the root (0: none) */
};

void pyfs_image_get_totals(const struct pyfs_image *image, struct pyfs_image_totals *totals);

/* The payload, for tools that compare or hash it as a whole. */
const uint8_t *pyfs_image_payload(const struct pyfs_image *image, uint64_t *size);

/* XXH3-64 of inodes, dirents and names as stored: the metadata checksum (version 1). */
uint64_t pyfs_metadata_checksum(const struct pyfs_inode *inodes, uint64_t inode_count,
				const struct pyfs_dirent *dirents, uint64_t dirent_count,
				const uint8_t *names, uint64_t names_size);

/*
 * The payload checksum (XXH3-64, seed 0) computed piece by piece, in order:
 * update with consecutive pieces gives the digest of their concatenation.
 * For a pull that checks the bytes that have arrived while the rest still
 * arrives. create returns NULL without memory.
 */
struct pyfs_checksum;

struct pyfs_checksum *pyfs_checksum_create(void);
void pyfs_checksum_update(struct pyfs_checksum *sum, const void *data, uint64_t size);
uint64_t pyfs_checksum_digest(const struct pyfs_checksum *sum);
void pyfs_checksum_destroy(struct pyfs_checksum *sum);

/*
 * pyfs_image_verify_payload() with the checksum of the payload already
 * computed by the caller (e.g. with pyfs_checksum_* while it arrived).
 */
int pyfs_image_verify_payload_digest(const struct pyfs_image *image, uint64_t computed,
				     struct pyfs_err *err);

/* The metadata checksum of parts: pyfs_metadata_checksum(), then the blocks if any. */
uint64_t pyfs_parts_metadata_checksum(const struct pyfs_image_parts *parts);

#endif /* PYFS_IMAGE_H */
