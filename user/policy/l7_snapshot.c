// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The L7 view of a policy (l7_snapshot.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "addr.h"
#include "l7_snapshot.h"

/* json-c's adders return 0 or -1; these keep the first failure. */
static void put(struct json_object *o, const char *key, struct json_object *v, int *err)
{
	if (!v || json_object_object_add(o, key, v)) {
		json_object_put(v);
		*err = -ENOMEM;
	}
}

static void push(struct json_object *a, struct json_object *v, int *err)
{
	if (!v || json_object_array_add(a, v)) {
		json_object_put(v);
		*err = -ENOMEM;
	}
}

static struct json_object *string_map(const struct dmsc_label *l, size_t n, int *err)
{
	struct json_object *o = json_object_new_object();
	size_t i;

	for (i = 0; o && i < n; i++)
		put(o, l[i].key, json_object_new_string(l[i].value), err);
	if (!o)
		*err = -ENOMEM;
	return o;
}

/* family: the service's (an IPv6 service's backends are IPv6). */
static struct json_object *backend_json(const struct dmsc_policy_backend *b, int family, bool mtls,
					bool l7_via_host, int *err)
{
	struct json_object *o = json_object_new_object();
	char addr[INET6_ADDRSTRLEN];

	if (!o) {
		*err = -ENOMEM;
		return NULL;
	}
	dmsc_format_ip(family, b->addr, b->addr6, addr, sizeof(addr));
	put(o, "address", json_object_new_string(addr), err);
	put(o, "port", json_object_new_int(b->port), err);
	put(o, "weight", json_object_new_int64(b->weight), err);
	if (b->n_labels)
		put(o, "labels", string_map(b->labels, b->n_labels, err), err);
	/* a host with no tunnel address yet (etcd: no hosts/NAME key) is left
	 * out: the tunnel resets what is handed to it for this backend.
	 * dmsc-l7's view names every host of a service whose mtls is not off,
	 * without addresses (it reads it with DMSC_POLICY_HOSTS_ELSEWHERE):
	 * it sends what goes to another host's backend through this host's
	 * tunnel (docs/design.md decision 75), which knows the addresses. */
	if (b->host && (mtls ? b->host_at.family != 0 : l7_via_host))
		put(o, "host", json_object_new_string(b->host), err);
	return o;
}

static struct json_object *route_json(const struct dmsc_route *r, int *err)
{
	struct json_object *o = json_object_new_object(), *m = json_object_new_object();

	if (!o || !m) {
		json_object_put(o);
		json_object_put(m);
		*err = -ENOMEM;
		return NULL;
	}
	if (r->match.path_prefix)
		put(m, "path_prefix", json_object_new_string(r->match.path_prefix), err);
	if (r->match.path)
		put(m, "path", json_object_new_string(r->match.path), err);
	if (r->match.method)
		put(m, "method", json_object_new_string(r->match.method), err);
	if (r->match.n_headers)
		put(m, "headers", string_map(r->match.headers, r->match.n_headers, err), err);
	put(o, "match", m, err);
	if (r->n_selector)
		put(o, "backends", string_map(r->selector, r->n_selector, err), err);
	if (r->has_timeout_ms)
		put(o, "timeout_ms", json_object_new_int64(r->timeout_ms), err);
	if (r->has_retries)
		put(o, "retries", json_object_new_int64(r->retries), err);
	if (r->idempotent)
		put(o, "idempotent", json_object_new_boolean(1), err);
	return o;
}

/* A service's health as the policy said it, every field (the helper's
 * picks pass over the backends it says are out; docs/l7.md "Health"). */
static struct json_object *health_json(const struct dmsc_health *h, int *err)
{
	struct json_object *o = json_object_new_object(), *a;
	const struct dmsc_health_active *ac = &h->active;
	const struct dmsc_health_passive *pa = &h->passive;

