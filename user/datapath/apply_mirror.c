// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bpf/bpf.h>

#include "addr.h"
#include "dmsc/slots.h"
#include "log.h"
#include "apply_mirror.h"
#include "apply_steps.h"

int64_t dmsc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
	h = fnv_u64(h, s->n_backends);
	for (i = 0; i < s->n_backends; i++) {
		const struct dmsc_policy_backend *b = &s->backends[i];

		h = fnv_u64(h, b->addr);
		h = fnv(h, b->addr6, sizeof(b->addr6));
		h = fnv_u64(h, b->port);
		h = fnv_u64(h, b->weight);
		h = fnv_labels(h, b->labels, b->n_labels);
	}
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

/* ---- index ---------------------------------------------------------- */

static size_t key_hash(const struct dmsc_svc_key *k, const __u32 *vip6)
{
	uint64_t h = ((uint64_t)(k->vip ^ vip6[0] ^ vip6[1] ^ vip6[2] ^ vip6[3]) << 24) ^
		     ((uint64_t)k->port << 8) ^ k->proto;

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return (size_t)h;
}

/* Keys are built zeroed (pad too), so the bytes compare. */
static bool key_eq(const struct dmsc_svc_digest *a, const struct dmsc_svc_key *b,
		   const __u32 *b6)
{
	return dmsc_svc_key_cmp(&a->key, a->vip6, b, b6) == 0;
}

static void index_insert(struct dmsc_mirror *m, size_t idx)
{
	size_t mask = m->index_cap - 1, h = key_hash(&m->dig[idx].key, m->dig[idx].vip6) & mask;

	while (m->index[h])
		h = (h + 1) & mask;
	m->index[h] = (__u32)(idx + 1);
}

static int index_rebuild(struct dmsc_mirror *m, size_t want)
{
	size_t cap = 64, i;

	while (cap < 2 * (want + 1))
		cap *= 2;
	if (cap != m->index_cap) {
		free(m->index);
		m->index = calloc(cap, sizeof(*m->index));
		m->index_cap = m->index ? cap : 0;
		if (!m->index)
			return -ENOMEM;
	} else {
		memset(m->index, 0, cap * sizeof(*m->index));
	}
	for (i = 0; i < m->n; i++)
		index_insert(m, i);
	return 0;
}

static long index_find(const struct dmsc_mirror *m, const struct dmsc_svc_key *k,
		       const __u32 *vip6)
{
	size_t mask, h;

	if (!m->index_cap)
		return -1;
	mask = m->index_cap - 1;
	for (h = key_hash(k, vip6) & mask; m->index[h]; h = (h + 1) & mask)
		if (key_eq(&m->dig[m->index[h] - 1], k, vip6))
			return (long)m->index[h] - 1;
	return -1;
}

const struct dmsc_mirror_svc *dmsc_mirror_find(const struct dmsc_mirror *m,
					       const struct dmsc_svc_key *k, const __u32 *vip6)
{
	long i = index_find(m, k, vip6);

	return i < 0 ? NULL : &m->svcs[i];
}

/* ---- load ----------------------------------------------------------- */

static int grow_svcs(struct dmsc_mirror *m, size_t want)
{
	struct dmsc_mirror_svc *grown;
	struct dmsc_mirror_hot *hot;
	struct dmsc_svc_digest *dig;
	size_t cap = m->cap ? m->cap : 64;

	if (want <= m->cap)
		return 0;
	while (cap < want)
		cap *= 2;
	grown = realloc(m->svcs, cap * sizeof(*m->svcs));
	if (!grown)
		return -ENOMEM;
	m->svcs = grown;
	hot = realloc(m->hot, cap * sizeof(*m->hot));
	if (!hot)
		return -ENOMEM;
	m->hot = hot;
	dig = realloc(m->dig, cap * sizeof(*m->dig));
	if (!dig)
		return -ENOMEM;
	m->dig = dig;
	m->cap = cap;
	return 0;
}

