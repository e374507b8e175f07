/*
 * fuzz_image.c - libFuzzer target over the in-RAM image: validation and every accessor.
 *
 * The input is an archive's four parts, serialized (all integers little-endian):
 *
 *   byte  0       flags: FUZZ_FIX_METADATA  store the right metadata checksum, so that
 *                                           mutations get past it into the structural
 *                                           checks (without it: the checksum in the header)
 *                        FUZZ_FIX_PAYLOAD   store the right payload checksum
 *                        FUZZ_FIX_FILES     set the checksum of every file and symlink
 *                                           whose range is in bounds (before the metadata
 *                                           checksum), so verify_files walks every inode
 *                        FUZZ_FIX_NLINK     set every nlink from the dirents as they are,
 *                                           so a changed entry reaches the tree checks
 *                                           (cycles, directory links, reachability)
 *                        FUZZ_BLOCKS        a compressed payload (format version 2): a
 *                                           block section follows the payload
 *                        FUZZ_FIX_BLOCKS    set each in-range block's checksum from its
 *                                           stored bytes, so reads reach the decoder
 *   bytes 1..16   uint32 inode_count, dirent_count, names_size, payload_size
 *   bytes 17..32  uint64 metadata_checksum, payload_checksum (used unless fixed)
 *   then          inodes, dirents, names, payload (each cut short when the input is),
 *   with BLOCKS   uint32 block_size, block_count, raw_size, then the block records,
 *   then          a probe: a path for pyfs_image_resolve, also split into names
 *                 looked up in every directory. A compressed image is read through a
 *                 block cache, then inflated and read again.
 *
 * Each part lies at the END of its own mapping, followed by an inaccessible page, so a
 * read past any array faults (ASan does not watch mmap()ed memory). When the parts are
 * accepted, every accessor is called on every inode and the answers are checked against
 * each other (an entry's name looks up to its inode, every path resolves, every inode is
 * reachable from the root, reads stay in the file); a broken promise aborts, so the
 * fuzzer reports it as a crash. tests/fuzz/make_seeds.py turns real archives into seeds.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iarchive tests/fuzz/fuzz_image.c
 *        archive/image.c archive/log.c -lxxhash   (tests/e2e/test_robust_fuzz.sh does it)
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "image.h"
#include "pyfs_format.h"

#define FUZZ_FIX_METADATA 0x01u
#define FUZZ_FIX_PAYLOAD  0x02u
#define FUZZ_FIX_FILES	  0x04u
#define FUZZ_FIX_NLINK	  0x08u
#define FUZZ_BLOCKS	  0x10u
#define FUZZ_FIX_BLOCKS	  0x20u
#define FUZZ_HEADER_SIZE  33u

/* Work per input stays bounded whatever the counts say. */
#define FUZZ_MAX_INODES_VISITED	 4096u
#define FUZZ_MAX_ENTRIES_VISITED 16384u
#define FUZZ_MAX_PATH		 8192u

/* One guarded mapping: the part ends where the inaccessible page begins. */
struct fuzz_region {
	uint8_t *base;
	size_t len;
};

static size_t fuzz_page;

#define fuzz_check(cond, ...)                                                                      \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_image: broken promise: %s: ", #cond);                \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static uint32_t fuzz_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t fuzz_u64(const uint8_t *p)
{
	return (uint64_t)fuzz_u32(p) | (uint64_t)fuzz_u32(p + 4) << 32;
}

/* size bytes of src (may be NULL when size is 0) at the end of a fresh guarded mapping. */
static void *fuzz_guarded_copy(const void *src, size_t size, struct fuzz_region *r)
{
	size_t pages = (size + fuzz_page - 1) / fuzz_page;
	uint8_t *data;

	r->len = (pages + 1) * fuzz_page;
	r->base = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->base == MAP_FAILED) {
		r->base = NULL;
		return NULL;
	}
	if (mprotect(r->base + pages * fuzz_page, fuzz_page, PROT_NONE) < 0)
		abort();
	data = r->base + pages * fuzz_page - size;
	if (size)
		memcpy(data, src, size);
	return data;
}

/*
 * The image frees its parts with pyfs_buffer_free(); that munmap() only succeeds for a
 * page-aligned part, and then unmaps only that part: unmapping whole regions after it
 * (nothing maps in between) returns every page, whatever it did.
 */
static void fuzz_region_free(struct fuzz_region *r)
{
	if (r->base)
		munmap(r->base, r->len);
	r->base = NULL;
}

