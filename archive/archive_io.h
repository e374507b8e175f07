/*
 * archive_io.h - reading and writing pyfs archives (HDF5 files) serially.
 *
 * The reader opens an archive, refuses anything that is not a pyfs archive of
 * a known version, and reads its parts into pyfs_buffer_alloc() buffers. The
 * daemon's MPI pull reads the metadata with it on rank 0 and has its reader
 * nodes fetch the payload themselves at pyfs_archive_payload_file_offset();
 * tools load everything with pyfs_archive_load().
 *
 * The writer creates the four datasets of pyfs_format.h. The payload dataset
 * is allocated at creation (contiguous, 1 MiB-aligned, never filled), so the
 * packer can copy file contents straight into the file at
 * pyfs_writer_payload_file_offset() with its own descriptor while the writer
 * keeps the metadata; pyfs_writer_finish() then writes metadata and checksums.
 *
 * Every function returns 0 or a negative errno and describes failures in err;
 * HDF5's own error stack is never printed.
 */
#ifndef PYFS_ARCHIVE_IO_H
#define PYFS_ARCHIVE_IO_H

#include <stdint.h>

#include "image.h"
#include "log.h"

struct pyfs_archive;

/*
 * Open path read-only and check the format name and version. Returns 0,
 * -ENOENT/-EACCES (cannot open), -EINVAL (not a pyfs archive, HDF5 metadata
 * without checksums (superblock before version 2), or a version this build
 * does not read: err says which).
 */
int pyfs_archive_open(const char *path, struct pyfs_archive **out, struct pyfs_err *err);
void pyfs_archive_close(struct pyfs_archive *archive);

/*
 * Size of the payload dataset in bytes, and its byte offset in the file (checked
 * to lie inside the file; 0 when the payload is empty).
 */
uint64_t pyfs_archive_payload_size(const struct pyfs_archive *archive);
uint64_t pyfs_archive_payload_file_offset(const struct pyfs_archive *archive);

/*
 * Read inodes, dirents, names, the block index of a compressed payload and
 * the checksums into parts (payload left NULL with payload_size set).
 * Dataset shapes and types are checked.
 */
int pyfs_archive_read_metadata(struct pyfs_archive *archive, struct pyfs_image_parts *parts,
			       struct pyfs_err *err);

/* Read payload bytes [offset, offset + size) into dst. */
int pyfs_archive_read_payload(struct pyfs_archive *archive, uint8_t *dst, uint64_t offset,
			      uint64_t size, struct pyfs_err *err);

/*
 * Open, read everything and create a validated image (structure and
 * metadata checksum; payload checksums are left to pyfs_image_verify_*).
 */
int pyfs_archive_load(const char *path, struct pyfs_image **out, struct pyfs_err *err);

struct pyfs_writer;

/* Sizes of the archive to write, known before any content is copied. */
struct pyfs_writer_shape {
	uint64_t inode_count;
	uint64_t dirent_count;
	uint64_t names_size;
	uint64_t payload_size; /* bytes as stored */
	/* A compressed (version 2) payload: block_size != 0; see pyfs_format.h. */
	uint32_t block_size;
	uint64_t block_count;
	uint64_t raw_size;
};

/* Create path (truncating it) with datasets of the given shape. */
int pyfs_writer_create(const char *path, const struct pyfs_writer_shape *shape,
		       struct pyfs_writer **out, struct pyfs_err *err);

/*
 * Where payload byte 0 lives in the file: a multiple of PYFS_PAYLOAD_ALIGNMENT,
 * valid from creation on (0 when the payload is empty). The caller writes the
 * payload there through its own descriptor before pyfs_writer_finish().
 */
uint64_t pyfs_writer_payload_file_offset(const struct pyfs_writer *writer);

/*
 * Write the metadata (arrays of the shape's sizes), the format attributes,
 * the payload checksum given and the metadata checksum computed here, and
 * close the file. The writer is freed whatever the result.
 */
int pyfs_writer_finish(struct pyfs_writer *writer, const struct pyfs_inode *inodes,
		       const struct pyfs_dirent *dirents, const uint8_t *names,
		       uint64_t payload_checksum, struct pyfs_err *err);

/*
 * The optional "environment" attribute (pyfs_format.h): count "KEY=VALUE"
 * strings. Set writes it at once (before pyfs_writer_finish); nothing is
 * written when count is 0. Read returns them concatenated, each
 * NUL-terminated, in one malloc'd *items (free it), or -ENOENT (err
 * untouched) when the archive has none.
 */
int pyfs_writer_set_environment(struct pyfs_writer *writer, const char *const *items, size_t count,
				struct pyfs_err *err);
int pyfs_archive_read_environment(struct pyfs_archive *archive, char **items, size_t *count,
				  struct pyfs_err *err);

/*
 * The block index of a compressed payload (shape.block_count records), kept
 * by pointer until pyfs_writer_finish(), which writes it and covers it by the
 * metadata checksum. Required when shape.block_size is set.
 */
void pyfs_writer_set_blocks(struct pyfs_writer *writer, const struct pyfs_block *blocks);

/* Close without finishing (the caller removes the file). */
void pyfs_writer_abort(struct pyfs_writer *writer);

#endif /* PYFS_ARCHIVE_IO_H */
