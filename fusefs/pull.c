/*
 * pull.c - the MPI pull: node discovery, agreement, metadata broadcast, then
 * the payload: reader threads pread their chunks, the main thread exchanges
 * them (ring or Allgatherv), a checksum thread follows what has arrived. See
 * pull.h for the protocol; every buffer here is the final image buffer, so
 * the payload is never copied in user space.
 */
#include "pull.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "archive_io.h"
#include "pyfs_format.h"

#define PULL_HOST_TAG " (on host "

_Static_assert(PULL_CHUNK_BYTES <= INT_MAX, "MPI and HDF5 transfers are counted in int");

/*
 * Whether errors name the host they happened on: when the ranks span several
 * machines (not with --ranks-as-nodes, where they all share one).
 */
static bool pull_name_hosts;

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
	uint64_t payload_offset; /* of payload byte 0 in the file */
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
	pull_name_hosts = !ranks_as_nodes && world->node_count > 1;
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
		/* Name the host once: a message agreed on before already carries it. */
		if (pull_name_hosts && !strstr(report.msg, PULL_HOST_TAG)) {
			char host[128] = "?";
			size_t len = strlen(report.msg);

			gethostname(host, sizeof(host) - 1);
			snprintf(report.msg + len, sizeof(report.msg) - len, PULL_HOST_TAG "'%s')",
				 host);
		}
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
	h->rc = rc;
	if (rc < 0) {
		memcpy(h->msg, err->msg, sizeof(h->msg));
		goto out_close;
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
	h->payload_offset = pyfs_archive_payload_file_offset(a);
out_close:
	if (a)
		pyfs_archive_close(a);
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
		  struct pyfs_image_parts *parts, struct pull_stats *stats, int *failed_rank,
		  struct pyfs_err *err)
{
	struct pull_header h;
	double start = pyfs_now();
	int rc;

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
		*failed_rank = world->rank;
		goto out_free;
	}
	if (h.rc < 0) {
		h.msg[sizeof(h.msg) - 1] = '\0';
		pyfs_err_set(err, "%s", h.msg);
		rc = h.rc;
		*failed_rank = 0; /* world rank 0 reads the metadata */
		goto out_free;
	}
	stats->archive_size = h.archive_size;
	stats->payload_size = h.payload_size;
	stats->payload_offset = h.payload_offset;
	rc = pull_alloc_parts(&h, parts, archive, err);
	*failed_rank = 0;
	rc = pull_agree(world->leaders, world->rank, rc, err, failed_rank);
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

/* ---- the payload ---- */

/* The Allgatherv exchange counts in units of min(chunk, 1 MiB), which divide every chunk. */
#define PULL_UNIT_MAX PYFS_PAYLOAD_ALIGNMENT

/*
 * Ring transfers in flight per direction and node: PULL_RING_INFLIGHT bytes'
 * worth of chunks, 1 to PULL_RING_WINDOW_MAX of them. Measured on the test
 * bed at 8 hosts (200 Mbit/s links, 119 MiB): 1 MiB in flight per link and
 * direction exchanged in 6.1-6.5 s with chunks of 64 KiB to 1 MiB, 2 MiB in
 * 6.9 s, 4 MiB in 9.3-13.3 s; then, 256 KiB chunks, launch to mounted with
 * 256 KiB in flight 6.97-7.09 s, 512 KiB 6.73-6.97 s, 1 MiB 6.85-7.13 s, 2
 * MiB 6.90-7.04 s. Ring chunks are at most PULL_RING_CHUNK_AUTO_MAX_KIB
 * unless --chunk says otherwise (1 MiB ones, one in flight: 6.5 s; 256 KiB:
 * 6.1-6.3 s).
 */
#define PULL_RING_INFLIGHT	     (UINT64_C(512) << 10)
#define PULL_RING_WINDOW_MAX	     16
#define PULL_RING_CHUNK_AUTO_MAX_KIB 256
#define PULL_RING_TAG		     0x7079

/*
 * Readers read blocks of PULL_READ_BLOCK_MIN to PULL_READ_BLOCK_MAX bytes, at
 * least PULL_READ_ROUNDS rounds of them in all when the payload allows (see
 * pull_read_group).
 */
