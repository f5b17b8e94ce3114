/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Token bucket for dmsc-l7's requests_per_second + burst. Pure integer
 * math on a caller-supplied clock, so the unit tests drive it with a fake
 * one. Tokens are counted in nano-tokens (1e9 per request) so that any rate
 * from 1/s up refills exactly, without floating point.
 *
 * The kernel's connection bucket is include/dmsc/bucket.h (dmsc_bucket_*);
 * this one counts nano-tokens for per-request rates: one bucket for both
 * is left to the deduplication of the restructure.
 */
#ifndef DMSC_L7_BUCKET_H
#define DMSC_L7_BUCKET_H

#include <stdint.h>

#define DMSC_L7_NANO 1000000000ull
/* Clamped so that capacity in nano-tokens fits in 64 bits. */
#define DMSC_L7_BUCKET_MAX 1000000000ull

struct dmsc_l7_bucket {
	uint64_t rate;	   /* tokens per second, 1..DMSC_L7_BUCKET_MAX */
	uint64_t capacity; /* nano-tokens: burst * 1e9 */
	uint64_t tokens;   /* nano-tokens */
	uint64_t last_ns;  /* clock of the last refill */
};

/* burst 0 (absent) means one second's worth of requests, at least 1. */
static inline void dmsc_l7_bucket_init(struct dmsc_l7_bucket *b, uint64_t rate, uint64_t burst,
				       uint64_t now_ns)
{
	if (rate == 0)
		rate = 1;
	if (rate > DMSC_L7_BUCKET_MAX)
		rate = DMSC_L7_BUCKET_MAX;
	if (burst == 0)
		burst = rate;
	if (burst > DMSC_L7_BUCKET_MAX)
		burst = DMSC_L7_BUCKET_MAX;
	b->rate = rate;
	b->capacity = burst * DMSC_L7_NANO;
	b->tokens = b->capacity; /* starts full: a burst is allowed at once */
	b->last_ns = now_ns;
}

/*
 * Takes one token. Returns 0 when the request may pass, else the number of
 * nanoseconds until a token will be there (never 0). A clock that goes
 * backwards refills nothing.
 */
static inline uint64_t dmsc_l7_bucket_take(struct dmsc_l7_bucket *b, uint64_t now_ns)
{
	if (now_ns > b->last_ns) {
		uint64_t elapsed = now_ns - b->last_ns;
		uint64_t room = b->capacity - b->tokens;

		/* elapsed * rate could overflow: compare by division first */
		if (elapsed >= room / b->rate + 1)
			b->tokens = b->capacity;
		else
			b->tokens += elapsed * b->rate;
		if (b->tokens > b->capacity)
			b->tokens = b->capacity;
		b->last_ns = now_ns;
	}
	if (b->tokens >= DMSC_L7_NANO) {
		b->tokens -= DMSC_L7_NANO;
		return 0;
	}
	return (DMSC_L7_NANO - b->tokens + b->rate - 1) / b->rate;
}

/* Retry-After (RFC 9110, section 10.2.3) is whole seconds: round up, at
 * least 1. */
static inline uint64_t dmsc_l7_retry_after_s(uint64_t wait_ns)
{
	uint64_t s = (wait_ns + DMSC_L7_NANO - 1) / DMSC_L7_NANO;

	return s ? s : 1;
}

#endif /* DMSC_L7_BUCKET_H */
