/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What the pinned maps hold, read back into memory, and the apply that
 * turns a policy into the few map writes that differ from it.
 */
#ifndef DMSC_STATE_H
#define DMSC_STATE_H

#include <stdbool.h>
#include <stddef.h>

#include "datapath.h"
#include "policy.h"

/* One service as the kernel holds it. An IPv6 service (family AF_INET6)
 * is keyed in dmsc_services6 by vip6 with key's port and protocol; in
 * memory its key.vip and be[].addr are 0, its addresses in vip6 and be6. */
struct dmsc_state_svc {
	struct dmsc_svc_key key;
	int family; /* AF_INET, AF_INET6 */
	__u32 vip6[4];
	struct dmsc_svc svc;
	struct dmsc_svc_meta meta;
	struct dmsc_backend be[DMSC_BACKENDS_PER_SERVICE_MAX]; /* meta.backend_id order */
	__u32 be6[DMSC_BACKENDS_PER_SERVICE_MAX][4];
	unsigned int be_slots[DMSC_BACKENDS_PER_SERVICE_MAX];  /* slots each really got */
	struct dmsc_limits limits; /* read under the element's lock */
};

struct dmsc_allow_entry {
	struct dmsc_allow_key key;
	struct dmsc_allow_rule rule;
};

struct dmsc_be_index_entry {
	struct dmsc_svc_key key;
	__u32 svc_id;
};

struct dmsc_state {
	struct dmsc_state_svc *svcs;
	size_t n_svcs;
	struct dmsc_allow_entry *allow; /* sorted by key */
	size_t n_allow;
	struct dmsc_be_index_entry *be_index; /* sorted by key */
	size_t n_be_index;
};

/* The allow rules of one service: a pointer into st->allow and a count. */
const struct dmsc_allow_entry *dmsc_state_allow(const struct dmsc_state *st, __u32 svc_id,
						size_t *n);

/* Reads every service, its meta and backends; services sorted by name. */
int dmsc_state_read(const struct dmsc_datapath *dp, struct dmsc_state *st);
void dmsc_state_free(struct dmsc_state *st);

enum dmsc_change_op {
	DMSC_CHANGE_ADD,
	DMSC_CHANGE_UPDATE,
	DMSC_CHANGE_REMOVE,
};

struct dmsc_change {
	enum dmsc_change_op op;
	char service[DMSC_NAME_MAX];
	char detail[512];
};

struct dmsc_apply_result {
	struct dmsc_change *changes;
	size_t n_changes;
	size_t entries_written; /* map elements written or deleted */
	size_t entries_deferred; /* of those, left for later (dmsc_mirror_apply) */
	size_t n_services;      /* in the policy */
	size_t unresolved;      /* allow_from paths with no cgroup yet */
	size_t repaired;        /* entries an interrupted apply left, cleared */
	bool rolled_back;
};

/*
 * Makes the datapath hold exactly the policy, writing only what differs.
 * Per service the order is: new backend entries, meta, then the one service
 * element that switches the slot table, then the removed backends; so a
 * connect() sees either the old table or the new one, each complete.
 * The whole apply is checked against capacity before the first write, and
 * a write that fails rolls back every write before it. The install record
 * is marked "apply in progress" from the first write to the last, and what
 * an apply killed half-way left (state of ids without a service) is cleared
 * before anything else is written (res->repaired).
 * dry_run: plan and report, write nothing. dp must be opened with lock.
 */
int dmsc_apply(const struct dmsc_datapath *dp, const struct dmsc_policy *p, bool dry_run,
	       struct dmsc_apply_result *res);
void dmsc_apply_result_free(struct dmsc_apply_result *res);

/* Long applies report progress: fn(done, total, arg) is called every few
 * thousand services while dmsc_apply plans and writes, and once at the end
 * (done == total). NULL (the default) reports nothing. */
typedef void (*dmsc_progress_fn)(const char *phase, size_t done, size_t total, void *arg);
void dmsc_apply_set_progress(dmsc_progress_fn fn, void *arg);

/* The name of the host applies run on (its certificate's NAME,
 * docs/mtls.md), copied: a backend whose "host" is another one, of a
 * service whose "mtls" is not off, is flagged DMSC_BE_F_TUNNEL. NULL (the
 * default, dmscctl apply): no backend is, every one is reached directly. */
void dmsc_apply_set_host(const char *name);
/* The name set, "" for none. */
const char *dmsc_apply_host(void);

const char *dmsc_change_op_name(enum dmsc_change_op op);

/* The kernel's key of a policy service. */
void dmsc_policy_svc_key(const struct dmsc_policy_service *w, struct dmsc_svc_key *k);

/* "198.19.0.10:9080" (IPv4 only; dmsc_format_backend for either family). */
void dmsc_format_addr_port(__u32 addr_be, __u16 port_be, char *buf, size_t len);
/* "198.19.0.10:9080/tcp", "[2001:2::10]:80/tcp" for an IPv6 service (vip6). */
void dmsc_format_svc_key(const struct dmsc_svc_key *k, int family, const __u32 *vip6, char *buf,
			  size_t len);
/* Orders services by key (IPv6 ones by vip6 too), for lookups. */
int dmsc_svc_key_cmp(const struct dmsc_svc_key *a, const __u32 *a6, const struct dmsc_svc_key *b,
		     const __u32 *b6);
/* The kernel key of an IPv6 service. */
void dmsc_svc6_key(const struct dmsc_svc_key *k, const __u32 *vip6, struct dmsc_svc6_key *out);
/* A backend's address:port, either family (be6: its IPv6 address or NULL). */
void dmsc_format_backend(const struct dmsc_backend *be, const __u32 *be6, int family, char *buf,
			 size_t len);
/* As dmsc_format_svc_key, with "/http" for a service handed to dmsc-l7. */
void dmsc_format_service(const struct dmsc_state_svc *s, char *buf, size_t len);

#endif /* DMSC_STATE_H */
