/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * connect4's side of backend health (dmsc/health.h): a slot whose backend
 * the kernel ejected is passed over for the next slots, a bounded walk.
 */
#ifndef DMSC_HEALTH_BPF_H
#define DMSC_HEALTH_BPF_H

#include "maps.bpf.h"

/* The ejection dmscd ended early (a restarted backend), 0 if none: its
 * own map's field, read without its lock (one aligned word). */
static __always_inline __u64 health_ejection_ended(__u32 id)
{
	struct dmsc_be_verdict *v = bpf_map_lookup_elem(&dmsc_be_verdict, &id);

	return v ? v->ejection_ended : 0;
}

/* Is backend id (its counter's element h) ejected at now? The verdict is
 * looked up only while the counter's ejection runs. */
static __always_inline bool health_be_ejected(const struct dmsc_be_health *h, __u32 id, __u64 now)
{
	return h->ejected_until_ns > now && dmsc_health_ejected(h, health_ejection_ended(id), now);
}

/*
 * The backend of slot idx, or of one of the next DMSC_HEALTH_REPICK_MAX
 * slots when it is ejected. The table interleaves backends by weight
 * (dmsc/slots.h), so the next slots hold the others in about their shares.
 * Services without passive health cost nothing more; with it, one array
 * lookup while no backend was ever ejected. Every slot seen ejected: the
 * first pick stays (fail open, counted), as dmscd's panic mode does.
 */
static __always_inline __u32 health_pick(const struct dmsc_svc *svc, __u32 idx)
{
	__u32 id = svc->slot[idx & DMSC_SLOT_MASK], cand, i;
	struct dmsc_be_health *h;
	__u64 now;

	if (!svc->health.eject_after || !id)
		return id;
	h = bpf_map_lookup_elem(&dmsc_be_health, &id);
	if (!h) {
		count_reason(DMSC_R_HEALTH_MISSING);
		return id;
	}
	if (!h->ejected_until_ns)
		return id;
	now = bpf_ktime_get_ns();
	if (!health_be_ejected(h, id, now))
		return id;
	for (i = 1; i <= DMSC_HEALTH_REPICK_MAX; i++) {
		cand = svc->slot[(idx + i) & DMSC_SLOT_MASK];
		if (!cand || cand == id)
			continue;
		h = bpf_map_lookup_elem(&dmsc_be_health, &cand);
		if (!h || !health_be_ejected(h, cand, now)) {
			count_reason(DMSC_R_HEALTH_REPICK);
			return cand;
		}
	}
	count_reason(DMSC_R_HEALTH_ALL_EJECTED);
	return id;
}

#endif /* DMSC_HEALTH_BPF_H */
