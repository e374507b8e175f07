/*
 * archive_io.c - pyfs archives as HDF5 files: the serial reader and the writer.
 *
 * The reader trusts nothing: before it allocates a byte it checks that the
 * HDF5 metadata is checksummed, the format attributes, the rank, type and size
 * of each dataset against the file size, and that the payload is one
 * contiguous allocated byte range. The writer lays
 * the file out at creation (every dataset allocated early, never filled) so
 * the payload's file offset is fixed before any content is copied, and keeps
 * every object free of timestamps so that the same input gives the same bytes.
 * HDF5 failures are described by one function, archive_h5_fail().
 */
#include "archive_io.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Payload bytes read per H5Dread: keeps every request well below 2 GiB. */
#define ARCHIVE_READ_PIECE (UINT64_C(1) << 30)

/* Alignment threshold when there is no payload to align: above HDF5's metadata blocks. */
#define ARCHIVE_ALIGN_THRESHOLD_EMPTY 4096u

/* --- HDF5 errors ------------------------------------------------------------------------- */

struct archive_h5_walk_data {
	char desc[256];
	int sys_errno; /* the first "errno = N" of the stack (a failed system call), or 0 */
};

static herr_t archive_h5_walk(unsigned n, const H5E_error2_t *e, void *data)
{
	struct archive_h5_walk_data *walk = data;
	const char *at = e->desc ? strstr(e->desc, "errno = ") : NULL;

	if (n == 0 && e->desc)
		snprintf(walk->desc, sizeof(walk->desc), "%s", e->desc);
	if (at && !walk->sys_errno)
		walk->sys_errno = atoi(at + strlen("errno = "));
	return 0;
}

/*
 * The one place HDF5 failures become pyfs errors: err gets the context given
 * by fmt, then the cause: the system error when a system call failed (HDF5's
 * text for it spans lines and carries addresses: "No space left on device"
 * is all a user needs), else the innermost message of HDF5's error stack
 * (e.g. "truncated file: eof = ..."); the stack is cleared. Returns ret or,
 * for an I/O failure (ret -EIO), the negative errno of that system call.
 */
