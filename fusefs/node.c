/*
 * node.c - small commands of pyfs-mount for the job scripts (pyfs-prologue,
 * pyfs-epilogue), so that the shell does not re-implement what the daemon
 * already knows: the "%r"/"%n" expansion, the mount table, clearing a dead
 * mount, the archive's recorded environment, and finding the daemons. None
 * of them initializes MPI or mounts anything.
 *
 *   --expand PATTERN        the path of this process (rank from the launcher)
 *   --status DIR            "live", "stale" (a dead FUSE mount) or "none"
 *   --clear-stale DIR       unmount DIR if it is a dead mount; fail if live
 *   --info ARCHIVE          "KEY=VALUE" lines: the environment attribute
 *                           (source_path, pth_dir) and bin=yes|no
 *   --mounts [--uid UID]    every pyfs mount of this node (of UID), one a line
 *   --daemons [--uid UID] [DIR...]
 *                           PIDs of pyfs-mount processes naming a DIR (any
 *                           when none is given), of UID (default: this user
 *                           unless root)
 */
#include "mount.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "archive_io.h"

extern char **environ;

#define NODE_PROGRAM "pyfs-mount"

static int node_usage(const char *msg)
{
	fprintf(stderr,
		NODE_PROGRAM ": %s\n"
			     "Usage: " NODE_PROGRAM
			     " --expand PATTERN | --status DIR | --clear-stale DIR |\n"
			     "       " NODE_PROGRAM " --info ARCHIVE | --mounts [--uid UID] |\n"
			     "       " NODE_PROGRAM " --daemons [--uid UID] [DIR...]\n",
		msg);
	return MOUNT_EXIT_USAGE;
}

const char *mount_launcher_rank(void)
{
	static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
					   "SLURM_PROCID"};

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = getenv(vars[i]);

		if (v && *v)
			return v;
	}
	return NULL;
}

/* The rank of this process under a launcher, as pyfs-mount numbers nodes: 0 without one. */
static int node_rank(void)
{
	const char *rank = mount_launcher_rank();

	return rank ? atoi(rank) : 0;
}

static int node_expand(const char *pattern)
{
	struct pyfs_err err = {{0}};
	char out[PATH_MAX];
	int rank = node_rank();

	if (mount_expand_path(pattern, rank, rank, out, sizeof(out), &err) < 0) {
		pyfs_error("%s", err.msg);
		return MOUNT_EXIT_USAGE;
	}
	puts(out);
	return MOUNT_EXIT_OK;
}

static int node_status(const char *dir)
{
	static const char *const names[] = {"none", "live", "stale"};

	puts(names[mount_point_state(dir)]);
	return MOUNT_EXIT_OK;
}

/* Run argv, quietly; true when it exits 0. */
static bool node_run(char *const argv[])
{
	posix_spawn_file_actions_t actions;
	int status = -1;
	pid_t pid;
	bool ok;

	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	ok = posix_spawnp(&pid, argv[0], &actions, NULL, argv, environ) == 0;
	posix_spawn_file_actions_destroy(&actions);
	if (!ok)
		return false;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int node_clear_stale(const char *dir)
{
	char *fusermount[] = {(char *)"fusermount3", (char *)"-uz", (char *)"--", (char *)dir,
			      NULL};
	char *umount[] = {(char *)"umount", (char *)"-l", (char *)"--", (char *)dir, NULL};

	switch (mount_point_state(dir)) {
	case MOUNT_POINT_NONE:
		return MOUNT_EXIT_OK;
	case MOUNT_POINT_LIVE:
		pyfs_error("'%s' is already a mount (unmount it first: pyfs-epilogue, or "
			   "fusermount3 -u %s)",
			   dir, dir);
		return MOUNT_EXIT_FAILURE;
	case MOUNT_POINT_STALE:
		break;
	}
	if (!node_run(fusermount) && geteuid() == 0)
		node_run(umount);
	if (mount_point_state(dir) != MOUNT_POINT_NONE) {
		pyfs_error("cannot clear the dead mount on '%s'", dir);
		return MOUNT_EXIT_FAILURE;
	}
	pyfs_warn("cleared a dead mount on '%s'", dir);
	return MOUNT_EXIT_OK;
}

/* Does the (validated) archive root hold a directory "bin"? */
static int node_has_bin(struct pyfs_archive *archive, bool *has_bin, struct pyfs_err *err)
{
	struct pyfs_image_parts parts = {0};
	const struct pyfs_inode *root;
	int rc;

	*has_bin = false;
	rc = pyfs_archive_read_metadata(archive, &parts, err);
	if (rc == 0)
		rc = pyfs_image_check_metadata(&parts, err);
	if (rc < 0)
		goto out;
	root = &parts.inodes[PYFS_ROOT_INDEX];
	for (uint32_t i = 0; i < root->entry_count; i++) {
		const struct pyfs_dirent *d = &parts.dirents[root->first_entry + i];

		if (d->name_length == 3 && memcmp(parts.names + d->name_offset, "bin", 3) == 0 &&
		    (parts.inodes[d->inode].mode & S_IFMT) == S_IFDIR)
			*has_bin = true;
	}
out:
	pyfs_image_parts_free(&parts);
	return rc;
}

static int node_info(const char *path)
{
	struct pyfs_err err = {{0}};
	struct pyfs_archive *archive = NULL;
	char *items = NULL;
	size_t count = 0;
	bool has_bin = false;
	int rc;

	rc = pyfs_archive_open(path, &archive, &err);
	if (rc == 0) {
		rc = pyfs_archive_read_environment(archive, &items, &count, &err);
		if (rc == -ENOENT)
			rc = 0;
	}
	if (rc == 0)
		rc = node_has_bin(archive, &has_bin, &err);
	if (rc < 0) {
		pyfs_error("%s", err.msg);
		goto out;
	}
	for (const char *p = items; count > 0; count--, p += strlen(p) + 1) {
		bool printable = true;

		for (const char *q = p; *q; q++)
			printable &= !iscntrl((unsigned char)*q);
		if (printable)
			puts(p);
		else
			pyfs_warn("'%s': skipping an environment entry with control characters",
				  path);
	}
	printf("bin=%s\n", has_bin ? "yes" : "no");
out:
	free(items);
	pyfs_archive_close(archive);
	return rc < 0 ? MOUNT_EXIT_FAILURE : MOUNT_EXIT_OK;
}

/* Is argument arg one of the commands of this file (a short-lived pyfs-mount)? */
static bool node_is_command(const char *arg)
{
	static const char *const commands[] = {"--expand", "--status",	"--clear-stale",
					       "--info",   "--daemons", "--mounts"};

	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(arg, commands[i]) == 0)
			return true;
	}
	return false;
}

