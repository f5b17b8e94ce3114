/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The steps of an apply, shared by dmsc_apply() (apply.c: plans against
 * the maps read back) and dmsc_mirror_apply() (apply_mirror.c: plans against an
 * in-memory mirror of the maps). Library-internal: not for programs.
 */
#ifndef DMSC_STATE_INTERNAL_H
#define DMSC_STATE_INTERNAL_H

#include <limits.h>

#include "addr.h"
#include "apply.h"

/* One write, remembered so that a failure later can put it back. */
struct undo {
	enum dmsc_map_id map;
	union {
		__u32 id;
		struct dmsc_svc_key svc;
		struct dmsc_svc6_key svc6;
		struct dmsc_allow_key allow;
	} key;
	bool existed;
	void *old;
};

struct plan_svc {
	const struct dmsc_policy_service *want; /* NULL: remove */
	const struct dmsc_state_svc *cur;       /* NULL: add */
	struct dmsc_svc_key key;
	struct dmsc_svc svc;
	struct dmsc_svc_meta meta;
	struct dmsc_limits limits;
	struct dmsc_backend be[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 be6[DMSC_BACKENDS_PER_SERVICE_MAX][4]; /* an IPv6 service (want->family) */
	bool be_new[DMSC_BACKENDS_PER_SERVICE_MAX];
	unsigned char be_out[DMSC_BACKENDS_PER_SERVICE_MAX]; /* health: no slot */
	__u32 drop_be[DMSC_BACKENDS_PER_SERVICE_MAX];
	size_t n_drop;
	/* The service's allow rules: what the maps hold (given by the
	 * caller with cur) and what the policy wants (planned, owned). */
	const struct dmsc_allow_entry *cur_allow;
	size_t n_cur_allow;
	struct dmsc_allow_entry *allow;
	size_t n_allow;
};

struct apply_ctx {
	const struct dmsc_datapath *dp;
	struct dmsc_apply_result *res;
	bool dry_run;
	struct undo *undo;
	size_t n_undo, cap_undo;
	unsigned char *svc_used; /* by id */
	unsigned char *be_used;
	__u32 next_svc, next_be;  /* where the free-id search resumes */
	char cg_root[PATH_MAX];
	/* The install record is marked "apply in progress" (at the first
	 * write, dmsc_apply_begin) until dmsc_apply_finish. */
	bool begun;
	/* $DMSC_TEST_KILL_AFTER_WRITES: the process kills itself (SIGKILL)
	 * after that many map writes (the mark counts as one), so that the
	 * tests can stop an apply at every point of its writes. 0: never. */
	unsigned long kill_after, n_writes;
};

/* One map write (or delete) with its undo record; counted in
 * res->entries_written, a no-op on the map in a dry run. */
int dmsc_apply_put(struct apply_ctx *c, enum dmsc_map_id m, const void *key, const void *val);
int dmsc_apply_drop(struct apply_ctx *c, enum dmsc_map_id m, const void *key);
/* Marks the install record before the first write (once per apply; a
 * no-op in a dry run), and counts a write for the test hook. */
int dmsc_apply_begin(struct apply_ctx *c);
void dmsc_apply_written(struct apply_ctx *c);
/* Clears the mark if this apply set it (after success or rollback). */
int dmsc_apply_finish(struct apply_ctx *c);

/*
 * Repairs what an interrupted writer left behind, before anything else is
 * written: every allow rule and backend index entry of a service id that
 * no service entry holds (live[id] == 0), and with `arrays`, the limits,
 * meta, counters and backends of such ids. Writes are not undone by a
 * rollback (they only remove what nobody owns); *n counts them.
 */
int dmsc_apply_sweep(struct apply_ctx *c, const unsigned char *live,
		     const struct dmsc_allow_entry *allow, size_t n_allow,
		     const struct dmsc_be_index_entry *be_index, size_t n_be_index,
		     const struct dmsc_be_index_entry *keep, size_t n_keep, bool arrays,
		     size_t *n);
/* The backend index entries that the services the maps hold own (keep, for
 * dmsc_apply_sweep: a service with a byte limit, each of its backends):
 * appended to *v (sorted by dmsc_be_index_sort when complete). An entry of
 * a live service for a backend it no longer has is an update's leftover. */
int dmsc_be_index_own(struct dmsc_be_index_entry **v, size_t *n, size_t *cap,
		      const struct dmsc_svc_key *svc, __u32 id, __u32 flags,
		      const struct dmsc_backend *be, size_t n_be);
void dmsc_be_index_sort(struct dmsc_be_index_entry *v, size_t n);
bool dmsc_be_index_owned(const struct dmsc_be_index_entry *keep, size_t n_keep,
			 const struct dmsc_be_index_entry *e);
/* Reads the backend index map (sorted by key). */
int dmsc_read_be_index(const struct dmsc_datapath *dp, struct dmsc_be_index_entry **out,
		       size_t *n);

/* An entry of dmsc_be_mtls (map DMSC_M_BE_MTLS, the 8-byte key in the
 * first bytes of key, the rest zero) or dmsc_be_mtls6: the guard's index of
 * this host's backends (docs/design.md decisions 33, 70 and 74). */
struct dmsc_be_mtls_entry {
	enum dmsc_map_id map;
	unsigned char key[sizeof(struct dmsc_svc6_key)];
	__u32 id; /* the backend id it names */
};

/* The index entries a service the maps hold needs (each guarded backend's
 * address:port under its id), appended to *v; sort with
 * dmsc_be_mtls_sort when complete. */
int dmsc_be_mtls_own(struct dmsc_be_mtls_entry **v, size_t *n, size_t *cap,
		     const struct dmsc_state_svc *s);
void dmsc_be_mtls_sort(struct dmsc_be_mtls_entry *v, size_t n);
/* Whether dmsc_be_mtls or dmsc_be_mtls6 holds an entry that dmsc_be_mtls_sweep
 * would write: *found. */
int dmsc_be_mtls_stale(const struct dmsc_datapath *dp, const struct dmsc_be_mtls_entry *keep,
		       size_t n_keep, bool *found);
/* docs/design.md decision 74: makes both indexes hold what keep (sorted)
 * needs and nothing else: an entry whose address:port no guarded backend
 * has is deleted; one whose address:port a guarded backend has but that
 * names no such backend is pointed at one (before any deletion). Not
 * undone by a rollback; logged, counted in *n. */
int dmsc_be_mtls_sweep(struct apply_ctx *c, const struct dmsc_be_mtls_entry *keep, size_t n_keep,
		       size_t *n);

/* Puts back every write recorded in c, newest first. */
void dmsc_apply_rollback(struct apply_ctx *c);
void dmsc_apply_zero_stats(struct apply_ctx *c, enum dmsc_map_id m, __u32 id, size_t vs);
/* Frees the undo records (after success or rollback). */
void dmsc_apply_ctx_release(struct apply_ctx *c);

/* Removes the backend index entries (dmsc_be_index, dmsc_be_mtls) of a
 * service that goes. */
int dmsc_plan_be_index_drops(struct apply_ctx *c, const struct dmsc_state_svc *s);

/* Every allow rule the maps hold, sorted by (service, cgroup). */
int dmsc_read_allow(const struct dmsc_datapath *dp, struct dmsc_allow_entry **out, size_t *n);

/* A free id in 1..max-1, marked used; 0 when every id is taken. */
__u32 dmsc_alloc_id(unsigned char *used, __u32 max, __u32 *next);

/* Compiles p->want against p->cur (NULL: a new service) into p; detail
 * describes the difference. -ENOSPC when ids ran out. */
int dmsc_plan_service(struct apply_ctx *c, struct plan_svc *p, char *detail, size_t dlen);
/* New backends, meta, the service element (the atomic flip), then the
 * backends the service dropped. A new service (p->cur NULL) writes its
 * meta first and clears whatever its id holds (limits; p->cur_allow: rules
 * the maps hold under its id) before its element is published, so it never
 * inherits the state of an id's former owner. */
int dmsc_plan_write(struct apply_ctx *c, const struct plan_svc *p);
/* The service element first, then its counters, limits, allow rules
 * (given: what the maps hold for it), backend index entries, backends, and
 * its meta last: an id without a service entry whose meta is not zero has
 * state to clear (dmsc_apply_sweep). */
int dmsc_plan_remove(struct apply_ctx *c, const struct dmsc_state_svc *s,
		     const struct dmsc_allow_entry *rules, size_t n_rules);

/* Shared between the apply's files. */
/* apply.c */
const struct dmsc_state_svc *find_cur(const struct dmsc_state *st,
				      const struct dmsc_state_svc **idx,
				      const struct dmsc_svc_key *k, const uint8_t *vip6,
				      unsigned char *matched);

/* apply_state.c */
int allow_cmp(const void *a, const void *b);
/* A service's identity from its key in dmsc_services (key) or, when key6
 * is not NULL, in dmsc_services6: its family, its port and protocol (and
 * IPv4 VIP) in *k, its IPv6 VIP in vip6 (left as it is for IPv4: zeros). */
void svc_ident(const struct dmsc_svc_key *key, const struct dmsc_svc6_key *key6, int *family,
	       struct dmsc_svc_key *k, __u32 vip6[4]);

/* apply_plan.c */
void change(struct apply_ctx *c, enum dmsc_change_op op, const char *name, const char *detail);
bool limits_cfg_equal(const struct dmsc_limits *a, const struct dmsc_limits *b);
void be_index_key(struct dmsc_svc_key *k, const struct dmsc_backend *be, __u8 proto);
int be_index_drops(struct apply_ctx *c, const struct dmsc_state_svc *cur, const struct plan_svc *p);
int be_mtls_drops(struct apply_ctx *c, const struct dmsc_state_svc *cur, const struct plan_svc *p);
void mark_used(struct apply_ctx *c, const struct dmsc_state *st);

#endif /* DMSC_STATE_INTERNAL_H */
