/*
 * stream.c - an archive's contents read from its file through one bounded
 * window (see stream.h): raw windows for an uncompressed payload, windows of
 * whole blocks, checked and decompressed, for a compressed one.
 */
#include "stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

struct pyfs_stream {
	struct pyfs_archive *archive;
	const struct pyfs_image *image;
	const struct pyfs_image_parts *parts;
	uint8_t *window; /* raw bytes [start, start + len) */
	uint64_t start;
	uint64_t len;
	uint8_t *stored; /* stored bytes of the window's blocks (compressed only) */
	ZSTD_DCtx *dctx;
};

int pyfs_stream_open(struct pyfs_archive *archive, const struct pyfs_image *image,
		     struct pyfs_stream **out, struct pyfs_err *err)
{
	struct pyfs_stream *s = calloc(1, sizeof(*s));

	if (!s)
		goto out_nomem;
	s->archive = archive;
	s->image = image;
	s->parts = pyfs_image_parts(image);
	s->window = pyfs_buffer_alloc(PYFS_STREAM_WINDOW);
	if (!s->window)
		goto out_nomem;
	if (s->parts->block_size) {
		s->stored = pyfs_buffer_alloc(PYFS_STREAM_WINDOW);
		s->dctx = ZSTD_createDCtx();
		if (!s->stored || !s->dctx)
			goto out_nomem;
	}
	*out = s;
	return 0;

out_nomem:
	pyfs_stream_close(s);
	pyfs_err_set(err, "cannot read the archive's contents: %s", strerror(ENOMEM));
	return -ENOMEM;
}

void pyfs_stream_close(struct pyfs_stream *stream)
{
	if (!stream)
		return;
	pyfs_buffer_free(stream->window, PYFS_STREAM_WINDOW);
	pyfs_buffer_free(stream->stored, PYFS_STREAM_WINDOW);
	ZSTD_freeDCtx(stream->dctx);
	free(stream);
}

/* The window starting at raw offset at (a block boundary when compressed). */
static int stream_fill(struct pyfs_stream *s, uint64_t at, struct pyfs_err *err)
{
	const struct pyfs_image_parts *p = s->parts;
	uint64_t first, count, stored_start, stored_len;
	int rc;

	s->len = 0;
	if (!p->block_size) {
		s->start = at;
		s->len = p->payload_size - at < PYFS_STREAM_WINDOW ? p->payload_size - at
								   : PYFS_STREAM_WINDOW;
		rc = pyfs_archive_read_payload(s->archive, s->window, at, s->len, err);
		if (rc < 0)
			s->len = 0;
		return rc;
	}
	first = at / p->block_size;
	count = PYFS_STREAM_WINDOW / p->block_size;
	if (count > p->block_count - first)
		count = p->block_count - first;
	stored_start = p->blocks[first].offset;
	stored_len = p->blocks[first + count - 1].offset +
		     p->blocks[first + count - 1].stored_size - stored_start;
	/* Each stored block is at most its raw length: the stored bytes fit the window. */
	rc = pyfs_archive_read_payload(s->archive, s->stored, stored_start, stored_len, err);
	if (rc < 0)
		return rc;
	for (uint64_t b = first; b < first + count; b++) {
		const uint8_t *src = s->stored + (p->blocks[b].offset - stored_start);
		uint8_t *dst = s->window + (b - first) * p->block_size;

		rc = pyfs_block_check(p, b, src, err);
		if (rc < 0)
			return rc;
		if (pyfs_block_decode(p, b, src, dst, s->dctx) < 0) {
			pyfs_err_set(err, "cannot decompress block %" PRIu64 " of the payload", b);
			return -EIO;
		}
	}
	s->start = first * p->block_size;
	s->len = (first + count) * p->block_size < p->raw_size ? count * p->block_size
							       : p->raw_size - s->start;
	return 0;
}

int pyfs_stream_read(struct pyfs_stream *stream, uint32_t index, uint64_t offset, uint64_t size,
		     const uint8_t **data, size_t *len, struct pyfs_err *err)
{
	const struct pyfs_inode *ino = pyfs_image_inode(stream->image, index);
	uint64_t avail, at;
	int rc;

	if (!ino || (ino->mode & S_IFMT) != S_IFREG) {
		pyfs_err_set(err, "inode %" PRIu32 " is not a regular file", index);
		return -EINVAL;
	}
	*data = stream->window;
	*len = 0;
	avail = offset < ino->data_size ? ino->data_size - offset : 0;
	if (size > avail)
		size = avail;
	if (size == 0)
		return 0;
	at = ino->data_offset + offset;
	if (at < stream->start || at >= stream->start + stream->len) {
		rc = stream_fill(stream, at, err);
		if (rc < 0)
			return rc;
	}
	avail = stream->start + stream->len - at;
	*data = stream->window + (at - stream->start);
	*len = (size_t)(size < avail ? size : avail);
	return 0;
}

