/*
 * bytecode.c - the target interpreter: its site-packages and its byte-code.
 *
 * Python imports a module from __pycache__/NAME.TAG.pyc only when the pyc's
 * header matches the interpreter's magic number and the source's mtime and
 * size (or is hash-based). A read-only archive cannot take the .pyc files an
 * import would write, so every .py without valid byte-code would be compiled
 * again by every process of every job. The packer therefore runs the
 * interpreter once, with the small helper below: it reports its cache tag,
 * magic number and site-packages directories, then reads the list of .py
 * files, checks the byte-code the archive would hold for each, and compiles
 * the missing or stale ones into a temporary directory (never into a source)
 * with the header of the file as it will be in the archive.
 *
 * Protocol (fields NUL-terminated, on the helper's stdin/stdout):
 *   helper -> packer  "pyfs-helper-2", cache tag, magic (hex), version
 *                     ("3.11.7"), real path of the executable, N, N directories
 *   packer -> helper  a directory for the compiled files, then per .py: source
 *                     path, archive path, mtime (int seconds as Python computes
 *                     it), size, path of the archive's current .pyc or "";
 *                     then end of file (at once when there is nothing to do)
 *   helper -> packer  per compiled .py: "ok", its number (file DIR/NUMBER.pyc);
 *                     per failure: "err", number, reason; finally "end"
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pack.h"
#include "pyfs_format.h"

extern char **environ;

#define HELPER_HELLO "pyfs-helper-2"

static const char helper_source[] =
    "import importlib.util, marshal, os, site, sys, sysconfig\n"
    "out = sys.stdout.buffer\n"
    "magic = importlib.util.MAGIC_NUMBER\n"
    "def site_dirs():\n"
    "    paths = sysconfig.get_paths()\n"
    "    found = [paths[k] for k in ('purelib', 'platlib') if k in paths]\n"
    "    if hasattr(site, 'getsitepackages'):\n"
    "        found += site.getsitepackages()\n"
    "    seen, dirs = set(), []\n"
    "    for d in found:\n"
    "        real = os.path.realpath(d)\n"
    "        if os.path.isdir(d) and real not in seen:\n"
    "            seen.add(real)\n"
    "            dirs.append(os.fsencode(d))\n"
    "    return dirs\n"
    "dirs = site_dirs()\n"
    "tag = (sys.implementation.cache_tag or '').encode()\n"
    "version = '%d.%d.%d' % sys.version_info[:3]\n"
    "exe = os.fsencode(os.path.realpath(sys.executable)) if sys.executable else b''\n"
    "head = [b'" HELPER_HELLO "', tag, magic.hex().encode(), version.encode(), exe,\n"
    "        str(len(dirs)).encode()]\n"
    "out.write(b'\\0'.join(head + dirs) + b'\\0')\n"
    "out.flush()\n"
    "def valid(pyc, mtime, size, src):\n"
    "    try:\n"
    "        with open(pyc, 'rb') as f:\n"
    "            h = f.read(16)\n"
    "    except OSError:\n"
    "        return False\n"
    "    if len(h) < 16 or h[:4] != magic:\n"
    "        return False\n"
    "    flags = int.from_bytes(h[4:8], 'little')\n"
    "    if flags & ~3:\n"
    "        return False\n"
    "    if flags & 1:\n"
    "        if not flags & 2:\n"
    "            return True\n"
    "        try:\n"
    "            with open(src, 'rb') as f:\n"
    "                return h[8:16] == importlib.util.source_hash(f.read())\n"
    "        except OSError:\n"
    "            return False\n"
    "    return (int.from_bytes(h[8:12], 'little') == mtime & 0xFFFFFFFF and\n"
    "            int.from_bytes(h[12:16], 'little') == size & 0xFFFFFFFF)\n"
    "fields = sys.stdin.buffer.read().split(b'\\0')\n"
    "tmp, fields = fields[0], fields[1:]\n"
    "for i in range((len(fields) - 1) // 5):\n"
    "    src, dfile, mtime, size, pyc = fields[5 * i:5 * i + 5]\n"
    "    mtime, size = int(mtime), int(size)\n"
    "    if pyc and valid(pyc, mtime, size, src):\n"
    "        continue\n"
    "    try:\n"
    "        with open(src, 'rb') as f:\n"
    "            data = f.read()\n"
    "        if len(data) != size:\n"
    "            raise OSError('the file changed while being packed')\n"
    "        code = compile(data, os.fsdecode(dfile), 'exec', dont_inherit=True, optimize=0)\n"
    "        pyc = bytearray(magic)\n"
    "        pyc += (0).to_bytes(4, 'little')\n"
    "        pyc += (mtime & 0xFFFFFFFF).to_bytes(4, 'little')\n"
    "        pyc += (size & 0xFFFFFFFF).to_bytes(4, 'little')\n"
    "        pyc += marshal.dumps(code)\n"
    "        with open(os.path.join(tmp, b'%d.pyc' % i), 'wb') as f:\n"
    "            f.write(pyc)\n"
    "        out.write(b'ok\\0%d\\0' % i)\n"
    "    except Exception as e:\n"
    "        why = ('%s: %s' % (type(e).__name__, e)).replace('\\n', ' ')\n"
    "        out.write(b'err\\0%d\\0%s\\0' % (i, why.encode('utf-8', 'backslashreplace')))\n"
    "out.write(b'end\\0')\n"
    "out.flush()\n";

struct pack_python {
	char *python;
	pid_t pid;
	int to_helper;	       /* helper's stdin */
	int from_helper;       /* helper's stdout */
	char tmpdir[PATH_MAX]; /* compiled files; "" until created */
	char *tag;
	char *magic_hex;
	char *version;
	char *executable;
	char **site_dirs;
	size_t site_dir_count;
	char *header; /* raw header the strings above point into */
};

