/*
 * log.c - the logger declared in log.h, the verbosity of -v/-q, and the
 * clock of the tools' timings.
 */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

enum pyfs_log_level pyfs_log_threshold = PYFS_LOG_WARN;

static char log_prefix[64] = "pyfs";
static int log_to_syslog;

void pyfs_log_set_verbosity(enum pyfs_log_level base, int verbose, bool quiet)
{
	int level = quiet ? (int)base - 1 : (int)base + verbose;

	if (level < PYFS_LOG_ERROR)
		level = PYFS_LOG_ERROR;
	if (level > PYFS_LOG_DEBUG)
		level = PYFS_LOG_DEBUG;
	pyfs_log_threshold = (enum pyfs_log_level)level;
}

void pyfs_log_set_prefix(const char *prefix)
{
	snprintf(log_prefix, sizeof(log_prefix), "%s", prefix);
}

void pyfs_log_use_syslog(void)
{
	openlog(log_prefix, LOG_PID, LOG_DAEMON);
	log_to_syslog = 1;
}

void pyfs_vlog(enum pyfs_log_level level, const char *fmt, va_list ap)
{
	static const int syslog_priority[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	char line[1024];

	if (level > pyfs_log_threshold)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_to_syslog) {
		syslog(syslog_priority[level], "%s", line);
		return;
	}
	/* One fprintf per message keeps lines from different threads whole. */
	fprintf(stderr, "%s: %s%s\n", log_prefix, level == PYFS_LOG_WARN ? "warning: " : "", line);
}

void pyfs_log(enum pyfs_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	pyfs_vlog(level, fmt, ap);
	va_end(ap);
}

void pyfs_err_set(struct pyfs_err *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

double pyfs_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