#define PULL_READ_BLOCK_MIN (UINT64_C(1) << 20)
#define PULL_READ_BLOCK_MAX (UINT64_C(4) << 20)
#define PULL_READ_ROUNDS    8

/*
 * Longest pause between the ring's MPI polls. The ring never blocks in MPI:
 * Open MPI busy-polls there, and N ranks spinning on shared cores took them
 * from the kernel that moves the bytes (8 hosts on the test bed's 2 cores:
 * 8.5 s to mounted blocking, 7.6 s polling; 50 us to 1 ms pauses alike).
 */
#define PULL_POLL_USEC 200
/*
 * Idle polls that only yield the CPU before the ring pauses. Where ranks
 * share a machine, MPI moves bytes (shared memory) only inside its calls, and
 * a pause delays every transfer: 8 ranks as nodes, 397 MiB, 1.77 s to mounted
 * with pauses alone, 1.61-1.64 s with 4 to 64 yields first (the bed: within
 * noise).
 */
#define PULL_POLL_YIELDS 16

_Static_assert(PULL_CHUNK_MAX_KIB *UINT64_C(1024) <= INT_MAX,
	       "a chunk is one MPI transfer counted in int");

const char *pull_exchange_name(enum pull_exchange exchange)
{
	return exchange == PULL_EXCHANGE_ALLGATHERV ? "allgatherv" : "ring";
}

/*
 * The payload pull of one leader: the plan (the same on every leader) and
 * what its threads share. Chunk c is bytes [c * chunk, + chunk) of the
 * payload (the last one shorter); read block b is chunks [b * group, +
 * group), and reader r reads blocks r, r + readers, r + 2 * readers, ...
 * A chunk is ready once its bytes are in place, read here or received; ready
 * flags only go from 0 to 1 (under lock, with a broadcast of cond).
 */
struct pull_job {
	uint8_t *payload;
	uint64_t size;
	uint64_t chunk;
	uint64_t chunks;
	uint64_t group; /* chunks per read block (see pull_job_init) */
	int nodes;
	int readers;
	int node;   /* this node's index among the leaders */
	int reader; /* this node's reader index; -1: it does not read */
	double start;

	/* Reading, on reader nodes. */
	const char *archive;
	int fd;
	uint64_t file_offset; /* of payload byte 0 */
	int read_rc;
	struct pyfs_err read_err;
	uint64_t read_bytes;
	double read_end;

	atomic_uchar *ready;
	atomic_bool abort; /* the exchange failed: readers and checksum stop */
	pthread_mutex_t lock;
	pthread_cond_t cond;

	struct pyfs_checksum *sum; /* NULL: no checksum */
	double hash_seconds;
};

/*
 * Chunk size: as given, or the largest power of two from 64 KiB to
 * PULL_CHUNK_AUTO_MAX_KIB (PULL_RING_CHUNK_AUTO_MAX_KIB for the ring) such
 * that one chunk per node is at most an eighth of the payload, but not below
 * 1 MiB (whole stripes) until there are more than P / 8 MiB nodes (reads go
 * in blocks of 1 MiB or more whatever the chunk). Large chunks keep
 * per-message costs and read calls few; small ones fill the ring's pipeline
 * sooner (a chunk crosses up to N-1 links: N x chunk / link rate, kept
 * within an eighth of the payload's own transfer time) and let reading,
 * exchange and checksum overlap more finely.
 */
static uint64_t pull_chunk_bytes(uint64_t size, int nodes, uint64_t chosen,
				 enum pull_exchange exchange)
{
	uint64_t chunk = (exchange == PULL_EXCHANGE_RING ? PULL_RING_CHUNK_AUTO_MAX_KIB
							 : PULL_CHUNK_AUTO_MAX_KIB) *
			 UINT64_C(1024);

	if (chosen)
		return chosen;
	while (
	    chunk > PULL_CHUNK_MIN_KIB * UINT64_C(1024) && chunk * 8 * (uint64_t)nodes > size &&
	    (chunk > PYFS_PAYLOAD_ALIGNMENT || size < PYFS_PAYLOAD_ALIGNMENT * 8 * (uint64_t)nodes))
		chunk /= 2;
	return chunk;
}

