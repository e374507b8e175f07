/*
 * log.h - the one logger of pyfs: levels, printf checking, one line per message.
 *
 * Messages go to stderr as "PROGRAM: message" (warnings as "PROGRAM: warning:
 * message"), or to syslog once a daemon has detached. Library code does not
 * print errors it returns: it describes them in a struct pyfs_err and lets the
 * caller decide; the logger is for tools and for the daemon.
 */
#ifndef PYFS_LOG_H
#define PYFS_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum pyfs_log_level {
	PYFS_LOG_ERROR = 0,
	PYFS_LOG_WARN = 1,
	PYFS_LOG_INFO = 2,
	PYFS_LOG_DEBUG = 3,
};

/* Messages above this level are dropped; tests are cheap (see pyfs_debug). */
extern enum pyfs_log_level pyfs_log_threshold;

/*
 * The threshold of a tool's -v and -q: base by default, one level more per
 * -v (debug at most), one less with quiet, which wins over -v.
 */
void pyfs_log_set_verbosity(enum pyfs_log_level base, int verbose, bool quiet);

/* Name printed before every message, e.g. "pyfs-mount" or "pyfs-mount[rank 3]". */
void pyfs_log_set_prefix(const char *prefix);

/* From now on send messages to syslog (daemon mode) instead of stderr. */
void pyfs_log_use_syslog(void);

void pyfs_log(enum pyfs_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void pyfs_vlog(enum pyfs_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define pyfs_error(...) pyfs_log(PYFS_LOG_ERROR, __VA_ARGS__)
#define pyfs_warn(...)	pyfs_log(PYFS_LOG_WARN, __VA_ARGS__)
#define pyfs_info(...)                                                                             \
	do {                                                                                       \
		if (pyfs_log_threshold >= PYFS_LOG_INFO)                                           \
			pyfs_log(PYFS_LOG_INFO, __VA_ARGS__);                                      \
	} while (0)
#define pyfs_debug(...)                                                                            \
	do {                                                                                       \
		if (pyfs_log_threshold >= PYFS_LOG_DEBUG)                                          \
			pyfs_log(PYFS_LOG_DEBUG, __VA_ARGS__);                                     \
	} while (0)

/* Monotonic seconds, for the timings the tools report. */
double pyfs_now(void);

/*
 * A one-line description of what went wrong, filled by library functions that
 * return a negative errno. The caller prints it (or not). May be NULL.
 */
struct pyfs_err {
	char msg[512];
};

void pyfs_err_set(struct pyfs_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* PYFS_LOG_H */
