/*
 * loop.c - the multithreaded FUSE loop, with everything it needs allocated
 * before the mount is reported ready.
 *
 * libfuse's fuse_session_loop_mt() starts threads on demand and gives each
 * one its 1 MiB request buffer at its first request; when that malloc fails
 * (ulimit -v, a cgroup limit) it ends the session, and every reader of the
 * live mount gets ENOTCONN. Here the stacks and request buffers of all
 * threads are one mapping, reserved and touched before MPI is finalized (so
 * a limit too small fails the mount on every rank with one message) and
 * inherited by the daemon; the threads run on these stacks and receive into
 * these buffers through fuse_session_receive_buf()/fuse_session_process_buf(),
 * so serving allocates nothing of its own. What may still fail later
 * degrades instead: fewer threads when one cannot be started, a retry when
 * the kernel cannot deliver a request.
 */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/*
 * libfuse 3.14 reads each request with read(fd, buf, se->bufsize), where
 * bufsize is FUSE_MAX_MAX_PAGES (256) pages plus a 4 KiB header, at most
 * (lib/fuse_lowlevel.c, fuse_session_new and do_init): the buffer must hold
 * that much, whatever the buffer's own size says.
 */
#define LOOP_MAX_PAGES	 256u
#define LOOP_HEADER_SIZE 4096u

/* Serving needs little stack: the largest frame is a 64 KiB directory reply. */
#define LOOP_STACK_SIZE (256u << 10)

/* A request the kernel could not deliver (ENOMEM): wait this long, then try again. */
#define LOOP_RETRY_NS 10000000L

/*
 * Ends a worker's wait in read() once the session is over (EINTR): the
 * threads leave on their own instead of being cancelled in the middle of a
 * system call; sent again every LOOP_WAKE_NS until each one has left.
 */
#define LOOP_WAKE_SIGNAL SIGUSR1
#define LOOP_WAKE_NS	 10000000L

struct loop_worker {
	struct mount_loop *loop;
	pthread_t thread;
	void *stack;
	struct fuse_buf buf;
	bool started;
};

static size_t loop_page_size(void)
{
	long page = sysconf(_SC_PAGESIZE);

	return page > 0 ? (size_t)page : 4096;
}

/* Bytes of one thread's share of the mapping: guard page, stack, request buffer. */
static size_t loop_share_size(void)
{
	size_t page = loop_page_size();

	return page + LOOP_STACK_SIZE + LOOP_MAX_PAGES * page + LOOP_HEADER_SIZE;
}

/* CPUs this process may run on. */
static unsigned int loop_cpus(void)
{
	cpu_set_t cpus;

	return sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? (unsigned int)CPU_COUNT(&cpus) : 1;
}

unsigned int mount_loop_default_threads(void)
{
	unsigned int n = loop_cpus();

	if (n < MOUNT_LOOP_THREADS_MIN)
		n = MOUNT_LOOP_THREADS_MIN;
	return n > MOUNT_LOOP_THREADS_MAX ? MOUNT_LOOP_THREADS_MAX : n;
}

uint64_t mount_loop_bytes(unsigned int threads)
{
	return (uint64_t)threads * loop_share_size() + threads * sizeof(struct loop_worker);
}

