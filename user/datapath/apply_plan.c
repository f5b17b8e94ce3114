// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl's apply, one service planned and written: limits, allow rules,
 * backend index adds and drops, the service written or removed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "array.h"
#include "dmsc/slots.h"
#include "allow_resolve.h"
#include "log.h"
#include "apply.h"
#include "apply_steps.h"
#include "health.h"

void change(struct apply_ctx *c, enum dmsc_change_op op, const char *name,
		   const char *detail)
{
	struct dmsc_change *ch = &c->res->changes[c->res->n_changes++];

	ch->op = op;
	snprintf(ch->service, sizeof(ch->service), "%s", name);
	snprintf(ch->detail, sizeof(ch->detail), "%s", detail);
}

static void __attribute__((format(printf, 3, 4)))
append(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;

	if (used >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

/* The kernel-side limits of a service: rates and bucket depths, the
 * buckets themselves empty (a changed limit starts with full buckets). */
static void plan_limits(struct plan_svc *p)
{
	const struct dmsc_policy_service *w = p->want;
	const struct dmsc_rate_limit *rl = &w->rate_limit;

	memset(&p->limits, 0, sizeof(p->limits));
	if (w->accelerate == DMSC_ACCEL_OFF)
		p->svc.flags |= DMSC_SVC_F_ACCEL_OFF;
	if (w->accelerate == DMSC_ACCEL_ON)
		p->svc.flags |= DMSC_SVC_F_ACCEL_ON;
	if (w->protocol == DMSC_POLICY_HTTP)
		p->svc.flags |= DMSC_SVC_F_L7;
	/* (affinity by header or cookie: connections that the kernel balances,
	 * at L4, as under client: decision 98) */
	if (w->affinity != DMSC_AFFINITY_NONE)
		p->svc.flags |= DMSC_SVC_F_AFFINITY;
	if (w->has_allow_from)
		p->svc.flags |= DMSC_SVC_F_ALLOW_LIST;
	if (!w->has_rate_limit)
		return;
	if (rl->has_connections_per_second) {
		p->svc.flags |= DMSC_SVC_F_CONN_LIMIT;
		p->limits.conn_rate = rl->connections_per_second;
		/* burst: connections at once on top of the rate; absent, one
		 * second's worth, at most the deepest bucket (the validator
		 * bounds an explicit burst so; a rate may be higher); never
		 * less than one. */
		p->limits.conn_depth = rl->has_burst ? rl->burst : rl->connections_per_second;
		if (p->limits.conn_depth > DMSC_TB_DEPTH_MAX)
			p->limits.conn_depth = DMSC_TB_DEPTH_MAX;
		if (p->limits.conn_depth == 0)
			p->limits.conn_depth = 1;
	}
	if (rl->has_bytes_per_second) {
		/* Flows of a byte-limited service stay on the path that polices
		 * them: never on the same-host fast path (docs/design.md decision 6). */
		p->svc.flags |= DMSC_SVC_F_BYTES_LIMIT | DMSC_SVC_F_ACCEL_OFF;
		p->svc.flags &= ~(__u32)DMSC_SVC_F_ACCEL_ON;
		p->limits.byte_rate = rl->bytes_per_second;
		/* Absent: 100 ms worth, at least one GSO packet. */
		p->limits.byte_depth = rl->has_bytes_burst ? rl->bytes_burst
							   : rl->bytes_per_second / 10;
		if (p->limits.byte_depth < DMSC_BYTES_BURST_MIN)
			p->limits.byte_depth = DMSC_BYTES_BURST_MIN;
		if (p->limits.byte_depth > DMSC_TB_DEPTH_MAX)
			p->limits.byte_depth = DMSC_TB_DEPTH_MAX;
	}
}

bool limits_cfg_equal(const struct dmsc_limits *a, const struct dmsc_limits *b)
{
	return a->conn_rate == b->conn_rate && a->conn_depth == b->conn_depth &&
	       a->byte_rate == b->byte_rate && a->byte_depth == b->byte_depth;
}

/* Resolves each allow_from path to its cgroup id now; a path with no
 * cgroup yet gets an id that no cgroup has (DMSC_ALLOW_UNRESOLVED), so the
 * service stays closed to everyone else until it appears. dmscd resolves
 * every rule again when cgroups appear and go (allow_resolve.h); without
 * dmscd, the ids stay those of this apply. */
static int plan_allow(struct apply_ctx *c, struct plan_svc *p)
{
	const struct dmsc_policy_service *w = p->want;
	size_t i;

	if (!w->has_allow_from || !w->n_allow_from)
		return 0;
	if (!c->cg_root[0] && dmsc_cgroup2_mount(c->cg_root, sizeof(c->cg_root)))
		return -ENOENT;
	p->allow = calloc(w->n_allow_from, sizeof(*p->allow));
	if (!p->allow)
		return -ENOMEM;
	for (i = 0; i < w->n_allow_from; i++) {
		struct dmsc_allow_entry *e = &p->allow[p->n_allow++];

		e->key.svc_id = p->svc.id;
		snprintf(e->rule.path, sizeof(e->rule.path), "%s", w->allow_from[i]);
		e->key.cgroup_id = dmsc_allow_resolve(c->cg_root, e->rule.path);
		if (e->key.cgroup_id & DMSC_ALLOW_UNRESOLVED)
			c->res->unresolved++;
	}
	/* The same cgroup listed twice is one rule. */
	qsort(p->allow, p->n_allow, sizeof(*p->allow), allow_cmp);
	for (i = 1; i < p->n_allow;) {
		if (allow_cmp(&p->allow[i - 1], &p->allow[i]) == 0) {
			memmove(&p->allow[i], &p->allow[i + 1],
				(p->n_allow - i - 1) * sizeof(*p->allow));
			p->n_allow--;
		} else {
			i++;
		}
	}
	return 0;
}

static const struct dmsc_allow_entry *find_allow(const struct dmsc_allow_entry *a, size_t n,
						 const struct dmsc_allow_key *k)
{
	return n ? bsearch(k, a, n, sizeof(*a), allow_cmp) : NULL;
}

static bool allow_changed(const struct plan_svc *p)
{
	return p->n_allow != p->n_cur_allow ||
	       (p->n_allow && memcmp(p->allow, p->cur_allow, p->n_allow * sizeof(*p->allow)));
}

/* Rules the policy wants and the maps lack (or hold with another path). */
static int allow_adds(struct apply_ctx *c, const struct plan_svc *p)
{
	size_t i;
	int err;

	for (i = 0; i < p->n_allow; i++) {
		const struct dmsc_allow_entry *have =
			find_allow(p->cur_allow, p->n_cur_allow, &p->allow[i].key);

		if (have && !memcmp(have, &p->allow[i], sizeof(*have)))
			continue;
		err = dmsc_apply_put(c, DMSC_M_ALLOW, &p->allow[i].key, &p->allow[i].rule);
		if (err)
			return err;
	}
	return 0;
}

/* Rules the maps hold and the policy no longer wants. */
static int allow_drops(struct apply_ctx *c, const struct plan_svc *p)
{
	size_t i;
	int err;

	for (i = 0; i < p->n_cur_allow; i++) {
		if (find_allow(p->allow, p->n_allow, &p->cur_allow[i].key))
			continue;
		err = dmsc_apply_drop(c, DMSC_M_ALLOW, &p->cur_allow[i].key);
		if (err)
			return err;
	}
	return 0;
}

void be_index_key(struct dmsc_svc_key *k, const struct dmsc_backend *be, __u8 proto)
{
	memset(k, 0, sizeof(*k));
	k->vip = be->addr;
	k->port = be->port;
	k->proto = proto;
}

/* Whether backend i of a and backend j of b are one address and port. */
static bool same_backend(int family, const struct dmsc_backend *a, const __u32 *a6,
			 const struct dmsc_backend *b, const __u32 *b6)
{
	return a->addr == b->addr && a->port == b->port &&
	       (family != AF_INET6 || memcmp(a6, b6, 4 * sizeof(__u32)) == 0);
}

/* A backend's key in its family's index: dmsc_be_index, or dmsc_be_index6
 * for an IPv6 one (TC parses both, docs/design.md decision 34). */
static enum dmsc_map_id be_index_of(int family, const struct dmsc_backend *be, const __u32 *be6,
				    __u8 proto, struct dmsc_svc_key *k, struct dmsc_svc6_key *k6)
{
	be_index_key(k, be, proto);
	if (family != AF_INET6)
		return DMSC_M_BE_INDEX;
	dmsc_svc6_key(k, be6, k6);
	return DMSC_M_BE_INDEX6;
}

/* A byte-limited service indexes its backends for TC; a backend shared by
 * two such services is indexed under the one written last. */
static int be_index_adds(struct apply_ctx *c, const struct plan_svc *p)
{
	bool had = p->cur && (p->cur->svc.flags & DMSC_SVC_F_BYTES_LIMIT);
	int family = p->want->family;
	struct dmsc_svc6_key k6;
	struct dmsc_svc_key k;
	enum dmsc_map_id m;
	size_t i, j;
	int err;

	if (!(p->svc.flags & DMSC_SVC_F_BYTES_LIMIT))
		return 0;
	for (i = 0; i < p->meta.n_backends; i++) {
		for (j = 0; had && j < p->cur->meta.n_backends; j++)
			if (same_backend(family, &p->cur->be[j], p->cur->be6[j], &p->be[i],
					 p->be6[i]))
				break;
		if (had && j < p->cur->meta.n_backends)
			continue; /* indexed already */
		m = be_index_of(family, &p->be[i], p->be6[i], p->key.proto, &k, &k6);
		err = dmsc_apply_put(c, m, m == DMSC_M_BE_INDEX6 ? (const void *)&k6 : &k,
				     &p->svc.id);
		if (err)
			return err;
	}
	return 0;
}

/* Removes index entries of `cur`'s backends that `p` (NULL: the service
 * goes) no longer indexes, if they still name this service. */
int be_index_drops(struct apply_ctx *c, const struct dmsc_state_svc *cur,
			  const struct plan_svc *p)
{
	bool keep_any = p && (p->svc.flags & DMSC_SVC_F_BYTES_LIMIT);
	struct dmsc_svc6_key k6;
	struct dmsc_svc_key k;
	enum dmsc_map_id m;
	const void *key;
	__u32 owner;
	size_t i, j;
	int err;

	if (!cur || !(cur->svc.flags & DMSC_SVC_F_BYTES_LIMIT))
		return 0;
	for (i = 0; i < cur->meta.n_backends; i++) {
		for (j = 0; keep_any && j < p->meta.n_backends; j++)
			if (same_backend(cur->family, &p->be[j], p->be6[j], &cur->be[i],
					 cur->be6[i]))
				break;
		if (keep_any && j < p->meta.n_backends)
			continue;
		m = be_index_of(cur->family, &cur->be[i], cur->be6[i], cur->key.proto, &k, &k6);
		key = m == DMSC_M_BE_INDEX6 ? (const void *)&k6 : &k;
		if (bpf_map_lookup_elem(c->dp->fd[m], key, &owner) || owner != cur->svc.id)
			continue;
		err = dmsc_apply_drop(c, m, key);
		if (err)
			return err;
	}
	return 0;
}

/* Backends that health keeps out get no slot (counts laid out again),
 * unless that leaves none (panic). New backends are in. */
static void plan_health(struct apply_ctx *c, struct plan_svc *p, const __u32 *weight,
			__u32 *counts, char *detail, size_t dlen)
{
	__u32 eff[DMSC_BACKENDS_PER_SERVICE_MAX], i, n = p->meta.n_backends, n_out = 0;

	p->svc.flags |= DMSC_SVC_F_HEALTH;
	dmsc_health_svc_config(p->want, &p->svc.health);
	dmsc_health_read_out(c->dp, p->meta.backend_id, n, p->be_out);
	for (i = 0; i < n; i++) {
		if (p->be_new[i])
			p->be_out[i] = 0;
		n_out += p->be_out[i];
	}
	if (!n_out)
		return;
	if (dmsc_health_weights(weight, p->be_out, n, eff)) {
		p->svc.flags |= DMSC_SVC_F_HEALTH_PANIC;
		append(detail, dlen, "health: every backend unhealthy, all kept (panic); ");
	}
	dmsc_slot_counts(eff, n, counts);
}

static char apply_host[DMSC_POLICY_HOST_MAX + 1];

void dmsc_apply_set_host(const char *name)
{
	snprintf(apply_host, sizeof(apply_host), "%s", name ? name : "");
}

const char *dmsc_apply_host(void)
{
	return apply_host;
}

/* docs/design.md decision 24: over the tunnel when the backend is on a
 * named host other than this one. Without a host of its own an apply
 * cannot tell which backends are remote, so none is. A backend named on
 * this host is guarded against plain connections from other hosts
 * (decision 33), and, for a required service with an allow_from, against
 * workloads of this host outside it that connect to its address
 * (decision 44): TCP only, the tunnel carrying only TCP; either family
 * (decisions 64 and 70). */
static __u16 backend_flags(const struct dmsc_policy_service *w, const struct dmsc_policy_backend *b,
			   __u8 proto)
{
	if (dmsc_policy_backend_tunneled(w, b, apply_host))
		return DMSC_BE_F_TUNNEL;
	if (w->mtls == DMSC_MTLS_OFF || !b->host || !apply_host[0])
		return 0;
	if (proto != DMSC_PROTO_TCP)
		return 0;
	if (w->mtls != DMSC_MTLS_REQUIRED)
		return DMSC_BE_F_MTLS_PERMISSIVE;
	/* decision 44: connect4/6 check allow_from straight to the address */
	return DMSC_BE_F_MTLS_REQUIRED | (w->has_allow_from ? DMSC_BE_F_MTLS_ALLOW_LIST : 0);
}

/* A guarded backend's key in its family's index: dmsc_be_mtls, or
 * dmsc_be_mtls6 for an IPv6 one. */
static enum dmsc_map_id be_mtls_of(int family, const struct dmsc_backend *be, const __u32 *be6,
				   __u8 proto, struct dmsc_svc_key *k, struct dmsc_svc6_key *k6)
{
	return be_index_of(family, be, be6, proto, k, k6) == DMSC_M_BE_INDEX6 ? DMSC_M_BE_MTLS6
									       : DMSC_M_BE_MTLS;
}

/* This host's guarded backends, by address:port, for cgroup_skb/ingress
 * (bpf/skb/) and connect4/6: each new id is indexed; one already indexed
 * is kept. */
static int be_mtls_adds(struct apply_ctx *c, const struct plan_svc *p)
{
	struct dmsc_svc6_key k6;
	struct dmsc_svc_key k;
	enum dmsc_map_id m;
	size_t i;
	int err;

	for (i = 0; i < p->meta.n_backends; i++) {
		if (!(p->be[i].flags & DMSC_BE_F_MTLS_GUARD) || !p->be_new[i])
			continue;
		m = be_mtls_of(p->want->family, &p->be[i], p->be6[i], p->key.proto, &k, &k6);
		err = dmsc_apply_put(c, m, m == DMSC_M_BE_MTLS6 ? (const void *)&k6 : &k,
				     &p->meta.backend_id[i]);
		if (err)
			return err;
	}
	return 0;
}

/* Removes the entries of `cur`'s guarded backends that `p` (NULL: the
 * service goes) no longer has under the same id, if they still name it. */
int be_mtls_drops(struct apply_ctx *c, const struct dmsc_state_svc *cur,
		  const struct plan_svc *p)
{
	struct dmsc_svc6_key k6;
	struct dmsc_svc_key k;
	enum dmsc_map_id m;
	const void *key;
	__u32 id, owner;
	size_t i, j;
	int err;

	for (i = 0; cur && i < cur->meta.n_backends; i++) {
		if (!(cur->be[i].flags & DMSC_BE_F_MTLS_GUARD))
			continue;
		id = cur->meta.backend_id[i];
		for (j = 0; p && j < p->meta.n_backends; j++)
			if (p->meta.backend_id[j] == id)
				break;
		if (p && j < p->meta.n_backends)
			continue;
		m = be_mtls_of(cur->family, &cur->be[i], cur->be6[i], cur->key.proto, &k, &k6);
		key = m == DMSC_M_BE_MTLS6 ? (const void *)&k6 : &k;
		if (bpf_map_lookup_elem(c->dp->fd[m], key, &owner) || owner != id)
			continue;
		err = dmsc_apply_drop(c, m, key);
		if (err)
			return err;
	}
	return 0;
}

int dmsc_be_mtls_own(struct dmsc_be_mtls_entry **v, size_t *n, size_t *cap,
		     const struct dmsc_state_svc *s)
{
	struct dmsc_be_mtls_entry *grown, *e;
	struct dmsc_svc6_key k6;
	struct dmsc_svc_key k;
	size_t i;

	for (i = 0; i < s->meta.n_backends && i < DMSC_BACKENDS_PER_SERVICE_MAX; i++) {
		if (!(s->be[i].flags & DMSC_BE_F_MTLS_GUARD))
			continue;
		grown = dmsc_array_room(*v, *n, cap, sizeof(**v), 64);
		if (!grown)
			return -ENOMEM;
		*v = grown;
		e = &(*v)[(*n)++];
		memset(e, 0, sizeof(*e));
		e->map = be_mtls_of(s->family, &s->be[i], s->be6[i], s->key.proto, &k, &k6);
		if (e->map == DMSC_M_BE_MTLS6)
			memcpy(e->key, &k6, sizeof(k6));
		else
			memcpy(e->key, &k, sizeof(k));
		e->id = s->meta.backend_id[i];
	}
	return 0;
}

/* Fills p from its policy service, reusing the current backend ids of the
 * same address:port. Describes the difference in detail. */
int dmsc_plan_service(struct apply_ctx *c, struct plan_svc *p, char *detail, size_t dlen)
{
	const struct dmsc_policy_service *w = p->want;
	const struct dmsc_state_svc *cur = p->cur;
	__u32 counts[DMSC_BACKENDS_PER_SERVICE_MAX], weight[DMSC_BACKENDS_PER_SERVICE_MAX];
	bool kept[DMSC_BACKENDS_PER_SERVICE_MAX] = { false };
	char ap[DMSC_ADDR_PORT_LEN];
	size_t i, j;
	int err;

	p->svc.id = cur ? cur->svc.id : dmsc_alloc_id(c->svc_used, c->dp->max_services, &c->next_svc);
	if (!p->svc.id)
		return -ENOSPC;
	snprintf(p->meta.name, sizeof(p->meta.name), "%s", w->name);
	p->meta.n_backends = (__u32)w->n_backends;
	detail[0] = '\0';
	if (cur && strncmp(cur->meta.name, w->name, sizeof(cur->meta.name)) != 0)
		append(detail, dlen, "renamed from %s; ", cur->meta.name);
	for (i = 0; i < w->n_backends; i++) {
		const struct dmsc_policy_backend *b = &w->backends[i];
		__u32 id = 0;

		p->be[i].addr = b->addr;
		memcpy(p->be6[i], b->addr6, sizeof(p->be6[i]));
		p->be[i].port = htons(b->port);
		p->be[i].svc_id = p->svc.id;
		p->be[i].flags = backend_flags(w, b, p->key.proto);
		if (p->be[i].flags & DMSC_BE_F_MTLS_GUARD)
			p->svc.flags |= DMSC_SVC_F_MTLS_GUARD;
		weight[i] = b->weight;
		p->meta.weight[i] = b->weight;
		dmsc_format_backend(&p->be[i], p->be6[i], w->family, ap, sizeof(ap));
		for (j = 0; cur && j < cur->meta.n_backends; j++) {
			if (!kept[j] && cur->be[j].addr == p->be[i].addr &&
			    !memcmp(cur->be6[j], p->be6[i], sizeof(p->be6[i])) &&
			    cur->be[j].port == p->be[i].port && cur->be[j].svc_id == p->svc.id &&
			    cur->be[j].flags == p->be[i].flags) {
				kept[j] = true;
				id = cur->meta.backend_id[j];
				if (cur->meta.weight[j] != b->weight)
					append(detail, dlen, "%s weight %u -> %u; ", ap,
					       cur->meta.weight[j], b->weight);
				break;
			}
		}
		if (!id) {
			id = dmsc_alloc_id(c->be_used, c->dp->max_backends, &c->next_be);
			if (!id)
				return -ENOSPC;
			p->be_new[i] = true;
			append(detail, dlen, "+ %s weight %u%s%s; ", ap, b->weight,
			       p->be[i].flags & DMSC_BE_F_TUNNEL ? " via the tunnel to " : "",
			       p->be[i].flags & DMSC_BE_F_TUNNEL ? b->host : "");
		}
		p->meta.backend_id[i] = id;
	}
	for (j = 0; cur && j < cur->meta.n_backends; j++) {
		if (kept[j])
			continue;
		p->drop_be[p->n_drop++] = cur->meta.backend_id[j];
		dmsc_format_backend(&cur->be[j], cur->be6[j], cur->family, ap, sizeof(ap));
		append(detail, dlen, "- %s; ", ap);
	}
	if (dmsc_slot_counts(weight, (__u32)w->n_backends, counts) == 0)
		p->svc.flags |= DMSC_SVC_F_NO_BACKEND;
	else if (w->has_health)
		plan_health(c, p, weight, counts, detail, dlen);
	plan_limits(p);
	if (cur && !limits_cfg_equal(&cur->limits, &p->limits))
		append(detail, dlen, "limits changed; ");
	err = plan_allow(c, p);
	if (err)
		return err;
	if (cur && allow_changed(p))
		append(detail, dlen, "allow_from changed; ");
	dmsc_svc_layout(p->svc.flags, counts, p->meta.backend_id, p->be, p->be6,
			(__u32)w->n_backends, p->svc.slot);
	p->svc.table_hash = dmsc_table_hash(p->svc.slot);
	i = strlen(detail);
	if (i >= 2 && detail[i - 2] == ';')
		detail[i - 2] = '\0';
	return 0;
}

/* Marks every id the datapath references: ids in meta and ids in slot
 * tables (after an interrupted apply they may differ). */
void mark_used(struct apply_ctx *c, const struct dmsc_state *st)
{
	size_t i, j;

	for (i = 0; i < st->n_svcs; i++) {
		const struct dmsc_state_svc *s = &st->svcs[i];

		if (s->svc.id < c->dp->max_services)
			c->svc_used[s->svc.id] = 1;
		for (j = 0; j < s->meta.n_backends; j++)
			if (s->meta.backend_id[j] < c->dp->max_backends)
				c->be_used[s->meta.backend_id[j]] = 1;
		for (j = 0; j < DMSC_SLOTS; j++)
			if (s->svc.slot[j] < c->dp->max_backends)
				c->be_used[s->svc.slot[j]] = 1;
	}
}

/* A new service's id may have had an owner whose limits were never
 * cleared (an apply killed half-way, or a datapath written before writers
 * marked their applies): whatever the id holds is overwritten with what
 * the new service wants before its element is published. */
static bool new_owner_limits_differ(struct apply_ctx *c, const struct plan_svc *p)
{
	struct dmsc_limits have;

	if (c->dry_run)
		return p->limits.conn_rate || p->limits.byte_rate;
	if (bpf_map_lookup_elem_flags(c->dp->fd[DMSC_M_LIMITS], &p->svc.id, &have, BPF_F_LOCK))
		return true;
	return !limits_cfg_equal(&have, &p->limits) || have.conn.last_ns || have.to.last_ns ||
	       have.from.last_ns || have.iface.last_ns;
}

int dmsc_plan_write(struct apply_ctx *c, const struct plan_svc *p)
{
	bool ipv6 = p->want->family == AF_INET6;
	struct dmsc_svc6_key key6;
	size_t i;
	int err;

	/* A new service: its meta first, so that an apply interrupted from
	 * here on leaves a trace of the id (a non-zero meta without a
	 * service entry) that the next one clears. */
	if (!p->cur) {
		err = dmsc_apply_put(c, DMSC_M_SVC_META, &p->svc.id, &p->meta);
		if (err)
			return err;
	}
	for (i = 0; i < p->meta.n_backends; i++) {
		if (!p->be_new[i])
			continue;
		if (ipv6) {
			struct dmsc_backend6 be6 = { .port = p->be[i].port,
						     .flags = p->be[i].flags,
						     .svc_id = p->be[i].svc_id };

			memcpy(be6.addr, p->be6[i], sizeof(be6.addr));
			err = dmsc_apply_put(c, DMSC_M_BACKENDS6, &p->meta.backend_id[i], &be6);
		} else {
			err = dmsc_apply_put(c, DMSC_M_BACKENDS, &p->meta.backend_id[i],
					     &p->be[i]);
		}
		if (err)
			return err;
	}
	/* Rules and index entries go in before the service element that
	 * uses them, and come out after it. */
	err = allow_adds(c, p);
	if (!err)
		err = be_index_adds(c, p);
	if (!err)
		err = be_mtls_adds(c, p);
	if (err)
		return err;
	if (p->cur ? !limits_cfg_equal(&p->cur->limits, &p->limits)
		   : new_owner_limits_differ(c, p)) {
		err = dmsc_apply_put(c, DMSC_M_LIMITS, &p->svc.id, &p->limits);
		if (err)
			return err;
	}
	if (p->cur && memcmp(&p->cur->meta, &p->meta, sizeof(p->meta)) != 0) {
		err = dmsc_apply_put(c, DMSC_M_SVC_META, &p->svc.id, &p->meta);
		if (err)
			return err;
	}
	if (!p->cur || memcmp(&p->cur->svc, &p->svc, sizeof(p->svc)) != 0) {
		dmsc_svc6_key(&p->key, (const __u32 *)p->want->vip6, &key6);
		err = ipv6 ? dmsc_apply_put(c, DMSC_M_SERVICES6, &key6, &p->svc)
			   : dmsc_apply_put(c, DMSC_M_SERVICES, &p->key, &p->svc);
		if (err)
			return err;
	}
	for (i = 0; i < p->n_drop; i++) {
		err = dmsc_apply_drop(c, ipv6 ? DMSC_M_BACKENDS6 : DMSC_M_BACKENDS, &p->drop_be[i]);
		if (err)
			return err;
		dmsc_apply_zero_stats(c, DMSC_M_BE_STATS, p->drop_be[i], sizeof(struct dmsc_be_stats));
		if (!c->dry_run)
			dmsc_health_zero(c->dp, p->drop_be[i]);
	}
	err = allow_drops(c, p);
	if (!err)
		err = be_index_drops(c, p->cur, p);
	if (!err)
		err = be_mtls_drops(c, p->cur, p);
	return err;
}

int dmsc_plan_remove(struct apply_ctx *c, const struct dmsc_state_svc *s,
		      const struct dmsc_allow_entry *rules, size_t n_rules)
{
	bool ipv6 = s->family == AF_INET6;
	struct dmsc_svc6_key key6;
	__u32 id = s->svc.id;
	size_t i;
	int err;

	/* The service first: no connect() can reach a backend after it, and
	 * nothing of the id is used any more. Its meta goes last: until then
	 * it marks the id as one with state to clear (dmsc_apply_sweep). */
	dmsc_svc6_key(&s->key, s->vip6, &key6);
	err = ipv6 ? dmsc_apply_drop(c, DMSC_M_SERVICES6, &key6)
		   : dmsc_apply_drop(c, DMSC_M_SERVICES, &s->key);
	if (err)
		return err;
	dmsc_apply_zero_stats(c, DMSC_M_SVC_STATS, id, sizeof(struct dmsc_svc_stats));
	dmsc_apply_zero_stats(c, DMSC_M_FP_STATS, id, sizeof(struct dmsc_fp_stats));
	if (!c->dry_run && !dmsc_apply_begin(c)) { /* a plain array: one value */
		bpf_map_update_elem(c->dp->fd[DMSC_M_FP_SVC], &id, &(struct dmsc_fp_svc){ 0 },
				    BPF_ANY);
		dmsc_apply_written(c);
	}
	if (s->limits.conn_rate || s->limits.byte_rate) {
		struct dmsc_limits none;

		memset(&none, 0, sizeof(none));
		err = dmsc_apply_put(c, DMSC_M_LIMITS, &id, &none);
	}
	for (i = 0; !err && i < n_rules; i++)
		err = dmsc_apply_drop(c, DMSC_M_ALLOW, &rules[i].key);
	if (!err)
		err = be_index_drops(c, s, NULL);
	if (!err)
		err = be_mtls_drops(c, s, NULL);
	for (i = 0; !err && i < s->meta.n_backends; i++) {
		err = dmsc_apply_drop(c, ipv6 ? DMSC_M_BACKENDS6 : DMSC_M_BACKENDS,
				      &s->meta.backend_id[i]);
		dmsc_apply_zero_stats(c, DMSC_M_BE_STATS, s->meta.backend_id[i], sizeof(struct dmsc_be_stats));
		if (!c->dry_run)
			dmsc_health_zero(c->dp, s->meta.backend_id[i]);
	}
	if (!err)
		err = dmsc_apply_drop(c, DMSC_M_SVC_META, &id);
	return err;
}
