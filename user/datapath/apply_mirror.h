/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * An in-memory mirror of what the pinned maps hold, indexed by service key,
 * for a long-running writer (dmscd). It is read from the maps once (which is
 * how a restarted dmscd adopts a running datapath), then kept in step with
 * every apply, so that an apply costs one pass over the policy and the map
 * writes that differ: no syscall for a service that did not change.
 *
 * A service is unchanged when the fingerprint of its policy text (every
 * field of struct dmsc_policy_service) equals the one recorded when it was
 * last written. After a restart no fingerprint is known; the first apply
 * compiles every service and compares it with the maps (writing nothing
 * when they agree), and records the fingerprints.
 *
 * Other writers (dmscctl apply, install) bump the install record's
 * generation (an apply when it starts and when it is done, so that one
 * killed half-way is seen too); an apply that finds it changed, or finds
 * other maps than it mirrored (a reinstall), reads the maps again first.
 */
#ifndef DMSC_MIRROR_H
#define DMSC_MIRROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "datapath.h"
#include "policy.h"
#include "apply.h"

struct dmsc_mirror_be {
	__u32 id;
	__u32 weight;
	__u32 addr; /* network order; 0 for IPv6 (its address: dmsc_mirror_be6) */
	__u16 port; /* network order */
	__u8 out;   /* health keeps it out of the slot table */
	__u8 flags; /* enum dmsc_be_flags (each fits in 8 bits) */
};

/* What the apply's diff compares per service: its key and the fingerprint
 * of its policy text. Computed for a policy with the parse (compile step),
 * so that the diff walks two arrays of these and nothing else. */
struct dmsc_svc_digest {
	struct dmsc_svc_key key;
	__u32 vip6[4]; /* an IPv6 service (key.vip 0): its VIP; else zero */
	uint64_t fp; /* 0: unknown */
};

/* Per service, what only the slow path (a service that changed) reads. */
struct dmsc_mirror_hot {
	__u32 pass;  /* the apply that matched it by its key (index) */
	__u32 stale; /* the kernel's slot table is not what meta implies */
};

/*
 * What a service holds beyond the plain case (IPv4, no rate limits, no
 * health settings, no allow rules): most services of a large mesh have
 * none of it, and the mirror keeps a pointer for them instead of 140
 * bytes (docs/design.md decision 59).
 */
struct dmsc_mirror_ext {
	__u32 vip6[4];                  /* an IPv6 service's VIP; else zero */
	struct dmsc_limits limits;      /* the configuration part only */
	struct dmsc_svc_health health;  /* passive settings, as in the element */
	struct dmsc_allow_entry *allow; /* its rules, sorted by key */
	size_t n_allow;
	__u32 n_be6;      /* n_be when a backend has an IPv6 address; else 0 */
	__u32 be6[][4];   /* the backends' IPv6 addresses: n_be6 */
};

/* The ext of a service without one: every field zero. */
extern const struct dmsc_mirror_ext dmsc_mirror_ext_none;

struct dmsc_mirror_svc {
	struct dmsc_svc_key key; /* == dig[i].key */
	__u32 id;
	__u32 flags;
	__u32 n_be;
	int family;                  /* AF_INET, AF_INET6 */
	const char *name;            /* into be's block, after be[n_be] */
	struct dmsc_mirror_be *be;   /* n_be, then the name: one block */
	struct dmsc_mirror_ext *ext; /* NULL: none (dmsc_mirror_ext_none) */
};

static inline const struct dmsc_mirror_ext *dmsc_mirror_ext(const struct dmsc_mirror_svc *ms)
{
	return ms->ext ? ms->ext : &dmsc_mirror_ext_none;
}

/* == dig[i].vip6 */
static inline const __u32 *dmsc_mirror_vip6(const struct dmsc_mirror_svc *ms)
{
	return dmsc_mirror_ext(ms)->vip6;
}

/* Backend j's IPv6 address (zero for an IPv4 service). */
static inline const __u32 *dmsc_mirror_be6(const struct dmsc_mirror_svc *ms, size_t j)
{
	return ms->ext && j < ms->ext->n_be6 ? ms->ext->be6[j] : dmsc_mirror_ext_none.vip6;
}

/*
 * Lays ms out anew: n_be backends (zeroed, for the caller to fill), the
 * name (cut to DMSC_NAME_MAX - 1 bytes), and an ext only when one of
 * vip6, limits (its configuration part), health, allow or be6 (n_be
 * addresses; NULL: none) is not zero. On success the blocks ms held are
 * freed; on -ENOMEM ms is as it was.
 */
int dmsc_mirror_svc_shape(struct dmsc_mirror_svc *ms, int family, const __u32 *vip6,
			  const char *name, __u32 n_be, const __u32 (*be6)[4],
			  const struct dmsc_limits *limits, const struct dmsc_svc_health *health,
			  const struct dmsc_allow_entry *allow, size_t n_allow);
/* Frees what ms points to (zeroing those fields). */
void dmsc_mirror_svc_release(struct dmsc_mirror_svc *ms);

/* A backend id that no service references any more, zeroed in the map
 * once no connect() can still hold the slot table that named it. */
