/*
 * pmpi_pause.c - an LD_PRELOAD shim (MPI profiling interface) that stops one rank of
 * pyfs-mount in the middle of the pull, so that a test can kill it there.
 *
 * It wraps the first call of the payload exchange (MPI_Irecv or MPI_Isend for the ring,
 * MPI_Allgatherv for --exchange=allgatherv): by then the metadata has been broadcast,
 * the readers are reading, and every other rank waits for this one in the exchange.
 * The chosen rank writes its PID to a file and sleeps before it goes on; a test kills
 * it with SIGKILL while it sleeps.
 *
 *   PYFS_FAULT_RANK=N       MPI_COMM_WORLD rank to stop (nothing happens without it)
 *   PYFS_FAULT_MARK=PATH    written ("PID\n") once the rank has stopped
 *   PYFS_FAULT_SECONDS=S    how long it stays stopped (default 60)
 *
 * With PYFS_FAULT_AT=read the rank stops in its first payload read instead (a
 * pread(2) of 64 KiB or more, the smallest chunk, in its reader thread), which
 * also happens with one node alone, where there is no exchange.
 *
 * It also wraps pread(2), to fail one reader in the middle of its payload reads:
 *
 *   PYFS_FAULT_EIO_RANK=N   on this MPI_COMM_WORLD rank, the second pread of 1 MiB or
 *                           more (a payload chunk; HDF5's metadata reads are smaller)
 *                           and every one after it fail with EIO
 *
 * Build: mpicc -shared -fPIC -o pmpi_pause.so pmpi_pause.c
 * Use:   mpirun -np 3 env LD_PRELOAD=$PWD/pmpi_pause.so PYFS_FAULT_RANK=2 ... pyfs-mount ...
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <dlfcn.h>
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* Stop here once, on the chosen rank. */
static int pause_at_read(void)
{
	const char *at = getenv("PYFS_FAULT_AT");

	return at && strcmp(at, "read") == 0;
}

static void pause_once(void)
{
	static int paused;
	const char *rank_env = getenv("PYFS_FAULT_RANK");
	const char *mark = getenv("PYFS_FAULT_MARK");
	const char *seconds = getenv("PYFS_FAULT_SECONDS");
	int rank = -1;

	if (paused)
		return;
	paused = 1;
	PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
	if (rank_env && atoi(rank_env) == rank) {
		if (mark) {
			char tmp[4096];
			FILE *f;

			snprintf(tmp, sizeof(tmp), "%s.tmp", mark);
			f = fopen(tmp, "w");
			if (f) {
				fprintf(f, "%ld\n", (long)getpid());
				fclose(f);
				rename(tmp, mark);
			}
		}
		sleep(seconds ? (unsigned)atoi(seconds) : 60);
	}
}

int MPI_Irecv(void *buf, int count, MPI_Datatype type, int source, int tag, MPI_Comm comm,
	      MPI_Request *request)
{
	if (!pause_at_read())
		pause_once();
	return PMPI_Irecv(buf, count, type, source, tag, comm, request);
}

int MPI_Isend(const void *buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm,
	      MPI_Request *request)
{
	if (!pause_at_read())
		pause_once();
	return PMPI_Isend(buf, count, type, dest, tag, comm, request);
}

int MPI_Allgatherv(const void *sendbuf, int sendcount, MPI_Datatype sendtype, void *recvbuf,
		   const int recvcounts[], const int displs[], MPI_Datatype recvtype, MPI_Comm comm)
{
	if (!pause_at_read())
		pause_once();
	return PMPI_Allgatherv(sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype,
			       comm);
}

ssize_t pread64(int fd, void *buf, size_t count, off_t offset);

ssize_t pread64(int fd, void *buf, size_t count, off_t offset)
{
	static ssize_t (*real)(int, void *, size_t, off_t);
	static int chunks;
	const char *rank_env = getenv("PYFS_FAULT_EIO_RANK");
	int initialized = 0, rank = -1;

	if (!real)
		real = (ssize_t(*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
	if (count >= (64u << 10) && pause_at_read())
		pause_once();
	if (rank_env && count >= (1u << 20) && MPI_Initialized(&initialized) == MPI_SUCCESS &&
	    initialized) {
		PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
		if (atoi(rank_env) == rank && ++chunks >= 2) {
			errno = EIO;
			return -1;
		}
	}
	return real(fd, buf, count, offset);
}
