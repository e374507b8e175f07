/*
 * pyfs_format.h - the pyfs archive format, defined once for the packer and the daemon.
 *
 * A pyfs archive is a plain HDF5 file (readable by h5ls -r and h5py) holding a
 * whole directory tree in four datasets under the root group:
 *
 *   /                       attributes: format = "pyfs", version = 1 or 2,
 *   |                                   payload_checksum, metadata_checksum;
 *   |                                   version 2 also block_size, raw_size
 *   +-- inodes    [N]       compound, one pyfs_inode record per inode;
 *   |                       index 0 is the root directory
 *   +-- dirents   [M]       compound, one pyfs_dirent record per name; the entries
 *   |                       of a directory are contiguous and sorted by name
 *   +-- names     [K]       uint8, every name and symlink target, concatenated
 *   +-- payload   [P]       uint8, every distinct file content, concatenated
 *   |                       (version 2: as compressed blocks); contiguous
 *   |                       layout, first byte on a 1 MiB boundary
 *   +-- blocks    [B]       version 2 only: compound, one pyfs_block per block
 *
 *     inodes[d] (dir)            dirents[first_entry .. first_entry+entry_count)
 *     +----------------+         +-------------+-------------+-----+
 *     | first_entry  --+-------->| name, inode | name, inode | ... |
 *     | entry_count    |         +------+------+-------------+-----+
 *     +----------------+                |
 *     inodes[f] (file)                  v                names
 *     | data_offset  --+--> payload     +--------------> "numpy" ...
 *     | data_size      |    [off, off+size)
 *     inodes[l] (symlink): data_offset/data_size index the names blob
 *
 * Every integer is little-endian on disk. All sizes and offsets are 64-bit, so
 * files over 4 GiB and archives over 2 GiB are ordinary. The HDF5 file is in
 * the 1.8 format (superblock version 2: every piece of HDF5 metadata carries
 * a checksum); readers refuse older superblocks, whose metadata has none. Identical contents are
 * stored once: hard links share an inode, duplicate files share payload bytes.
 *
 * Version 2 (pyfs-pack -z) compresses the contents. File offsets and sizes then
 * address the raw contents: raw_size bytes, the concatenation version 1 would
 * store, cut into blocks of block_size bytes (the last one shorter). Block i
 * holds raw bytes [i * block_size, + its raw length) and is stored as
 * payload[offset, offset + stored_size): zstd-compressed (one zstd frame with
 * its content size), or raw when compression would not shrink it. The stored
 * blocks tile the payload in order, without gaps or overlaps:
 *
 *     raw contents  |  block 0  |  block 1  |  block 2  | b3 |   (files across them)
 *     payload       |b0 zstd|b1 raw     |b2 zstd|b3|
 *
 * Small files share blocks. Version 1 archives (no compression) are written
 * whenever -z is not given, and read by every version.
 *
 * Checksums are XXH3-64 (seed 0):
 *   - inode.checksum     over a regular file's contents or a symlink's target
 *                        (always the raw contents);
 *   - payload_checksum   over the whole payload dataset as stored;
 *   - block.checksum     over a block's stored bytes, so a reader checks what
 *                        it moved without decompressing;
 *   - metadata_checksum  over the raw little-endian bytes of inodes, then
 *                        dirents, then names, then (version 2) blocks,
 *                        exactly as stored.
 *
 * Archive bytes are untrusted: a reader must run pyfs_image_create() (image.h)
 * before it serves anything. The rules it enforces are listed there and in
 * docs/FORMAT.md; this header is the truth when the two disagree.
 */
#ifndef PYFS_FORMAT_H
#define PYFS_FORMAT_H

#include <stdint.h>

#define PYFS_FORMAT_NAME	   "pyfs"
#define PYFS_FORMAT_VERSION	   1u /* uncompressed payload */
#define PYFS_FORMAT_VERSION_BLOCKS 2u /* payload of compressed blocks (-z) */

/* Attributes of the root group. */
#define PYFS_ATTR_FORMAT	    "format"		/* fixed-length string "pyfs" */
#define PYFS_ATTR_VERSION	    "version"		/* uint32 */
#define PYFS_ATTR_PAYLOAD_CHECKSUM  "payload_checksum"	/* uint64 */
#define PYFS_ATTR_METADATA_CHECKSUM "metadata_checksum" /* uint64 */
#define PYFS_ATTR_BLOCK_SIZE	    "block_size"	/* uint32, version 2 */
#define PYFS_ATTR_RAW_SIZE	    "raw_size"		/* uint64, version 2 */

