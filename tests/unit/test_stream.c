/*
 * test_stream.c - reading an archive's contents from its file in bounded
 * pieces: every file of an uncompressed and a compressed archive streams to
 * its bytes, both verify, and a flipped byte in the file is named.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "archive_io.h"
#include "helper_tree.h"
#include "stream.h"

static struct pyfs_err err;

/* The compressible tree written to name (compressed in 4 KiB blocks when z); raw parts in *raw. */
static const char *write_tree(const char *name, bool z, struct pyfs_image_parts *raw)
{
	struct helper_tree *tree = helper_compressible_tree();
	struct pyfs_image_parts parts;
	const char *path = helper_temp_path(name);

	cr_assert_eq(helper_tree_build(tree, raw), 0);
	cr_assert_eq(helper_tree_build(tree, &parts), 0);
	helper_tree_free(tree);
	if (z)
		helper_parts_compress(&parts, 4096);
	cr_assert_eq(helper_write_archive(path, &parts, &err), 0, "%s", err.msg);
	pyfs_image_parts_free(&parts);
	return path;
}

struct opened {
	struct pyfs_archive *archive;
	struct pyfs_image *image;
	struct pyfs_stream *stream;
};

static void open_stream(const char *path, struct opened *o)
{
	struct pyfs_image_parts parts;

	cr_assert_eq(pyfs_archive_open(path, &o->archive, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_archive_read_metadata(o->archive, &parts, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_create(&parts, &o->image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_stream_open(o->archive, o->image, &o->stream, &err), 0, "%s", err.msg);
}

static void close_stream(struct opened *o)
{
	pyfs_stream_close(o->stream);
	pyfs_image_destroy(o->image);
	pyfs_archive_close(o->archive);
}

static void streams_every_file(bool z)
{
	struct pyfs_image_parts raw;
	const char *path = write_tree(z ? "z.h5" : "raw.h5", z, &raw);
	struct opened o;

	open_stream(path, &o);
	cr_assert_eq(pyfs_image_compressed(o.image), z);
	cr_assert_eq(pyfs_stream_verify_payload(o.stream, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_stream_verify_files(o.stream, &err), 0, "%s", err.msg);
	/* Backwards, in pieces of 777 bytes: every window refill lands right. */
	for (uint32_t i = pyfs_image_inode_count(o.image); i-- > 0;) {
		const struct pyfs_inode *ino = pyfs_image_inode(o.image, i);

		if (!S_ISREG(ino->mode))
			continue;
		for (uint64_t pos = 0; pos < ino->data_size;) {
			const uint8_t *data;
			size_t len;

			cr_assert_eq(pyfs_stream_read(o.stream, i, pos, 777, &data, &len, &err), 0,
				     "%s", err.msg);
			cr_assert(len > 0 && len <= 777);
			cr_assert_eq(
			    memcmp(data, raw.payload + raw.inodes[i].data_offset + pos, len), 0,
			    "inode %u at %lu", i, (unsigned long)pos);
			pos += len;
		}
	}
	close_stream(&o);
	pyfs_image_parts_free(&raw);
}

Test(stream, uncompressed_archive_streams_every_file)
{
	streams_every_file(false);
}

Test(stream, compressed_archive_streams_every_file)
{
	streams_every_file(true);
}

/* Flip the byte at offset of the payload in the file at path. */
static void flip_payload_byte(const char *path, uint64_t offset)
{
	struct pyfs_archive *a = NULL;
	uint64_t at;
	uint8_t byte;
	int fd;

	cr_assert_eq(pyfs_archive_open(path, &a, &err), 0, "%s", err.msg);
	at = pyfs_archive_payload_file_offset(a) + offset;
	pyfs_archive_close(a);
	fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &byte, 1, (off_t)at), 1);
	byte ^= 0x40;
	cr_assert_eq(pwrite(fd, &byte, 1, (off_t)at), 1);
	close(fd);
}

Test(stream, flipped_byte_of_a_compressed_block_is_named)
{
	struct pyfs_image_parts raw;
	const char *path = write_tree("zflip.h5", true, &raw);
	struct opened o;
	uint64_t off;

	open_stream(path, &o);
	off = pyfs_image_parts(o.image)->blocks[3].offset + 2;
	close_stream(&o);
	flip_payload_byte(path, off);
	open_stream(path, &o);
	cr_assert_eq(pyfs_stream_verify_payload(o.stream, &err), -EIO);
	cr_assert(strstr(err.msg, "block 3 checksum mismatch"), "%s", err.msg);
	/* Reading through the bad block is refused too, before decompressing. */
	cr_assert_eq(pyfs_stream_verify_files(o.stream, &err), -EIO);
	cr_assert(strstr(err.msg, "block 3 checksum mismatch"), "%s", err.msg);
	close_stream(&o);
	pyfs_image_parts_free(&raw);
}

Test(stream, flipped_byte_of_a_raw_payload_names_the_file)
{
	struct pyfs_image_parts raw;
	const char *path = write_tree("rawflip.h5", false, &raw);
	uint32_t big = UINT32_MAX;
	struct opened o;

	open_stream(path, &o);
	cr_assert_eq(pyfs_image_resolve(o.image, "big.txt", &big), 0);
	close_stream(&o);
	flip_payload_byte(path, raw.inodes[big].data_offset + 100);
	open_stream(path, &o);
	cr_assert_eq(pyfs_stream_verify_payload(o.stream, &err), -EIO);
	cr_assert(strstr(err.msg, "payload checksum mismatch"), "%s", err.msg);
	cr_assert_eq(pyfs_stream_verify_files(o.stream, &err), -EIO);
	cr_assert(strstr(err.msg, "checksum mismatch in 'big.txt'"), "%s", err.msg);
	close_stream(&o);
	pyfs_image_parts_free(&raw);
}