	if (!o) {
		*err = -ENOMEM;
		return NULL;
	}
	if (h->has_active) {
		a = json_object_new_object();
		if (a) {
			put(a, "type",
			    json_object_new_string(ac->type == DMSC_PROBE_HTTP ? "http" : "tcp"), err);
			if (ac->type == DMSC_PROBE_HTTP) {
				put(a, "path", json_object_new_string(ac->path ? ac->path : "/"),
				    err);
				put(a, "expected_status", json_object_new_int64(ac->expected_status),
				    err);
			}
			put(a, "interval_ms", json_object_new_int64(ac->interval_ms), err);
			put(a, "timeout_ms", json_object_new_int64(ac->timeout_ms), err);
			put(a, "unhealthy_threshold", json_object_new_int64(ac->unhealthy_threshold),
			    err);
			put(a, "healthy_threshold", json_object_new_int64(ac->healthy_threshold),
			    err);
		}
		put(o, "active", a, err);
	}
	if (h->has_passive) {
		a = json_object_new_object();
		if (a) {
			put(a, "consecutive_failures",
			    json_object_new_int64(pa->consecutive_failures), err);
			put(a, "base_ejection_ms", json_object_new_int64(pa->base_ejection_ms), err);
			put(a, "max_ejection_ms", json_object_new_int64(pa->max_ejection_ms), err);
			put(a, "max_ejection_percent",
			    json_object_new_int64(pa->max_ejection_percent), err);
		}
		put(o, "passive", a, err);
	}
	return o;
}

static const char *const proto_names[] = {
    [DMSC_POLICY_TCP] = "tcp",
    [DMSC_POLICY_UDP] = "udp",
    [DMSC_POLICY_HTTP] = "http",
};

/* mtls: the service's own protocol and its allow_from, no L7 fields (the
 * tunnel's view); otherwise the L7 fields of an http service. */
static struct json_object *service_json(const struct dmsc_policy_service *s, bool mtls, int *err)
{
	struct json_object *o = json_object_new_object(), *a;
	char vip[INET6_ADDRSTRLEN];
	size_t i;

	if (!o) {
		*err = -ENOMEM;
		return NULL;
	}
	dmsc_format_ip(s->family, s->vip, s->vip6, vip, sizeof(vip));
	put(o, "name", json_object_new_string(s->name), err);
	put(o, "vip", json_object_new_string(vip), err);
	put(o, "port", json_object_new_int(s->port), err);
	put(o, "protocol", json_object_new_string(proto_names[s->protocol]), err);
	a = json_object_new_array();
	for (i = 0; a && i < s->n_backends; i++)
		push(a, backend_json(&s->backends[i], s->family, mtls, s->mtls != DMSC_MTLS_OFF, err),
		     err);
	put(o, "backends", a, err);
	if (!mtls && s->mtls != DMSC_MTLS_OFF)
		put(o, "mtls", json_object_new_string(dmsc_mtls_mode_name(s->mtls)), err);
	if (mtls) {
		put(o, "mtls", json_object_new_string(dmsc_mtls_mode_name(s->mtls)), err);
		if (s->has_allow_from) {
			a = json_object_new_array();
			for (i = 0; a && i < s->n_allow_from; i++)
				push(a, json_object_new_string(s->allow_from[i]), err);
			put(o, "allow_from", a, err);
		}
		return o;
	}
	if (s->has_rate_limit && s->rate_limit.has_requests_per_second) {
		struct json_object *rl = json_object_new_object();

		if (rl) {
			put(rl, "requests_per_second",
			    json_object_new_int64((int64_t)s->rate_limit.requests_per_second), err);
			if (s->rate_limit.has_burst)
				put(rl, "burst",
				    json_object_new_int64((int64_t)s->rate_limit.burst), err);
		}
		put(o, "rate_limit", rl, err);
	}
	if (s->has_health)
		put(o, "health", health_json(&s->health, err), err);
	if (s->affinity == DMSC_AFFINITY_CLIENT)
		put(o, "affinity", json_object_new_string("client"), err);
	if (s->affinity == DMSC_AFFINITY_HEADER || s->affinity == DMSC_AFFINITY_COOKIE) {
		struct json_object *a = json_object_new_object();

		if (a)
			put(a, s->affinity == DMSC_AFFINITY_HEADER ? "header" : "cookie",
			    json_object_new_string(s->affinity_name), err);
		put(o, "affinity", a, err);
	}
	if (s->n_routes) {
		a = json_object_new_array();
		for (i = 0; a && i < s->n_routes; i++)
			push(a, route_json(&s->routes[i], err), err);
		put(o, "routes", a, err);
	}
	return o;
}

