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

/* Hosts: one key per host, PREFIX/hosts/NAME, whose value is the address
 * of its tunnel, "IPv4:PORT" or "[IPv6]:PORT", as an entry of a policy file's "hosts"
 * (docs/design.md decision 55). Mesh-wide: a host's name is its
 * certificate's, and its tunnel serves every namespace. */
#define DMSC_ETCD_HOST_VALUE_MAX 64
/* "PREFIX/hosts/" and "PREFIX/hosts/NAME" (malloc'd). */
char *dmsc_etcd_hosts_prefix(const char *prefix);
char *dmsc_etcd_host_key(const char *prefix, const char *name);

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

/*
 * One key a host holds. Its service is kept parsed (svc) until the store
 * is slimmed after an apply (dmsc_etcd_store_slim): from then on a plain
 * service (tcp or udp, IPv4, no health, no allow_from) is held only by
 * what identifies it (its name is the key's NAME) and the fingerprint fp
 * of its policy text, which the apply's mirror compares with what it
 * wrote; the maps and the mirror hold the rest. Services that a view of
 * the whole policy needs (http for dmsc-l7, health for the probes, IPv6
 * and allow_from) stay parsed.
 */
struct dmsc_etcd_entry {
	char *key;
	int64_t mod_rev;
	struct dmsc_policy_service *svc; /* the last valid value; NULL: slim */
	uint64_t fp;			 /* of the last valid value (0: not computed) */
	uint32_t vip;			 /* a slim entry's identity: network order */
	uint16_t port;			 /* host order */
	uint8_t protocol;		 /* enum dmsc_policy_proto */
	bool valid;			 /* a valid value was seen: svc, or slim */
	bool dropped;			 /* left out of the view: its name or vip:port is an
					  * earlier key's */
	bool dirty;			 /* its value changed since the last apply */
};

/* A host's tunnel address (PREFIX/hosts/NAME). */
struct dmsc_etcd_host {
	char *key;
	const char *name; /* into key */
	int64_t mod_rev;
	struct dmsc_host_addr at; /* family 0: no valid value yet */
};

struct dmsc_etcd_store {
	struct dmsc_etcd_entry *e; /* sorted by key */
	size_t n, cap;
	struct dmsc_etcd_host *hosts; /* in arrival order */
	size_t n_hosts;
	bool hosts_dirty; /* a host came, went or moved: unresolved names to log */
	uint64_t refused; /* values refused so far */
	/* Set by the owner: the fingerprint of a service (NULL: no entry is
	 * ever slimmed), and keep_all to keep every service parsed (a view of
	 * the whole policy needs them all, as the tunnel's does). */
	uint64_t (*fp_of)(const struct dmsc_policy_service *svc);
	bool keep_all;
	/* refill: a put of the revision held parses the value again when the
	 * entry is slim (dmsc_etcd_store_slim's services are needed whole) */
	bool refill;
	bool ids_dirty; /* an entry came, went or moved: conflicts to find */
	size_t n_slim;
	size_t n_dirty; /* entries dirty */
	/* The keys of the entries at the last slimming, packed in one block
	 * (a key added since is malloc'd alone): keys left alone between
	 * freed services would keep every page of the heap they sit in. */
	char *keys;
	size_t keys_len;
};

/*
 * A PUT of key at mod_rev: a revision not newer than the one held is
 * ignored (applied once). A value that does not parse is refused: logged
 * with its key, and the key keeps its last valid service (the datapath
 * as it was). Returns 1 when the store changed, 0 when not, -errno.
 */
int dmsc_etcd_store_put(struct dmsc_etcd_store *s, const char *key, const char *name,
			const char *value, size_t len, int64_t mod_rev);
/* A PUT or DELETE of PREFIX/hosts/NAME (name: NAME); a value that is not
 * an address and port is refused and logged, the host keeping its last address.
 * 1 when the store changed, 0 when not, -errno. */
int dmsc_etcd_store_host_put(struct dmsc_etcd_store *s, const char *key, const char *name,
			     const char *value, size_t len, int64_t mod_rev);
int dmsc_etcd_store_host_delete(struct dmsc_etcd_store *s, const char *key, int64_t mod_rev);
/* Removes every host that present() says is gone; 1 when any. */
int dmsc_etcd_store_host_retain(struct dmsc_etcd_store *s,
				bool (*present)(const char *key, void *arg), void *arg);
