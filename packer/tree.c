/*
 * tree.c - pass 1 of pyfs-pack: walk the sources into one in-memory tree.
 *
 * Every source is walked with openat()/fstatat() relative to its directory
 * descriptors, so names are raw bytes and paths may be longer than PATH_MAX.
 * Directories of several sources merge; any other clash keeps the entry of
 * the earlier source and is reported. Regular files that share (st_dev,
 * st_ino) become one inode with several names. Everything lives in an arena
 * freed at once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pack.h"
#include "pyfs_format.h"

#define ARENA_BLOCK (1u << 20)

struct arena_block {
	struct arena_block *next;
	size_t used;
	size_t size;
	_Alignas(16) unsigned char data[];
};

struct link_slot {
	dev_t dev;
	ino_t ino;
	struct pack_inode *inode;
};

struct pack_tree {
	struct arena_block *blocks;
	struct pack_inode *root;
	bool root_from_source;
	struct pack_tree_stats stats;
	char *const *excludes;
	int exclude_count;

	struct link_slot *links; /* open addressing, power-of-two capacity */
	size_t link_cap;
	size_t link_count;

	const char **sources; /* by index, for conflict messages */
	char **source_reals;  /* by index, canonical paths (NULL: not a directory) */
	int source_cap;
	bool dereference; /* -L: pack what symlinks leaving the sources point to */
	bool follow;	  /* the next add_entry() opens a directory through a symlink */
	uint64_t dereferenced;

	const char **environment; /* "KEY=VALUE" for the archive's environment attribute */
	size_t environment_count;
	size_t environment_cap;

	struct pack_path rel; /* archive path of the entry being walked */
	struct pack_path abs; /* its path on disk */
	unsigned int depth;   /* walk_dir() calls under way: the level of a directory found */

	char link_target[PYFS_SYMLINK_MAX + 2]; /* here, not on the stack of every level */
};

static void *arena_alloc(struct pack_tree *tree, size_t size)
{
	struct arena_block *block = tree->blocks;
	size_t want = (size + 15) & ~(size_t)15;
	size_t block_size;

	if (!block || block->size - block->used < want) {
		block_size = want > ARENA_BLOCK / 4 ? want : ARENA_BLOCK;
		block = malloc(sizeof(*block) + block_size);
		if (!block)
			return NULL;
		block->used = 0;
		block->size = block_size;
		if (want > ARENA_BLOCK / 4 && tree->blocks) {
			/* A big one-off: keep filling the current small block. */
			block->next = tree->blocks->next;
			tree->blocks->next = block;
		} else {
			block->next = tree->blocks;
			tree->blocks = block;
		}
	}
	block->used += want;
	return block->data + block->used - want;
}

static void *arena_copy(struct pack_tree *tree, const void *src, size_t len)
{
	char *dst = arena_alloc(tree, len + 1);

	if (dst) {
		memcpy(dst, src, len);
		dst[len] = '\0';
	}
	return dst;
}

int pack_name_compare(const void *a, size_t a_len, const void *b, size_t b_len)
{
	int c = memcmp(a, b, a_len < b_len ? a_len : b_len);

	if (c)
		return c;
	return a_len < b_len ? -1 : a_len > b_len;
}

static int entry_compare(const void *a, const void *b)
{
	const struct pack_entry *x = a, *y = b;

	return pack_name_compare(x->name, x->name_len, y->name, y->name_len);
}

static struct pack_inode *inode_new(struct pack_tree *tree, uint32_t mode, int64_t mtime_sec,
				    uint32_t mtime_nsec, int source)
{
	struct pack_inode *inode = arena_alloc(tree, sizeof(*inode));

	if (!inode)
		return NULL;
	memset(inode, 0, sizeof(*inode));
	inode->mode = mode;
	inode->mtime_sec = mtime_sec;
	inode->mtime_nsec = mtime_nsec;
	inode->source = source;
	return inode;
}