/*
 * Optional attribute of the root group (no version change: readers that do
 * not know it ignore it): where the tree came from, as a 1-D array of
 * fixed-length, NUL-terminated strings "KEY=VALUE". Keys (unknown keys are
 * ignored, a key may repeat):
 *   source_path=ABS  the absolute path of the environment packed (it
 *                    is mounted over its own path there)
 *   pth_dir=REL      a directory, relative to the archive root, that a .pth
 *                    file at the root adds to sys.path (for PYTHONPATH use)
 * Untrusted like the rest: at most PYFS_ENV_ITEMS_MAX strings of at most
 * PYFS_ENV_ITEM_MAX bytes each.
 */
#define PYFS_ATTR_ENVIRONMENT "environment"
#define PYFS_ENV_SOURCE_PATH  "source_path"
#define PYFS_ENV_PTH_DIR      "pth_dir"
#define PYFS_ENV_ITEMS_MAX    4096u
#define PYFS_ENV_ITEM_MAX     4200u

/* Datasets of the root group. */
#define PYFS_DSET_INODES  "inodes"
#define PYFS_DSET_DIRENTS "dirents"
#define PYFS_DSET_NAMES	  "names"
#define PYFS_DSET_PAYLOAD "payload"
#define PYFS_DSET_BLOCKS  "blocks" /* version 2 */

/*
 * Raw bytes per block of a version 2 payload: a power of two in this range.
 * The packer's default was chosen by measurement (docs/PERFORMANCE.md).
 */
#define PYFS_BLOCK_SIZE_MIN	(UINT32_C(1) << 12)
#define PYFS_BLOCK_SIZE_MAX	(UINT32_C(1) << 20)
#define PYFS_BLOCK_SIZE_DEFAULT (UINT32_C(1) << 16)

/* How a block is stored (pyfs_block.codec). */
#define PYFS_CODEC_RAW	0u /* stored_size is the block's raw length */
#define PYFS_CODEC_ZSTD 1u /* one zstd frame, shorter than the raw length */

/* The payload starts on this boundary, to line up with file-system stripes. */
#define PYFS_PAYLOAD_ALIGNMENT (UINT64_C(1) << 20)

/* Limits. Counts are 32-bit indexes; byte sizes and offsets are 64-bit. */
#define PYFS_NAME_MAX	 255u	    /* bytes in one name (no '/', no NUL) */
#define PYFS_SYMLINK_MAX 4095u	    /* bytes in one symlink target (no NUL) */
#define PYFS_INODES_MAX	 UINT32_MAX /* inode indexes fit in uint32 */
#define PYFS_DIRENTS_MAX UINT32_MAX /* dirent indexes fit in uint32 */
#define PYFS_ROOT_INDEX	 0u

/* Permission bits kept; setuid, setgid and sticky are dropped by the packer. */
#define PYFS_MODE_PERM_MASK 0777u

/*
 * One inode. The meaning of data_offset/data_size depends on the type:
 *   regular file: bytes [data_offset, data_offset + data_size) of payload
 *   symlink:      bytes [data_offset, data_offset + data_size) of names
 *   directory:    both 0; its entries are dirents[first_entry, + entry_count)
 * nlink is the number of names of a file (hard links), or 2 + the number of
 * subdirectories of a directory. parent is the index of the directory holding a
 * directory (the root is its own parent); 0 for other types.
 */
struct pyfs_inode {
	uint64_t data_offset;
	uint64_t data_size;
	uint64_t checksum;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t mode; /* S_IFREG, S_IFDIR or S_IFLNK | permission bits */
	uint32_t nlink;
	uint32_t parent;
	uint32_t first_entry;
	uint32_t entry_count;
};

/* One name in a directory: names[name_offset, + name_length) -> inodes[inode]. */
struct pyfs_dirent {
	uint64_t name_offset;
	uint32_t name_length;
	uint32_t inode;
};

/*
 * One block of a version 2 payload: payload[offset, offset + stored_size),
 * codec PYFS_CODEC_*, checksum = XXH3-64 of those stored bytes.
 */
struct pyfs_block {
	uint64_t offset;
	uint64_t checksum;
	uint32_t stored_size;
	uint32_t codec;
};

_Static_assert(sizeof(struct pyfs_block) == 24,
	       "struct pyfs_block is read from disk as is: it must have no padding");
_Static_assert(sizeof(struct pyfs_inode) == 56,
	       "struct pyfs_inode is read from disk as is: it must have no padding");
_Static_assert(sizeof(struct pyfs_dirent) == 16,
	       "struct pyfs_dirent is read from disk as is: it must have no padding");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "records are hashed as stored in memory, which must be little-endian like the disk");

#endif /* PYFS_FORMAT_H */
