/*
 * test_image.c - the in-RAM image: accessors on a valid image, and one table
 * row per validation rule, each corrupt input refused with -EINVAL and a
 * message that names the problem.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <xxhash.h>
#include <zstd.h>

#include "helper_tree.h"
#include "image.h"

static struct pyfs_image *image;
static struct pyfs_err err;

static void sample_setup(void)
{
	struct pyfs_image_parts parts;

	helper_sample_parts(&parts);
	memset(&err, 0, sizeof(err));
	cr_assert_eq(pyfs_image_create(&parts, &image, &err), 0, "%s", err.msg);
	cr_assert_null(parts.inodes, "create must take the buffers");
}

static void sample_teardown(void)
{
	pyfs_image_destroy(image);
	image = NULL;
}

/* --- buffers ----------------------------------------------------------------------------- */

Test(image_buffer, zero_size_gives_distinct_freeable_pointers)
{
	void *a = pyfs_buffer_alloc(0), *b = pyfs_buffer_alloc(0);

	cr_assert_not_null(a);
	cr_assert_not_null(b);
	cr_assert_neq(a, b);
	pyfs_buffer_free(a, 0);
	pyfs_buffer_free(b, 0);
}

Test(image_buffer, is_page_aligned_zeroed_and_writable)
{
	uint64_t size = 3 * 4096 + 17;
	uint8_t *p = pyfs_buffer_alloc(size);

	cr_assert_not_null(p);
	cr_assert_eq((uintptr_t)p % 4096, 0);
	for (uint64_t i = 0; i < size; i++)
		cr_assert_eq(p[i], 0);
	memset(p, 0xab, size);
	pyfs_buffer_free(p, size);
}

Test(image_buffer, impossible_size_is_null)
{
	cr_assert_null(pyfs_buffer_alloc(UINT64_MAX / 2));
}

/* --- accessors on the sample tree -------------------------------------------------------- */

TestSuite(image_lookup, .init = sample_setup, .fini = sample_teardown);

Test(image_lookup, finds_every_name_of_the_root)
{
	static const struct {
		const char *name;
		uint32_t index;
	} names[] = {
	    {"a", SAMPLE_A},	     {"b.txt", SAMPLE_B},    {"copy.txt", SAMPLE_COPY},
	    {"empty", SAMPLE_EMPTY}, {"hard", SAMPLE_HELLO}, {"sym", SAMPLE_SYM},
	    {"z", SAMPLE_Z},
	};
	uint32_t found;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		found = UINT32_MAX;
		cr_assert_eq(pyfs_image_lookup(image, SAMPLE_ROOT, names[i].name,
					       strlen(names[i].name), &found),
			     0, "%s", names[i].name);
		cr_assert_eq(found, names[i].index, "%s", names[i].name);
	}
}

Test(image_lookup, missing_name_is_enoent)
{
	uint32_t found = 77;

	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_ROOT, "b", 1, &found), -ENOENT);
	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_ROOT, "b.txtx", 6, &found), -ENOENT);
	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_ROOT, "0", 1, &found), -ENOENT);
	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_ROOT, "zz", 2, &found), -ENOENT);
	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_Z, "a", 1, &found), -ENOENT);
	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_ROOT, "", 0, &found), -ENOENT);
	cr_assert_eq(found, 77, "a miss must not touch *found");
}

Test(image_lookup, uses_only_len_bytes_of_the_name)
{
	uint32_t found;

	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_ROOT, "b.txt.orig", 5, &found), 0);
	cr_assert_eq(found, SAMPLE_B);
}

Test(image_lookup, in_a_file_is_enotdir)
{
	uint32_t found;

	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_B, "x", 1, &found), -ENOTDIR);
	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_SYM, "x", 1, &found), -ENOTDIR);
}

Test(image_lookup, long_name_is_enametoolong)
{
	char name[PYFS_NAME_MAX + 1];
	uint32_t found;

	memset(name, 'x', sizeof(name));
	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_ROOT, name, sizeof(name), &found),
		     -ENAMETOOLONG);
	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_ROOT, name, PYFS_NAME_MAX, &found), -ENOENT);
}

Test(image_lookup, out_of_range_directory_is_enoent)
{
	uint32_t found;

	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_INODES, "a", 1, &found), -ENOENT);
	cr_assert_eq(pyfs_image_lookup(image, UINT32_MAX, "a", 1, &found), -ENOENT);
}

Test(image_lookup, dot_and_dotdot_are_self_and_parent)
{
	uint32_t found;

	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_A, ".", 1, &found), 0);
	cr_assert_eq(found, SAMPLE_A);
	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_A, "..", 2, &found), 0);
	cr_assert_eq(found, SAMPLE_ROOT);
	cr_assert_eq(pyfs_image_lookup(image, SAMPLE_ROOT, "..", 2, &found), 0);
	cr_assert_eq(found, SAMPLE_ROOT);
}

Test(image_lookup, resolve_walks_paths_without_following_symlinks)
{
	uint32_t found;

	cr_assert_eq(pyfs_image_resolve(image, "", &found), 0);
	cr_assert_eq(found, SAMPLE_ROOT);
	cr_assert_eq(pyfs_image_resolve(image, "/", &found), 0);
	cr_assert_eq(found, SAMPLE_ROOT);
	cr_assert_eq(pyfs_image_resolve(image, "a/hello.txt", &found), 0);
	cr_assert_eq(found, SAMPLE_HELLO);
	cr_assert_eq(pyfs_image_resolve(image, "//a//link/", &found), 0);
	cr_assert_eq(found, SAMPLE_LINK);
	cr_assert_eq(pyfs_image_resolve(image, "a/nothing", &found), -ENOENT);
	cr_assert_eq(pyfs_image_resolve(image, "b.txt/x", &found), -ENOTDIR);
	cr_assert_eq(pyfs_image_resolve(image, "a/link/x", &found), -ENOTDIR);
}

TestSuite(image_entry, .init = sample_setup, .fini = sample_teardown);

Test(image_entry, iterates_in_sorted_order_then_enoent)
{
	static const char *expected[] = {"a", "b.txt", "copy.txt", "empty", "hard", "sym", "z"};
	const size_t n = sizeof(expected) / sizeof(expected[0]);
	const char *name;
	uint32_t index;
	size_t len;

	cr_assert_eq(pyfs_image_entry_count(image, SAMPLE_ROOT), n);
	for (size_t pos = 0; pos < n; pos++) {
		cr_assert_eq(pyfs_image_entry(image, SAMPLE_ROOT, pos, &name, &len, &index), 0);
		cr_assert_eq(len, strlen(expected[pos]));
		cr_assert_arr_eq(name, expected[pos], len, "entry %zu", pos);
	}
	cr_assert_eq(pyfs_image_entry(image, SAMPLE_ROOT, n, &name, &len, &index), -ENOENT);
	cr_assert_eq(pyfs_image_entry(image, SAMPLE_ROOT, UINT64_MAX, &name, &len, &index),
		     -ENOENT);
}

Test(image_entry, gives_the_inode_of_each_name)
{
	const char *name;
	uint32_t index;
	size_t len;

	cr_assert_eq(pyfs_image_entry(image, SAMPLE_A, 1, &name, &len, &index), 0);
	cr_assert_eq(len, 4);
	cr_assert_arr_eq(name, "link", 4);
	cr_assert_eq(index, SAMPLE_LINK);
}

Test(image_entry, empty_directory_and_files)
{
	const char *name;
	uint32_t index;
	size_t len;

	cr_assert_eq(pyfs_image_entry_count(image, SAMPLE_Z), 0);
	cr_assert_eq(pyfs_image_entry(image, SAMPLE_Z, 0, &name, &len, &index), -ENOENT);
	cr_assert_eq(pyfs_image_entry_count(image, SAMPLE_B), 0);
	cr_assert_eq(pyfs_image_entry(image, SAMPLE_B, 0, &name, &len, &index), -ENOTDIR);
	cr_assert_eq(pyfs_image_entry_count(image, SAMPLE_INODES), 0);
}

TestSuite(image_read, .init = sample_setup, .fini = sample_teardown);

Test(image_read, whole_file)
{
	const uint8_t *data;
	size_t len;

	cr_assert_eq(pyfs_image_read(image, SAMPLE_HELLO, 0, 4096, &data, &len), 0);
	cr_assert_eq(len, strlen(SAMPLE_HELLO_DATA));
	cr_assert_arr_eq(data, SAMPLE_HELLO_DATA, len);
}

