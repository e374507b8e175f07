/*
 * read_throttle.c - an LD_PRELOAD library that makes large file reads slow, to
 * measure how a pull overlaps reading with the exchange when the file system, not
 * the memory bus, is the slower side (as on a cluster).
 *
 * Every pread()/pread64() of 64 KiB or more sleeps, after it returns n bytes, for
 * n / (BENCH_READ_MBPS x 10^6) seconds: each reading thread sees at most that rate.
 * Without BENCH_READ_MBPS it changes nothing.
 *
 *   mpirun -np 2 env LD_PRELOAD=$PWD/build/bench/libread_throttle.so BENCH_READ_MBPS=200 \
 *       pyfs-mount -v --ranks-as-nodes env.h5 mnt%r
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>

ssize_t pread64(int fd, void *buf, size_t count, off_t offset);
ssize_t pread(int fd, void *buf, size_t count, off_t offset);

ssize_t pread64(int fd, void *buf, size_t count, off_t offset)
{
	static ssize_t (*real)(int, void *, size_t, off_t);
	const char *mbps = getenv("BENCH_READ_MBPS");
	ssize_t n;

	if (!real)
		real = (ssize_t(*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
	n = real(fd, buf, count, offset);
	if (mbps && atof(mbps) > 0 && n >= 65536) {
		double s = (double)n / (atof(mbps) * 1e6);
		struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};

		nanosleep(&ts, NULL);
	}
	return n;
}

/* Open MPI's MPI-IO calls pread(), pyfs pread64(): the same function in glibc. */
ssize_t pread(int fd, void *buf, size_t count, off_t offset)
{
	return pread64(fd, buf, count, offset);
}
