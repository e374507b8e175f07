/*
 * pull.h - fetching an archive once per job with MPI.
 *
 * Ranks are grouped into nodes (MPI_COMM_TYPE_SHARED, or one rank per node
 * with --ranks-as-nodes); the lowest rank of each node is its leader, and the
 * leaders do all the I/O: world rank 0 reads the metadata and broadcasts it,
 * then every leader reads one contiguous slice of the payload with collective
 * parallel-HDF5 reads, and the slices are broadcast so each leader ends up
 * with the whole archive in RAM. Every transfer is split so MPI counts stay
 * far below INT_MAX, whatever the archive size.
 *
 * Failure handling: after each step that can fail on some ranks, the ranks
 * agree with pull_agree(), so every rank sees the same error and nobody waits
 * in a collective the others left. There is no MPI_Abort.
 */
#ifndef PULL_H
#define PULL_H

#include <stdbool.h>
#include <stdint.h>

#include <mpi.h>

#include "image.h"
#include "log.h"

/* Largest single MPI transfer and largest read of one node per round: 1 GiB. */
#define PULL_CHUNK_BYTES (UINT64_C(1) << 30)

struct pull_world {
	MPI_Comm node;	  /* the ranks of this node */
	MPI_Comm leaders; /* one rank per node; MPI_COMM_NULL on the other ranks */
	int rank;	  /* in MPI_COMM_WORLD */
	int size;
	int node_index; /* rank of this node's leader among the leaders */
	int node_count;
	bool leader;
};

/* Group the ranks of MPI_COMM_WORLD into nodes. 0 or -EIO with err set. */
int pull_world_init(struct pull_world *world, bool ranks_as_nodes, struct pyfs_err *err);
void pull_world_free(struct pull_world *world);

/*
 * Every rank of comm passes the result rc (0 or a negative errno) and err of
 * its step. Returns 0 when every rank succeeded. Otherwise returns, on every
 * rank, the rc of the lowest failing rank, copies its message into err and
 * its MPI_COMM_WORLD rank into *failed_rank.
 */
int pull_agree(MPI_Comm comm, int world_rank, int rc, struct pyfs_err *err, int *failed_rank);

/* What a node did during the pull, for --verbose. */
struct pull_stats {
	int32_t rank;	       /* MPI_COMM_WORLD rank of the node's leader */
	uint64_t archive_size; /* bytes of the archive file */
	uint64_t payload_size;
	uint64_t slice_offset; /* this node's payload slice */
	uint64_t slice_size;
	uint64_t file_bytes_read; /* read(2) bytes (rchar) while reading the archive */
	uint32_t rounds;	  /* collective reads */
	uint32_t collective;	  /* 1 when HDF5 reported collective I/O for every round */
	double metadata_seconds;
	double read_seconds;
	double gather_seconds;
};

/*
 * Leaders only, collectively over world->leaders: read the metadata of
 * archive on world rank 0 and broadcast it into parts (inodes, dirents,
 * names, checksums, payload_size), and allocate parts->payload. Returns the
 * same result on every leader; on failure parts is freed.
 */
int pull_metadata(const struct pull_world *world, const char *archive,
		  struct pyfs_image_parts *parts, struct pull_stats *stats, struct pyfs_err *err);

/*
 * Leaders only, collectively: read this node's slice of the payload into
 * parts->payload with collective MPI-IO, then exchange the slices so every
 * leader holds the whole payload. Same result on every leader.
 */
int pull_payload(const struct pull_world *world, const char *archive,
		 struct pyfs_image_parts *parts, struct pull_stats *stats, struct pyfs_err *err);

/*
 * Leaders only, collectively: gather every node's stats on world rank 0
 * (all must hold node_count entries there; ignored elsewhere).
 */
int pull_gather_stats(const struct pull_world *world, const struct pull_stats *mine,
		      struct pull_stats *all, struct pyfs_err *err);

/*
 * The number after key (e.g. "VmRSS:") in a /proc file such as /proc/self/status,
 * or 0 when the file or the key is missing.
 */
uint64_t pull_proc_value(const char *path, const char *key);

#endif /* PULL_H */