Test(image_read, clamps_to_the_file_size)
{
	const uint8_t *data;
	size_t len;

	cr_assert_eq(pyfs_image_read(image, SAMPLE_HELLO, 7, 100, &data, &len), 0);
	cr_assert_eq(len, strlen(SAMPLE_HELLO_DATA) - 7);
	cr_assert_arr_eq(data, &SAMPLE_HELLO_DATA[7], len);
	cr_assert_eq(pyfs_image_read(image, SAMPLE_HELLO, 2, 3, &data, &len), 0);
	cr_assert_eq(len, 3);
	cr_assert_arr_eq(data, "llo", 3);
	cr_assert_eq(pyfs_image_read(image, SAMPLE_HELLO, 1, UINT64_MAX, &data, &len), 0);
	cr_assert_eq(len, strlen(SAMPLE_HELLO_DATA) - 1);
}

Test(image_read, at_or_past_eof_is_empty)
{
	const uint8_t *data;
	size_t len = 99;

	cr_assert_eq(
	    pyfs_image_read(image, SAMPLE_HELLO, strlen(SAMPLE_HELLO_DATA), 10, &data, &len), 0);
	cr_assert_eq(len, 0);
	len = 99;
	cr_assert_eq(pyfs_image_read(image, SAMPLE_HELLO, UINT64_MAX, UINT64_MAX, &data, &len), 0);
	cr_assert_eq(len, 0);
	len = 99;
	cr_assert_eq(pyfs_image_read(image, SAMPLE_EMPTY, 0, 10, &data, &len), 0);
	cr_assert_eq(len, 0);
}

Test(image_read, duplicate_contents_share_bytes)
{
	const uint8_t *b, *copy;
	size_t len;

	cr_assert_eq(pyfs_image_read(image, SAMPLE_B, 0, 100, &b, &len), 0);
	cr_assert_eq(pyfs_image_read(image, SAMPLE_COPY, 0, 100, &copy, &len), 0);
	cr_assert_eq(b, copy);
	cr_assert_arr_eq(b, SAMPLE_DUP_DATA, strlen(SAMPLE_DUP_DATA));
}

Test(image_read, refuses_directories_symlinks_and_bad_indexes)
{
	const uint8_t *data;
	size_t len;

	cr_assert_eq(pyfs_image_read(image, SAMPLE_A, 0, 1, &data, &len), -EISDIR);
	cr_assert_eq(pyfs_image_read(image, SAMPLE_SYM, 0, 1, &data, &len), -EINVAL);
	cr_assert_eq(pyfs_image_read(image, SAMPLE_INODES, 0, 1, &data, &len), -EINVAL);
}

Test(image_read, readlink_gives_the_target)
{
	const char *target;
	size_t len;

	cr_assert_eq(pyfs_image_readlink(image, SAMPLE_SYM, &target, &len), 0);
	cr_assert_eq(len, strlen(SAMPLE_SYM_TARGET));
	cr_assert_arr_eq(target, SAMPLE_SYM_TARGET, len);
	cr_assert_eq(pyfs_image_readlink(image, SAMPLE_LINK, &target, &len), 0);
	cr_assert_arr_eq(target, "hello.txt", len);
	cr_assert_eq(pyfs_image_readlink(image, SAMPLE_B, &target, &len), -EINVAL);
	cr_assert_eq(pyfs_image_readlink(image, SAMPLE_A, &target, &len), -EINVAL);
	cr_assert_eq(pyfs_image_readlink(image, SAMPLE_INODES, &target, &len), -EINVAL);
}

TestSuite(image_stat, .init = sample_setup, .fini = sample_teardown);

Test(image_stat, directory_fields)
{
	struct stat st;

	cr_assert_eq(pyfs_image_stat(image, SAMPLE_A, &st), 0);
	cr_assert_eq(st.st_ino, SAMPLE_A + 1);
	cr_assert_eq(st.st_mode, S_IFDIR | 0750);
	cr_assert_eq(st.st_nlink, 2);
	cr_assert_eq(st.st_mtim.tv_sec, SAMPLE_A_MTIME_SEC);
	cr_assert_eq(st.st_mtim.tv_nsec, SAMPLE_A_MTIME_NSEC);
	cr_assert_eq(st.st_atim.tv_nsec, SAMPLE_A_MTIME_NSEC);
	cr_assert_eq(st.st_ctim.tv_sec, SAMPLE_A_MTIME_SEC);
	cr_assert_eq(st.st_size, 4096);
	cr_assert_eq(st.st_blksize, 4096);
	cr_assert_eq(st.st_uid, 0);
	cr_assert_eq(pyfs_image_stat(image, SAMPLE_ROOT, &st), 0);
	cr_assert_eq(st.st_ino, 1);
	cr_assert_eq(st.st_nlink, 4, "root holds a/ and z/");
}

Test(image_stat, file_fields)
{
	struct stat st;

	cr_assert_eq(pyfs_image_stat(image, SAMPLE_HELLO, &st), 0);
	cr_assert_eq(st.st_mode, S_IFREG | 0644);
	cr_assert_eq(st.st_nlink, 2, "a/hello.txt is also 'hard'");
	cr_assert_eq(st.st_size, (off_t)strlen(SAMPLE_HELLO_DATA));
	cr_assert_eq(st.st_blocks, 1);
	cr_assert_eq(pyfs_image_stat(image, SAMPLE_B, &st), 0);
	cr_assert_eq(st.st_mode, S_IFREG | 0600);
	cr_assert_eq(st.st_nlink, 1);
	cr_assert_eq(pyfs_image_stat(image, SAMPLE_EMPTY, &st), 0);
	cr_assert_eq(st.st_size, 0);
	cr_assert_eq(st.st_blocks, 0);
	cr_assert_eq(pyfs_image_stat(image, SAMPLE_SYM, &st), 0);
	cr_assert_eq(st.st_mode, S_IFLNK | 0777);
	cr_assert_eq(st.st_size, (off_t)strlen(SAMPLE_SYM_TARGET));
}

Test(image_stat, blocks_round_up_to_512)
{
	struct helper_tree *t = helper_tree_new();
	struct pyfs_image_parts parts;
	struct pyfs_image *img;
	static uint8_t data[1025];
	struct stat st;
	uint32_t f;

	f = helper_tree_file(t, 0, "f", data, sizeof(data), 0644);
	helper_tree_set_mtime(t, f, -5, 999999999);
	cr_assert_eq(helper_tree_build(t, &parts), 0);
	helper_tree_free(t);
	cr_assert_eq(pyfs_image_create(&parts, &img, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_stat(img, f, &st), 0);
	cr_assert_eq(st.st_blocks, 3);
	cr_assert_eq(st.st_mtim.tv_sec, -5, "mtimes before 1970 survive");
	cr_assert_eq(st.st_mtim.tv_nsec, 999999999);
	pyfs_image_destroy(img);
}

Test(image_stat, out_of_range_is_enoent)
{
	struct stat st;

	cr_assert_eq(pyfs_image_stat(image, SAMPLE_INODES, &st), -ENOENT);
	cr_assert_null(pyfs_image_inode(image, SAMPLE_INODES));
	cr_assert_not_null(pyfs_image_inode(image, SAMPLE_INODES - 1));
	cr_assert_eq(pyfs_image_inode_count(image), SAMPLE_INODES);
}

Test(image_stat, totals_count_each_inode_once)
{
	struct pyfs_image_totals totals;
	const size_t hello = strlen(SAMPLE_HELLO_DATA), dup = strlen(SAMPLE_DUP_DATA);
	uint64_t size;

	pyfs_image_get_totals(image, &totals);
	cr_assert_eq(totals.inodes, SAMPLE_INODES);
	cr_assert_eq(totals.directories, 3);
	cr_assert_eq(totals.files, 4);
	cr_assert_eq(totals.symlinks, 2);
	cr_assert_eq(totals.file_bytes, hello + 2 * dup, "hard links count once");
	cr_assert_eq(totals.payload_bytes, hello + dup, "duplicates are stored once");
	cr_assert_not_null(pyfs_image_payload(image, &size));
	cr_assert_eq(size, hello + dup);
}

/* --- checksums --------------------------------------------------------------------------- */

TestSuite(image_verify, .init = sample_setup, .fini = sample_teardown);

Test(image_verify, intact_image_passes)
{
	cr_assert_eq(pyfs_image_verify_payload(image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_verify_files(image, &err), 0, "%s", err.msg);
}

/* Flip one byte of inode index's data (payload or names) in place. */
static void corrupt_data_of(uint32_t index)
{
	const struct pyfs_inode *ino = pyfs_image_inode(image, index);
	uint64_t size;
	uint8_t *base;

	if (S_ISLNK(ino->mode)) {
		const char *target;
		size_t len;

		cr_assert_eq(pyfs_image_readlink(image, index, &target, &len), 0);
		base = (uint8_t *)target;
	} else {
		base = (uint8_t *)pyfs_image_payload(image, &size) + ino->data_offset;
	}
	base[ino->data_size - 1] ^= 0x20;
}

Test(image_verify, payload_mismatch_is_eio_with_both_checksums)
{
	char expected[64];
	uint64_t size;
	const uint8_t *payload = pyfs_image_payload(image, &size);

	corrupt_data_of(SAMPLE_HELLO);
	cr_assert_eq(pyfs_image_verify_payload(image, &err), -EIO);
	snprintf(expected, sizeof(expected), "computed 0x%016llx",
		 (unsigned long long)XXH3_64bits(payload, size));
	cr_assert(strstr(err.msg, "payload checksum mismatch"), "%s", err.msg);
	cr_assert(strstr(err.msg, expected), "%s", err.msg);
}

Test(image_verify, digest_computed_elsewhere_is_checked_like_the_payload)
{
	uint64_t size;
	const uint8_t *payload = pyfs_image_payload(image, &size);

	cr_assert_eq(pyfs_image_verify_payload_digest(image, XXH3_64bits(payload, size), &err), 0,
		     "%s", err.msg);
	cr_assert_eq(pyfs_image_verify_payload_digest(image, XXH3_64bits(payload, size) ^ 1, &err),
		     -EIO);
	cr_assert(strstr(err.msg, "payload checksum mismatch"), "%s", err.msg);
}

/* The pull hashes chunks as they arrive: any cut into pieces gives the one-shot digest. */
Test(image_checksum, pieces_in_order_give_the_whole_digest)
{
	static uint8_t data[3 * 1024 * 1024 + 17];
	static const uint64_t pieces[] = {0, 1, 63, 64, 65, 240, 1024, 4096, 65536, 1048576};

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 2654435761u >> 13);
	for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
		struct pyfs_checksum *sum = pyfs_checksum_create();
		uint64_t done = 0, step = pieces[p] ? pieces[p] : sizeof(data);

		cr_assert_not_null(sum);
		while (done < sizeof(data)) {
			uint64_t n = sizeof(data) - done < step ? sizeof(data) - done : step;

			pyfs_checksum_update(sum, data + done, n);
			pyfs_checksum_update(sum, data, 0);
			done += n;
		}
		cr_assert_eq(pyfs_checksum_digest(sum), XXH3_64bits(data, sizeof(data)),
			     "pieces of %llu bytes", (unsigned long long)step);
		pyfs_checksum_destroy(sum);
	}
}