int pyfs_stream_verify_payload(struct pyfs_stream *stream, struct pyfs_err *err)
{
	const struct pyfs_image_parts *p = stream->parts;
	XXH3_state_t *state = XXH3_createState();
	uint64_t done = 0, b = 0, computed;
	int rc = 0;

	if (!state) {
		pyfs_err_set(err, "cannot verify the payload: %s", strerror(ENOMEM));
		return -ENOMEM;
	}
	XXH3_64bits_reset(state);
	while (rc == 0 && done < p->payload_size) {
		uint64_t len = p->payload_size - done < PYFS_STREAM_WINDOW ? p->payload_size - done
									   : PYFS_STREAM_WINDOW;
		uint64_t end = b;

		if (p->block_size) {
			/* Whole blocks only, so each is checked in one piece. */
			for (end = b; end < p->block_count &&
				      p->blocks[end].offset + p->blocks[end].stored_size - done <=
					  PYFS_STREAM_WINDOW;
			     end++)
				;
			len = p->blocks[end - 1].offset + p->blocks[end - 1].stored_size - done;
		}
		rc = pyfs_archive_read_payload(stream->archive,
					       stream->stored ? stream->stored : stream->window,
					       done, len, err);
		if (rc < 0)
			break;
		XXH3_64bits_update(state, stream->stored ? stream->stored : stream->window, len);
		for (; p->block_size && rc == 0 && b < end; b++)
			rc = pyfs_block_check(p, b, stream->stored + (p->blocks[b].offset - done),
					      err);
		done += len;
	}
	computed = XXH3_64bits_digest(state);
	XXH3_freeState(state);
	/* The window now holds stored bytes, not contents. */
	stream->len = 0;
	if (rc == 0 && computed != p->payload_checksum) {
		pyfs_err_set(err,
			     "payload checksum mismatch (stored 0x%016" PRIx64
			     ", computed 0x%016" PRIx64 ")",
			     p->payload_checksum, computed);
		rc = -EIO;
	}
	return rc;
}

/* Regular files by payload offset, then size, then index (qsort_r over the parts). */
static int stream_by_offset(const void *a, const void *b, void *arg)
{
	const struct pyfs_image_parts *parts = arg;
	const struct pyfs_inode *x = &parts->inodes[*(const uint32_t *)a];
	const struct pyfs_inode *y = &parts->inodes[*(const uint32_t *)b];

	if (x->data_offset != y->data_offset)
		return x->data_offset < y->data_offset ? -1 : 1;
	if (x->data_size != y->data_size)
		return x->data_size < y->data_size ? -1 : 1;
	return (*(const uint32_t *)a > *(const uint32_t *)b) -
	       (*(const uint32_t *)a < *(const uint32_t *)b);
}

/* XXH3-64 of file index through the stream. */
static int stream_hash_file(struct pyfs_stream *s, XXH3_state_t *state, uint32_t index,
			    uint64_t size, uint64_t *out, struct pyfs_err *err)
{
	uint64_t pos = 0;

	XXH3_64bits_reset(state);
	while (pos < size) {
		const uint8_t *data;
		size_t len;
		int rc = pyfs_stream_read(s, index, pos, size - pos, &data, &len, err);

		if (rc < 0)
			return rc;
		if (len == 0) {
			pyfs_err_set(err, "inode %" PRIu32 ": contents end early", index);
			return -EIO;
		}
		XXH3_64bits_update(state, data, len);
		pos += len;
	}
	*out = XXH3_64bits_digest(state);
	return 0;
}

int pyfs_stream_verify_files(struct pyfs_stream *stream, struct pyfs_err *err)
{
	const struct pyfs_image_parts *p = stream->parts;
	char path[400];
	uint32_t *files = NULL, count = 0;
	const struct pyfs_inode *prev = NULL;
	XXH3_state_t *state = XXH3_createState();
	int rc = 0;

	files = malloc((p->inode_count ? p->inode_count : 1) * sizeof(*files));
	if (!files || !state) {
		pyfs_err_set(err, "cannot verify the files: %s", strerror(ENOMEM));
		rc = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < p->inode_count && rc == 0; i++) {
		const struct pyfs_inode *ino = &p->inodes[i];
		uint64_t computed;

		if ((ino->mode & S_IFMT) == S_IFREG) {
			files[count++] = i;
		} else if ((ino->mode & S_IFMT) == S_IFLNK) {
			computed = XXH3_64bits(p->names + ino->data_offset, ino->data_size);
			if (computed != ino->checksum) {
				pyfs_image_path(stream->image, i, path, sizeof(path));
				pyfs_err_set(err,
					     "checksum mismatch in '%s' (stored 0x%016" PRIx64
					     ", computed 0x%016" PRIx64 ")",
					     path, ino->checksum, computed);
				rc = -EIO;
			}
		}
	}
	qsort_r(files, count, sizeof(*files), stream_by_offset, (void *)p);
	for (uint32_t k = 0; k < count && rc == 0; k++) {
		const struct pyfs_inode *ino = &p->inodes[files[k]];
		uint64_t computed;

		/* A duplicate of the file just proven (same bytes, same checksum). */
		if (prev && prev->data_offset == ino->data_offset &&
		    prev->data_size == ino->data_size && prev->checksum == ino->checksum)
			continue;
		rc = stream_hash_file(stream, state, files[k], ino->data_size, &computed, err);
		if (rc == 0 && computed != ino->checksum) {
			pyfs_image_path(stream->image, files[k], path, sizeof(path));
			pyfs_err_set(err,
				     "checksum mismatch in '%s' (stored 0x%016" PRIx64
				     ", computed 0x%016" PRIx64 ")",
				     path, ino->checksum, computed);
			rc = -EIO;
		}
		prev = ino;
	}
out:
	XXH3_freeState(state);
	free(files);
	return rc;
}
