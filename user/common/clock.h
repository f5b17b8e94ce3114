/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The clocks every program reads: CLOCK_MONOTONIC (bpf_ktime_get_ns's clock)
 * in ms, ns and seconds, and any clock in seconds. Header-only, so the test tools,
 * which link no archive, read the clocks the same way.
 */
#ifndef DMSC_CLOCK_H
#define DMSC_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t dmsc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline uint64_t dmsc_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CLOCK_REALTIME: since the epoch; CLOCK_THREAD_CPUTIME_ID: this thread's
 * CPU time, a step's own cost without the time other processes ran. */
static inline double dmsc_clock_seconds(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline double dmsc_now_seconds(void)
{
	return dmsc_clock_seconds(CLOCK_MONOTONIC);
}

#endif /* DMSC_CLOCK_H */