Test(image_checksum, nothing_hashed_is_the_empty_digest)
{
	struct pyfs_checksum *sum = pyfs_checksum_create();

	cr_assert_not_null(sum);
	cr_assert_eq(pyfs_checksum_digest(sum), XXH3_64bits(NULL, 0));
	pyfs_checksum_destroy(sum);
}

Test(image_verify, file_mismatch_names_the_path)
{
	corrupt_data_of(SAMPLE_HELLO);
	cr_assert_eq(pyfs_image_verify_files(image, &err), -EIO);
	/* Either name of the hard-linked file will do. */
	cr_assert(strstr(err.msg, "checksum mismatch in 'a/hello.txt'") ||
		      strstr(err.msg, "checksum mismatch in 'hard'"),
		  "%s", err.msg);
}

Test(image_verify, symlink_mismatch_names_the_path)
{
	corrupt_data_of(SAMPLE_LINK);
	cr_assert_eq(pyfs_image_verify_files(image, &err), -EIO);
	cr_assert(strstr(err.msg, "checksum mismatch in 'a/link'"), "%s", err.msg);
}

Test(image_verify, deep_path_with_odd_bytes_is_one_line)
{
	struct helper_tree *t = helper_tree_new();
	struct pyfs_image_parts parts;
	struct pyfs_image *img;
	uint32_t dir = 0;

	dir = helper_tree_dir(t, dir, "odd\nname", 0755);
	for (int i = 0; i < 100; i++)
		dir = helper_tree_dir(t, dir, "deeper-and-deeper", 0755);
	helper_tree_file(t, dir, "leaf.py", "x = 1\n", 6, 0644);
	cr_assert_eq(helper_tree_build(t, &parts), 0);
	helper_tree_free(t);
	parts.payload[0] = 'y';
	parts.payload_checksum = XXH3_64bits(parts.payload, parts.payload_size);
	cr_assert_eq(pyfs_image_create(&parts, &img, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_verify_payload(img, &err), 0);
	cr_assert_eq(pyfs_image_verify_files(img, &err), -EIO);
	cr_assert(strstr(err.msg, "checksum mismatch in '.../"), "%s", err.msg);
	cr_assert(strstr(err.msg, "deeper-and-deeper/leaf.py'"), "%s", err.msg);
	cr_assert_null(strchr(err.msg, '\n'), "%s", err.msg);
	pyfs_image_destroy(img);
}

Test(image_verify, metadata_checksum_covers_inodes_dirents_and_names)
{
	struct pyfs_image_parts parts;
	uint64_t sum;

	helper_sample_parts(&parts);
	sum = parts.metadata_checksum;
	parts.names[0] ^= 1;
	cr_assert_neq(pyfs_metadata_checksum(parts.inodes, parts.inode_count, parts.dirents,
					     parts.dirent_count, parts.names, parts.names_size),
		      sum);
	parts.names[0] ^= 1;
	parts.dirents[0].inode ^= 1;
	cr_assert_neq(pyfs_metadata_checksum(parts.inodes, parts.inode_count, parts.dirents,
					     parts.dirent_count, parts.names, parts.names_size),
		      sum);
	parts.dirents[0].inode ^= 1;
	cr_assert_eq(pyfs_metadata_checksum(parts.inodes, parts.inode_count, parts.dirents,
					    parts.dirent_count, parts.names, parts.names_size),
		     sum);
	pyfs_image_parts_free(&parts);
	cr_assert_null(parts.inodes);
	cr_assert_eq(parts.inode_count, 0);
}

/* --- validation: one row per rule -------------------------------------------------------- */

/* A corruption applied to the sample parts; returns false to skip the reseal. */
typedef bool corrupt_fn(struct pyfs_image_parts *parts);

struct corruption {
	const char *what;
	corrupt_fn *apply;
	const char *message; /* a substring the error must contain */
};

static struct pyfs_dirent *dirent_of(struct pyfs_image_parts *p, uint32_t dir, const char *name)
{
	uint32_t j = helper_find_dirent(p, dir, name);

	cr_assert_neq(j, UINT32_MAX, "no '%s' in the sample", name);
	return &p->dirents[j];
}

static bool bad_checksum(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_B].mtime_sec++;
	return false;
}

static bool no_inodes(struct pyfs_image_parts *p)
{
	p->inode_count = 0;
	return true;
}

static bool too_many_inodes(struct pyfs_image_parts *p)
{
	p->inode_count = (uint64_t)UINT32_MAX + 1;
	return false; /* refused before anything reads that many records */
}

static bool too_many_dirents(struct pyfs_image_parts *p)
{
	p->dirent_count = UINT64_MAX / 16;
	return false;
}

static bool fifo(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_EMPTY].mode = S_IFIFO | 0644;
	return true;
}

static bool char_device(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_EMPTY].mode = S_IFCHR | 0644;
	return true;
}

static bool no_type(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_EMPTY].mode = 0644;
	return true;
}

static bool setuid_bit(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_B].mode |= S_ISUID;
	return true;
}

static bool sticky_dir(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_Z].mode |= S_ISVTX;
	return true;
}

static bool nsec_too_big(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_B].mtime_nsec = 1000000000u;
	return true;
}

static bool file_past_payload(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_HELLO].data_size = p->payload_size + 1;
	p->inodes[SAMPLE_HELLO].data_offset = 0;
	return true;
}

static bool file_offset_past_payload(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_EMPTY].data_offset = p->payload_size + 1;
	return true;
}

static bool file_offset_wraps(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_HELLO].data_offset = UINT64_MAX - 2;
	p->inodes[SAMPLE_HELLO].data_size = 16;
	return true;
}

static bool file_size_wraps(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_HELLO].data_offset = 8;
	p->inodes[SAMPLE_HELLO].data_size = UINT64_MAX - 4;
	return true;
}

static bool symlink_with_nul(struct pyfs_image_parts *p)
{
	p->names[p->inodes[SAMPLE_SYM].data_offset + 3] = '\0';
	return true;
}

