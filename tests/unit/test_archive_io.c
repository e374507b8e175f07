/*
 * test_archive_io.c - archives on disk: the writer's layout (aligned payload,
 * no timestamps, byte-identical output), round trips through the reader, and
 * the reader's refusal of files that are not pyfs archives of this version.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "archive_io.h"
#include "helper_tree.h"

static struct pyfs_err err;

/* The sample tree written to a fresh archive; its path. */
static const char *write_sample(const char *name)
{
	struct pyfs_image_parts parts;
	const char *path = helper_temp_path(name);

	helper_sample_parts(&parts);
	cr_assert_eq(helper_write_archive(path, &parts, &err), 0, "%s", err.msg);
	pyfs_image_parts_free(&parts);
	return path;
}

static uint8_t *read_file(const char *path, size_t *size)
{
	struct stat st;
	uint8_t *data;
	FILE *f = fopen(path, "rb");

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fstat(fileno(f), &st), 0);
	data = malloc((size_t)st.st_size + 1);
	cr_assert_not_null(data);
	cr_assert_eq(fread(data, 1, (size_t)st.st_size, f), (size_t)st.st_size);
	fclose(f);
	*size = (size_t)st.st_size;
	return data;
}

/* Open path read-write with HDF5 (automatic error printing off). */
static hid_t h5_open_rw(const char *path)
{
	hid_t file;

	H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
	file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
	cr_assert_geq(file, 0, "cannot open '%s' with HDF5", path);
	return file;
}

static void expect_open_fails(const char *path, int expected, const char *message)
{
	struct pyfs_archive *archive = NULL;
	struct pyfs_image *image = NULL;
	int ret;

	memset(&err, 0, sizeof(err));
	ret = pyfs_archive_open(path, &archive, &err);
	cr_assert_eq(ret, expected, "open: expected %d, got %d (%s)", expected, ret, err.msg);
	cr_assert_null(archive);
	cr_assert(strstr(err.msg, message), "expected '%s' in '%s'", message, err.msg);
	cr_assert_null(strchr(err.msg, '\n'), "one line: %s", err.msg);
	ret = pyfs_archive_load(path, &image, &err);
	cr_assert_eq(ret, expected, "load: expected %d, got %d (%s)", expected, ret, err.msg);
	cr_assert_null(image);
}

/* --- writer ------------------------------------------------------------------------------ */

Test(archive_writer, payload_starts_on_a_1mib_boundary)
{
	static const uint64_t sizes[] = {1, 100, 2048, 5000, 3 << 20};

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct pyfs_writer_shape shape = {.inode_count = 1, .payload_size = sizes[i]};
		struct pyfs_inode root = {.mode = S_IFDIR | 0755, .nlink = 2};
		const char *path = helper_temp_path("aligned.h5");
		struct pyfs_archive *archive;
		struct pyfs_writer *writer;
		uint64_t offset;

		cr_assert_eq(pyfs_writer_create(path, &shape, &writer, &err), 0, "%s", err.msg);
		offset = pyfs_writer_payload_file_offset(writer);
		cr_assert_gt(offset, 0);
		cr_assert_eq(offset % PYFS_PAYLOAD_ALIGNMENT, 0, "payload of %llu bytes at %llu",
			     (unsigned long long)sizes[i], (unsigned long long)offset);
		cr_assert_eq(pyfs_writer_finish(writer, &root, NULL, NULL, 0, &err), 0, "%s",
			     err.msg);
		cr_assert_eq(pyfs_archive_open(path, &archive, &err), 0, "%s", err.msg);
		cr_assert_eq(pyfs_archive_payload_file_offset(archive), offset);
		cr_assert_eq(pyfs_archive_payload_size(archive), sizes[i]);
		pyfs_archive_close(archive);
	}
}

