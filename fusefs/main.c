/*
 * main.c - pyfs-mount: the command line, and the steps from MPI_Init to a
 * served mount.
 *
 * Steps, each followed by an agreement of all ranks (pull_agree) so that a
 * failure anywhere makes every rank exit 1 with the same message, printed
 * once by rank 0 and naming the rank where it happened:
 *   1. node leaders check their mountpoint and mount options (before any pull)
 *      and take its node-local lock, held until the mount is up;
 *   2. the leaders pull the metadata (pull.c), check that the image fits in
 *      the job's memory limit and reserve what serving needs (memory.c,
 *      loop.c); 3. they pull the payload (pull.c);
 *   4. each leader validates the image and verifies the payload checksum;
 * then MPI is finalized and each leader mounts and serves (serve.c); the
 * other ranks exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <fuse_opt.h>
#include <hdf5.h>
#include <mpi.h>

#include "mount.h"
#include "ops.h"
#include "pull.h"
#include "watchdog.h"

#define MOUNT_PROGRAM "pyfs-mount"
/* statfs f_type of every FUSE mount (linux/magic.h). */
#define MOUNT_FUSE_SUPER_MAGIC 0x65735546
#define MIB(bytes)	       ((double)(bytes) / (1024.0 * 1024.0))

enum {
	OPT_RANKS_AS_NODES = 256,
	OPT_NO_VERIFY,
	OPT_READY_FILE,
	OPT_TIMEOUT,
	OPT_STATS,
	OPT_EXCHANGE,
	OPT_READERS,
	OPT_CHUNK,
	OPT_INFLATE,
};

/* --timeout default: ample for a pull of many GiB, short of a job's walltime. */
#define MOUNT_DEFAULT_TIMEOUT 600

enum {
	KEY_ALLOW_OTHER,
	KEY_FSNAME,
	KEY_SUBTYPE,
	KEY_DEBUG,
};

/* Our -o options; everything else goes to libfuse. */
#define MOUNT_OPT(t, field, value)                                                                 \
	{                                                                                          \
		t, offsetof(struct mount_config, field), value                                     \
	}
static const struct fuse_opt mount_opts[] = {
    MOUNT_OPT("timeout=%lf", ops.timeout, 0),
    MOUNT_OPT("open_calls", ops.open_calls, 1),
    MOUNT_OPT("no_decode_ahead", ops.decode_ahead, 0),
    /* The default now (no extended attributes at all); accepted for old command lines. */
    FUSE_OPT_KEY("no_xattr", FUSE_OPT_KEY_DISCARD),
    MOUNT_OPT("clone_fd", clone_fd, 1),
    MOUNT_OPT("max_threads=%u", max_threads, 0),
    MOUNT_OPT("busy_poll=%u", busy_poll_us, 0),
    MOUNT_OPT("nonempty", nonempty, 1),
    FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
    FUSE_OPT_KEY("fsname=", KEY_FSNAME),
    FUSE_OPT_KEY("subtype=", KEY_SUBTYPE),
    FUSE_OPT_KEY("debug", KEY_DEBUG),
    FUSE_OPT_END,
};

