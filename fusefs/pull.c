/*
 * pull.c - the MPI pull: node discovery, agreement, metadata broadcast,
 * collective parallel-HDF5 read of one payload slice per node, exchange of
 * the slices. See pull.h for the protocol; every buffer here is the final
 * image buffer, so the payload is never copied in user space.
 */
#include "pull.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <hdf5.h>

#include "archive_io.h"
#include "pyfs_format.h"

_Static_assert(PULL_CHUNK_BYTES <= INT_MAX, "MPI and HDF5 transfers are counted in int");

/* What world rank 0 broadcasts about the archive before the arrays. */
struct pull_header {
	int32_t rc;
	char msg[sizeof(((struct pyfs_err *)0)->msg)];
	uint64_t inode_count;
	uint64_t dirent_count;
	uint64_t names_size;
	uint64_t payload_size;
	uint64_t payload_checksum;
	uint64_t metadata_checksum;
	uint64_t archive_size;
	/* Compressed payloads (block index broadcast with the metadata); 0 otherwise. */
	uint64_t block_count;
	uint64_t raw_size;
	uint32_t block_size;
};

uint64_t pull_proc_value(const char *path, const char *key)
{
	char line[256];
	size_t key_len = strlen(key);
	uint64_t value = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, key_len) == 0 &&
		    sscanf(line + key_len, " %" SCNu64, &value) == 1)
			break;
	fclose(f);
	return value;
}

/* Bytes this process has read with read(2) and friends so far (/proc/self/io rchar). */
static uint64_t pull_rchar(void)
{
	return pull_proc_value("/proc/self/io", "rchar:");
}

/* The one mapping of an MPI error into ours: the text of the MPI error, -EIO. */
static int pull_mpi_error(int mpi_rc, const char *what, struct pyfs_err *err)
{
	char text[MPI_MAX_ERROR_STRING];
	int len = 0;

	if (MPI_Error_string(mpi_rc, text, &len) != MPI_SUCCESS)
		snprintf(text, sizeof(text), "MPI error %d", mpi_rc);
	pyfs_err_set(err, "%s failed: %s", what, text);
	return -EIO;
}

static herr_t pull_h5_walk(unsigned int n, const H5E_error2_t *desc, void *data)
{
	const char **deepest = data;

	(void)n;
	if (desc->desc && desc->desc[0])
		*deepest = desc->desc;
	return 0;
}

/*
 * The one mapping of an HDF5 error into ours: the innermost message of the
 * error stack (the most specific one, e.g. "truncated file: eof = ..."), -EIO.
 */
static int pull_h5_error(const char *what, const char *archive, struct pyfs_err *err)
{
	const char *deepest = NULL;

	H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, pull_h5_walk, &deepest);
	pyfs_err_set(err, "cannot %s '%s': %s", what, archive, deepest ? deepest : "HDF5 error");
	H5Eclear2(H5E_DEFAULT);
	return -EIO;
}

int pull_world_init(struct pull_world *world, bool ranks_as_nodes, struct pyfs_err *err)
{
	int node_info[2] = {0, 0};
	int local_rank = 0, rc;

	world->node = MPI_COMM_NULL;
	world->leaders = MPI_COMM_NULL;
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	MPI_Comm_rank(MPI_COMM_WORLD, &world->rank);
	MPI_Comm_size(MPI_COMM_WORLD, &world->size);
	if (ranks_as_nodes)
		rc = MPI_Comm_split(MPI_COMM_WORLD, world->rank, 0, &world->node);
	else
		rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world->rank,
					 MPI_INFO_NULL, &world->node);
	if (rc != MPI_SUCCESS)
		return pull_mpi_error(rc, "grouping the ranks by node", err);
	MPI_Comm_rank(world->node, &local_rank);
	world->leader = local_rank == 0;
	rc = MPI_Comm_split(MPI_COMM_WORLD, world->leader ? 0 : MPI_UNDEFINED, world->rank,
			    &world->leaders);
	if (rc != MPI_SUCCESS)
		return pull_mpi_error(rc, "grouping the node leaders", err);
	if (world->leader) {
		MPI_Comm_rank(world->leaders, &node_info[0]);
		MPI_Comm_size(world->leaders, &node_info[1]);
	}
	rc = MPI_Bcast(node_info, 2, MPI_INT, 0, world->node);
	if (rc != MPI_SUCCESS)
		return pull_mpi_error(rc, "sharing the node index", err);
	world->node_index = node_info[0];
	world->node_count = node_info[1];
	return 0;
}