/*
 * Is this the command line of a pyfs-mount daemon (itself, or an interpreter
 * running it), not one of the commands here?
 */
static bool node_is_daemon(const char *cmdline, size_t len)
{
	const char *arg = cmdline, *base, *next;

	for (int i = 0; i < 2 && arg < cmdline + len; i++, arg = next) {
		next = arg + strlen(arg) + 1;
		base = strrchr(arg, '/');
		if (strcmp(base ? base + 1 : arg, NODE_PROGRAM) == 0)
			return !(next < cmdline + len && node_is_command(next));
	}
	return false;
}

static bool node_names_dir(const char *cmdline, size_t len, char **dirs, int dir_count)
{
	const char *arg = cmdline + strlen(cmdline) + 1;

	if (dir_count == 0)
		return true;
	for (; arg < cmdline + len; arg += strlen(arg) + 1) {
		for (int i = 0; i < dir_count; i++) {
			if (strcmp(arg, dirs[i]) == 0)
				return true;
		}
	}
	return false;
}

/* Take a leading "--uid UID" off argc/argv into *uid; false on a bad UID. */
static bool node_uid_option(int *argc, char ***argv, long *uid)
{
	char *end;

	if (*argc < 1 || strcmp((*argv)[0], "--uid") != 0)
		return true;
	if (*argc < 2)
		return false;
	*uid = strtol((*argv)[1], &end, 10);
	if (*end || *uid < 0 || !(*argv)[1][0])
		return false;
	*argc -= 2;
	*argv += 2;
	return true;
}

static int node_mounts(int argc, char **argv)
{
	long uid = -1;
	int rc;

	if (!node_uid_option(&argc, &argv, &uid))
		return node_usage("--uid needs a numeric user id");
	if (argc)
		return node_usage("--mounts takes no argument but --uid UID");
	rc = mount_list_pyfs(stdout, uid);
	if (rc < 0) {
		pyfs_error("cannot read '/proc/self/mountinfo': %s", strerror(-rc));
		return MOUNT_EXIT_FAILURE;
	}
	return MOUNT_EXIT_OK;
}

static int node_daemons(int argc, char **argv)
{
	long uid = geteuid() == 0 ? -1 : (long)getuid();
	char path[64], cmdline[8192];
	struct dirent *de;
	struct stat st;
	DIR *proc;

	if (!node_uid_option(&argc, &argv, &uid))
		return node_usage("--uid needs a numeric user id");
	proc = opendir("/proc");
	if (!proc) {
		pyfs_error("cannot read '/proc': %s", strerror(errno));
		return MOUNT_EXIT_FAILURE;
	}
	while ((de = readdir(proc))) {
		ssize_t n;
		long pid;
		int fd;

		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		pid = atol(de->d_name);
		if (pid == (long)getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = fstat(fd, &st) == 0 ? read(fd, cmdline, sizeof(cmdline) - 1) : -1;
		close(fd);
		if (n <= 0 || (uid >= 0 && (long)st.st_uid != uid))
			continue;
		cmdline[n] = '\0';
		if (node_is_daemon(cmdline, (size_t)n) &&
		    node_names_dir(cmdline, (size_t)n, argv, argc))
			printf("%ld\n", pid);
	}
	closedir(proc);
	return MOUNT_EXIT_OK;
}

int mount_node_command(int argc, char **argv)
{
	const char *cmd = argc >= 2 ? argv[1] : "";

	if (strcmp(cmd, "--expand") && strcmp(cmd, "--status") && strcmp(cmd, "--clear-stale") &&
	    strcmp(cmd, "--info") && strcmp(cmd, "--daemons") && strcmp(cmd, "--mounts"))
		return -1;
	if (strcmp(cmd, "--mounts") == 0)
		return node_mounts(argc - 2, argv + 2);
	if (strcmp(cmd, "--daemons") == 0)
		return node_daemons(argc - 2, argv + 2);
	if (argc != 3 || strcmp(argv[2], "--help") == 0)
		return node_usage(argc < 3 ? "missing argument" : "expected one argument");
	if (strcmp(cmd, "--expand") == 0)
		return node_expand(argv[2]);
	if (strcmp(cmd, "--status") == 0)
		return node_status(argv[2]);
	if (strcmp(cmd, "--clear-stale") == 0)
		return node_clear_stale(argv[2]);
	return node_info(argv[2]);
}
