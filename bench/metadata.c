/*
 * metadata.c - metadata operations per second on one directory tree.
 *
 * Reads a list of existing relative paths (one per line) and takes the first N.
 * For each it also makes a missing name in the same directory, shaped like the
 * extension-module names Python probes for and does not find. Every pass then
 * times four operations: stat of existing paths, open+close of existing paths,
 * stat of missing paths, open of missing paths, and isatty() (the TCGETS ioctl
 * Python's io.open() makes on every file it opens) on the open descriptors of
 * existing paths, opened beforehand and not timed. Stat uses the even-numbered
 * names and open the odd-numbered ones, so that in the first pass neither meets
 * a name the other has just looked up. The first pass meets whatever the caches
 * hold when the program starts (the benchmark drops them first); later passes
 * are the repeated, cached case.
 *
 * Output, one line per pass and operation:  pass OP OPS_PER_SECOND
 *
 *   usage: metadata ROOT LIST N PASSES
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { OP_STAT_HIT, OP_OPEN_HIT, OP_STAT_MISS, OP_OPEN_MISS, OP_ISATTY_HIT, OP_COUNT };

static const char *const op_names[OP_COUNT] = {"stat_hit", "open_hit", "stat_miss", "open_miss",
					       "isatty_hit"};

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Read up to max lines of list into paths[] (absolute, under root); returns count or -errno. */
static long read_paths(const char *root, const char *list, char **paths, long max)
{
	char line[PATH_MAX];
	FILE *f;
	long n = 0;

	f = fopen(list, "r");
	if (!f)
		return -errno;
	while (n < max && fgets(line, sizeof(line), f)) {
		size_t len = strcspn(line, "\n");

		line[len] = '\0';
		if (len == 0)
			continue;
		if (asprintf(&paths[n], "%s/%s", root, line) < 0) {
			fclose(f);
			return -ENOMEM;
		}
		n++;
	}
	fclose(f);
	return n;
}

/* A name that does not exist next to path: "<dir>/nx<i>.cpython-311-x86_64-linux-gnu.so". */
static char *missing_name(const char *path, long i)
{
	const char *slash = strrchr(path, '/');
	char *out = NULL;

	if (asprintf(&out, "%.*s/nx%ld.cpython-311-x86_64-linux-gnu.so", (int)(slash - path), path,
		     i) < 0)
		return NULL;
	return out;
}

/*
 * isatty() on the odd-numbered existing names, opened in batches beforehand (not
 * timed); adds the seconds spent in isatty() to *seconds, returns the number of
 * unexpected results (an open that fails, or a file that claims to be a terminal).
 */
static long run_isatty(char **hits, long n, double *seconds)
{
	enum { BATCH = 256 };
	int fds[BATCH];
	long bad = 0;

	for (long i = 1; i < n; i += 2 * BATCH) {
		int count = 0;
		double t0;

		for (long j = i; j < n && count < BATCH; j += 2) {
			fds[count] = open(hits[j], O_RDONLY | O_CLOEXEC);
			bad += fds[count] < 0;
			if (fds[count] >= 0)
				count++;
		}
		t0 = now_seconds();
		for (int k = 0; k < count; k++)
			bad += isatty(fds[k]) != 0;
		*seconds += now_seconds() - t0;
		for (int k = 0; k < count; k++)
			close(fds[k]);
	}
	return bad;
}

/*
 * Run one operation over its half of the names (even indexes for stat, odd for
 * open); returns the number of results that were not as expected.
 */
static long run_op(int op, char **hits, char **misses, long n)
{
	long first = op == OP_STAT_HIT || op == OP_STAT_MISS ? 0 : 1;
	struct stat st;
	long bad = 0;

	for (long i = first; i < n; i += 2) {
		int fd;

		switch (op) {
		case OP_STAT_HIT:
			bad += stat(hits[i], &st) != 0;
			break;
		case OP_OPEN_HIT:
			fd = open(hits[i], O_RDONLY | O_CLOEXEC);
			bad += fd < 0;
			if (fd >= 0)
				close(fd);
			break;
		case OP_STAT_MISS:
			bad += !(stat(misses[i], &st) != 0 && errno == ENOENT);
			break;
		case OP_OPEN_MISS:
			fd = open(misses[i], O_RDONLY | O_CLOEXEC);
			bad += !(fd < 0 && errno == ENOENT);
			if (fd >= 0)
				close(fd);
			break;
		}
	}
	return bad;
}

int main(int argc, char **argv)
{
	char **hits = NULL, **misses = NULL;
	long n, max, passes;
	int rc = 1;

	if (argc != 5) {
		fprintf(stderr, "usage: metadata ROOT LIST N PASSES\n");
		return 2;
	}
	max = strtol(argv[3], NULL, 10);
	passes = strtol(argv[4], NULL, 10);
	if (max <= 0 || passes <= 0) {
		fprintf(stderr, "metadata: N and PASSES must be positive\n");
		return 2;
	}
	hits = calloc((size_t)max, sizeof(*hits));
	misses = calloc((size_t)max, sizeof(*misses));
	if (!hits || !misses)
		goto out_free;
	n = read_paths(argv[1], argv[2], hits, max);
	if (n < 2) {
		fprintf(stderr, "metadata: cannot read paths from '%s': %s\n", argv[2],
			n < 0 ? strerror((int)-n) : "fewer than 2 paths");
		goto out_free;
	}
	for (long i = 0; i < n; i++) {
		misses[i] = missing_name(hits[i], i);
		if (!misses[i])
			goto out_free;
	}
	for (long pass = 1; pass <= passes; pass++) {
		for (int op = 0; op < OP_COUNT; op++) {
			double t0 = now_seconds(), dt = 0;
			long bad;

			if (op == OP_ISATTY_HIT) {
				bad = run_isatty(hits, n, &dt);
			} else {
				bad = run_op(op, hits, misses, n);
				dt = now_seconds() - t0;
			}

			if (bad) {
				fprintf(stderr, "metadata: %s: %ld of %ld results unexpected\n",
					op_names[op], bad, n);
				goto out_free;
			}
			printf("%ld %s %.0f\n", pass, op_names[op], (double)(n / 2) / dt);
		}
	}
	rc = 0;
out_free:
	for (long i = 0; hits && i < max; i++)
		free(hits[i]);
	for (long i = 0; misses && i < max; i++)
		free(misses[i]);
	free(hits);
	free(misses);
	return rc;
}
