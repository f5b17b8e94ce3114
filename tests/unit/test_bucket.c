// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Token buckets with a fake clock: the code the kernel runs for connection
 * and byte limits (include/dmsc/bucket.h). */
#include <stdint.h>

#include <criterion/criterion.h>

#include "dmsc/bucket.h"

#define SEC 1000000000ull
#define T0 (1000 * SEC) /* any non-zero start */

Test(bucket, starts_full_then_allows_the_rate)
{
	struct dmsc_tb b = { 0 };
	__u64 t, ok = 0;

	/* rate 50/s, depth 10: 10 at once, then one every 20 ms. */
	for (t = T0; t < T0 + 2 * SEC; t += SEC / 1000) /* 1 ms steps, 2 s */
		while (dmsc_tb_take(&b, t, 50, 10, 1))
			ok++;
	cr_assert(ok >= 10 + 100 - 1 && ok <= 10 + 100, "%llu taken, want 110", ok);
}

Test(bucket, never_above_depth_after_idle)
{
	struct dmsc_tb b = { 0 };
	int n = 0;

	dmsc_tb_take(&b, T0, 1000, 5, 5);
	/* An hour idle: refills to the depth, not beyond, and without
	 * overflowing (elapsed * rate would be 3.6e21). */
	while (dmsc_tb_take(&b, T0 + 3600 * SEC, 1000, 5, 1))
		n++;
	cr_assert_eq(n, 5);
}

Test(bucket, extreme_values_do_not_overflow)
{
	struct dmsc_tb b = { 0 };

	cr_assert(dmsc_tb_take(&b, T0, DMSC_TB_RATE_MAX, DMSC_TB_DEPTH_MAX, DMSC_TB_DEPTH_MAX));
	cr_assert_not(dmsc_tb_take(&b, T0, DMSC_TB_RATE_MAX, DMSC_TB_DEPTH_MAX, 1));
	/* 10 ms at 10^11/s earns 10^9: full again, exactly. */
	cr_assert(dmsc_tb_take(&b, T0 + SEC / 100, DMSC_TB_RATE_MAX, DMSC_TB_DEPTH_MAX,
			       DMSC_TB_DEPTH_MAX));
	cr_assert_not(dmsc_tb_take(&b, T0 + 10000 * SEC + 1, 1, 1, 2), "cost above depth");
}

Test(bucket, clock_going_back_refills_nothing)
{
	struct dmsc_tb b = { 0 };

	cr_assert(dmsc_tb_take(&b, T0, 1, 1, 1));
	cr_assert_not(dmsc_tb_take(&b, T0 - SEC, 1, 1, 1));
	cr_assert_not(dmsc_tb_take(&b, T0 + SEC / 2, 1, 1, 1));
	cr_assert(dmsc_tb_take(&b, T0 + SEC, 1, 1, 1));
}

Test(bucket, fractional_refill_accumulates)
{
	struct dmsc_tb b = { 0 };
	int i, ok = 0;

	dmsc_tb_take(&b, T0, 4, 1, 1);
	/* 4 per second in 1 ms steps: each step earns 4 thousandths, and a
	 * whole token is there every 250 steps. */
	for (i = 1; i <= 1000; i++)
		ok += dmsc_tb_take(&b, T0 + (__u64)i * SEC / 1000, 4, 1, 1);
	cr_assert_eq(ok, 4, "%d taken", ok);
}

