// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dmsc/slots.h"
#include "cmp.h"
#include "hash.h"
#include "l7_route.h"

static bool backend_selected(const struct dmsc_policy_backend *b, const struct dmsc_label *sel,
			     size_t n)
{
	size_t i, j;

	for (i = 0; i < n; i++) {
		bool found = false;

		for (j = 0; j < b->n_labels && !found; j++)
			found = strcmp(b->labels[j].key, sel[i].key) == 0 &&
				strcmp(b->labels[j].value, sel[i].value) == 0;
		if (!found)
			return false;
	}
	return true;
}

void dmsc_l7_pick_build(struct dmsc_l7_pick *pick, const struct dmsc_policy_service *svc,
			const struct dmsc_label *selector, size_t n)
{
	__u32 weight[DMSC_BACKENDS_PER_SERVICE_MAX], counts[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 ids[DMSC_BACKENDS_PER_SERVICE_MAX], slot[DMSC_SLOTS];
	__u64 key[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 k = 0;
	size_t i;

	memset(pick, 0, sizeof(*pick));
	for (i = 0; i < svc->n_backends && k < DMSC_BACKENDS_PER_SERVICE_MAX; i++) {
		const struct dmsc_policy_backend *b = &svc->backends[i];

		if (!backend_selected(b, selector, n))
			continue;
		weight[k] = b->weight;
		ids[k] = (__u32)i + 1;
		key[k] = svc->family == AF_INET6 ? dmsc_slot_key(b->addr6, 16, htons(b->port))
						 : dmsc_slot_key(&b->addr, 4, htons(b->port));
		k++;
	}
	pick->n_backends = k;
	if (dmsc_slot_counts(weight, k, counts) == 0) {
		pick->empty = true;
		return;
	}
	/* affinity: a change of weights moves few clients (decision 97) */
	if (svc->affinity != DMSC_AFFINITY_NONE)
		dmsc_slot_layout_stable(counts, ids, key, k, slot);
	else
		dmsc_slot_layout(counts, ids, k, slot);
	for (i = 0; i < DMSC_SLOTS; i++)
		pick->slot[i] = (uint16_t)slot[i];
}

/* The value of the first header named name (lower case) that has one. */
static bool header_value(const struct dmsc_l7_request *req, const char *name, const char **v,
			 size_t *len)
{
	size_t n = strlen(name), i;

	for (i = 0; i < req->n_headers; i++) {
		const struct dmsc_l7_header *h = &req->headers[i];

		if (h->name_len == n && strncasecmp(h->name, name, n) == 0 && h->value_len) {
			*v = h->value;
			*len = h->value_len;
			return true;
		}
	}
	return false;
}

/* The value of cookie name in the Cookie fields of req ("a=1; b=2", RFC
 * 6265 5.4; HTTP/2 may split them over several fields, RFC 9113 8.2.3):
 * the first non-empty one. */
static bool cookie_value(const struct dmsc_l7_request *req, const char *name, const char **v,
			 size_t *len)
{
	size_t n = strlen(name), i;

	for (i = 0; i < req->n_headers; i++) {
		const struct dmsc_l7_header *h = &req->headers[i];
		const char *p = h->value, *end = h->value + h->value_len, *e;

		if (h->name_len != 6 || strncasecmp(h->name, "cookie", 6) != 0)
			continue;
		while (p < end) {
			while (p < end && (*p == ' ' || *p == '\t' || *p == ';'))
				p++;
			e = memchr(p, ';', (size_t)(end - p));
			if (!e)
				e = end;
			if ((size_t)(e - p) > n + 1 && memcmp(p, name, n) == 0 && p[n] == '=') {
				*v = p + n + 1;
				*len = (size_t)(e - *v);
				return true;
			}
			p = e;
		}
	}
	return false;
}

uint32_t dmsc_l7_request_seed(const struct dmsc_l7_service *svc, const struct dmsc_l7_request *req,
			      uint64_t who, uint64_t cgroup)
{
	const char *v = NULL;
	size_t len = 0;
	bool found = false;

	if (!svc->affinity)
		return 0;
	if (svc->src->affinity == DMSC_AFFINITY_HEADER)
		found = header_value(req, svc->src->affinity_name, &v, &len);
	else if (svc->src->affinity == DMSC_AFFINITY_COOKIE)
		found = cookie_value(req, svc->src->affinity_name, &v, &len);
	/* a value names a user wherever it comes from: no cgroup in it */
	if (found)
		return dmsc_affinity_hash(dmsc_fnv1a(DMSC_FNV1A_INIT, v, len), 0,
					  svc->affinity_salt);
	return dmsc_affinity_hash(who, cgroup, svc->affinity_salt);
}

int dmsc_l7_pick_backend(const struct dmsc_l7_pick *pick, uint32_t r, uint64_t tried)
{
	uint32_t start = dmsc_slot_index(r), i;
	int first = -1;

	/* (relaxed loads: dmsc-l7 copies a change of weights over the table
	 * while workers pick, docs/design.md decision 85) */
	if (__atomic_load_n(&pick->empty, __ATOMIC_RELAXED))
		return -1;
	/* Bounded: one walk over the table from a random slot. */
	for (i = 0; i < DMSC_SLOTS; i++) {
		uint16_t id =
		    __atomic_load_n(&pick->slot[(start + i) & DMSC_SLOT_MASK], __ATOMIC_RELAXED);
		int idx;

		if (!id)
			continue;
		idx = id - 1;
		if (first < 0)
			first = idx;
		if (idx >= 64 || !(tried & (1ull << idx)))
			return idx;
	}
	return first; /* every backend tried: go round again */
}

void dmsc_l7_target_path(const char *url, size_t len, const char **path, size_t *path_len)
{
	const char *p = url, *end = url + len, *q;

	if (len >= 7 && (strncasecmp(url, "http://", 7) == 0 ||
			 (len >= 8 && strncasecmp(url, "https://", 8) == 0))) {
		p = memchr(url, ':', len) + 3;
		q = memchr(p, '/', (size_t)(end - p));
		if (!q) {
			*path = "/";
			*path_len = 1;
			return;
		}
		p = q;
	}
	q = memchr(p, '?', (size_t)(end - p));
	if (q)
		end = q;
	q = memchr(p, '#', (size_t)(end - p));
	if (q)
		end = q;
	*path = p;
	*path_len = (size_t)(end - p);
}

static bool header_present(const struct dmsc_l7_request *req, const struct dmsc_label *want)
{
	size_t nlen = strlen(want->key), vlen = strlen(want->value), i;

	for (i = 0; i < req->n_headers; i++) {
		const struct dmsc_l7_header *h = &req->headers[i];

		/* names are case-insensitive (RFC 9110, 5.1), values exact */
		if (h->name_len == nlen && strncasecmp(h->name, want->key, nlen) == 0 &&
		    h->value_len == vlen && memcmp(h->value, want->value, vlen) == 0)
			return true;
	}
	return false;
}

static bool route_matches(const struct dmsc_route_match *m, const struct dmsc_l7_request *req)
{
	size_t i, n;

	if (m->path) {
		n = strlen(m->path);
		if (req->path_len != n || memcmp(req->path, m->path, n) != 0)
			return false;
	}
	if (m->path_prefix) {
		n = strlen(m->path_prefix);
		if (req->path_len < n || memcmp(req->path, m->path_prefix, n) != 0)
			return false;
	}
	if (m->method) {
		/* methods are case-sensitive (RFC 9110, 9.1) */
		n = strlen(m->method);
		if (req->method_len != n || memcmp(req->method, m->method, n) != 0)
			return false;
	}
	for (i = 0; i < m->n_headers; i++)
		if (!header_present(req, &m->headers[i]))
			return false;
	return true;
}

int dmsc_l7_route_match(const struct dmsc_l7_service *svc, const struct dmsc_l7_request *req)
{
	size_t i;

	for (i = 0; i < svc->n_routes; i++)
		if (route_matches(&svc->routes[i].src->match, req))
			return (int)i;
	return -1;
}

static int svc_cmp(const void *a, const void *b)
{
	const struct dmsc_l7_service *x = a, *y = b;
	int c = DMSC_CMP(x->vip, y->vip);

	c = c ? c : memcmp(x->vip6, y->vip6, sizeof(x->vip6));
	return c ? c : DMSC_CMP(x->vport, y->vport);
}

int dmsc_l7_config_build(struct dmsc_l7_config *cfg, struct dmsc_policy *policy)
{
	size_t i, j, n = 0;

	memset(cfg, 0, sizeof(*cfg));
	cfg->policy = *policy;
	memset(policy, 0, sizeof(*policy));
	cfg->svcs = calloc(cfg->policy.n_services + 1, sizeof(*cfg->svcs));
	if (!cfg->svcs)
		goto nomem;
	for (i = 0; i < cfg->policy.n_services; i++) {
		const struct dmsc_policy_service *ps = &cfg->policy.services[i];
		struct dmsc_l7_service *s = &cfg->svcs[n];

		if (ps->protocol != DMSC_POLICY_HTTP)
			continue;
		n++;
		cfg->n_svcs = n;
		s->src = ps;
		s->vip = ps->vip;
		if (ps->family == AF_INET6)
			memcpy(s->vip6, ps->vip6, sizeof(s->vip6));
		s->vport = htons(ps->port);
		dmsc_l7_pick_build(&s->pick, ps, NULL, 0);
		if (ps->affinity != DMSC_AFFINITY_NONE) {
			__u32 vip6[4];

			memcpy(vip6, s->vip6, sizeof(vip6));
			s->affinity = true;
			s->affinity_salt = ps->family == AF_INET6
					       ? dmsc_affinity_salt(vip6, 4, s->vport)
					       : dmsc_affinity_salt(&s->vip, 1, s->vport);
		}
		if (ps->has_rate_limit && ps->rate_limit.has_requests_per_second) {
			s->has_request_limit = true;
			s->requests_per_second = ps->rate_limit.requests_per_second;
			s->burst = ps->rate_limit.has_burst ? ps->rate_limit.burst : 0;
		}
		s->routes = calloc(ps->n_routes + 1, sizeof(*s->routes));
		if (!s->routes)
			goto nomem;
		s->n_routes = ps->n_routes;
		for (j = 0; j < ps->n_routes; j++) {
			const struct dmsc_route *r = &ps->routes[j];
			struct dmsc_l7_route *lr = &s->routes[j];

			lr->src = r;
			/* no selector: the route uses every backend */
			dmsc_l7_pick_build(&lr->pick, ps, r->selector, r->n_selector);
			lr->has_timeout_ms = r->has_timeout_ms;
			lr->timeout_ms = r->timeout_ms;
			lr->has_retries = r->has_retries;
			lr->retries = r->retries;
			lr->idempotent = r->idempotent;
		}
	}
	if (n > 1)
		qsort(cfg->svcs, n, sizeof(*cfg->svcs), svc_cmp);
	return 0;
nomem:
	dmsc_l7_config_free(cfg);
	return -ENOMEM;
}

void dmsc_l7_config_free(struct dmsc_l7_config *cfg)
{
	size_t i;

	for (i = 0; cfg->svcs && i < cfg->n_svcs; i++)
		free(cfg->svcs[i].routes);
	free(cfg->svcs);
	dmsc_policy_free(&cfg->policy);
	memset(cfg, 0, sizeof(*cfg));
}

const struct dmsc_l7_service *dmsc_l7_service_find(const struct dmsc_l7_config *cfg, uint32_t vip,
						   uint16_t vport)
{
	struct dmsc_l7_service key = {.vip = vip, .vport = vport};

	if (!cfg->n_svcs)
		return NULL;
	return bsearch(&key, cfg->svcs, cfg->n_svcs, sizeof(key), svc_cmp);
}

const struct dmsc_l7_service *dmsc_l7_service_find6(const struct dmsc_l7_config *cfg,
						    const uint8_t vip6[16], uint16_t vport)
{
	struct dmsc_l7_service key = {.vport = vport};

	if (!cfg->n_svcs)
		return NULL;
	memcpy(key.vip6, vip6, sizeof(key.vip6));
	return bsearch(&key, cfg->svcs, cfg->n_svcs, sizeof(key), svc_cmp);
}

unsigned int dmsc_l7_backend_sa(const struct dmsc_l7_service *svc, int backend,
				struct sockaddr_storage *ss)
{
	const struct dmsc_policy_backend *b = &svc->src->backends[backend];
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof(*ss));
	if (svc->src->family == AF_INET6) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(b->port);
		memcpy(&a6->sin6_addr, b->addr6, sizeof(b->addr6));
		return sizeof(*a6);
	}
	a4->sin_family = AF_INET;
	a4->sin_port = htons(b->port);
	a4->sin_addr.s_addr = b->addr;
	return sizeof(*a4);
}