/* The hosts the backends name, each with the tunnel address its file's
 * "hosts" gave it (the first one seen, should two files disagree). */
static struct json_object *hosts_json(const struct dmsc_policy *p, int *err)
{
	struct json_object *o = json_object_new_object();
	char ap[DMSC_ADDR_PORT_LEN];
	size_t i, j;

	if (!o) {
		*err = -ENOMEM;
		return NULL;
	}
	for (i = 0; i < p->n_services; i++)
		for (j = 0; j < p->services[i].n_backends; j++) {
			const struct dmsc_policy_backend *b = &p->services[i].backends[j];

			if (!b->host || !b->host_at.family ||
			    json_object_object_get_ex(o, b->host, NULL))
				continue;
			dmsc_host_addr_format(&b->host_at, ap, sizeof(ap));
			put(o, b->host, json_object_new_string(ap), err);
		}
	return o;
}

static int view_json(const struct dmsc_policy *p, bool mtls, char **out, size_t *len)
{
	struct json_object *root = json_object_new_object(), *a = json_object_new_array();
	const char *text;
	int err = 0;
	size_t i;

	*out = NULL;
	*len = 0;
	if (!root || !a) {
		json_object_put(root);
		json_object_put(a);
		return -ENOMEM;
	}
	for (i = 0; i < p->n_services; i++)
		if (mtls || p->services[i].protocol == DMSC_POLICY_HTTP)
			push(a, service_json(&p->services[i], mtls, &err), &err);
	put(root, "services", a, &err);
	if (mtls)
		put(root, "hosts", hosts_json(p, &err), &err);
	text = err ? NULL : json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	if (text) {
		*len = strlen(text);
		*out = strdup(text);
	}
	json_object_put(root);
	if (!*out) {
		*len = 0;
		return -ENOMEM;
	}
	return 0;
}

int dmsc_l7_view_json(const struct dmsc_policy *p, char **out, size_t *len)
{
	return view_json(p, false, out, len);
}

int dmsc_mtls_view_json(const struct dmsc_policy *p, char **out, size_t *len)
{
	return view_json(p, true, out, len);
}

/* Drops from obj[key] (an array of objects) each member named in drop. */
static void strip_each(struct json_object *obj, const char *key, const char *const *drop)
{
	struct json_object *a;
	size_t i, k;

	if (!json_object_object_get_ex(obj, key, &a) || !json_object_is_type(a, json_type_array))
		return;
	for (i = 0; i < json_object_array_length(a); i++) {
		struct json_object *o = json_object_array_get_idx(a, i);

		if (json_object_is_type(o, json_type_object))
			for (k = 0; drop[k]; k++)
				json_object_object_del(o, drop[k]);
	}
}

/* Drops from a view what a running helper takes in place. */
static void strip_values(struct json_object *view)
{
	static const char *const svc[] = {"rate_limit", NULL}, *const backend[] = {"weight", NULL},
				 *const route[] = {"timeout_ms", "retries", NULL};
	struct json_object *svcs;
	size_t i;

	strip_each(view, "services", svc);
	if (!json_object_object_get_ex(view, "services", &svcs) ||
	    !json_object_is_type(svcs, json_type_array))
		return;
	for (i = 0; i < json_object_array_length(svcs); i++) {
		strip_each(json_object_array_get_idx(svcs, i), "backends", backend);
		strip_each(json_object_array_get_idx(svcs, i), "routes", route);
	}
}

bool dmsc_l7_view_values_only(const char *cur, const char *next)
{
	struct json_object *a = json_tokener_parse(cur), *b = json_tokener_parse(next);
	bool same = false;

	if (a && b) {
		strip_values(a);
		strip_values(b);
		same = json_object_equal(a, b);
	}
	json_object_put(a);
	json_object_put(b);
	return same;
}
