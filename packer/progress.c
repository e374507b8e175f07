/*
 * progress.c - the progress line of pyfs-pack: files, bytes, rate and ETA,
 * redrawn in place on a terminal at most five times a second; nothing at all
 * when disabled (stderr is not a terminal, or --quiet).
 */
#include <inttypes.h>
#include <stdio.h>

#include "pack.h"

#define PROGRESS_INTERVAL 0.2 /* seconds between redraws */

void pack_progress_start(struct pack_progress *progress, bool enabled, uint64_t files_total,
			 uint64_t bytes_total)
{
	progress->enabled = enabled;
	progress->start = pyfs_now();
	progress->last = progress->start;
	progress->files_total = files_total;
	progress->bytes_total = bytes_total;
	progress->files_done = 0;
	progress->bytes_done = 0;
	progress->shown = false;
}

void pack_progress_update(struct pack_progress *progress, uint64_t files_done, uint64_t bytes_done)
{
	char done[32], total[32], rate_text[32];
	double now, elapsed, rate, eta;

	if (!progress->enabled)
		return;
	progress->files_done = files_done;
	progress->bytes_done = bytes_done;
	now = pyfs_now();
	if (now - progress->last < PROGRESS_INTERVAL)
		return;
	progress->last = now;
	elapsed = now - progress->start;
	rate = elapsed > 0 ? (double)bytes_done / elapsed : 0;
	eta = rate > 0 ? (double)(progress->bytes_total - bytes_done) / rate : 0;
	fprintf(stderr, "\r\033[K%" PRIu64 "/%" PRIu64 " files, %s/%s, %s/s, ETA %.0f s",
		files_done, progress->files_total, pack_human_bytes(done, sizeof(done), bytes_done),
		pack_human_bytes(total, sizeof(total), progress->bytes_total),
		pack_human_bytes(rate_text, sizeof(rate_text), (uint64_t)rate), eta);
	fflush(stderr);
	progress->shown = true;
}

void pack_progress_end(struct pack_progress *progress)
{
	if (progress->enabled && progress->shown) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	progress->shown = false;
}
