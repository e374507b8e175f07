/*
 * pmpi_pause.c - an LD_PRELOAD shim (MPI profiling interface) that stops one rank of
 * pyfs-mount in the middle of the pull, so that a test can kill it there.
 *
 * It wraps MPI_File_open, which parallel HDF5 calls when the node leaders open the
 * archive for the collective payload read: by then the metadata has been broadcast and
 * every other rank waits for this one in a collective. The chosen rank writes its PID
 * to a file and sleeps before it goes on; a test kills it with SIGKILL while it sleeps.
 *
 *   PYFS_FAULT_RANK=N       MPI_COMM_WORLD rank to stop (nothing happens without it)
 *   PYFS_FAULT_MARK=PATH    written ("PID\n") once the rank has stopped
 *   PYFS_FAULT_SECONDS=S    how long it stays stopped (default 60)
 *
 * Build: mpicc -shared -fPIC -o pmpi_pause.so pmpi_pause.c
 * Use:   mpirun -np 3 env LD_PRELOAD=$PWD/pmpi_pause.so PYFS_FAULT_RANK=2 ... pyfs-mount ...
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int MPI_File_open(MPI_Comm comm, const char *filename, int amode, MPI_Info info, MPI_File *fh)
{
	const char *rank_env = getenv("PYFS_FAULT_RANK");
	const char *mark = getenv("PYFS_FAULT_MARK");
	const char *seconds = getenv("PYFS_FAULT_SECONDS");
	int rank = -1;

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
	return PMPI_File_open(comm, filename, amode, info, fh);
}
