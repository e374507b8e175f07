/*
 * env.c - recognize a whole Python environment given as a source.
 *
 * A conda environment, a spack view or a self-contained installation is a
 * prefix: bin/python3.X next to lib/python3.X/os.py. A venv has a pyvenv.cfg
 * at its root and an interpreter in bin/ that is (usually a symlink to) its
 * base's; its lib/python3.X holds site-packages only. Either way the
 * environment's own interpreter is the one whose byte-code the archive must
 * hold, and the one pyfs-pack runs when no --python is given.
 */
#include "env.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool pack_lexical_path(const char *path, char *out, size_t size, bool *climbed)
{
	size_t len = 0;
	const char *p, *end;

	*climbed = false;
	if (size == 0)
		return false;
	out[0] = '\0';
	for (p = path; *p; p = end) {
		size_t n;

		while (*p == '/')
			p++;
		end = strchr(p, '/');
		if (!end)
			end = p + strlen(p);
		n = (size_t)(end - p);
		if (n == 0 || (n == 1 && p[0] == '.'))
			continue;
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			*climbed = *climbed || len == 0;
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--;
			out[len] = '\0';
			continue;
		}
		if (len + n + 2 > size)
			return false;
		if (len)
			out[len++] = '/';
		memcpy(out + len, p, n);
		len += n;
		out[len] = '\0';
	}
	return true;
}

int pack_absolute_path(const char *path, char *out)
{
	char buf[PATH_MAX * 2];
	bool climbed;

	if (path[0] == '/') {
		buf[0] = '\0';
	} else {
		if (!getcwd(buf, PATH_MAX))
			return -errno;
	}
	if (snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "/%s", path) >=
	    (int)(sizeof(buf) - strlen(buf)))
		return -ENAMETOOLONG;
	/* ".." above the root stays at the root, as the kernel resolves it. */
	out[0] = '/';
	if (!pack_lexical_path(buf, out + 1, PATH_MAX - 1, &climbed))
		return -ENAMETOOLONG;
	return 0;
}

/* Is name "python3.X" (X digits)? Sets the "3.X" part into version. */
static bool python_name(const char *name, char *version, size_t size)
{
	if (strncmp(name, "python3.", 8) != 0 || !name[8])
		return false;
	for (const char *q = name + 8; *q; q++) {
		if (*q < '0' || *q > '9')
			return false;
	}
	return snprintf(version, size, "%s", name + 6) < (int)size;
}

static bool is_file(const char *dir, const char *rel)
{
	char path[PATH_MAX];
	struct stat st;

	return snprintf(path, sizeof(path), "%s/%s", dir, rel) < (int)sizeof(path) &&
	       stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/*
 * The highest "3.X" for which dir/bin/python3.X exists and (for a prefix)
 * dir/lib/python3.X/os.py too; for a venv, lib/python3.X is enough.
 */
static bool find_version(const char *dir, bool venv, char *version, size_t size)
{
	char path[PATH_MAX], v[16], rel[64];
	struct dirent *de;
	int best = -1;
	DIR *d;

	snprintf(path, sizeof(path), "%s/bin", dir);
	d = opendir(path);
	if (!d)
		return false;
	while ((de = readdir(d))) {
		int minor;

		if (!python_name(de->d_name, v, sizeof(v)))
			continue;
		snprintf(rel, sizeof(rel), "lib/python%s/%s", v, venv ? "" : "os.py");
		if (venv) {
			struct stat st;

			snprintf(path, sizeof(path), "%s/%s", dir, rel);
			if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
				continue;
		} else if (!is_file(dir, rel)) {
			continue;
		}
		minor = atoi(v + 2);
		if (minor > best) {
			best = minor;
			snprintf(version, size, "%s", v);
		}
	}
	closedir(d);
	return best >= 0;
}

/* The "home" line of dir/pyvenv.cfg into home ("" when there is none). */
static void read_venv_home(const char *dir, char *home, size_t size)
{
	char path[PATH_MAX], *line = NULL;
	size_t cap = 0;
	FILE *f;

	home[0] = '\0';
	snprintf(path, sizeof(path), "%s/pyvenv.cfg", dir);
	f = fopen(path, "re");
	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		char *p = line + strspn(line, " \t"), *v;

		if (strncmp(p, "home", 4) != 0)
			continue;
		v = p + 4 + strspn(p + 4, " \t");
		if (*v != '=')
			continue;
		v++;
		v += strspn(v, " \t");
		v[strcspn(v, "\r\n")] = '\0';
		snprintf(home, size, "%s", v);
		break;
	}
	free(line);
	fclose(f);
}

int pack_env_detect(const char *source, struct pack_env *env, struct pyfs_err *err)
{
	struct stat st;
	int ret;

	memset(env, 0, sizeof(*env));
	if (stat(source, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0;
	env->venv = is_file(source, "pyvenv.cfg");
	if (!find_version(source, env->venv, env->version, sizeof(env->version)))
		return 0;
	ret = pack_absolute_path(source, env->path);
	if (ret == 0 && !realpath(source, env->real))
		ret = -errno;
	if (ret == 0 && snprintf(env->python, sizeof(env->python), "%s/bin/python%s", env->path,
				 env->version) >= (int)sizeof(env->python))
		ret = -ENAMETOOLONG;
	if (ret < 0) {
		pyfs_err_set(err, "cannot resolve source '%s': %s", source, strerror(-ret));
		return ret;
	}
	if (env->venv)
		read_venv_home(source, env->home, sizeof(env->home));
	return 1;
}