/* A DELETE: 1 when the key was held. */
int dmsc_etcd_store_delete(struct dmsc_etcd_store *s, const char *key, int64_t mod_rev);
const struct dmsc_etcd_entry *dmsc_etcd_store_find(const struct dmsc_etcd_store *s,
						   const char *key);
/* Removes every key under ns_prefix that keep() says is gone; 1 when any. */
int dmsc_etcd_store_retain(struct dmsc_etcd_store *s, const char *ns_prefix,
			   bool (*present)(const char *key, void *arg), void *arg);
/* The same for the keys under ns_prefix after `after` (NULL: from the
 * first) up to `last` included (NULL: to the last): what one page of a
 * read in key order covers. present() is asked in key order. */
int dmsc_etcd_store_retain_range(struct dmsc_etcd_store *s, const char *ns_prefix,
				 const char *after, const char *last,
				 bool (*present)(const char *key, void *arg), void *arg);
/* After the view's services are in the maps: no entry is dirty, and the
 * parsed services that no view of the whole policy needs are freed (with
 * fp_of set). */
void dmsc_etcd_store_slim(struct dmsc_etcd_store *s);
void dmsc_etcd_store_free(struct dmsc_etcd_store *s);

/*
 * The policy of every valid entry, in key order, as a shallow view: out's
 * services point into the store (release it with
 * dmsc_etcd_store_view_free, and do not change the store while out is in
 * use); a slim entry's service carries
 * its name, family, vip, port and protocol only (no backends). fps (when
 * not NULL): the fingerprint of each service of out. A service
 * whose name or vip:port/protocol an earlier key uses already is left out
 * and named in msgs (up to max_msgs) when the keys changed since the last
 * view. A backend's "host" is resolved through the hosts held (host_at;
 * family 0 when its host has no valid key, named in msgs when the
 * keys or hosts changed since the last view).
 */
int dmsc_etcd_store_view(struct dmsc_etcd_store *s, struct dmsc_policy *out, uint64_t **fps,
			 char **msgs, size_t max_msgs, size_t *n_msgs);
/*
 * A view of some entries only, for an apply that leaves every other
 * service as the mirror holds it (dmsc_mirror_apply_some): with parsed
 * false, the keys whose value changed since the last apply (dirty); with
 * parsed true, every key held parsed (the changed ones, and those a view
 * of the whole policy needs: http, health, IPv6, allow_from), which is
 * what dmsc-l7, the probes and the checks of the build read of a policy
 * that keeps nothing parsed for the tunnel (keep_all). Conflicts are
 * looked for first over every key (one left out is not in the view),
 * hosts resolved, msgs as for dmsc_etcd_store_view
 * (docs/design.md decision 61).
 */
int dmsc_etcd_store_view_some(struct dmsc_etcd_store *s, bool parsed, struct dmsc_policy *out,
			      uint64_t **fps, char **msgs, size_t max_msgs, size_t *n_msgs);
/* An entry's service as a view has it (shallow: see dmsc_etcd_store_view). */
void dmsc_etcd_entry_service(const struct dmsc_etcd_entry *en, struct dmsc_policy_service *out);
/* Releases a view and its fingerprints (fps may be NULL). */
void dmsc_etcd_store_view_free(struct dmsc_policy *view, uint64_t *fps);

/*
 * The view of only the keys whose value changed since the last apply
 * (dirty), in key order, with their fingerprints: what an apply needs when
 * no key came, went or moved and every other service is in the maps as
 * the mirror holds it (docs/design.md decision 57). When a changed key is
 * one the store keeps parsed for a view of the whole policy (http for
 * dmsc-l7, health for the probes, IPv6, allow_from), the view holds every
 * key kept parsed instead, and *parsed says so: all that dmsc-l7, the
 * probes and the checks of the build read of a policy (decision 61).
 * -EAGAIN when the whole view is needed: keys came, went or moved
 * (conflicts to find), the store keeps every service parsed (keep_all:
 * the tunnel's view holds them all), or it has no fingerprints. Release
 * with dmsc_etcd_store_view_free.
 */
int dmsc_etcd_store_view_changed(struct dmsc_etcd_store *s, struct dmsc_policy *out,
				 uint64_t **fps, bool *parsed);

#endif /* DMSC_ETCD_STORE_H */
