/*
 * env.h - whole Python environments as sources (env.c): recognize a prefix
 * (conda, spack, a self-contained installation) or a venv, and find its own
 * interpreter, so that the byte-code added to the archive is the one that
 * environment imports.
 */
#ifndef PACK_ENV_H
#define PACK_ENV_H

#include <limits.h>
#include <stdbool.h>

#include "log.h"

struct pack_env {
	bool venv;	       /* a pyvenv.cfg: its standard library is the base's */
	char path[PATH_MAX];   /* the source as an absolute path (not resolved) */
	char real[PATH_MAX];   /* the source resolved (realpath) */
	char python[PATH_MAX]; /* path/bin/python3.X: the environment's interpreter */
	char version[16];      /* "3.11": from lib/python3.X (and pyvenv.cfg) */
	char home[PATH_MAX];   /* venv: "home" of pyvenv.cfg (the base's bin), or "" */
};

/*
 * Is the directory source a Python environment: a bin/python3.X with its
 * lib/python3.X/os.py, or a pyvenv.cfg with a bin/python3.X or bin/python3?
 * 1 and env filled when it is, 0 when not, a negative errno on error (err set).
 */
int pack_env_detect(const char *source, struct pack_env *env, struct pyfs_err *err);

/*
 * Make path absolute without resolving symlinks ("." and ".." components
 * removed lexically, no trailing '/') into out (PATH_MAX bytes). 0 or
 * -ENAMETOOLONG / a getcwd() errno.
 */
int pack_absolute_path(const char *path, char *out);

/*
 * Remove "." and ".." components of path lexically into out (size bytes),
 * components joined by '/', no leading or trailing '/'. *climbed is set when a
 * ".." went above the start. false when out is too small.
 */
bool pack_lexical_path(const char *path, char *out, size_t size, bool *climbed);

#endif /* PACK_ENV_H */
