/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Token buckets: the kernel's connection and byte limits run this code, and
 * the unit tests run the very same code with a fake clock.
 *
 * Tokens are kept in billionths (DMSC_TB_SCALE), so that refilling is one
 * multiplication of elapsed nanoseconds by the rate, with no division on
 * the common path. Limits that keep every product inside 64 bits are
 * enforced by the policy validator: rate <= DMSC_TB_RATE_MAX and depth <=
 * DMSC_TB_DEPTH_MAX.
 */
#ifndef DMSC_BUCKET_H
#define DMSC_BUCKET_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define DMSC_TB_SCALE 1000000000ull
#define DMSC_TB_RATE_MAX 100000000000ull /* 10^11 per second (800 Gbit/s) */
#define DMSC_TB_DEPTH_MAX 1000000000ull  /* 10^9: depth * scale <= 10^18 */

struct dmsc_tb {
	__u64 tokens;  /* DMSC_TB_SCALE per token */
	__u64 last_ns; /* 0: never used, starts full */
};

/* Takes `cost` tokens if there are that many, refilling first at `rate`
 * per second up to `depth`. Returns 1 when taken, 0 when over the limit.
 * `now_ns` must not go backwards by much; if it does, no refill happens. */
static inline int dmsc_tb_take(struct dmsc_tb *b, __u64 now_ns, __u64 rate, __u64 depth,
			       __u64 cost)
{
	__u64 cap = depth * DMSC_TB_SCALE, need = cost * DMSC_TB_SCALE;

	if (b->last_ns == 0) {
		b->tokens = cap;
		b->last_ns = now_ns;
	}
	if (now_ns > b->last_ns) {
		__u64 elapsed = now_ns - b->last_ns;

		/* Past the time that fills the bucket, it is simply full; the
		 * check keeps elapsed * rate below cap + rate. */
		if (rate == 0 || b->tokens >= cap)
			b->tokens = cap;
		else if (elapsed >= (cap - b->tokens) / rate + 1)
			b->tokens = cap;
		else
			b->tokens += elapsed * rate;
		if (b->tokens > cap)
			b->tokens = cap;
		b->last_ns = now_ns;
	}
	if (b->tokens < need)
		return 0;
	b->tokens -= need;
	return 1;
}

/* Seconds until `cost` tokens are there (rounded up), for Retry-After. */
static inline __u64 dmsc_tb_wait_seconds(const struct dmsc_tb *b, __u64 rate, __u64 cost)
{
	__u64 need = cost * DMSC_TB_SCALE;

	if (b->tokens >= need || rate == 0)
		return 0;
	return ((need - b->tokens) / rate + DMSC_TB_SCALE - 1) / DMSC_TB_SCALE;
}

#endif /* DMSC_BUCKET_H */
