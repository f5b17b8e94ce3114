// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's mirror, the fingerprints: a service's digest (FNV-1a over every
 * field the datapath holds), so an unchanged service costs no map access.
 */
#include "mirror_steps.h"

/* ---- fingerprint ---------------------------------------------------- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= FNV_PRIME;
	}
	return h;
}

static uint64_t fnv_u64(uint64_t h, uint64_t v)
{
	return fnv(h, &v, sizeof(v));
}

/* A string with its terminator, so that "ab","c" and "a","bc" differ;
 * NULL hashes differently from "". */
static uint64_t fnv_str(uint64_t h, const char *s)
{
	if (!s)
		return fnv_u64(h, 0x6e756c6cull);
	return fnv(h, s, strlen(s) + 1);
}

static uint64_t fnv_labels(uint64_t h, const struct dmsc_label *l, size_t n)
{
	size_t i;

	h = fnv_u64(h, n);
	for (i = 0; i < n; i++) {
		h = fnv_str(h, l[i].key);
		h = fnv_str(h, l[i].value);
	}
	return h;
}

/* Every field of struct dmsc_policy_service: a field added to the policy
 * must be added here, or a change of it alone would go unnoticed by dmscd
 * (test_mirror.c checks each field that exists). */
uint64_t dmsc_policy_service_fp(const struct dmsc_policy_service *s)
{
	const struct dmsc_rate_limit *rl = &s->rate_limit;
	uint64_t h = FNV_OFFSET;
	size_t i;

	h = fnv_str(h, s->name);
	h = fnv_u64(h, (uint64_t)s->family);
	h = fnv_u64(h, s->vip);
	h = fnv(h, s->vip6, sizeof(s->vip6));
	h = fnv_u64(h, s->port);
	h = fnv_u64(h, s->protocol);
	h = fnv_u64(h, s->accelerate);
	h = fnv_u64(h, s->affinity);
	h = fnv_str(h, s->affinity_name);
	h = fnv_u64(h, s->n_backends);
	for (i = 0; i < s->n_backends; i++) {
		const struct dmsc_policy_backend *b = &s->backends[i];

		h = fnv_u64(h, b->addr);
		h = fnv(h, b->addr6, sizeof(b->addr6));
		h = fnv_u64(h, b->port);
		h = fnv_u64(h, b->weight);
		h = fnv_labels(h, b->labels, b->n_labels);
		h = fnv_str(h, b->host); /* with mtls: its backend flags */
	}
	h = fnv_u64(h, s->mtls);
	h = fnv_u64(h, s->has_rate_limit);
	if (s->has_rate_limit) {
		h = fnv_u64(h, (uint64_t)rl->has_connections_per_second << 4 |
				       (uint64_t)rl->has_burst << 3 |
				       (uint64_t)rl->has_bytes_per_second << 2 |
				       (uint64_t)rl->has_bytes_burst << 1 |
				       (uint64_t)rl->has_requests_per_second);
		h = fnv_u64(h, rl->connections_per_second);
		h = fnv_u64(h, rl->burst);
		h = fnv_u64(h, rl->bytes_per_second);
		h = fnv_u64(h, rl->bytes_burst);
		h = fnv_u64(h, rl->requests_per_second);
	}
	h = fnv_u64(h, s->has_allow_from);
	h = fnv_u64(h, s->n_allow_from);
	for (i = 0; i < s->n_allow_from; i++)
		h = fnv_str(h, s->allow_from[i]);
	h = fnv_u64(h, s->n_routes);
	for (i = 0; i < s->n_routes; i++) {
		const struct dmsc_route *r = &s->routes[i];

		h = fnv_str(h, r->match.path_prefix);
		h = fnv_str(h, r->match.path);
		h = fnv_str(h, r->match.method);
		h = fnv_labels(h, r->match.headers, r->match.n_headers);
		h = fnv_labels(h, r->selector, r->n_selector);
		h = fnv_u64(h, (uint64_t)r->has_timeout_ms << 1 | r->has_retries);
		h = fnv_u64(h, r->timeout_ms);
		h = fnv_u64(h, r->retries);
	}
	h = fnv_u64(h, (uint64_t)s->has_health << 2 | (uint64_t)s->health.has_active << 1 |
			       s->health.has_passive);
	if (s->health.has_active) {
		const struct dmsc_health_active *a = &s->health.active;

		h = fnv_u64(h, a->type);
		h = fnv_str(h, a->path);
		h = fnv_u64(h, a->expected_status);
		h = fnv_u64(h, (uint64_t)a->interval_ms << 32 | a->timeout_ms);
		h = fnv_u64(h, (uint64_t)a->unhealthy_threshold << 32 | a->healthy_threshold);
	}
	if (s->health.has_passive) {
		const struct dmsc_health_passive *pa = &s->health.passive;

		h = fnv_u64(h, pa->consecutive_failures);
		h = fnv_u64(h, (uint64_t)pa->base_ejection_ms << 32 | pa->max_ejection_ms);
	}
	return h ? h : 1;
}

void dmsc_policy_digests(const struct dmsc_policy *p, struct dmsc_svc_digest *d)
{
	size_t i;

	for (i = 0; i < p->n_services; i++) {
		dmsc_policy_svc_key(&p->services[i], &d[i].key);
		memcpy(d[i].vip6, p->services[i].vip6, sizeof(d[i].vip6));
		d[i].fp = dmsc_policy_service_fp(&p->services[i]);
	}
}
