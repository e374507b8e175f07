/*
 * fuzz_archive.c - libFuzzer target over pyfs_archive_load(): HDF5's parser of the file,
 * then the reader's checks of attributes, dataset shapes, types and layout, then the
 * image's validation.
 *
 * The input is a whole archive file. It is written to a scratch file that the library
 * opens by path, as pyfs-pack --verify or the daemon's rank 0 would open an archive. A
 * load must return 0 with an image, or a negative errno with a one-line message;
 * afterwards no HDF5 object may be left open (a leaked handle would keep the file open
 * inside HDF5, which then shares it with the next open of that path).
 * An archive that loads is also streamed (stream.h: the packer's --verify path) and, when
 * compressed, read through a block cache and inflated.
 * Crashes inside libhdf5 (not instrumented, but its faults are caught) count as findings:
 * the tools must never die by a signal on a corrupt archive.
 *
 * FUZZ_ARCHIVE_VERBOSE=1 in the environment prints the result of every load (to replay).
 * Seeds: tests/fuzz/make_seeds.py (compact rewrites of archives made by pyfs-pack).
 * Build: see tests/e2e/test_robust_fuzz.sh (archive_io.c, image.c, log.c, HDF5, MPI).
 */
#include <errno.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive_io.h"
#include "image.h"
#include "stream.h"

static int fuzz_fd = -1;
static char fuzz_path[4096];

#define fuzz_check(cond, ...)                                                                      \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_archive: broken promise: %s: ", #cond);              \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static void fuzz_remove_file(void)
{
	unlink(fuzz_path);
}

/*
 * Replace the contents of the scratch file with data. It is a real file (in $TMPDIR,
 * /tmp by default; /dev/shm keeps it in memory): HDF5 resolves the real path of what
 * it opens, which a memfd does not have.
 */
static void fuzz_write_file(const uint8_t *data, size_t size)
{
	size_t done = 0;

	if (fuzz_fd < 0) {
		const char *dir = getenv("TMPDIR");

		snprintf(fuzz_path, sizeof(fuzz_path), "%s/pyfs-fuzz-archive.XXXXXX",
			 dir && dir[0] ? dir : "/tmp");
		fuzz_fd = mkstemp(fuzz_path);
		if (fuzz_fd < 0)
			abort();
		atexit(fuzz_remove_file);
	}
	if (ftruncate(fuzz_fd, 0) < 0)
		abort();
	while (done < size) {
		ssize_t n = pwrite(fuzz_fd, data + done, size - done, (off_t)done);

		if (n <= 0)
			abort();
		done += (size_t)n;
	}
}

/* The streamed verification of the archive at path: 0 or -EIO/-EINVAL with a message. */
static void fuzz_stream(const char *path)
{
	struct pyfs_image_parts parts = {0};
	struct pyfs_archive *archive = NULL;
	struct pyfs_image *image = NULL;
	struct pyfs_stream *stream = NULL;
	struct pyfs_err err = {""};
	int ret;

	ret = pyfs_archive_open(path, &archive, &err);
	if (ret == 0)
		ret = pyfs_archive_read_metadata(archive, &parts, &err);
	if (ret == 0)
		ret = pyfs_image_create(&parts, &image, &err);
	fuzz_check(ret == 0, "a loaded archive failed to open again: %d %s", ret, err.msg);
	ret = pyfs_stream_open(archive, image, &stream, &err);
	if (ret == 0)
		ret = pyfs_stream_verify_payload(stream, &err);
	if (ret == 0)
		ret = pyfs_stream_verify_files(stream, &err);
	fuzz_check(ret == 0 || (ret == -EIO && err.msg[0] && !strchr(err.msg, '\n')),
		   "stream verify gave %d '%s'", ret, err.msg);
	pyfs_stream_close(stream);
	pyfs_image_destroy(image);
	pyfs_image_parts_free(&parts);
	pyfs_archive_close(archive);
}

/* Every file of a compressed image read through a cache, then the image inflated. */
static void fuzz_compressed(struct pyfs_image *image)
{
	struct pyfs_block_cache *cache = pyfs_block_cache_create(image);
	struct pyfs_err err = {""};
	int ret;

	fuzz_check(cache != NULL, "no block cache");
	for (uint32_t i = 0; i < pyfs_image_inode_count(image) && i < 4096; i++) {
		const struct pyfs_inode *ino = pyfs_image_inode(image, i);
		const uint8_t *data;
		size_t len;

		if (!S_ISREG(ino->mode))
			continue;
		ret = pyfs_image_read_cached(image, cache, i, 0, 1 << 20, &data, &len);
		fuzz_check(ret == 0 || ret == -EIO, "cached read gave %d", ret);
		fuzz_check(ret || len == (ino->data_size < (1 << 20) ? ino->data_size : 1 << 20),
			   "cached read of %zu bytes", len);
	}
	pyfs_block_cache_destroy(cache);
	ret = pyfs_image_inflate(image, 2, &err);
	fuzz_check(ret == 0 || (ret == -EIO && err.msg[0]), "inflate gave %d", ret);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pyfs_image *image = NULL;
	struct pyfs_err err = {""};
	ssize_t open_objects;
	int ret;

	fuzz_write_file(data, size);
	ret = pyfs_archive_load(fuzz_path, &image, &err);
	if (getenv("FUZZ_ARCHIVE_VERBOSE"))
		fprintf(stderr, "fuzz_archive: load: %d %s\n", ret, err.msg);
	if (ret == 0) {
		struct pyfs_image_totals totals;
		uint64_t payload_size = 0;
		uint32_t found = UINT32_MAX;

		fuzz_check(image != NULL, "load succeeded without an image");
		pyfs_image_get_totals(image, &totals);
		(void)pyfs_image_payload(image, &payload_size);
		fuzz_check(totals.payload_bytes == payload_size, "totals");
		fuzz_check(pyfs_image_resolve(image, "/", &found) == 0 && found == 0, "root");
		(void)pyfs_image_verify_payload(image, &err);
		(void)pyfs_image_verify_files(image, &err);
		if (pyfs_image_compressed(image))
			fuzz_compressed(image);
		pyfs_image_destroy(image);
		fuzz_stream(fuzz_path);
	} else {
		fuzz_check(ret < 0 && err.msg[0] && !strchr(err.msg, '\n'),
			   "load failed with %d but message '%s'", ret, err.msg);
	}
	open_objects = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
	fuzz_check(open_objects == 0, "%zd HDF5 objects left open after a load returning %d (%s)",
		   open_objects, ret, err.msg);
	return 0;
}
