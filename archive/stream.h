/*
 * stream.h - reading an archive's contents from its file in bounded pieces.
 *
 * The packer's --verify and --extract work on archives of any size with a
 * few MiB beyond the metadata: the image holds the metadata only (payload
 * NULL), and a stream serves file contents through one window of at most
 * PYFS_STREAM_WINDOW raw bytes, read from the file with pyfs_archive_read_payload()
 * and, for a compressed payload, checked block by block against the block
 * checksums and decompressed. Reads in payload order (files sorted by
 * offset, as the packer lays them out) read every stored byte once.
 */
#ifndef PYFS_STREAM_H
#define PYFS_STREAM_H

#include <stdint.h>

#include "archive_io.h"
#include "image.h"
#include "log.h"

/* Raw bytes held at once (and as much again for the stored bytes of a compressed window). */
#define PYFS_STREAM_WINDOW (UINT64_C(8) << 20)

struct pyfs_stream;

/*
 * A stream over the contents of archive, whose metadata image describes
 * (validated by pyfs_image_create() from pyfs_archive_read_metadata()). Both
 * must outlive the stream. 0 or -ENOMEM.
 */
int pyfs_stream_open(struct pyfs_archive *archive, const struct pyfs_image *image,
		     struct pyfs_stream **out, struct pyfs_err *err);
void pyfs_stream_close(struct pyfs_stream *stream);

/*
 * Up to size bytes of regular file index from offset: *data points into the
 * window (valid until the next call), *len is at least 1 unless offset is at
 * or past the end of the file. Returns 0, -EINVAL (not a regular file), -EIO
 * (read failed, a block's checksum does not match, or it does not
 * decompress: err says which) or -ENOMEM.
 */
int pyfs_stream_read(struct pyfs_stream *stream, uint32_t index, uint64_t offset, uint64_t size,
		     const uint8_t **data, size_t *len, struct pyfs_err *err);

/*
 * pyfs_image_verify_payload() without holding the payload: every stored
 * byte read once, in pieces. 0 or -EIO.
 */
int pyfs_stream_verify_payload(struct pyfs_stream *stream, struct pyfs_err *err);

/*
 * pyfs_image_verify_files() through the stream: every regular file (in
 * payload order, duplicates hashed once) and symlink against its checksum;
 * err names the first bad path. 0, -EIO or -ENOMEM.
 */
int pyfs_stream_verify_files(struct pyfs_stream *stream, struct pyfs_err *err);

#endif /* PYFS_STREAM_H */