void pull_world_free(struct pull_world *world)
{
	if (world->leaders != MPI_COMM_NULL)
		MPI_Comm_free(&world->leaders);
	if (world->node != MPI_COMM_NULL)
		MPI_Comm_free(&world->node);
}

int pull_agree(MPI_Comm comm, int world_rank, int rc, struct pyfs_err *err, int *failed_rank)
{
	struct {
		int value;
		int index;
	} mine, first;
	struct {
		int32_t rc;
		char msg[sizeof(err->msg)];
	} report;
	int comm_rank, mpi_rc;

	MPI_Comm_rank(comm, &comm_rank);
	mine.value = rc ? world_rank : INT_MAX;
	mine.index = comm_rank;
	mpi_rc = MPI_Allreduce(&mine, &first, 1, MPI_2INT, MPI_MINLOC, comm);
	if (mpi_rc != MPI_SUCCESS) {
		*failed_rank = world_rank;
		return pull_mpi_error(mpi_rc, "agreeing on the result", err);
	}
	if (first.value == INT_MAX)
		return 0;
	memset(&report, 0, sizeof(report));
	if (comm_rank == first.index) {
		report.rc = rc;
		if (err->msg[0])
			memcpy(report.msg, err->msg, sizeof(report.msg));
		else
			snprintf(report.msg, sizeof(report.msg), "%s", strerror(-rc));
	}
	mpi_rc = MPI_Bcast(&report, sizeof(report), MPI_BYTE, first.index, comm);
	*failed_rank = first.value;
	if (mpi_rc != MPI_SUCCESS)
		return pull_mpi_error(mpi_rc, "sharing an error", err);
	report.msg[sizeof(report.msg) - 1] = '\0';
	pyfs_err_set(err, "%s", report.msg);
	return report.rc;
}

/* Broadcast size bytes of buf from root, in transfers of at most PULL_CHUNK_BYTES. */
static int pull_bcast(void *buf, uint64_t size, int root, MPI_Comm comm, struct pyfs_err *err)
{
	for (uint64_t done = 0; done < size;) {
		uint64_t n = size - done < PULL_CHUNK_BYTES ? size - done : PULL_CHUNK_BYTES;
		int rc = MPI_Bcast((uint8_t *)buf + done, (int)n, MPI_BYTE, root, comm);

		if (rc != MPI_SUCCESS)
			return pull_mpi_error(rc, "broadcasting the archive", err);
		done += n;
	}
	return 0;
}

/* On world rank 0: read the metadata into parts and describe it in h. */
static void pull_read_metadata(const char *archive, struct pyfs_image_parts *parts,
			       struct pull_header *h, struct pyfs_err *err)
{
	struct pyfs_archive *a = NULL;
	struct stat st;
	int rc;

	rc = pyfs_archive_open(archive, &a, err);
	if (rc == 0)
		rc = pyfs_archive_read_metadata(a, parts, err);
	if (a)
		pyfs_archive_close(a);
	h->rc = rc;
	if (rc < 0) {
		memcpy(h->msg, err->msg, sizeof(h->msg));
		return;
	}
	h->inode_count = parts->inode_count;
	h->dirent_count = parts->dirent_count;
	h->names_size = parts->names_size;
	h->payload_size = parts->payload_size;
	h->payload_checksum = parts->payload_checksum;
	h->metadata_checksum = parts->metadata_checksum;
	h->archive_size = stat(archive, &st) == 0 ? (uint64_t)st.st_size : 0;
	h->block_count = parts->block_count;
	h->raw_size = parts->raw_size;
	h->block_size = parts->block_size;
}

