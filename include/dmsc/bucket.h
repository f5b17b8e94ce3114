/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Token buckets: the kernel's connection and byte limits run this code, and
 * the unit tests run the very same code with a fake clock.
 *
 * Tokens are kept in billionths (DMSC_TB_SCALE), so that refilling is one
 * multiplication of elapsed nanoseconds by the rate. Every product stays
 * inside 63 bits for any input, not only for what the policy validator
 * lets through (rate <= DMSC_TB_RATE_MAX, depth <= DMSC_TB_DEPTH_MAX): the
 * depth is clamped to DMSC_TB_DEPTH_MAX here (10^18 billionths), a bucket
 * whose tokens lie outside [-DMSC_TB_DEBT_DEPTHS depths, one depth] (a
 * lowered limit, a value written by hand) is brought back inside first, a
 * cost no bucket of that depth could ever pay is refused before it is
 * scaled, and the refill compares elapsed time against room / rate before
 * it multiplies. tests/fuzz/fuzz_bucket.c checks this over the whole range.
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

static inline __u64 dmsc_tb_depth(__u64 depth)
{
	return depth < DMSC_TB_DEPTH_MAX ? depth : DMSC_TB_DEPTH_MAX;
}

/* Adds what `rate` earned since the last call, up to `depth` tokens. A
 * rate of 0 means no limit: the bucket is always full. */
static inline void dmsc_tb_refill(struct dmsc_tb *b, __u64 now_ns, __u64 rate, __u64 depth)
{
	/* <= 10^18 and >= -2 * 10^18: both far from the ends of 63 bits */
	__s64 cap = (__s64)(dmsc_tb_depth(depth) * DMSC_TB_SCALE);
	__s64 floor = -(__s64)DMSC_TB_DEBT_DEPTHS * cap;
	__u64 elapsed, room;

	if (b->last_ns == 0) {
		b->tokens = cap;
		b->last_ns = now_ns;
		return;
	}
	if (b->tokens > cap)
		b->tokens = cap;
	if (b->tokens < floor)
		b->tokens = floor;
	if (now_ns <= b->last_ns)
		return;
	elapsed = now_ns - b->last_ns;
	b->last_ns = now_ns;
	if (rate == 0) {
		b->tokens = cap;
		return;
	}
	/* room <= 3 * 10^18. Past the time that fills the bucket (any elapsed
	 * time, years included) it is simply full; below it, elapsed * rate
	 * <= room, inside 64 bits. */
	room = (__u64)(cap - b->tokens);
	if (elapsed > room / rate)
		b->tokens = cap;
	else
		b->tokens += (__s64)(elapsed * rate);
}

/* Takes `cost` tokens if there are that many, refilling first at `rate`
 * per second up to `depth`. Returns 1 when taken, 0 when over the limit.
 * `now_ns` must not go backwards by much; if it does, no refill happens. */
static inline int dmsc_tb_take(struct dmsc_tb *b, __u64 now_ns, __u64 rate, __u64 depth,
			       __u64 cost)
{
	__s64 need;

	dmsc_tb_refill(b, now_ns, rate, depth);
	if (cost > dmsc_tb_depth(depth))
		return 0; /* more than the bucket holds: never */
	need = (__s64)(cost * DMSC_TB_SCALE);
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
	__u64 d = dmsc_tb_depth(depth);
	__s64 need, floor = -(__s64)(DMSC_TB_DEBT_DEPTHS * d * DMSC_TB_SCALE);

	dmsc_tb_refill(b, now_ns, rate, depth);
	/* tokens - need >= floor needs need <= cap - floor: a cost above
	 * that always drops, and below it need * scale fits. */
	if (cost > (DMSC_TB_DEBT_DEPTHS + 1) * d)
		return DMSC_TB_DROP;
	need = (__s64)(cost * DMSC_TB_SCALE);
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

/* Nanoseconds until `cost` tokens are there (rounded up; 0: they are).
 * Computed in unsigned arithmetic: b may be any state, cost any value up
 * to three maximal depths (more is clamped there). */
static inline __u64 dmsc_tb_wait_ns(const struct dmsc_tb *b, __u64 rate, __u64 cost)
{
	__u64 c = cost < (DMSC_TB_DEBT_DEPTHS + 1) * DMSC_TB_DEPTH_MAX
			  ? cost
			  : (DMSC_TB_DEBT_DEPTHS + 1) * DMSC_TB_DEPTH_MAX;
	__s64 need = (__s64)(c * DMSC_TB_SCALE);
	__u64 missing;

	if (b->tokens >= need || rate == 0)
		return 0;
	/* need - tokens < 3 * 10^18 + 2^63 < 2^64; rounds up (a rate above
	 * 10^9/s refills a token in less than 1 ns). */
	missing = (__u64)need - (__u64)b->tokens;
	return (missing - 1) / rate + 1;
}

/* Seconds until `cost` tokens are there (rounded up, so never 0 while
 * they are not), for Retry-After. */
static inline __u64 dmsc_tb_wait_seconds(const struct dmsc_tb *b, __u64 rate, __u64 cost)
{
	__u64 ns = dmsc_tb_wait_ns(b, rate, cost);

	return ns ? (ns - 1) / DMSC_TB_SCALE + 1 : 0;
}

/* dmsc-l7's request bucket (requests_per_second, burst) takes one token
 * per request; a burst of 0 (absent) means one second's worth, at least
 * one request. */
static inline __u64 dmsc_tb_request_depth(__u64 rate, __u64 burst)
{
	if (burst)
		return burst;
	return rate ? rate : 1;
}

#endif /* DMSC_BUCKET_H */
