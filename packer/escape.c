/*
 * escape.c - find the references of the packed tree that leave it.
 *
 * A symlink, a shebang, an ELF search path or a .pth line names a path. When
 * that path is relative and stays inside the tree, or absolute and inside the
 * directory the archive will be mounted on (pyfs-pack --mount-path, by
 * default the source's own path), it is served by the mount. Anything else
 * reads the shared file system (or fails) on the nodes: an escape, counted
 * and listed. ELF files are read with elfutils' libelf. Shebangs naming the
 * node's own /bin/sh, /bin/bash or /usr/bin/env are not escapes.
 */
#include "escape.h"
#include "env.h"

#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <inttypes.h>
#include <libelf.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pyfs_format.h"

#define PTH_MAX_BYTES (1u << 20) /* .pth files read up to this size */

struct scan {
	struct pack_tree *tree;
	const struct pack_escape_config *config;
	struct pack_escape_stats *stats;
	struct pyfs_err *err;
	struct pack_path rel; /* archive path of the file being scanned */
	char *buf;	      /* PTH_MAX_BYTES + 1 */
};

__attribute__((format(printf, 3, 4))) static void escape_report(struct scan *s, uint64_t *count,
								const char *fmt, ...)
{
	char msg[PATH_MAX + 512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	(*count)++;
	s->stats->total++;
	if (s->config->strict)
		pyfs_error("'%s': %s", s->rel.buf, msg);
	else
		pyfs_debug("leaves the archive: '%s': %s", s->rel.buf, msg);
}

/*
 * The archive path (no leading '/') that the absolute path abs names when the
 * archive is mounted, into out; false when it lies outside the mount path.
 */
static bool inside_mount(const struct pack_escape_config *c, const char *abs, char *out,
			 size_t size)
{
	for (size_t i = 0; i < c->mount_path_count; i++) {
		const char *m = c->mount_paths[i];
		size_t len = strlen(m);

		if (len == 1 && m[0] == '/')
			len = 0;
		if (strncmp(abs, m, len) == 0 && (abs[len] == '\0' || abs[len] == '/')) {
			const char *rest = abs + len;

			while (*rest == '/')
				rest++;
			snprintf(out, size, "%s", rest);
			return true;
		}
	}
	return false;
}

/*
 * Join the archive directory dir and the relative path rel lexically into out
 * (no leading '/'); false when ".." climbs above the archive root.
 */
static bool join_inside(const char *dir, const char *rel, char *out, size_t size)
{
	char buf[PATH_MAX * 2];
	bool climbed;

	snprintf(buf, sizeof(buf), "%s%s%s", dir, *dir ? "/" : "", rel);
	return pack_lexical_path(buf, out, size, &climbed) && !climbed;
}

/* Does reference path (from a file in archive directory dir) stay served by the mount? */
static bool stays(const struct scan *s, const char *dir, const char *path, char *out, size_t size)
{
	if (path[0] == '/')
		return inside_mount(s->config, path, out, size);
	return join_inside(dir, path, out, size);
}

/* The archive directory of the file at s->rel, into dir. */
static void parent_of(const struct scan *s, char *dir, size_t size)
{
	const char *slash = strrchr(s->rel.buf, '/');

	snprintf(dir, size, "%.*s", slash ? (int)(slash - s->rel.buf) : 0, s->rel.buf);
}

static void scan_symlink(struct scan *s, const struct pack_inode *inode)
{
	char dir[PATH_MAX], out[PATH_MAX];

	parent_of(s, dir, sizeof(dir));
	if (!stays(s, dir, inode->target, out, sizeof(out)))
		escape_report(s, &s->stats->symlinks, "symlink to '%s'", inode->target);
}

static void scan_shebang(struct scan *s, const char *head, size_t len)
{
	static const char *const system[] = {"/bin/sh", "/bin/bash", "/usr/bin/env", "/usr/bin/sh",
					     "/usr/bin/bash"};
	char interp[PATH_MAX], out[PATH_MAX];
	size_t i = 2, n = 0;

	while (i < len && (head[i] == ' ' || head[i] == '\t'))
		i++;
	while (i < len && n + 1 < sizeof(interp) && !strchr(" \t\r\n", head[i]))
		interp[n++] = head[i++];
	interp[n] = '\0';
	if (interp[0] != '/')
		return; /* not run by the kernel anyway */
	for (size_t k = 0; k < sizeof(system) / sizeof(system[0]); k++) {
		if (strcmp(interp, system[k]) == 0)
			return;
	}
	if (!inside_mount(s->config, interp, out, sizeof(out)))
		escape_report(s, &s->stats->shebangs, "shebang '%s'", interp);
}

/* One DT_RPATH/DT_RUNPATH value: ':'-separated directories, $ORIGIN relative. */
static void scan_search_path(struct scan *s, const char *what, const char *value)
{
	char dir[PATH_MAX], entry[PATH_MAX], out[PATH_MAX];
	const char *p = value, *end;

	parent_of(s, dir, sizeof(dir));
	for (; *p; p = *end ? end + 1 : end) {
		size_t n;
		const char *rest = NULL;

		end = strchr(p, ':');
		if (!end)
			end = p + strlen(p);
		n = (size_t)(end - p);
		if (n == 0 || n >= sizeof(entry))
			continue;
		memcpy(entry, p, n);
		entry[n] = '\0';
		if (strncmp(entry, "$ORIGIN", 7) == 0)
			rest = entry + 7;
		else if (strncmp(entry, "${ORIGIN}", 9) == 0)
			rest = entry + 9;
		if (rest && (*rest == '\0' || *rest == '/')) {
			if (join_inside(dir, rest + (*rest == '/'), out, sizeof(out)))
				continue;
		} else if (entry[0] == '/' && inside_mount(s->config, entry, out, sizeof(out))) {
			continue;
		}
		escape_report(s, &s->stats->elf, "%s '%s'", what, entry);
	}
}

static int scan_elf(struct scan *s, int fd)
{
	Elf_Scn *scn = NULL;
	Elf *elf;

	elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (!elf || elf_kind(elf) != ELF_K_ELF) {
		if (elf)
			elf_end(elf);
		pyfs_debug("'%s': not a readable ELF file (%s)", s->rel.buf, elf_errmsg(-1));
		return 0;
	}
	while ((scn = elf_nextscn(elf, scn))) {
		GElf_Shdr shdr;
		Elf_Data *data;
		size_t count;

		if (!gelf_getshdr(scn, &shdr) || shdr.sh_type != SHT_DYNAMIC || !shdr.sh_entsize)
			continue;
		data = elf_getdata(scn, NULL);
		if (!data)
			continue;
		count = shdr.sh_size / shdr.sh_entsize;
		for (size_t i = 0; i < count; i++) {
			GElf_Dyn dyn;
			const char *str;

			if (!gelf_getdyn(data, (int)i, &dyn) || dyn.d_tag == DT_NULL)
				break;
			if (dyn.d_tag != DT_RPATH && dyn.d_tag != DT_RUNPATH &&
			    dyn.d_tag != DT_NEEDED)
				continue;
			str = elf_strptr(elf, shdr.sh_link, dyn.d_un.d_val);
			if (!str)
				continue;
			if (dyn.d_tag == DT_NEEDED) {
				char out[PATH_MAX];

				if (str[0] == '/' &&
				    !inside_mount(s->config, str, out, sizeof(out)))
					escape_report(s, &s->stats->elf, "DT_NEEDED '%s'", str);
			} else {
				scan_search_path(s, dyn.d_tag == DT_RPATH ? "RPATH" : "RUNPATH",
						 str);
			}
		}
	}
	elf_end(elf);
	return 0;
}

/* Record dir (archive path) for PYTHONPATH when it is a directory of the archive. */
static int record_pth_dir(struct scan *s, const char *dir)
{
	struct pack_inode *node = pack_tree_root(s->tree);
	size_t count;
	const char *const *items = pack_tree_environment(s->tree, &count);
	char want[PATH_MAX + 16];
	const char *p = dir, *end;

	for (; *p; p = *end ? end + 1 : end) {
		struct pack_entry *e;

		end = strchr(p, '/');
		if (!end)
			end = p + strlen(p);
		e = pack_tree_lookup(node, p, (size_t)(end - p));
		if (!e || !S_ISDIR(e->inode->mode))
			return 0; /* site.py skips directories that do not exist */
		node = e->inode;
	}
	snprintf(want, sizeof(want), PYFS_ENV_PTH_DIR "=%s", dir);
	for (size_t i = 0; i < count; i++) {
		if (strcmp(items[i], want) == 0)
			return 0;
	}
	s->stats->pth_dirs++;
	pyfs_debug("'%s' adds '%s': recorded for PYTHONPATH", s->rel.buf, *dir ? dir : ".");
	return pack_tree_add_environment(s->tree, PYFS_ENV_PTH_DIR, dir);
}

static int scan_pth(struct scan *s, int fd)
{
	char dir[PATH_MAX], out[PATH_MAX];
	bool at_root = strchr(s->rel.buf, '/') == NULL;
	ssize_t n;
	size_t len = 0;
	int line_no = 0, ret;
	char *line, *next;

	while (len < PTH_MAX_BYTES && (n = read(fd, s->buf + len, PTH_MAX_BYTES - len)) > 0)
		len += (size_t)n;
	s->buf[len] = '\0';
	parent_of(s, dir, sizeof(dir));
	for (line = s->buf; line && *line; line = next) {
		size_t l;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		line_no++;
		l = strlen(line);
		while (l && strchr(" \t\r", line[l - 1]))
			line[--l] = '\0';
		if (!l || line[0] == '#')
			continue;
		if (strncmp(line, "import ", 7) == 0 || strncmp(line, "import\t", 7) == 0) {
			s->stats->pth_imports++;
			if (s->config->pythonpath_use && at_root)
				pyfs_warn("'%s' line %d runs code ('%.60s'), which does not happen "
					  "when the archive is used through PYTHONPATH",
					  s->rel.buf, line_no, line);
			continue;
		}
		if (!stays(s, dir, line, out, sizeof(out))) {
			escape_report(s, &s->stats->pth, ".pth line %d '%s'", line_no, line);
			continue;
		}
		if (at_root) {
			ret = record_pth_dir(s, out);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

static bool name_has(const struct pack_entry *e, const char *part, bool suffix)
{
	size_t n = strlen(part);

	if (e->name_len < n)
		return false;
	if (suffix)
		return memcmp(e->name + e->name_len - n, part, n) == 0;
	return memmem(e->name, e->name_len, part, n) != NULL;
}

static int scan_file(struct scan *s, const struct pack_entry *e)
{
	const struct pack_inode *inode = e->inode;
	bool pth = name_has(e, ".pth", true), exec = inode->mode & 0111;
	char head[512];
	ssize_t n;
	int fd, ret = 0;

	if (inode->source < 0 || !(pth || exec || name_has(e, ".so", false)))
		return 0;
	fd = pack_open_path(inode->path, O_RDONLY | O_NOFOLLOW);
	if (fd < 0) {
		pyfs_err_set(s->err, "cannot read '%s': %s", inode->path, strerror(-fd));
		return fd;
	}
	if (pth) {
		ret = scan_pth(s, fd);
		goto out;
	}
	n = pread(fd, head, sizeof(head), 0);
	if (n >= 2 && exec && head[0] == '#' && head[1] == '!')
		scan_shebang(s, head, (size_t)n);
	else if (n >= 4 && memcmp(head, ELFMAG, SELFMAG) == 0)
		ret = scan_elf(s, fd);
out:
	close(fd);
	return ret;
}

static int scan_dir(struct scan *s, const struct pack_inode *dir)
{
	size_t len = s->rel.len;
	int ret = 0;

	for (uint32_t i = 0; i < dir->entry_count && ret == 0; i++) {
		const struct pack_entry *e = &dir->entries[i];

		if (pack_interrupted) {
			pyfs_err_set(s->err, "interrupted");
			return -EINTR;
		}
		if (pack_path_push(&s->rel, e->name, e->name_len) < 0) {
			pyfs_err_set(s->err, "out of memory");
			return -ENOMEM;
		}
		if (S_ISDIR(e->inode->mode))
			ret = scan_dir(s, e->inode);
		else if (S_ISLNK(e->inode->mode))
			scan_symlink(s, e->inode);
		else if (S_ISREG(e->inode->mode))
			ret = scan_file(s, e);
		pack_path_truncate(&s->rel, len);
	}
	return ret;
}

int pack_escape_scan(struct pack_tree *tree, const struct pack_escape_config *config,
		     struct pack_escape_stats *stats, struct pyfs_err *err)
{
	struct scan s = {tree, config, stats, err, {0}, NULL};
	int ret;

	memset(stats, 0, sizeof(*stats));
	if (elf_version(EV_CURRENT) == EV_NONE) {
		pyfs_err_set(err, "cannot initialize libelf: %s", elf_errmsg(-1));
		return -EIO;
	}
	s.buf = malloc(PTH_MAX_BYTES + 1);
	if (!s.buf || pack_path_set(&s.rel, "", 0) < 0) {
		free(s.buf);
		pyfs_err_set(err, "out of memory");
		return -ENOMEM;
	}
	pack_tree_sort(tree);
	ret = scan_dir(&s, pack_tree_root(tree));
	if (ret == -ENOMEM && !err->msg[0])
		pyfs_err_set(err, "out of memory");
	pack_path_free(&s.rel);
	free(s.buf);
	return ret;
}
