/*
 * test_archive_env.c - the optional "environment" attribute of archive_io:
 * written by pyfs_writer_set_environment() and read back string by string,
 * absent in archives that do not carry it (-ENOENT, the archive still opens),
 * and refused when its shape or size is not what the format allows.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive_io.h"
#include "helper_tree.h"

static struct pyfs_err err;

/* The sample tree written with count environment strings (none when 0). */
static const char *write_with(const char *name, const char *const *items, size_t count)
{
	struct pyfs_image_parts parts;
	const char *path = helper_temp_path(name);
	struct pyfs_writer_shape shape;
	struct pyfs_writer *writer = NULL;
	uint64_t offset;
	int fd;

	helper_sample_parts(&parts);
	shape = (struct pyfs_writer_shape){.inode_count = parts.inode_count,
					   .dirent_count = parts.dirent_count,
					   .names_size = parts.names_size,
					   .payload_size = parts.payload_size};
	cr_assert_eq(pyfs_writer_create(path, &shape, &writer, &err), 0, "%s", err.msg);
	offset = pyfs_writer_payload_file_offset(writer);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, parts.payload, parts.payload_size, (off_t)offset),
		     (ssize_t)parts.payload_size);
	close(fd);
	cr_assert_eq(pyfs_writer_set_environment(writer, items, count, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_writer_finish(writer, parts.inodes, parts.dirents, parts.names,
					parts.payload_checksum, &err),
		     0, "%s", err.msg);
	pyfs_image_parts_free(&parts);
	return path;
}

/* Read the attribute of path: the return value, strings into *items. */
static int read_env(const char *path, char **items, size_t *count)
{
	struct pyfs_archive *archive = NULL;
	int ret;

	memset(&err, 0, sizeof(err));
	cr_assert_eq(pyfs_archive_open(path, &archive, &err), 0, "%s", err.msg);
	ret = pyfs_archive_read_environment(archive, items, count, &err);
	pyfs_archive_close(archive);
	return ret;
}

/* Replace the attribute of path by one of type over a space of rank dims. */
static void put_attribute(const char *path, hid_t type, int rank, const hsize_t *dims,
			  const void *value)
{
	hid_t file, space, attr;

	H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
	file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
	cr_assert_geq(file, 0);
	if (H5Aexists(file, PYFS_ATTR_ENVIRONMENT) > 0)
		cr_assert_geq(H5Adelete(file, PYFS_ATTR_ENVIRONMENT), 0);
	space = H5Screate_simple(rank, dims, NULL);
	attr = H5Acreate2(file, PYFS_ATTR_ENVIRONMENT, type, space, H5P_DEFAULT, H5P_DEFAULT);
	cr_assert_geq(attr, 0);
	cr_assert_geq(H5Awrite(attr, type, value), 0);
	H5Aclose(attr);
	H5Sclose(space);
	cr_assert_geq(H5Fclose(file), 0);
}

Test(archive_env, absent_attribute_is_enoent)
{
	char *items = (char *)"not touched";
	size_t count = 7;

	cr_assert_eq(read_env(write_with("none.h5", NULL, 0), &items, &count), -ENOENT);
	cr_assert_null(items);
	cr_assert_eq(count, 0);
	cr_assert_eq(err.msg[0], '\0', "a missing attribute is not an error: %s", err.msg);
}

Test(archive_env, strings_round_trip_in_order)
{
	const char *const in[] = {"source_path=/home/u/env", "pth_dir=src", "pth_dir=",
				  "x=a much longer value than the others, to set the width"};
	char *items = NULL;
	const char *p;
	size_t count = 0;

	cr_assert_eq(read_env(write_with("env.h5", in, 4), &items, &count), 0, "%s", err.msg);
	cr_assert_eq(count, 4);
	p = items;
	for (size_t i = 0; i < 4; i++, p += strlen(p) + 1)
		cr_assert_str_eq(p, in[i]);
	free(items);
}