/* Allocate what parts still lacks for the sizes in h (the payload on every leader). */
static int pull_alloc_parts(const struct pull_header *h, struct pyfs_image_parts *parts,
			    const char *archive, struct pyfs_err *err)
{
	if (!parts->inodes) {
		parts->inode_count = h->inode_count;
		parts->dirent_count = h->dirent_count;
		parts->names_size = h->names_size;
		parts->payload_checksum = h->payload_checksum;
		parts->metadata_checksum = h->metadata_checksum;
		parts->inodes = pyfs_buffer_alloc(h->inode_count * sizeof(struct pyfs_inode));
		parts->dirents = pyfs_buffer_alloc(h->dirent_count * sizeof(struct pyfs_dirent));
		parts->names = pyfs_buffer_alloc(h->names_size);
		parts->block_count = h->block_count;
		parts->raw_size = h->raw_size;
		parts->block_size = h->block_size;
		parts->blocks = pyfs_buffer_alloc(h->block_count * sizeof(struct pyfs_block));
	}
	parts->payload_size = h->payload_size;
	parts->payload = pyfs_buffer_alloc(h->payload_size);
	if (!parts->inodes || !parts->dirents || !parts->names ||
	    (!parts->blocks && h->block_count) || !parts->payload) {
		pyfs_err_set(err,
			     "cannot hold archive '%s' in memory (%" PRIu64 " bytes of "
			     "payload): %s",
			     archive, h->payload_size, strerror(ENOMEM));
		return -ENOMEM;
	}
	return 0;
}

int pull_metadata(const struct pull_world *world, const char *archive,
		  struct pyfs_image_parts *parts, struct pull_stats *stats, struct pyfs_err *err)
{
	struct pull_header h;
	double start = pyfs_now();
	int rc, failed;

	memset(&h, 0, sizeof(h));
	memset(parts, 0, sizeof(*parts));
	if (world->node_index == 0) {
		uint64_t before = pull_rchar();

		pull_read_metadata(archive, parts, &h, err);
		stats->file_bytes_read += pull_rchar() - before;
	}
	rc = MPI_Bcast(&h, sizeof(h), MPI_BYTE, 0, world->leaders);
	if (rc != MPI_SUCCESS) {
		rc = pull_mpi_error(rc, "broadcasting the archive header", err);
		goto out_free;
	}
	if (h.rc < 0) {
		h.msg[sizeof(h.msg) - 1] = '\0';
		pyfs_err_set(err, "%s", h.msg);
		rc = h.rc;
		goto out_free;
	}
	stats->archive_size = h.archive_size;
	stats->payload_size = h.payload_size;
	rc = pull_alloc_parts(&h, parts, archive, err);
	rc = pull_agree(world->leaders, world->rank, rc, err, &failed);
	if (rc < 0)
		goto out_free;
	rc = pull_bcast(parts->inodes, parts->inode_count * sizeof(struct pyfs_inode), 0,
			world->leaders, err);
	if (rc == 0)
		rc = pull_bcast(parts->dirents, parts->dirent_count * sizeof(struct pyfs_dirent), 0,
				world->leaders, err);
	if (rc == 0)
		rc = pull_bcast(parts->names, parts->names_size, 0, world->leaders, err);
	if (rc == 0)
		rc = pull_bcast(parts->blocks, parts->block_count * sizeof(struct pyfs_block), 0,
				world->leaders, err);
out_free:
	if (rc < 0)
		pyfs_image_parts_free(parts);
	stats->metadata_seconds = pyfs_now() - start;
	return rc;
}

/*
 * The payload slice of each node: contiguous, whole PYFS_PAYLOAD_ALIGNMENT
 * units (stripe-aligned in the file, since the payload starts on such a
 * boundary), as even as that allows; the last nodes may get less or nothing.
 */
static uint64_t pull_slice_bytes(uint64_t payload_size, int node_count)
{
	uint64_t units = (payload_size + PYFS_PAYLOAD_ALIGNMENT - 1) / PYFS_PAYLOAD_ALIGNMENT;

	return (units + (uint64_t)node_count - 1) / (uint64_t)node_count * PYFS_PAYLOAD_ALIGNMENT;
}