/* Append name -> inode to dir (dirty until sorted). */
static struct pack_entry *entry_append(struct pack_tree *tree, struct pack_inode *dir,
				       const void *name, size_t len, struct pack_inode *inode)
{
	struct pack_entry *entries, *entry;
	uint32_t cap;

	if (dir->entry_count == dir->entry_cap) {
		if (dir->entry_cap >= PYFS_DIRENTS_MAX / 2)
			return NULL;
		cap = dir->entry_cap ? dir->entry_cap * 2 : 8;
		entries = arena_alloc(tree, (size_t)cap * sizeof(*entries));
		if (!entries)
			return NULL;
		if (dir->entry_count)
			memcpy(entries, dir->entries, dir->entry_count * sizeof(*entries));
		dir->entries = entries;
		dir->entry_cap = cap;
	}
	entry = &dir->entries[dir->entry_count];
	entry->name = arena_copy(tree, name, len);
	if (!entry->name)
		return NULL;
	entry->name_len = (uint32_t)len;
	entry->inode = inode;
	dir->entry_count++;
	dir->dirty = true;
	return entry;
}

static struct pack_entry *lookup_range(struct pack_inode *dir, uint32_t count, const void *name,
				       size_t len)
{
	uint32_t lo = 0, hi = count, mid;
	int c;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = pack_name_compare(name, len, dir->entries[mid].name,
				      dir->entries[mid].name_len);
		if (c == 0)
			return &dir->entries[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

struct pack_entry *pack_tree_lookup(struct pack_inode *dir, const void *name, size_t len)
{
	if (!S_ISDIR(dir->mode) || dir->dirty)
		return NULL;
	return lookup_range(dir, dir->entry_count, name, len);
}

static void sort_dir(struct pack_inode *dir)
{
	if (dir->dirty && dir->entry_count > 1)
		qsort(dir->entries, dir->entry_count, sizeof(*dir->entries), entry_compare);
	dir->dirty = false;
}

static void sort_all(struct pack_inode *dir)
{
	uint32_t i;

	sort_dir(dir);
	for (i = 0; i < dir->entry_count; i++) {
		if (S_ISDIR(dir->entries[i].inode->mode))
			sort_all(dir->entries[i].inode);
	}
}

void pack_tree_sort(struct pack_tree *tree)
{
	sort_all(tree->root);
}

struct pack_inode *pack_tree_add_dir(struct pack_tree *tree, struct pack_inode *dir,
				     const void *name, size_t len, uint32_t mode, int64_t mtime_sec,
				     uint32_t mtime_nsec)
{
	struct pack_inode *inode =
	    inode_new(tree, S_IFDIR | (mode & PYFS_MODE_PERM_MASK), mtime_sec, mtime_nsec, -1);

	if (!inode || !entry_append(tree, dir, name, len, inode))
		return NULL;
	inode->parent = dir;
	tree->stats.dirs++;
	return inode;
}

int pack_tree_put_file(struct pack_tree *tree, struct pack_inode *dir, struct pack_entry *entry,
		       const void *name, size_t len, const char *path, uint32_t mode,
		       int64_t mtime_sec, uint32_t mtime_nsec, uint64_t size)
{
	struct pack_inode *inode =
	    inode_new(tree, S_IFREG | (mode & PYFS_MODE_PERM_MASK), mtime_sec, mtime_nsec, -1);

	if (!inode)
		return -ENOMEM;
	inode->size = size;
	inode->path = arena_copy(tree, path, strlen(path));
	if (!inode->path)
		return -ENOMEM;
	tree->stats.files++;
	tree->stats.file_bytes += size;
	if (entry) {
		entry->inode = inode;
		return 0;
	}
	return entry_append(tree, dir, name, len, inode) ? 0 : -ENOMEM;
}

int pack_tree_create(struct pack_tree **out, char *const *excludes, int exclude_count)
{
	struct pack_tree *tree = calloc(1, sizeof(*tree));

	*out = NULL;
	if (!tree)
		return -ENOMEM;
	tree->excludes = excludes;
	tree->exclude_count = exclude_count;
	tree->root = inode_new(tree, S_IFDIR | 0755, 0, 0, -1);
	if (!tree->root) {
		pack_tree_destroy(tree);
		return -ENOMEM;
	}
	tree->root->parent = tree->root;
	*out = tree;
	return 0;
}

void pack_tree_destroy(struct pack_tree *tree)
{
	struct arena_block *block, *next;

	if (!tree)
		return;
	for (block = tree->blocks; block; block = next) {
		next = block->next;
		free(block);
	}
	free(tree->links);
	for (int i = 0; i < tree->source_cap && tree->source_reals; i++)
		free(tree->source_reals[i]);
	free(tree->source_reals);
	free(tree->environment);
	free(tree->sources);
	pack_path_free(&tree->rel);
	pack_path_free(&tree->abs);
	free(tree);
}

struct pack_inode *pack_tree_root(struct pack_tree *tree)
{
	return tree->root;
}

const struct pack_tree_stats *pack_tree_stats(const struct pack_tree *tree)
{
	return &tree->stats;
}

bool pack_tree_excluded(const struct pack_tree *tree, const char *rel)
{
	const char *base = strrchr(rel, '/');
	const char *pattern;
	int i;

	base = base ? base + 1 : rel;
	for (i = 0; i < tree->exclude_count; i++) {
		pattern = tree->excludes[i];
		if (strchr(pattern, '/')) {
			while (*pattern == '/')
				pattern++;
			if (fnmatch(pattern, rel, 0) == 0)
				return true;
		} else if (fnmatch(pattern, base, 0) == 0) {
			return true;
		}
	}
	return false;
}

static size_t link_hash(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)dev;

	return (size_t)(h ^ (h >> 29));
}

/* The inode already seen as (dev, ino), or NULL. */
static struct pack_inode *link_find(struct pack_tree *tree, dev_t dev, ino_t ino)
{
	size_t i;

	if (!tree->link_cap)
		return NULL;
	for (i = link_hash(dev, ino) & (tree->link_cap - 1); tree->links[i].inode;
	     i = (i + 1) & (tree->link_cap - 1)) {
		if (tree->links[i].dev == dev && tree->links[i].ino == ino)
			return tree->links[i].inode;
	}
	return NULL;
}

static int link_insert(struct pack_tree *tree, struct pack_inode *inode)
{
	struct link_slot *old = tree->links, *slots;
	size_t old_cap = tree->link_cap, cap, i, j;

	if (2 * (tree->link_count + 1) > old_cap) {
		cap = old_cap ? old_cap * 2 : 256;
		slots = calloc(cap, sizeof(*slots));
		if (!slots)
			return -ENOMEM;
		for (i = 0; i < old_cap; i++) {
			if (!old[i].inode)
				continue;
			for (j = link_hash(old[i].dev, old[i].ino) & (cap - 1); slots[j].inode;
			     j = (j + 1) & (cap - 1))
				;
			slots[j] = old[i];
		}
		free(old);
		tree->links = slots;
		tree->link_cap = cap;
	}
	for (i = link_hash(inode->dev, inode->ino) & (tree->link_cap - 1); tree->links[i].inode;
	     i = (i + 1) & (tree->link_cap - 1))
		;
	tree->links[i].dev = inode->dev;
	tree->links[i].ino = inode->ino;
	tree->links[i].inode = inode;
	tree->link_count++;
	return 0;
}

static int walk_dir(struct pack_tree *tree, struct pack_inode *dir, int fd, int source,
		    struct pyfs_err *err);

static void time_of(const struct timespec *ts, int64_t *sec, uint32_t *nsec)
{
	*sec = ts->tv_sec;
	*nsec = (uint32_t)ts->tv_nsec;
}

/*
 * Add the entry the walk is at (tree->rel, tree->abs; stat st, reachable as
 * at_name in at_fd) to dir. base is how many entries of dir came from earlier
 * sources (sorted, searched for conflicts).
 */
static int add_entry(struct pack_tree *tree, struct pack_inode *dir, uint32_t base, int at_fd,
		     const char *at_name, const char *name, size_t len, const struct stat *st,
		     int source, struct pyfs_err *err);

/* Is the canonical path real inside one of the sources (or one of them)? */
static bool inside_sources(const struct pack_tree *tree, const char *real)
{
	for (int i = 0; i < tree->source_cap; i++) {
		const char *root = tree->source_reals[i];
		size_t len = root ? strlen(root) : 0;

		if (!root)
			continue;
		if (len == 1 && root[0] == '/')
			return true;
		if (strncmp(real, root, len) == 0 && (real[len] == '\0' || real[len] == '/'))
			return true;
	}
	return false;
}

/* Is the directory (dev, ino) dir or one of its ancestors (a symlink loop)? */
static bool is_ancestor(const struct pack_inode *dir, dev_t dev, ino_t ino)
{
	for (;;) {
		if (dir->dev == dev && dir->ino == ino)
			return true;
		if (dir->parent == dir)
			return false;
		dir = dir->parent;
	}
}

/*
 * -L: the symlink the walk is at leaves the sources; add what it points to
 * instead (a dangling link, or one to a special file, stays a symlink: 1).
 */
static int add_dereferenced(struct pack_tree *tree, struct pack_inode *dir, uint32_t base,
			    int at_fd, const char *at_name, const char *name, size_t len,
			    int source, struct pyfs_err *err)
{
	char *real = realpath(tree->abs.buf, NULL);
	struct stat st;
	int ret = 1;

	if (!real)
		return 1;
	if (inside_sources(tree, real) || fstatat(at_fd, at_name, &st, 0) < 0 ||
	    !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)))
		goto out;
	if (S_ISDIR(st.st_mode) && is_ancestor(dir, st.st_dev, st.st_ino)) {
		pyfs_err_set(err, "symlink '%s' leads back to a directory above it (a loop)",
			     tree->abs.buf);
		ret = -ELOOP;
		goto out;
	}
	pyfs_debug("dereferencing '%s' -> '%s'", tree->abs.buf, real);
	tree->dereferenced++;
	if (S_ISREG(st.st_mode)) {
		/* Read through the canonical path: the copy opens files without following. */
		char *saved = strdup(tree->abs.buf);

		ret = saved ? pack_path_set(&tree->abs, real, strlen(real)) : -ENOMEM;
		if (ret == 0)
			ret =
			    add_entry(tree, dir, base, at_fd, at_name, name, len, &st, source, err);
		if (saved && pack_path_set(&tree->abs, saved, strlen(saved)) < 0)
			ret = -ENOMEM;
		free(saved);
	} else {
		tree->follow = true;
		ret = add_entry(tree, dir, base, at_fd, at_name, name, len, &st, source, err);
	}
