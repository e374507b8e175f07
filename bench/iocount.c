/*
 * iocount.c - run a command and report the bytes it read, children included.
 *
 * Started by mpirun in place of the command (mpirun ... iocount OUTDIR cmd ...),
 * it runs cmd, waits for it, and writes OUTDIR/io.RANK with the rchar and
 * read_bytes of /proc/self/io. Linux adds a reaped child's I/O counters to its
 * parent's, so the figures cover cmd and every process of it that exited, but not a
 * daemon it left running: for pyfs-mount that is exactly the pull (the serving
 * process forks off after it and reads nothing from the archive). rchar counts
 * read(2)-family bytes from files, pipes and sockets, so it is an upper bound on
 * the bytes read from the archive; the benchmark sets it against the payload size.
 *
 *   usage: iocount OUTDIR CMD [ARG...]        exits with CMD's status
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *rank_string(void)
{
	const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = getenv(vars[i]);

		if (v && *v)
			return v;
	}
	return "0";
}

/* Copy rchar and read_bytes from /proc/self/io to path. */
static int write_counters(const char *path)
{
	char line[256];
	FILE *in, *out;
	int rc = 0;

	in = fopen("/proc/self/io", "r");
	if (!in)
		return -errno;
	out = fopen(path, "w");
	if (!out) {
		rc = -errno;
		goto out_close_in;
	}
	while (fgets(line, sizeof(line), in))
		if (!strncmp(line, "rchar:", 6) || !strncmp(line, "read_bytes:", 11))
			fputs(line, out);
	if (fclose(out) != 0)
		rc = -errno;
out_close_in:
	fclose(in);
	return rc;
}

int main(int argc, char **argv)
{
	char path[4096];
	int status = 0, rc;
	pid_t pid;

	if (argc < 3) {
		fprintf(stderr, "usage: iocount OUTDIR CMD [ARG...]\n");
		return 2;
	}
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "iocount: cannot fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		execvp(argv[2], argv + 2);
		fprintf(stderr, "iocount: cannot run '%s': %s\n", argv[2], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			fprintf(stderr, "iocount: waitpid: %s\n", strerror(errno));
			return 1;
		}
	snprintf(path, sizeof(path), "%s/io.%s", argv[1], rank_string());
	rc = write_counters(path);
	if (rc < 0)
		fprintf(stderr, "iocount: cannot write '%s': %s\n", path, strerror(-rc));
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}