/* Checksums of files and symlinks whose bytes are in bounds, as the packer would store. */
static void fuzz_fix_files(struct pyfs_image_parts *p)
{
	for (uint64_t i = 0; i < p->inode_count; i++) {
		struct pyfs_inode *ino = &p->inodes[i];
		const uint8_t *base = NULL;
		uint64_t limit = 0;

		if ((ino->mode & S_IFMT) == S_IFREG) {
			base = p->payload;
			limit = p->payload_size;
		} else if ((ino->mode & S_IFMT) == S_IFLNK) {
			base = p->names;
			limit = p->names_size;
		}
		if (base && ino->data_offset <= limit && ino->data_size <= limit - ino->data_offset)
			ino->checksum = XXH3_64bits(base + ino->data_offset, ino->data_size);
	}
}

/* Checksums of the blocks whose stored bytes are in bounds. */
static void fuzz_fix_blocks(struct pyfs_image_parts *p)
{
	for (uint64_t b = 0; b < p->block_count; b++) {
		struct pyfs_block *blk = &p->blocks[b];

		if (blk->offset <= p->payload_size &&
		    blk->stored_size <= p->payload_size - blk->offset)
			blk->checksum = XXH3_64bits(p->payload + blk->offset, blk->stored_size);
	}
}

/* nlink as the directories' entries say: names of a file, 2 + subdirectories of a directory. */
static void fuzz_fix_nlink(struct pyfs_image_parts *p)
{
	for (uint64_t i = 0; i < p->inode_count; i++)
		p->inodes[i].nlink = (p->inodes[i].mode & S_IFMT) == S_IFDIR ? 2 : 0;
	for (uint64_t d = 0; d < p->inode_count; d++) {
		const struct pyfs_inode *dir = &p->inodes[d];
		uint64_t end = (uint64_t)dir->first_entry + dir->entry_count;

		if ((dir->mode & S_IFMT) != S_IFDIR || end > p->dirent_count)
			continue;
		for (uint64_t j = dir->first_entry; j < end; j++) {
			uint32_t child = p->dirents[j].inode;

			if (child >= p->inode_count)
				continue;
			if ((p->inodes[child].mode & S_IFMT) == S_IFDIR)
				p->inodes[d].nlink++;
			else
				p->inodes[child].nlink++;
		}
	}
}

/* Touch bytes the library handed out, so an out-of-bounds pointer faults here. */
static volatile uint8_t fuzz_sink;

static void fuzz_touch(const void *data, size_t len)
{
	const uint8_t *p = data;

	if (len) {
		fuzz_sink ^= p[0];
		fuzz_sink ^= p[len / 2];
		fuzz_sink ^= p[len - 1];
	}
}

/* The reader cache of a compressed image under test (NULL for an uncompressed one). */
static struct pyfs_block_cache *fuzz_cache;

static void fuzz_file(const struct pyfs_image *image, uint32_t index, const struct stat *st)
{
	const uint64_t size = (uint64_t)st->st_size;
	const uint64_t offsets[] = {0,	  1,	    size / 2,	    size ? size - 1 : 0,
				    size, size + 1, UINT64_MAX - 1, UINT64_MAX};
	const uint64_t sizes[] = {0, 1, 4096, 131072, UINT64_MAX};
	bool z = pyfs_image_compressed(image);
	const uint8_t *data;
	size_t len;

	for (size_t o = 0; o < sizeof(offsets) / sizeof(offsets[0]); o++) {
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			uint64_t want =
			    z && sizes[s] > PYFS_CACHE_REPLY_MAX ? PYFS_CACHE_REPLY_MAX : sizes[s];
			int ret =
			    z ? pyfs_image_read_cached(image, fuzz_cache, index, offsets[o],
						       sizes[s], &data, &len)
			      : pyfs_image_read(image, index, offsets[o], sizes[s], &data, &len);
			uint64_t avail = offsets[o] < size ? size - offsets[o] : 0;

			/* A compressed block may not decode: EIO, nothing else. */
			if (z && ret == -EIO)
				continue;
			fuzz_check(ret == 0, "read of file %u returned %d", index, ret);
			fuzz_check(len <= want && len <= avail,
				   "read of file %u at %llu gave %zu bytes", index,
				   (unsigned long long)offsets[o], len);
			fuzz_check(len == (want < avail ? want : avail), "short read of file %u",
				   index);
			fuzz_touch(data, len);
		}
	}
	fuzz_check(pyfs_image_readlink(image, index, (const char **)&data, &len) == -EINVAL,
		   "readlink of file %u", index);
	fuzz_check(pyfs_image_entry_count(image, index) == 0, "entries of file %u", index);
}