static int archive_h5_fail(struct pyfs_err *err, int ret, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int archive_h5_fail(struct pyfs_err *err, int ret, const char *fmt, ...)
{
	struct archive_h5_walk_data walk = {"", 0};
	char context[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(context, sizeof(context), fmt, ap);
	va_end(ap);
	if (H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, archive_h5_walk, &walk) < 0 || !walk.desc[0])
		snprintf(walk.desc, sizeof(walk.desc), "HDF5 error");
	H5Eclear2(H5E_DEFAULT);
	if (ret == -EIO && walk.sys_errno > 0) {
		pyfs_err_set(err, "%s: %s", context, strerror(walk.sys_errno));
		return -walk.sys_errno;
	}
	walk.desc[strcspn(walk.desc, "\n")] = '\0';
	pyfs_err_set(err, "%s: %s", context, walk.desc);
	return ret;
}

/* Library code never lets HDF5 print its error stack. */
static int archive_h5_init(struct pyfs_err *err)
{
	if (H5open() < 0 || H5Eset_auto2(H5E_DEFAULT, NULL, NULL) < 0) {
		pyfs_err_set(err, "cannot initialize the HDF5 library");
		return -EIO;
	}
	return 0;
}

/* Close an HDF5 handle that may be a sentinel, ignoring errors (cleanup paths). */
static void archive_h5_close(hid_t id)
{
	if (id == H5I_INVALID_HID)
		return;
	H5E_BEGIN_TRY
	{
		switch (H5Iget_type(id)) {
		case H5I_FILE:
			H5Fclose(id);
			break;
		case H5I_DATASET:
			H5Dclose(id);
			break;
		case H5I_DATASPACE:
			H5Sclose(id);
			break;
		case H5I_DATATYPE:
			H5Tclose(id);
			break;
		case H5I_ATTR:
			H5Aclose(id);
			break;
		case H5I_GENPROP_LST:
			H5Pclose(id);
			break;
		default:
			break;
		}
	}
	H5E_END_TRY;
}

/* --- record types ------------------------------------------------------------------------ */

enum archive_int { ARCHIVE_U64, ARCHIVE_I64, ARCHIVE_U32 };

struct archive_member {
	const char *name;
	size_t offset;
	enum archive_int kind;
};

#define ARCHIVE_MEMBER(type, field, kind)                                                          \
	{                                                                                          \
#field, offsetof(struct type, field), kind                                         \
	}

static const struct archive_member archive_inode_members[] = {
    ARCHIVE_MEMBER(pyfs_inode, data_offset, ARCHIVE_U64),
    ARCHIVE_MEMBER(pyfs_inode, data_size, ARCHIVE_U64),
    ARCHIVE_MEMBER(pyfs_inode, checksum, ARCHIVE_U64),
    ARCHIVE_MEMBER(pyfs_inode, mtime_sec, ARCHIVE_I64),
    ARCHIVE_MEMBER(pyfs_inode, mtime_nsec, ARCHIVE_U32),
    ARCHIVE_MEMBER(pyfs_inode, mode, ARCHIVE_U32),
    ARCHIVE_MEMBER(pyfs_inode, nlink, ARCHIVE_U32),
    ARCHIVE_MEMBER(pyfs_inode, parent, ARCHIVE_U32),
    ARCHIVE_MEMBER(pyfs_inode, first_entry, ARCHIVE_U32),
    ARCHIVE_MEMBER(pyfs_inode, entry_count, ARCHIVE_U32),
};

static const struct archive_member archive_block_members[] = {
    ARCHIVE_MEMBER(pyfs_block, offset, ARCHIVE_U64),
    ARCHIVE_MEMBER(pyfs_block, checksum, ARCHIVE_U64),
    ARCHIVE_MEMBER(pyfs_block, stored_size, ARCHIVE_U32),
    ARCHIVE_MEMBER(pyfs_block, codec, ARCHIVE_U32),
};

static const struct archive_member archive_dirent_members[] = {
    ARCHIVE_MEMBER(pyfs_dirent, name_offset, ARCHIVE_U64),
    ARCHIVE_MEMBER(pyfs_dirent, name_length, ARCHIVE_U32),
    ARCHIVE_MEMBER(pyfs_dirent, inode, ARCHIVE_U32),
};

#define ARCHIVE_COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* One record layout of the format. */
struct archive_record {
	const char *dataset;
	const struct archive_member *members;
	size_t member_count;
	size_t size;
};

static const struct archive_record archive_inode_record = {
    PYFS_DSET_INODES,
    archive_inode_members,
    ARCHIVE_COUNT(archive_inode_members),
    sizeof(struct pyfs_inode),
};

static const struct archive_record archive_dirent_record = {
    PYFS_DSET_DIRENTS,
    archive_dirent_members,
    ARCHIVE_COUNT(archive_dirent_members),
    sizeof(struct pyfs_dirent),
};

static const struct archive_record archive_block_record = {
    PYFS_DSET_BLOCKS,
    archive_block_members,
    ARCHIVE_COUNT(archive_block_members),
    sizeof(struct pyfs_block),
};

static hid_t archive_int_type(enum archive_int kind, bool on_disk)
{
	switch (kind) {
	case ARCHIVE_U64:
		return on_disk ? H5T_STD_U64LE : H5T_NATIVE_UINT64;
	case ARCHIVE_I64:
		return on_disk ? H5T_STD_I64LE : H5T_NATIVE_INT64;
	default:
		return on_disk ? H5T_STD_U32LE : H5T_NATIVE_UINT32;
	}
}

static size_t archive_int_size(enum archive_int kind)
{
	return kind == ARCHIVE_U32 ? 4 : 8;
}

/*
 * The compound type of a record: on disk, little-endian standard types; in
 * memory, native types at the struct's offsets. Both have the struct's layout
 * (no padding), so reading needs no conversion. H5I_INVALID_HID on failure.
 */
static hid_t archive_record_type(const struct archive_record *record, bool on_disk)
{
	hid_t type = H5Tcreate(H5T_COMPOUND, record->size);

	if (type < 0)
		return H5I_INVALID_HID;
	for (size_t i = 0; i < record->member_count; i++) {
		const struct archive_member *m = &record->members[i];

		if (H5Tinsert(type, m->name, m->offset, archive_int_type(m->kind, on_disk)) < 0) {
			H5Tclose(type);
			return H5I_INVALID_HID;
		}
	}
	return type;
}

/* --- reader ------------------------------------------------------------------------------ */

struct pyfs_archive {
	char *path;
	hid_t file;
	hid_t inodes;
	hid_t dirents;
	hid_t names;
	hid_t payload;
	hid_t blocks; /* version 2 */
	uint32_t version;
	uint32_t block_size;
	uint64_t raw_size;
	uint64_t block_count;
	uint64_t file_size;
	uint64_t inode_count;
	uint64_t dirent_count;
	uint64_t names_size;
	uint64_t payload_size;
	uint64_t payload_offset;
	uint64_t payload_checksum;
	uint64_t metadata_checksum;
};

/* An attribute of the root group, open with its type and dataspace. */
struct archive_attr {
	hid_t attr;
	hid_t type;
	hid_t space;
};

/*
 * Open attribute name of the root group into at. Returns 0, -ENOENT when
 * there is no such attribute (err untouched: what that means is the caller's
 * to say), or -EINVAL when HDF5 fails. archive_attr_close() in every case.
 */
static int archive_attr_open(struct pyfs_archive *a, const char *name, struct archive_attr *at,
			     struct pyfs_err *err)
{
	htri_t exists = H5Aexists(a->file, name);

	at->attr = at->type = at->space = H5I_INVALID_HID;
	if (exists == 0)
		return -ENOENT;
	if (exists > 0)
		at->attr = H5Aopen(a->file, name, H5P_DEFAULT);
	if (at->attr >= 0) {
		at->type = H5Aget_type(at->attr);
		at->space = H5Aget_space(at->attr);
	}
	if (at->type < 0 || at->space < 0)
		return archive_h5_fail(err, -EINVAL, "cannot read attribute '%s' of '%s'", name,
				       a->path);
	return 0;
}

static void archive_attr_close(struct archive_attr *at)
{
	archive_h5_close(at->space);
	archive_h5_close(at->type);
	archive_h5_close(at->attr);
}

/* Read the fixed-length string attribute "format" into value (NUL-terminated). */
static int archive_read_format(struct pyfs_archive *a, char *value, size_t size,
			       struct pyfs_err *err)
{
	hid_t mem = H5I_INVALID_HID;
	struct archive_attr at;
	htri_t variable;
	size_t len;
	int ret;

	ret = archive_attr_open(a, PYFS_ATTR_FORMAT, &at, err);
	if (ret == -ENOENT) {
		pyfs_err_set(err, "'%s' is not a pyfs archive (no '%s' attribute)", a->path,
			     PYFS_ATTR_FORMAT);
		ret = -EINVAL;
	}
	if (ret)
		goto out;
	ret = -EINVAL;
	variable = H5Tis_variable_str(at.type);
	len = H5Tget_size(at.type);
	/* One element only: H5Aread writes every element of the attribute into value. */
	if (H5Tget_class(at.type) != H5T_STRING || variable != 0 || len == 0 || len >= size ||
	    H5Sget_simple_extent_npoints(at.space) != 1) {
		pyfs_err_set(err,
			     "'%s' is not a pyfs archive ('%s' is not a short fixed-length "
			     "string)",
			     a->path, PYFS_ATTR_FORMAT);
		goto out;
	}
	mem = H5Tcopy(H5T_C_S1);
	if (mem < 0 || H5Tset_size(mem, len) < 0 || H5Tset_strpad(mem, H5T_STR_NULLPAD) < 0)
		goto out_h5;
	memset(value, 0, size);
	if (H5Aread(at.attr, mem, value) < 0)
		goto out_h5;
	ret = 0;
	goto out;

out_h5:
	ret = archive_h5_fail(err, -EINVAL, "cannot read attribute '%s' of '%s'", PYFS_ATTR_FORMAT,
			      a->path);
out:
	archive_h5_close(mem);
	archive_attr_close(&at);
	return ret;
}

/* Read an integer attribute of the root group as mem_type (native) into value. */
static int archive_read_int_attr(struct pyfs_archive *a, const char *name, hid_t mem_type,
				 void *value, struct pyfs_err *err)
{
	struct archive_attr at;
	int ret;

	ret = archive_attr_open(a, name, &at, err);
	if (ret == -ENOENT) {
		pyfs_err_set(err, "invalid archive '%s': no '%s' attribute", a->path, name);
		ret = -EINVAL;
	} else if (ret == 0 && (H5Tget_class(at.type) != H5T_INTEGER ||
				H5Sget_simple_extent_npoints(at.space) != 1)) {
		pyfs_err_set(err, "invalid archive '%s': attribute '%s' is not one integer",
			     a->path, name);
		ret = -EINVAL;
	} else if (ret == 0 && H5Aread(at.attr, mem_type, value) < 0) {
		ret = archive_h5_fail(err, -EINVAL, "cannot read attribute '%s' of '%s'", name,
				      a->path);
	}
	archive_attr_close(&at);
	return ret;
}

/* The format name and version, then both checksums. */
static int archive_check_attributes(struct pyfs_archive *a, struct pyfs_err *err)
{
	char format[64];
	uint32_t version = 0;
	int ret;

	ret = archive_read_format(a, format, sizeof(format), err);
	if (ret)
		return ret;
	if (strcmp(format, PYFS_FORMAT_NAME) != 0) {
		pyfs_err_set(err, "'%s' is not a pyfs archive (format is '%.32s')", a->path,
			     format);
		return -EINVAL;
	}
	ret = archive_read_int_attr(a, PYFS_ATTR_VERSION, H5T_NATIVE_UINT32, &version, err);
	if (ret)
		return ret;
	if (version != PYFS_FORMAT_VERSION && version != PYFS_FORMAT_VERSION_BLOCKS) {
		pyfs_err_set(err,
			     "'%s' is pyfs archive version %" PRIu32 "; this pyfs reads versions "
			     "%u and %u: repack it with a matching pyfs-pack",
			     a->path, version, PYFS_FORMAT_VERSION, PYFS_FORMAT_VERSION_BLOCKS);
		return -EINVAL;
	}
	a->version = version;
	if (version == PYFS_FORMAT_VERSION_BLOCKS) {
		ret = archive_read_int_attr(a, PYFS_ATTR_BLOCK_SIZE, H5T_NATIVE_UINT32,
					    &a->block_size, err);
		if (ret == 0)
			ret = archive_read_int_attr(a, PYFS_ATTR_RAW_SIZE, H5T_NATIVE_UINT64,
						    &a->raw_size, err);
		if (ret)
			return ret;
		if (a->block_size == 0) {
			pyfs_err_set(err, "invalid archive '%s': block size 0", a->path);
			return -EINVAL;
		}
	}
	ret = archive_read_int_attr(a, PYFS_ATTR_PAYLOAD_CHECKSUM, H5T_NATIVE_UINT64,
				    &a->payload_checksum, err);
	if (ret)
		return ret;
	return archive_read_int_attr(a, PYFS_ATTR_METADATA_CHECKSUM, H5T_NATIVE_UINT64,
				     &a->metadata_checksum, err);
}

/*
 * Does the on-disk type of a record dataset have every member, as an integer
 * of its size lying inside the record? (HDF5 converts the members it is given
 * without checking that they fit.) *disk_size gets the record's size.
 */
static int archive_check_record_type(struct pyfs_archive *a, hid_t type,
				     const struct archive_record *record, size_t *disk_size,
				     struct pyfs_err *err)
{
	*disk_size = H5Tget_size(type);
	if (H5Tget_class(type) != H5T_COMPOUND ||
	    H5Tget_nmembers(type) != (int)record->member_count || *disk_size == 0) {
		pyfs_err_set(err,
			     "invalid archive '%s': dataset '%s' is not a compound of %zu members",
			     a->path, record->dataset, record->member_count);
		return -EINVAL;
	}
	for (size_t i = 0; i < record->member_count; i++) {
		const struct archive_member *m = &record->members[i];
		int index = -1;
		hid_t member;
		bool ok;

		H5E_BEGIN_TRY
		{
			index = H5Tget_member_index(type, m->name);
		}
		H5E_END_TRY;
		member = index < 0 ? H5I_INVALID_HID : H5Tget_member_type(type, (unsigned)index);
		ok = member >= 0 && H5Tget_class(member) == H5T_INTEGER &&
		     H5Tget_size(member) == archive_int_size(m->kind) &&
		     H5Tget_sign(member) == (m->kind == ARCHIVE_I64 ? H5T_SGN_2 : H5T_SGN_NONE) &&
		     H5Tget_member_offset(type, (unsigned)index) <=
			 *disk_size - archive_int_size(m->kind);
		archive_h5_close(member);
		if (!ok) {
			pyfs_err_set(err,
				     "invalid archive '%s': dataset '%s' has no %s integer member "
				     "'%s' of %zu bytes inside its %zu-byte records",
				     a->path, record->dataset,
				     m->kind == ARCHIVE_I64 ? "signed" : "unsigned", m->name,
				     archive_int_size(m->kind), *disk_size);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * Open dataset name: one dimension, the record type given (NULL: bytes), at
 * most the file's size in bytes and at most max_count records.
 */
static int archive_open_dataset(struct pyfs_archive *a, const char *name,
				const struct archive_record *record, uint64_t max_count,
				hid_t *dset_out, uint64_t *count_out, struct pyfs_err *err)
{
	hid_t dset = H5I_INVALID_HID, space = H5I_INVALID_HID, type = H5I_INVALID_HID;
	size_t record_size = record ? record->size : 1, disk_size = 1;
	hsize_t dims[1] = {0};
	htri_t exists;
	int ret = -EINVAL;

	exists = H5Lexists(a->file, name, H5P_DEFAULT);
	if (exists < 0)
		goto out_h5;
	if (!exists) {
		pyfs_err_set(err, "invalid archive '%s': no '%s' dataset", a->path, name);
		goto out;
	}
	dset = H5Dopen2(a->file, name, H5P_DEFAULT);
	if (dset < 0)
		goto out_h5;
	space = H5Dget_space(dset);
	type = H5Dget_type(dset);
	if (space < 0 || type < 0)
		goto out_h5;
	if (H5Sget_simple_extent_type(space) != H5S_SIMPLE ||
	    H5Sget_simple_extent_ndims(space) != 1 ||
	    H5Sget_simple_extent_dims(space, dims, NULL) != 1) {
		pyfs_err_set(err, "invalid archive '%s': dataset '%s' is not one-dimensional",
			     a->path, name);
		goto out;
	}
	if (record) {
		ret = archive_check_record_type(a, type, record, &disk_size, err);
		if (ret)
			goto out;
		ret = -EINVAL;
		/* Reading converts every record from disk_size bytes: bound both sizes. */
		if (disk_size > record_size)
			record_size = disk_size;
	} else if (H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != 1 ||
		   H5Tget_sign(type) != H5T_SGN_NONE) {
		pyfs_err_set(err,
			     "invalid archive '%s': dataset '%s' is not made of unsigned bytes",
			     a->path, name);
		goto out;
	}
	if (dims[0] > max_count || dims[0] > a->file_size / record_size) {
		pyfs_err_set(err,
			     "invalid archive '%s': dataset '%s' has %" PRIu64 " records of %zu "
			     "bytes, more than the file holds (%" PRIu64 " bytes)",
			     a->path, name, (uint64_t)dims[0], record_size, a->file_size);
		goto out;
	}
	*dset_out = dset;
	dset = H5I_INVALID_HID;
	*count_out = dims[0];
	ret = 0;
	goto out;

out_h5:
	ret = archive_h5_fail(err, -EINVAL, "cannot open dataset '%s' of '%s'", name, a->path);
out:
	archive_h5_close(type);
	archive_h5_close(space);
	archive_h5_close(dset);
	return ret;
}

/* The payload must be one contiguous allocated byte range inside the file. */
static int archive_check_payload_layout(struct pyfs_archive *a, struct pyfs_err *err)
{
	hid_t dcpl = H5Dget_create_plist(a->payload);
	H5D_layout_t layout;
	haddr_t offset;
	int ret = -EINVAL;

	if (dcpl < 0) {
		ret = archive_h5_fail(err, -EINVAL, "cannot read the payload layout of '%s'",
				      a->path);
		goto out;
	}
	layout = H5Pget_layout(dcpl);
	if (layout != H5D_CONTIGUOUS) {
		pyfs_err_set(err, "invalid archive '%s': the payload dataset is not contiguous",
			     a->path);
		goto out;
	}
	a->payload_offset = 0;
	if (a->payload_size) {
		offset = H5Dget_offset(a->payload);
		if (offset == HADDR_UNDEF || offset > a->file_size ||
		    a->payload_size > a->file_size - offset) {
			pyfs_err_set(err,
				     "invalid archive '%s': the payload (%" PRIu64 " bytes) is not "
				     "stored inside the file (%" PRIu64 " bytes)",
				     a->path, a->payload_size, a->file_size);
			goto out;
		}
		a->payload_offset = offset;
	}
	ret = 0;
out:
	H5Eclear2(H5E_DEFAULT);
	archive_h5_close(dcpl);
	return ret;
}

/* HDF5's superblock: its signature, then its version in the next byte. */
static const uint8_t archive_hdf5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

/*
 * Can path be opened for reading, how big is it, and which version is its
 * HDF5 superblock (-1: no HDF5 signature at byte 0, 512, 1024, 2048... where
 * HDF5 looks for it)? Real errno values. O_NONBLOCK: a FIFO given as the
 * archive is refused instead of waited on.
 */
static int archive_probe(const char *path, uint64_t *size, int *superblock, struct pyfs_err *err)
{
	uint8_t head[sizeof(archive_hdf5_signature) + 1];
	struct stat st;
	int fd, ret = 0;

	*superblock = -1;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot open archive '%s': %s", path, strerror(-ret));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		pyfs_err_set(err, "cannot open archive '%s': %s", path,
			     S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
		goto out;
	}
	*size = (uint64_t)st.st_size;
	for (uint64_t at = 0; at + sizeof(head) <= *size; at = at ? 2 * at : 512) {
		if (pread(fd, head, sizeof(head), (off_t)at) == (ssize_t)sizeof(head) &&
		    memcmp(head, archive_hdf5_signature, sizeof(archive_hdf5_signature)) == 0) {
			*superblock = head[sizeof(archive_hdf5_signature)];
			break;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

int pyfs_archive_open(const char *path, struct pyfs_archive **out, struct pyfs_err *err)
{
	struct pyfs_archive *a;
	hid_t fapl = H5I_INVALID_HID;
	int superblock, ret;

	ret = archive_h5_init(err);
	if (ret)
		return ret;
	a = calloc(1, sizeof(*a));
	if (!a || !(a->path = strdup(path))) {
		free(a);
		pyfs_err_set(err, "cannot open archive '%s': %s", path, strerror(ENOMEM));
		return -ENOMEM;
	}
	a->file = a->inodes = a->dirents = a->names = a->payload = H5I_INVALID_HID;
	a->blocks = H5I_INVALID_HID;

	ret = archive_probe(path, &a->file_size, &superblock, err);
	if (ret)
		goto out_close;
	ret = -EINVAL;
	if (superblock < 0) {
		pyfs_err_set(err, "'%s' is not an HDF5 file", path);
		goto out_close;
	}
	/*
	 * Only checksummed HDF5 metadata is parsed: superblock version 2 and later
	 * (the writer's 1.8 format). HDF5 1.10 parses the unchecked metadata of the
	 * older formats without bounds (out-of-bounds reads, 4 GiB allocations).
	 */
	if (superblock < 2) {
		pyfs_err_set(err,
			     "'%s' is not a pyfs archive: its HDF5 superblock version %d has no "
			     "metadata checksums; pyfs reads version 2 or later only (what "
			     "pyfs-pack writes): pack it again",
			     path, superblock);
		goto out_close;
	}
	/* Archives never change once written: no need for HDF5's file locks. */
	fapl = H5Pcreate(H5P_FILE_ACCESS);
	if (fapl < 0 || H5Pset_file_locking(fapl, false, true) < 0) {
		ret = archive_h5_fail(err, -EIO, "cannot open archive '%s'", path);
		goto out_close;
	}
	a->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
	if (a->file < 0) {
		ret = archive_h5_fail(err, -EINVAL, "cannot open archive '%s'", path);
		goto out_close;
	}
	ret = archive_check_attributes(a, err);
	if (ret)
		goto out_close;
	ret = archive_open_dataset(a, PYFS_DSET_INODES, &archive_inode_record, PYFS_INODES_MAX,
				   &a->inodes, &a->inode_count, err);
	if (ret)
		goto out_close;
	ret = archive_open_dataset(a, PYFS_DSET_DIRENTS, &archive_dirent_record, PYFS_DIRENTS_MAX,
				   &a->dirents, &a->dirent_count, err);
	if (ret)
		goto out_close;
	ret = archive_open_dataset(a, PYFS_DSET_NAMES, NULL, UINT64_MAX, &a->names, &a->names_size,
				   err);
	if (ret)
		goto out_close;
	ret = archive_open_dataset(a, PYFS_DSET_PAYLOAD, NULL, UINT64_MAX, &a->payload,
				   &a->payload_size, err);
	if (ret)
		goto out_close;
	ret = archive_check_payload_layout(a, err);
	if (ret)
		goto out_close;
	if (a->version == PYFS_FORMAT_VERSION_BLOCKS) {
		ret = archive_open_dataset(a, PYFS_DSET_BLOCKS, &archive_block_record, UINT64_MAX,
					   &a->blocks, &a->block_count, err);
		if (ret)
			goto out_close;
	}
	*out = a;
	a = NULL;
out_close:
	archive_h5_close(fapl);
	pyfs_archive_close(a);
	return ret;
}

void pyfs_archive_close(struct pyfs_archive *archive)
{
	if (!archive)
		return;
	archive_h5_close(archive->blocks);
	archive_h5_close(archive->payload);
	archive_h5_close(archive->names);
	archive_h5_close(archive->dirents);
	archive_h5_close(archive->inodes);
	archive_h5_close(archive->file);
	free(archive->path);
	free(archive);
}

uint64_t pyfs_archive_payload_size(const struct pyfs_archive *archive)
{
	return archive->payload_size;
}

uint64_t pyfs_archive_payload_file_offset(const struct pyfs_archive *archive)
{
	return archive->payload_offset;
}

/* Read all of dataset dset (count records of mem_type) into a new buffer of size bytes. */
static int archive_read_all(struct pyfs_archive *a, hid_t dset, const char *name, hid_t mem_type,
			    uint64_t size, void **out, struct pyfs_err *err)
{
	void *buffer = pyfs_buffer_alloc(size);
	int ret = 0;

	if (!buffer) {
		pyfs_err_set(err, "cannot read dataset '%s' of '%s' (%" PRIu64 " bytes): %s", name,
			     a->path, size, strerror(ENOMEM));
		ret = -ENOMEM;
		goto out;
	}
	if (size && H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer) < 0) {
		ret = archive_h5_fail(err, -EIO, "cannot read dataset '%s' of '%s'", name, a->path);
		pyfs_buffer_free(buffer, size);
		buffer = NULL;
	}
out:
	*out = buffer;
	return ret;
}

int pyfs_archive_read_metadata(struct pyfs_archive *archive, struct pyfs_image_parts *parts,
			       struct pyfs_err *err)
{
	hid_t inode_type = H5I_INVALID_HID, dirent_type = H5I_INVALID_HID;
	hid_t block_type = H5I_INVALID_HID;
	void *buffer;
	int ret;

	memset(parts, 0, sizeof(*parts));
	inode_type = archive_record_type(&archive_inode_record, false);
	dirent_type = archive_record_type(&archive_dirent_record, false);
	block_type = archive_record_type(&archive_block_record, false);
	if (inode_type < 0 || dirent_type < 0 || block_type < 0) {
		ret = archive_h5_fail(err, -ENOMEM, "cannot read '%s'", archive->path);
		goto out;
	}
	ret = archive_read_all(archive, archive->inodes, PYFS_DSET_INODES, inode_type,
			       archive->inode_count * sizeof(struct pyfs_inode), &buffer, err);
	if (ret)
		goto out;
	parts->inodes = buffer;
	parts->inode_count = archive->inode_count;
	ret = archive_read_all(archive, archive->dirents, PYFS_DSET_DIRENTS, dirent_type,
			       archive->dirent_count * sizeof(struct pyfs_dirent), &buffer, err);
	if (ret)
		goto out_free_parts;
	parts->dirents = buffer;
	parts->dirent_count = archive->dirent_count;
	ret = archive_read_all(archive, archive->names, PYFS_DSET_NAMES, H5T_NATIVE_UINT8,
			       archive->names_size, &buffer, err);
	if (ret)
		goto out_free_parts;
	parts->names = buffer;
	parts->names_size = archive->names_size;
	if (archive->version == PYFS_FORMAT_VERSION_BLOCKS) {
		ret = archive_read_all(archive, archive->blocks, PYFS_DSET_BLOCKS, block_type,
				       archive->block_count * sizeof(struct pyfs_block), &buffer,
				       err);
		if (ret)
			goto out_free_parts;
		parts->blocks = buffer;
		parts->block_count = archive->block_count;
		parts->block_size = archive->block_size;
		parts->raw_size = archive->raw_size;
	}
	parts->payload_size = archive->payload_size;
	parts->payload_checksum = archive->payload_checksum;
	parts->metadata_checksum = archive->metadata_checksum;
	goto out;

out_free_parts:
	pyfs_image_parts_free(parts);
out:
	archive_h5_close(block_type);
	archive_h5_close(dirent_type);
	archive_h5_close(inode_type);
	return ret;
}

int pyfs_archive_read_payload(struct pyfs_archive *archive, uint8_t *dst, uint64_t offset,
			      uint64_t size, struct pyfs_err *err)
{
	hid_t file_space = H5I_INVALID_HID, mem_space = H5I_INVALID_HID;
	uint64_t done = 0;
	int ret = 0;

	if (offset > archive->payload_size || size > archive->payload_size - offset) {
		pyfs_err_set(err,
			     "cannot read payload bytes [%" PRIu64 ", +%" PRIu64 ") of '%s': "
			     "the payload has %" PRIu64 " bytes",
			     offset, size, archive->path, archive->payload_size);
		return -EINVAL;
	}
	if (size == 0)
		return 0;
	file_space = H5Dget_space(archive->payload);
	if (file_space < 0)
		goto out_h5;
	while (done < size) {
		hsize_t start[1] = {offset + done};
		hsize_t count[1] = {size - done < ARCHIVE_READ_PIECE ? size - done
								     : ARCHIVE_READ_PIECE};

		mem_space = H5Screate_simple(1, count, NULL);
		if (mem_space < 0 ||
		    H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
		    H5Dread(archive->payload, H5T_NATIVE_UINT8, mem_space, file_space, H5P_DEFAULT,
			    dst + done) < 0)
			goto out_h5;
		H5Sclose(mem_space);
		mem_space = H5I_INVALID_HID;
		done += count[0];
	}
	goto out;

out_h5:
	ret = archive_h5_fail(err, -EIO,
			      "cannot read payload bytes [%" PRIu64 ", +%" PRIu64 ") of '%s'",
			      offset + done, size - done, archive->path);
out:
	archive_h5_close(mem_space);
	archive_h5_close(file_space);
	return ret;
}

int pyfs_archive_load(const char *path, struct pyfs_image **out, struct pyfs_err *err)
{
	struct pyfs_image_parts parts = {0};
	struct pyfs_archive *archive = NULL;
	int ret;

	ret = pyfs_archive_open(path, &archive, err);
	if (ret)
		goto out;
	ret = pyfs_archive_read_metadata(archive, &parts, err);
	if (ret)
		goto out_close;
	parts.payload = pyfs_buffer_alloc(parts.payload_size);
	if (!parts.payload) {
		pyfs_err_set(err, "cannot load the payload of '%s' (%" PRIu64 " bytes): %s", path,
			     parts.payload_size, strerror(ENOMEM));
		ret = -ENOMEM;
		goto out_free_parts;
	}
	ret = pyfs_archive_read_payload(archive, parts.payload, 0, parts.payload_size, err);
	if (ret)
		goto out_free_parts;
	ret = pyfs_image_create(&parts, out, err);
out_free_parts:
	pyfs_image_parts_free(&parts); /* zeroed by a successful create */
out_close:
	pyfs_archive_close(archive);
out:
	return ret;
}

/* --- writer ------------------------------------------------------------------------------ */

struct pyfs_writer {
	char *path;
	struct pyfs_writer_shape shape;
	hid_t file;
	hid_t inodes;
	hid_t dirents;
	hid_t names;
	hid_t payload;
	hid_t blocks;
	const struct pyfs_block *block_records; /* pyfs_writer_set_blocks() */
	uint64_t payload_offset;
};

/*
 * H5Pset_alignment applies to every allocation of at least the threshold, so
 * the threshold is the payload's own size: the payload and datasets as big as
 * it start on a boundary. HDF5's metadata comes in blocks of at most 2 KiB
 * (H5Pset_meta_block_size), so a payload of 2 KiB or more never pads them; a
 * smaller one aligns a few of them too, which leaves holes of up to 1 MiB each
 * (sparse: a few MiB of apparent size, nothing on disk) in tiny archives.
 */
static hsize_t writer_alignment_threshold(uint64_t payload_size)
{
	return payload_size ? payload_size : ARCHIVE_ALIGN_THRESHOLD_EMPTY;
}

/* A one-dimensional dataset of count elements of type, allocated now, never filled. */
static hid_t writer_create_dataset(hid_t file, const char *name, hid_t type, uint64_t count)
{
	hid_t space = H5I_INVALID_HID, dcpl = H5I_INVALID_HID, dset = H5I_INVALID_HID;
	hsize_t dims[1] = {count};

	space = H5Screate_simple(1, dims, NULL);
	dcpl = H5Pcreate(H5P_DATASET_CREATE);
	if (space < 0 || dcpl < 0 || H5Pset_layout(dcpl, H5D_CONTIGUOUS) < 0 ||
	    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0 ||
	    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 ||
	    H5Pset_obj_track_times(dcpl, false) < 0)
		goto out;
	dset = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
out:
	archive_h5_close(dcpl);
	archive_h5_close(space);
	return dset;
}

/* Can path be created, truncated and written? Real errno values before HDF5 tries. */
static int writer_probe(const char *path, struct pyfs_err *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0) {
		int ret = -errno;

		pyfs_err_set(err, "cannot create archive '%s': %s", path, strerror(errno));
		return ret;
	}
	close(fd);
	return 0;
}

int pyfs_writer_create(const char *path, const struct pyfs_writer_shape *shape,
		       struct pyfs_writer **out, struct pyfs_err *err)
{
	hid_t fcpl = H5I_INVALID_HID, fapl = H5I_INVALID_HID;
	hid_t inode_type = H5I_INVALID_HID, dirent_type = H5I_INVALID_HID;
	hid_t block_type = H5I_INVALID_HID;
	struct pyfs_writer *w;
	haddr_t offset;
	int ret;

	ret = archive_h5_init(err);
	if (ret)
		return ret;
	if (shape->inode_count == 0 || shape->inode_count > PYFS_INODES_MAX ||
	    shape->dirent_count > PYFS_DIRENTS_MAX) {
		pyfs_err_set(err,
			     "cannot create archive '%s': %" PRIu64 " inodes and %" PRIu64
			     " dirents (must be 1..%" PRIu32 " and 0..%" PRIu32 ")",
			     path, shape->inode_count, shape->dirent_count, UINT32_MAX, UINT32_MAX);
		return -EINVAL;
	}
	w = calloc(1, sizeof(*w));
	if (!w || !(w->path = strdup(path))) {
		free(w);
		pyfs_err_set(err, "cannot create archive '%s': %s", path, strerror(ENOMEM));
		return -ENOMEM;
	}
	w->shape = *shape;
	w->file = w->inodes = w->dirents = w->names = w->payload = H5I_INVALID_HID;
	w->blocks = H5I_INVALID_HID;

	ret = writer_probe(path, err);
	if (ret)
		goto out;
	ret = -EIO;
	/*
	 * REQUIRED: no timestamps (determinism) and an aligned payload.
	 * OPTIONAL: 1.8-compatible objects (h5py and tools of any 1.8+ HDF5 read
	 * them); file locks where the file system has them (Lustre may not).
	 */
	fcpl = H5Pcreate(H5P_FILE_CREATE);
	fapl = H5Pcreate(H5P_FILE_ACCESS);
	if (fcpl < 0 || fapl < 0 || H5Pset_obj_track_times(fcpl, false) < 0 ||
	    H5Pset_alignment(fapl, writer_alignment_threshold(shape->payload_size),
			     PYFS_PAYLOAD_ALIGNMENT) < 0 ||
	    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0 ||
	    H5Pset_file_locking(fapl, true, true) < 0)
		goto out_h5;
	w->file = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
	if (w->file < 0)
		goto out_h5;
	inode_type = archive_record_type(&archive_inode_record, true);
	dirent_type = archive_record_type(&archive_dirent_record, true);
	if (inode_type < 0 || dirent_type < 0)
		goto out_h5;
	/* The payload first: it follows the root group, the rest follows it. */
	w->payload =
	    writer_create_dataset(w->file, PYFS_DSET_PAYLOAD, H5T_STD_U8LE, shape->payload_size);
	if (w->payload < 0)
		goto out_h5;
	w->inodes =
	    writer_create_dataset(w->file, PYFS_DSET_INODES, inode_type, shape->inode_count);
	if (w->inodes < 0)
		goto out_h5;
	w->dirents =
	    writer_create_dataset(w->file, PYFS_DSET_DIRENTS, dirent_type, shape->dirent_count);
	if (w->dirents < 0)
		goto out_h5;
	w->names = writer_create_dataset(w->file, PYFS_DSET_NAMES, H5T_STD_U8LE, shape->names_size);
	if (w->names < 0)
		goto out_h5;
	if (shape->block_size) {
		block_type = archive_record_type(&archive_block_record, true);
		if (block_type < 0)
			goto out_h5;
		w->blocks = writer_create_dataset(w->file, PYFS_DSET_BLOCKS, block_type,
						  shape->block_count);
		if (w->blocks < 0)
			goto out_h5;
	}
	if (shape->payload_size) {
		offset = H5Dget_offset(w->payload);
		if (offset == HADDR_UNDEF || offset % PYFS_PAYLOAD_ALIGNMENT) {
			pyfs_err_set(
			    err,
			    "cannot create archive '%s': the payload landed at byte %" PRIu64
			    ", not on a %" PRIu64 "-byte boundary",
			    path, (uint64_t)offset, PYFS_PAYLOAD_ALIGNMENT);
			ret = -EIO;
			goto out;
		}
		w->payload_offset = offset;
	}
	*out = w;
	w = NULL;
	ret = 0;
	goto out;

out_h5:
	ret = archive_h5_fail(err, -EIO, "cannot create archive '%s'", path);
out:
	archive_h5_close(block_type);
	archive_h5_close(dirent_type);
	archive_h5_close(inode_type);
	archive_h5_close(fapl);
	archive_h5_close(fcpl);
	pyfs_writer_abort(w);
	return ret;
}

uint64_t pyfs_writer_payload_file_offset(const struct pyfs_writer *writer)
{
	return writer->payload_offset;
}

/* One attribute of the root group holding value (in mem_type), stored as file_type. */
static herr_t writer_attribute(hid_t file, const char *name, hid_t file_type, hid_t mem_type,
			       const void *value)
{
	hid_t space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
	herr_t status = -1;

	space = H5Screate(H5S_SCALAR);
	if (space < 0)
		goto out;
	attr = H5Acreate2(file, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
	if (attr < 0)
		goto out;
	status = H5Awrite(attr, mem_type, value);
out:
	archive_h5_close(attr);
	archive_h5_close(space);
	return status;
}

void pyfs_writer_set_blocks(struct pyfs_writer *writer, const struct pyfs_block *blocks)
{
	writer->block_records = blocks;
}

/*
 * Write the format name, version and both checksums as attributes of the root
 * group; for a compressed payload also the block size and raw size.
 */
static herr_t writer_attributes(hid_t file, const struct pyfs_writer_shape *shape,
				uint64_t payload_checksum, uint64_t metadata_checksum)
{
	const uint32_t version =
	    shape->block_size ? PYFS_FORMAT_VERSION_BLOCKS : PYFS_FORMAT_VERSION;
	hid_t format_type = H5I_INVALID_HID;
	herr_t status = -1;

	format_type = H5Tcopy(H5T_C_S1);
	if (format_type < 0 || H5Tset_size(format_type, strlen(PYFS_FORMAT_NAME)) < 0 ||
	    H5Tset_strpad(format_type, H5T_STR_NULLPAD) < 0)
		goto out;
	if (writer_attribute(file, PYFS_ATTR_FORMAT, format_type, format_type, PYFS_FORMAT_NAME) <
		0 ||
	    writer_attribute(file, PYFS_ATTR_VERSION, H5T_STD_U32LE, H5T_NATIVE_UINT32, &version) <
		0 ||
	    writer_attribute(file, PYFS_ATTR_PAYLOAD_CHECKSUM, H5T_STD_U64LE, H5T_NATIVE_UINT64,
			     &payload_checksum) < 0 ||
	    writer_attribute(file, PYFS_ATTR_METADATA_CHECKSUM, H5T_STD_U64LE, H5T_NATIVE_UINT64,
			     &metadata_checksum) < 0)
		goto out;
	if (shape->block_size && (writer_attribute(file, PYFS_ATTR_BLOCK_SIZE, H5T_STD_U32LE,
						   H5T_NATIVE_UINT32, &shape->block_size) < 0 ||
				  writer_attribute(file, PYFS_ATTR_RAW_SIZE, H5T_STD_U64LE,
						   H5T_NATIVE_UINT64, &shape->raw_size) < 0))
		goto out;
	status = 0;
out:
	archive_h5_close(format_type);
	return status;
}

/* Close the writer's datasets (each one, whatever fails); -1 if any close failed. */
static herr_t writer_close_datasets(struct pyfs_writer *w)
{
	hid_t *dsets[] = {&w->blocks, &w->payload, &w->names, &w->dirents, &w->inodes};
	herr_t status = 0;

	for (size_t i = 0; i < ARCHIVE_COUNT(dsets); i++) {
		if (*dsets[i] != H5I_INVALID_HID && H5Dclose(*dsets[i]) < 0)
			status = -1;
		*dsets[i] = H5I_INVALID_HID;
	}
	return status;
}

int pyfs_writer_finish(struct pyfs_writer *writer, const struct pyfs_inode *inodes,
		       const struct pyfs_dirent *dirents, const uint8_t *names,
		       uint64_t payload_checksum, struct pyfs_err *err)
{
	const struct pyfs_writer_shape *shape = &writer->shape;
	hid_t inode_type = H5I_INVALID_HID, dirent_type = H5I_INVALID_HID;
	hid_t block_type = H5I_INVALID_HID;
	struct pyfs_image_parts sealed = {
	    .inodes = (struct pyfs_inode *)inodes,
	    .inode_count = shape->inode_count,
	    .dirents = (struct pyfs_dirent *)dirents,
	    .dirent_count = shape->dirent_count,
	    .names = (uint8_t *)names,
	    .names_size = shape->names_size,
	    .blocks = (struct pyfs_block *)writer->block_records,
	    .block_count = shape->block_size ? shape->block_count : 0,
	};
	uint64_t metadata_checksum;
	hid_t file;
	int ret = 0;

	if (shape->block_size && shape->block_count && !writer->block_records) {
		pyfs_err_set(err, "cannot write archive '%s': no block index given", writer->path);
		ret = -EINVAL;
		goto out;
	}
	metadata_checksum = pyfs_parts_metadata_checksum(&sealed);
	inode_type = archive_record_type(&archive_inode_record, false);
	dirent_type = archive_record_type(&archive_dirent_record, false);
	block_type = archive_record_type(&archive_block_record, false);
	if (inode_type < 0 || dirent_type < 0 || block_type < 0)
		goto out_h5;
	if (shape->block_size && shape->block_count &&
	    H5Dwrite(writer->blocks, block_type, H5S_ALL, H5S_ALL, H5P_DEFAULT,
		     writer->block_records) < 0)
		goto out_h5;
	if (H5Dwrite(writer->inodes, inode_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, inodes) < 0)
		goto out_h5;
	if (shape->dirent_count &&
	    H5Dwrite(writer->dirents, dirent_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, dirents) < 0)
		goto out_h5;
	if (shape->names_size &&
	    H5Dwrite(writer->names, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, names) < 0)
		goto out_h5;
	if (writer_attributes(writer->file, shape, payload_checksum, metadata_checksum) < 0)
		goto out_h5;
	if (writer_close_datasets(writer) < 0)
		goto out_h5;
	file = writer->file;
	writer->file = H5I_INVALID_HID;
	if (H5Fclose(file) < 0)
		goto out_h5;
	goto out;

out_h5:
	ret = archive_h5_fail(err, -EIO, "cannot write archive '%s'", writer->path);
out:
	archive_h5_close(block_type);
	archive_h5_close(dirent_type);
	archive_h5_close(inode_type);
	pyfs_writer_abort(writer);
	return ret;
}

void pyfs_writer_abort(struct pyfs_writer *writer)
{
	if (!writer)
		return;
	H5E_BEGIN_TRY
	{
		writer_close_datasets(writer);
	}
	H5E_END_TRY;
	archive_h5_close(writer->file);
	free(writer->path);
	free(writer);
}

/* --- the optional "environment" attribute (pyfs_format.h) -------------------------------- */

int pyfs_writer_set_environment(struct pyfs_writer *writer, const char *const *items, size_t count,
				struct pyfs_err *err)
{
	hid_t type = H5I_INVALID_HID, space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
	hsize_t dims[1] = {count};
	size_t width = 1, len;
	char *buf = NULL;
	int ret = 0;

	if (count == 0)
		return 0;
	if (count > PYFS_ENV_ITEMS_MAX) {
		pyfs_err_set(err, "cannot write archive '%s': more than %u environment entries",
			     writer->path, PYFS_ENV_ITEMS_MAX);
		return -E2BIG;
	}
	for (size_t i = 0; i < count; i++) {
		len = strlen(items[i]) + 1;
		if (len > PYFS_ENV_ITEM_MAX) {
			pyfs_err_set(err, "cannot write archive '%s': environment entry too long",
				     writer->path);
			return -ENAMETOOLONG;
		}
		width = len > width ? len : width;
	}
	buf = calloc(count, width);
	if (!buf) {
		pyfs_err_set(err, "cannot write archive '%s': %s", writer->path, strerror(ENOMEM));
		return -ENOMEM;
	}
	for (size_t i = 0; i < count; i++)
		memcpy(buf + i * width, items[i], strlen(items[i]));
	type = H5Tcopy(H5T_C_S1);
	if (type < 0 || H5Tset_size(type, width) < 0 || H5Tset_strpad(type, H5T_STR_NULLTERM) < 0)
		goto out_h5;
	space = H5Screate_simple(1, dims, NULL);
	if (space < 0)
		goto out_h5;
	attr =
	    H5Acreate2(writer->file, PYFS_ATTR_ENVIRONMENT, type, space, H5P_DEFAULT, H5P_DEFAULT);
	if (attr < 0 || H5Awrite(attr, type, buf) < 0)
		goto out_h5;
	goto out;

out_h5:
	ret = archive_h5_fail(err, -EIO, "cannot write attribute '%s' of '%s'",
			      PYFS_ATTR_ENVIRONMENT, writer->path);
out:
	archive_h5_close(attr);
	archive_h5_close(space);
	archive_h5_close(type);
	free(buf);
	return ret;
}

int pyfs_archive_read_environment(struct pyfs_archive *archive, char **items, size_t *count,
				  struct pyfs_err *err)
{
	hid_t mem = H5I_INVALID_HID;
	struct archive_attr at;
	hssize_t n = 0;
	size_t width = 0, used = 0;
	char *raw = NULL, *out = NULL;
	int ret;

	*items = NULL;
	*count = 0;
	ret = archive_attr_open(archive, PYFS_ATTR_ENVIRONMENT, &at, err);
	if (ret)
		goto out;
	ret = -EINVAL;
	if (H5Tget_class(at.type) == H5T_STRING && H5Tis_variable_str(at.type) == 0)
		width = H5Tget_size(at.type);
	if (H5Sget_simple_extent_ndims(at.space) == 1)
		n = H5Sget_simple_extent_npoints(at.space);
	if (width == 0 || width > PYFS_ENV_ITEM_MAX || n <= 0 || n > PYFS_ENV_ITEMS_MAX) {
		pyfs_err_set(err,
			     "invalid archive '%s': attribute '%s' is not an array of short "
			     "strings",
			     archive->path, PYFS_ATTR_ENVIRONMENT);
		goto out;
	}
	raw = calloc((size_t)n, width);
	out = calloc((size_t)n, width + 1);
	if (!raw || !out) {
		pyfs_err_set(err, "cannot read archive '%s': %s", archive->path, strerror(ENOMEM));
		ret = -ENOMEM;
		goto out;
	}
	mem = H5Tcopy(H5T_C_S1);
	if (mem < 0 || H5Tset_size(mem, width) < 0 || H5Tset_strpad(mem, H5T_STR_NULLPAD) < 0 ||
	    H5Aread(at.attr, mem, raw) < 0) {
		ret = archive_h5_fail(err, -EINVAL, "cannot read attribute '%s' of '%s'",
				      PYFS_ATTR_ENVIRONMENT, archive->path);
		goto out;
	}
	/* Each element up to its first NUL (none needed when it fills the width). */
	for (hssize_t i = 0; i < n; i++) {
		const char *e = raw + (size_t)i * width;
		size_t len = strnlen(e, width);

		memcpy(out + used, e, len);
		used += len + 1;
	}
	*items = out;
	*count = (size_t)n;
	out = NULL;
	ret = 0;
out:
	archive_h5_close(mem);
	archive_attr_close(&at);
	free(raw);
	free(out);
	return ret;
}