static void mount_usage(FILE *out)
{
	fprintf(
	    out,
	    "Usage: " MOUNT_PROGRAM " [OPTIONS] ARCHIVE MOUNTPOINT\n"
	    "\n"
	    "Pull the pyfs archive ARCHIVE into the memory of every node of an MPI job,\n"
	    "reading each byte of the shared file once (a few reader nodes read it, the\n"
	    "others get it over MPI; nothing is written beside it), and serve it\n"
	    "read-only at MOUNTPOINT through FUSE. Run one process per node:\n"
	    "  mpirun --map-by ppr:1:node " MOUNT_PROGRAM " env.h5 /pyenv\n"
	    "  srun --ntasks-per-node=1 " MOUNT_PROGRAM " env.h5 /pyenv\n"
	    "or without a launcher for this node alone. Unmount: fusermount3 -u MOUNTPOINT\n"
	    "\n"
	    "Options:\n"
	    "  -f, --foreground       stay attached until unmounted (for 'srun ... &');\n"
	    "                         by default the command returns once the mount is\n"
	    "                         ready and a daemon serves it in the background\n"
	    "      --ranks-as-nodes   every MPI rank acts as its own node (to test several\n"
	    "                         nodes on one machine)\n"
	    "      --no-verify        skip the payload checksum (computed during the pull)\n"
	    "      --inflate          decompress a compressed archive (pyfs-pack -z) into\n"
	    "                         RAM right after the pull, on every core, instead of\n"
	    "                         block by block as files are read: more memory, no\n"
	    "                         decompression while serving\n"
	    "      --ready-file=PATH  once mounted, write the serving PID to PATH (atomically;\n"
	    "                         removed at unmount): a readiness signal with -f\n"
	    "      --timeout=SECONDS  give up when the pull has not finished after SECONDS\n"
	    "                         (a lost node or link, a stalled file system): every\n"
	    "                         rank still waiting exits 1 with one line (default 600,\n"
	    "                         0 waits forever)\n"
	    "      --stats MOUNTPOINT print the counters of the pyfs mount at MOUNTPOINT\n"
	    "      --readers=R        at most R nodes read the archive file, each 1/R of\n"
	    "                         it; the others get it from them (default %d)\n"
	    "  -o OPT[,OPT...]        mount options, see below\n"
	    "  -v, --verbose          rank 0 reports sizes, the time of each stage, bytes read\n"
	    "                         and exchanged per node, and memory; twice for debug\n"
	    "                         messages\n"
	    "  -q, --quiet            print errors only\n"
	    "  -h, --help             print this help and libfuse's options\n"
	    "  -V, --version          print the versions of pyfs-mount and its libraries\n"
	    "\n"
	    "In MOUNTPOINT and PATH, %%r is the MPI rank, %%n the node index, %%%% a '%%'.\n"
	    "\n"
	    "Advanced pull options (for measurements):\n"
	    "      --exchange=METHOD  how nodes pass the payload on: ring (default: a\n"
	    "                         pipelined ring of point-to-point transfers) or\n"
	    "                         allgatherv (rounds of MPI_Allgatherv in place)\n"
	    "      --chunk=KIB        payload chunk size in KiB, a power of two from %d to\n"
	    "                         %d (default: up to %d, from the payload size and\n"
	    "                         the node count)\n"
	    "\n"
	    "pyfs -o options:\n"
	    "  timeout=SECONDS        kernel cache time of entries, attributes and misses\n"
	    "                         (default: the life of the mount; 0 disables)\n"
	    "  open_calls             answer open and opendir requests instead of letting\n"
	    "                         the kernel skip them\n"
	    "  no_decode_ahead        compressed archives: do not decompress blocks ahead\n"
	    "                         of their reads (the blocks after a read that had to\n"
	    "                         decompress, the first blocks of a file looked up),\n"
	    "                         nor store a file's first bytes in the page cache\n"
	    "                         as it is opened\n"
	    "  nonempty               mount over a directory that is not empty (e.g. an\n"
	    "                         environment over its own path): what is below is\n"
	    "                         hidden on this node until the unmount\n"
	    "  max_threads=N          serve with N threads (default: one per CPU, 2 to 10),\n"
	    "                         all started, with their memory, before the mount is\n"
	    "                         ready (about 1.3 MiB each)\n"
	    "  busy_poll=US           after answering a request, a thread polls for the\n"
	    "                         next one for US microseconds before it sleeps,\n"
	    "                         while the node has CPUs to spare (default 200;\n"
	    "                         0: never; not with clone_fd)\n"
	    "  clone_fd               one /dev/fuse descriptor per thread (serves with\n"
	    "                         libfuse's loop, which starts threads and allocates\n"
	    "                         their buffers on demand)\n"
	    "Always on: ro, nosuid, nodev, default_permissions; fsname=pyfs and\n"
	    "subtype=pyfs unless given. allow_other only when asked (as a user it needs\n"
	    "user_allow_other in /etc/fuse.conf). libfuse connection options are accepted\n"
	    "too: max_readahead=N, [no_]splice_write, readdirplus=yes|no|auto, ...\n"
	    "\n"
	    "Counters of a live mount (lookups, misses, opens, reads, bytes served, ...):\n"
	    "  " MOUNT_PROGRAM " --stats MOUNTPOINT   (\"name value\" lines; no MPI needed)\n"
	    "\n"
	    "Commands for job scripts (no MPI, nothing mounted): --expand PATTERN,\n"
	    "--status DIR, --clear-stale DIR, --info ARCHIVE, --mounts, --daemons DIR...\n"
	    "(see " MOUNT_PROGRAM " --expand --help).\n"
	    "\n"
	    "Exit status: 0 mounted (with -f: unmounted cleanly), 1 failure, 2 usage error.\n"
	    "Up to the pull and its checks every rank fails together, with the same error,\n"
	    "and nothing is mounted anywhere; the mount itself (after MPI ends) is per\n"
	    "node: a node where it fails exits 1 while the others serve.\n",
	    PULL_READERS_DEFAULT, PULL_CHUNK_MIN_KIB, PULL_CHUNK_MAX_KIB, PULL_CHUNK_AUTO_MAX_KIB);
}

static void mount_version(void)
{
	char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
	unsigned int h5_major = 0, h5_minor = 0, h5_release = 0;
	int len = 0;

	H5get_libversion(&h5_major, &h5_minor, &h5_release);
	if (MPI_Get_library_version(mpi, &len) != MPI_SUCCESS)
		snprintf(mpi, sizeof(mpi), "unknown");
	mpi[strcspn(mpi, "\n,")] = '\0';
	printf(MOUNT_PROGRAM " " PYFS_VERSION "\n");
	printf("libfuse %d.%d (FUSE_USE_VERSION %d), HDF5 %u.%u.%u, %s\n", fuse_version() / 100,
	       fuse_version() % 100, FUSE_USE_VERSION, h5_major, h5_minor, h5_release, mpi);
}

/*
 * Under a launcher every rank parses the command line: print usage errors on
 * the first rank only (or when no launcher variable says otherwise).
 */
static bool mount_first_rank(void)
{
	const char *rank = mount_launcher_rank();

	return !rank || strcmp(rank, "0") == 0;
}

/*
 * The deadline of the MPI part starts before MPI_Init: a peer lost before or
 * during the start-up (a cut link) stalls that too. Messages carry the rank
 * the launcher gave, as the logger's prefix will once MPI runs.
 */