static void fuzz_symlink(const struct pyfs_image *image, uint32_t index, const struct stat *st)
{
	const char *target;
	const uint8_t *data;
	size_t len;

	fuzz_check(pyfs_image_readlink(image, index, &target, &len) == 0, "readlink %u", index);
	fuzz_check(len >= 1 && len <= PYFS_SYMLINK_MAX && len == (size_t)st->st_size,
		   "symlink %u target of %zu bytes", index, len);
	fuzz_check(!memchr(target, '\0', len), "NUL in the target of symlink %u", index);
	fuzz_touch(target, len);
	fuzz_check(pyfs_image_read(image, index, 0, 1, &data, &len) == -EINVAL, "read of symlink");
}

/* Lookups that must miss in directory dir, and names that are not plain lookups. */
static void fuzz_misses(const struct pyfs_image *image, uint32_t dir, const char *name, size_t len)
{
	char buf[PYFS_NAME_MAX + 2];
	uint32_t found = UINT32_MAX;
	int ret;

	if (len < PYFS_NAME_MAX) {
		memcpy(buf, name, len);
		buf[len] = '\x01'; /* sorts right after name: next to it in the table */
		ret = pyfs_image_lookup(image, dir, buf, len + 1, &found);
		if (ret == 0)
			fuzz_check(found < pyfs_image_inode_count(image), "lookup found %u", found);
		else
			fuzz_check(ret == -ENOENT, "lookup miss gave %d", ret);
	}
	memset(buf, 'x', sizeof(buf));
	fuzz_check(pyfs_image_lookup(image, dir, buf, PYFS_NAME_MAX + 1, &found) == -ENAMETOOLONG,
		   "256-byte name");
	fuzz_check(pyfs_image_lookup(image, dir, buf, 0, &found) == -ENOENT, "empty name");
}

