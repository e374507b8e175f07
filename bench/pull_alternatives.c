/*
 * pull_alternatives.c - the ways users deliver one file to every node today,
 * timed next to pyfs-mount's pull under the same mpirun.
 *
 * Every rank stands for one node (like pyfs-mount --ranks-as-nodes) and ends
 * holding the whole file in its own memory, as pyfs-mount does:
 *
 *   all-read     every node reads the whole file from the file system
 *   bcast        rank 0 reads the whole file, then MPI_Bcast to all nodes
 *   bcast-untar  python-mpi-bcast's method: rank 0 reads a tar file and
 *                broadcasts it; every node writes it to DEST/RANK.tar on tmpfs,
 *                extracts it into DEST/RANK/ and removes the tar file. The
 *                extraction runs `tar -xf` after MPI_Finalize (no fork while MPI
 *                is initialized)
 *   none         MPI start-up and a barrier only: the launcher's fixed cost
 *
 * Rank 0 prints one line "bytes_read_per_node B0 B1 ..." with the bytes each
 * rank read from the file, and "seconds_read T", "seconds_bcast T".
 *
 *   usage: pull_alternatives MODE FILE [DEST]
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Largest piece handed to one read or one MPI_Bcast (MPI counts are int). */
#define CHUNK ((size_t)1 << 28)

enum mode { MODE_NONE, MODE_ALL_READ, MODE_BCAST, MODE_BCAST_UNTAR };

static int parse_mode(const char *s, enum mode *out)
{
	static const struct {
		const char *name;
		enum mode mode;
	} modes[] = {
	    {"none", MODE_NONE},
	    {"all-read", MODE_ALL_READ},
	    {"bcast", MODE_BCAST},
	    {"bcast-untar", MODE_BCAST_UNTAR},
	};

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(s, modes[i].name)) {
			*out = modes[i].mode;
			return 0;
		}
	return -EINVAL;
}

/* Read size bytes of path into buf; returns 0 or -errno. */
static int read_whole(const char *path, uint8_t *buf, uint64_t size)
{
	uint64_t done = 0;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (done < size) {
		size_t want = size - done < CHUNK ? (size_t)(size - done) : CHUNK;
		ssize_t n = pread(fd, buf + done, want, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		done += (uint64_t)n;
	}
	close(fd);
	return rc;
}

/* Write size bytes of buf to a new file path; returns 0 or -errno. */
static int write_whole(const char *path, const uint8_t *buf, uint64_t size)
{
	uint64_t done = 0;
	int fd, rc = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	while (done < size) {
		size_t want = size - done < CHUNK ? (size_t)(size - done) : CHUNK;
		ssize_t n = write(fd, buf + done, want);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		done += (uint64_t)n;
	}
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	return rc;
}

/* Broadcast size bytes from rank 0 in int-sized pieces. */
static int bcast_bytes(uint8_t *buf, uint64_t size)
{
	for (uint64_t off = 0; off < size; off += CHUNK) {
		int count = (int)(size - off < CHUNK ? size - off : CHUNK);
		int rc = MPI_Bcast(buf + off, count, MPI_BYTE, 0, MPI_COMM_WORLD);

		if (rc != MPI_SUCCESS)
			return -EIO;
	}
	return 0;
}

/* Run `tar -xf tarfile -C dir` and wait; returns 0 or -errno / -EIO. */
static int untar(const char *tarfile, const char *dir)
{
	int status = 0;
	pid_t pid;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("tar", "tar", "-xf", tarfile, "-C", dir, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

int main(int argc, char **argv)
{
	char tarfile[4096] = "", dir[4096] = "";
	uint64_t size = 0, bytes_read = 0, *all_read = NULL;
	double t_read = 0, t_bcast = 0, t0;
	uint8_t *buf = NULL;
	int rank, nodes, rc = 0, ok, all_ok;
	enum mode mode;
	struct stat st;

	if (argc < 3 || parse_mode(argv[1], &mode) < 0 || (mode == MODE_BCAST_UNTAR && argc < 4)) {
		fprintf(stderr,
			"usage: pull_alternatives none|all-read|bcast|bcast-untar FILE [DEST]\n");
		return 2;
	}
	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &nodes);

	if (rank == 0) {
		if (stat(argv[2], &st) != 0)
			rc = -errno;
		else
			size = (uint64_t)st.st_size;
	}
	MPI_Bcast(&size, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
	if (mode != MODE_NONE && size > 0) {
		buf = malloc(size);
		if (!buf)
			rc = -ENOMEM;
	}
	if (rc == 0 && mode != MODE_NONE) {
		t0 = MPI_Wtime();
		if (mode == MODE_ALL_READ || rank == 0) {
			rc = read_whole(argv[2], buf, size);
			bytes_read = size;
		}
		t_read = MPI_Wtime() - t0;
	}
	ok = rc == 0;
	MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
	if (all_ok && (mode == MODE_BCAST || mode == MODE_BCAST_UNTAR)) {
		t0 = MPI_Wtime();
		rc = bcast_bytes(buf, size);
		t_bcast = MPI_Wtime() - t0;
	}
	if (all_ok && rc == 0 && mode == MODE_BCAST_UNTAR) {
		snprintf(tarfile, sizeof(tarfile), "%s/%d.tar", argv[3], rank);
		snprintf(dir, sizeof(dir), "%s/%d", argv[3], rank);
		rc = write_whole(tarfile, buf, size);
		free(buf);
		buf = NULL;
	}
	if (rank == 0) {
		all_read = calloc((size_t)nodes, sizeof(*all_read));
		if (!all_read)
			rc = -ENOMEM;
	}
	MPI_Gather(&bytes_read, 1, MPI_UINT64_T, all_read, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
	ok = rc == 0 && all_ok;
	MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
	if (rank == 0 && all_read) {
		printf("bytes_read_per_node");
		for (int i = 0; i < nodes; i++)
			printf(" %" PRIu64, all_read[i]);
		printf("\nseconds_read %.6f\nseconds_bcast %.6f\n", t_read, t_bcast);
		fflush(stdout);
	}
	if (rc < 0)
		fprintf(stderr, "pull_alternatives: rank %d: %s\n", rank, strerror(-rc));
	free(all_read);
	MPI_Finalize();

	if (all_ok && mode == MODE_BCAST_UNTAR) {
		rc = untar(tarfile, dir);
		unlink(tarfile);
		if (rc < 0)
			fprintf(stderr, "pull_alternatives: rank %d: cannot extract '%s'\n", rank,
				tarfile);
	}
	free(buf);
	return all_ok && rc == 0 ? 0 : 1;
}