/*
 * Chunks per read block. Readers read whole blocks round-robin: long
 * sequential runs for the file system (its read-ahead fetches little past a
 * reader's own bytes), however small the chunks of the exchange. Blocks are
 * up to 4 MiB, but a payload is read in at least PULL_READ_ROUNDS rounds of R
 * blocks where blocks of 1 MiB or more allow it: the exchange of a round
 * starts once its blocks are read, so with few rounds it waits most of the
 * read (measured on the test bed at 8 hosts, 38 MiB compressed payload: 4
 * MiB blocks, two rounds, 5.9 s; 1 MiB blocks, five rounds, 4.8 s).
 */
static uint64_t pull_read_group(uint64_t size, uint64_t chunk, int readers)
{
	uint64_t block = PULL_READ_BLOCK_MAX;

	while (block > PULL_READ_BLOCK_MIN && block * (uint64_t)readers * PULL_READ_ROUNDS > size)
		block /= 2;
	return chunk < block ? block / chunk : 1;
}

/* Readers are spread evenly over the nodes; reader 0 is node 0. */
static int pull_reader_node(const struct pull_job *job, int reader)
{
	return (int)((int64_t)reader * job->nodes / job->readers);
}

static int pull_node_reader(const struct pull_job *job, int node)
{
	int reader = (int)(((int64_t)node * job->readers + job->nodes - 1) / job->nodes);

	return reader < job->readers && pull_reader_node(job, reader) == node ? reader : -1;
}

/* The node that reads chunk c: its block goes round-robin over the readers. */
static int pull_owner(const struct pull_job *job, uint64_t c)
{
	return pull_reader_node(job, (int)(c / job->group % (uint64_t)job->readers));
}

/* One past the last chunk of read block b. */
static uint64_t pull_block_end(const struct pull_job *job, uint64_t b)
{
	return (b + 1) * job->group < job->chunks ? (b + 1) * job->group : job->chunks;
}

static uint64_t pull_chunk_len(const struct pull_job *job, uint64_t c)
{
	uint64_t begin = c * job->chunk;

	return job->size - begin < job->chunk ? job->size - begin : job->chunk;
}

static bool pull_is_ready(struct pull_job *job, uint64_t c)
{
	return atomic_load_explicit(&job->ready[c], memory_order_acquire) != 0;
}

static void pull_mark_ready(struct pull_job *job, uint64_t c)
{
	pthread_mutex_lock(&job->lock);
	atomic_store_explicit(&job->ready[c], 1, memory_order_release);
	pthread_cond_broadcast(&job->cond);
	pthread_mutex_unlock(&job->lock);
}

/*
 * Wait until chunk c is ready, for at most usec microseconds (0: no limit):
 * true once it is, false on timeout or once the pull is aborted.
 */
