/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Policy in etcd: one key per service, PREFIX/ns/NAMESPACE/services/NAME,
 * whose value is one service object of policy v1 (the same JSON as an
 * element of a policy file's "services"). This file holds the key layout,
 * the parse of one value (validated like a file, errors naming the key),
 * and the store: what a host holds of its namespaces, key by key, from
 * which a policy is assembled for the incremental apply.
 */
#ifndef DMSC_ETCD_STORE_H
#define DMSC_ETCD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

#define DMSC_ETCD_DEFAULT_PREFIX "/dmsc"
/* Largest service value accepted: a service with 256 backends, labels and
 * routes is well under it; a larger value is refused, its key named. */
#define DMSC_ETCD_VALUE_MAX (128u << 10)
#define DMSC_ETCD_NS_MAX 63

/* Whether ns is a namespace name: 1-63 of [a-z0-9._-]. */
bool dmsc_etcd_ns_valid(const char *ns);
/* "PREFIX/ns/NS/services/" (malloc'd). */
char *dmsc_etcd_ns_prefix(const char *prefix, const char *ns);
/* "PREFIX/ns/NS/services/NAME" (malloc'd). */
char *dmsc_etcd_service_key(const char *prefix, const char *ns, const char *name);
/* The NAME of a key under ns_prefix, or NULL when the key is not directly
 * below it. Points into key. */
const char *dmsc_etcd_key_name(const char *key, const char *ns_prefix);

/*
 * Parses one value stored at key (whose NAME is name) into out, a policy of
 * exactly one service. Returns 0, or -EINVAL with one sentence per problem
 * in errs (paths relative to the service: "backends[0].weight"), or another
 * negative errno. The value must be one JSON object, at most
 * DMSC_ETCD_VALUE_MAX bytes, whose "name" is name.
 */
int dmsc_etcd_parse_service(const char *value, size_t len, const char *name,
			    struct dmsc_policy *out, struct dmsc_policy_errors *errs);
/* The errors of a failed parse on one line: "key K: p1: m1; p2: m2". */
void dmsc_etcd_format_errors(const char *key, const struct dmsc_policy_errors *errs, int err,
			     char *buf, size_t len);

/* One key a host holds. */
struct dmsc_etcd_entry {
	char *key;
	int64_t mod_rev;
	bool valid;           /* svc holds a service */
	struct dmsc_policy svc; /* one service, the last valid value */
	size_t value_len;
};

struct dmsc_etcd_store {
	struct dmsc_etcd_entry *e; /* sorted by key */
	size_t n, cap;
	uint64_t refused; /* values refused so far */
};

/*
 * A PUT of key at mod_rev: a revision not newer than the one held is
 * ignored (applied once). A value that does not parse is refused: logged
 * with its key, and the key keeps its last valid service (the datapath
 * as it was). Returns 1 when the store changed, 0 when not, -errno.
 */
int dmsc_etcd_store_put(struct dmsc_etcd_store *s, const char *key, const char *name,
			const char *value, size_t len, int64_t mod_rev);
/* A DELETE: 1 when the key was held. */
int dmsc_etcd_store_delete(struct dmsc_etcd_store *s, const char *key, int64_t mod_rev);
const struct dmsc_etcd_entry *dmsc_etcd_store_find(const struct dmsc_etcd_store *s,
						    const char *key);
/* Removes every key under ns_prefix that keep() says is gone; 1 when any. */
int dmsc_etcd_store_retain(struct dmsc_etcd_store *s, const char *ns_prefix,
			   bool (*present)(const char *key, void *arg), void *arg);
void dmsc_etcd_store_free(struct dmsc_etcd_store *s);

/*
 * The policy of every valid entry, in key order, as a shallow view: out's
 * services point into the store (free only out->services, and do not
 * change the store while out is in use). A service whose name or
 * vip:port/protocol an earlier key uses already is left out and named in
 * msgs (up to max_msgs).
 */
int dmsc_etcd_store_view(const struct dmsc_etcd_store *s, struct dmsc_policy *out,
			 char **msgs, size_t max_msgs, size_t *n_msgs);

#endif /* DMSC_ETCD_STORE_H */
