/*
 * main.c - the command line of pyfs-pack: parse options, pick the command
 * (pack, --list, --verify, --extract), exit with its status.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "pack.h"
#include "pyfs_format.h"

#ifndef PYFS_VERSION
#define PYFS_VERSION "unknown"
#endif

enum command { CMD_PACK, CMD_LIST, CMD_VERIFY, CMD_EXTRACT };

enum long_only {
	OPT_NO_COMPILE = 256,
	OPT_LIST,
	OPT_VERIFY,
	OPT_EXTRACT,
	OPT_STRICT,
	OPT_MOUNT_PATH,
	OPT_BLOCK_SIZE
};

static const struct option long_options[] = {
    {"python", required_argument, NULL, 'p'},
    {"exclude", required_argument, NULL, 'x'},
    {"no-compile", no_argument, NULL, OPT_NO_COMPILE},
    {"force", no_argument, NULL, 'f'},
    {"dereference", no_argument, NULL, 'L'},
    {"strict", no_argument, NULL, OPT_STRICT},
    {"mount-path", required_argument, NULL, OPT_MOUNT_PATH},
    {"compress", optional_argument, NULL, 'z'},
    {"block-size", required_argument, NULL, OPT_BLOCK_SIZE},
    {"list", no_argument, NULL, OPT_LIST},
    {"verify", no_argument, NULL, OPT_VERIFY},
    {"extract", no_argument, NULL, OPT_EXTRACT},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static void print_help(void)
{
	fputs(
	    "Usage: pyfs-pack [OPTIONS] ARCHIVE [SOURCE...]   pack SOURCEs into ARCHIVE\n"
	    "       pyfs-pack --list ARCHIVE                  print the tree (like tar tv)\n"
	    "       pyfs-pack --verify ARCHIVE                check structure and every checksum\n"
	    "       pyfs-pack --extract ARCHIVE DIR           write the tree into DIR\n"
	    "\n"
	    "Packs a Python environment into one pyfs archive (an HDF5 file) for pyfs-mount.\n"
	    "Several SOURCE directories merge at the archive root; on a clash the first\n"
	    "source wins and the clash is reported. Without SOURCE, the site-packages\n"
	    "directories of the interpreter are packed. Every .py without valid byte-code\n"
	    "for the interpreter gets a compiled __pycache__/*.pyc in the archive (the\n"
	    "sources are never written to), so imports from the archive compile nothing.\n"
	    "\n"
	    "A SOURCE that is a whole environment (a prefix with bin/python3.X and\n"
	    "lib/python3.X/os.py: conda, spack, an installation; or a venv's pyvenv.cfg)\n"
	    "is packed whole and its own bin/python3.X compiles the byte-code; a --python\n"
	    "of another version or cache tag is refused. The archive records the absolute\n"
	    "path of such a SOURCE (pyfs-prologue --at-source mounts it there).\n"
	    "\n"
	    "References that leave the archive are reported: symlinks pointing outside,\n"
	    "absolute shebangs, ELF RPATH/RUNPATH entries and absolute DT_NEEDED, .pth\n"
	    "lines, unless they point into the mount path (the SOURCE's own path, or\n"
	    "--mount-path). The directories that .pth files at the root add are recorded\n"
	    "for pyfs-prologue to append to PYTHONPATH.\n"
	    "\n"
	    "Options:\n"
	    "  -p, --python PATH   interpreter whose site-packages are packed when no SOURCE\n"
	    "                      is given, and which compiles missing byte-code\n"
	    "                      (default: python3 from PATH)\n"
	    "  -x, --exclude GLOB  leave out matching paths (repeatable); a GLOB with a '/'\n"
	    "                      matches the path from the archive root, one without\n"
	    "                      matches the last name; '*' also matches '/'\n"
	    "      --no-compile    do not add missing .pyc files\n"
	    "  -L, --dereference   pack what symlinks leaving the sources point to (a spack\n"
	    "                      view becomes self-contained), like cp -L / tar -h\n"
	    "      --mount-path DIR  where the archive will be mounted: references into DIR\n"
	    "                      are not escapes (default: the single SOURCE's own path)\n"
	    "      --strict        fail when a reference leaves the archive\n"
	    "  -f, --force         overwrite an existing ARCHIVE\n"
	    "  -z, --compress[=LEVEL]  compress the contents with zstd at LEVEL (1-19,\n"
	    "                      default 9; -z5 or --compress=5), in independent blocks\n"
	    "                      that pyfs-mount decompresses on demand\n"
	    "      --block-size=SIZE   raw bytes per compressed block: a power of two from\n"
	    "                      4K to 1M (K and M suffixes; default 64K)\n"
	    "      --list          print every entry: mode, links, size, mtime, path\n"
	    "                      (unprintable name bytes as \\ooo), '-> target' for symlinks;\n"
	    "                      reads only the metadata\n"
	    "      --verify        check ARCHIVE's structure and every checksum, reading\n"
	    "                      its contents in pieces (a few MiB beyond the metadata)\n"
	    "      --extract       write ARCHIVE's tree into DIR, which must be empty or\n"
	    "                      missing; nothing is written unless ARCHIVE verifies\n"
	    "  -q, --quiet         print only warnings and errors\n"
	    "  -v, --verbose       also print sources, timings and details\n"
	    "  -h, --help          print this help\n"
	    "  -V, --version       print the version\n"
	    "\n"
	    "Packing writes ARCHIVE under a temporary name in its directory and renames it\n"
	    "at the end: an error or a signal leaves no partial archive. On a terminal a\n"
	    "progress line is shown; a one-line summary ends every pack (not with --quiet).\n"
	    "\n"
	    "Exit status:\n"
	    "  0  success\n"
	    "  1  failure: bad or corrupt input, or the operation failed (the message says\n"
	    "     what)\n"
	    "  2  usage error\n",
	    stdout);
}

/* SIZE of --block-size: digits with an optional K or M suffix. 0 when malformed. */
static uint32_t parse_size(const char *text)
{
	char *end = NULL;
	unsigned long long v = strtoull(text, &end, 10);

	if (end == text || v == 0 || v > (1u << 20))
		return 0;
	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	return *end || v > UINT32_MAX ? 0 : (uint32_t)v;
}