static void pull_slice(uint64_t payload_size, int node_count, int node, uint64_t *begin,
		       uint64_t *end)
{
	uint64_t per = pull_slice_bytes(payload_size, node_count);

	*begin = (uint64_t)node * per < payload_size ? (uint64_t)node * per : payload_size;
	*end = payload_size - *begin < per ? payload_size : *begin + per;
}

/* The HDF5 objects of one parallel read of the payload dataset. */
struct pull_h5 {
	hid_t fapl;
	hid_t file;
	hid_t dset;
	hid_t fspace;
	hid_t dxpl;
};

/*
 * Open the payload for collective reads over the leaders. The reads stay one
 * collective H5Dread per round (every leader takes part, metadata is read
 * once and broadcast), but the bytes move with independent MPI-IO reads:
 * two-phase collective buffering would funnel them through aggregators (with
 * Open MPI's OMPIO, one rank read the whole payload), and each node must
 * read exactly its own slice.
 */
static int pull_h5_open(const struct pull_world *world, const char *archive, uint64_t payload_size,
			struct pull_h5 *h5, struct pyfs_err *err)
{
	hsize_t dims[1] = {0};
	hid_t type;
	bool type_ok;

	h5->fapl = H5Pcreate(H5P_FILE_ACCESS);
	if (h5->fapl < 0 || H5Pset_fapl_mpio(h5->fapl, world->leaders, MPI_INFO_NULL) < 0 ||
	    H5Pset_all_coll_metadata_ops(h5->fapl, 1) < 0 ||
	    H5Pset_file_locking(h5->fapl, 0, 1) < 0)
		return pull_h5_error("set up parallel access to", archive, err);
	h5->file = H5Fopen(archive, H5F_ACC_RDONLY, h5->fapl);
	if (h5->file < 0)
		return pull_h5_error("open (parallel HDF5)", archive, err);
	h5->dset = H5Dopen2(h5->file, PYFS_DSET_PAYLOAD, H5P_DEFAULT);
	if (h5->dset < 0)
		return pull_h5_error("open the payload of", archive, err);
	h5->fspace = H5Dget_space(h5->dset);
	if (h5->fspace < 0 || H5Sget_simple_extent_ndims(h5->fspace) != 1 ||
	    H5Sget_simple_extent_dims(h5->fspace, dims, NULL) < 0 || dims[0] != payload_size) {
		pyfs_err_set(err,
			     "invalid archive '%s': the payload dataset does not hold the "
			     "%" PRIu64 " bytes the metadata announces",
			     archive, payload_size);
		return -EINVAL;
	}
	type = H5Dget_type(h5->dset);
	type_ok = type >= 0 && H5Tequal(type, H5T_STD_U8LE) > 0;
	if (type >= 0)
		H5Tclose(type);
	if (!type_ok) {
		pyfs_err_set(err, "invalid archive '%s': the payload dataset is not uint8",
			     archive);
		return -EINVAL;
	}
	h5->dxpl = H5Pcreate(H5P_DATASET_XFER);
	if (h5->dxpl < 0 || H5Pset_dxpl_mpio(h5->dxpl, H5FD_MPIO_COLLECTIVE) < 0 ||
	    H5Pset_dxpl_mpio_collective_opt(h5->dxpl, H5FD_MPIO_INDIVIDUAL_IO) < 0)
		return pull_h5_error("set up collective reads of", archive, err);
	return 0;
}

static void pull_h5_close(struct pull_h5 *h5)
{
	H5E_BEGIN_TRY
	{
		if (h5->dxpl >= 0)
			H5Pclose(h5->dxpl);
		if (h5->fspace >= 0)
			H5Sclose(h5->fspace);
		if (h5->dset >= 0)
			H5Dclose(h5->dset);
		if (h5->file >= 0)
			H5Fclose(h5->file);
		if (h5->fapl >= 0)
			H5Pclose(h5->fapl);
	}
	H5E_END_TRY;
}

/*
 * One collective read: [offset, offset + len) of the payload into the same
 * place of buf; len 0 takes part with an empty selection.
 */