/* Walk the tree from the root: every entry looks up and resolves to itself. */
static void fuzz_walk(const struct pyfs_image *image)
{
	uint32_t count = pyfs_image_inode_count(image);
	uint32_t *queue = calloc(count, sizeof(*queue));
	uint8_t *seen = calloc(count, 1);
	char **paths = calloc(count, sizeof(*paths));
	uint64_t head = 0, tail = 0, entries = 0;
	uint32_t found = UINT32_MAX;

	if (!queue || !seen || !paths)
		abort();
	paths[0] = strdup("");
	queue[tail++] = PYFS_ROOT_INDEX;
	seen[PYFS_ROOT_INDEX] = 1;
	while (head < tail && entries < FUZZ_MAX_ENTRIES_VISITED) {
		uint32_t dir = queue[head++];
		uint64_t n = pyfs_image_entry_count(image, dir);
		const char *name = NULL;
		uint32_t index = 0, parent = UINT32_MAX;
		size_t len = 0, prev_len = 0;
		const char *prev = NULL;

		fuzz_check(pyfs_image_lookup(image, dir, ".", 1, &found) == 0 && found == dir,
			   "'.' of %u", dir);
		fuzz_check(pyfs_image_lookup(image, dir, "..", 2, &parent) == 0 && parent < count &&
			       pyfs_image_entry_count(image, parent) >= (dir != 0),
			   "'..' of %u", dir);
		for (uint64_t pos = 0; pos < n && entries < FUZZ_MAX_ENTRIES_VISITED; pos++) {
			size_t plen;
			char *path;

			entries++;
			fuzz_check(pyfs_image_entry(image, dir, pos, &name, &len, &index) == 0,
				   "entry %llu of %u", (unsigned long long)pos, dir);
			fuzz_check(len >= 1 && len <= PYFS_NAME_MAX && index < count && index != 0,
				   "entry %llu of %u", (unsigned long long)pos, dir);
			fuzz_check(!memchr(name, '/', len) && !memchr(name, '\0', len),
				   "separator in a name of %u", dir);
			fuzz_check(!(name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.'))),
				   "'.' or '..' listed in %u", dir);
			if (prev) {
				int c = memcmp(prev, name, prev_len < len ? prev_len : len);

				fuzz_check(c < 0 || (c == 0 && prev_len < len),
					   "entries of %u not strictly sorted", dir);
			}
			prev = name;
			prev_len = len;
			fuzz_check(pyfs_image_lookup(image, dir, name, len, &found) == 0 &&
				       found == index,
				   "entry %llu of %u does not look up to %u",
				   (unsigned long long)pos, dir, index);
			fuzz_misses(image, dir, name, len);
			if (seen[index]) {
				fuzz_check(pyfs_image_entry_count(image, index) == 0 &&
					       (pyfs_image_inode(image, index)->mode & S_IFMT) !=
						   S_IFDIR,
					   "directory %u reached twice", index);
				continue;
			}
			seen[index] = 1;
			plen = strlen(paths[dir]);
			if (plen + 1 + len + 1 > FUZZ_MAX_PATH)
				continue;
			path = malloc(plen + 1 + len + 1);
			if (!path)
				abort();
			memcpy(path, paths[dir], plen);
			path[plen] = '/';
			memcpy(path + plen + 1, name, len);
			path[plen + 1 + len] = '\0';
			fuzz_check(pyfs_image_resolve(image, path, &found) == 0 && found == index,
				   "path of %u does not resolve to it", index);
			paths[index] = path;
			if ((pyfs_image_inode(image, index)->mode & S_IFMT) == S_IFDIR) {
				uint32_t up = UINT32_MAX;

				fuzz_check(pyfs_image_lookup(image, index, "..", 2, &up) == 0 &&
					       up == dir,
					   "'..' of %u is %u, listed in %u", index, up, dir);
				queue[tail++] = index;
			}
		}
		fuzz_check(pyfs_image_entry(image, dir, n, &name, &len, &index) == -ENOENT,
			   "entry past the end of %u", dir);
	}
	if (entries < FUZZ_MAX_ENTRIES_VISITED) {
		for (uint32_t i = 0; i < count; i++)
			fuzz_check(seen[i], "inode %u is not reachable from the root", i);
	}
	for (uint32_t i = 0; i < count; i++)
		free(paths[i]);
	free(paths);
	free(seen);
	free(queue);
}

/* The probe: resolve it as a path, and look each of its names up in a few directories. */
static void fuzz_probe(const struct pyfs_image *image, const uint8_t *probe, size_t size)
{
	char *path = malloc(size + 1);
	uint32_t found = UINT32_MAX, count = pyfs_image_inode_count(image);
	int ret;

	if (!path)
		abort();
	if (size)
		memcpy(path, probe, size);
	path[size] = '\0';
	ret = pyfs_image_resolve(image, path, &found);
	fuzz_check(ret == 0 || ret == -ENOENT || ret == -ENOTDIR || ret == -ENAMETOOLONG,
		   "resolve gave %d", ret);
	if (ret == 0)
		fuzz_check(found < count, "resolve found %u", found);
	for (uint32_t dir = 0; dir < count && dir < 64; dir++) {
		ret = pyfs_image_lookup(image, dir, path, strnlen(path, size), &found);
		fuzz_check(ret == 0 || ret == -ENOENT || ret == -ENOTDIR || ret == -ENAMETOOLONG,
			   "lookup gave %d", ret);
		if (ret == 0)
			fuzz_check(found < count, "lookup found %u", found);
	}
	free(path);
}

static void fuzz_accessors(const struct pyfs_image *image, const uint8_t *probe, size_t probe_size)
{
	uint32_t count = pyfs_image_inode_count(image), found = 0;
	struct pyfs_image_totals totals;
	struct pyfs_err err = {""};
	uint64_t payload_size = 0, files = 0, dirs = 0, links = 0;
	const uint8_t *data;
	const char *name;
	struct stat st;
	size_t len;
	int ret;

	pyfs_image_get_totals(image, &totals);
	data = pyfs_image_payload(image, &payload_size);
	fuzz_touch(data, payload_size);
	fuzz_check(totals.inodes == count && totals.payload_bytes == payload_size, "totals");
	ret = pyfs_image_verify_payload(image, &err);
	fuzz_check(ret == 0 || (ret == -EIO && err.msg[0]), "verify_payload gave %d", ret);
	err.msg[0] = '\0';
	ret = pyfs_image_verify_files(image, &err);
	fuzz_check(ret == 0 || (ret == -EIO && err.msg[0] && !strchr(err.msg, '\n')),
		   "verify_files gave %d '%s'", ret, err.msg);
	fuzz_check(pyfs_image_resolve(image, "", &found) == 0 && found == 0, "root");
	fuzz_check(pyfs_image_resolve(image, "//", &found) == 0 && found == 0, "root");

	for (uint32_t i = 0; i < count && i < FUZZ_MAX_INODES_VISITED; i++) {
		const struct pyfs_inode *ino = pyfs_image_inode(image, i);

		fuzz_check(ino != NULL, "inode %u", i);
		fuzz_check(pyfs_image_stat(image, i, &st) == 0, "stat %u", i);
		fuzz_check(st.st_ino == (ino_t)i + 1 && st.st_mode == ino->mode &&
			       st.st_mtim.tv_nsec >= 0 && st.st_mtim.tv_nsec < 1000000000L,
			   "stat of %u", i);
		fuzz_check((st.st_mode & ~(mode_t)(S_IFMT | 0777)) == 0, "mode bits of %u", i);
		switch (st.st_mode & S_IFMT) {
		case S_IFREG:
			files++;
			fuzz_file(image, i, &st);
			break;
		case S_IFLNK:
			links++;
			fuzz_symlink(image, i, &st);
			break;
		case S_IFDIR:
			dirs++;
			fuzz_check(pyfs_image_read(image, i, 0, 1, &data, &len) == -EISDIR,
				   "read dir");
			fuzz_check(pyfs_image_entry(image, i, pyfs_image_entry_count(image, i),
						    &name, &len, &found) == -ENOENT,
				   "entry past the end");
			break;
		default:
			fuzz_check(false, "inode %u has mode 0%o", i, (unsigned)st.st_mode);
		}
		if ((st.st_mode & S_IFMT) != S_IFDIR) {
			fuzz_check(pyfs_image_lookup(image, i, "a", 1, &found) == -ENOTDIR,
				   "lookup in non-directory %u", i);
			fuzz_check(pyfs_image_entry(image, i, 0, &name, &len, &found) == -ENOTDIR,
				   "entry of non-directory %u", i);
		}
	}
	if (count <= FUZZ_MAX_INODES_VISITED)
		fuzz_check(files == totals.files && dirs == totals.directories &&
			       links == totals.symlinks,
			   "totals by type");
	fuzz_check(pyfs_image_inode(image, count) == NULL, "inode past the end");
	fuzz_check(pyfs_image_stat(image, count, &st) == -ENOENT, "stat past the end");
	fuzz_check(pyfs_image_read(image, count, 0, 1, &data, &len) == -EINVAL, "read past");
	fuzz_check(pyfs_image_readlink(image, count, &name, &len) == -EINVAL, "readlink past");
	fuzz_check(pyfs_image_lookup(image, count, "a", 1, &found) == -ENOENT, "lookup past");
	fuzz_check(pyfs_image_entry(image, count, 0, &name, &len, &found) == -ENOENT, "entry past");
	fuzz_check(pyfs_image_entry_count(image, count) == 0, "entry count past");
	fuzz_walk(image);
	fuzz_probe(image, probe, probe_size);
}

/* A compressed image inflated: it succeeds and reads raw, or fails and stays as it was. */
static void fuzz_inflate(struct pyfs_image *image)
{
	struct pyfs_err err = {""};
	uint64_t before = 0, after = 0;
	struct pyfs_image_totals totals;
	int ret;

	pyfs_image_payload(image, &before);
	ret = pyfs_image_inflate(image, 2, &err);
	pyfs_image_payload(image, &after);
	pyfs_image_get_totals(image, &totals);
	if (ret < 0) {
		fuzz_check(ret == -EIO && err.msg[0] && pyfs_image_compressed(image) &&
			       before == after,
			   "inflate failed with %d '%s'", ret, err.msg);
		return;
	}
	fuzz_check(!pyfs_image_compressed(image) && after == totals.raw_bytes, "inflate");
	ret = pyfs_image_verify_files(image, &err);
	fuzz_check(ret == 0 || ret == -EIO, "verify_files after inflate gave %d", ret);
	for (uint32_t i = 0; i < pyfs_image_inode_count(image) && i < FUZZ_MAX_INODES_VISITED;
	     i++) {
		struct stat st;

		if (pyfs_image_stat(image, i, &st) == 0 && S_ISREG(st.st_mode))
			fuzz_file(image, i, &st);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_region regions[5] = {{NULL, 0}};
	struct pyfs_image_parts parts;
	struct pyfs_image *image = NULL;
	struct pyfs_err err = {""};
	uint64_t want[4], got[4];
	const uint8_t *p;
	size_t left;
	uint8_t flags;
	int ret;

	if (!fuzz_page)
		fuzz_page = (size_t)sysconf(_SC_PAGESIZE);
	if (size < FUZZ_HEADER_SIZE)
		return 0;
	flags = data[0];
	want[0] = (uint64_t)fuzz_u32(data + 1) * sizeof(struct pyfs_inode);
	want[1] = (uint64_t)fuzz_u32(data + 5) * sizeof(struct pyfs_dirent);
	want[2] = fuzz_u32(data + 9);
	want[3] = fuzz_u32(data + 13);
	p = data + FUZZ_HEADER_SIZE;
	left = size - FUZZ_HEADER_SIZE;
	for (int i = 0; i < 4; i++) {
		got[i] = want[i] < left ? want[i] : left;
		p += got[i];
		left -= got[i];
	}
	memset(&parts, 0, sizeof(parts));
	parts.inode_count = got[0] / sizeof(struct pyfs_inode);
	parts.dirent_count = got[1] / sizeof(struct pyfs_dirent);
	parts.names_size = got[2];
	parts.payload_size = got[3];
	p = data + FUZZ_HEADER_SIZE;
	parts.inodes =
	    fuzz_guarded_copy(p, parts.inode_count * sizeof(struct pyfs_inode), &regions[0]);
	p += got[0];
	parts.dirents =
	    fuzz_guarded_copy(p, parts.dirent_count * sizeof(struct pyfs_dirent), &regions[1]);
	p += got[1];
	parts.names = fuzz_guarded_copy(p, parts.names_size, &regions[2]);
	p += got[2];
	parts.payload = fuzz_guarded_copy(p, parts.payload_size, &regions[3]);
	p += got[3];
	if (!parts.inodes || !parts.dirents || !parts.names || !parts.payload)
		goto out;
	left = size - (size_t)(p - data);
	if ((flags & FUZZ_BLOCKS) && left >= 12) {
		uint64_t bytes = (uint64_t)fuzz_u32(p + 4) * sizeof(struct pyfs_block);

		parts.block_size = fuzz_u32(p);
		parts.raw_size = fuzz_u32(p + 8);
		p += 12;
		left -= 12;
		if (bytes > left)
			bytes = left - left % sizeof(struct pyfs_block);
		parts.block_count = bytes / sizeof(struct pyfs_block);
		parts.blocks = fuzz_guarded_copy(p, bytes, &regions[4]);
		if (!parts.blocks)
			goto out;
		p += bytes;
		left -= bytes;
		if (flags & FUZZ_FIX_BLOCKS)
			fuzz_fix_blocks(&parts);
	}
	if (flags & FUZZ_FIX_FILES)
		fuzz_fix_files(&parts);
	if (flags & FUZZ_FIX_NLINK)
		fuzz_fix_nlink(&parts);
	parts.metadata_checksum = fuzz_u64(data + 17);
	parts.payload_checksum = fuzz_u64(data + 25);
	if (flags & FUZZ_FIX_METADATA)
		parts.metadata_checksum = pyfs_parts_metadata_checksum(&parts);
	if (flags & FUZZ_FIX_PAYLOAD)
		parts.payload_checksum = XXH3_64bits(parts.payload, parts.payload_size);

	ret = pyfs_image_create(&parts, &image, &err);
	if (ret < 0) {
		fuzz_check(ret == -EINVAL && err.msg[0] && !strchr(err.msg, '\n') &&
			       parts.inodes != NULL,
			   "create failed with %d '%s'", ret, err.msg);
		goto out;
	}
	fuzz_check(image != NULL && parts.inodes == NULL && parts.inode_count == 0,
		   "create succeeded but did not take the parts");
	if (pyfs_image_compressed(image)) {
		fuzz_check(pyfs_image_share_blocks(image, 2) == 0, "no shared cache");
		fuzz_cache = pyfs_block_cache_create(image);
		fuzz_check(fuzz_cache != NULL, "no block cache");
	}
	fuzz_accessors(image, p, left);
	if (fuzz_cache) {
		pyfs_block_cache_destroy(fuzz_cache);
		fuzz_cache = NULL;
		fuzz_inflate(image);
	}
	pyfs_image_destroy(image);
out:
	for (int i = 0; i < 5; i++)
		fuzz_region_free(&regions[i]);
	return 0;
}
