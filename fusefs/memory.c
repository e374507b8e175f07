/*
 * memory.c - does the image fit in the memory limit of this job?
 *
 * Under a cgroup memory limit (what Slurm's --mem and most batch systems set)
 * a pull that does not fit is not refused by malloc: the pages are charged as
 * the payload is read, and the kernel's OOM killer ends a rank in the middle
 * of the pull. So before the payload is read, each leader compares what the
 * mount will hold (payload, metadata, serving threads) with what the limits
 * of its cgroup and of every parent leave: the limit minus what is in use and
 * cannot be reclaimed (page cache can). cgroup v2 (memory.max) and v1
 * (memory.limit_in_bytes, hierarchical_memory_limit) are both read.
 */
#include "mount.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "pull.h"

#define MIB(bytes) ((double)(bytes) / (1024.0 * 1024.0))

/* out = dir/name; false when it does not fit. */
static bool memory_path(char *out, size_t size, const char *dir, const char *name)
{
	size_t d = strlen(dir), n = strlen(name);

	if (d + 1 + n >= size)
		return false;
	memcpy(out, dir, d);
	out[d] = '/';
	memcpy(out + d + 1, name, n + 1);
	return true;
}

/* The first line of path as a number; "max" (v2: no limit) is UINT64_MAX. false if unreadable. */
static bool memory_read_value(const char *path, uint64_t *value)
{
	char line[64] = "";
	FILE *f = fopen(path, "re");
	bool ok;

	if (!f)
		return false;
	ok = fgets(line, sizeof(line), f) != NULL;
	fclose(f);
	if (!ok)
		return false;
	if (strncmp(line, "max", 3) == 0)
		*value = UINT64_MAX;
	else
		*value = strtoull(line, NULL, 10);
	return true;
}

/* The value of key in a memory.stat file (0 when absent). */
static uint64_t memory_stat_value(const char *dir, const char *key)
{
	char path[PATH_MAX], name[64];
	unsigned long long value;
	uint64_t found = 0;
	FILE *f;

	if (!memory_path(path, sizeof(path), dir, "memory.stat"))
		return 0;
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fscanf(f, "%63s %llu", name, &value) == 2) {
		if (strcmp(name, key) == 0) {
			found = value;
			break;
		}
	}
	fclose(f);
	return found;
}

/*
 * The cgroup directory of this process for the memory controller: the v2
 * group ("0::/path") if it has memory files, else the v1 "memory" group.
 * false when there is none (no cgroups, or not mounted where expected).
 */
static bool memory_cgroup_dir(char dir[PATH_MAX], bool *v2)
{
	char *line = NULL;
	size_t cap = 0;
	char v1[PATH_MAX] = "", unified[PATH_MAX] = "";
	FILE *f = fopen("/proc/self/cgroup", "re");

	if (!f)
		return false;
	while (getline(&line, &cap, f) > 0) {
		char *path = strchr(line, ':'), *ctl = path ? path + 1 : NULL;

		line[strcspn(line, "\n")] = '\0';
		if (!ctl || !(path = strchr(ctl, ':')))
			continue;
		*path++ = '\0';
		if (strncmp(line, "0", 2) == 0 && ctl[0] == '\0')
			snprintf(unified, sizeof(unified), "%s", path);
		else if (strcmp(ctl, "memory") == 0 || strstr(ctl, "memory,") == ctl ||
			 strstr(ctl, ",memory"))
			snprintf(v1, sizeof(v1), "%s", path);
	}
	free(line);
	fclose(f);
	if (unified[0]) {
		const char *roots[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};

		for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
			char probe[PATH_MAX];
			uint64_t value;

			if (memory_path(dir, PATH_MAX, roots[i],
					strcmp(unified, "/") ? unified + 1 : "") &&
			    memory_path(probe, sizeof(probe), dir, "memory.current") &&
			    memory_read_value(probe, &value)) {
				*v2 = true;
				return true;
			}
		}
	}
	if (v1[0]) {
		char probe[PATH_MAX];
		uint64_t value;

		if (memory_path(dir, PATH_MAX, "/sys/fs/cgroup/memory",
				strcmp(v1, "/") ? v1 + 1 : "") &&
		    memory_path(probe, sizeof(probe), dir, "memory.usage_in_bytes") &&
		    memory_read_value(probe, &value)) {
			*v2 = false;
			return true;
		}
	}
	return false;
}