out:
	free(real);
	return ret;
}

static int add_entry(struct pack_tree *tree, struct pack_inode *dir, uint32_t base, int at_fd,
		     const char *at_name, const char *name, size_t len, const struct stat *st,
		     int source, struct pyfs_err *err)
{
	bool follow = tree->follow;

	tree->follow = false; /* for this entry only, not for what it holds */

	struct pack_entry *existing = lookup_range(dir, base, name, len);
	struct pack_inode *inode;
	uint32_t perm = st->st_mode & PYFS_MODE_PERM_MASK;
	ssize_t n;
	int fd, ret;

	if (existing && !(S_ISDIR(st->st_mode) && S_ISDIR(existing->inode->mode))) {
		tree->stats.conflicts++;
		pyfs_warn("'%s' of source '%s' conflicts with the one of source '%s': keeping the "
			  "first",
			  tree->rel.buf, tree->sources[source],
			  existing->inode->source >= 0 ? tree->sources[existing->inode->source]
						       : "(generated)");
		return 0;
	}
	if (len > PYFS_NAME_MAX) {
		pyfs_err_set(err, "name too long: '%s'", tree->abs.buf);
		return -ENAMETOOLONG;
	}

	switch (st->st_mode & S_IFMT) {
	case S_IFDIR:
		/* One level is left for the __pycache__ of the deepest sources. */
		if (tree->depth >= PACK_DEPTH_MAX) {
			pyfs_err_set(err,
				     "directory nested deeper than the %d levels pyfs-pack packs: "
				     "'%s'",
				     PACK_DEPTH_MAX - 1, tree->abs.buf);
			return -ELOOP;
		}
		fd = openat(at_fd, at_name,
			    O_RDONLY | O_DIRECTORY | (follow ? 0 : O_NOFOLLOW) | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			pyfs_err_set(err, "cannot open directory '%s': %s", tree->abs.buf,
				     strerror(errno));
			return ret;
		}
		if (existing) {
			inode = existing->inode;
		} else {
			inode = pack_tree_add_dir(tree, dir, name, len, perm, st->st_mtim.tv_sec,
						  (uint32_t)st->st_mtim.tv_nsec);
			if (!inode) {
				close(fd);
				return -ENOMEM;
			}
			inode->source = source;
		}
		inode->dev = st->st_dev;
		inode->ino = st->st_ino;
		return walk_dir(tree, inode, fd, source, err);

	case S_IFREG:
		inode = st->st_nlink > 1 ? link_find(tree, st->st_dev, st->st_ino) : NULL;
		if (inode) {
			tree->stats.hard_links++;
			return entry_append(tree, dir, name, len, inode) ? 0 : -ENOMEM;
		}
		inode = inode_new(tree, S_IFREG | perm, 0, 0, source);
		if (!inode)
			return -ENOMEM;
		time_of(&st->st_mtim, &inode->mtime_sec, &inode->mtime_nsec);
		time_of(&st->st_ctim, &inode->ctime_sec, &inode->ctime_nsec);
		inode->size = (uint64_t)st->st_size;
		inode->dev = st->st_dev;
		inode->ino = st->st_ino;
		inode->path = arena_copy(tree, tree->abs.buf, tree->abs.len);
		if (!inode->path)
			return -ENOMEM;
		if (st->st_nlink > 1 && link_insert(tree, inode) < 0)
			return -ENOMEM;
		tree->stats.files++;
		tree->stats.file_bytes += inode->size;
		return entry_append(tree, dir, name, len, inode) ? 0 : -ENOMEM;

	case S_IFLNK:
		if (tree->dereference) {
			ret = add_dereferenced(tree, dir, base, at_fd, at_name, name, len, source,
					       err);
			if (ret <= 0)
				return ret;
		}
		n = readlinkat(at_fd, at_name, tree->link_target, sizeof(tree->link_target));
		if (n < 0) {
			ret = -errno;
			pyfs_err_set(err, "cannot read symlink '%s': %s", tree->abs.buf,
				     strerror(errno));
			return ret;
		}
		if (n == 0 || (size_t)n > PYFS_SYMLINK_MAX) {
			pyfs_err_set(err, "symlink target too long: '%s'", tree->abs.buf);
			return -ENAMETOOLONG;
		}
		inode = inode_new(tree, S_IFLNK | 0777, 0, 0, source);
		if (!inode)
			return -ENOMEM;
		time_of(&st->st_mtim, &inode->mtime_sec, &inode->mtime_nsec);
		inode->size = (uint64_t)n;
		inode->target = arena_copy(tree, tree->link_target, (size_t)n);
		if (!inode->target)
			return -ENOMEM;
		tree->stats.symlinks++;
		return entry_append(tree, dir, name, len, inode) ? 0 : -ENOMEM;

	default:
		tree->stats.skipped++;
		pyfs_warn("skipping '%s': %s", tree->abs.buf,
			  S_ISSOCK(st->st_mode)	  ? "a socket"
			  : S_ISFIFO(st->st_mode) ? "a FIFO"
						  : "a device");
		return 0;
	}
}