int mount_loop_reserve(struct mount_loop *loop, unsigned int threads, struct pyfs_err *err)
{
	size_t page = loop_page_size(), share = loop_share_size();
	uint8_t *region;

	memset(loop, 0, sizeof(*loop));
	if (threads == 0)
		threads = mount_loop_default_threads();
	loop->workers = calloc(threads, sizeof(*loop->workers));
	/* Populated now: the pages are charged to this process (and its cgroup) here. */
	region = mmap(NULL, (size_t)threads * share, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (!loop->workers || region == MAP_FAILED) {
		int rc = region == MAP_FAILED ? -errno : -ENOMEM;

		if (region != MAP_FAILED)
			munmap(region, (size_t)threads * share);
		free(loop->workers);
		loop->workers = NULL;
		pyfs_err_set(err,
			     "cannot reserve %.1f MiB for %u serving threads (stacks and request "
			     "buffers): %s (raise the memory limit, or fewer threads with "
			     "-o max_threads=N)",
			     (double)mount_loop_bytes(threads) / (1024.0 * 1024.0), threads,
			     strerror(-rc));
		return rc;
	}
	loop->region = region;
	loop->region_size = (size_t)threads * share;
	loop->threads = threads;
	for (unsigned int i = 0; i < threads; i++) {
		uint8_t *base = region + (size_t)i * share;

		/* A stack overflow faults on the guard page instead of writing a buffer. */
		(void)mprotect(base, page, PROT_NONE);
		loop->workers[i].loop = loop;
		loop->workers[i].stack = base + page;
		loop->workers[i].buf.mem = base + page + LOOP_STACK_SIZE;
		loop->workers[i].buf.size = LOOP_MAX_PAGES * page + LOOP_HEADER_SIZE;
	}
	return 0;
}

void mount_loop_free(struct mount_loop *loop)
{
	if (loop->region)
		munmap(loop->region, loop->region_size);
	free(loop->workers);
	memset(loop, 0, sizeof(*loop));
}

static long loop_ns_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000000000L + (now.tv_nsec - start->tv_nsec);
}

/*
 * Would a polling thread take a CPU somebody else wants? The node's
 * runnable tasks (the "R" of /proc/loadavg's "R/T", this thread included)
 * against this process's CPUs: with 8 imports on 2 CPUs, polling made them
 * 22 % slower.
 */
static bool loop_cpus_to_spare(const struct mount_loop *loop)
{
	char text[128];
	ssize_t n = pread(loop->loadavg_fd, text, sizeof(text) - 1, 0);
	const char *slash, *digits;

	if (n <= 0)
		return false;
	text[n] = '\0';
	slash = strchr(text, '/');
	if (!slash)
		return false;
	for (digits = slash; digits > text && digits[-1] >= '0' && digits[-1] <= '9'; digits--)
		;
	return digits < slash && strtol(digits, NULL, 10) <= loop->cpus;
}

/*
 * After answering a request: poll the device for the next one for up to
 * busy_poll_ns before sleeping in read() (one thread at a time, and only
 * with CPUs to spare). A request that comes meanwhile is read at once,
 * instead of after a sleeping thread has been woken on an idle CPU.
 */
static void loop_busy_poll(struct mount_loop *loop)
{
	struct pollfd device = {.fd = fuse_session_fd(loop->se), .events = POLLIN};
	struct timespec start;
	bool idle = false;

	if (loop->busy_poll_ns <= 0 || !atomic_compare_exchange_strong(&loop->polling, &idle, true))
		return;
	if (loop_cpus_to_spare(loop)) {
		clock_gettime(CLOCK_MONOTONIC, &start);
		while (poll(&device, 1, 0) == 0 && loop_ns_since(&start) < loop->busy_poll_ns)
			;
	}
	atomic_store(&loop->polling, false);
}

void mount_loop_serve_while(struct mount_loop *loop, const atomic_uint *outstanding)
{
	loop->draining = outstanding;
}

/* Serve the next request? Until the session ends, and then while others wait on one. */
static bool loop_serving(const struct mount_loop *loop)
{
	return !fuse_session_exited(loop->se) ||
	       (loop->draining && atomic_load(loop->draining) > 0);
}