static bool symlink_empty(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_SYM].data_size = 0;
	return true;
}

static bool symlink_too_long(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_SYM].data_offset = 0;
	p->inodes[SAMPLE_SYM].data_size = PYFS_SYMLINK_MAX + 1;
	return true;
}

static bool symlink_past_names(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_SYM].data_offset = p->names_size - 2;
	return true;
}

static bool symlink_wraps(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_SYM].data_offset = UINT64_MAX - 1;
	return true;
}

static bool dir_with_data(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_Z].data_size = 1;
	return true;
}

static bool dir_with_checksum(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_Z].checksum = 1;
	return true;
}

static bool dir_entries_past_dirents(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_Z].first_entry = (uint32_t)p->dirent_count;
	p->inodes[SAMPLE_Z].entry_count = 1;
	return true;
}

static bool dir_entries_wrap(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_Z].first_entry = UINT32_MAX;
	p->inodes[SAMPLE_Z].entry_count = 2;
	return true;
}

static bool file_with_parent(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_B].parent = SAMPLE_A;
	return true;
}

static bool file_with_entries(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_B].entry_count = 1;
	return true;
}

static bool name_with_slash(struct pyfs_image_parts *p)
{
	struct pyfs_dirent *d = dirent_of(p, SAMPLE_ROOT, "b.txt");

	p->names[d->name_offset + 1] = '/';
	return true;
}

static bool name_with_nul(struct pyfs_image_parts *p)
{
	struct pyfs_dirent *d = dirent_of(p, SAMPLE_ROOT, "b.txt");

	p->names[d->name_offset + 1] = '\0';
	return true;
}

static bool name_dot(struct pyfs_image_parts *p)
{
	struct pyfs_dirent *d = dirent_of(p, SAMPLE_ROOT, "a");

	p->names[d->name_offset] = '.';
	return true;
}

static bool name_dotdot(struct pyfs_image_parts *p)
{
	struct pyfs_dirent *d = dirent_of(p, SAMPLE_ROOT, "b.txt");

	p->names[d->name_offset] = '.';
	p->names[d->name_offset + 1] = '.';
	d->name_length = 2;
	return true;
}

static bool name_empty(struct pyfs_image_parts *p)
{
	dirent_of(p, SAMPLE_ROOT, "b.txt")->name_length = 0;
	return true;
}

static bool name_too_long(struct pyfs_image_parts *p)
{
	struct pyfs_dirent *d = dirent_of(p, SAMPLE_ROOT, "b.txt");

	d->name_offset = 0;
	d->name_length = PYFS_NAME_MAX + 1;
	return true;
}

static bool name_past_names(struct pyfs_image_parts *p)
{
	dirent_of(p, SAMPLE_ROOT, "b.txt")->name_offset = p->names_size - 1;
	return true;
}

static bool name_offset_wraps(struct pyfs_image_parts *p)
{
	dirent_of(p, SAMPLE_ROOT, "b.txt")->name_offset = UINT64_MAX - 1;
	return true;
}

static bool dirent_inode_out_of_range(struct pyfs_image_parts *p)
{
	dirent_of(p, SAMPLE_ROOT, "b.txt")->inode = (uint32_t)p->inode_count;
	return true;
}

static bool duplicate_names(struct pyfs_image_parts *p)
{
	/* "copy.txt" becomes a second "b.txt"... (names are compared as bytes) */
	struct pyfs_dirent *b = dirent_of(p, SAMPLE_ROOT, "b.txt");
	struct pyfs_dirent *copy = dirent_of(p, SAMPLE_ROOT, "copy.txt");

	copy->name_offset = b->name_offset;
	copy->name_length = b->name_length;
	return true;
}

static bool unsorted_names(struct pyfs_image_parts *p)
{
	struct pyfs_dirent *b = dirent_of(p, SAMPLE_ROOT, "b.txt");
	struct pyfs_dirent *copy = dirent_of(p, SAMPLE_ROOT, "copy.txt");
	struct pyfs_dirent tmp = *b;

	*b = *copy;
	*copy = tmp;
	return true;
}

static bool prefix_after_longer_name(struct pyfs_image_parts *p)
{
	/* "b.txt" then "b": the shorter of two names with a common prefix sorts first. */
	struct pyfs_dirent *copy = dirent_of(p, SAMPLE_ROOT, "copy.txt");

	copy->name_offset = dirent_of(p, SAMPLE_ROOT, "b.txt")->name_offset;
	copy->name_length = 1;
	return true;
}

static bool root_is_a_file(struct pyfs_image_parts *p)
{
	memset(&p->inodes[SAMPLE_ROOT], 0, sizeof(p->inodes[0]));
	p->inodes[SAMPLE_ROOT].mode = S_IFREG | 0644;
	p->inodes[SAMPLE_ROOT].nlink = 1;
	p->inodes[SAMPLE_ROOT].checksum = XXH3_64bits(NULL, 0);
	return true;
}

static bool root_parent_not_itself(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_ROOT].parent = SAMPLE_A;
	return true;
}

static bool root_named(struct pyfs_image_parts *p)
{
	dirent_of(p, SAMPLE_A, "hello.txt")->inode = SAMPLE_ROOT;
	return true;
}

static bool directory_named_twice(struct pyfs_image_parts *p)
{
	dirent_of(p, SAMPLE_ROOT, "b.txt")->inode = SAMPLE_A;
	return true;
}

static bool directory_hard_link_elsewhere(struct pyfs_image_parts *p)
{
	/* a/link names z/, whose parent says root: a directory hard link */
	dirent_of(p, SAMPLE_A, "link")->inode = SAMPLE_Z;
	return true;
}

static bool wrong_parent(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_Z].parent = SAMPLE_A;
	return true;
}

static bool overlapping_entries(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_Z].first_entry = p->inodes[SAMPLE_A].first_entry;
	p->inodes[SAMPLE_Z].entry_count = 1;
	return true;
}

static bool dirent_in_no_directory(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_A].entry_count--; /* drops "link" */
	return true;
}

static bool orphan_inode(struct pyfs_image_parts *p)
{
	/* "copy.txt" names b.txt's inode instead: copy.txt's inode has no name left. */
	dirent_of(p, SAMPLE_ROOT, "copy.txt")->inode = SAMPLE_B;
	p->inodes[SAMPLE_B].nlink = 2;
	return true;
}

static bool file_nlink_too_high(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_B].nlink = 2;
	return true;
}

static bool hard_link_nlink_too_low(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_HELLO].nlink = 1;
	return true;
}

static bool dir_nlink_wrong(struct pyfs_image_parts *p)
{
	p->inodes[SAMPLE_ROOT].nlink = 3;
	return true;
}

/*
 * A cycle the other rules cannot see: x/ holds y/ and y/ holds x/, each the
 * recorded parent of the other, neither named by the root.
 */
static bool cycle(struct pyfs_image_parts *p)
{
	struct pyfs_image_parts c;

	pyfs_image_parts_free(p);
	helper_parts_alloc(&c, 3, 2, 2, 0);
	c.inodes[0] = (struct pyfs_inode){.mode = S_IFDIR | 0755, .nlink = 2};
	c.inodes[1] = (struct pyfs_inode){
	    .mode = S_IFDIR | 0755, .nlink = 3, .parent = 2, .first_entry = 0, .entry_count = 1};
	c.inodes[2] = (struct pyfs_inode){
	    .mode = S_IFDIR | 0755, .nlink = 3, .parent = 1, .first_entry = 1, .entry_count = 1};
	memcpy(c.names, "yx", 2);
	c.dirents[0] = (struct pyfs_dirent){.name_offset = 0, .name_length = 1, .inode = 2};
	c.dirents[1] = (struct pyfs_dirent){.name_offset = 1, .name_length = 1, .inode = 1};
	*p = c;
	return true;
}