/* v2: the smallest headroom of dir and its parents up to the root; limit of that group. */
static bool memory_headroom_v2(char *dir, uint64_t *headroom, uint64_t *limit, char *where)
{
	bool limited = false;

	for (;;) {
		char path[PATH_MAX + 32];
		uint64_t max, current;

		if (memory_path(path, sizeof(path), dir, "memory.max") &&
		    memory_read_value(path, &max) && max != UINT64_MAX) {
			uint64_t used = 0, file, shmem, room;

			if (memory_path(path, sizeof(path), dir, "memory.current") &&
			    memory_read_value(path, &current))
				used = current;
			/* Page cache can be reclaimed to make room; shared memory cannot. */
			file = memory_stat_value(dir, "file");
			shmem = memory_stat_value(dir, "shmem");
			if (file > shmem && used > file - shmem)
				used -= file - shmem;
			room = max > used ? max - used : 0;
			if (!limited || room < *headroom) {
				*headroom = room;
				*limit = max;
				(void)!memory_path(where, PATH_MAX, dir, "memory.max");
			}
			limited = true;
		}
		char *slash = strrchr(dir, '/');

		if (!slash || slash == dir || strcmp(dir, "/sys/fs/cgroup") == 0 ||
		    strcmp(dir, "/sys/fs/cgroup/unified") == 0)
			break;
		*slash = '\0';
	}
	return limited;
}

/* v1: the group's hierarchical limit against its usage (page cache left out). */
static bool memory_headroom_v1(const char *dir, uint64_t *headroom, uint64_t *limit, char *where)
{
	char path[PATH_MAX + 32];
	uint64_t max = memory_stat_value(dir, "hierarchical_memory_limit"), usage = 0, cache, shmem;

	if (max == 0) {
		if (!memory_path(path, sizeof(path), dir, "memory.limit_in_bytes") ||
		    !memory_read_value(path, &max))
			return false;
	}
	/* "Unlimited" in v1 is a page-rounded LONG_MAX. */
	if (max >= (UINT64_C(1) << 62))
		return false;
	if (memory_path(path, sizeof(path), dir, "memory.usage_in_bytes"))
		(void)memory_read_value(path, &usage);
	cache = memory_stat_value(dir, "total_cache");
	shmem = memory_stat_value(dir, "total_shmem");
	if (cache > shmem && usage > cache - shmem)
		usage -= cache - shmem;
	*headroom = max > usage ? max - usage : 0;
	*limit = max;
	(void)!memory_path(where, PATH_MAX, dir, "memory.limit_in_bytes");
	return true;
}

/*
 * ulimit -v: the payload is mapped already (pull_metadata); what is left of
 * the address space must take the serving threads and what HDF5 and MPI
 * allocate in the pull (HDF5 1.10 crashes on some failed mallocs instead of
 * failing).
 */
static int memory_check_address_space(const char *archive, uint64_t serving_bytes,
				      struct pyfs_err *err)
{
	uint64_t size = pull_proc_value("/proc/self/status", "VmSize:") * 1024, room, need;
	struct rlimit rl;

	if (getrlimit(RLIMIT_AS, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || size == 0)
		return 0;
	room = rl.rlim_cur > size ? rl.rlim_cur - size : 0;
	need = serving_bytes + MOUNT_MEMORY_SLACK;
	if (need <= room)
		return 0;
	pyfs_err_set(err,
		     "not enough address space for archive '%s': ulimit -v leaves %.0f MiB "
		     "beside the image, serving and the pull need %.0f MiB: raise ulimit -v by "
		     "at least %.0f MiB: %s",
		     archive, MIB(room), MIB(need), MIB(need - room) + 1, strerror(ENOMEM));
	return -ENOMEM;
}

int mount_check_memory(const char *archive, uint64_t image_bytes, uint64_t serving_bytes,
		       struct pyfs_err *err)
{
	char dir[PATH_MAX], where[PATH_MAX] = "";
	uint64_t headroom = 0, limit = 0, need = image_bytes + serving_bytes + MOUNT_MEMORY_SLACK;
	bool v2 = false, limited;

	if (memory_check_address_space(archive, serving_bytes, err) < 0)
		return -ENOMEM;
	if (!memory_cgroup_dir(dir, &v2))
		return 0;
	limited = v2 ? memory_headroom_v2(dir, &headroom, &limit, where)
		     : memory_headroom_v1(dir, &headroom, &limit, where);
	if (!limited || need <= headroom)
		return 0;
	pyfs_err_set(err,
		     "not enough memory for archive '%s': the mount needs %.0f MiB (%.0f MiB "
		     "image, %.0f MiB to serve, %.0f MiB slack), the memory limit of this job "
		     "(%.0f MiB, %s) leaves %.0f MiB: ask for at least %.0f MiB more (e.g. "
		     "Slurm --mem)",
		     archive, MIB(need), MIB(image_bytes), MIB(serving_bytes),
		     MIB(MOUNT_MEMORY_SLACK), MIB(limit), where, MIB(headroom),
		     MIB(need - headroom) + 1);
	return -ENOMEM;
}
