// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Weight-to-slot math: the same inline code userspace uses to build every
 * slot table, and the index arithmetic the kernel uses to pick a slot. */
#include <arpa/inet.h>
#include <stdlib.h>

#include <criterion/criterion.h>

#include "dmsc/slots.h"

/* Every backend's share of slots is within one slot of its weight share,
 * the counts fill the table exactly, and the layout matches the counts. */
static void check_weights(const __u32 *w, __u32 n)
{
	__u32 counts[DMSC_BACKENDS_PER_SERVICE_MAX], ids[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 slot[DMSC_SLOTS], seen[DMSC_BACKENDS_PER_SERVICE_MAX + 1] = {0};
	__u64 total = 0, sum = 0;
	__u32 i;

	for (i = 0; i < n; i++) {
		total += w[i];
		ids[i] = i + 1;
	}
	cr_assert_eq(dmsc_slot_counts(w, n, counts), total);
	for (i = 0; i < n; i++) {
		double want = (double)w[i] * DMSC_SLOTS / (double)total;

		sum += counts[i];
		cr_assert(counts[i] + 1.0 > want && counts[i] - 1.0 < want,
			  "backend %u weight %u: %u slots, want %.2f", i, w[i], counts[i], want);
		if (w[i] == 0)
			cr_assert_eq(counts[i], 0, "a weight-0 backend got a slot");
	}
	cr_assert_eq(sum, DMSC_SLOTS);
	dmsc_slot_layout(counts, ids, n, slot);
	for (i = 0; i < DMSC_SLOTS; i++) {
		cr_assert(slot[i] >= 1 && slot[i] <= n, "slot %u holds id %u", i, slot[i]);
		seen[slot[i]]++;
	}
	for (i = 0; i < n; i++)
		cr_assert_eq(seen[i + 1], counts[i], "backend %u: layout %u, counts %u", i,
			     seen[i + 1], counts[i]);
}

/* Weights and the slot counts they must give (check_weights too). */
static const struct {
	const char *what;
	__u32 n, w[3], counts[3];
} exact[] = {
    /* 128 * 0.8 = 102.4: largest remainder gives 102 and 26 */
    {"eighty_twenty", 2, {80, 20}, {102, 26}},
    {"equal_thirds_ties_go_to_lower_index", 3, {1, 1, 1}, {43, 43, 42}},
    {"zero_weight_drains", 3, {0, 100, 0}, {0, DMSC_SLOTS, 0}},
};

Test(slots, exact_counts)
{
	__u32 counts[3], i, j;

	for (i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
		check_weights(exact[i].w, exact[i].n);
		dmsc_slot_counts(exact[i].w, exact[i].n, counts);
		for (j = 0; j < exact[i].n; j++)
			cr_assert_eq(counts[j], exact[i].counts[j], "%s: backend %u", exact[i].what,
				     j);
	}
}

Test(slots, all_zero_means_no_backend)
{
	__u32 w[] = {0, 0}, counts[2] = {7, 7};

	cr_assert_eq(dmsc_slot_counts(w, 2, counts), 0);
	cr_assert_eq(counts[0], 0);
	cr_assert_eq(counts[1], 0);
}

Test(slots, extreme_ratio_keeps_small_backend)
{
	/* 1 in 10001 is below one slot's worth: it may get 0 or 1 slot, but
	 * never more, and the big one gets the rest. */
	__u32 w[] = {DMSC_WEIGHT_MAX, 1};

	check_weights(w, 2);
}

Test(slots, as_many_backends_as_slots)
{
	__u32 w[DMSC_BACKENDS_PER_SERVICE_MAX], i;

	for (i = 0; i < DMSC_BACKENDS_PER_SERVICE_MAX; i++)
		w[i] = 1;
	check_weights(w, DMSC_BACKENDS_PER_SERVICE_MAX);
}

Test(slots, random_weights)
{
	__u32 w[DMSC_BACKENDS_PER_SERVICE_MAX], round, n, i;

	srand(12345);
	for (round = 0; round < 2000; round++) {
		n = 1 + (__u32)rand() % 16;
		for (i = 0; i < n; i++)
			w[i] = (__u32)rand() % (DMSC_WEIGHT_MAX + 1);
		w[0] += 1; /* at least one non-zero weight */
		check_weights(w, n);
	}
}

Test(slots, interleaved_layout_spreads_backends)
{
	__u32 w[] = {50, 50}, counts[2], ids[] = {1, 2}, slot[DMSC_SLOTS], i;

	dmsc_slot_counts(w, 2, counts);
	dmsc_slot_layout(counts, ids, 2, slot);
	/* Equal weights alternate instead of filling halves. */
	for (i = 0; i + 1 < DMSC_SLOTS; i++)
		cr_assert_neq(slot[i], slot[i + 1], "slots %u and %u both hold %u", i, i + 1,
			      slot[i]);
}

Test(slots, index_is_masked)
{
	cr_assert_eq(dmsc_slot_index(0), 0);
	cr_assert_eq(dmsc_slot_index(DMSC_SLOTS), 0);
	cr_assert_eq(dmsc_slot_index(DMSC_SLOTS + 5), 5);
	cr_assert_eq(dmsc_slot_index(0xffffffffu), DMSC_SLOTS - 1);
}

/* The affinity layout of n backends (addresses 198.18.1.2 and on, port
 * 8080, ids 1..n in the order given by perm, or 0..n-1) with weights w. */
static void stable_table(const __u32 *w, __u32 n, const __u32 *perm, __u32 slot[DMSC_SLOTS])
{
	__u32 counts[DMSC_BACKENDS_PER_SERVICE_MAX], ids[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 pw[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u64 key[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 i;

	for (i = 0; i < n; i++) {
		__u32 b = perm ? perm[i] : i;
		__u32 addr = htonl(0xc6120102u + b); /* 198.18.1.2 + b */

		ids[i] = b + 1;
		pw[i] = w[b];
		key[i] = dmsc_slot_key(&addr, 4, htons(8080));
	}
	dmsc_slot_counts(pw, n, counts);
	dmsc_slot_layout_stable(counts, ids, key, n, slot);
}

static __u32 moved(const __u32 *a, const __u32 *b)
{
	__u32 i, d = 0;

	for (i = 0; i < DMSC_SLOTS; i++)
		d += a[i] != b[i];
	return d;
}

/* Every slot filled, each backend with exactly its count, and the same
 * table whatever order the policy lists the backends in. */
Test(slots, stable_layout_fills_by_counts_in_any_order)
{
	__u32 w[] = {5, 1, 3, 0, 7}, perm[] = {3, 0, 4, 2, 1}, counts[5], seen[6] = {0};
	__u32 a[DMSC_SLOTS], b[DMSC_SLOTS], i;

	stable_table(w, 5, NULL, a);
	stable_table(w, 5, perm, b);
	cr_assert_arr_eq(a, b, sizeof(a), "the order of the backends changed the table");
	dmsc_slot_counts(w, 5, counts);
	for (i = 0; i < DMSC_SLOTS; i++) {
		cr_assert(a[i] >= 1 && a[i] <= 5, "slot %u holds id %u", i, a[i]);
		seen[a[i]]++;
	}
	for (i = 0; i < 5; i++)
		cr_assert_eq(seen[i + 1], counts[i], "backend %u: %u slots, counts %u", i,
			     seen[i + 1], counts[i]);
}

/* What a change moves, against the fewest possible (the sum of the
 * counts that went down); the interleaved layout moved 65, 84 and 100. */
Test(slots, stable_layout_moves_few_slots)
{
	__u32 w2[] = {50, 50}, w2b[] = {60, 40}, w3[] = {50, 50, 50};
	__u32 w4[] = {1, 1, 1, 1}, w5[] = {1, 1, 1, 1, 1};
	__u32 a[DMSC_SLOTS], b[DMSC_SLOTS];

	stable_table(w2, 2, NULL, a);
	stable_table(w2b, 2, NULL, b);
	cr_expect_eq(moved(a, b), 13, "50/50 -> 60/40 moved %u (fewest: 13)", moved(a, b));
	stable_table(w3, 3, NULL, b);
	cr_expect_leq(moved(a, b), 50, "a third backend moved %u (fewest: 43)", moved(a, b));
	stable_table(w4, 4, NULL, a);
	stable_table(w5, 5, NULL, b);
	cr_expect_leq(moved(a, b), 40, "a fifth backend moved %u (fewest: 26)", moved(a, b));
}