static const struct corruption corruptions[] = {
    {"metadata checksum", bad_checksum, "metadata checksum mismatch (stored 0x"},
    {"no inodes", no_inodes, "no inodes"},
    {"inode count over uint32", too_many_inodes, "4294967296 inodes"},
    {"dirent count over uint32", too_many_dirents, "exceed the limit"},
    {"fifo", fifo, "inode 6: unsupported file type (mode 010644"},
    {"character device", char_device, "inode 6: unsupported file type (mode 020644"},
    {"mode without a type", no_type, "inode 6: unsupported file type (mode 0644"},
    {"setuid", setuid_bit, "inode 4: mode 0104600 has bits beyond the file type and 0777"},
    {"sticky", sticky_dir, "inode 8: mode 041755 has bits beyond"},
    {"mtime_nsec 1e9", nsec_too_big, "inode 4: mtime_nsec 1000000000 is not below"},
    {"file data past payload", file_past_payload,
     "inode 2: file data [offset 0, size 33] "
     "lies outside the payload (size 32)"},
    {"file offset past payload", file_offset_past_payload,
     "inode 6: file data [offset 33, size 0] lies outside the payload"},
    {"file offset + size wraps", file_offset_wraps,
     "inode 2: file data [offset 18446744073709551613, size 16] lies outside the payload"},
    {"file size wraps", file_size_wraps, "[offset 8, size 18446744073709551611] lies outside"},
    {"symlink target with NUL", symlink_with_nul, "inode 7: symlink target contains a NUL"},
    {"empty symlink target", symlink_empty, "inode 7: symlink target length 0 is not in"},
    {"symlink target too long", symlink_too_long, "symlink target length 4096 is not in 1..4095"},
    {"symlink target past names", symlink_past_names, "inode 7: symlink target [offset"},
    {"symlink offset wraps", symlink_wraps, "lies outside the names"},
    {"directory with data", dir_with_data, "inode 8: directory has data fields set"},
    {"directory with checksum", dir_with_checksum, "directory has data fields set"},
    {"entries past dirents", dir_entries_past_dirents,
     "inode 8: directory entries [first 9, count 1] lie outside the dirents (count 9)"},
    {"entries wrap", dir_entries_wrap, "directory entries [first 4294967295, count 2] lie outside"},
    {"file with parent", file_with_parent, "inode 4: non-directory has directory fields set"},
    {"file with entries", file_with_entries, "non-directory has directory fields set"},
    {"name with slash", name_with_slash, "name 'b/txt' contains '/'"},
    {"name with NUL", name_with_nul, "name 'b\\x00txt' contains a NUL byte"},
    {"name '.'", name_dot, "name '.' is reserved"},
    {"name '..'", name_dotdot, "name '..' is reserved"},
    {"empty name", name_empty, "name length 0 is not in 1..255"},
    {"name too long", name_too_long, "name length 256 is not in 1..255"},
    {"name past names", name_past_names, "lies outside the names"},
    {"name offset wraps", name_offset_wraps, "name [offset 18446744073709551614, length 5] lies"},
    {"dirent inode out of range", dirent_inode_out_of_range,
     "inode 9 is out of range (inode count 9)"},
    {"duplicate names", duplicate_names, "directory inode 0: duplicate name 'b.txt'"},
    {"unsorted names", unsorted_names, "names are not sorted ('copy.txt' before 'b.txt')"},
    {"shorter name after longer", prefix_after_longer_name,
     "names are not sorted ('b.txt' before 'b')"},
    {"root is a file", root_is_a_file, "the root inode is not a directory"},
    {"root parent", root_parent_not_itself, "the root directory records parent 1"},
    {"root named", root_named, "directory inode 1 names the root directory as 'hello.txt'"},
    {"directory named twice", directory_named_twice,
     "directory inode 1 is named more than once (again as 'b.txt'"},
    {"directory hard link", directory_hard_link_elsewhere,
     "directory inode 8 is named more than once (again as 'link' in directory inode 1)"},
    {"wrong parent", wrong_parent,
     "directory inode 8 is named 'z' in directory inode 0 but "
     "records parent 1"},
    {"overlapping entries", overlapping_entries,
     "directory inode 8: entries [first 7, count 1] overlap another directory's entries"},
    {"dirent in no directory", dirent_in_no_directory, "dirent 8 belongs to no directory"},
    {"orphan inode", orphan_inode, "inode 5 is not named in any directory (orphan)"},
    {"file nlink too high", file_nlink_too_high, "inode 4: nlink 2 does not match its 1 names"},
    {"hard link nlink too low", hard_link_nlink_too_low,
     "inode 2: nlink 1 does not match its 2 names"},
    {"directory nlink", dir_nlink_wrong,
     "directory inode 0: nlink 3 does not match its 2 subdirectories (expected 4)"},
    {"cycle", cycle, "directory inode 1 is not reachable from the root (cycle)"},
};

/*
 * Criterion runs each row in a fresh process of this program, where the
 * addresses in the table differ (PIE): rows are passed as indexes.
 */
ParameterizedTestParameters(image_validate, refuses_corrupt_parts)
{
	static size_t rows[sizeof(corruptions) / sizeof(corruptions[0])];

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		rows[i] = i;
	return cr_make_param_array(size_t, rows, sizeof(rows) / sizeof(rows[0]));
}

ParameterizedTest(size_t *row, image_validate, refuses_corrupt_parts)
{
	const struct corruption *c = &corruptions[*row];
	struct pyfs_image_parts parts, saved, orig;
	struct pyfs_image *img = (struct pyfs_image *)&parts; /* must stay untouched */
	int ret;

	helper_sample_parts(&parts);
	orig = parts;
	if (c->apply(&parts))
		helper_parts_reseal(&parts);
	saved = parts;
	memset(&err, 0, sizeof(err));
	ret = pyfs_image_create(&parts, &img, &err);
	cr_assert_eq(ret, -EINVAL, "%s: got %d (%s)", c->what, ret, err.msg);
	cr_assert(strstr(err.msg, "invalid archive: "), "%s: %s", c->what, err.msg);
	cr_assert(strstr(err.msg, c->message), "%s: expected '%s' in '%s'", c->what, c->message,
		  err.msg);
	cr_assert_eq(img, (struct pyfs_image *)&parts, "%s: *out set on failure", c->what);
	cr_assert_eq(memcmp(&parts, &saved, sizeof(parts)), 0, "%s: parts changed", c->what);

	/* The metadata-only check applies the same rules, without the payload bytes. */
	parts.payload = NULL;
	memset(&err, 0, sizeof(err));
	ret = pyfs_image_check_metadata(&parts, &err);
	parts.payload = saved.payload;
	cr_assert_eq(ret, -EINVAL, "%s: check_metadata got %d (%s)", c->what, ret, err.msg);
	cr_assert(strstr(err.msg, c->message), "%s: check_metadata: expected '%s' in '%s'", c->what,
		  c->message, err.msg);
	cr_assert_eq(memcmp(&parts, &saved, sizeof(parts)), 0, "%s: check_metadata changed parts",
		     c->what);
	if (parts.inode_count > UINT32_MAX || parts.dirent_count > UINT32_MAX) {
		/* The counts were faked: free what was really allocated. */
		parts.inode_count = orig.inode_count;
		parts.dirent_count = orig.dirent_count;
	}
	pyfs_image_parts_free(&parts);
}

Test(image_validate, check_metadata_accepts_the_sample_without_its_payload)
{
	struct pyfs_image_parts parts, saved;
	uint8_t *payload;

	helper_sample_parts(&parts);
	payload = parts.payload;
	parts.payload = NULL; /* only payload_size bounds the files */
	saved = parts;
	memset(&err, 0, sizeof(err));
	cr_assert_eq(pyfs_image_check_metadata(&parts, &err), 0, "%s", err.msg);
	cr_assert_eq(memcmp(&parts, &saved, sizeof(parts)), 0, "parts changed");
	cr_assert_eq(err.msg[0], '\0', "message on success: %s", err.msg);
	parts.payload = payload;
	pyfs_image_parts_free(&parts);
}

Test(image_validate, sample_is_valid_and_parts_are_taken)
{
	struct pyfs_image_parts parts;
	struct pyfs_image *img = NULL;

	helper_sample_parts(&parts);
	cr_assert_eq(pyfs_image_create(&parts, &img, &err), 0, "%s", err.msg);
	cr_assert_not_null(img);
	cr_assert_null(parts.inodes);
	cr_assert_null(parts.payload);
	cr_assert_eq(parts.inode_count, 0);
	pyfs_image_destroy(img);
}

