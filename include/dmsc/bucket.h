/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Token buckets: the kernel's connection and byte limits run this code, and
 * the unit tests run the very same code with a fake clock.
 *
 * Tokens are kept in billionths (DMSC_TB_SCALE), so that refilling is one
 * multiplication of elapsed nanoseconds by the rate. Limits that keep every
 * product inside 63 bits (tokens are signed: a policed bucket may be in
 * debt by one depth) are enforced by the policy validator: rate <=
 * DMSC_TB_RATE_MAX and depth <= DMSC_TB_DEPTH_MAX.
 */
#ifndef DMSC_BUCKET_H
#define DMSC_BUCKET_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define DMSC_TB_SCALE 1000000000ull
#define DMSC_TB_RATE_MAX 100000000000ull /* 10^11 per second (800 Gbit/s) */
#define DMSC_TB_DEPTH_MAX 1000000000ull  /* 10^9: depth * scale <= 10^18 */
#define DMSC_TB_DEBT_DEPTHS 2            /* how deep dmsc_tb_police lets debt go */

struct dmsc_tb {
	__s64 tokens;  /* DMSC_TB_SCALE per token; below 0 while in debt */
	__u64 last_ns; /* 0: never used, starts full */
};

/* Adds what `rate` earned since the last call, up to `depth` tokens. */
static inline void dmsc_tb_refill(struct dmsc_tb *b, __u64 now_ns, __u64 rate, __u64 depth)
{
	__s64 cap = (__s64)(depth * DMSC_TB_SCALE);
	__u64 elapsed, room;

	if (b->last_ns == 0) {
		b->tokens = cap;
		b->last_ns = now_ns;
		return;
	}
	if (now_ns <= b->last_ns)
		return;
	elapsed = now_ns - b->last_ns;
	b->last_ns = now_ns;
	if (rate == 0 || b->tokens >= cap) {
		b->tokens = cap;
		return;
	}
	/* Past the time that fills the bucket, it is simply full; the check
	 * keeps elapsed * rate below room + rate, inside 64 bits. */
	room = (__u64)(cap - b->tokens);
	if (elapsed >= room / rate + 1)
		b->tokens = cap;
	else
		b->tokens += (__s64)(elapsed * rate);
	if (b->tokens > cap)
		b->tokens = cap;
}

/* Takes `cost` tokens if there are that many, refilling first at `rate`
 * per second up to `depth`. Returns 1 when taken, 0 when over the limit.
 * `now_ns` must not go backwards by much; if it does, no refill happens. */
static inline int dmsc_tb_take(struct dmsc_tb *b, __u64 now_ns, __u64 rate, __u64 depth,
			       __u64 cost)
{
	__s64 need = (__s64)(cost * DMSC_TB_SCALE);

	dmsc_tb_refill(b, now_ns, rate, depth);
	if (b->tokens < need)
		return 0;
	b->tokens -= need;
	return 1;
}

enum dmsc_tb_verdict {
	DMSC_TB_PASS,      /* within the rate */
	DMSC_TB_PASS_OVER, /* over it: passed, and the sender should slow down */
	DMSC_TB_DROP,      /* far over it */
};

/*
 * Polices bytes so that TCP can follow: when the bucket runs dry, packets
 * still pass while the debt is under one more `depth`, and the caller asks
 * the sender to slow down (congestion notification); only past that debt
 * are packets dropped. A sender that reacts to the notification never sees
 * a loss, and the long-run rate still stays within `rate` plus one depth
 * per period, because the debt must be earned back before anything passes
 * at full speed again.
 */
static inline int dmsc_tb_police(struct dmsc_tb *b, __u64 now_ns, __u64 rate, __u64 depth,
				 __u64 cost)
{
	__s64 need = (__s64)(cost * DMSC_TB_SCALE), floor = -(__s64)(DMSC_TB_DEBT_DEPTHS * depth * DMSC_TB_SCALE);

	dmsc_tb_refill(b, now_ns, rate, depth);
	if (b->tokens >= need) {
		b->tokens -= need;
		return DMSC_TB_PASS;
	}
	if (b->tokens - need >= floor) {
		b->tokens -= need;
		return DMSC_TB_PASS_OVER;
	}
	return DMSC_TB_DROP;
}

/* Seconds until `cost` tokens are there (rounded up), for Retry-After. */
static inline __u64 dmsc_tb_wait_seconds(const struct dmsc_tb *b, __u64 rate, __u64 cost)
{
	__s64 need = (__s64)(cost * DMSC_TB_SCALE);

	if (b->tokens >= need || rate == 0)
		return 0;
	return ((__u64)(need - b->tokens) / rate + DMSC_TB_SCALE - 1) / DMSC_TB_SCALE;
}

#endif /* DMSC_BUCKET_H */
