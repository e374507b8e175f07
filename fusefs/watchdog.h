/*
 * watchdog.h - a deadline for the MPI part of pyfs-mount.
 *
 * MPI cannot tell a slow peer from a lost one: when a node's link is cut or
 * the shared file system stops answering, the other ranks wait in a
 * collective until TCP gives up, many minutes later. The watchdog bounds
 * that wait: armed after MPI_Init with --timeout seconds, it makes a rank
 * that is still in the pull when the time is up print one line and exit 1.
 * Nothing is mounted before MPI_Finalize, so nothing is left behind.
 */
#ifndef WATCHDOG_H
#define WATCHDOG_H

/*
 * From now on, a rank still running after seconds (0: never) prints
 * "PREFIX: the pull did not finish within S s (--timeout): ..." naming host
 * and exits 1. prefix and host are copied.
 */
void watchdog_arm(unsigned int seconds, const char *prefix, const char *host);

/* The pull is over (MPI is finalized): no deadline any more. */
void watchdog_disarm(void);

#endif /* WATCHDOG_H */