static bool pull_wait_ready(struct pull_job *job, uint64_t c, long usec)
{
	struct timespec until;
	bool ready = pull_is_ready(job, c);

	if (ready)
		return true;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += usec * 1000;
	until.tv_sec += until.tv_nsec / 1000000000;
	until.tv_nsec %= 1000000000;
	pthread_mutex_lock(&job->lock);
	while (!(ready = pull_is_ready(job, c)) && !atomic_load(&job->abort)) {
		if (!usec)
			pthread_cond_wait(&job->cond, &job->lock);
		else if (pthread_cond_timedwait(&job->cond, &job->lock, &until) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&job->lock);
	return ready;
}

static void pull_abort(struct pull_job *job)
{
	pthread_mutex_lock(&job->lock);
	atomic_store(&job->abort, true);
	pthread_cond_broadcast(&job->cond);
	pthread_mutex_unlock(&job->lock);
}

/* Read chunk c from the archive file into its place. 0 or a negative errno (read_err set). */
static int pull_read_chunk(struct pull_job *job, uint64_t c)
{
	uint64_t begin = c * job->chunk, len = pull_chunk_len(job, c), done = 0;

	while (done < len) {
		ssize_t n = pread(job->fd, job->payload + begin + done, (size_t)(len - done),
				  (off_t)(job->file_offset + begin + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int rc = -errno;

			pyfs_err_set(&job->read_err, "cannot read archive '%s': %s", job->archive,
				     strerror(-rc));
			return rc;
		}
		if (n == 0) {
			pyfs_err_set(&job->read_err,
				     "cannot read archive '%s': it ends before byte %" PRIu64
				     " of the payload (truncated?)",
				     job->archive, begin + done);
			return -EIO;
		}
		done += (uint64_t)n;
		job->read_bytes += (uint64_t)n;
	}
	return 0;
}

/*
 * The reader thread: this node's chunks in order, each marked ready once
 * read. After a failure the remaining chunks are marked ready unread, so that
 * the exchange ends and the agreement after it reports read_rc.
 */
static void *pull_read_chunks(void *arg)
{
	struct pull_job *job = arg;

	for (uint64_t b = (uint64_t)job->reader; b * job->group < job->chunks;
	     b += (uint64_t)job->readers) {
		for (uint64_t c = b * job->group; c < pull_block_end(job, b); c++) {
			if (job->read_rc == 0 && !atomic_load(&job->abort))
				job->read_rc = pull_read_chunk(job, c);
			pull_mark_ready(job, c);
		}
	}
	job->read_end = pyfs_now();
	return NULL;
}

/*
 * The checksum thread: XXH3 streaming is in order, so it hashes chunk after
 * chunk from the start of the payload, each as soon as it is ready. The
 * chunks arrive about in payload order (reads and exchange both go in chunk
 * order), so little is left to hash once the last one is in.
 */
static void *pull_hash_chunks(void *arg)
{
	struct pull_job *job = arg;

	for (uint64_t c = 0; c < job->chunks; c++) {
		double t;

		if (!pull_wait_ready(job, c, 0))
			break;
		t = pyfs_now();
		pyfs_checksum_update(job->sum, job->payload + c * job->chunk,
				     pull_chunk_len(job, c));
		job->hash_seconds += pyfs_now() - t;
	}
	return NULL;
}

/*
 * Start fn(arg) in a thread that takes no signals (they stay with the main
 * thread) and may run on any CPU this process may use: a launcher binding the
 * rank to one core (mpirun does for 2 ranks or fewer) would otherwise make
 * reading, checksum and exchange share it. False if no thread could start.
 */
static bool pull_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	sigset_t all, old;
	cpu_set_t cpus;
	bool attr_ok = pthread_attr_init(&attr) == 0;
	int rc;

	memset(&cpus, 0xff, sizeof(cpus));
	if (attr_ok && pthread_attr_setaffinity_np(&attr, sizeof(cpus), &cpus) != 0) {
		pthread_attr_destroy(&attr);
		attr_ok = false;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(thread, attr_ok ? &attr : NULL, fn, arg);
	if (rc != 0 && attr_ok)
		rc = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (attr_ok)
		pthread_attr_destroy(&attr);
	if (rc != 0)
		pyfs_debug("no thread (%s): the pull runs its stages one after another",
			   strerror(rc));
	return rc == 0;
}

/*
 * The chunks that cross the link from node to node + 1, in the order both
 * ends use: round after round of read blocks, and within a round by hops
 * travelled, the block read by node itself first, then the one read by
 * node - 1 (received one hop before), and so on up to node + 2's; node +
 * 1's own block does not cross. So the d-th block of a round waits only for
 * the (d - 1)-th of the same round on the link before, one hop back: the
 * classic ring all-gather, pipelined over rounds. (In payload order, a
 * node's next send would wait for a block up to N - 2 hops away, and with it
 * every send after it: 26 s instead of 7 on the test bed at 8 hosts.)
 * Fills order (job->chunks entries at most); returns the count.
 */
static uint64_t pull_ring_order(const struct pull_job *job, int node, uint64_t *order)
{
	uint64_t blocks = (job->chunks + job->group - 1) / job->group, n = 0;

	for (uint64_t first = 0; first < blocks; first += (uint64_t)job->readers) {
		for (int d = 0; d + 1 < job->nodes; d++) {
			int reader = pull_node_reader(job, (node - d + job->nodes) % job->nodes);
			uint64_t b = first + (uint64_t)reader;

			if (reader < 0 || b >= blocks)
				continue;
			for (uint64_t c = b * job->group; c < pull_block_end(job, b); c++)
				order[n++] = c;
		}
	}
	return n;
}

/*
 * The ring: every chunk travels from its reader to the right, node after
 * node, until the node before its reader has it. Node i receives from node
 * i-1 every chunk it does not read and sends to node i+1 every chunk that
 * i+1 does not read, each link in pull_ring_order, a chunk as soon as it is
 * here (read or received); up to PULL_RING_INFLIGHT bytes are in flight
 * each way, straight between the final buffers. Every link carries at most the
 * payload once, all links work at once, and a chunk crosses at most N-1
 * links: about P / link rate + N x chunk / link rate, flat in N while N x
 * chunk << P. Each send waits only for an earlier send of this node or for a
 * chunk one hop closer to its reader, so the ring cannot deadlock.
 */
static int pull_exchange_ring(struct pull_job *job, MPI_Comm comm, struct pull_stats *stats,
			      struct pyfs_err *err)
{
	enum { WMAX = PULL_RING_WINDOW_MAX };
	static const struct timespec pause = {0, PULL_POLL_USEC * 1000};
	int idle_polls = 0;
	const uint64_t fit = PULL_RING_INFLIGHT / job->chunk;
	const int W = fit < 1 ? 1 : fit > WMAX ? WMAX : (int)fit;
	MPI_Request req[2 * WMAX];
	uint64_t slot[2 * WMAX];
	int done[2 * WMAX];
	int left = (job->node + job->nodes - 1) % job->nodes;
	int right = (job->node + 1) % job->nodes;
	uint64_t *recv_order = calloc(job->chunks ? job->chunks : 1, sizeof(uint64_t));
	uint64_t *send_order = calloc(job->chunks ? job->chunks : 1, sizeof(uint64_t));
	uint64_t recv_count, send_count, recv_pos = 0, send_pos = 0;
	int active = 0, rc = 0;

	for (int i = 0; i < 2 * W; i++)
		req[i] = MPI_REQUEST_NULL;
	if (!recv_order || !send_order) {
		free(recv_order);
		free(send_order);
		pyfs_err_set(err, "cannot exchange the archive: %s", strerror(ENOMEM));
		return -ENOMEM;
	}
	recv_count = pull_ring_order(job, left, recv_order);
	send_count = pull_ring_order(job, job->node, send_order);
	for (;;) {
		bool wait_read = false;
		int count = 0;

		/* Slots 0..W-1 receive, W..2W-1 send. */
		for (int i = 0; i < W && recv_pos < recv_count; i++) {
			uint64_t c = recv_order[recv_pos];

			if (req[i] != MPI_REQUEST_NULL)
				continue;
			rc = MPI_Irecv(job->payload + c * job->chunk, (int)pull_chunk_len(job, c),
				       MPI_BYTE, left, PULL_RING_TAG, comm, &req[i]);
			if (rc != MPI_SUCCESS) {
				rc = pull_mpi_error(rc, "receiving the archive", err);
				goto out;
			}
			slot[i] = c;
			active++;
			recv_pos++;
		}
		for (int i = W; i < 2 * W && send_pos < send_count; i++) {
			uint64_t c = send_order[send_pos];

			if (req[i] != MPI_REQUEST_NULL)
				continue;
			if (!pull_is_ready(job, c)) {
				wait_read = pull_owner(job, c) == job->node;
				break;
			}
			rc = MPI_Isend(job->payload + c * job->chunk, (int)pull_chunk_len(job, c),
				       MPI_BYTE, right, PULL_RING_TAG, comm, &req[i]);
			if (rc != MPI_SUCCESS) {
				rc = pull_mpi_error(rc, "sending the archive", err);
				goto out;
			}
			slot[i] = c;
			active++;
			send_pos++;
		}
		if (active == 0 && recv_pos >= recv_count && send_pos >= send_count)
			goto out;
		/*
		 * Poll MPI; when nothing is done, yield the CPU for the first
		 * PULL_POLL_YIELDS polls, then pause for at most PULL_POLL_USEC:
		 * on the reader's signal while the next send waits for this
		 * node's own reader (with nothing in flight, until it comes),
		 * else in a plain sleep.
		 */
		rc = MPI_Testsome(2 * W, req, &count, done, MPI_STATUSES_IGNORE);
		if (rc == MPI_SUCCESS && (count == 0 || count == MPI_UNDEFINED)) {
			if (idle_polls < PULL_POLL_YIELDS && !(wait_read && !active)) {
				idle_polls++;
				sched_yield();
			} else if (wait_read) {
				pull_wait_ready(job, send_order[send_pos],
						active ? PULL_POLL_USEC : 0);
			} else {
				nanosleep(&pause, NULL);
			}
		} else {
			idle_polls = 0;
		}
		if (rc != MPI_SUCCESS) {
			rc = pull_mpi_error(rc, "exchanging the archive", err);
			goto out;
		}
		for (int k = 0; count != MPI_UNDEFINED && k < count; k++) {
			int i = done[k];
			uint64_t len = pull_chunk_len(job, slot[i]);

			active--;
			if (i < W) {
				pull_mark_ready(job, slot[i]);
				stats->bytes_received += len;
			} else {
				stats->bytes_sent += len;
			}
		}
	}
out:
	free(recv_order);
	free(send_order);
	return rc;
}

/*
 * Rounds of MPI_Allgatherv in place: round j gathers read blocks j*R ..
 * j*R+R-1, contiguous in the payload, reader r's at displacement r blocks;
 * the other nodes give nothing. Counts and displacements are in units of
 * min(chunk, 1 MiB) (a derived datatype), so they stay small whatever the
 * payload and R; the last partial unit of the payload follows in one
 * MPI_Bcast from its reader. A reader joins round j once its block of it is
 * read; its reader thread reads on meanwhile, and the checksum thread hashes
 * the rounds already gathered.
 */
static int pull_exchange_allgatherv(struct pull_job *job, MPI_Comm comm, struct pull_stats *stats,
				    struct pyfs_err *err)
{
	uint64_t readers = (uint64_t)job->readers;
	uint64_t blocks = (job->chunks + job->group - 1) / job->group;
	uint64_t rounds = (blocks + readers - 1) / readers;
	uint64_t block_bytes = job->group * job->chunk;
	uint64_t unit_bytes = job->chunk < PULL_UNIT_MAX ? job->chunk : PULL_UNIT_MAX;
	uint64_t tail = job->size % unit_bytes;
	int *counts = calloc((size_t)job->nodes, sizeof(int));
	int *displs = calloc((size_t)job->nodes, sizeof(int));
	MPI_Datatype unit = MPI_DATATYPE_NULL;
	int rc = 0, mpi_rc;

	if (!counts || !displs) {
		pyfs_err_set(err, "cannot exchange the archive: %s", strerror(ENOMEM));
		rc = -ENOMEM;
		goto out_free;
	}
	mpi_rc = MPI_Type_contiguous((int)unit_bytes, MPI_BYTE, &unit);
	if (mpi_rc == MPI_SUCCESS)
		mpi_rc = MPI_Type_commit(&unit);
	if (mpi_rc != MPI_SUCCESS) {
		rc = pull_mpi_error(mpi_rc, "making the exchange datatype", err);
		goto out_free;
	}
	for (uint64_t j = 0; j < rounds; j++) {
		uint64_t own = job->reader >= 0 ? j * readers + (uint64_t)job->reader : blocks;

		for (int r = 0; r < job->readers; r++) {
			uint64_t bk = j * readers + (uint64_t)r;
			uint64_t end = bk < blocks ? pull_block_end(job, bk) * job->chunk : 0;
			uint64_t bytes =
			    bk < blocks ? (end < job->size ? end : job->size) - bk * block_bytes
					: 0;
			int node = pull_reader_node(job, r);

			counts[node] = (int)(bytes / unit_bytes);
			displs[node] = (int)((uint64_t)r * (block_bytes / unit_bytes));
		}
		if (own < blocks)
			pull_wait_ready(job, pull_block_end(job, own) - 1, 0);
		mpi_rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL,
					job->payload + j * readers * block_bytes, counts, displs,
					unit, comm);
		if (mpi_rc != MPI_SUCCESS) {
			rc = pull_mpi_error(mpi_rc, "exchanging the archive", err);
			goto out_free;
		}
		for (int r = 0; r < job->readers; r++) {
			uint64_t bk = j * readers + (uint64_t)r;
			uint64_t bytes = (uint64_t)counts[pull_reader_node(job, r)] * unit_bytes;

			if (bk >= blocks)
				break;
			if (bk == own) {
				stats->bytes_sent += bytes;
				continue;
			}
			stats->bytes_received += bytes;
			for (uint64_t c = bk * job->group; c < pull_block_end(job, bk); c++)
				if (!(tail && c == job->chunks - 1))
					pull_mark_ready(job, c);
		}
	}
	if (tail && job->chunks) {
		uint64_t last = job->chunks - 1;
		int owner = pull_owner(job, last);

		mpi_rc =
		    MPI_Bcast(job->payload + job->size - tail, (int)tail, MPI_BYTE, owner, comm);
		if (mpi_rc != MPI_SUCCESS) {
			rc = pull_mpi_error(mpi_rc, "exchanging the archive", err);
			goto out_free;
		}
		if (owner == job->node) {
			stats->bytes_sent += tail;
		} else {
			stats->bytes_received += tail;
			pull_mark_ready(job, last);
		}
	}
out_free:
	if (unit != MPI_DATATYPE_NULL)
		MPI_Type_free(&unit);
	free(displs);
	free(counts);
	return rc;
}

/*
 * The one place that picks the exchange (--exchange): returns when every
 * chunk is here and every chunk this node passes on has left.
 */
static int pull_exchange(struct pull_job *job, enum pull_exchange exchange, MPI_Comm comm,
			 struct pull_stats *stats, struct pyfs_err *err)
{
	if (job->nodes == 1)
		return 0;
	if (exchange == PULL_EXCHANGE_ALLGATHERV)
		return pull_exchange_allgatherv(job, comm, stats, err);
	return pull_exchange_ring(job, comm, stats, err);
}

/*
 * On a reader: open the archive for the payload reads and check it is still
 * the file whose metadata node 0 read (same size); no read-ahead, so the file
 * system delivers exactly this node's chunks.
 */
static int pull_open_archive(struct pull_job *job, uint64_t archive_size, struct pyfs_err *err)
{
	struct stat st;
	int rc;

	/* O_NONBLOCK: a FIFO in its place is refused, not waited on. */
	job->fd = open(job->archive, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (job->fd < 0 || fstat(job->fd, &st) < 0) {
		rc = -errno;
		pyfs_err_set(err, "cannot open archive '%s': %s", job->archive, strerror(-rc));
		return rc;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != archive_size) {
		pyfs_err_set(err,
			     "archive '%s' changed during the pull: %" PRIu64 " bytes, %" PRIu64
			     " when its metadata was read",
			     job->archive, (uint64_t)st.st_size, archive_size);
		return -ESTALE;
	}
	(void)posix_fadvise(job->fd, 0, 0, POSIX_FADV_RANDOM);
	return 0;
}

/* The plan, the same on every leader, and this node's place in it. */
static int pull_job_init(struct pull_job *job, const struct pull_world *world, const char *archive,
			 const struct pull_options *options, struct pyfs_image_parts *parts,
			 const struct pull_stats *stats, struct pyfs_err *err)
{
	pthread_condattr_t cond_attr;

	memset(job, 0, sizeof(*job));
	job->payload = parts->payload;
	job->size = parts->payload_size;
	job->nodes = world->node_count;
	job->readers = options->readers < job->nodes ? options->readers : job->nodes;
	job->node = world->node_index;
	job->reader = pull_node_reader(job, job->node);
	job->chunk =
	    pull_chunk_bytes(job->size, job->nodes, options->chunk_bytes, options->exchange);
	job->chunks = (job->size + job->chunk - 1) / job->chunk;
	job->group = pull_read_group(job->size, job->chunk, job->readers);
	job->archive = archive;
	job->fd = -1;
	job->file_offset = stats->payload_offset;
	atomic_init(&job->abort, false);
	pthread_mutex_init(&job->lock, NULL);
	pthread_condattr_init(&cond_attr);
	pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC);
	pthread_cond_init(&job->cond, &cond_attr);
	pthread_condattr_destroy(&cond_attr);
	job->ready = calloc(job->chunks ? (size_t)job->chunks : 1, sizeof(*job->ready));
	if (options->verify)
		job->sum = pyfs_checksum_create();
	if (!job->ready || (options->verify && !job->sum)) {
		pyfs_err_set(err, "cannot plan the pull: %s", strerror(ENOMEM));
		return -ENOMEM;
	}
	return 0;
}

static void pull_job_free(struct pull_job *job)
{
	if (job->fd >= 0)
		close(job->fd);
	pyfs_checksum_destroy(job->sum);
	free(job->ready);
	pthread_cond_destroy(&job->cond);
	pthread_mutex_destroy(&job->lock);
}

int pull_payload(const struct pull_world *world, const char *archive,
		 const struct pull_options *options, struct pyfs_image_parts *parts,
		 struct pull_stats *stats, int *failed_rank, struct pyfs_err *err)
{
	struct pull_job job;
	pthread_t reader_thread, hash_thread;
	bool reading = false, hashing = false;
	enum pull_exchange exchange = options->exchange;
	double arrived;
	int rc;

	rc = pull_job_init(&job, world, archive, options, parts, stats, err);
	stats->reader = job.reader;
	stats->readers = job.readers;
	stats->exchange = (int32_t)exchange;
	stats->chunk_bytes = job.chunk;
	stats->chunk_count = job.chunks;
	stats->read_block_bytes = job.group * job.chunk;
	for (uint64_t c = 0; job.reader >= 0 && c < job.chunks; c++)
		if (pull_owner(&job, c) == job.node)
			stats->share_bytes += pull_chunk_len(&job, c);
	/* A reader with no chunk (a payload smaller than R chunks) opens nothing. */
	if (rc == 0 && stats->share_bytes)
		rc = pull_open_archive(&job, stats->archive_size, err);
	rc = pull_agree(world->leaders, world->rank, rc, err, failed_rank);
	if (rc < 0)
		goto out_free;

	job.start = pyfs_now();
	job.read_end = job.start;
	if (stats->share_bytes) {
		reading =
		    options->threads && pull_thread_start(&reader_thread, pull_read_chunks, &job);
		if (!reading)
			pull_read_chunks(&job);
	}
	if (job.sum)
		hashing =
		    options->threads && pull_thread_start(&hash_thread, pull_hash_chunks, &job);
	rc = pull_exchange(&job, exchange, world->leaders, stats, err);
	if (rc < 0)
		pull_abort(&job);
	arrived = pyfs_now();
	if (reading)
		pthread_join(reader_thread, NULL);
	if (job.read_end > arrived)
		arrived = job.read_end;
	if (job.sum && !hashing && rc == 0)
		pull_hash_chunks(&job);
	if (hashing)
		pthread_join(hash_thread, NULL);
	if (rc == 0 && job.read_rc < 0) {
		rc = job.read_rc;
		memcpy(err->msg, job.read_err.msg, sizeof(err->msg));
	}
	/* Whether each stage that wanted a thread got one. */
	stats->threads = (reading || !stats->share_bytes) && (hashing || !job.sum);
	stats->file_bytes_read += job.read_bytes;
	stats->read_seconds = stats->share_bytes ? job.read_end - job.start : 0.0;
	stats->exchange_seconds = arrived - job.start;
	stats->payload_seconds = pyfs_now() - job.start;
	stats->hash_seconds = job.hash_seconds;
	if (rc == 0 && job.sum) {
		stats->payload_digest = pyfs_checksum_digest(job.sum);
		stats->payload_hashed = 1;
	}
	rc = pull_agree(world->leaders, world->rank, rc, err, failed_rank);
out_free:
	pull_job_free(&job);
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