/* Walk the directory open as fd (closed here) into dir. */
static int walk_dir(struct pack_tree *tree, struct pack_inode *dir, int fd, int source,
		    struct pyfs_err *err)
{
	size_t rel_len = tree->rel.len, abs_len = tree->abs.len, len;
	uint32_t base = dir->entry_count;
	struct dirent *de;
	struct stat st;
	DIR *d;
	int ret = 0;

	d = fdopendir(fd);
	if (!d) {
		ret = -errno;
		pyfs_err_set(err, "cannot read directory '%s': %s", tree->abs.buf, strerror(errno));
		close(fd);
		return ret;
	}
	tree->depth++;
	sort_dir(dir);
	for (;;) {
		if (pack_interrupted) {
			pyfs_err_set(err, "interrupted");
			ret = -EINTR;
			break;
		}
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno) {
				ret = -errno;
				pyfs_err_set(err, "cannot read directory '%s': %s", tree->abs.buf,
					     strerror(errno));
			}
			break;
		}
		if (de->d_name[0] == '.' &&
		    (de->d_name[1] == '\0' || (de->d_name[1] == '.' && de->d_name[2] == '\0')))
			continue;
		len = strlen(de->d_name);
		if (pack_path_push(&tree->rel, de->d_name, len) < 0 ||
		    pack_path_push(&tree->abs, de->d_name, len) < 0) {
			ret = -ENOMEM;
			break;
		}
		if (pack_tree_excluded(tree, tree->rel.buf)) {
			tree->stats.excluded++;
			pyfs_debug("excluding '%s'", tree->abs.buf);
		} else if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			ret = -errno;
			pyfs_err_set(err, "cannot stat '%s': %s", tree->abs.buf, strerror(errno));
		} else {
			ret = add_entry(tree, dir, base, dirfd(d), de->d_name, de->d_name, len, &st,
					source, err);
		}
		pack_path_truncate(&tree->rel, rel_len);
		pack_path_truncate(&tree->abs, abs_len);
		if (ret < 0)
			break;
	}
	closedir(d);
	tree->depth--;
	if (ret == -ENOMEM)
		pyfs_err_set(err, "out of memory while reading '%s'", tree->abs.buf);
	sort_dir(dir);
	return ret;
}