Test(image_validate, root_only_image_is_valid)
{
	struct pyfs_image_parts parts;
	struct pyfs_image *img = NULL;

	helper_parts_alloc(&parts, 1, 0, 0, 0);
	parts.inodes[0] = (struct pyfs_inode){.mode = S_IFDIR | 0555, .nlink = 2};
	parts.payload_checksum = XXH3_64bits(NULL, 0); /* not 0: the hash of no bytes */
	helper_parts_reseal(&parts);
	cr_assert_eq(pyfs_image_create(&parts, &img, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_entry_count(img, 0), 0);
	cr_assert_eq(pyfs_image_verify_payload(img, &err), 0, "%s", err.msg);
	pyfs_image_destroy(img);
}

Test(image_validate, names_sort_as_unsigned_bytes)
{
	/* 0xff sorts after 'z' (memcmp order), whatever char's signedness. */
	struct helper_tree *t = helper_tree_new();
	struct pyfs_image_parts parts;
	struct pyfs_image *img;
	uint32_t found, high;

	helper_tree_file(t, 0, "z", "", 0, 0644);
	high = helper_tree_file(t, 0, "\xff", "", 0, 0644);
	helper_tree_file(t, 0, "A", "", 0, 0644);
	cr_assert_eq(helper_tree_build(t, &parts), 0);
	helper_tree_free(t);
	cr_assert_eq(pyfs_image_create(&parts, &img, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_lookup(img, 0, "\xff", 1, &found), 0);
	cr_assert_eq(found, high);
	pyfs_image_destroy(img);
}

/* A wide, deep synthetic tree: n files over n/50 directories, and a nested chain. */
static void build_big(struct pyfs_image_parts *parts, uint32_t n)
{
	struct helper_tree *t = helper_tree_new();
	uint32_t dir = 0, chain = 0;
	char name[64];

	for (uint32_t i = 0; i < n; i++) {
		if (i % 50 == 0) {
			snprintf(name, sizeof(name), "pkg%07u", (unsigned)(n - i));
			dir = helper_tree_dir(t, 0, name, 0755);
		}
		snprintf(name, sizeof(name), "module_%u.py", (unsigned)(i * 7919u % n));
		helper_tree_file(t, dir, name, name, strlen(name), 0644);
	}
	for (int i = 0; i < 1000; i++)
		chain = helper_tree_dir(t, chain, "deep", 0755);
	cr_assert_eq(helper_tree_build(t, parts), 0);
	helper_tree_free(t);
}

Test(image_validate, large_tree_validates_in_linear_time, .timeout = 20)
{
	struct pyfs_image_parts parts;
	struct pyfs_image *img;
	struct timespec t0, t1;
	uint32_t found;
	double ms;

	build_big(&parts, 200000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(pyfs_image_create(&parts, &img, &err), 0, "%s", err.msg);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	cr_log_info("validated %u inodes in %.1f ms", pyfs_image_inode_count(img), ms);
	/* Milliseconds in a normal build; generous for ASan/UBSan on a loaded machine. */
	cr_expect_lt(ms, 2000.0, "validation took %.0f ms", ms);
	cr_assert_eq(pyfs_image_resolve(img, "pkg0200000/module_0.py", &found), 0);
	cr_assert_eq(pyfs_image_verify_files(img, &err), 0, "%s", err.msg);
	pyfs_image_destroy(img);
}

/* --- compressed payloads (format version 2) ---------------------------------------------- */

#define ZBLOCK 4096u

/* The compressible tree, built raw into *raw and compressed into *z (both valid parts). */
static void compressed_parts(struct pyfs_image_parts *raw, struct pyfs_image_parts *z)
{
	struct helper_tree *tree = helper_compressible_tree();

	cr_assert_eq(helper_tree_build(tree, raw), 0);
	cr_assert_eq(helper_tree_build(tree, z), 0);
	helper_tree_free(tree);
	helper_parts_compress(z, ZBLOCK);
}

/* A raw image of the compressible tree and a compressed one of the same tree. */
static struct pyfs_image *raw_image, *z_image;

static void compressed_setup(void)
{
	struct pyfs_image_parts raw, z;

	compressed_parts(&raw, &z);
	memset(&err, 0, sizeof(err));
	cr_assert_eq(pyfs_image_create(&raw, &raw_image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_create(&z, &z_image, &err), 0, "%s", err.msg);
}

static void compressed_teardown(void)
{
	pyfs_image_destroy(raw_image);
	pyfs_image_destroy(z_image);
	raw_image = z_image = NULL;
}

/* Bytes [off, off + size) of file index read through cache equal those of the raw image. */
static void expect_same_read(struct pyfs_block_cache *cache, uint32_t index, uint64_t off,
			     uint64_t size)
{
	const uint8_t *want, *got;
	size_t want_len, got_len;

	cr_assert_eq(pyfs_image_read(raw_image, index, off, size, &want, &want_len), 0);
	cr_assert_eq(pyfs_image_read_cached(z_image, cache, index, off, size, &got, &got_len), 0,
		     "inode %u [%lu, +%lu)", index, (unsigned long)off, (unsigned long)size);
	cr_assert_eq(got_len, want_len, "inode %u [%lu, +%lu): %zu bytes, expected %zu", index,
		     (unsigned long)off, (unsigned long)size, got_len, want_len);
	cr_assert_eq(memcmp(got, want, want_len), 0, "inode %u [%lu, +%lu) differs", index,
		     (unsigned long)off, (unsigned long)size);
}

Test(image_compressed, has_both_kinds_of_block, .init = compressed_setup,
     .fini = compressed_teardown)
{
	const struct pyfs_image_parts *p = pyfs_image_parts(z_image);
	uint64_t zstd = 0, raw = 0;
	struct pyfs_image_totals t;

	cr_assert(pyfs_image_compressed(z_image));
	cr_assert_not(pyfs_image_compressed(raw_image));
	for (uint64_t b = 0; b < p->block_count; b++)
		p->blocks[b].codec == PYFS_CODEC_ZSTD ? zstd++ : raw++;
	cr_assert(zstd >= 2 && raw >= 1, "%lu zstd and %lu raw blocks", (unsigned long)zstd,
		  (unsigned long)raw);
	pyfs_image_get_totals(z_image, &t);
	cr_assert_eq(t.blocks, p->block_count);
	cr_assert_eq(t.raw_bytes, pyfs_image_parts(raw_image)->payload_size);
	cr_assert_lt(t.payload_bytes, t.raw_bytes);
}

Test(image_compressed, reads_give_the_raw_bytes_at_every_offset, .init = compressed_setup,
     .fini = compressed_teardown)
{
	struct pyfs_block_cache *cache = pyfs_block_cache_create(z_image);
	static const uint64_t sizes[] = {1,	 7,	     100,	 ZBLOCK - 1,
					 ZBLOCK, ZBLOCK + 1, 3 * ZBLOCK, 1 << 20};

	cr_assert_not_null(cache);
	for (uint32_t i = 0; i < pyfs_image_inode_count(z_image); i++) {
		const struct pyfs_inode *ino = pyfs_image_inode(z_image, i);

		if (!S_ISREG(ino->mode))
			continue;
		for (uint64_t off = 0; off <= ino->data_size + 1; off += ino->data_size / 7 + 1)
			for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
				expect_same_read(cache, i, off, sizes[s]);
	}
	pyfs_block_cache_destroy(cache);
}

Test(image_compressed, plain_read_refuses_a_compressed_image, .init = compressed_setup,
     .fini = compressed_teardown)
{
	const uint8_t *data;
	uint32_t big;
	size_t len;

	cr_assert_eq(pyfs_image_resolve(z_image, "big.txt", &big), 0);
	cr_assert_eq(pyfs_image_read(z_image, big, 0, 10, &data, &len), -EIO);
	cr_assert_eq(pyfs_image_read_cached(z_image, NULL, big, 0, 10, &data, &len), -EIO);
}

Test(image_compressed, inflate_gives_the_raw_payload, .init = compressed_setup,
     .fini = compressed_teardown)
{
	uint64_t raw_size, size;
	const uint8_t *raw = pyfs_image_payload(raw_image, &raw_size);
	const uint8_t *inflated;

	cr_assert_eq(pyfs_image_inflate(z_image, 3, &err), 0, "%s", err.msg);
	cr_assert_not(pyfs_image_compressed(z_image));
	inflated = pyfs_image_payload(z_image, &size);
	cr_assert_eq(size, raw_size);
	cr_assert_eq(memcmp(inflated, raw, size), 0);
	cr_assert_eq(pyfs_image_verify_payload(z_image, &err), 0, "%s", err.msg);
	cr_assert_eq(pyfs_image_verify_files(z_image, &err), 0, "%s", err.msg);
}

Test(image_compressed, verify_passes_then_names_a_flipped_block, .init = compressed_setup,
     .fini = compressed_teardown)
{
	const struct pyfs_image_parts *p = pyfs_image_parts(z_image);
	char want[64];

	cr_assert_eq(pyfs_image_verify_payload(z_image, &err), 0, "%s", err.msg);
	p->payload[p->blocks[2].offset + 5] ^= 0x20;
	cr_assert_eq(pyfs_image_verify_payload(z_image, &err), -EIO);
	snprintf(want, sizeof(want), "block 2 checksum mismatch (stored 0x");
	cr_assert(strstr(err.msg, want), "%s", err.msg);
}

/* The first zstd block of p. */
static uint64_t first_zstd_block(const struct pyfs_image_parts *p)
{
	for (uint64_t b = 0; b < p->block_count; b++)
		if (p->blocks[b].codec == PYFS_CODEC_ZSTD)
			return b;
	cr_assert_fail("no zstd block");
	return 0;
}

Test(image_compressed, frame_that_lies_about_its_size_fails_verify, .init = compressed_setup,
     .fini = compressed_teardown)
{
	const struct pyfs_image_parts *p = pyfs_image_parts(z_image);
	uint64_t b = first_zstd_block(p);
	struct pyfs_block *blk = &p->blocks[b];

	/* A valid frame of other contents, checksum made to match: only the header tells. */
	{
		uint8_t other[64];
		size_t n = ZSTD_compress(other, sizeof(other), "x", 1, 1);

		cr_assert_leq(n, blk->stored_size);
		memcpy(p->payload + blk->offset, other, n);
		blk->checksum = XXH3_64bits(p->payload + blk->offset, blk->stored_size);
	}
	cr_assert_eq(pyfs_image_verify_payload(z_image, &err), -EIO);
	cr_assert(strstr(err.msg, "the zstd frame does not announce its"), "%s", err.msg);
}

Test(image_compressed, undecodable_block_is_eio_and_the_rest_still_reads, .init = compressed_setup,
     .fini = compressed_teardown)
{
	const struct pyfs_image_parts *p = pyfs_image_parts(z_image);
	struct pyfs_block_cache *cache = pyfs_block_cache_create(z_image);
	uint64_t b = first_zstd_block(p);
	struct pyfs_block *blk = &p->blocks[b];
	const uint8_t *data;
	uint32_t big;
	size_t len;

	cr_assert_not_null(cache);
	cr_assert_eq(pyfs_image_resolve(z_image, "big.txt", &big), 0);
	/* Garbage after the frame header: the header is fine, the data is not. */
	memset(p->payload + blk->offset + 6, 0xff, blk->stored_size - 6);
	for (int i = 0; i < 2; i++) {
		uint32_t file = UINT32_MAX;

		for (uint32_t j = 0; j < pyfs_image_inode_count(z_image); j++) {
			const struct pyfs_inode *ino = pyfs_image_inode(z_image, j);

			if (S_ISREG(ino->mode) && ino->data_size &&
			    ino->data_offset / ZBLOCK <= b &&
			    (ino->data_offset + ino->data_size - 1) / ZBLOCK >= b)
				file = j;
		}
		cr_assert_neq(file, UINT32_MAX);
		{
			uint64_t start = pyfs_image_inode(z_image, file)->data_offset;
			uint64_t off = b * ZBLOCK > start ? b * ZBLOCK - start : 0;

			cr_assert_eq(
			    pyfs_image_read_cached(z_image, cache, file, off, 1, &data, &len), -EIO,
			    "read %d of the broken block", i);
		}
	}
	/* Another block still serves. */
	for (uint32_t j = 0; j < pyfs_image_inode_count(z_image); j++) {
		const struct pyfs_inode *ino = pyfs_image_inode(z_image, j);

		if (S_ISREG(ino->mode) && ino->data_size &&
		    (ino->data_offset + ino->data_size - 1) / ZBLOCK < b) {
			expect_same_read(cache, j, 0, ino->data_size);
			break;
		}
	}
	pyfs_block_cache_destroy(cache);
}

Test(image_compressed, metadata_checksum_covers_the_blocks)
{
	struct pyfs_image_parts raw, z;
	struct pyfs_image *img = NULL;

	compressed_parts(&raw, &z);
	pyfs_image_parts_free(&raw);
	z.blocks[1].checksum ^= 1;
	cr_assert_eq(pyfs_image_create(&z, &img, &err), -EINVAL);
	cr_assert(strstr(err.msg, "metadata checksum mismatch"), "%s", err.msg);
	pyfs_image_parts_free(&z);
}

/* One row per rule of the block index; applied to compressed parts, then resealed. */
typedef void zcorrupt_fn(struct pyfs_image_parts *parts);

static void z_block_size_odd(struct pyfs_image_parts *p)
{
	p->block_size = 6000;
}

static void z_block_size_small(struct pyfs_image_parts *p)
{
	p->block_size = 2048;
}

static void z_block_size_big(struct pyfs_image_parts *p)
{
	p->block_size = 2u << 20;
}

static void z_too_few_blocks(struct pyfs_image_parts *p)
{
	p->block_count--;
}

static void z_raw_size_lies(struct pyfs_image_parts *p)
{
	p->raw_size += ZBLOCK;
}

static void z_gap(struct pyfs_image_parts *p)
{
	p->blocks[2].offset++;
}

static void z_overlap(struct pyfs_image_parts *p)
{
	p->blocks[3].offset--;
}

static void z_out_of_range(struct pyfs_image_parts *p)
{
	p->blocks[p->block_count - 1].stored_size = 0xfffffff0u;
	p->blocks[p->block_count - 1].codec = PYFS_CODEC_ZSTD;
}

static void z_first_not_at_zero(struct pyfs_image_parts *p)
{
	p->blocks[0].offset = 1;
}

static void z_raw_wrong_size(struct pyfs_image_parts *p)
{
	for (uint64_t b = 0; b < p->block_count; b++)
		if (p->blocks[b].codec == PYFS_CODEC_ZSTD) {
			p->blocks[b].codec = PYFS_CODEC_RAW;
			return;
		}
}

static void z_zstd_not_smaller(struct pyfs_image_parts *p)
{
	for (uint64_t b = 0; b < p->block_count; b++)
		if (p->blocks[b].codec == PYFS_CODEC_RAW) {
			p->blocks[b].codec = PYFS_CODEC_ZSTD;
			return;
		}
}

static void z_unknown_codec(struct pyfs_image_parts *p)
{
	p->blocks[1].codec = 7;
}

static void z_short_of_payload(struct pyfs_image_parts *p)
{
	p->payload_size++;
}

static void z_file_past_raw(struct pyfs_image_parts *p)
{
	for (uint64_t i = 0; i < p->inode_count; i++)
		if (S_ISREG(p->inodes[i].mode) && p->inodes[i].data_size) {
			p->inodes[i].data_offset = p->raw_size;
			return;
		}
}

static void z_blocks_without_size(struct pyfs_image_parts *p)
{
	p->block_size = 0;
}

static const struct {
	const char *what;
	zcorrupt_fn *apply;
	const char *message;
} zcorruptions[] = {
    {"block size not a power of two", z_block_size_odd,
     "block size 6000 is not a power of two in 4096..1048576"},
    {"block size too small", z_block_size_small, "block size 2048 is not a power of two"},
    {"block size too big", z_block_size_big, "block size 2097152 is not a power of two"},
    {"too few blocks", z_too_few_blocks,
     "blocks for 29032 raw bytes in blocks of 4096 (expected 8)"},
    {"raw size lies", z_raw_size_lies, "raw bytes in blocks of 4096 (expected 9)"},
    {"gap between blocks", z_gap, "block 2: stored at offset"},
    {"overlapping blocks", z_overlap, "block 3: stored at offset"},
    {"first block not at 0", z_first_not_at_zero,
     "block 0: stored at offset 1 but the previous block ends at 0"},
    {"block out of range", z_out_of_range, "lies outside the payload"},
    {"raw block of the wrong size", z_raw_wrong_size, "stored raw in"},
    {"zstd block not smaller", z_zstd_not_smaller, "compressed size 4096 is not in 1..4095"},
    {"unknown codec", z_unknown_codec, "block 1: unknown codec 7"},
    {"blocks end before the payload", z_short_of_payload, "the blocks end at"},
    {"file past the raw contents", z_file_past_raw, "lies outside the raw contents (size 29032)"},
    {"blocks without a block size", z_blocks_without_size, "without a block size"},
};

ParameterizedTestParameters(image_validate, refuses_lying_block_index)
{
	static size_t rows[sizeof(zcorruptions) / sizeof(zcorruptions[0])];

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		rows[i] = i;
	return cr_make_param_array(size_t, rows, sizeof(rows) / sizeof(rows[0]));
}

ParameterizedTest(size_t *row, image_validate, refuses_lying_block_index)
{
	struct pyfs_image_parts raw, z, saved;
	struct pyfs_image *img = NULL;
	int ret;

	compressed_parts(&raw, &z);
	pyfs_image_parts_free(&raw);
	saved = z;
	zcorruptions[*row].apply(&z);
	helper_parts_reseal(&z);
	memset(&err, 0, sizeof(err));
	ret = pyfs_image_create(&z, &img, &err);
	cr_assert_eq(ret, -EINVAL, "%s: got %d (%s)", zcorruptions[*row].what, ret, err.msg);
	cr_assert(strstr(err.msg, "invalid archive: "), "%s", err.msg);
	cr_assert(strstr(err.msg, zcorruptions[*row].message), "%s: expected '%s' in '%s'",
		  zcorruptions[*row].what, zcorruptions[*row].message, err.msg);
	cr_assert_null(img);
	memset(&err, 0, sizeof(err));
	cr_assert_eq(pyfs_image_check_metadata(&z, &err), -EINVAL, "%s", zcorruptions[*row].what);
	/* Free with the sizes the buffers were allocated with. */
	z.block_count = saved.block_count;
	z.payload_size = saved.payload_size;
	pyfs_image_parts_free(&z);
}

Test(image_compressed, decode_ahead_fills_the_shared_cache_for_the_next_read,
     .init = compressed_setup, .fini = compressed_teardown)
{
	struct pyfs_block_cache *a, *b;
	uint64_t decoded, ahead, first;
	const struct pyfs_inode *ino;
	uint32_t big;

	cr_assert_eq(pyfs_image_resolve(z_image, "big.txt", &big), 0);
	ino = pyfs_image_inode(z_image, big);
	first = ino->data_offset / ZBLOCK;
	cr_assert_eq(pyfs_image_parts(z_image)->blocks[first + 2].codec, PYFS_CODEC_ZSTD);
	a = pyfs_block_cache_create(z_image);
	b = pyfs_block_cache_create(z_image);
	cr_assert(a && b);

	/* Without a shared cache there is nowhere to put blocks ahead. */
	expect_same_read(a, big, 0, 1);
	pyfs_image_decode_ahead(z_image, a);
	pyfs_image_decode_counts(z_image, &decoded, &ahead);
	cr_assert_eq(decoded, 1);
	cr_assert_eq(ahead, 0);

	cr_assert_eq(pyfs_image_share_blocks(z_image, 64), 0);
	/* A read of a cached block decoded nothing: nothing ahead either. */
	expect_same_read(a, big, 0, 1);
	pyfs_image_decode_ahead(z_image, a);
	pyfs_image_decode_counts(z_image, &decoded, &ahead);
	cr_assert_eq(decoded, 1);
	cr_assert_eq(ahead, 0);

	/* A cold read of blocks first+1..first+2 decodes the next two ahead... */
	expect_same_read(a, big, (first + 1) * ZBLOCK - ino->data_offset, 2 * ZBLOCK);
	pyfs_image_decode_ahead(z_image, a);
	pyfs_image_decode_counts(z_image, &decoded, &ahead);
	cr_assert_eq(decoded, 3);
	cr_assert_eq(ahead, 2);
	/* ...which another thread's read then copies instead of decoding, */
	expect_same_read(b, big, (first + 3) * ZBLOCK - ino->data_offset, 2 * ZBLOCK);
	pyfs_image_decode_counts(z_image, &decoded, &ahead);
	cr_assert_eq(decoded, 3, "blocks decoded on demand: %lu", (unsigned long)decoded);
	/* and a decode ahead of blocks already there does nothing. */
	cr_assert_eq(pyfs_image_read_cached(z_image, a, big, 0, 2 * ZBLOCK, &(const uint8_t *){0},
					    &(size_t){0}),
		     0);
	pyfs_image_decode_ahead(z_image, a);
	pyfs_image_decode_counts(z_image, &decoded, &ahead);
	cr_assert_eq(ahead, 2);
	pyfs_block_cache_destroy(a);
	pyfs_block_cache_destroy(b);
}

Test(image_compressed, decode_file_start_decodes_the_first_blocks_of_a_file,
     .init = compressed_setup, .fini = compressed_teardown)
{
	struct pyfs_block_cache *a, *b;
	uint64_t decoded, ahead, want;
	const struct pyfs_inode *ino;
	uint32_t big, dir;

	cr_assert_eq(pyfs_image_resolve(z_image, "big.txt", &big), 0);
	cr_assert_eq(pyfs_image_resolve(z_image, "", &dir), 0);
	ino = pyfs_image_inode(z_image, big);
	cr_assert_gt(ino->data_size, 4 * (uint64_t)ZBLOCK);
	a = pyfs_block_cache_create(z_image);
	b = pyfs_block_cache_create(z_image);
	cr_assert(a && b);

	/* Nowhere to put them without a shared cache; nothing for a directory. */
	pyfs_image_decode_file_start(z_image, a, big, 2 * ZBLOCK);
	cr_assert_eq(pyfs_image_share_blocks(z_image, 64), 0);
	pyfs_image_decode_file_start(z_image, a, dir, 2 * ZBLOCK);
	pyfs_image_decode_counts(z_image, &decoded, &ahead);
	cr_assert_eq(decoded + ahead, 0);

	/* The blocks of the first 2 blocks' worth of bytes (3 when not aligned)... */
	want = (ino->data_offset + 2 * ZBLOCK - 1) / ZBLOCK - ino->data_offset / ZBLOCK + 1;
	pyfs_image_decode_file_start(z_image, a, big, 2 * ZBLOCK);
	pyfs_image_decode_counts(z_image, &decoded, &ahead);
	cr_assert_eq(decoded, 0);
	cr_assert_eq(ahead, want);
	/* ...which the first read, on another thread, finds decoded, */
	expect_same_read(b, big, 0, 2 * ZBLOCK);
	pyfs_image_decode_counts(z_image, &decoded, &ahead);
	cr_assert_eq(decoded, 0, "blocks decoded on demand: %lu", (unsigned long)decoded);
	/* and never more than PYFS_DECODE_AHEAD_MAX blocks, however much is asked. */
	pyfs_image_decode_file_start(z_image, a, big, ino->data_size);
	pyfs_image_decode_counts(z_image, &decoded, &ahead);
	cr_assert_eq(ahead, PYFS_DECODE_AHEAD_MAX);
	pyfs_block_cache_destroy(a);
	pyfs_block_cache_destroy(b);
}

/* Threads reading random ranges through their own caches and the shared one. */
struct reader_arg {
	unsigned int seed;
	int failures;
};

static void *random_reader(void *p)
{
	struct reader_arg *arg = p;
	struct pyfs_block_cache *cache = pyfs_block_cache_create(z_image);
	uint32_t count = pyfs_image_inode_count(z_image);

	if (!cache) {
		arg->failures++;
		return NULL;
	}
	for (int n = 0; n < 4000; n++) {
		uint32_t i = (uint32_t)rand_r(&arg->seed) % count;
		const struct pyfs_inode *ino = pyfs_image_inode(z_image, i);
		const uint8_t *want, *got;
		size_t want_len, got_len;
		uint64_t off, size;

		if (!S_ISREG(ino->mode) || ino->data_size == 0)
			continue;
		off = (uint64_t)rand_r(&arg->seed) % ino->data_size;
		size = 1 + (uint64_t)rand_r(&arg->seed) % (3 * ZBLOCK);
		if (pyfs_image_read(raw_image, i, off, size, &want, &want_len) != 0 ||
		    pyfs_image_read_cached(z_image, cache, i, off, size, &got, &got_len) != 0 ||
		    got_len != want_len || memcmp(got, want, want_len) != 0)
			arg->failures++;
		pyfs_image_decode_ahead(z_image, cache);
	}
	pyfs_block_cache_destroy(cache);
	return NULL;
}

Test(image_compressed, threads_sharing_decoded_blocks_read_the_raw_bytes, .init = compressed_setup,
     .fini = compressed_teardown)
{
	struct reader_arg args[4];
	pthread_t tids[4];

	/* Two slots for eight blocks: constant replacement under contention. */
	cr_assert_eq(pyfs_image_share_blocks(z_image, 2), 0);
	cr_assert_eq(pyfs_image_share_blocks(raw_image, 2), 0, "a no-op when uncompressed");
	for (int t = 0; t < 4; t++) {
		args[t] = (struct reader_arg){.seed = 17u + (unsigned int)t};
		cr_assert_eq(pthread_create(&tids[t], NULL, random_reader, &args[t]), 0);
	}
	for (int t = 0; t < 4; t++) {
		pthread_join(tids[t], NULL);
		cr_assert_eq(args[t].failures, 0, "thread %d: %d wrong reads", t, args[t].failures);
	}
	/* Inflating drops the shared cache with the compressed payload. */
	cr_assert_eq(pyfs_image_inflate(z_image, 2, &err), 0, "%s", err.msg);
}