struct dmsc_pending_drop {
	__u32 id;
	int64_t due_ms; /* CLOCK_MONOTONIC */
};

struct dmsc_mirror {
	struct dmsc_mirror_svc *svcs; /* in the order of the last policy */
	struct dmsc_svc_digest *dig;  /* parallel to svcs: what the diff compares */
	struct dmsc_mirror_hot *hot;  /* parallel to svcs */
	size_t n, cap;
	__u32 *index; /* open addressing: svcs index + 1; 0 empty */
	size_t index_cap;
	unsigned char *svc_used, *be_used; /* by id */
	__u32 max_services, max_backends;
	__u32 next_svc, next_be;
	size_t n_backends;
	__u64 generation;      /* of the install record when last in step */
	unsigned int services_map_id;
	__u32 pass;
	/* Removed backends wait this long before their entry is zeroed
	 * (0: zeroed by the apply itself, as dmsc_apply does). */
	unsigned int drop_delay_ms;
	struct dmsc_pending_drop *drops;
	size_t n_drops, cap_drops;
	bool loaded;
	/* The last load found allow rules or backend index entries of ids that
	 * no service holds (left by an interrupted writer): the next apply
	 * clears them first (dmsc_apply_sweep), as it does all per-id state
	 * of such ids when the install record says an apply was interrupted. */
	bool orphans;
};

/* Fingerprint of one policy service: FNV-1a over every field. Never 0. */
uint64_t dmsc_policy_service_fp(const struct dmsc_policy_service *s);
/* Key and fingerprint of every service of p into d[0..n_services). */
void dmsc_policy_digests(const struct dmsc_policy *p, struct dmsc_svc_digest *d);

/* The allow rules as they are in the maps now (sorted by key), after
 * another write of dmsc_allow alone (allow_resolve.h). */
int dmsc_mirror_take_allow(struct dmsc_mirror *m, const struct dmsc_allow_entry *rules, size_t n);

/* Reads the maps into m (freeing what m held). */
int dmsc_mirror_load(struct dmsc_mirror *m, const struct dmsc_datapath *dp);
void dmsc_mirror_free(struct dmsc_mirror *m);
/* Forgets the fingerprint of the service at k, so that the next apply
 * plans it again (its backends' health changed): returns false when the
 * mirror does not hold it. */
bool dmsc_mirror_replan(struct dmsc_mirror *m, const struct dmsc_svc_key *k, const __u32 *vip6);
/* Forgets every fingerprint, so that the next apply compiles and compares
 * every service (the benchmark's "full rewrite" also marks them stale). */
void dmsc_mirror_forget(struct dmsc_mirror *m, bool stale);
/* Whether m is in step with the maps of dp (no other writer since, the
 * same maps): an apply would not read them again. */
bool dmsc_mirror_in_step(const struct dmsc_mirror *m, const struct dmsc_datapath *dp);
/* Whether an apply of a policy with the service of digest d (at position
 * pos) would pass over it: m holds its key with that fingerprint, known
 * and not stale. */
bool dmsc_mirror_holds(const struct dmsc_mirror *m, const struct dmsc_svc_digest *d, size_t pos);
/* vip6: an IPv6 service's VIP, zero for IPv4. */
const struct dmsc_mirror_svc *dmsc_mirror_find(const struct dmsc_mirror *m,
					       const struct dmsc_svc_key *k, const __u32 *vip6);

/*
 * dmsc_apply() against the mirror: the same plan, the same order of writes,
 * the same rollback, the same result. d: one digest per policy service
 * (dmsc_policy_digests), computed by the caller with the parse.
 * dp must be opened with the lock. On success the mirror holds the policy.
 */
int dmsc_mirror_apply(struct dmsc_mirror *m, const struct dmsc_datapath *dp,
		      const struct dmsc_policy *p, const struct dmsc_svc_digest *d, bool dry_run,
		      struct dmsc_apply_result *res);

/* dmsc_mirror_apply() of some services only: p holds services that changed
 * or are new, and every other service m holds stays as it is (none is
 * removed), unless keep is given: then a service that is neither in p nor
 * in keep (n_keep digests) is removed, and the others keep their order.
 * For a writer that knows which services changed (dmscd's etcd store,
 * docs/design.md decisions 57 and 61); the mirror must be in step with
 * dp for that knowledge to hold. res->n_services: every service m holds. */
int dmsc_mirror_apply_some(struct dmsc_mirror *m, const struct dmsc_datapath *dp,
			   const struct dmsc_policy *p, const struct dmsc_svc_digest *d,
			   const struct dmsc_svc_digest *keep, size_t n_keep,
			   struct dmsc_apply_result *res);

/* Zeroes pending backend entries that are due (all of them with force).
 * Returns the number written, or a negative errno. dp must be locked. */
int dmsc_mirror_flush_drops(struct dmsc_mirror *m, const struct dmsc_datapath *dp, int64_t now_ms,
			    bool force);
/* Milliseconds until the next pending drop is due; -1: none. */
int dmsc_mirror_next_drop_ms(const struct dmsc_mirror *m, int64_t now_ms);

#endif /* DMSC_MIRROR_H */
