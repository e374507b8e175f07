/*
 * loop.h - the serving loop of pyfs-mount: a fixed set of threads whose
 * stacks and request buffers are reserved before the mount is reported
 * ready (loop.c), so that a live mount never ends for want of memory.
 */
#ifndef LOOP_H
#define LOOP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fuse_lowlevel.h>
#include <semaphore.h>

#include "log.h"

/*
 * Threads when -o max_threads is not given: one per CPU this process may run
 * on, at least 2 and at most 10 (libfuse's default). No handler ever blocks
 * (everything is in RAM), so threads beyond the CPUs only add wake-ups of
 * threads with cold caches: on 2 CPUs, 10 threads cost 3.5-6.8 us of daemon
 * CPU per request against 2.6-3.3 us for 2 (docs/PERFORMANCE.md).
 */
#define MOUNT_LOOP_THREADS_MIN 2u
#define MOUNT_LOOP_THREADS_MAX 10u

unsigned int mount_loop_default_threads(void);

/*
 * -o busy_poll default, in microseconds: how long a thread that has just
 * answered a request polls for the next one before it sleeps in read(),
 * while the node has no more runnable tasks than CPUs. An import asks
 * something every 100-300 us; waking a sleeping thread on an idle CPU took
 * 50-70 us of each round trip (a TCGETS ioctl: 11 us back to back, 80 us
 * 200 us apart, 24 us with polling). Measured (cold full-stack import,
 * docs/PERFORMANCE.md "Wake-ups, and busy polling"): 1.41 -> 1.21 s, and 8
 * imports at once within noise (they keep the CPUs busy, so little polls).
 */
#define MOUNT_LOOP_BUSY_POLL_US_DEFAULT 200u
#define MOUNT_LOOP_BUSY_POLL_US_MAX	100000u

struct loop_worker;

struct mount_loop {
	struct fuse_session *se;
	struct loop_worker *workers;
	unsigned int threads;
	void *region; /* stacks and request buffers of all threads, one mapping */
	size_t region_size;
	sem_t finish; /* posted by each thread that stops */
	atomic_int error;
	long busy_poll_ns;   /* 0: never poll */
	atomic_bool polling; /* one thread polls at a time */
	int loadavg_fd;	     /* /proc/loadavg (runnable tasks), open when busy_poll_ns > 0 */
	long cpus;	     /* CPUs this process may run on */
	atomic_uint running; /* threads started by mount_loop_run() so far */
	/* Nonzero: requests still wait on others' answers; serve on after the session ends. */
	const atomic_uint *draining;
};

/* What mount_loop_reserve() takes for threads threads, in bytes. */
uint64_t mount_loop_bytes(unsigned int threads);

/*
 * Reserve and touch the stacks and request buffers of threads serving
 * threads (0: the default). Before MPI is finalized; the daemon inherits
 * them. 0, or a negative errno with err saying how much could not be had.
 */
int mount_loop_reserve(struct mount_loop *loop, unsigned int threads, struct pyfs_err *err);

/*
 * Keep the threads serving after the session has ended (a signal) for as
 * long as *outstanding is nonzero: handlers that wait in the kernel for a
 * request that another thread must answer (stores into the page cache)
 * would otherwise wait for ever, and the unmount with them. After
 * mount_loop_reserve().
 */
void mount_loop_serve_while(struct mount_loop *loop, const atomic_uint *outstanding);

/*
 * Serve se with the reserved threads until the session ends (unmounted, or a
 * signal handler of libfuse exited it), polling busy_poll_us after each
 * request (0: never). Starts as many threads as it can (at least one).
 * Returns 0, or a negative errno when the device failed.
 */
int mount_loop_run(struct mount_loop *loop, struct fuse_session *se, unsigned int busy_poll_us);

void mount_loop_free(struct mount_loop *loop);

#endif /* LOOP_H */
