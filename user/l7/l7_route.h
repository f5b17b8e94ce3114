/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * dmsc-l7's routing tables, compiled from a policy: per http service, its
 * routes in policy order (first match wins) and, per route and for the
 * service as a whole, a weighted slot table of backends built with the same
 * largest-remainder math as the kernel's (include/dmsc/slots.h). Pure: no
 * I/O, no clock, no kernel; the unit tests run it as is.
 */
#ifndef DMSC_L7_ROUTE_H
#define DMSC_L7_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dmsc/shared.h"
#include "policy.h"

/* Backends of one route's selector, by weight. slot[] holds an index into
 * the service's backends plus one; 0 is an empty slot (every weight 0). */
struct dmsc_l7_pick {
	uint16_t slot[DMSC_SLOTS];
	uint32_t n_backends; /* that the selector matched, weight 0 included */
	bool empty;	     /* no backend with a weight above 0 */
};

struct dmsc_l7_route {
	const struct dmsc_route *src; /* match, in the policy */
	struct dmsc_l7_pick pick;
	bool has_timeout_ms, has_retries;
	uint32_t timeout_ms;
	uint32_t retries;
	bool idempotent; /* the route's "idempotent": retried after 502/503, gRPC UNAVAILABLE */
};

struct dmsc_l7_service {
	const struct dmsc_policy_service *src;
	uint32_t vip;	/* network order; 0 for IPv6 */
	uint8_t vip6[16];
	uint16_t vport; /* network order */
	struct dmsc_l7_route *routes;
	size_t n_routes;
	struct dmsc_l7_pick pick; /* no route matched: every backend */
	bool has_request_limit;
	uint64_t requests_per_second, burst;
	/* any affinity: each client's pick is its own (dmsc_l7_request_seed),
	 * salted as the kernel salts it, from the VIP and port; else picks
	 * are random. By header or cookie (src->affinity), a request that
	 * carries one hashes its value instead. */
	bool affinity;
	uint32_t affinity_salt;
};

/* Owns the policy it was built from. */
struct dmsc_l7_config {
	struct dmsc_policy policy;
	struct dmsc_l7_service *svcs; /* protocol http only, sorted by vip:port */
	size_t n_svcs;
};

/* One request as the matcher sees it: views into the parser's buffers,
 * nothing NUL-terminated. */
struct dmsc_l7_header {
	const char *name, *value;
	size_t name_len, value_len;
};

struct dmsc_l7_request {
	const char *method, *path; /* path: without the query */
	size_t method_len, path_len;
	const struct dmsc_l7_header *headers;
	size_t n_headers;
};

/* When a wait of ms milliseconds from now (ns) ends; 0, no end, when ms
 * is 0 (a route without timeout_ms waits as a direct client would:
 * docs/design.md decision 95). */
static inline uint64_t dmsc_l7_deadline(uint64_t now, uint32_t ms)
{
	return ms ? now + (uint64_t)ms * 1000000 : 0;
}

/* A route's timeout and retries (def: none set) and whether a service
 * limits its requests, as a change taken in place may rewrite them while
 * workers read (docs/design.md decision 85): relaxed loads. */
static inline uint32_t dmsc_l7_route_timeout_ms(const struct dmsc_l7_route *r, uint32_t def)
{
	return r && __atomic_load_n(&r->has_timeout_ms, __ATOMIC_RELAXED)
		   ? __atomic_load_n(&r->timeout_ms, __ATOMIC_RELAXED)
		   : def;
}

static inline uint32_t dmsc_l7_route_retries(const struct dmsc_l7_route *r, uint32_t def)
{
	return r && __atomic_load_n(&r->has_retries, __ATOMIC_RELAXED)
		   ? __atomic_load_n(&r->retries, __ATOMIC_RELAXED)
		   : def;
}

static inline bool dmsc_l7_service_limited(const struct dmsc_l7_service *s)
{
	return __atomic_load_n(&s->has_request_limit, __ATOMIC_RELAXED);
}

/* Takes the policy (moved: *policy is emptied). 0 or -ENOMEM. */
int dmsc_l7_config_build(struct dmsc_l7_config *cfg, struct dmsc_policy *policy);
void dmsc_l7_config_free(struct dmsc_l7_config *cfg);

/* The http service at vip:port (network order), or NULL. */
/* The http service of an IPv6 VIP:port (port network order), or NULL. */
const struct dmsc_l7_service *dmsc_l7_service_find6(const struct dmsc_l7_config *cfg,
						    const uint8_t vip6[16], uint16_t vport);

struct sockaddr_storage;
/* A backend's address for connect(), of the service's family; returns its
 * length. */
unsigned int dmsc_l7_backend_sa(const struct dmsc_l7_service *svc, int backend,
				struct sockaddr_storage *ss);

const struct dmsc_l7_service *dmsc_l7_service_find(const struct dmsc_l7_config *cfg, uint32_t vip,
						   uint16_t vport);

/* Index of the first route whose match holds, or -1. */
int dmsc_l7_route_match(const struct dmsc_l7_service *svc, const struct dmsc_l7_request *req);

/* Fills pick from the backends of svc that carry every label of the
 * selector (n == 0: all of them), weights kept. */
void dmsc_l7_pick_build(struct dmsc_l7_pick *pick, const struct dmsc_policy_service *svc,
			const struct dmsc_label *selector, size_t n);

/*
 * A backend index of svc, chosen by weight with the random number r;
 * backends whose bit is set in `tried` (indexes 0..63) are skipped when
 * another one is left, so that a retry goes elsewhere. -1: empty pick.
 */
int dmsc_l7_pick_backend(const struct dmsc_l7_pick *pick, uint32_t r, uint64_t tried);

/*
 * A request's own seed under an affinity (0 without one): the value of the
 * service's header or cookie when req carries it (docs/design.md decision
 * 98), so that one user's requests meet on one backend whichever client
 * sends them; else the client's (decision 97): who, its identity as
 * --max-conns-per-client knows it (client_id: its address within its
 * namespace), and its cgroup. Either keeps to one backend while the
 * weights stay the same.
 */
uint32_t dmsc_l7_request_seed(const struct dmsc_l7_service *svc, const struct dmsc_l7_request *req,
			      uint64_t who, uint64_t cgroup);

/* What a pick starts from: the request's seed under an affinity, else the
 * random number r. */
static inline uint32_t dmsc_l7_pick_seed(const struct dmsc_l7_service *svc, uint32_t seed,
					 uint32_t r)
{
	return svc->affinity ? seed : r;
}

/* The path of a request target: origin-form "/p?q" -> "/p"; absolute-form
 * "http://host/p?q" -> "/p"; "*" and anything else -> itself. */
void dmsc_l7_target_path(const char *url, size_t len, const char **path, size_t *path_len);

#endif /* DMSC_L7_ROUTE_H */
