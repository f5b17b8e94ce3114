// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer harness for the token buckets of include/dmsc/bucket.h, the
 * code the kernel runs for connection and byte limits.
 *
 * An input is a bucket configuration (rate, depth, a starting state) and a
 * sequence of steps (clock advance, cost, take or police). Values are
 * shaped so that most lie in the range the policy validator accepts (rate
 * 1..DMSC_TB_RATE_MAX, depth 1..DMSC_TB_DEPTH_MAX, clock jumps up to
 * centuries) and some anywhere in 64 bits: the bucket must be right for the
 * first and safe for the second.
 *
 * Beyond "no crash, no sanitizer report" (UBSan aborts on a signed
 * overflow), each step is checked against a model of the same bucket in
 * exact 128-bit arithmetic, and these must hold:
 *   - the 64-bit bucket decides and holds exactly what the model does;
 *   - tokens never exceed the depth, never go below 0 in a bucket that only
 *     takes, never below the debt floor in one that polices;
 *   - what passed from a fresh bucket never exceeds depth (+ the debt when
 *     policing) + rate * elapsed time;
 *   - after the time a full refill takes, any cost within the depth is
 *     taken; dmsc_tb_wait_seconds() seconds after a refusal, it is taken.
 * Build and run: `make fuzz` (long) or the bounded run in `make test`.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmsc/bucket.h"
#include "fuzz_check.h"


typedef __int128 i128;
typedef unsigned __int128 u128;

#define STEPS_MAX 256
#define SEC 1000000000ull

struct input {
	const uint8_t *p;
	size_t left;
};

static uint64_t take_bytes(struct input *in, size_t n)
{
	uint64_t v = 0;

	while (n-- && in->left) {
		v = v << 8 | *in->p++;
		in->left--;
	}
	return v;
}

/* A value shaped by a selector byte: small, mid-sized, inside [lo, hi],
 * or any 64 bits. */
static uint64_t shaped(struct input *in, uint64_t lo, uint64_t hi)
{
	uint8_t sel = (uint8_t)take_bytes(in, 1);
	uint64_t v;

	switch (sel & 3) {
	case 0:
		return take_bytes(in, 1);
	case 1:
		return take_bytes(in, 3);
	case 2:
		v = take_bytes(in, 8);
		return hi - lo == UINT64_MAX ? v : lo + (hi > lo ? v % (hi - lo + 1) : 0);
	default:
		return take_bytes(in, 8);
	}
}

/* The deepest bucket is DMSC_TB_DEPTH_MAX: a deeper one is clamped. */
static uint64_t clamped(uint64_t depth)
{
	return depth < DMSC_TB_DEPTH_MAX ? depth : DMSC_TB_DEPTH_MAX;
}

/* The same bucket in exact arithmetic: the specification. */
struct model {
	i128 tokens;
	uint64_t last_ns;
};

static i128 model_cap(uint64_t depth)
{
	return (i128)clamped(depth) * DMSC_TB_SCALE;
}

