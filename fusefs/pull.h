/*
 * pull.h - fetching an archive once per job with MPI.
 *
 * Ranks are grouped into nodes (MPI_COMM_TYPE_SHARED, or one rank per node
 * with --ranks-as-nodes); the lowest rank of each node is its leader, and the
 * leaders do all the work: world rank 0 reads the metadata and broadcasts it,
 * then R = min(nodes, --readers) reader nodes read the payload from the
 * archive file and the exchange delivers it to every leader.
 *
 * The payload is cut into chunks (64 KiB to 16 MiB, by payload size and node
 * count), read in blocks of 1-4 MiB (a chunk if larger): reader r reads blocks r, r + R,
 * r + 2R, ... (each byte of the file is read once per job, in long runs, and
 * the bytes become available about in payload order),
 * with plain pread(2) at the payload's offset in the file (no MPI-IO: its
 * open costs every reader metadata operations and, with Open MPI, lock files
 * beside the archive), in a thread of its own, straight into the final image
 * buffer. Meanwhile the main thread exchanges the chunks that are there
 * (pull_exchange: a pipelined ring, or rounds of in-place MPI_Allgatherv), and
 * a third thread checksums the payload from its start as far as it has
 * arrived. So a node's pull takes about max(read, exchange) plus the checksum
 * of the last chunk. Nodes that are not readers never open the archive; no
 * rank writes anything beside it. Every transfer stays far below INT_MAX.
 *
 * Failure handling: after each step that can fail on some ranks, the ranks
 * agree with pull_agree(), so every rank sees the same error and nobody waits
 * in a collective the others left. A reader that fails mid-way still takes
 * part in the exchange (with the bytes it has) so that nobody waits for it,
 * and the agreement after the exchange reports its error. There is no
 * MPI_Abort. Only the main thread calls MPI (MPI_THREAD_FUNNELED).
 */
#ifndef PULL_H
#define PULL_H

#include <stdbool.h>
#include <stdint.h>

#include <mpi.h>

#include "image.h"
#include "log.h"

/* Largest single MPI transfer of the metadata broadcast: 1 GiB. */
#define PULL_CHUNK_BYTES (UINT64_C(1) << 30)

/* Default of --readers: at most this many nodes read the archive file. */
#define PULL_READERS_DEFAULT 8

/*
 * Payload chunk sizes: a power of two from PULL_CHUNK_MIN_KIB to
 * PULL_CHUNK_MAX_KIB (--chunk), chosen automatically up to
 * PULL_CHUNK_AUTO_MAX_KIB (see pull_chunk_bytes in pull.c). Chunks of 1 MiB
 * and more start on the payload's 1 MiB stripe alignment.
 */
#define PULL_CHUNK_MIN_KIB	64
#define PULL_CHUNK_MAX_KIB	(1024 * 1024)
#define PULL_CHUNK_AUTO_MAX_KIB (16 * 1024)

/* How the leaders exchange the chunks (--exchange); see pull_exchange in pull.c. */
enum pull_exchange {
	PULL_EXCHANGE_RING,	  /* pipelined ring of MPI_Isend/MPI_Irecv (default) */
	PULL_EXCHANGE_ALLGATHERV, /* one in-place MPI_Allgatherv per round of chunks */
};

/* How to pull the payload, from the command line. */
struct pull_options {
	enum pull_exchange exchange;
	int readers;	      /* at most this many nodes read the archive (>= 1) */
	uint64_t chunk_bytes; /* see PULL_CHUNK_*; 0: chosen from payload and node count */
	bool verify;	      /* checksum the payload while it arrives */
	bool threads;	      /* MPI allows threads that do not call MPI (FUNNELED) */
};

/* "ring" or "allgatherv". */
const char *pull_exchange_name(enum pull_exchange exchange);

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

/* What a node did during the pull, for --verbose (gathered as bytes). */
struct pull_stats {
	int32_t rank;	       /* MPI_COMM_WORLD rank of the node's leader */
	int32_t reader;	       /* this node's reader index; -1: not a reader */
	int32_t readers;       /* reader nodes of the job */
	int32_t exchange;      /* enum pull_exchange */
	uint64_t archive_size; /* bytes of the archive file */
	uint64_t payload_size;
	uint64_t payload_offset; /* of payload byte 0 in the archive file */
	uint64_t chunk_bytes;	 /* payload chunk size */
	uint64_t chunk_count;
	uint64_t read_block_bytes; /* readers read blocks of this size, round-robin */
	uint64_t share_bytes;	   /* payload bytes of this node's chunks (0: not a reader) */
	uint64_t file_bytes_read;  /* bytes read from the archive file (metadata + payload) */
	uint64_t bytes_sent;	   /* payload bytes this node sent in the exchange */
	uint64_t bytes_received;   /* payload bytes this node received */
	uint64_t payload_digest;   /* XXH3-64 computed while the payload arrived */
	uint32_t payload_hashed;   /* 1 when payload_digest is set */
	uint32_t threads;	   /* 1 when reading and checksumming ran in threads */
	double metadata_seconds;
	/* From the start of the payload pull (the stages overlap): */
	double read_seconds;	 /* until this node's last chunk was read */
	double exchange_seconds; /* until every chunk was here */
	double payload_seconds;	 /* until the checksum was done too */
	double hash_seconds;	 /* checksum work, most of it while chunks arrived */
};

/*
 * Leaders only, collectively over world->leaders: read the metadata of
 * archive on world rank 0 and broadcast it into parts (inodes, dirents,
 * names, checksums, payload_size), and allocate parts->payload. Returns the
 * same result on every leader; on failure parts is freed and *failed_rank is
 * the MPI_COMM_WORLD rank where it failed.
 */
int pull_metadata(const struct pull_world *world, const char *archive,
		  struct pyfs_image_parts *parts, struct pull_stats *stats, int *failed_rank,
		  struct pyfs_err *err);

/*
 * Leaders only, collectively: read this node's chunks of the payload into
 * parts->payload when it is a reader, exchange them so that every leader
 * holds the whole payload, and (options->verify) checksum it meanwhile into
 * stats->payload_digest. Same result on every leader; on failure
 * *failed_rank is the MPI_COMM_WORLD rank where it failed.
 */
int pull_payload(const struct pull_world *world, const char *archive,
		 const struct pull_options *options, struct pyfs_image_parts *parts,
		 struct pull_stats *stats, int *failed_rank, struct pyfs_err *err);

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
