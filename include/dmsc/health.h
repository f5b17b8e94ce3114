/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Backend health, both sides (docs/design.md decisions 13 and 28).
 *
 * The kernel sees a mesh socket's connect() to a backend fail (sockops:
 * SYN_SENT -> CLOSE) and counts it per backend in dmsc_be_health; after a
 * service's consecutive_failures in a row it ejects the backend itself, so
 * that cgroup/connect4 stops picking it within a few connections, without
 * waiting for dmscd. dmscd does the durable part: it takes an ejected or
 * probe-failed backend out of the slot table (dmsc_be_verdict's `out`,
 * which every apply reads when it lays a table out) and puts it back.
 *
 * Each map has one writer per backend (docs/design.md decision 53):
 * dmsc_be_health the counter of the backend's failures (the kernel; for an
 * http service dmsc-l7), dmsc_be_verdict dmscd. A writer never writes the
 * other's element, so neither overwrites what the other counted.
 *
 * Included by shared.h: struct dmsc_svc carries the passive settings.
 */
#ifndef DMSC_HEALTH_H
#define DMSC_HEALTH_H

#ifndef __VMLINUX_H__
#include <linux/bpf.h> /* struct bpf_spin_lock */
#include <linux/types.h>
#endif

#define DMSC_MAP_BE_HEALTH "dmsc_be_health"
#define DMSC_MAP_BE_VERDICT "dmsc_be_verdict"

/* connect4 tries at most this many slots after an ejected backend's; past
 * them (every backend it saw ejected) it keeps the first pick: the
 * kernel's panic mode, counted. */
#define DMSC_HEALTH_REPICK_MAX 16

#define DMSC_NS_PER_MS 1000000ull

/* Part of struct dmsc_svc: the service's passive settings, in the element
 * connect4 reads anyway. eject_after 0: no passive health. */
struct dmsc_svc_health {
	__u16 eject_after; /* consecutive connect failures */
	/* passive.max_ejection_percent; 0 (an element of an older build) or
	 * 100: no cap. */
	__u16 max_eject_pct;
	__u32 base_ejection_ms;
	__u32 max_ejection_ms;
};

/* Why dmscd keeps a backend out of its service's slot table. */
enum dmsc_health_out {
	DMSC_HEALTH_IN = 0,
	DMSC_HEALTH_OUT_EJECTED, /* passive: the kernel ejected it */
	DMSC_HEALTH_OUT_PROBE,	 /* active: unhealthy_threshold probes failed */
};

/*
 * dmsc_be_health: ARRAY indexed by backend id, written under its lock by
 * the counter of the backend's failures only: the kernel (sockops), or
 * dmsc-l7 for an http service's backends (BPF_F_LOCK). Zeroed when a
 * backend id is given up, like its counters.
 */
struct dmsc_be_health {
	struct bpf_spin_lock lock;
	__u32 consecutive;	/* connect failures in a row */
	__u64 failures;		/* connect failures in all */
	__u64 ejected_at_ns;	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last ejection */
	__u64 ejected_until_ns; /* connect4 skips the backend until then */
	__u32 ejections;	/* in a row: the back-off multiplier */
	/* In the element of a service's first backend (dmsc_svc_meta's
	 * backend_id[0]) only: the kernel's max_ejection_percent gate for the
	 * whole service, a generation, odd while a CPU ejects one of its
	 * backends (docs/design.md decision 35). What was padding: the
	 * value's size is unchanged. */
	__u32 eject_gate;
};

/*
 * dmsc_be_verdict: ARRAY indexed by backend id, written by dmscd only
 * (BPF_F_LOCK; the apply zeroes it with dmsc_be_health when a backend id is
 * given up). The kernel reads `out` (max_ejection_percent's count) and
 * ejection_ended; dmsc-l7 both in its picks.
 */
struct dmsc_be_verdict {
	struct bpf_spin_lock lock;
	__u32 out;	    /* enum dmsc_health_out */
	__u64 out_since_ns; /* CLOCK_MONOTONIC */
	/* A restarted backend: the ejected_at_ns of the ejection dmscd ended
	 * early. Every reader takes that ejection as over
	 * (dmsc_health_ejected); the counter's writer clears it in its own
	 * element at its next failure (dmsc_health_take_end). */
	__u64 ejection_ended;
	__u32 probe_ok;	    /* active probes that passed in a row */
	__u32 probe_failed; /* active probes that failed in a row */
	__s32 probe_detail; /* last failed probe: -errno, or its HTTP status */
	__u32 probes;	    /* active probes sent */
};

