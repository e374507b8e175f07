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
	uint8_t *payload;
	uint64_t payload_size;
	uint64_t payload_checksum;  /* from the archive's attributes */
	uint64_t metadata_checksum; /* from the archive's attributes */
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
 *    links); directory entry ranges do not overlap; nlink matches.
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

/* Check the payload against payload_checksum. 0 or -EIO (err says so). */
int pyfs_image_verify_payload(const struct pyfs_image *image, struct pyfs_err *err);

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
 * payload, *len is 0 at or past the end. Returns 0, -EISDIR, or -EINVAL (not
 * a regular file, or index out of range).
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
	uint64_t payload_bytes; /* stored: file_bytes less what dedup saved */
	uint64_t depth;		/* levels of directories below the root (0: none) */
};

void pyfs_image_get_totals(const struct pyfs_image *image, struct pyfs_image_totals *totals);

/* The payload, for tools that compare or hash it as a whole. */
const uint8_t *pyfs_image_payload(const struct pyfs_image *image, uint64_t *size);

/* XXH3-64 of inodes, dirents and names as stored: the metadata checksum. */
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

#endif /* PYFS_IMAGE_H */