Test(bucket, police_passes_then_signals_then_drops)
{
	struct dmsc_tb b = { 0 };
	const __u64 depth = 100000, pkt = 10000;
	int pass = 0, over = 0, drop = 0, i;

	for (i = 0; i < 100; i++) {
		switch (dmsc_tb_police(&b, T0, 1000, depth, pkt)) {
		case DMSC_TB_PASS:
			pass++;
			break;
		case DMSC_TB_PASS_OVER:
			over++;
			break;
		default:
			drop++;
		}
	}
	/* The depth passes plainly, the debt passes with a signal. */
	cr_assert_eq(pass, (int)(depth / pkt));
	cr_assert_eq(over, (int)(DMSC_TB_DEBT_DEPTHS * depth / pkt));
	cr_assert_eq(drop, 100 - pass - over);
	/* Debt is earned back before anything passes plainly again. */
	cr_assert_eq(dmsc_tb_police(&b, T0 + 100 * SEC, 1000, depth, pkt), DMSC_TB_PASS_OVER);
	cr_assert_eq(dmsc_tb_police(&b, T0 + 1000 * SEC, 1000, depth, pkt), DMSC_TB_PASS);
}

Test(bucket, police_long_run_rate_is_the_rate)
{
	struct dmsc_tb b = { 0 };
	const __u64 rate = 2500000, depth = 250000, pkt = 1500;
	__u64 t, bytes = 0;

	/* A sender at 10x the rate for 10 s, 100 us apart: what passes is the
	 * rate plus at most the depth and the debt. */
	for (t = T0; t < T0 + 10 * SEC; t += SEC / 10000 / 4)
		if (dmsc_tb_police(&b, t, rate, depth, pkt) != DMSC_TB_DROP)
			bytes += pkt;
	cr_assert(bytes >= 10 * rate && bytes <= 10 * rate + (1 + DMSC_TB_DEBT_DEPTHS) * depth + pkt,
		  "%llu bytes passed in 10 s at %llu/s", bytes, rate);
}

Test(bucket, wait_seconds_for_retry_after)
{
	struct dmsc_tb b = { 0 };

	cr_assert_eq(dmsc_tb_wait_seconds(&b, 1, 1), 1, "empty, 1/s: 1 s");
	dmsc_tb_take(&b, T0, 10, 1, 1);
	cr_assert_eq(dmsc_tb_wait_seconds(&b, 10, 1), 1, "0.1 s rounds up to 1");
	cr_assert_eq(dmsc_tb_wait_seconds(&b, 1, 5), 5);
}

/* ---- the whole range: what the validator accepts, and beyond ---------- */

#define YEAR (365ull * 24 * 3600 * SEC)

/* A depth above DMSC_TB_DEPTH_MAX is the deepest bucket: scaled, 10^10
 * tokens would have wrapped negative (2^63 is 9.2 * 10^18) and refused
 * everything. */
Test(bucket, depth_above_the_maximum_is_clamped_not_wrapped)
{
	static const __u64 depths[] = { 9300000000ull, 10000000000ull, 18000000000ull,
					DMSC_TB_RATE_MAX, ~0ull };
	size_t i;
	int n;

	for (i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
		struct dmsc_tb b = { 0 };

		for (n = 0; n < 1000 && dmsc_tb_take(&b, T0, depths[i], depths[i], 1); n++)
			;
		cr_assert_eq(n, 1000, "depth %llu: %d of 1000 taken", depths[i], n);
		cr_assert(b.tokens > 0 && b.tokens <= (__s64)(DMSC_TB_DEPTH_MAX * DMSC_TB_SCALE));
		cr_assert(dmsc_tb_take(&b, T0, depths[i], depths[i], DMSC_TB_DEPTH_MAX - 1000),
			  "the rest of the deepest bucket");
		cr_assert_not(dmsc_tb_take(&b, T0, depths[i], depths[i], 1));
	}
}

/* Years idle at the highest rate and depth, or at the lowest: full, never
 * more, never wrapped. */
Test(bucket, years_idle_at_every_rate)
{
	static const __u64 rates[] = { 1, 2, 999999999, DMSC_TB_SCALE, 9223372037ull,
				       DMSC_TB_RATE_MAX, ~0ull };
	size_t i;

	for (i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
		struct dmsc_tb b = { 0 };

		cr_assert(dmsc_tb_take(&b, T0, rates[i], DMSC_TB_DEPTH_MAX, DMSC_TB_DEPTH_MAX));
		cr_assert_eq(b.tokens, 0);
		dmsc_tb_refill(&b, T0 + 100 * YEAR, rates[i], DMSC_TB_DEPTH_MAX);
		cr_assert_eq(b.tokens, (__s64)(DMSC_TB_DEPTH_MAX * DMSC_TB_SCALE), "rate %llu",
			     rates[i]);
		dmsc_tb_refill(&b, ~0ull, rates[i], DMSC_TB_DEPTH_MAX);
		cr_assert_eq(b.tokens, (__s64)(DMSC_TB_DEPTH_MAX * DMSC_TB_SCALE));
	}
}