static int pull_h5_read(struct pull_h5 *h5, const char *archive, uint8_t *buf, uint64_t offset,
			uint64_t len, bool *collective, struct pyfs_err *err)
{
	hsize_t start[1] = {offset}, count[1] = {len}, mdims[1] = {len ? len : 1};
	H5D_mpio_actual_io_mode_t mode = H5D_MPIO_NO_COLLECTIVE;
	hid_t mspace = H5Screate_simple(1, mdims, NULL);
	int rc = 0;

	if (mspace < 0)
		return pull_h5_error("read", archive, err);
	if (len)
		rc = H5Sselect_hyperslab(h5->fspace, H5S_SELECT_SET, start, NULL, count, NULL);
	else
		rc = H5Sselect_none(h5->fspace) < 0 || H5Sselect_none(mspace) < 0 ? -1 : 0;
	if (rc >= 0)
		rc = H5Dread(h5->dset, H5T_NATIVE_UINT8, mspace, h5->fspace, h5->dxpl,
			     len ? buf + offset : buf);
	if (rc >= 0 && H5Pget_mpio_actual_io_mode(h5->dxpl, &mode) >= 0)
		*collective = *collective && mode != H5D_MPIO_NO_COLLECTIVE;
	H5Sclose(mspace);
	if (rc < 0)
		return pull_h5_error("read the payload of", archive, err);
	return 0;
}

int pull_payload(const struct pull_world *world, const char *archive,
		 struct pyfs_image_parts *parts, struct pull_stats *stats, struct pyfs_err *err)
{
	struct pull_h5 h5 = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID,
			     H5I_INVALID_HID};
	uint64_t size = parts->payload_size;
	uint64_t per = pull_slice_bytes(size, world->node_count);
	uint64_t begin, end, before;
	uint32_t rounds =
	    (uint32_t)(((per < size ? per : size) + PULL_CHUNK_BYTES - 1) / PULL_CHUNK_BYTES);
	bool collective = true;
	double start;
	int rc, failed;

	pull_slice(size, world->node_count, world->node_index, &begin, &end);
	stats->slice_offset = begin;
	stats->slice_size = end - begin;
	stats->rounds = rounds;
	start = pyfs_now();
	before = pull_rchar();
	rc = pull_h5_open(world, archive, size, &h5, err);
	rc = pull_agree(world->leaders, world->rank, rc, err, &failed);
	/*
	 * One collective read per round; a node reads at most PULL_CHUNK_BYTES of
	 * its slice per round and takes part with nothing once it is done.
	 */
	for (uint32_t r = 0; rc == 0 && r < rounds; r++) {
		uint64_t offset = begin + (uint64_t)r * PULL_CHUNK_BYTES;
		uint64_t len = offset >= end ? 0
					     : (end - offset < PULL_CHUNK_BYTES ? end - offset
										: PULL_CHUNK_BYTES);

		rc = pull_h5_read(&h5, archive, parts->payload, offset, len, &collective, err);
		rc = pull_agree(world->leaders, world->rank, rc, err, &failed);
	}
	pull_h5_close(&h5);
	stats->file_bytes_read += pull_rchar() - before;
	stats->collective = collective;
	stats->read_seconds = pyfs_now() - start;
	if (rc < 0)
		return rc;

	start = pyfs_now();
	for (int node = 0; rc == 0 && node < world->node_count; node++) {
		pull_slice(size, world->node_count, node, &begin, &end);
		rc = pull_bcast(parts->payload + begin, end - begin, node, world->leaders, err);
	}
	rc = pull_agree(world->leaders, world->rank, rc, err, &failed);
	stats->gather_seconds = pyfs_now() - start;
	return rc;
}

int pull_gather_stats(const struct pull_world *world, const struct pull_stats *mine,
		      struct pull_stats *all, struct pyfs_err *err)
{
	int rc = MPI_Gather(mine, sizeof(*mine), MPI_BYTE, all, sizeof(*mine), MPI_BYTE, 0,
			    world->leaders);

	if (rc != MPI_SUCCESS)
		return pull_mpi_error(rc, "gathering statistics", err);
	return 0;
}