static void *loop_worker_main(void *arg)
{
	struct loop_worker *w = arg;
	struct mount_loop *loop = w->loop;
	struct fuse_session *se = loop->se;
	bool warned = false;

	/* Set up this thread's malloc cache now, not in the middle of a request. */
	free(malloc(1));
	while (loop_serving(loop)) {
		size_t capacity = w->buf.size;
		int res;

		res = fuse_session_receive_buf(se, &w->buf);
		if (res == -EINTR || res == -EAGAIN)
			goto next;
		if (res == -ENOMEM) {
			/* The kernel could not hand the request over: keep serving. */
			struct timespec pause = {0, LOOP_RETRY_NS};

			if (!warned)
				pyfs_warn("receiving a request: %s; retrying", strerror(ENOMEM));
			warned = true;
			nanosleep(&pause, NULL);
			goto next;
		}
		if (res <= 0) {
			/* 0: unmounted; else the device failed, nothing more will come. */
			if (res < 0) {
				atomic_store(&loop->error, res);
				fuse_session_exit(se);
			}
			break;
		}
		fuse_session_process_buf(se, &w->buf);
		loop_busy_poll(loop);
	next:
		/* receive_buf sets the size of what it read; the buffer stays as big. */
		w->buf.size = capacity;
	}
	sem_post(&loop->finish);
	return NULL;
}

static void loop_on_wake(int sig)
{
	(void)sig;
}

/* Wake the thread of w until it has ended, and reap it. */
static void loop_join(struct loop_worker *w)
{
	for (;;) {
		struct timespec until;

		pthread_kill(w->thread, LOOP_WAKE_SIGNAL);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += LOOP_WAKE_NS;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (pthread_timedjoin_np(w->thread, NULL, &until) == 0)
			break;
	}
	w->started = false;
}

int mount_loop_run(struct mount_loop *loop, struct fuse_session *se, unsigned int busy_poll_us)
{
	struct sigaction wake;
	sigset_t block, old;
	unsigned int started = 0;
	int rc = 0;

	loop->se = se;
	atomic_store(&loop->error, 0);
	atomic_store(&loop->polling, false);
	atomic_store(&loop->running, 0);
	loop->cpus = (long)loop_cpus();
	loop->loadavg_fd = busy_poll_us ? open("/proc/loadavg", O_RDONLY | O_CLOEXEC) : -1;
	loop->busy_poll_ns = loop->loadavg_fd >= 0 ? (long)busy_poll_us * 1000L : 0;
	if (sem_init(&loop->finish, 0, 0) < 0) {
		rc = -errno;
		goto out;
	}
	/* One arena for all threads: a new arena per thread is 64 MiB of address space. */
	mallopt(M_ARENA_MAX, 1);
	/* No SA_RESTART: the wake-up signal must end a blocked read() with EINTR. */
	memset(&wake, 0, sizeof(wake));
	wake.sa_handler = loop_on_wake;
	sigemptyset(&wake.sa_mask);
	sigaction(LOOP_WAKE_SIGNAL, &wake, NULL);
	/* Signals go to this thread, whose sem_wait they interrupt; the workers never see them. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (unsigned int i = 0; i < loop->threads; i++) {
		struct loop_worker *w = &loop->workers[i];
		pthread_attr_t attr;

		rc = pthread_attr_init(&attr);
		if (rc == 0) {
			rc = pthread_attr_setstack(&attr, w->stack, LOOP_STACK_SIZE);
			if (rc == 0)
				rc = pthread_create(&w->thread, &attr, loop_worker_main, w);
			pthread_attr_destroy(&attr);
		}
		if (rc != 0)
			break;
		w->started = true;
		started++;
		atomic_fetch_add(&loop->running, 1);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (started == 0) {
		pyfs_error("cannot start a serving thread: %s", strerror(rc));
		sem_destroy(&loop->finish);
		rc = -rc;
		goto out;
	}
	if (started < loop->threads)
		pyfs_warn("serving with %u of %u threads: cannot start more: %s", started,
			  loop->threads, strerror(rc));
	while (!fuse_session_exited(se))
		sem_wait(&loop->finish);
	atomic_store(&loop->running, 0);
	for (unsigned int i = 0; i < loop->threads; i++)
		if (loop->workers[i].started)
			loop_join(&loop->workers[i]);
	sem_destroy(&loop->finish);
	rc = atomic_load(&loop->error);
out:
	if (loop->loadavg_fd >= 0)
		close(loop->loadavg_fd);
	loop->loadavg_fd = -1;
	return rc;
}