/* The first use starts full, whatever the clock says (last_ns 0 means
 * "never used"). */
Test(bucket, first_use_at_any_clock_starts_full)
{
	static const __u64 clocks[] = { 1, T0, 100 * YEAR, ~0ull };
	size_t i;

	for (i = 0; i < sizeof(clocks) / sizeof(clocks[0]); i++) {
		struct dmsc_tb b = { .tokens = -12345, .last_ns = 0 };

		cr_assert(dmsc_tb_take(&b, clocks[i], 5, 3, 3));
		cr_assert_not(dmsc_tb_take(&b, clocks[i], 5, 3, 1));
	}
}

/* A bucket whose tokens lie outside its range (its limit was lowered, or
 * the value is garbage) is brought back inside, with no overflow. */
Test(bucket, tokens_outside_the_range_are_brought_inside)
{
	struct dmsc_tb b = { .tokens = INT64_MIN, .last_ns = T0 };

	cr_assert_eq(dmsc_tb_police(&b, T0 + 1, 1000, 100000, 1500), DMSC_TB_DROP);
	cr_assert_geq(b.tokens, -(__s64)(DMSC_TB_DEBT_DEPTHS * 100000 * DMSC_TB_SCALE));
	b = (struct dmsc_tb){ .tokens = INT64_MAX, .last_ns = T0 };
	cr_assert(dmsc_tb_take(&b, T0, 1, 7, 7));
	cr_assert_not(dmsc_tb_take(&b, T0, 1, 7, 1), "held one depth, not INT64_MAX");
	b = (struct dmsc_tb){ .tokens = INT64_MIN, .last_ns = T0 };
	cr_assert_gt(dmsc_tb_wait_seconds(&b, 1, 1), 0);
	cr_assert_eq(dmsc_tb_wait_seconds(&b, 1, ~0ull), 12223372037ull,
		     "(3 * 10^18 + 2^63) ns at 1/s, rounded up to seconds");
	cr_assert_eq(dmsc_tb_wait_seconds(&b, DMSC_TB_RATE_MAX, ~0ull), 1);
}

/* Costs no bucket could pay are refused before they are scaled (cost *
 * 10^9 wraps past 1.8 * 10^10). */
Test(bucket, impossible_costs_are_refused)
{
	struct dmsc_tb b = { 0 };

	cr_assert_not(dmsc_tb_take(&b, T0, 1, DMSC_TB_DEPTH_MAX, 18446744074ull));
	cr_assert_not(dmsc_tb_take(&b, T0, 1, DMSC_TB_DEPTH_MAX, ~0ull));
	cr_assert_eq(dmsc_tb_police(&b, T0, 1, DMSC_TB_DEPTH_MAX, ~0ull), DMSC_TB_DROP);
	cr_assert_eq(b.tokens, (__s64)(DMSC_TB_DEPTH_MAX * DMSC_TB_SCALE), "nothing taken");
	b = (struct dmsc_tb){ 0 };
	cr_assert_eq(dmsc_tb_police(&b, T0, 1, 65536, 3 * 65536 + 1), DMSC_TB_DROP);
	cr_assert_eq(dmsc_tb_police(&b, T0, 1, 65536, 3 * 65536), DMSC_TB_PASS_OVER,
		     "a full bucket lends up to its debt");
	cr_assert_eq(b.tokens, -(__s64)(DMSC_TB_DEBT_DEPTHS * 65536 * DMSC_TB_SCALE));
}