Test(archive_writer, large_payload_does_not_pad_metadata)
{
	struct pyfs_writer_shape shape = {.inode_count = 1, .payload_size = 5 << 20};
	struct pyfs_inode root = {.mode = S_IFDIR | 0755, .nlink = 2};
	const char *path = helper_temp_path("compact.h5");
	struct pyfs_writer *writer;
	struct stat st;

	cr_assert_eq(pyfs_writer_create(path, &shape, &writer, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_writer_payload_file_offset(writer), PYFS_PAYLOAD_ALIGNMENT);
	cr_assert_eq(pyfs_writer_finish(writer, &root, NULL, NULL, 0, &err), 0, "%s", err.msg);
	cr_assert_eq(stat(path, &st), 0);
	/* One hole before the payload, then a few KiB of metadata after it. */
	cr_assert_lt((uint64_t)st.st_size, PYFS_PAYLOAD_ALIGNMENT + shape.payload_size + 65536,
		     "file of %lld bytes", (long long)st.st_size);
}

Test(archive_writer, payload_written_through_another_fd_survives_finish)
{
	struct pyfs_image_parts parts;
	const char *path = helper_temp_path("payload.h5");
	uint8_t *file;
	size_t size;
	struct pyfs_archive *archive;
	uint64_t offset;

	/* 3 MiB of a pattern, so HDF5 would have room to scribble over it. */
	helper_parts_alloc(&parts, 2, 1, 1, 3 << 20);
	for (uint64_t i = 0; i < parts.payload_size; i++)
		parts.payload[i] = (uint8_t)(i * 131 + 7);
	parts.inodes[0] = (struct pyfs_inode){.mode = S_IFDIR | 0755, .nlink = 2, .entry_count = 1};
	parts.inodes[1] =
	    (struct pyfs_inode){.mode = S_IFREG | 0644,
				.nlink = 1,
				.data_size = parts.payload_size,
				.checksum = XXH3_64bits(parts.payload, parts.payload_size)};
	parts.names[0] = 'f';
	parts.dirents[0] = (struct pyfs_dirent){.name_length = 1, .inode = 1};
	parts.payload_checksum = parts.inodes[1].checksum;
	cr_assert_eq(helper_write_archive(path, &parts, &err), 0, "%s", err.msg);

	cr_assert_eq(pyfs_archive_open(path, &archive, &err), 0, "%s", err.msg);
	offset = pyfs_archive_payload_file_offset(archive);
	pyfs_archive_close(archive);
	file = read_file(path, &size);
	cr_assert_geq(size, offset + parts.payload_size);
	cr_assert_eq(memcmp(file + offset, parts.payload, parts.payload_size), 0,
		     "payload bytes changed by pyfs_writer_finish");
	free(file);
	pyfs_image_parts_free(&parts);
}

Test(archive_writer, same_input_gives_identical_bytes)
{
	char first[256];
	uint8_t *a, *b;
	size_t a_size, b_size;

	snprintf(first, sizeof(first), "%s", write_sample("one.h5"));
	/* Timestamps, if any were stored, would be seconds apart. */
	sleep(1);
	a = read_file(first, &a_size);
	b = read_file(write_sample("two.h5"), &b_size);
	cr_assert_eq(a_size, b_size);
	cr_assert_eq(memcmp(a, b, a_size), 0, "two writes of the same parts differ");
	free(a);
	free(b);
}

static herr_t check_no_times(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
	int *objects = data;

	(void)obj;
	(*objects)++;
	cr_expect_eq(info->ctime, 0, "object '%s' has a change time", name);
	cr_expect_eq(info->mtime, 0, "object '%s' has a modification time", name);
	cr_expect_eq(info->atime, 0, "object '%s' has an access time", name);
	cr_expect_eq(info->btime, 0, "object '%s' has a birth time", name);
	return 0;
}

Test(archive_writer, no_object_carries_timestamps)
{
	const char *path = write_sample("times.h5");
	hid_t file = h5_open_rw(path);
	int objects = 0;

	cr_assert_geq(
	    H5Ovisit2(file, H5_INDEX_NAME, H5_ITER_NATIVE, check_no_times, &objects, H5O_INFO_ALL),
	    0);
	cr_assert_eq(objects, 5, "the root group and four datasets");
	H5Fclose(file);
}

Test(archive_writer, layout_is_readable_by_name)
{
	const char *path = write_sample("layout.h5");
	hid_t file = h5_open_rw(path), dset, type, dcpl;
	static const char *inode_fields[] = {"data_offset", "data_size",  "checksum", "mtime_sec",
					     "mtime_nsec",  "mode",	  "nlink",    "parent",
					     "first_entry", "entry_count"};

	dset = H5Dopen2(file, PYFS_DSET_INODES, H5P_DEFAULT);
	cr_assert_geq(dset, 0);
	type = H5Dget_type(dset);
	cr_assert_eq(H5Tget_nmembers(type), 10);
	for (unsigned i = 0; i < 10; i++) {
		char *name = H5Tget_member_name(type, i);

		cr_assert_str_eq(name, inode_fields[i]);
		H5free_memory(name);
	}
	H5Tclose(type);
	H5Dclose(dset);
	dset = H5Dopen2(file, PYFS_DSET_PAYLOAD, H5P_DEFAULT);
	dcpl = H5Dget_create_plist(dset);
	cr_assert_eq(H5Pget_layout(dcpl), H5D_CONTIGUOUS);
	type = H5Dget_type(dset);
	cr_assert(H5Tequal(type, H5T_STD_U8LE) > 0);
	H5Tclose(type);
	H5Pclose(dcpl);
	H5Dclose(dset);
	H5Fclose(file);
}

Test(archive_writer, refuses_impossible_shapes)
{
	struct pyfs_writer_shape shape = {.inode_count = 0};
	struct pyfs_writer *writer = NULL;

	cr_assert_eq(pyfs_writer_create(helper_temp_path("bad.h5"), &shape, &writer, &err),
		     -EINVAL);
	cr_assert(strstr(err.msg, "0 inodes"), "%s", err.msg);
	shape.inode_count = (uint64_t)UINT32_MAX + 1;
	cr_assert_eq(pyfs_writer_create(helper_temp_path("bad.h5"), &shape, &writer, &err),
		     -EINVAL);
	cr_assert_null(writer);
}

Test(archive_writer, unwritable_path_keeps_its_errno)
{
	struct pyfs_writer_shape shape = {.inode_count = 1};
	struct pyfs_writer *writer = NULL;

	cr_assert_eq(pyfs_writer_create("/nonexistent-dir/x.h5", &shape, &writer, &err), -ENOENT);
	cr_assert(strstr(err.msg, "cannot create archive '/nonexistent-dir/x.h5': No such file"),
		  "%s", err.msg);
	cr_assert_null(writer);
}

/* --- round trips ------------------------------------------------------------------------- */

Test(archive_reader, round_trip_keeps_every_part)
{
	struct pyfs_image_parts parts, back;
	const char *path = write_sample("round.h5");
	struct pyfs_archive *archive;
	uint8_t *payload;

	helper_sample_parts(&parts);
	cr_assert_eq(pyfs_archive_open(path, &archive, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_archive_read_metadata(archive, &back, &err), 0, "%s", err.msg);
	cr_assert_eq(back.inode_count, parts.inode_count);
	cr_assert_eq(back.dirent_count, parts.dirent_count);
	cr_assert_eq(back.names_size, parts.names_size);
	cr_assert_eq(back.payload_size, parts.payload_size);
	cr_assert_null(back.payload);
	cr_assert_eq(memcmp(back.inodes, parts.inodes, parts.inode_count * sizeof(*parts.inodes)),
		     0);
	cr_assert_eq(
	    memcmp(back.dirents, parts.dirents, parts.dirent_count * sizeof(*parts.dirents)), 0);
	cr_assert_eq(memcmp(back.names, parts.names, parts.names_size), 0);
	cr_assert_eq(back.payload_checksum, parts.payload_checksum);
	cr_assert_eq(back.metadata_checksum, parts.metadata_checksum);

	payload = malloc(parts.payload_size);
	cr_assert_eq(pyfs_archive_read_payload(archive, payload, 0, parts.payload_size, &err), 0,
		     "%s", err.msg);
	cr_assert_eq(memcmp(payload, parts.payload, parts.payload_size), 0);
	cr_assert_eq(pyfs_archive_read_payload(archive, payload, 5, 3, &err), 0, "%s", err.msg);
	cr_assert_eq(memcmp(payload, parts.payload + 5, 3), 0);
	cr_assert_eq(pyfs_archive_read_payload(archive, payload, parts.payload_size, 0, &err), 0);
	cr_assert_eq(pyfs_archive_read_payload(archive, payload, parts.payload_size - 1, 2, &err),
		     -EINVAL);
	cr_assert(strstr(err.msg, "the payload has 32 bytes"), "%s", err.msg);
	cr_assert_eq(pyfs_archive_read_payload(archive, payload, UINT64_MAX, 2, &err), -EINVAL);
	free(payload);
	pyfs_image_parts_free(&back);
	pyfs_archive_close(archive);
	pyfs_image_parts_free(&parts);
}

Test(archive_reader, load_serves_the_tree)
{
	struct pyfs_image *image;
	const uint8_t *data;
	uint32_t found;
	size_t len;

	cr_assert_eq(pyfs_archive_load(write_sample("load.h5"), &image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_verify_payload(image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_verify_files(image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_resolve(image, "a/hello.txt", &found), 0);
	cr_assert_eq(pyfs_image_read(image, found, 0, 100, &data, &len), 0);
	cr_assert_eq(len, strlen(SAMPLE_HELLO_DATA));
	cr_assert_arr_eq(data, SAMPLE_HELLO_DATA, len);
	pyfs_image_destroy(image);
}

Test(archive_reader, empty_payload_round_trips)
{
	struct helper_tree *t = helper_tree_new();
	struct pyfs_image_parts parts;
	const char *path = helper_temp_path("empty.h5");
	struct pyfs_archive *archive;
	struct pyfs_image *image;

	helper_tree_dir(t, 0, "only-dirs", 0755);
	helper_tree_file(t, 0, "and-an-empty-file", "", 0, 0644);
	cr_assert_eq(helper_tree_build(t, &parts), 0);
	helper_tree_free(t);
	cr_assert_eq(parts.payload_size, 0);
	cr_assert_eq(helper_write_archive(path, &parts, &err), 0, "%s", err.msg);
	pyfs_image_parts_free(&parts);
	cr_assert_eq(pyfs_archive_open(path, &archive, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_archive_payload_size(archive), 0);
	cr_assert_eq(pyfs_archive_payload_file_offset(archive), 0);
	pyfs_archive_close(archive);
	cr_assert_eq(pyfs_archive_load(path, &image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_entry_count(image, 0), 2);
	cr_assert_eq(pyfs_image_verify_payload(image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_verify_files(image, &err), 0, "%s", err.msg);
	pyfs_image_destroy(image);
}

Test(archive_reader, root_only_archive_round_trips)
{
	struct pyfs_image_parts parts;
	const char *path = helper_temp_path("root.h5");
	struct pyfs_image *image;

	helper_parts_alloc(&parts, 1, 0, 0, 0);
	parts.inodes[0] = (struct pyfs_inode){.mode = S_IFDIR | 0700, .nlink = 2};
	parts.payload_checksum = XXH3_64bits(NULL, 0);
	cr_assert_eq(helper_write_archive(path, &parts, &err), 0, "%s", err.msg);
	pyfs_image_parts_free(&parts);
	cr_assert_eq(pyfs_archive_load(path, &image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_inode_count(image), 1);
	cr_assert_eq(pyfs_image_verify_payload(image, &err), 0, "%s", err.msg);
	pyfs_image_destroy(image);
}

/* Flip one byte of dataset name in the file at path (a contiguous dataset). */
static void flip_dataset_byte(const char *path, const char *name, uint64_t at)
{
	hid_t file = h5_open_rw(path), dset = H5Dopen2(file, name, H5P_DEFAULT);
	haddr_t offset = H5Dget_offset(dset);
	uint8_t byte;
	int fd;

	cr_assert_neq(offset, HADDR_UNDEF);
	H5Dclose(dset);
	H5Fclose(file);
	fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &byte, 1, (off_t)(offset + at)), 1);
	byte ^= 0x01;
	cr_assert_eq(pwrite(fd, &byte, 1, (off_t)(offset + at)), 1);
	close(fd);
}

Test(archive_reader, flipped_metadata_byte_fails_the_metadata_checksum)
{
	static const char *datasets[] = {PYFS_DSET_INODES, PYFS_DSET_DIRENTS, PYFS_DSET_NAMES};
	struct pyfs_image *image = NULL;

	for (size_t i = 0; i < 3; i++) {
		const char *path = write_sample("flip.h5");

		/* Byte 25 of an inode is the high part of mtime_sec: no range rule sees it. */
		flip_dataset_byte(path, datasets[i], i == 0 ? 25 : 2);
		cr_assert_eq(pyfs_archive_load(path, &image, &err), -EINVAL, "%s", datasets[i]);
		cr_assert(strstr(err.msg, "invalid archive: metadata checksum mismatch"), "%s: %s",
			  datasets[i], err.msg);
		cr_assert_null(image);
	}
}

Test(archive_reader, flipped_payload_byte_is_found_by_verify)
{
	const char *path = write_sample("flip-payload.h5");
	struct pyfs_image *image;

	flip_dataset_byte(path, PYFS_DSET_PAYLOAD, 1);
	cr_assert_eq(pyfs_archive_load(path, &image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_verify_payload(image, &err), -EIO);
	cr_assert(strstr(err.msg, "payload checksum mismatch"), "%s", err.msg);
	cr_assert_eq(pyfs_image_verify_files(image, &err), -EIO);
	cr_assert(strstr(err.msg, "checksum mismatch in 'a/hello.txt'") ||
		      strstr(err.msg, "checksum mismatch in 'hard'"),
		  "%s", err.msg);
	pyfs_image_destroy(image);
}

/* --- refusals ---------------------------------------------------------------------------- */

Test(archive_reader, missing_file_is_enoent)
{
	expect_open_fails(helper_temp_path("nothing.h5"), -ENOENT, "cannot open archive '");
	cr_assert(strstr(err.msg, "nothing.h5': No such file or directory"), "%s", err.msg);
}

Test(archive_reader, directory_is_refused)
{
	expect_open_fails("/tmp", -EISDIR, "cannot open archive '/tmp': Is a directory");
}

Test(archive_reader, unreadable_file_is_eacces)
{
	const char *path = write_sample("secret.h5");

	if (geteuid() == 0)
		cr_skip_test("root reads every file");
	cr_assert_eq(chmod(path, 0), 0);
	expect_open_fails(path, -EACCES, "Permission denied");
}

Test(archive_reader, non_hdf5_file_is_refused)
{
	const char *path = helper_temp_path("text.h5");
	FILE *f = fopen(path, "w");

	fputs("import numpy\n", f);
	fclose(f);
	expect_open_fails(path, -EINVAL, "is not an HDF5 file");
	f = fopen(path, "w");
	fclose(f);
	expect_open_fails(path, -EINVAL, "is not an HDF5 file");
}

/*
 * A new HDF5 file at path with superblock version superblock: 2 (the 1.8
 * format pyfs-pack writes, checksummed metadata) or 0 (HDF5's default, no
 * checksums). Returns it open for writing.
 */
static hid_t h5_create(const char *path, unsigned superblock)
{
	hid_t fapl, file;
	H5F_info2_t info;

	H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
	fapl = H5Pcreate(H5P_FILE_ACCESS);
	cr_assert_geq(fapl, 0);
	if (superblock >= 2)
		cr_assert_geq(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18), 0);
	file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
	cr_assert_geq(file, 0, "cannot create '%s'", path);
	H5Pclose(fapl);
	cr_assert_geq(H5Fget_info2(file, &info), 0);
	cr_assert_eq(info.super.version, superblock, "superblock version %u, wanted %u",
		     info.super.version, superblock);
	return file;
}

/* Give file a root attribute name: count fixed-length strings of size bytes from value. */
static void h5_add_strings(hid_t file, const char *name, hsize_t count, size_t size,
			   const void *value)
{
	hid_t type = H5Tcopy(H5T_C_S1), space, attr;

	cr_assert_geq(H5Tset_size(type, size), 0);
	space = count ? H5Screate_simple(1, &count, NULL) : H5Screate(H5S_SCALAR);
	attr = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
	cr_assert_geq(attr, 0);
	cr_assert_geq(H5Awrite(attr, type, value), 0);
	H5Aclose(attr);
	H5Sclose(space);
	H5Tclose(type);
}

Test(archive_reader, hdf5_file_without_format_is_refused)
{
	const char *path = helper_temp_path("plain.h5");

	/* Superblock version 2, so that it is the missing attribute that is refused. */
	cr_assert_geq(H5Fclose(h5_create(path, 2)), 0);
	expect_open_fails(path, -EINVAL, "is not a pyfs archive (no 'format' attribute)");
	cr_assert_null(strstr(err.msg, "superblock"), "%s", err.msg);
}

Test(archive_reader, superblock_without_checksums_is_refused)
{
	const char *path = helper_temp_path("old-format.h5");
	hid_t file = h5_create(path, 0);

	/* Even with the right format name: HDF5 metadata without checksums is not parsed. */
	h5_add_strings(file, PYFS_ATTR_FORMAT, 0, strlen(PYFS_FORMAT_NAME), PYFS_FORMAT_NAME);
	cr_assert_geq(H5Fclose(file), 0);
	expect_open_fails(path, -EINVAL, "superblock version 0 has no metadata checksums");
}

Test(archive_reader, format_with_several_elements_is_refused)
{
	const char *path = helper_temp_path("format-array.h5");
	enum { COUNT = 10, SIZE = 63 }; /* 630 bytes: far more than one format name holds */
	static char names[COUNT][SIZE];
	hid_t file = h5_create(path, 2);

	for (size_t i = 0; i < COUNT; i++)
		memcpy(names[i], PYFS_FORMAT_NAME, strlen(PYFS_FORMAT_NAME));
	h5_add_strings(file, PYFS_ATTR_FORMAT, COUNT, SIZE, names);
	cr_assert_geq(H5Fclose(file), 0);
	expect_open_fails(path, -EINVAL, "is not a pyfs archive ('format' is not a short");
}

/* Replace root attribute name of the archive at path by a scalar of type holding value. */
static void set_attribute(const char *path, const char *name, hid_t type, const void *value)
{
	hid_t file = h5_open_rw(path), space, attr;

	if (H5Aexists(file, name) > 0)
		cr_assert_geq(H5Adelete(file, name), 0);
	if (type != H5I_INVALID_HID) {
		space = H5Screate(H5S_SCALAR);
		attr = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
		cr_assert_geq(attr, 0);
		cr_assert_geq(H5Awrite(attr, type, value), 0);
		H5Aclose(attr);
		H5Sclose(space);
	}
	cr_assert_geq(H5Fclose(file), 0);
}

Test(archive_reader, other_format_name_is_refused)
{
	const char *path = write_sample("other.h5");
	hid_t type = H5Tcopy(H5T_C_S1);

	H5Tset_size(type, 5);
	set_attribute(path, PYFS_ATTR_FORMAT, type, "pyfs2");
	H5Tclose(type);
	expect_open_fails(path, -EINVAL, "is not a pyfs archive (format is 'pyfs2')");
}

Test(archive_reader, format_as_number_is_refused)
{
	const char *path = write_sample("number.h5");
	uint32_t value = 1;

	set_attribute(path, PYFS_ATTR_FORMAT, H5T_NATIVE_UINT32, &value);
	expect_open_fails(path, -EINVAL, "is not a pyfs archive ('format' is not a short");
}

Test(archive_reader, null_terminated_format_is_accepted)
{
	const char *path = write_sample("nullterm.h5");
	struct pyfs_archive *archive;
	hid_t type = H5Tcopy(H5T_C_S1);

	/* What h5py or another writer may store: "pyfs" and a terminator. */
	H5Tset_size(type, 5);
	H5Tset_strpad(type, H5T_STR_NULLTERM);
	set_attribute(path, PYFS_ATTR_FORMAT, type, "pyfs");
	H5Tclose(type);
	cr_assert_eq(pyfs_archive_open(path, &archive, &err), 0, "%s", err.msg);
	pyfs_archive_close(archive);
}

Test(archive_reader, other_version_is_refused_with_advice)
{
	const char *path = write_sample("v7.h5");
	uint32_t version = 7;

	set_attribute(path, PYFS_ATTR_VERSION, H5T_STD_U32LE, &version);
	expect_open_fails(path, -EINVAL,
			  "is pyfs archive version 7; this pyfs reads versions 1 and 2: "
			  "repack it with a matching pyfs-pack");
}

Test(archive_reader, missing_version_is_refused)
{
	const char *path = write_sample("noversion.h5");

	set_attribute(path, PYFS_ATTR_VERSION, H5I_INVALID_HID, NULL);
	expect_open_fails(path, -EINVAL, "no 'version' attribute");
}

Test(archive_reader, missing_checksum_is_refused)
{
	const char *path = write_sample("nosum.h5");

	set_attribute(path, PYFS_ATTR_METADATA_CHECKSUM, H5I_INVALID_HID, NULL);
	expect_open_fails(path, -EINVAL, "no 'metadata_checksum' attribute");
}

/* How a test damages one dataset of a valid archive. */
enum dataset_damage {
	DAMAGE_DELETE,
	DAMAGE_FLOAT,
	DAMAGE_SIGNED_BYTES,
	DAMAGE_2D,
	DAMAGE_CHUNKED,
	DAMAGE_HUGE,
	DAMAGE_MISSING_MEMBER,
	DAMAGE_SIGNED_MEMBER,
};

struct dataset_case {
	const char *dataset;
	enum dataset_damage damage;
	const char *message;
};

/* Replace dataset c->dataset of the archive at path as c->damage says. */
static void damage_dataset(const char *path, const struct dataset_case *c)
{
	hid_t file = h5_open_rw(path), space, type = H5I_INVALID_HID, dcpl = H5P_DEFAULT, dset;
	hsize_t dims[2] = {4, 4}, chunk[1] = {2};
	int rank = 1;

	cr_assert_geq(H5Ldelete(file, c->dataset, H5P_DEFAULT), 0);
	switch (c->damage) {
	case DAMAGE_DELETE:
		cr_assert_geq(H5Fclose(file), 0);
		return;
	case DAMAGE_FLOAT:
		type = H5Tcopy(H5T_IEEE_F64LE);
		break;
	case DAMAGE_SIGNED_BYTES:
		type = H5Tcopy(H5T_STD_I8LE);
		break;
	case DAMAGE_2D:
		type = H5Tcopy(H5T_STD_U8LE);
		rank = 2;
		break;
	case DAMAGE_CHUNKED:
		type = H5Tcopy(H5T_STD_U8LE);
		dcpl = H5Pcreate(H5P_DATASET_CREATE);
		H5Pset_chunk(dcpl, 1, chunk);
		break;
	case DAMAGE_HUGE:
		/* 2^40 elements, chunked and never written: a tiny file that claims a TiB. */
		type = H5Tcopy(H5T_STD_U8LE);
		dims[0] = (hsize_t)1 << 40;
		dcpl = H5Pcreate(H5P_DATASET_CREATE);
		H5Pset_chunk(dcpl, 1, chunk);
		break;
	case DAMAGE_MISSING_MEMBER:
	case DAMAGE_SIGNED_MEMBER:
		type = H5Tcreate(H5T_COMPOUND, 16);
		H5Tinsert(type, "name_offset", 0, H5T_STD_U64LE);
		H5Tinsert(type, "name_length", 8, H5T_STD_U32LE);
		H5Tinsert(type, c->damage == DAMAGE_MISSING_MEMBER ? "inode_index" : "inode", 12,
			  c->damage == DAMAGE_MISSING_MEMBER ? H5T_STD_U32LE : H5T_STD_I32LE);
		break;
	}
	space = H5Screate_simple(rank, dims, NULL);
	dset = H5Dcreate2(file, c->dataset, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
	cr_assert_geq(dset, 0, "damage %d", c->damage);
	H5Dclose(dset);
	H5Sclose(space);
	H5Tclose(type);
	if (dcpl != H5P_DEFAULT)
		H5Pclose(dcpl);
	cr_assert_geq(H5Fclose(file), 0);
}

static const struct dataset_case dataset_cases[] = {
    {PYFS_DSET_INODES, DAMAGE_DELETE, "invalid archive '"},
    {PYFS_DSET_DIRENTS, DAMAGE_DELETE, "no 'dirents' dataset"},
    {PYFS_DSET_NAMES, DAMAGE_DELETE, "no 'names' dataset"},
    {PYFS_DSET_PAYLOAD, DAMAGE_DELETE, "no 'payload' dataset"},
    {PYFS_DSET_NAMES, DAMAGE_FLOAT, "dataset 'names' is not made of unsigned bytes"},
    {PYFS_DSET_PAYLOAD, DAMAGE_SIGNED_BYTES, "dataset 'payload' is not made of unsigned bytes"},
    {PYFS_DSET_INODES, DAMAGE_FLOAT, "dataset 'inodes' is not a compound of 10 members"},
    {PYFS_DSET_PAYLOAD, DAMAGE_2D, "dataset 'payload' is not one-dimensional"},
    {PYFS_DSET_PAYLOAD, DAMAGE_CHUNKED, "the payload dataset is not contiguous"},
    {PYFS_DSET_NAMES, DAMAGE_HUGE,
     "dataset 'names' has 1099511627776 records of 1 bytes, "
     "more than the file holds"},
    {PYFS_DSET_DIRENTS, DAMAGE_MISSING_MEMBER,
     "dataset 'dirents' has no unsigned integer "
     "member 'inode' of 4 bytes"},
    {PYFS_DSET_DIRENTS, DAMAGE_SIGNED_MEMBER, "has no unsigned integer member 'inode'"},
};

/*
 * Criterion runs each row in a fresh process of this program, where the
 * addresses in the table differ (PIE): rows are passed as indexes.
 */
ParameterizedTestParameters(archive_reader, refuses_damaged_datasets)
{
	static size_t rows[sizeof(dataset_cases) / sizeof(dataset_cases[0])];

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		rows[i] = i;
	return cr_make_param_array(size_t, rows, sizeof(rows) / sizeof(rows[0]));
}

ParameterizedTest(size_t *row, archive_reader, refuses_damaged_datasets)
{
	const struct dataset_case *c = &dataset_cases[*row];
	const char *path = write_sample("damaged.h5");

	damage_dataset(path, c);
	expect_open_fails(path, -EINVAL, c->message);
	if (c->damage == DAMAGE_DELETE)
		cr_assert(strstr(err.msg, "no '") && strstr(err.msg, c->dataset), "%s", err.msg);
}

Test(archive_reader, truncated_file_is_refused)
{
	const char *path;
	struct stat st;
	static const off_t keep[] = {100, 4096, -1};

	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
		path = write_sample("truncated.h5");
		cr_assert_eq(stat(path, &st), 0);
		cr_assert_eq(truncate(path, keep[i] < 0 ? st.st_size - 1 : keep[i]), 0);
		expect_open_fails(path, -EINVAL, "cannot open archive '");
		cr_assert(strstr(err.msg, "truncated.h5': truncated file: eof = "), "%s", err.msg);
	}
}