static i128 clamp128(i128 v, i128 lo, i128 hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

static void model_refill(struct model *m, uint64_t now, uint64_t rate, uint64_t depth)
{
	i128 cap = model_cap(depth), floor = -(i128)DMSC_TB_DEBT_DEPTHS * cap;

	if (m->last_ns == 0) {
		m->tokens = cap;
		m->last_ns = now;
		return;
	}
	m->tokens = clamp128(m->tokens, floor, cap);
	if (now <= m->last_ns)
		return;
	/* < 2^128: exact */
	if (rate == 0 || (u128)(now - m->last_ns) * rate >= (u128)(cap - m->tokens))
		m->tokens = cap;
	else
		m->tokens += (i128)((u128)(now - m->last_ns) * rate);
	m->last_ns = now;
}

static int model_take(struct model *m, uint64_t now, uint64_t rate, uint64_t depth,
		      uint64_t cost)
{
	i128 need = (i128)cost * DMSC_TB_SCALE;

	model_refill(m, now, rate, depth);
	if (m->tokens < need)
		return 0;
	m->tokens -= need;
	return 1;
}

static int model_police(struct model *m, uint64_t now, uint64_t rate, uint64_t depth,
			uint64_t cost)
{
	i128 need = (i128)cost * DMSC_TB_SCALE, floor = -(i128)DMSC_TB_DEBT_DEPTHS * model_cap(depth);

	model_refill(m, now, rate, depth);
	/* past the floor of the debt: dropped; else taken, over the rate
	 * when that leaves a debt */
	if (m->tokens - need < floor)
		return DMSC_TB_DROP;
	m->tokens -= need;
	return m->tokens >= 0 ? DMSC_TB_PASS : DMSC_TB_PASS_OVER;
}

/* Nanoseconds a refill from the floor to full takes at rate (> 0). */
static uint64_t full_refill_ns(uint64_t rate, uint64_t depth)
{
	i128 span = model_cap(depth) * (1 + DMSC_TB_DEBT_DEPTHS);

	return (uint64_t)((span + rate - 1) / rate);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	uint64_t rate, depth, now, start, d;
	struct dmsc_tb b = { 0 };
	struct model m = { 0 };
	i128 passed = 0, cap;
	bool fresh, policed = false, forward;
	uint8_t flags;
	int step;

	flags = (uint8_t)take_bytes(&in, 1);
	rate = shaped(&in, 1, DMSC_TB_RATE_MAX);
	depth = shaped(&in, 1, DMSC_TB_DEPTH_MAX);
	/* The clock is never 0 (bpf_ktime_get_ns() counts from boot): 0 is
	 * how a bucket says it was never used. */
	now = shaped(&in, 1, 200ull * 365 * 24 * 3600 * SEC);
	now += !now;
	cap = model_cap(depth);
	/* A fresh bucket (last_ns 0), or any state at all: a limit lowered
	 * under a full bucket, a bucket deep in debt, garbage. */
	fresh = !(flags & 1);
	if (!fresh) {
		b.tokens = (int64_t)take_bytes(&in, 8);
		b.last_ns = take_bytes(&in, 8);
		m.tokens = b.tokens;
		m.last_ns = b.last_ns;
	}
	start = now;
	forward = fresh;
	for (step = 0; step < STEPS_MAX && in.left; step++) {
		uint8_t op = (uint8_t)take_bytes(&in, 1);
		uint64_t cost;
		int got, want;

		/* The clock: forward by a shaped amount (saturating), or now
		 * and then backwards (a clock must not, the bucket copes). */
		d = shaped(&in, 0, 10 * SEC);
		if (op & 0x80)
			now = now > d ? now - d : 1;
		else
			now = now + d < now ? UINT64_MAX : now + d;
		now += !now;
		cost = (op & 0x40) ? shaped(&in, 0, depth) : shaped(&in, 1, 3 * depth);
		if (op & 1) {
			got = dmsc_tb_police(&b, now, rate, depth, cost);
			want = model_police(&m, now, rate, depth, cost);
			policed = true;
		} else {
			got = dmsc_tb_take(&b, now, rate, depth, cost);
			want = model_take(&m, now, rate, depth, cost);
		}
		CHECK(got == want);
		CHECK((i128)b.tokens == m.tokens);
		CHECK(b.last_ns == m.last_ns);
		CHECK(b.tokens <= cap);
		CHECK(b.tokens >= -(i128)DMSC_TB_DEBT_DEPTHS * cap);
		if (fresh && !policed)
			CHECK(b.tokens >= 0);
		if (got == 1 || got == DMSC_TB_PASS_OVER)
			passed += (i128)cost * DMSC_TB_SCALE;
		/* The rate holds: from a fresh bucket with a clock that only
		 * went forward, no more passed than the depth (and the debt
		 * when policing) plus what the rate earned. */
		if (op & 0x80)
			forward = false; /* the bound below holds for a clock going forward */
		if (forward && rate) /* rate 0: no limit */
			CHECK((u128)(now - start) * rate >= ((u128)1 << 100) ||
			      passed <= cap * (policed ? 1 + DMSC_TB_DEBT_DEPTHS : 1) +
						(i128)((u128)(now - start) * rate));

		/* A refusal: after the wait it announces, the same cost is
		 * taken (a copy, so the sequence goes on unchanged). */
		if (!got && !(op & 1) && rate && cost <= clamped(depth)) {
			struct dmsc_tb w = b;
			uint64_t secs = dmsc_tb_wait_seconds(&b, rate, cost), later;

			CHECK(secs > 0);
			later = b.last_ns + secs * SEC;
			if (secs < UINT64_MAX / SEC && later > b.last_ns)
				CHECK(dmsc_tb_take(&w, later, rate, depth, cost));
		}
		/* After a full refill, anything within the depth is taken. */
		if (rate && b.last_ns && cost <= clamped(depth)) {
			struct dmsc_tb w = b;
			uint64_t full = full_refill_ns(rate, depth);

			if (b.last_ns + full >= b.last_ns)
				CHECK(dmsc_tb_take(&w, b.last_ns + full, rate, depth, cost));
		}
	}
	return 0;
}