/* How long the n-th ejection in a row lasts: n times the base, at most the
 * max (both in ms; the result in ns). */
static inline __u64 dmsc_ejection_ns(const struct dmsc_svc_health *cfg, __u32 n)
{
	__u64 ms = (__u64)cfg->base_ejection_ms * (n ? n : 1);

	if (ms > cfg->max_ejection_ms)
		ms = cfg->max_ejection_ms;
	return ms * DMSC_NS_PER_MS;
}

/*
 * max_ejection_percent: may one more of a service's n backends be ejected
 * while `ejected` are? Always the first one (as Envoy does: a cap below
 * one backend would make passive health useless on small services).
 */
static inline int dmsc_health_may_eject(const struct dmsc_svc_health *cfg, __u32 ejected, __u32 n)
{
	if (!cfg->max_eject_pct || cfg->max_eject_pct >= 100 || !ejected)
		return 1;
	return (__u64)(ejected + 1) * 100 <= (__u64)cfg->max_eject_pct * n;
}

/* Is the backend ejected at now: its counter's ejection runs, and dmscd
 * did not end it (ended: dmsc_be_verdict.ejection_ended, 0 if none)? */
static inline int dmsc_health_ejected(const struct dmsc_be_health *h, __u64 ended, __u64 now)
{
	return h->ejected_until_ns > now && h->ejected_at_ns != ended;
}

/* For max_ejection_percent: is the backend ejected at now, by its counter
 * or in dmscd's verdict? (Userspace's count; the kernel's, branch-free,
 * is health.bpf.c's count_ejected.) */
static inline int dmsc_health_counts_ejected(const struct dmsc_be_health *h,
					     const struct dmsc_be_verdict *v, __u64 now)
{
	return v->out == DMSC_HEALTH_OUT_EJECTED || dmsc_health_ejected(h, v->ejection_ended, now);
}

/* The counter's writer, under h->lock, before it counts: an ejection dmscd
 * ended (ended, as above) ends in the counter's own element too, so the
 * failures after it count towards a new run. */
static inline void dmsc_health_take_end(struct dmsc_be_health *h, __u64 ended)
{
	if (h->ejected_until_ns && h->ejected_at_ns == ended) {
		h->ejected_until_ns = 0;
		h->consecutive = 0;
	}
}

/* Does the next failure of this backend complete a run (the caller then
 * checks max_ejection_percent)? Read without the lock: a hint. */
static inline int dmsc_health_would_eject(const struct dmsc_be_health *h, __u64 ended,
					  const struct dmsc_svc_health *cfg, __u64 now)
{
	return cfg->eject_after && !dmsc_health_ejected(h, ended, now) &&
	       h->consecutive + 1 >= cfg->eject_after;
}

/*
 * One failed connect to a backend, at now (ns), with room (from
 * dmsc_health_may_eject) to eject it or not. Returns 1 when it ejects the
 * backend; a run completed without room stays one failure short of
 * complete, so the next failure asks again. The kernel runs it under
 * h->lock (no helper calls inside), after dmsc_health_take_end; the unit
 * tests as it is. An ejection
 * counts as "in a row" when the last one ended less than max_ejection_ms
 * before; the count of failures starts again after each ejection.
 */
static inline int dmsc_health_failed_room(struct dmsc_be_health *h,
					  const struct dmsc_svc_health *cfg, __u64 now, int room)
{
	h->failures++;
	if (h->ejected_until_ns > now) {
		/* Connects picked before the ejection, failing late: the next
		 * ejection needs a fresh run of failures. */
		h->consecutive = 0;
		return 0;
	}
	h->consecutive++;
	if (!cfg->eject_after || h->consecutive < cfg->eject_after)
		return 0;
	if (!room) {
		h->consecutive = cfg->eject_after - 1;
		return 0;
	}
	if (h->ejected_until_ns &&
	    now - h->ejected_until_ns > (__u64)cfg->max_ejection_ms * DMSC_NS_PER_MS)
		h->ejections = 0;
	h->ejections++;
	h->consecutive = 0;
	h->ejected_at_ns = now;
	h->ejected_until_ns = now + dmsc_ejection_ns(cfg, h->ejections);
	return 1;
}

static inline int dmsc_health_failed(struct dmsc_be_health *h, const struct dmsc_svc_health *cfg,
				     __u64 now)
{
	return dmsc_health_failed_room(h, cfg, now, 1);
}

#endif /* DMSC_HEALTH_H */
