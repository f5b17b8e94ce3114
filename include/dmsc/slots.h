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

/*
 * A backend's place in the layout of an affinity service: its address (4
 * or 16 bytes) and port, as the policy names them, hashed. Not its id: a
 * backend removed and added again gets another id but the same place.
 */
static inline __u64 dmsc_slot_key(const void *addr, __u32 len, __u16 port)
{
	const unsigned char *b = addr;
	__u64 h = 1469598103934665603ull;
	__u32 i;

	for (i = 0; i < len; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	h = (h ^ (port & 0xff)) * 1099511628211ull;
	h = (h ^ (port >> 8)) * 1099511628211ull;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

/*
 * The layout of a service with affinity "client" (docs/design.md decision
 * 97), where a slot is a group of clients and a slot that changes owner
 * moves them: each backend walks its own order of the slots (an offset and
 * an odd step, both from key[i]: every slot once), and in turns, the
 * backends in the order of their keys, each takes the next free slot of
 * its order until it has counts[i]. A table depends on the backends'
 * addresses and counts only, never on what was there before; and a change
 * of counts or of the set of backends leaves most slots where they were
 * (with two backends a weight change moves the fewest possible: every turn
 * up to the shrinking backend's last is the same). Same contract as
 * dmsc_slot_layout.
 */
static inline void dmsc_slot_layout_stable(const __u32 *counts, const __u32 *ids, const __u64 *key,
					   __u32 n, __u32 slot[DMSC_SLOTS])
{
	__u32 order[DMSC_BACKENDS_PER_SERVICE_MAX], walked[DMSC_BACKENDS_PER_SERVICE_MAX],
	    placed[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 i, j, s, round, filled = 0;

	if (n > DMSC_BACKENDS_PER_SERVICE_MAX)
		n = DMSC_BACKENDS_PER_SERVICE_MAX;
	for (s = 0; s < DMSC_SLOTS; s++)
		slot[s] = 0;
	/* insertion sort by key: at most 128 backends */
	for (i = 0; i < n; i++) {
		for (j = i; j > 0 && key[order[j - 1]] > key[i]; j--)
			order[j] = order[j - 1];
		order[j] = i;
		walked[i] = 0;
		placed[i] = 0;
	}
	/* Each round every backend still owed a slot takes one; the counts
	 * sum to DMSC_SLOTS (or 0), so DMSC_SLOTS rounds fill the table. */
	for (round = 0; round < DMSC_SLOTS && filled < DMSC_SLOTS; round++) {
		for (j = 0; j < n; j++) {
			__u32 b = order[j];
			__u32 off = (__u32)key[b] & DMSC_SLOT_MASK;
			__u32 step = ((__u32)(key[b] >> 32) & DMSC_SLOT_MASK) | 1;

			if (placed[b] >= counts[b])
				continue;
			while (walked[b] < DMSC_SLOTS) {
				s = (off + walked[b] * step) & DMSC_SLOT_MASK;
				walked[b]++;
				if (!slot[s]) {
					slot[s] = ids[b];
					placed[b]++;
					filled++;
					break;
				}
			}
		}
	}
}

/* A kernel service's table: the affinity layout when its flags say
 * DMSC_SVC_F_AFFINITY, else the interleaved one. be[i].addr (IPv4) or
 * be6[i] (an IPv6 service, addr 0) and be[i].port name backend i. */
static inline void dmsc_svc_layout(__u32 flags, const __u32 *counts, const __u32 *ids,
				   const struct dmsc_backend *be, const __u32 (*be6)[4], __u32 n,
				   __u32 slot[DMSC_SLOTS])
{
	__u64 key[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 i;

	if (!(flags & DMSC_SVC_F_AFFINITY)) {
		dmsc_slot_layout(counts, ids, n, slot);
		return;
	}
	for (i = 0; i < n && i < DMSC_BACKENDS_PER_SERVICE_MAX; i++)
		key[i] = be[i].addr ? dmsc_slot_key(&be[i].addr, 4, be[i].port)
				    : dmsc_slot_key(be6[i], 16, be[i].port);
	dmsc_slot_layout_stable(counts, ids, key, n, slot);
}

#endif /* DMSC_SLOTS_H */
