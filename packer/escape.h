/*
 * escape.h - references that leave the archive (escape.c): absolute or
 * upward symlinks, absolute shebangs, ELF RPATH/RUNPATH and DT_NEEDED paths,
 * .pth lines. Each still reads the original tree (or nothing) once the
 * archive is mounted, unless it points into the path where the archive will
 * be mounted.
 */
#ifndef PACK_ESCAPE_H
#define PACK_ESCAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pack.h"

struct pack_escape_config {
	/* Where the archive root will be mounted (absolute, no trailing '/'): the
	 * references into it are not escapes. Up to two spellings; none: every
	 * absolute reference escapes. */
	const char *mount_paths[2];
	size_t mount_path_count;
	bool pythonpath_use; /* not a whole environment: .pth lines that import warn */
	bool strict;	     /* report each escape as an error */
};

struct pack_escape_stats {
	uint64_t symlinks;
	uint64_t shebangs;
	uint64_t elf; /* RPATH/RUNPATH entries and absolute DT_NEEDED */
	uint64_t pth; /* .pth directory lines */
	uint64_t total;
	uint64_t pth_imports; /* .pth lines that import (not escapes) */
	uint64_t pth_dirs;    /* directories recorded for PYTHONPATH */
};

/*
 * Scan the (sorted) tree. Each escape is printed (with -v, or as an error
 * with strict); the directories that .pth files at the archive root add are
 * recorded in the tree's environment ("pth_dir="). 0 or a negative errno
 * (err set) when a file cannot be read or memory runs out.
 */
int pack_escape_scan(struct pack_tree *tree, const struct pack_escape_config *config,
		     struct pack_escape_stats *stats, struct pyfs_err *err);

#endif /* PACK_ESCAPE_H */