/* One .py file that may need byte-code. */
struct candidate {
	struct pack_inode *dir;
	const uint8_t *name;
	uint32_t name_len;
	struct pack_inode *source;
	struct pack_inode *cache_dir; /* dir/__pycache__ if it exists */
	int64_t pyc_entry;	      /* index of the pyc in cache_dir, or -1 */
};

struct candidates {
	struct candidate *items;
	size_t count;
	size_t cap;
};

/* A growable byte buffer. */
struct bytes {
	char *data;
	size_t len;
	size_t cap;
};

static int bytes_add(struct bytes *b, const void *data, size_t len)
{
	size_t cap = b->cap ? b->cap : 4096;
	char *p;

	if (b->len + len > b->cap) {
		while (cap < b->len + len)
			cap *= 2;
		p = realloc(b->data, cap);
		if (!p)
			return -ENOMEM;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	return 0;
}

static int bytes_add_field(struct bytes *b, const void *data, size_t len)
{
	if (bytes_add(b, data, len) < 0)
		return -ENOMEM;
	return bytes_add(b, "", 1);
}

/* Append what fd has next to b: 1 when bytes came, 0 at end of file, or a negative errno. */
static int read_more(int fd, struct bytes *b, struct pyfs_err *err)
{
	char chunk[65536];
	ssize_t n;

	for (;;) {
		if (pack_interrupted) {
			pyfs_err_set(err, "interrupted");
			return -EINTR;
		}
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int ret = -errno;

			pyfs_err_set(err, "cannot read from the interpreter: %s", strerror(-ret));
			return ret;
		}
		if (n == 0)
			return 0;
		if (bytes_add(b, chunk, (size_t)n) < 0)
			return -ENOMEM;
		return 1;
	}
}

