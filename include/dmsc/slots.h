/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Weights to slot counts, by largest remainder. Userspace builds every slot
 * table with this; the unit tests check the shares it produces.
 */
#ifndef DMSC_SLOTS_H
#define DMSC_SLOTS_H

#include "shared.h"

/*
 * counts[i] = number of slots that backend i gets, summing to DMSC_SLOTS,
 * each within one slot of weight[i] * DMSC_SLOTS / total. Ties in the
 * remainders go to the lower index, so the result is deterministic.
 * Returns the total weight; 0 means every weight is 0 and every count is 0.
 * n must be at most DMSC_BACKENDS_PER_SERVICE_MAX.
 */
static inline __u64 dmsc_slot_counts(const __u32 *weight, __u32 n, __u32 *counts)
{
	__u64 rem[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u64 total = 0;
	__u32 given = 0, i, round;

	for (i = 0; i < n && i < DMSC_BACKENDS_PER_SERVICE_MAX; i++)
		total += weight[i];
	for (i = 0; i < n && i < DMSC_BACKENDS_PER_SERVICE_MAX; i++) {
		counts[i] = 0;
		rem[i] = 0;
	}
	if (total == 0)
		return 0;
	for (i = 0; i < n && i < DMSC_BACKENDS_PER_SERVICE_MAX; i++) {
		__u64 scaled = (__u64)weight[i] * DMSC_SLOTS;

		counts[i] = (__u32)(scaled / total);
		rem[i] = scaled % total;
		given += counts[i];
	}
	/* Fewer than n slots are left over; each round hands one out. */
	for (round = 0; given < DMSC_SLOTS && round < DMSC_SLOTS; round++) {
		__u32 best = 0;

		for (i = 1; i < n && i < DMSC_BACKENDS_PER_SERVICE_MAX; i++)
			if (rem[i] > rem[best])
				best = i;
		counts[best]++;
		rem[best] = 0;
		given++;
	}
	return total;
}

/*
 * Lays the counts out as a slot table of backend ids. Backends are
 * interleaved (each slot goes to the backend furthest behind its share) so
 * that any window of the table is close to the weights, which matters once
 * slots are picked by hash rather than at random.
 */
static inline void dmsc_slot_layout(const __u32 *counts, const __u32 *ids, __u32 n,
				    __u32 slot[DMSC_SLOTS])
{
	__u32 placed[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 s, i;

	for (i = 0; i < n && i < DMSC_BACKENDS_PER_SERVICE_MAX; i++)
		placed[i] = 0;
	for (s = 0; s < DMSC_SLOTS; s++) {
		__u32 best = DMSC_BACKENDS_PER_SERVICE_MAX;
		__u64 best_deficit = 0;

		for (i = 0; i < n && i < DMSC_BACKENDS_PER_SERVICE_MAX; i++) {
			/* How far behind its share backend i is after s slots,
			 * scaled by DMSC_SLOTS to stay in integers. */
			__u64 want = (__u64)counts[i] * (s + 1);
			__u64 have = (__u64)placed[i] * DMSC_SLOTS;

			if (placed[i] >= counts[i] || want <= have)
				continue;
			if (best == DMSC_BACKENDS_PER_SERVICE_MAX || want - have > best_deficit) {
				best = i;
				best_deficit = want - have;
			}
		}
		if (best == DMSC_BACKENDS_PER_SERVICE_MAX) {
			/* Rounding left no one behind: take the first with
			 * slots still owed. */
			for (i = 0; i < n && i < DMSC_BACKENDS_PER_SERVICE_MAX; i++)
				if (placed[i] < counts[i]) {
					best = i;
					break;
				}
		}
		if (best == DMSC_BACKENDS_PER_SERVICE_MAX) {
			slot[s] = 0;
			continue;
		}
		slot[s] = ids[best];
		placed[best]++;
	}
}

#endif /* DMSC_SLOTS_H */
