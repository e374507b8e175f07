/*
 * watchdog.c - the deadline of the pull (see watchdog.h): SIGALRM, with a
 * message formatted in advance so that the handler only writes and exits.
 */
#include "watchdog.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char watchdog_message[512];
static size_t watchdog_message_len;

static void watchdog_fire(int sig)
{
	ssize_t unused;

	(void)sig;
	unused = write(STDERR_FILENO, watchdog_message, watchdog_message_len);
	(void)unused;
	_exit(1);
}

void watchdog_arm(unsigned int seconds, const char *prefix, const char *host)
{
	struct sigaction sa;
	int n;

	if (seconds == 0)
		return;
	n = snprintf(watchdog_message, sizeof(watchdog_message),
		     "%s: the pull did not finish within %u s (--timeout) on host '%s': a node, "
		     "the network or the shared file system stopped answering\n",
		     prefix, seconds, host);
	watchdog_message_len =
	    n < 0
		? 0
		: ((size_t)n < sizeof(watchdog_message) ? (size_t)n : sizeof(watchdog_message) - 1);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = watchdog_fire;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	alarm(seconds);
}

void watchdog_disarm(void)
{
	alarm(0);
	signal(SIGALRM, SIG_DFL);
}