static int remember_source(struct pack_tree *tree, const char *source, int index)
{
	const char **sources;
	char **reals;
	int cap;

	if (index >= tree->source_cap) {
		cap = index + 8;
		sources = realloc(tree->sources, (size_t)cap * sizeof(*sources));
		if (!sources)
			return -ENOMEM;
		tree->sources = sources;
		reals = realloc(tree->source_reals, (size_t)cap * sizeof(*reals));
		if (!reals)
			return -ENOMEM;
		for (int i = tree->source_cap; i < cap; i++)
			reals[i] = NULL;
		tree->source_reals = reals;
		tree->source_cap = cap;
	}
	tree->sources[index] = source;
	free(tree->source_reals[index]);
	tree->source_reals[index] = realpath(source, NULL); /* NULL: checked by the caller */
	return 0;
}

void pack_tree_set_dereference(struct pack_tree *tree, bool dereference)
{
	tree->dereference = dereference;
}

uint64_t pack_tree_dereferenced(const struct pack_tree *tree)
{
	return tree->dereferenced;
}

int pack_tree_add_environment(struct pack_tree *tree, const char *key, const char *value)
{
	size_t klen = strlen(key), vlen = strlen(value);
	const char **items;
	char *item;

	if (tree->environment_count == tree->environment_cap) {
		size_t cap = tree->environment_cap ? tree->environment_cap * 2 : 8;

		items = realloc(tree->environment, cap * sizeof(*items));
		if (!items)
			return -ENOMEM;
		tree->environment = items;
		tree->environment_cap = cap;
	}
	item = arena_alloc(tree, klen + vlen + 2);
	if (!item)
		return -ENOMEM;
	memcpy(item, key, klen);
	item[klen] = '=';
	memcpy(item + klen + 1, value, vlen + 1);
	tree->environment[tree->environment_count++] = item;
	return 0;
}