static int write_all(int fd, const char *data, size_t len)
{
	ssize_t n;

	while (len > 0) {
		if (pack_interrupted)
			return -EINTR;
		n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Wait for the helper and describe how it ended. */
static int reap(struct pack_python *py, char *how, size_t how_size)
{
	int status = 0;

	if (py->pid <= 0) {
		snprintf(how, how_size, "already reaped");
		return 0;
	}
	while (waitpid(py->pid, &status, 0) < 0) {
		if (errno != EINTR) {
			snprintf(how, how_size, "cannot wait: %s", strerror(errno));
			py->pid = -1;
			return -1;
		}
	}
	py->pid = -1;
	if (WIFEXITED(status))
		snprintf(how, how_size, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(how, how_size, "killed by signal %d", WTERMSIG(status));
	return status;
}

/* Split the first count NUL-terminated fields of buf[0, len); NULL if incomplete. */
static size_t split_fields(char *buf, size_t len, char **fields, size_t count)
{
	size_t i, pos = 0;
	char *nul;

	if (!buf)
		return 0;
	for (i = 0; i < count; i++) {
		nul = memchr(buf + pos, '\0', len - pos);
		if (!nul)
			return 0;
		fields[i] = buf + pos;
		pos = (size_t)(nul - buf) + 1;
	}
	return pos;
}

/* Parse the helper's header; 1 when complete, 0 when more bytes are needed. */
static int parse_header(struct pack_python *py, struct bytes *b, size_t *consumed,
			struct pyfs_err *err)
{
	char *head[6], *end;
	size_t pos, n, i;
	char **dirs;

	pos = split_fields(b->data, b->len, head, 6);
	if (!pos)
		return 0;
	if (strcmp(head[0], HELPER_HELLO) != 0) {
		pyfs_err_set(err, "interpreter '%s' gave an unexpected answer", py->python);
		return -EPROTO;
	}
	n = strtoul(head[5], &end, 10);
	if (*end || n > 1024) {
		pyfs_err_set(err, "interpreter '%s' gave an unexpected answer", py->python);
		return -EPROTO;
	}
	dirs = calloc(n + 1, sizeof(*dirs));
	if (!dirs)
		return -ENOMEM;
	if (n && !split_fields(b->data + pos, b->len - pos, dirs, n)) {
		free(dirs);
		return 0;
	}
	for (i = 0; i < n; i++)
		pos += strlen(dirs[i]) + 1;
	/* Keep the header bytes: the strings point into them. */
	py->header = malloc(pos);
	if (!py->header) {
		free(dirs);
		return -ENOMEM;
	}
	memcpy(py->header, b->data, pos);
	py->tag = py->header + (head[1] - b->data);
	py->magic_hex = py->header + (head[2] - b->data);
	py->version = py->header + (head[3] - b->data);
	py->executable = py->header + (head[4] - b->data);
	for (i = 0; i < n; i++)
		dirs[i] = py->header + (dirs[i] - b->data);
	py->site_dirs = dirs;
	py->site_dir_count = n;
	*consumed = pos;
	return 1;
}

static int spawn_helper(struct pack_python *py, struct pyfs_err *err)
{
	/* -I: nothing from the environment or the user; -B: no .pyc written anywhere. */
	char *argv[] = {py->python,   (char *)"-I",	     (char *)"-B",
			(char *)"-c", (char *)helper_source, NULL};
	int in[2] = {-1, -1}, out[2] = {-1, -1};
	posix_spawn_file_actions_t actions;
	posix_spawnattr_t attr;
	sigset_t defaults;
	int ret;

	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot create a pipe: %s", strerror(errno));
		goto out_close;
	}
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
	posix_spawnattr_init(&attr);
	sigemptyset(&defaults);
	sigaddset(&defaults, SIGPIPE);
	posix_spawnattr_setsigdefault(&attr, &defaults);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
	ret = posix_spawnp(&py->pid, py->python, &actions, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&actions);
	if (ret) {
		py->pid = -1;
		pyfs_err_set(err,
			     "cannot run interpreter '%s': %s; pass --python PATH or "
			     "--no-compile",
			     py->python, strerror(ret));
		ret = -ret;
		goto out_close;
	}
	py->to_helper = in[1];
	py->from_helper = out[0];
	in[1] = -1;
	out[0] = -1;
out_close:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
	return ret;
}

int pack_python_start(const char *python, struct pack_python **out, struct pyfs_err *err)
{
	struct pack_python *py = calloc(1, sizeof(*py));
	struct bytes b = {0};
	char how[64];
	size_t used = 0;
	int ret;

	*out = NULL;
	if (!py)
		return -ENOMEM;
	py->pid = -1;
	py->to_helper = -1;
	py->from_helper = -1;
	py->python = strdup(python);
	if (!py->python) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = spawn_helper(py, err);
	if (ret < 0)
		goto out_free;
	for (;;) {
		ret = parse_header(py, &b, &used, err);
		if (ret != 0)
			break;
		ret = read_more(py->from_helper, &b, err);
		if (ret <= 0) {
			if (ret == 0) {
				reap(py, how, sizeof(how));
				pyfs_err_set(err,
					     "interpreter '%s' does not work as a Python 3 "
					     "interpreter (%s); pass --python PATH or --no-compile",
					     python, how);
				ret = -ENOEXEC;
			}
			break;
		}
	}
	if (ret < 0)
		goto out_free;
	if (used != b.len) {
		pyfs_err_set(err, "interpreter '%s' gave an unexpected answer", python);
		ret = -EPROTO;
		goto out_free;
	}
	free(b.data);
	pyfs_debug("interpreter '%s' ('%s', Python %s): cache tag '%s', magic %s, %zu site "
		   "directories",
		   python, py->executable, py->version, py->tag, py->magic_hex, py->site_dir_count);
	*out = py;
	return 0;

out_free:
	free(b.data);
	pack_python_destroy(py);
	return ret;
}

const char *pack_python_tag(const struct pack_python *py)
{
	return py->tag;
}

const char *pack_python_version(const struct pack_python *py)
{
	return py->version;
}

const char *pack_python_executable(const struct pack_python *py)
{
	return py->executable[0] ? py->executable : py->python;
}

size_t pack_python_site_dirs(const struct pack_python *py, const char *const **dirs)
{
	*dirs = (const char *const *)py->site_dirs;
	return py->site_dir_count;
}

/* Name of the byte-code of source name (len bytes, ending in ".py") into buf. */
static size_t pyc_name(char *buf, size_t size, const uint8_t *name, size_t len, const char *tag)
{
	int n = snprintf(buf, size, "%.*s.%s.pyc", (int)(len - 3), (const char *)name, tag);

	return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}

static bool has_suffix(const uint8_t *name, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);

	return len > n && memcmp(name + len - n, suffix, n) == 0;
}

/*
 * Collect every regular .py of dir, then of its subdirectories: the
 * candidates of one directory are contiguous, so the __pycache__ add_pyc()
 * creates for the first of them serves all the others.
 */
static int collect(struct pack_inode *dir, const char *tag, struct candidates *c)
{
	struct pack_entry *cache = pack_tree_lookup(dir, "__pycache__", 11), *pyc;
	struct pack_inode *cache_dir = cache && S_ISDIR(cache->inode->mode) ? cache->inode : NULL;
	char name[PYFS_NAME_MAX + 1];
	struct candidate *item;
	struct pack_entry *e;
	size_t cap, n;
	uint32_t i;
	int ret;

	/* A __pycache__ that is not a directory leaves no place for byte-code. */
	for (i = 0; i < dir->entry_count && (!cache || cache_dir); i++) {
		e = &dir->entries[i];
		if (!S_ISREG(e->inode->mode) || !has_suffix(e->name, e->name_len, ".py"))
			continue;
		if (c->count == c->cap) {
			cap = c->cap ? c->cap * 2 : 1024;
			item = realloc(c->items, cap * sizeof(*item));
			if (!item)
				return -ENOMEM;
			c->items = item;
			c->cap = cap;
		}
		item = &c->items[c->count++];
		item->dir = dir;
		item->name = e->name;
		item->name_len = e->name_len;
		item->source = e->inode;
		item->cache_dir = cache_dir;
		item->pyc_entry = -1;
		if (!cache_dir)
			continue;
		n = pyc_name(name, sizeof(name), e->name, e->name_len, tag);
		pyc = n ? pack_tree_lookup(cache_dir, name, n) : NULL;
		if (pyc)
			item->pyc_entry = pyc - cache_dir->entries;
	}
	for (i = 0; i < dir->entry_count; i++) {
		e = &dir->entries[i];
		if (S_ISDIR(e->inode->mode)) {
			ret = collect(e->inode, tag, c);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* Archive path of dir (from the root, no leading '/'). */
static int dir_path(struct pack_inode *dir, struct pack_inode *root, struct pack_path *path)
{
	const struct pack_inode *parent;
	uint32_t i;
	int ret;

	if (dir == root)
		return pack_path_set(path, "", 0);
	ret = dir_path(dir->parent, root, path);
	if (ret < 0)
		return ret;
	parent = dir->parent;
	for (i = 0; i < parent->entry_count; i++) {
		if (parent->entries[i].inode == dir)
			return pack_path_push(path, parent->entries[i].name,
					      parent->entries[i].name_len);
	}
	return -ENOENT;
}

/* Python's int(st_mtime): the float truncated toward zero. */
static int64_t python_mtime(const struct pack_inode *inode)
{
	return inode->mtime_sec < 0 && inode->mtime_nsec ? inode->mtime_sec + 1 : inode->mtime_sec;
}

/*
 * The directory the helper compiles into, created only now: after the walk,
 * so that it cannot end up in the archive even when it lies inside a source.
 */
static int make_tmpdir(struct pack_python *py, struct pyfs_err *err)
{
	const char *tmp = getenv("TMPDIR");
	int ret;

	if (!tmp || !*tmp || strlen(tmp) > sizeof(py->tmpdir) - 32)
		tmp = "/tmp";
	snprintf(py->tmpdir, sizeof(py->tmpdir), "%s/pyfs-pack.XXXXXX", tmp);
	if (!mkdtemp(py->tmpdir)) {
		ret = -errno;
		pyfs_err_set(err, "cannot create a temporary directory in '%s': %s", tmp,
			     strerror(errno));
		py->tmpdir[0] = '\0';
		return ret;
	}
	return 0;
}

/*
 * Send the helper one record per candidate that gets byte-code; the helper
 * numbers the records it receives from 0, and sent[number] is the candidate
 * of each (*sent_count of them).
 */
static int send_candidates(struct pack_python *py, struct pack_tree *tree,
			   const struct candidates *c, size_t *sent, size_t *sent_count,
			   struct pyfs_err *err)
{
	struct pack_inode *root = pack_tree_root(tree);
	struct pack_path rel = {0};
	struct pack_inode *last_dir = NULL, *pyc_inode;
	struct bytes b = {0};
	char num[64], name[PYFS_NAME_MAX + 1];
	size_t i, dir_len = 0, name_len;
	int n, ret = 0;

	*sent_count = 0;
	for (i = 0; i < c->count && ret == 0; i++) {
		const struct candidate *item = &c->items[i];

		if (item->dir != last_dir) {
			ret = dir_path(item->dir, root, &rel);
			if (ret < 0)
				break;
			dir_len = rel.len;
			last_dir = item->dir;
		}
		/* No byte-code where no file system could hold its name. */
		name_len = pyc_name(name, sizeof(name), item->name, item->name_len, py->tag);
		if (!name_len)
			continue;
		/* A .pyc an --exclude leaves out is not generated either. */
		ret = pack_path_push(&rel, "__pycache__", 11);
		if (ret == 0)
			ret = pack_path_push(&rel, name, name_len);
		if (ret < 0)
			break;
		if (pack_tree_excluded(tree, rel.buf)) {
			pack_path_truncate(&rel, dir_len);
			continue;
		}
		sent[(*sent_count)++] = i;
		pack_path_truncate(&rel, dir_len);
		ret = pack_path_push(&rel, item->name, item->name_len);
		if (ret < 0)
			break;
		pyc_inode =
		    item->pyc_entry >= 0 ? item->cache_dir->entries[item->pyc_entry].inode : NULL;
		ret = bytes_add_field(&b, item->source->path, strlen(item->source->path));
		if (ret == 0)
			ret = bytes_add_field(&b, rel.buf, rel.len);
		n = snprintf(num, sizeof(num), "%" PRId64, python_mtime(item->source));
		if (ret == 0)
			ret = bytes_add_field(&b, num, (size_t)n);
		n = snprintf(num, sizeof(num), "%" PRIu64, item->source->size);
		if (ret == 0)
			ret = bytes_add_field(&b, num, (size_t)n);
		if (ret == 0 && pyc_inode && S_ISREG(pyc_inode->mode))
			ret = bytes_add_field(&b, pyc_inode->path, strlen(pyc_inode->path));
		else if (ret == 0)
			ret = bytes_add_field(&b, "", 0);
		pack_path_truncate(&rel, dir_len);
	}
	if (ret == -ENOMEM)
		pyfs_err_set(err, "out of memory");
	if (ret == 0 && b.len) {
		ret = make_tmpdir(py, err);
		if (ret == 0)
			ret = write_all(py->to_helper, py->tmpdir, strlen(py->tmpdir) + 1);
		if (ret == 0)
			ret = write_all(py->to_helper, b.data, b.len);
		if (ret < 0)
			pyfs_err_set(err, "cannot send the list of sources to interpreter '%s': %s",
				     py->python, strerror(-ret));
	}
	free(b.data);
	pack_path_free(&rel);
	return ret;
}

/* Put the compiled TMP/NUMBER.pyc (record number of the helper) into the tree for candidate. */
static int add_pyc(struct pack_python *py, struct pack_tree *tree, struct candidates *c,
		   size_t candidate, size_t number, struct pyfs_err *err)
{
	char path[sizeof(py->tmpdir) + 32], name[PYFS_NAME_MAX + 1];
	struct candidate *item = &c->items[candidate];
	struct pack_entry *entry = NULL;
	size_t name_len, i;
	struct stat st;
	int ret;

	snprintf(path, sizeof(path), "%s/%zu.pyc", py->tmpdir, number);
	if (stat(path, &st) < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot read compiled byte-code '%s': %s", path, strerror(errno));
		return ret;
	}
	if (!item->cache_dir) {
		item->cache_dir = pack_tree_add_dir(tree, item->dir, "__pycache__", 11, 0755,
						    item->dir->mtime_sec, item->dir->mtime_nsec);
		if (!item->cache_dir) {
			pyfs_err_set(err, "out of memory");
			return -ENOMEM;
		}
		/* The other sources of this directory follow this one. */
		for (i = candidate + 1; i < c->count && c->items[i].dir == item->dir; i++)
			c->items[i].cache_dir = item->cache_dir;
	}
	if (item->pyc_entry >= 0)
		entry = &item->cache_dir->entries[item->pyc_entry];
	name_len = pyc_name(name, sizeof(name), item->name, item->name_len, py->tag);
	ret = pack_tree_put_file(tree, item->cache_dir, entry, name, name_len, path, 0644,
				 item->source->mtime_sec, item->source->mtime_nsec,
				 (uint64_t)st.st_size);
	if (ret < 0)
		pyfs_err_set(err, "out of memory");
	return ret;
}

int pack_python_compile(struct pack_python *py, struct pack_tree *tree, bool compile,
			uint64_t *added, struct pyfs_err *err)
{
	struct candidates c = {0};
	struct bytes b = {0};
	char *fields[3], *end, how[64];
	uint64_t failed = 0;
	size_t *sent = NULL, sent_count = 0;
	size_t pos = 0, used, number;
	int ret = 0, status;

	*added = 0;
	if (compile && !*py->tag) {
		pyfs_warn("interpreter '%s' does not cache byte-code: not compiling", py->python);
		compile = false;
	}
	if (compile) {
		pack_tree_sort(tree);
		ret = collect(pack_tree_root(tree), py->tag, &c);
		if (ret == 0 && c.count) {
			sent = calloc(c.count, sizeof(*sent));
			ret = sent ? 0 : -ENOMEM;
		}
		if (ret == -ENOMEM)
			pyfs_err_set(err, "out of memory");
		if (ret == 0)
			ret = send_candidates(py, tree, &c, sent, &sent_count, err);
	}
	close(py->to_helper);
	py->to_helper = -1;
	if (ret < 0)
		goto out_free;

	for (;;) {
		/* Results: "ok" NUMBER | "err" NUMBER REASON | "end". */
		used = split_fields(b.data + pos, b.len - pos, fields, 1);
		if (used && strcmp(fields[0], "end") == 0)
			break;
		if (used && strcmp(fields[0], "ok") == 0)
			used = split_fields(b.data + pos, b.len - pos, fields, 2);
		else if (used && strcmp(fields[0], "err") == 0)
			used = split_fields(b.data + pos, b.len - pos, fields, 3);
		else if (used) {
			pyfs_err_set(err, "interpreter '%s' gave an unexpected answer", py->python);
			ret = -EPROTO;
			goto out_free;
		}
		if (!used) {
			if (pos) {
				memmove(b.data, b.data + pos, b.len - pos);
				b.len -= pos;
				pos = 0;
			}
			ret = read_more(py->from_helper, &b, err);
			if (ret < 0)
				goto out_free;
			if (ret == 0) {
				reap(py, how, sizeof(how));
				pyfs_err_set(err, "interpreter '%s' failed while compiling (%s)",
					     py->python, how);
				ret = -EIO;
				goto out_free;
			}
			continue;
		}
		number = strtoul(fields[1], &end, 10);
		if (*end || number >= sent_count) {
			pyfs_err_set(err, "interpreter '%s' gave an unexpected answer", py->python);
			ret = -EPROTO;
			goto out_free;
		}
		if (fields[0][0] == 'o') {
			ret = add_pyc(py, tree, &c, sent[number], number, err);
			if (ret < 0)
				goto out_free;
			(*added)++;
		} else {
			if (!failed)
				pyfs_warn("cannot compile '%s': %s",
					  c.items[sent[number]].source->path, fields[2]);
			else
				pyfs_debug("cannot compile '%s': %s",
					   c.items[sent[number]].source->path, fields[2]);
			failed++;
		}
		pos += used;
	}
	status = reap(py, how, sizeof(how));
	if (status != 0) {
		pyfs_err_set(err, "interpreter '%s' failed (%s)", py->python, how);
		ret = -EIO;
		goto out_free;
	}
	if (failed > 1)
		pyfs_warn("%" PRIu64 " .py files could not be compiled (-v lists them); Python "
			  "will compile them at each import",
			  failed);
	pack_tree_sort(tree);
out_free:
	free(sent);
	free(c.items);
	free(b.data);
	return ret;
}

void pack_python_destroy(struct pack_python *py)
{
	struct dirent *de;
	char how[64];
	DIR *d;

	if (!py)
		return;
	/* A helper still running is stopped before its pipes close under it. */
	if (py->pid > 0)
		kill(py->pid, SIGTERM);
	if (py->to_helper >= 0)
		close(py->to_helper);
	if (py->from_helper >= 0)
		close(py->from_helper);
	if (py->pid > 0)
		reap(py, how, sizeof(how));
	if (py->tmpdir[0]) {
		d = opendir(py->tmpdir);
		if (d) {
			while ((de = readdir(d)))
				if (de->d_name[0] != '.')
					unlinkat(dirfd(d), de->d_name, 0);
			closedir(d);
		}
		rmdir(py->tmpdir);
	}
	free(py->site_dirs);
	free(py->header);
	free(py->python);
	free(py);
}