static void mount_arm_watchdog(const struct mount_config *config)
{
	const char *rank = mount_launcher_rank();
	char prefix[64], host[256] = "?";

	if (rank)
		snprintf(prefix, sizeof(prefix), MOUNT_PROGRAM "[rank %.20s]", rank);
	else
		snprintf(prefix, sizeof(prefix), MOUNT_PROGRAM);
	gethostname(host, sizeof(host) - 1);
	watchdog_arm(config->timeout, prefix, host);
}

__attribute__((format(printf, 1, 2))) static int mount_usage_error(const char *fmt, ...)
{
	va_list ap;

	if (mount_first_rank()) {
		va_start(ap, fmt);
		fprintf(stderr, MOUNT_PROGRAM ": ");
		vfprintf(stderr, fmt, ap);
		fprintf(stderr, "\nTry '" MOUNT_PROGRAM " --help' for more information.\n");
		va_end(ap);
	}
	return MOUNT_EXIT_USAGE;
}

static int mount_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct mount_config *config = data;

	(void)arg;
	(void)outargs;
	if (key == KEY_ALLOW_OTHER)
		config->allow_other = true;
	else if (key == KEY_FSNAME)
		config->has_fsname = true;
	else if (key == KEY_SUBTYPE)
		config->has_subtype = true;
	else if (key == KEY_DEBUG)
		config->debug = true;
	return 1; /* keep it for libfuse */
}

/*
 * Sort the -o options collected in config->args: ours into config, libfuse's
 * connection options into config->conn_opts, the rest stay for the session,
 * followed by the options pyfs always sets. 0 or -EINVAL with err set.
 */
static int mount_parse_fuse_options(struct mount_config *config, struct pyfs_err *err)
{
	struct pyfs_err capture = {{0}};
	int rc = 0;

	mount_fuse_log_capture(&capture);
	if (fuse_opt_parse(&config->args, config, mount_opts, mount_opt_proc) < 0)
		rc = -EINVAL;
	if (rc == 0) {
		config->conn_opts = fuse_parse_conn_info_opts(&config->args);
		if (!config->conn_opts)
			rc = -EINVAL;
	}
	if (rc == 0 && !config->has_fsname)
		rc = fuse_opt_add_arg(&config->args, "-ofsname=pyfs");
	if (rc == 0 && !config->has_subtype)
		rc = fuse_opt_add_arg(&config->args, "-osubtype=pyfs");
	/* Last, so that no "rw" or "suid" given before can undo them. */
	if (rc == 0)
		rc = fuse_opt_add_arg(&config->args, "-oro,nosuid,nodev,default_permissions");
	mount_fuse_log_capture(NULL);
	if (rc < 0) {
		pyfs_err_set(err, "invalid -o option%s%s", capture.msg[0] ? ": " : "", capture.msg);
		return -EINVAL;
	}
	if (config->busy_poll_us > MOUNT_LOOP_BUSY_POLL_US_MAX) {
		pyfs_err_set(err, "invalid -o busy_poll=%u: at most %u microseconds",
			     config->busy_poll_us, MOUNT_LOOP_BUSY_POLL_US_MAX);
		return -EINVAL;
	}
	return 0;
}

/* A whole number from 1 to max, in decimal: 0 or -EINVAL. */
static int mount_parse_count(const char *text, uint64_t max, uint64_t *out)
{
	char *end = NULL;
	unsigned long long value;

	if (text[0] < '0' || text[0] > '9')
		return -EINVAL;
	errno = 0;
	value = strtoull(text, &end, 10);
	if (errno || *end || value < 1 || value > max)
		return -EINVAL;
	*out = value;
	return 0;
}

/*
 * --stats: the counters of the live mount at path, asked with one ioctl on
 * its root (answered by the daemon; nothing else pays for it).
 */
static int mount_print_stats(const char *path)
{
	struct ops_stats_text stats;
	struct statfs sf;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		pyfs_error("cannot open mountpoint '%s': %s", path, strerror(errno));
		return MOUNT_EXIT_FAILURE;
	}
	if (fstatfs(fd, &sf) < 0 || sf.f_type != MOUNT_FUSE_SUPER_MAGIC)
		rc = -ENOTTY;
	else if (ioctl(fd, OPS_IOC_STATS, &stats) < 0)
		rc = -errno;
	close(fd);
	if (rc == -ENOTTY || rc == -EINVAL) {
		pyfs_error("'%s' is not the root of a pyfs mount", path);
		return MOUNT_EXIT_FAILURE;
	}
	if (rc < 0) {
		pyfs_error("cannot read the counters of '%s': %s", path, strerror(-rc));
		return MOUNT_EXIT_FAILURE;
	}
	stats.text[sizeof(stats.text) - 1] = '\0';
	fputs(stats.text, stdout);
	return fflush(stdout) == 0 ? MOUNT_EXIT_OK : MOUNT_EXIT_FAILURE;
}

/*
 * Parse argv into config. Returns -1 to go on, or an exit status (after
 * --help, --version or a usage error).
 */