static void slot_table(const struct dmsc_mirror_svc *ms, struct dmsc_svc *svc)
{
	__u32 ids[DMSC_BACKENDS_PER_SERVICE_MAX], w[DMSC_BACKENDS_PER_SERVICE_MAX],
		counts[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 i;

	for (i = 0; i < ms->n_be; i++) {
		ids[i] = ms->be[i].id;
		w[i] = ms->be[i].weight;
	}
	dmsc_slot_counts(w, ms->n_be, counts);
	dmsc_slot_layout(counts, ids, ms->n_be, svc->slot);
}

/* What dmsc_state_read() would have read for this service. */
static void materialize(const struct dmsc_mirror_svc *ms, const struct dmsc_mirror_hot *hot,
			struct dmsc_state_svc *s)
{
	__u32 i;

	memset(s, 0, sizeof(*s));
	s->key = ms->key;
	s->family = ms->family;
	memcpy(s->vip6, ms->vip6, sizeof(s->vip6));
	s->svc.id = ms->id;
	s->svc.flags = ms->flags;
	slot_table(ms, &s->svc);
	s->svc.table_hash = dmsc_table_hash(s->svc.slot);
	if (hot->stale)
		s->svc.slot[0] = UINT32_MAX; /* never equal to a compiled table */
	s->limits = ms->limits;
	snprintf(s->meta.name, sizeof(s->meta.name), "%s", ms->name);
	s->meta.n_backends = ms->n_be;
	for (i = 0; i < ms->n_be; i++) {
		s->meta.backend_id[i] = ms->be[i].id;
		s->meta.weight[i] = ms->be[i].weight;
		s->be[i].addr = ms->be[i].addr;
		memcpy(s->be6[i], ms->be[i].addr6, sizeof(s->be6[i]));
		s->be[i].port = ms->be[i].port;
		s->be[i].svc_id = ms->id;
	}
}

/* The buckets move with traffic; only the configuration is mirrored. */
static void limits_config_only(struct dmsc_limits *l)
{
	memset(&l->lock, 0, sizeof(l->lock));
	memset(&l->conn, 0, sizeof(l->conn));
	memset(&l->to, 0, sizeof(l->to));
	memset(&l->from, 0, sizeof(l->from));
	memset(&l->iface, 0, sizeof(l->iface));
}

/* Copies a service's rules out of a sorted array of every rule. */
static int take_rules(struct dmsc_mirror_svc *ms, const struct dmsc_allow_entry *all, size_t n)
{
	size_t i, first = n, count = 0;

	for (i = 0; i < n; i++)
		if (all[i].key.svc_id == ms->id) {
			if (first == n)
				first = i;
			count++;
		}
	free(ms->allow);
	ms->allow = NULL;
	ms->n_allow = 0;
	if (!count)
		return 0;
	ms->allow = malloc(count * sizeof(*ms->allow));
	if (!ms->allow)
		return -ENOMEM;
	memcpy(ms->allow, &all[first], count * sizeof(*ms->allow));
	ms->n_allow = count;
	return 0;
}

/* Does any rule wait for a cgroup that did not exist? */
static bool has_unresolved(const struct dmsc_allow_entry *a, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (a[i].key.cgroup_id & DMSC_ALLOW_UNRESOLVED)
			return true;
	return false;
}

static void mark(unsigned char *used, __u32 max, __u32 id, unsigned char v)
{
	if (id && id < max)
		used[id] = v;
}

/* Backend index entries of ids that no service holds. */
/* The backend index entries the mirrored services own. */
static int owned_index(const struct dmsc_mirror *m, struct dmsc_be_index_entry **keep,
		       size_t *n_keep)
{
	struct dmsc_state_svc s;
	size_t i, cap = 0;
	int err = 0;

	*keep = NULL;
	*n_keep = 0;
	for (i = 0; !err && i < m->n; i++) {
		if (!(m->svcs[i].flags & DMSC_SVC_F_BYTES_LIMIT))
			continue;
		materialize(&m->svcs[i], &(struct dmsc_mirror_hot){ 0 }, &s);
		err = dmsc_be_index_own(keep, n_keep, &cap, &s.key, s.svc.id, s.svc.flags, s.be,
					s.meta.n_backends);
	}
	dmsc_be_index_sort(*keep, *n_keep);
	return err;
}

/* Backend index entries of ids that no service holds, or of backends their
 * service no longer has. */
static int find_orphan_index(struct dmsc_mirror *m, const struct dmsc_datapath *dp)
{
	struct dmsc_be_index_entry *bi = NULL, *keep = NULL;
	size_t n = 0, n_keep = 0, i;
	int err;

	err = dmsc_read_be_index(dp, &bi, &n);
	if (!err)
		err = owned_index(m, &keep, &n_keep);
	for (i = 0; !err && i < n; i++)
		if (!dmsc_be_index_owned(keep, n_keep, &bi[i]))
			m->orphans = true;
	free(bi);
	free(keep);
	return err;
}

/* Before the first write of an apply: clears what an interrupted writer
 * left (per-id state of ids without a service; the mirror holds only
 * services, so these are read from the maps here). */
static int repair(struct dmsc_mirror *m, struct apply_ctx *c, bool interrupted)
{
	struct dmsc_allow_entry *allow = NULL;
	struct dmsc_be_index_entry *bi = NULL, *keep = NULL;
	size_t n_allow = 0, n_bi = 0, n_keep = 0;
	int err;

	err = dmsc_read_allow(c->dp, &allow, &n_allow);
	if (!err)
		err = dmsc_read_be_index(c->dp, &bi, &n_bi);
	if (!err)
		err = owned_index(m, &keep, &n_keep);
	if (!err)
		err = dmsc_apply_sweep(c, m->svc_used, allow, n_allow, bi, n_bi, keep, n_keep,
				       interrupted, &c->res->repaired);
	if (!err)
		m->orphans = false;
	free(allow);
	free(bi);
	free(keep);
	return err;
}

/* key6: an IPv6 service's key in dmsc_services6; NULL: key, IPv4. */
static int load_one(struct dmsc_mirror *m, const struct dmsc_datapath *dp,
		    const struct dmsc_svc_key *key, const struct dmsc_svc6_key *key6)
{
	struct dmsc_mirror_svc *ms = &m->svcs[m->n];
	struct dmsc_mirror_hot *hot = &m->hot[m->n];
	struct dmsc_svc svc, want;
	struct dmsc_svc_meta meta;
	struct dmsc_backend6 be6;
	struct dmsc_backend be;
	__u32 i, id;

	if (key6 ? bpf_map_lookup_elem(dp->fd[DMSC_M_SERVICES6], key6, &svc)
		 : bpf_map_lookup_elem(dp->fd[DMSC_M_SERVICES], key, &svc))
		return -errno;
	memset(ms, 0, sizeof(*ms));
	memset(hot, 0, sizeof(*hot));
	memset(&m->dig[m->n], 0, sizeof(m->dig[m->n]));
	ms->family = AF_INET;
	if (key6) {
		ms->family = AF_INET6;
		ms->key.port = key6->port;
		ms->key.proto = key6->proto;
		memcpy(ms->vip6, key6->vip, sizeof(ms->vip6));
	} else {
		ms->key = *key;
	}
	m->dig[m->n].key = ms->key;
	memcpy(m->dig[m->n].vip6, ms->vip6, sizeof(ms->vip6));
	m->dig[m->n].fp = 0;
	ms->id = svc.id;
	ms->flags = svc.flags;
	id = svc.id;
	if (id < dp->max_services &&
	    bpf_map_lookup_elem_flags(dp->fd[DMSC_M_LIMITS], &id, &ms->limits, BPF_F_LOCK) == 0)
		limits_config_only(&ms->limits);
	else
		memset(&ms->limits, 0, sizeof(ms->limits));
	if (id == 0 || id >= dp->max_services ||
	    bpf_map_lookup_elem(dp->fd[DMSC_M_SVC_META], &id, &meta))
		memset(&meta, 0, sizeof(meta));
	if (meta.n_backends > DMSC_BACKENDS_PER_SERVICE_MAX) {
		meta.n_backends = 0;
		hot->stale = true;
	}
	snprintf(ms->name, sizeof(ms->name), "%.*s", (int)sizeof(meta.name) - 1, meta.name);
	ms->n_be = meta.n_backends;
	ms->be = calloc(ms->n_be ? ms->n_be : 1, sizeof(*ms->be));
	if (!ms->be)
		return -ENOMEM;
	for (i = 0; i < ms->n_be; i++) {
		id = meta.backend_id[i];
		ms->be[i].id = id;
		ms->be[i].weight = meta.weight[i];
		if (id && id < dp->max_backends && key6 &&
		    bpf_map_lookup_elem(dp->fd[DMSC_M_BACKENDS6], &id, &be6) == 0) {
			memcpy(ms->be[i].addr6, be6.addr, sizeof(be6.addr));
			ms->be[i].port = be6.port;
		} else if (id && id < dp->max_backends && !key6 &&
			   bpf_map_lookup_elem(dp->fd[DMSC_M_BACKENDS], &id, &be) == 0) {
			ms->be[i].addr = be.addr;
			ms->be[i].port = be.port;
		}
		mark(m->be_used, m->max_backends, id, 1);
	}
	/* After an interrupted writer the table may not be what meta says:
	 * the next apply rewrites such a service. */
	slot_table(ms, &want);
	if (memcmp(want.slot, svc.slot, sizeof(want.slot)) != 0)
		hot->stale = true;
	mark(m->svc_used, m->max_services, ms->id, 1);
	for (i = 0; i < DMSC_SLOTS; i++)
		mark(m->be_used, m->max_backends, svc.slot[i], 1);
	m->n_backends += ms->n_be;
	m->n++;
	return 0;
}

static void free_svcs(struct dmsc_mirror *m)
{
	size_t i;

	for (i = 0; i < m->n; i++) {
		free(m->svcs[i].be);
		free(m->svcs[i].allow);
	}
	m->n = 0;
}

void dmsc_mirror_free(struct dmsc_mirror *m)
{
	unsigned int delay;

	free_svcs(m);
	free(m->svcs);
	free(m->hot);
	free(m->dig);
	free(m->index);
	free(m->svc_used);
	free(m->be_used);
	free(m->drops);
	delay = m->drop_delay_ms;
	memset(m, 0, sizeof(*m));
	m->drop_delay_ms = delay;
}

int dmsc_mirror_load(struct dmsc_mirror *m, const struct dmsc_datapath *dp)
{
	struct dmsc_allow_entry *rules = NULL;
	union {
		struct dmsc_svc_key k4;
		struct dmsc_svc6_key k6;
	} key, next;
	size_t i, n_rules = 0;
	void *prev = NULL;
	int err, f;

	dmsc_mirror_free(m);
	m->max_services = dp->max_services;
	m->max_backends = dp->max_backends;
	m->next_svc = m->next_be = 1;
	m->svc_used = calloc(dp->max_services, 1);
	m->be_used = calloc(dp->max_backends, 1);
	if (!m->svc_used || !m->be_used) {
		err = -ENOMEM;
		goto fail;
	}
	err = dmsc_datapath_generation(dp, &m->generation);
	if (err)
		goto fail;
	m->services_map_id = dmsc_map_id(dp->fd[DMSC_M_SERVICES]);
	for (f = 0; f < 2; f++) { /* dmsc_services, then dmsc_services6 */
		int fd = dp->fd[f ? DMSC_M_SERVICES6 : DMSC_M_SERVICES];

		prev = NULL;
		while (bpf_map_get_next_key(fd, prev, &next) == 0) {
			key = next;
			prev = &key;
			err = grow_svcs(m, m->n + 1);
			if (err)
				goto fail;
			err = load_one(m, dp, &key.k4, f ? &key.k6 : NULL);
			if (err == -ENOENT)
				continue; /* deleted under us */
			if (err)
				goto fail;
		}
		if (errno != ENOENT) {
			err = -errno;
			goto fail;
		}
	}
	err = dmsc_read_allow(dp, &rules, &n_rules);
	for (i = 0; !err && i < n_rules; i++)
		if (rules[i].key.svc_id >= m->max_services || !m->svc_used[rules[i].key.svc_id])
			m->orphans = true;
	if (!err)
		err = find_orphan_index(m, dp);
	for (i = 0; !err && i < m->n; i++) {
		err = take_rules(&m->svcs[i], rules, n_rules);
		/* A rule still waiting for its cgroup: plan the service again
		 * at the next apply, which resolves it once the cgroup exists. */
		if (!err && has_unresolved(m->svcs[i].allow, m->svcs[i].n_allow))
			m->dig[i].fp = 0;
	}
	free(rules);
	if (err)
		goto fail;
	err = index_rebuild(m, m->n);
	if (err)
		goto fail;
	m->loaded = true;
	return 0;
fail:
	pr_warn("cannot read the datapath into memory: %s\n", strerror(-err));
	dmsc_mirror_free(m);
	return err;
}

int dmsc_mirror_take_allow(struct dmsc_mirror *m, const struct dmsc_allow_entry *rules, size_t n)
{
	size_t i;
	int err;

	for (i = 0; i < m->n; i++) {
		err = take_rules(&m->svcs[i], rules, n);
		if (err)
			return err;
		if (has_unresolved(m->svcs[i].allow, m->svcs[i].n_allow))
			m->dig[i].fp = 0;
	}
	return 0;
}

void dmsc_mirror_forget(struct dmsc_mirror *m, bool stale)
{
	size_t i;

	for (i = 0; i < m->n; i++) {
		m->dig[i].fp = 0;
		if (stale)
			m->hot[i].stale = true;
	}
}

/* ---- apply ---------------------------------------------------------- */

/* A service whose policy differs from the mirror. */
struct mchange {
	struct plan_svc plan;
	struct dmsc_state_svc cur;
	long mi;   /* mirror index; -1: new */
	size_t pi; /* policy index */
	bool same; /* compiled equal to what the maps hold: nothing to write */
};

struct ptrs {
	void **v;
	size_t n, cap;
};

static int ptrs_push(struct ptrs *a, void *p)
{
	void **grown;

	if (a->n == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 16;
		grown = realloc(a->v, a->cap * sizeof(*a->v));
		if (!grown)
			return -ENOMEM;
		a->v = grown;
	}
	a->v[a->n++] = p;
	return 0;
}

static int change_push(struct dmsc_apply_result *res, size_t *cap, enum dmsc_change_op op,
		       const char *name, const char *detail)
{
	struct dmsc_change *grown, *ch;

	if (res->n_changes == *cap) {
		*cap = *cap ? *cap * 2 : 16;
		grown = realloc(res->changes, *cap * sizeof(*res->changes));
		if (!grown)
			return -ENOMEM;
		res->changes = grown;
	}
	ch = &res->changes[res->n_changes++];
	ch->op = op;
	snprintf(ch->service, sizeof(ch->service), "%s", name);
	snprintf(ch->detail, sizeof(ch->detail), "%s", detail);
	return 0;
}

static int pend_drop(struct dmsc_mirror *m, __u32 id, int64_t due)
{
	struct dmsc_pending_drop *grown;

	if (m->n_drops == m->cap_drops) {
		m->cap_drops = m->cap_drops ? m->cap_drops * 2 : 16;
		grown = realloc(m->drops, m->cap_drops * sizeof(*m->drops));
		if (!grown)
			return -ENOMEM;
		m->drops = grown;
	}
	m->drops[m->n_drops].id = id;
	m->drops[m->n_drops].due_ms = due;
	m->n_drops++;
	return 0;
}

/* Removes a service with its backends left for later: the service element
 * first, so no new connect() finds it, then its meta. */
static int remove_deferred(struct apply_ctx *c, const struct dmsc_mirror_svc *ms)
{
	__u32 id = ms->id;
	size_t i;
	int err;

	/* The order of dmsc_plan_remove(): meta last. */
	if (ms->family == AF_INET6) {
		struct dmsc_svc6_key key6;

		dmsc_svc6_key(&ms->key, ms->vip6, &key6);
		err = dmsc_apply_drop(c, DMSC_M_SERVICES6, &key6);
	} else {
		err = dmsc_apply_drop(c, DMSC_M_SERVICES, &ms->key);
	}
	if (err)
		return err;
	dmsc_apply_zero_stats(c, DMSC_M_SVC_STATS, id, sizeof(struct dmsc_svc_stats));
	if (ms->limits.conn_rate || ms->limits.byte_rate) {
		struct dmsc_limits none;

		memset(&none, 0, sizeof(none));
		err = dmsc_apply_put(c, DMSC_M_LIMITS, &id, &none);
	}
	for (i = 0; !err && i < ms->n_allow; i++)
		err = dmsc_apply_drop(c, DMSC_M_ALLOW, &ms->allow[i].key);
	if (!err && (ms->flags & DMSC_SVC_F_BYTES_LIMIT)) {
		struct dmsc_state_svc s;

		materialize(ms, &(struct dmsc_mirror_hot){ 0 }, &s);
		err = dmsc_plan_be_index_drops(c, &s);
	}
	if (!err)
		err = dmsc_apply_drop(c, DMSC_M_SVC_META, &id);
	return err;
}

static int mirror_set(struct dmsc_mirror_svc *ms, struct dmsc_mirror_hot *hot,
		      struct dmsc_svc_digest *dig, const struct plan_svc *p, uint64_t fp)
{
	struct dmsc_mirror_be *be = ms->be;
	__u32 i, n = p->meta.n_backends;

	if (!be || n > ms->n_be) {
		be = realloc(ms->be, (n ? n : 1) * sizeof(*be));
		if (!be)
			return -ENOMEM;
	}
	ms->be = be;
	ms->key = p->key;
	ms->family = p->want->family;
	memcpy(ms->vip6, p->want->vip6, sizeof(ms->vip6));
	ms->id = p->svc.id;
	ms->flags = p->svc.flags;
	ms->n_be = n;
	ms->limits = p->limits;
	limits_config_only(&ms->limits);
	free(ms->allow);
	ms->allow = NULL;
	ms->n_allow = 0;
	if (p->n_allow) {
		ms->allow = malloc(p->n_allow * sizeof(*ms->allow));
		if (!ms->allow)
			return -ENOMEM;
		memcpy(ms->allow, p->allow, p->n_allow * sizeof(*ms->allow));
		ms->n_allow = p->n_allow;
	}
	dig->key = p->key;
	memcpy(dig->vip6, ms->vip6, sizeof(dig->vip6));
	/* Unknown while a rule waits for its cgroup: planned again next time. */
	dig->fp = has_unresolved(p->allow, p->n_allow) ? 0 : fp;
	hot->stale = 0;
	snprintf(ms->name, sizeof(ms->name), "%s", p->meta.name);
	for (i = 0; i < n; i++) {
		be[i].id = p->meta.backend_id[i];
		be[i].weight = p->meta.weight[i];
		be[i].addr = p->be[i].addr;
		memcpy(be[i].addr6, p->be6[i], sizeof(be[i].addr6));
		be[i].port = p->be[i].port;
		be[i].pad = 0;
	}
	return 0;
}

static int in_step(struct dmsc_mirror *m, const struct dmsc_datapath *dp)
{
	__u64 gen = 0;

	if (m->loaded && dmsc_datapath_generation(dp, &gen) == 0 && gen == m->generation &&
	    dmsc_map_id(dp->fd[DMSC_M_SERVICES]) == m->services_map_id &&
	    m->max_services == dp->max_services && m->max_backends == dp->max_backends)
		return 0;
	if (m->loaded)
		pr_info("the datapath was changed by another writer: reading it again\n");
	return dmsc_mirror_load(m, dp);
}

/* After this process's own writes: the mark cleared, and the generation
 * that the next apply must find to know that nobody else wrote. */
static void in_step_after(struct dmsc_mirror *m, struct apply_ctx *c)
{
	bool wrote = c->begun;

	if (!wrote)
		return;
	if (dmsc_apply_finish(c) || dmsc_datapath_generation(c->dp, &m->generation))
		m->loaded = false; /* read the maps again next time */
}

/* The mirror in the policy's order, without the removed services. */
static int reorder(struct dmsc_mirror *m, const struct dmsc_svc_digest *d, size_t n)
{
	size_t cap = n ? n : 1, i;
	struct dmsc_mirror_svc *ordered = calloc(cap, sizeof(*ordered));
	struct dmsc_mirror_hot *hot = calloc(cap, sizeof(*hot));
	struct dmsc_svc_digest *dig = calloc(cap, sizeof(*dig));
	long j;

	if (!ordered || !hot || !dig) {
		free(ordered);
		free(hot);
		free(dig);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		j = index_find(m, &d[i].key, d[i].vip6);
		if (j < 0) { /* cannot happen: every policy service is in */
			free(ordered);
			free(hot);
			free(dig);
			return -EINVAL;
		}
		ordered[i] = m->svcs[j];
		hot[i] = m->hot[j];
		dig[i] = m->dig[j];
		/* Moved: free_svcs() below must not free what it points to. */
		m->svcs[j].be = NULL;
		m->svcs[j].allow = NULL;
		m->svcs[j].n_allow = 0;
	}
	free_svcs(m);
	free(m->svcs);
	free(m->hot);
	free(m->dig);
	m->svcs = ordered;
	m->hot = hot;
	m->dig = dig;
	m->n = n;
	m->cap = cap;
	return index_rebuild(m, m->n);
}

static size_t total_backends(const struct dmsc_policy *p)
{
	size_t i, n = 0;

	for (i = 0; i < p->n_services; i++)
		n += p->services[i].n_backends;
	return n;
}

static int capacity_error(const struct dmsc_policy *p, const struct dmsc_datapath *dp)
{
	pr_warn("the policy has %zu services and %zu backends; this datapath holds at most %u "
		"and %u (set with `dmscctl install --max-services N --max-backends N`)\n",
		p->n_services, total_backends(p), dp->max_services - 1, dp->max_backends - 1);
	return -ENOSPC;
}

/* Services compared a run at a time: memcmp over contiguous digests. */
#define DIGEST_RUN 64

/* Mirror entry j was matched by the policy in this pass: by its key
 * through the index (pass), or in place (same key at the same position;
 * keys are unique in a valid policy). */
static bool matched(const struct dmsc_mirror *m, const struct dmsc_svc_digest *d, size_t n_pol,
		    size_t j)
{
	return m->hot[j].pass == m->pass || (j < n_pol && key_eq(&m->dig[j], &d[j].key, d[j].vip6));
}

int dmsc_mirror_apply(struct dmsc_mirror *m, const struct dmsc_datapath *dp,
		      const struct dmsc_policy *p, const struct dmsc_svc_digest *d, bool dry_run,
		      struct dmsc_apply_result *res)
{
	struct apply_ctx c = { .dp = dp, .res = res, .dry_run = dry_run };
	struct ptrs changed = { 0 }, removed = { 0 }, new_svc_ids = { 0 }, new_be_ids = { 0 };
	size_t i, j, seen = 0, n_new = 0, changes_cap = 0, lim, n_pol = p->n_services;
	long be_delta = 0;
	bool aligned = true, interrupted = false;
	char detail[512], keybuf[DMSC_ADDR_PORT_LEN + 8];
	int64_t due = dmsc_now_ms() + m->drop_delay_ms;
	int err;

	memset(res, 0, sizeof(*res));
	res->n_services = n_pol;
	if (n_pol >= dp->max_services)
		return capacity_error(p, dp);
	err = in_step(m, dp);
	if (!err)
		err = dmsc_datapath_interrupted(dp, &interrupted);
	if (err)
		return err;
	/* Before any plan takes an id: the ids without a service are clean
	 * after this. */
	if (!dry_run && (interrupted || m->orphans)) {
		err = repair(m, &c, interrupted);
		if (!err)
			err = dmsc_apply_finish(&c);
		if (!err)
			err = dmsc_datapath_generation(dp, &m->generation);
		if (err) {
			m->loaded = false;
			return err;
		}
	}
	c.svc_used = m->svc_used;
	c.be_used = m->be_used;
	c.next_svc = m->next_svc;
	c.next_be = m->next_be;
	m->pass++;
	lim = n_pol < m->n ? n_pol : m->n;

	/* Plan: one pass over the policy's digests against the mirror's. A
	 * service in place whose fingerprint is the one last written costs a
	 * comparison of 16 bytes, made a run of services at a time. */
	for (i = 0; i < n_pol; i++) {
		const struct dmsc_policy_service *w;
		const struct dmsc_svc_key *k;
		struct mchange *ch;
		long mi;

		while (i + DIGEST_RUN <= lim &&
		       memcmp(&m->dig[i], &d[i], DIGEST_RUN * sizeof(*d)) == 0) {
			i += DIGEST_RUN;
			seen += DIGEST_RUN;
		}
		if (i < lim && memcmp(&m->dig[i], &d[i], sizeof(*d)) == 0) {
			seen++;
			continue; /* fingerprints are never 0: known and equal */
		}
		if (i >= n_pol)
			break;
		k = &d[i].key;
		if (i < m->n && key_eq(&m->dig[i], k, d[i].vip6))
			mi = (long)i;
		else
			mi = index_find(m, k, d[i].vip6);
		if (mi >= 0) {
			if (matched(m, d, n_pol, (size_t)mi) && (size_t)mi != i) {
				pr_warn("services[%zu] (%s): a second service with the key of "
					"%s\n",
					i, p->services[i].name, m->svcs[mi].name);
				err = -EINVAL;
				goto undo_ids;
			}
			m->hot[mi].pass = m->pass;
			seen++;
			if ((size_t)mi != i)
				aligned = false;
			if (m->dig[mi].fp && m->dig[mi].fp == d[i].fp && !m->hot[mi].stale)
				continue;
		} else if (i != m->n + n_new++) {
			aligned = false;
		}
		ch = calloc(1, sizeof(*ch));
		if (!ch || ptrs_push(&changed, ch)) {
			free(ch);
			err = -ENOMEM;
			goto undo_ids;
		}
		w = &p->services[i];
		be_delta += (long)w->n_backends - (mi >= 0 ? (long)m->svcs[mi].n_be : 0);
		ch->mi = mi;
		ch->pi = i;
		ch->plan.want = w;
		ch->plan.key = *k;
		if (mi >= 0) {
			materialize(&m->svcs[mi], &m->hot[mi], &ch->cur);
			ch->plan.cur = &ch->cur;
			ch->plan.cur_allow = m->svcs[mi].allow;
			ch->plan.n_cur_allow = m->svcs[mi].n_allow;
		}
		err = dmsc_plan_service(&c, &ch->plan, detail, sizeof(detail));
		if (!err && mi < 0)
			err = ptrs_push(&new_svc_ids, (void *)(uintptr_t)ch->plan.svc.id);
		for (j = 0; !err && j < ch->plan.meta.n_backends; j++)
			if (ch->plan.be_new[j])
				err = ptrs_push(&new_be_ids,
						(void *)(uintptr_t)ch->plan.meta.backend_id[j]);
		if (err == -ENOSPC && total_backends(p) >= dp->max_backends)
			err = capacity_error(p, dp);
		else if (err == -ENOSPC)
			pr_warn("not enough room in the datapath for services[%zu] (%s): every "
				"service or backend id is taken (capacity %u services, %u "
				"backends)\n",
				i, w->name, dp->max_services - 1, dp->max_backends - 1);
		if (err)
			goto undo_ids;
		if (mi < 0) {
			dmsc_format_svc_key(k, w->family, (const __u32 *)w->vip6, keybuf,
					     sizeof(keybuf));
			snprintf(detail, sizeof(detail), "%s, %zu backend%s", keybuf, w->n_backends,
				 w->n_backends == 1 ? "" : "s");
			err = change_push(res, &changes_cap, DMSC_CHANGE_ADD, w->name, detail);
		} else if (memcmp(&ch->cur.svc, &ch->plan.svc, sizeof(ch->cur.svc)) ||
			   memcmp(&ch->cur.meta, &ch->plan.meta, sizeof(ch->cur.meta)) ||
			   detail[0]) {
			err = change_push(res, &changes_cap, DMSC_CHANGE_UPDATE, w->name,
					  detail[0] ? detail : "slot table rebuilt");
		} else {
			ch->same = true;
		}
		if (err)
			goto undo_ids;
	}
	if (seen < m->n) {
		for (i = 0; i < m->n; i++) {
			if (matched(m, d, n_pol, i))
				continue;
			be_delta -= (long)m->svcs[i].n_be;
			err = ptrs_push(&removed, (void *)(uintptr_t)i);
			dmsc_format_svc_key(&m->svcs[i].key, m->svcs[i].family, m->svcs[i].vip6,
					     keybuf, sizeof(keybuf));
			if (!err)
				err = change_push(res, &changes_cap, DMSC_CHANGE_REMOVE,
						  m->svcs[i].name, keybuf);
			if (err)
				goto undo_ids;
		}
	}
	if ((long)m->n_backends + be_delta >= (long)dp->max_backends) {
		err = capacity_error(p, dp);
		goto undo_ids;
	}

	/* Write: the same steps, in the same order, as dmsc_apply(). Backends
	 * that lose their last reference wait in m->drops when delayed. */
	for (i = 0; i < changed.n; i++) {
		struct mchange *ch = changed.v[i];
		size_t n_drop = ch->plan.n_drop;

		if (ch->same)
			continue;
		if (m->drop_delay_ms) {
			ch->plan.n_drop = 0;
			res->entries_deferred += n_drop;
		}
		err = dmsc_plan_write(&c, &ch->plan);
		ch->plan.n_drop = n_drop;
		if (err)
			goto fail;
	}
	for (i = 0; i < removed.n; i++) {
		size_t ri = (uintptr_t)removed.v[i];
		const struct dmsc_mirror_svc *ms = &m->svcs[ri];
		struct dmsc_state_svc s;

		if (m->drop_delay_ms) {
			err = remove_deferred(&c, ms);
			res->entries_deferred += ms->n_be;
		} else {
			materialize(ms, &m->hot[ri], &s);
			err = dmsc_plan_remove(&c, &s, ms->allow, ms->n_allow);
		}
		if (err)
			goto fail;
	}
	res->entries_written += res->entries_deferred;
	if (dry_run)
		goto undo_ids;

	/* The maps hold the policy: so does the mirror from here on. */
	m->next_svc = c.next_svc;
	m->next_be = c.next_be;
	for (i = 0; i < changed.n; i++) {
		struct mchange *ch = changed.v[i];
		struct dmsc_mirror_svc *ms;

		if (ch->mi < 0) {
			err = grow_svcs(m, m->n + 1);
			if (err)
				goto fatal;
			ms = &m->svcs[m->n];
			memset(ms, 0, sizeof(*ms));
			m->hot[m->n].pass = m->pass;
			err = mirror_set(ms, &m->hot[m->n], &m->dig[m->n], &ch->plan, d[ch->pi].fp);
			if (err)
				goto fatal;
			m->n++;
			/* Indexed by its key, so after mirror_set(). */
			if (m->index_cap < 2 * (m->n + 1))
				err = index_rebuild(m, m->n * 2);
			else
				index_insert(m, m->n - 1);
			if (err)
				goto fatal;
			continue;
		} else {
			ms = &m->svcs[ch->mi];
			if (ch->same) {
				m->dig[ch->mi].fp = d[ch->pi].fp;
				m->hot[ch->mi].stale = 0;
				continue;
			}
		}
		err = mirror_set(ms, &m->hot[ch->mi], &m->dig[ch->mi], &ch->plan, d[ch->pi].fp);
		if (err)
			goto fatal;
		for (j = 0; j < ch->plan.n_drop; j++) {
			if (m->drop_delay_ms)
				err = pend_drop(m, ch->plan.drop_be[j], due);
			else
				mark(m->be_used, m->max_backends, ch->plan.drop_be[j], 0);
			if (err)
				goto fatal;
		}
	}
	for (i = 0; i < removed.n; i++) {
		struct dmsc_mirror_svc *ms = &m->svcs[(uintptr_t)removed.v[i]];

		mark(m->svc_used, m->max_services, ms->id, 0);
		for (j = 0; j < ms->n_be; j++) {
			if (m->drop_delay_ms)
				err = pend_drop(m, ms->be[j].id, due);
			else
				mark(m->be_used, m->max_backends, ms->be[j].id, 0);
			if (err)
				goto fatal;
		}
	}
	if (removed.n || !aligned) {
		err = reorder(m, d, p->n_services);
		if (err)
			goto fatal;
	}
	m->n_backends = (size_t)((long)m->n_backends + be_delta);
	in_step_after(m, &c);
	err = 0;
	goto out;
fatal:
	/* The maps are right, the mirror may not be: read them next time. */
	dmsc_apply_finish(&c);
	m->loaded = false;
	goto out;
fail:
	pr_warn("apply failed after %zu writes: rolling back\n", c.n_undo);
	dmsc_apply_rollback(&c);
	in_step_after(m, &c);
undo_ids:
	/* Ids taken by the plan go back (a dry run, a failure). */
	for (i = 0; i < new_svc_ids.n; i++)
		mark(m->svc_used, m->max_services, (__u32)(uintptr_t)new_svc_ids.v[i], 0);
	for (i = 0; i < new_be_ids.n; i++)
		mark(m->be_used, m->max_backends, (__u32)(uintptr_t)new_be_ids.v[i], 0);
	if (err)
		m->pass++; /* the marks of this pass mean nothing */
out:
	dmsc_apply_ctx_release(&c);
	for (i = 0; i < changed.n; i++) {
		/* The rules dmsc_plan_service() allocated (mirror_set copied them). */
		free(((struct mchange *)changed.v[i])->plan.allow);
		free(changed.v[i]);
	}
	free(changed.v);
	free(removed.v);
	free(new_svc_ids.v);
	free(new_be_ids.v);
	return err;
}

int dmsc_mirror_flush_drops(struct dmsc_mirror *m, const struct dmsc_datapath *dp, int64_t now_ms,
			    bool force)
{
	static const struct dmsc_backend zero_be;
	static const struct dmsc_backend6 zero_be6;
	size_t stride = (sizeof(struct dmsc_be_stats) + 7) & ~(size_t)7, i, kept = 0;
	__u64 gen;
	void *zeros;
	int n = 0, err = 0;

	if (!m->n_drops)
		return 0;
	if (!m->loaded || dmsc_datapath_generation(dp, &gen) || gen != m->generation ||
	    dmsc_map_id(dp->fd[DMSC_M_SERVICES]) != m->services_map_id) {
		/* Another writer may have given these ids to new backends. */
		pr_debug("the datapath changed under %zu pending backend removals: left to the "
			 "next read of the maps\n",
			 m->n_drops);
		m->n_drops = 0;
		m->loaded = false;
		return 0;
	}
	zeros = calloc(dp->nr_cpus, stride);
	if (!zeros)
		return -ENOMEM;
	for (i = 0; i < m->n_drops; i++) {
		struct dmsc_pending_drop *d = &m->drops[i];

		if (!force && d->due_ms > now_ms) {
			m->drops[kept++] = *d;
			continue;
		}
		/* An id is of one family: the other map's entry is zero. */
		if (bpf_map_update_elem(dp->fd[DMSC_M_BACKENDS], &d->id, &zero_be, BPF_ANY) ||
		    bpf_map_update_elem(dp->fd[DMSC_M_BACKENDS6], &d->id, &zero_be6, BPF_ANY)) {
			err = -errno;
			pr_warn("cannot clear backend %u in %s: %s\n", d->id, DMSC_MAP_BACKENDS,
				strerror(-err));
			m->drops[kept++] = *d;
			continue;
		}
		bpf_map_update_elem(dp->fd[DMSC_M_BE_STATS], &d->id, zeros, BPF_ANY);
		mark(m->be_used, m->max_backends, d->id, 0);
		n++;
	}
	m->n_drops = kept;
	free(zeros);
	return err ? err : n;
}

int dmsc_mirror_next_drop_ms(const struct dmsc_mirror *m, int64_t now_ms)
{
	int64_t best = -1;
	size_t i;

	for (i = 0; i < m->n_drops; i++) {
		int64_t left = m->drops[i].due_ms - now_ms;

		if (left < 0)
			left = 0;
		if (best < 0 || left < best)
			best = left;
	}
	return best > 100000 ? 100000 : (int)best;
}