Test(archive_env, archive_with_attribute_loads_and_verifies)
{
	const char *const in[] = {"source_path=/x"};
	struct pyfs_image *image = NULL;

	cr_assert_eq(pyfs_archive_load(write_with("load.h5", in, 1), &image, &err), 0, "%s",
		     err.msg);
	cr_assert_eq(pyfs_image_verify_payload(image, &err), 0, "%s", err.msg);
	pyfs_image_destroy(image);
}

Test(archive_env, writer_refuses_too_many_or_too_long)
{
	struct pyfs_image_parts parts;
	struct pyfs_writer_shape shape;
	struct pyfs_writer *writer = NULL;
	const char **many = calloc(PYFS_ENV_ITEMS_MAX + 1, sizeof(*many));
	char *long_item = malloc(PYFS_ENV_ITEM_MAX + 1);
	const char *one[1] = {long_item};

	cr_assert(many && long_item);
	for (size_t i = 0; i <= PYFS_ENV_ITEMS_MAX; i++)
		many[i] = "k=v";
	memset(long_item, 'a', PYFS_ENV_ITEM_MAX);
	long_item[PYFS_ENV_ITEM_MAX] = '\0';
	helper_sample_parts(&parts);
	shape = (struct pyfs_writer_shape){.inode_count = parts.inode_count,
					   .dirent_count = parts.dirent_count,
					   .names_size = parts.names_size,
					   .payload_size = parts.payload_size};
	cr_assert_eq(pyfs_writer_create(helper_temp_path("big.h5"), &shape, &writer, &err), 0);
	cr_assert_eq(pyfs_writer_set_environment(writer, many, PYFS_ENV_ITEMS_MAX + 1, &err),
		     -E2BIG);
	cr_assert_eq(pyfs_writer_set_environment(writer, one, 1, &err), -ENAMETOOLONG);
	pyfs_writer_abort(writer);
	pyfs_image_parts_free(&parts);
	free(many);
	free(long_item);
}

Test(archive_env, full_width_strings_without_nul_are_read_whole)
{
	const char *path = write_with("nulpad.h5", NULL, 0);
	hid_t type = H5Tcopy(H5T_C_S1);
	hsize_t dims[1] = {2};
	char *items = NULL;
	size_t count = 0;

	H5Tset_size(type, 4);
	H5Tset_strpad(type, H5T_STR_NULLPAD);
	put_attribute(path, type, 1, dims, "a=bcd=e\0");
	H5Tclose(type);
	cr_assert_eq(read_env(path, &items, &count), 0, "%s", err.msg);
	cr_assert_eq(count, 2);
	cr_assert_str_eq(items, "a=bc");
	cr_assert_str_eq(items + 5, "d=e");
	free(items);
}

Test(archive_env, wrong_shapes_are_refused)
{
	const char *path = write_with("shape.h5", NULL, 0);
	hid_t type = H5Tcopy(H5T_C_S1);
	hsize_t one[1] = {1}, two[2] = {1, 1}, many[1] = {PYFS_ENV_ITEMS_MAX + 1};
	uint32_t number = 1;
	char *big = calloc(PYFS_ENV_ITEMS_MAX + 1, 2);
	char *items = NULL;
	size_t count = 0;

	cr_assert_not_null(big);
	put_attribute(path, H5T_NATIVE_UINT32, 1, one, &number);
	cr_assert_eq(read_env(path, &items, &count), -EINVAL);
	cr_assert(strstr(err.msg, "is not an array of short strings"), "%s", err.msg);
	H5Tset_size(type, 2);
	put_attribute(path, type, 2, two, "a");
	cr_assert_eq(read_env(path, &items, &count), -EINVAL);
	put_attribute(path, type, 1, many, big);
	cr_assert_eq(read_env(path, &items, &count), -EINVAL);
	H5Tset_size(type, PYFS_ENV_ITEM_MAX + 1);
	put_attribute(path, type, 1, one, big);
	cr_assert_eq(read_env(path, &items, &count), -EINVAL);
	cr_assert_null(items);
	H5Tclose(type);
	free(big);
}