static void usage_error(const char *msg)
{
	fprintf(stderr, "pyfs-pack: %s\nTry 'pyfs-pack --help' for more information.\n", msg);
}

/* Allow as many descriptors as permitted: the walk holds one per directory level. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	struct pack_options opts = {0};
	enum command command = CMD_PACK;
	int c, status, commands = 0, pack_only = 0;
	char **excludes;

	pyfs_log_set_prefix("pyfs-pack");
	argv[0] = (char *)"pyfs-pack"; /* getopt's messages name the tool, not its path */
	excludes = calloc((size_t)argc, sizeof(*excludes));
	if (!excludes) {
		pyfs_error("out of memory");
		return PACK_EXIT_FAILURE;
	}
	opts.excludes = excludes;

	while ((c = getopt_long(argc, argv, "p:x:fLz::qvhV", long_options, NULL)) != -1) {
		switch (c) {
		case 'z': {
			char *end = NULL;
			long level =
			    optarg ? strtol(optarg, &end, 10) : PACK_COMPRESS_LEVEL_DEFAULT;

			if (optarg && (end == optarg || *end || level < 1 ||
				       level > PACK_COMPRESS_LEVEL_MAX)) {
				usage_error("-z LEVEL must be 1..19 (e.g. -z9 or --compress=9)");
				free(excludes);
				return PACK_EXIT_USAGE;
			}
			opts.compress_level = (int)level;
			pack_only++;
			break;
		}
		case OPT_BLOCK_SIZE:
			opts.block_size = parse_size(optarg);
			if (opts.block_size < PYFS_BLOCK_SIZE_MIN ||
			    opts.block_size > PYFS_BLOCK_SIZE_MAX ||
			    (opts.block_size & (opts.block_size - 1))) {
				usage_error("--block-size must be a power of two from 4K to 1M");
				free(excludes);
				return PACK_EXIT_USAGE;
			}
			pack_only++;
			break;
		case 'p':
			opts.python = optarg;
			pack_only++;
			break;
		case 'x':
			excludes[opts.exclude_count++] = optarg;
			pack_only++;
			break;
		case OPT_NO_COMPILE:
			opts.no_compile = true;
			pack_only++;
			break;
		case 'f':
			opts.force = true;
			pack_only++;
			break;
		case 'L':
			opts.dereference = true;
			pack_only++;
			break;
		case OPT_STRICT:
			opts.strict = true;
			pack_only++;
			break;
		case OPT_MOUNT_PATH:
			opts.mount_path = optarg;
			pack_only++;
			break;
		case OPT_LIST:
			command = CMD_LIST;
			commands++;
			break;
		case OPT_VERIFY:
			command = CMD_VERIFY;
			commands++;
			break;
		case OPT_EXTRACT:
			command = CMD_EXTRACT;
			commands++;
			break;
		case 'q':
			opts.quiet = true;
			break;
		case 'v':
			opts.verbose = true;
			break;
		case 'h':
			print_help();
			free(excludes);
			return PACK_EXIT_OK;
		case 'V':
			printf("pyfs-pack %s\n", PYFS_VERSION);
			free(excludes);
			return PACK_EXIT_OK;
		default:
			free(excludes);
			fputs("Try 'pyfs-pack --help' for more information.\n", stderr);
			return PACK_EXIT_USAGE;
		}
	}

	status = PACK_EXIT_USAGE;
	if (commands > 1) {
		usage_error("--list, --verify and --extract exclude each other");
		goto out;
	}
	if (opts.quiet && opts.verbose) {
		usage_error("--quiet and --verbose exclude each other");
		goto out;
	}
	if (command != CMD_PACK && pack_only) {
		usage_error("--python, --exclude, --no-compile, --force, --dereference, "
			    "--mount-path, --strict, --compress and --block-size are for packing");
		goto out;
	}
	if (opts.block_size && !opts.compress_level) {
		usage_error("--block-size is for compressed archives: add -z");
		goto out;
	}
	pyfs_log_set_verbosity(PYFS_LOG_INFO, opts.verbose, opts.quiet);

	argc -= optind;
	argv += optind;
	switch (command) {
	case CMD_PACK:
		if (argc < 1) {
			usage_error("missing ARCHIVE");
			break;
		}
		opts.archive = argv[0];
		opts.sources = argv + 1;
		opts.source_count = argc - 1;
		raise_fd_limit();
		pack_signals_install();
		signal(SIGPIPE, SIG_IGN); /* a dead interpreter is an error, not a death */
		status = pack_run(&opts);
		pack_signals_reraise();
		break;
	case CMD_LIST:
	case CMD_VERIFY:
		if (argc != 1) {
			usage_error(argc ? "too many arguments" : "missing ARCHIVE");
			break;
		}
		status = command == CMD_LIST ? pack_list(argv[0]) : pack_verify(argv[0]);
		break;
	case CMD_EXTRACT:
		if (argc != 2) {
			usage_error(argc > 2 ? "too many arguments"
					     : "--extract needs ARCHIVE DIR");
			break;
		}
		raise_fd_limit();
		status = pack_extract(argv[0], argv[1]);
		break;
	}
out:
	free(excludes);
	return status;
}
