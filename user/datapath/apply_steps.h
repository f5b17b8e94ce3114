/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The steps of an apply, shared by dmsc_apply() (apply.c: plans against
 * the maps read back) and dmsc_mirror_apply() (apply_mirror.c: plans against an
 * in-memory mirror of the maps). Library-internal: not for programs.
 */
#ifndef DMSC_STATE_INTERNAL_H
#define DMSC_STATE_INTERNAL_H

#include <limits.h>

#include "apply.h"

/* One write, remembered so that a failure later can put it back. */
struct undo {
	enum dmsc_map_id map;
	union {
		__u32 id;
		struct dmsc_svc_key svc;
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
	bool be_new[DMSC_BACKENDS_PER_SERVICE_MAX];
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
};

/* One map write (or delete) with its undo record; counted in
 * res->entries_written, a no-op on the map in a dry run. */
int dmsc_apply_put(struct apply_ctx *c, enum dmsc_map_id m, const void *key, const void *val);
int dmsc_apply_drop(struct apply_ctx *c, enum dmsc_map_id m, const void *key);
/* Puts back every write recorded in c, newest first. */
void dmsc_apply_rollback(struct apply_ctx *c);
void dmsc_apply_zero_stats(struct apply_ctx *c, enum dmsc_map_id m, __u32 id, size_t vs);
/* Frees the undo records (after success or rollback). */
void dmsc_apply_ctx_release(struct apply_ctx *c);

/* Removes the backend index entries of a service that goes. */
int dmsc_plan_be_index_drops(struct apply_ctx *c, const struct dmsc_state_svc *s);

/* Every allow rule the maps hold, sorted by (service, cgroup). */
int dmsc_read_allow(const struct dmsc_datapath *dp, struct dmsc_allow_entry **out, size_t *n);

/* A free id in 1..max-1, marked used; 0 when every id is taken. */
__u32 dmsc_alloc_id(unsigned char *used, __u32 max, __u32 *next);
void dmsc_policy_svc_key(const struct dmsc_policy_service *w, struct dmsc_svc_key *k);

/* Compiles p->want against p->cur (NULL: a new service) into p; detail
 * describes the difference. -ENOSPC when ids ran out. */
int dmsc_plan_service(struct apply_ctx *c, struct plan_svc *p, char *detail, size_t dlen);
/* New backends, meta, the service element (the atomic flip), then the
 * backends the service dropped. */
int dmsc_plan_write(struct apply_ctx *c, const struct plan_svc *p);
/* The service element first, then its meta, backends, limits, its allow
 * rules (given: what the maps hold for it) and backend index entries. */
int dmsc_plan_remove(struct apply_ctx *c, const struct dmsc_state_svc *s,
		     const struct dmsc_allow_entry *rules, size_t n_rules);

#endif /* DMSC_STATE_INTERNAL_H */