static int mount_parse(int argc, char **argv, struct mount_config *config)
{
	static const struct option longopts[] = {
	    {"foreground", no_argument, NULL, 'f'},
	    {"ranks-as-nodes", no_argument, NULL, OPT_RANKS_AS_NODES},
	    {"no-verify", no_argument, NULL, OPT_NO_VERIFY},
	    {"inflate", no_argument, NULL, OPT_INFLATE},
	    {"ready-file", required_argument, NULL, OPT_READY_FILE},
	    {"timeout", required_argument, NULL, OPT_TIMEOUT},
	    {"stats", no_argument, NULL, OPT_STATS},
	    {"exchange", required_argument, NULL, OPT_EXCHANGE},
	    {"readers", required_argument, NULL, OPT_READERS},
	    {"chunk", required_argument, NULL, OPT_CHUNK},
	    {"verbose", no_argument, NULL, 'v'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct pyfs_err err = {{0}};
	uint64_t number;
	int verbose = 0, quiet = 0, c;
	bool stats = false;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":fo:vqhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			config->foreground = true;
			break;
		case OPT_RANKS_AS_NODES:
			config->ranks_as_nodes = true;
			break;
		case OPT_NO_VERIFY:
			config->verify = false;
			break;
		case OPT_INFLATE:
			config->inflate = true;
			break;
		case OPT_READY_FILE:
			config->ready_file = optarg;
			break;
		case OPT_TIMEOUT: {
			char *end = NULL;
			unsigned long t = strtoul(optarg, &end, 10);

			if (!*optarg || *end || optarg[0] == '-' || t > 7 * 24 * 3600)
				return mount_usage_error("--timeout takes whole seconds up to a "
							 "week, not '%s'",
							 optarg);
			config->timeout = (unsigned int)t;
			break;
		}
		case OPT_STATS:
			stats = true;
			break;
		case OPT_EXCHANGE:
			if (strcmp(optarg, "ring") == 0)
				config->exchange = PULL_EXCHANGE_RING;
			else if (strcmp(optarg, "allgatherv") == 0)
				config->exchange = PULL_EXCHANGE_ALLGATHERV;
			else
				return mount_usage_error(
				    "invalid --exchange '%s': expected ring or allgatherv", optarg);
			break;
		case OPT_READERS:
			if (mount_parse_count(optarg, INT_MAX, &number) < 0)
				return mount_usage_error("invalid --readers '%s': expected a whole "
							 "number from 1",
							 optarg);
			config->readers = (int)number;
			break;
		case OPT_CHUNK:
			if (mount_parse_count(optarg, PULL_CHUNK_MAX_KIB, &number) < 0 ||
			    number < PULL_CHUNK_MIN_KIB || (number & (number - 1)))
				return mount_usage_error(
				    "invalid --chunk '%s': expected KiB, a power "
				    "of two from %d to %d",
				    optarg, PULL_CHUNK_MIN_KIB, PULL_CHUNK_MAX_KIB);
			config->chunk_bytes = number * 1024;
			break;
		case 'o':
			if (fuse_opt_add_arg(&config->args, "-o") < 0 ||
			    fuse_opt_add_arg(&config->args, optarg) < 0)
				return mount_usage_error("%s", strerror(ENOMEM));
			break;
		case 'v':
			verbose++;
			break;
		case 'q':
			quiet = 1;
			break;
		case 'h':
			mount_usage(stdout);
			printf("\nlibfuse options:\n");
			fflush(stdout);
			fuse_lowlevel_help();
			return MOUNT_EXIT_OK;
		case 'V':
			mount_version();
			return MOUNT_EXIT_OK;
		case ':':
			return mount_usage_error("option '%s' needs an argument", argv[optind - 1]);
		default:
			return mount_usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (stats) {
		if (argc - optind != 1)
			return mount_usage_error("--stats takes one MOUNTPOINT");
		return mount_print_stats(argv[optind]);
	}
	if (argc - optind != 2)
		return mount_usage_error("%s", argc - optind < 2 ? "expected ARCHIVE and MOUNTPOINT"
								 : "too many arguments");
	config->archive = argv[optind];
	config->mountpoint = argv[optind + 1];
	if (mount_parse_fuse_options(config, &err) < 0)
		return mount_usage_error("%s", err.msg);
	if (config->debug)
		config->foreground = true;
	config->verbose = verbose > 0 && !quiet;
	/* -o debug: libfuse's debug messages come through our logger at debug level. */
	pyfs_log_set_verbosity(PYFS_LOG_WARN, config->debug ? 2 : verbose, quiet);
	return -1;
}

/* ---- the steps ---- */

/* What one leader holds between the steps. */
struct mount_state {
	struct pull_world world;
	char mountpoint[PATH_MAX];
	char ready_file[PATH_MAX];
	struct fuse_session *se;
	struct ops_fs fs;
	struct pyfs_image_parts parts;
	struct pyfs_image *image;
	struct pull_stats stats;
	int origin; /* world rank where a pull step failed; -1: this one, or none */
	double verify_seconds;
	struct mount_lock lock; /* of the mountpoint, from step 1c until the mount is up */
	struct mount_loop loop; /* the serving threads' stacks and buffers, from step 2b */
	double inflate_seconds;
};

/*
 * The agreement after a step, on all ranks: true when the step failed
 * somewhere. Rank 0 prints the error once, under the prefix of the rank
 * where it happened (state->origin, when the step's own agreement among the
 * leaders found it; then reset).
 */
static bool mount_failed(struct mount_state *state, int rc, struct pyfs_err *err)
{
	int origin = rc < 0 && state->origin >= 0 ? state->origin : state->world.rank;
	int failed = origin;
	char prefix[64];

	state->origin = -1;
	rc = pull_agree(MPI_COMM_WORLD, origin, rc, err, &failed);
	if (rc == 0)
		return false;
	/* Reported here: the SIGTERM mpirun may send while we exit adds nothing. */
	mount_interrupt_speaker(false);
	if (state->world.rank == 0) {
		if (state->world.size > 1) {
			snprintf(prefix, sizeof(prefix), MOUNT_PROGRAM "[rank %d]", failed);
			pyfs_log_set_prefix(prefix);
		}
		pyfs_error("%s", err->msg);
	}
	return true;
}

/*
 * Check that the directory of the ready file path can take it, and make
 * path absolute in place (the daemon works from '/').
 */
static int mount_check_ready_file(char path[PATH_MAX], struct pyfs_err *err)
{
	char dir[PATH_MAX], base[PATH_MAX], real[PATH_MAX];
	int rc = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	snprintf(base, sizeof(base), "%s", path);
	if (!realpath(dirname(dir), real) || access(real, W_OK) < 0)
		rc = -errno;
	else if (snprintf(dir, sizeof(dir), "%s/%s", strcmp(real, "/") ? real : "",
			  basename(base)) >= (int)sizeof(dir))
		rc = -ENAMETOOLONG;
	if (rc < 0) {
		pyfs_err_set(err, "cannot write ready file '%s': %s", path, strerror(-rc));
		return rc;
	}
	memcpy(path, dir, sizeof(dir));
	return 0;
}

/*
 * Step 1, leaders: the mountpoint, the ready file and the mount options,
 * checked before anything is pulled. Creates the FUSE session (not mounted).
 */
static int mount_prepare(struct mount_config *config, struct mount_state *state,
			 struct pyfs_err *err)
{
	struct pyfs_err capture = {{0}};
	char given[PATH_MAX];
	int rc;

	rc = mount_expand_path(config->mountpoint, state->world.rank, state->world.node_index,
			       given, sizeof(given), err);
	if (rc == 0 && config->ready_file)
		rc = mount_expand_path(config->ready_file, state->world.rank,
				       state->world.node_index, state->ready_file,
				       sizeof(state->ready_file), err);
	if (rc == 0)
		rc = mount_check_mountpoint(given, state->mountpoint, config->nonempty, err);
	if (rc == 0 && config->ready_file)
		rc = mount_check_ready_file(state->ready_file, err);
	if (rc == 0 && config->allow_other)
		rc = mount_check_allow_other(err);
	if (rc < 0)
		return rc;
	state->fs.uid = getuid();
	state->fs.gid = getgid();
	state->fs.options = config->ops;
	state->fs.conn_opts = config->conn_opts;
	mount_fuse_log_capture(&capture);
	state->se =
	    fuse_session_new(&config->args, &ops_lowlevel, sizeof(ops_lowlevel), &state->fs);
	mount_fuse_log_capture(NULL);
	if (!state->se) {
		pyfs_err_set(err, "invalid mount options%s%s", capture.msg[0] ? ": " : "",
			     capture.msg);
		return -EINVAL;
	}
	return 0;
}

/* FNV-1a of this machine's name: which leaders share a machine. */
static uint64_t mount_host_hash(void)
{
	char host[256] = "";
	uint64_t hash = UINT64_C(14695981039346656037);

	gethostname(host, sizeof(host) - 1);
	for (const char *p = host; *p; p++)
		hash = (hash ^ (uint8_t)*p) * UINT64_C(1099511628211);
	return hash;
}

/*
 * Step 1b, leaders (collectively): no two leaders on one machine may mount
 * the same directory (e.g. --ranks-as-nodes without %r in MOUNTPOINT).
 */
static int mount_check_unique(struct mount_state *state, struct pyfs_err *err)
{
	uint64_t mine[4] = {mount_host_hash(), 0, 0, (uint64_t)state->world.rank};
	uint64_t(*all)[4] = calloc((size_t)state->world.node_count, sizeof(*all));
	int rc = 0, failed;

	if (!all) {
		pyfs_err_set(err, "cannot check mountpoints: %s", strerror(ENOMEM));
		rc = -ENOMEM;
	}
	rc = pull_agree(state->world.leaders, state->world.rank, rc, err, &failed);
	if (rc < 0)
		goto out_free;
	(void)mount_path_identity(state->mountpoint, &mine[1]);
	if (MPI_Allgather(mine, 4, MPI_UINT64_T, all, 4, MPI_UINT64_T, state->world.leaders) !=
	    MPI_SUCCESS) {
		pyfs_err_set(err, "cannot compare mountpoints across nodes: MPI_Allgather failed");
		rc = -EIO;
	}
	for (int i = 0; rc == 0 && i < state->world.node_index; i++) {
		if (memcmp(all[i], mine, 3 * sizeof(uint64_t)) == 0) {
			pyfs_err_set(err,
				     "mountpoint '%s' is also the mountpoint of rank %" PRIu64
				     " on this machine: give each node its own (e.g. with %%r)",
				     state->mountpoint, all[i][3]);
			rc = -EBUSY;
		}
	}
out_free:
	free(all);
	return rc;
}

/*
 * Step 1c, leaders: the node-local lock of the mountpoint, so that another
 * pyfs-mount on this directory (another job, another user) started at the
 * same time fails here instead of stacking a second mount after its pull.
 */
static int mount_lock_mountpoint(struct mount_state *state, struct pyfs_err *err)
{
	return mount_lock_take(state->mountpoint, &state->lock, err);
}

/* The serving threads: -o max_threads=N, or the default. */
static unsigned int mount_threads(const struct mount_config *config)
{
	return config->max_threads ? config->max_threads : mount_loop_default_threads();
}

/*
 * Step 2b, leaders: before the payload is read, check that the image and
 * the serving threads fit in the job's memory limit, and reserve (touch)
 * the threads' stacks and request buffers: a limit too small fails here,
 * on every rank, instead of killing a rank in the pull or the daemon later.
 */
static int mount_reserve_memory(const struct mount_config *config, struct mount_state *state,
				struct pyfs_err *err)
{
	const struct pyfs_image_parts *p = &state->parts;
	uint64_t image = p->payload_size + p->inode_count * sizeof(struct pyfs_inode) +
			 p->dirent_count * sizeof(struct pyfs_dirent) + p->names_size;
	uint64_t serving = config->clone_fd ? 0 : mount_loop_bytes(mount_threads(config));
	int rc = mount_check_memory(config->archive, image, serving, err);

	if (rc == 0 && !config->clone_fd)
		rc = mount_loop_reserve(&state->loop, mount_threads(config), err);
	return rc;
}

/* Step 4, leaders: validate the pulled parts into an image, verify the payload. */
static int mount_make_image(const struct mount_config *config, struct mount_state *state,
			    struct pyfs_err *err)
{
	double start = pyfs_now();
	int rc = pyfs_image_create(&state->parts, &state->image, err);

	/* The pull checksummed the payload while it arrived; else do it now. */
	if (rc == 0 && config->verify && state->stats.payload_hashed)
		rc = pyfs_image_verify_payload_digest(state->image, state->stats.payload_digest,
						      err);
	else if (rc == 0 && config->verify)
		rc = pyfs_image_verify_payload(state->image, err);
	if (rc == 0 && !config->verify)
		pyfs_debug("payload checksum not verified (--no-verify)");
	state->verify_seconds = pyfs_now() - start;
	/* Compressed archives: inflated now (--inflate), or caches for decompressing reads. */
	start = pyfs_now();
	if (rc == 0 && config->inflate)
		rc = pyfs_image_inflate(state->image, 0, err);
	state->inflate_seconds = pyfs_now() - start;
	state->fs.image = state->image;
	if (rc == 0 &&
	    ops_prepare_reads(&state->fs, config->max_threads ? config->max_threads : 10) < 0) {
		pyfs_err_set(err, "cannot allocate the decompression caches: %s", strerror(ENOMEM));
		rc = -ENOMEM;
	}
	/* Not under libfuse's loop (clone_fd): it starts threads as it goes. */
	if (rc == 0 && !config->clone_fd) {
		if (ops_prepare_stores(&state->fs, state->se, &state->loop.running) < 0) {
			pyfs_err_set(err, "cannot allocate the page-cache store map: %s",
				     strerror(ENOMEM));
			rc = -ENOMEM;
		}
		mount_loop_serve_while(&state->loop, &state->fs.stores_under_way);
	}
	if (rc < 0) {
		char msg[sizeof(err->msg)];

		memcpy(msg, err->msg, sizeof(msg));
		pyfs_err_set(err, "%.400s (archive '%s')", msg, config->archive);
	}
	return rc;
}

/* Resident memory of this process (VmRSS), in bytes. */
static uint64_t mount_rss_bytes(void)
{
	return pull_proc_value("/proc/self/status", "VmRSS:") * 1024;
}

/* --verbose, rank 0: one line per node (what it read, moved, and when it was done). */
static void mount_report_node(int index, const struct pull_stats *n)
{
	char role[48] = "not a reader";

	if (n->reader >= 0)
		snprintf(role, sizeof(role), "reader %d of %d", (int)n->reader, (int)n->readers);
	pyfs_info("node %d (rank %d): read %" PRIu64 " bytes of the archive file for a %" PRIu64
		  "-byte share of the payload (%s); %s %" PRIu64 ", received %" PRIu64
		  " bytes; read %.3f s, all here %.3f s, checksum %.3f s, done %.3f s",
		  index, (int)n->rank, n->file_bytes_read, n->share_bytes, role,
		  n->exchange == PULL_EXCHANGE_ALLGATHERV ? "contributed" : "sent", n->bytes_sent,
		  n->bytes_received, n->read_seconds, n->exchange_seconds, n->hash_seconds,
		  n->payload_seconds);
}

/*
 * --verbose, leaders (collectively): rank 0 reports the pull of every node.
 * The payload stages overlap: read and exchange are both counted from the
 * start of the payload pull, and the checksum runs while chunks arrive; what
 * is left after the last byte is in (and validation) is "validate+verify".
 */
static void mount_report(const struct mount_config *config, struct mount_state *state)
{
	const struct pull_stats *s = &state->stats;
	struct pull_stats *all;
	struct pyfs_err err = {{0}};
	uint64_t total = 0, moved = 0;
	double pull, read = 0.0, arrived = 0.0, payload = 0.0, hash = 0.0, after = 0.0;
	int failed;

	if (!config->verbose)
		return;
	all = calloc((size_t)state->world.node_count, sizeof(*all));
	if (pull_agree(state->world.leaders, state->world.rank, all ? 0 : -ENOMEM, &err, &failed) <
		0 ||
	    pull_gather_stats(&state->world, s, all, &err) < 0) {
		pyfs_warn("no report: %s", err.msg);
		goto out_free;
	}
	if (state->world.rank != 0)
		goto out_free;
	/* The slowest node of each stage: that is what the job waits for. */
	for (int i = 0; i < state->world.node_count; i++) {
		const struct pull_stats *n = &all[i];

		read = n->read_seconds > read ? n->read_seconds : read;
		arrived = n->exchange_seconds > arrived ? n->exchange_seconds : arrived;
		payload = n->payload_seconds > payload ? n->payload_seconds : payload;
		hash = n->hash_seconds > hash ? n->hash_seconds : hash;
		if (n->payload_seconds - n->exchange_seconds > after)
			after = n->payload_seconds - n->exchange_seconds;
		moved += n->bytes_received;
	}
	pull = s->metadata_seconds + payload + state->verify_seconds;
	pyfs_info("archive '%s': %.1f MiB file, %.1f MiB payload, %" PRIu32 " inodes; "
		  "%d node(s) of %d rank(s)",
		  config->archive, MIB(s->archive_size), MIB(s->payload_size),
		  pyfs_image_inode_count(state->image), state->world.node_count, state->world.size);
	pyfs_info("pull %.3f s (%.0f MiB/s): metadata %.3f s, read %.3f s by %d reader(s) in "
		  "%" PRIu64 " chunk(s) of %.0f KiB (blocks of %.0f KiB)%s, %s exchange %.3f s; "
		  "validate+verify %.3f s",
		  pull, pull > 0 ? MIB(s->payload_size) / pull : 0.0, s->metadata_seconds, read,
		  (int)s->readers, s->chunk_count, (double)s->chunk_bytes / 1024.0,
		  (double)s->read_block_bytes / 1024.0,
		  s->threads ? "" : " (no threads: stages in sequence)",
		  pull_exchange_name((enum pull_exchange)s->exchange), arrived,
		  after + state->verify_seconds);
	pyfs_info("overlap: payload done in %.3f s; the last byte was here %.3f s after the "
		  "last read ended; checksum %.3f s, %.3f s of it after the last byte (%.0f%% "
		  "hidden)%s",
		  payload, arrived - read, hash, after,
		  hash > 0 ? 100.0 * (1.0 - after / hash) : 0.0,
		  config->verify ? "" : " (--no-verify)");
	for (int i = 0; i < state->world.node_count; i++) {
		mount_report_node(i, &all[i]);
		total += all[i].file_bytes_read;
	}
	pyfs_info("all nodes read %" PRIu64 " bytes of the archive file for a %" PRIu64
		  "-byte payload: %.3fx the payload",
		  total, s->payload_size,
		  s->payload_size ? (double)total / (double)s->payload_size : 0.0);
	pyfs_info("exchange: %" PRIu64 " bytes received over all nodes, %.3fx the payload per "
		  "node (each node receives what it did not read itself)",
		  moved,
		  s->payload_size
		      ? (double)moved / (double)s->payload_size / (double)state->world.node_count
		      : 0.0);
	if (config->inflate)
		pyfs_info("inflated the payload in %.3f s", state->inflate_seconds);
	pyfs_info("RSS %.1f MiB for a %.1f MiB payload", MIB(mount_rss_bytes()),
		  MIB(s->payload_size));
out_free:
	free(all);
}

/* Free what a leader still holds (the image, or the parts before it). */
static void mount_state_free(struct mount_state *state)
{
	mount_lock_release(&state->lock);
	mount_loop_free(&state->loop);
	if (state->se)
		fuse_session_destroy(state->se);
	ops_release_reads(&state->fs);
	if (state->image)
		pyfs_image_destroy(state->image);
	else
		pyfs_image_parts_free(&state->parts);
}

/*
 * Let the serving process run on any CPU this process may use: mpirun binds a
 * rank to one core when it starts two or fewer, and the daemon serves every
 * process of its node. The kernel keeps it inside the job's cpuset.
 */
static void mount_unbind_cpus(void)
{
	cpu_set_t cpus;

	memset(&cpus, 0xff, sizeof(cpus));
	if (sched_setaffinity(0, sizeof(cpus), &cpus) < 0)
		pyfs_debug("cannot widen the CPU affinity: %s", strerror(errno));
}

/*
 * Open MPI settings of pyfs-mount, set before MPI_Init unless the user set
 * them (OMPI_MCA_... in the environment; other MPIs ignore these names):
 *  - Started without mpirun or srun, Open MPI forks a helper daemon for this
 *    one process, and that daemon's session directory under /tmp races with
 *    other such daemons of the same user: mounts started at once could fail
 *    in MPI_Init ("A call to mkdir was unable to create the desired
 *    directory"). One process needs no helper (this only affects a process
 *    without a launcher).
 *  - mpi_yield_when_idle: a rank waiting in a blocking call (the agreements,
 *    the metadata broadcast) yields its core instead of spinning. Where ranks
 *    share cores (ranks as nodes, the test bed's 8 hosts on 2 cores) a
 *    spinning rank delays the one it waits for: a one-int MPI_Allreduce of 8
 *    bed hosts took 20-75 ms spinning, 0.1-1.7 ms yielding, and launch to
 *    mounted at 8 hosts went from 7.4-7.6 s to 6.8-7.0 s (-z: 3.7 to 2.9-3.1
 *    s). With one rank per node it costs a sched_yield per idle poll, in a
 *    process that computes nothing. (The ring exchange polls by itself.)
 *  - Open MPI's ring algorithm for MPI_Allgatherv (--exchange=allgatherv),
 *    which sends each byte over each link once: on the test bed (8 hosts,
 *    200 Mbit/s links) the 119 MiB pull took 10.4-11.1 s with Open MPI's
 *    default algorithm, 8.6 s with its ring.
 */
static void mount_mpi_defaults(void)
{
	setenv("OMPI_MCA_ess_singleton_isolated", "1", 0);
	setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
	if (!getenv("OMPI_MCA_coll_tuned_allgatherv_algorithm")) {
		setenv("OMPI_MCA_coll_tuned_use_dynamic_rules", "1", 0);
		setenv("OMPI_MCA_coll_tuned_allgatherv_algorithm", "3", 1);
	}
}

/* The whole run, from MPI_Init to the end of serving. Returns an exit status. */
static int mount_run(struct mount_config *config)
{
	struct mount_state state;
	struct pyfs_err err = {{0}};
	char prefix[64];
	struct pull_options pull = {(enum pull_exchange)config->exchange, config->readers,
				    config->chunk_bytes, config->verify, false};
	int rc = 0, status = MOUNT_EXIT_FAILURE, threads = MPI_THREAD_SINGLE;
	bool leader = false;

	memset(&state, 0, sizeof(state));
	state.origin = -1;
	mount_arm_watchdog(config);
	state.lock.fd = -1;
	mount_mpi_defaults();
	/* Threads read and checksum during the pull; only this one calls MPI. */
	if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &threads) != MPI_SUCCESS) {
		pyfs_error("cannot initialize MPI");
		return MOUNT_EXIT_FAILURE;
	}
	pull.threads = threads >= MPI_THREAD_FUNNELED;
	mount_interrupt_speaker(mount_first_rank());
	mount_interrupt_init(&state.lock);
	H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
	rc = pull_world_init(&state.world, config->ranks_as_nodes, &err);
	if (mount_failed(&state, rc, &err))
		goto out_finalize;
	mount_interrupt_speaker(state.world.rank == 0);
	leader = state.world.leader;
	if (state.world.size > 1) {
		snprintf(prefix, sizeof(prefix), MOUNT_PROGRAM "[rank %d]", state.world.rank);
		pyfs_log_set_prefix(prefix);
		/* Reports come from rank 0; the others speak up for warnings and debug. */
		if (state.world.rank != 0 && pyfs_log_threshold == PYFS_LOG_INFO)
			pyfs_log_threshold = PYFS_LOG_WARN;
	}
	state.stats.rank = state.world.rank;

	if (leader)
		rc = mount_prepare(config, &state, &err);
	if (mount_failed(&state, rc, &err))
		goto out_finalize;
	if (leader)
		rc = mount_check_unique(&state, &err);
	if (mount_failed(&state, rc, &err))
		goto out_finalize;
	if (leader)
		rc = mount_lock_mountpoint(&state, &err);
	if (mount_failed(&state, rc, &err))
		goto out_finalize;

	if (leader)
		rc = pull_metadata(&state.world, config->archive, &state.parts, &state.stats,
				   &state.origin, &err);
	if (mount_failed(&state, rc, &err))
		goto out_finalize;
	if (leader)
		rc = mount_reserve_memory(config, &state, &err);
	if (mount_failed(&state, rc, &err))
		goto out_finalize;
	if (leader)
		rc = pull_payload(&state.world, config->archive, &pull, &state.parts, &state.stats,
				  &state.origin, &err);
	if (mount_failed(&state, rc, &err))
		goto out_finalize;
	if (leader)
		rc = mount_make_image(config, &state, &err);
	if (mount_failed(&state, rc, &err))
		goto out_finalize;
	if (leader)
		mount_report(config, &state);
	status = MOUNT_EXIT_OK;

out_finalize:
	pull_world_free(&state.world);
	/* No fork and no fusermount3 before this point. */
	MPI_Finalize();
	watchdog_disarm();
	if (status == MOUNT_EXIT_OK && leader) {
		pyfs_image_keep_on_fork(state.image);
		mount_unbind_cpus();
		status =
		    mount_serve(config, state.se, state.mountpoint,
				config->ready_file ? state.ready_file : NULL,
				config->verbose && state.world.rank == 0, &state.lock, &state.loop);
	}
	mount_state_free(&state);
	return status;
}

int main(int argc, char **argv)
{
	struct mount_config config;
	int status;

	status = mount_node_command(argc, argv);
	if (status >= 0)
		return status;
	memset(&config, 0, sizeof(config));
	config.verify = true;
	config.timeout = MOUNT_DEFAULT_TIMEOUT;
	config.exchange = PULL_EXCHANGE_RING;
	config.readers = PULL_READERS_DEFAULT;
	config.busy_poll_us = MOUNT_LOOP_BUSY_POLL_US_DEFAULT;
	ops_options_default(&config.ops);
	pyfs_log_set_prefix(MOUNT_PROGRAM);
	mount_fuse_log_init();
	if (fuse_opt_add_arg(&config.args, argv[0]) < 0) {
		pyfs_error("%s", strerror(ENOMEM));
		return MOUNT_EXIT_FAILURE;
	}
	status = mount_parse(argc, argv, &config);
	if (status < 0)
		status = mount_run(&config);
	fuse_opt_free_args(&config.args);
	free(config.conn_opts);
	return status;
}