const char *const *pack_tree_environment(const struct pack_tree *tree, size_t *count)
{
	*count = tree->environment_count;
	return tree->environment;
}

int pack_tree_add_source(struct pack_tree *tree, const char *source, int source_index,
			 struct pyfs_err *err)
{
	const char *name;
	size_t len, end;
	struct stat st;
	int fd, ret;

	if (remember_source(tree, source, source_index) < 0)
		goto out_nomem;
	if (stat(source, &st) < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot read source '%s': %s", source, strerror(errno));
		return ret;
	}
	if (S_ISDIR(st.st_mode)) {
		fd = open(source, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			pyfs_err_set(err, "cannot read source '%s': %s", source, strerror(errno));
			return ret;
		}
		if (!tree->root_from_source) {
			tree->root_from_source = true;
			tree->root->mode = S_IFDIR | (st.st_mode & PYFS_MODE_PERM_MASK);
			time_of(&st.st_mtim, &tree->root->mtime_sec, &tree->root->mtime_nsec);
			tree->root->source = source_index;
			tree->root->dev = st.st_dev;
			tree->root->ino = st.st_ino;
		}
		if (pack_path_set(&tree->rel, "", 0) < 0 ||
		    pack_path_set(&tree->abs, source, strlen(source)) < 0) {
			close(fd);
			goto out_nomem;
		}
		return walk_dir(tree, tree->root, fd, source_index, err);
	}

	/* Any other file goes to the root under its last name. */
	if (lstat(source, &st) < 0) {
		ret = -errno;
		pyfs_err_set(err, "cannot read source '%s': %s", source, strerror(errno));
		return ret;
	}
	end = strlen(source);
	while (end > 1 && source[end - 1] == '/')
		end--;
	for (name = source + end; name > source && name[-1] != '/'; name--)
		;
	len = (size_t)(source + end - name);
	if (pack_path_set(&tree->rel, name, len) < 0 ||
	    pack_path_set(&tree->abs, source, strlen(source)) < 0)
		goto out_nomem;
	if (pack_tree_excluded(tree, tree->rel.buf)) {
		tree->stats.excluded++;
		return 0;
	}
	sort_dir(tree->root);
	ret = add_entry(tree, tree->root, tree->root->entry_count, AT_FDCWD, source, tree->rel.buf,
			len, &st, source_index, err);
	sort_dir(tree->root);
	return ret;

out_nomem:
	pyfs_err_set(err, "out of memory");
	return -ENOMEM;
}
