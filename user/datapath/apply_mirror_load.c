// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's mirror, its index and its load: services by key, the mirror
 * read from the pinned maps (repairing an interrupted write), freed,
 * allow rules taken over, forgotten.
 */
#include "mirror_steps.h"

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
bool key_eq(const struct dmsc_svc_digest *a, const struct dmsc_svc_key *b, const __u32 *b6)
{
	return dmsc_svc_key_cmp(&a->key, a->vip6, b, b6) == 0;
}

void index_insert(struct dmsc_mirror *m, size_t idx)
{
	size_t mask = m->index_cap - 1, h = key_hash(&m->dig[idx].key, m->dig[idx].vip6) & mask;

	while (m->index[h])
		h = (h + 1) & mask;
	m->index[h] = (__u32)(idx + 1);
}

int index_rebuild(struct dmsc_mirror *m, size_t want)
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

long index_find(const struct dmsc_mirror *m, const struct dmsc_svc_key *k, const __u32 *vip6)
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

int grow_svcs(struct dmsc_mirror *m, size_t want)
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
		eff[DMSC_BACKENDS_PER_SERVICE_MAX], counts[DMSC_BACKENDS_PER_SERVICE_MAX];
	struct dmsc_backend be[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 be6[DMSC_BACKENDS_PER_SERVICE_MAX][4];
	unsigned char out[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 i;

	for (i = 0; i < ms->n_be; i++) {
		ids[i] = ms->be[i].id;
		w[i] = ms->be[i].weight;
		out[i] = ms->be[i].out;
		be[i].addr = ms->be[i].addr;
		be[i].port = ms->be[i].port;
		memcpy(be6[i], dmsc_mirror_be6(ms, i), sizeof(be6[i]));
	}
	/* As dmsc_plan_service lays it out: health's out backends get none. */
	dmsc_health_weights(w, out, ms->n_be, eff);
	dmsc_slot_counts(eff, ms->n_be, counts);
	dmsc_svc_layout(ms->flags, counts, ids, be, be6, ms->n_be, svc->slot);
}

/* What dmsc_state_read() would have read for this service. */
void materialize(const struct dmsc_mirror_svc *ms, const struct dmsc_mirror_hot *hot,
			struct dmsc_state_svc *s)
{
	const struct dmsc_mirror_ext *x = dmsc_mirror_ext(ms);
	__u32 i;

	memset(s, 0, sizeof(*s));
	s->key = ms->key;
	s->family = ms->family;
	memcpy(s->vip6, x->vip6, sizeof(s->vip6));
	s->svc.id = ms->id;
	s->svc.flags = ms->flags;
	s->svc.health = x->health;
	slot_table(ms, &s->svc);
	s->svc.table_hash = dmsc_table_hash(s->svc.slot);
	if (hot->stale)
		s->svc.slot[0] = UINT32_MAX; /* never equal to a compiled table */
	s->limits = x->limits;
	snprintf(s->meta.name, sizeof(s->meta.name), "%s", ms->name);
	s->meta.n_backends = ms->n_be;
	for (i = 0; i < ms->n_be; i++) {
		s->meta.backend_id[i] = ms->be[i].id;
		s->meta.weight[i] = ms->be[i].weight;
		s->be[i].addr = ms->be[i].addr;
		memcpy(s->be6[i], dmsc_mirror_be6(ms, i), sizeof(s->be6[i]));
		s->be[i].port = ms->be[i].port;
		s->be[i].flags = ms->be[i].flags;
		s->be[i].svc_id = ms->id;
	}
}

/* ---- the compact record (docs/design.md decision 59) ----------------- */

const struct dmsc_mirror_ext dmsc_mirror_ext_none;

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

void dmsc_mirror_svc_release(struct dmsc_mirror_svc *ms)
{
	free(ms->be);
	if (ms->ext)
		free(ms->ext->allow);
	free(ms->ext);
	ms->be = NULL;
	ms->ext = NULL;
	ms->name = NULL;
}

int dmsc_mirror_svc_shape(struct dmsc_mirror_svc *ms, int family, const __u32 *vip6,
			  const char *name, __u32 n_be, const __u32 (*be6)[4],
			  const struct dmsc_limits *limits, const struct dmsc_svc_health *health,
			  const struct dmsc_allow_entry *allow, size_t n_allow)
{
	size_t len = strnlen(name, DMSC_NAME_MAX - 1);
	bool has_be6 = be6 && !all_zero(be6, n_be * sizeof(*be6));
	struct dmsc_allow_entry *rules = NULL;
	struct dmsc_mirror_ext *ext = NULL;
	struct dmsc_mirror_be *be;
	char *nm;

	be = calloc(1, n_be * sizeof(*be) + len + 1);
	if (!be)
		return -ENOMEM;
	if (has_be6 || n_allow || !all_zero(vip6, sizeof(ext->vip6)) ||
	    !all_zero(limits, sizeof(*limits)) || !all_zero(health, sizeof(*health))) {
		ext = calloc(1, sizeof(*ext) + (has_be6 ? n_be : 0) * sizeof(ext->be6[0]));
		rules = n_allow ? malloc(n_allow * sizeof(*rules)) : NULL;
		if (!ext || (n_allow && !rules)) {
			free(be);
			free(ext);
			free(rules);
			return -ENOMEM;
		}
		memcpy(ext->vip6, vip6, sizeof(ext->vip6));
		ext->limits = *limits;
		ext->health = *health;
		if (n_allow)
			memcpy(rules, allow, n_allow * sizeof(*rules));
		ext->allow = rules;
		ext->n_allow = n_allow;
		if (has_be6) {
			ext->n_be6 = n_be;
			memcpy(ext->be6, be6, n_be * sizeof(*be6));
		}
	}
	nm = (char *)(be + n_be);
	memcpy(nm, name, len);
	nm[len] = '\0';
	dmsc_mirror_svc_release(ms);
	ms->family = family;
	ms->n_be = n_be;
	ms->be = be;
	ms->name = nm;
	ms->ext = ext;
	return 0;
}

/* The buckets move with traffic; only the configuration is mirrored. */
void limits_config_only(struct dmsc_limits *l)
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
	struct dmsc_allow_entry *rules;
	size_t i, first = n, count = 0;

	for (i = 0; i < n; i++)
		if (all[i].key.svc_id == ms->id) {
			if (first == n)
				first = i;
			count++;
		}
	if (ms->ext) {
		free(ms->ext->allow);
		ms->ext->allow = NULL;
		ms->ext->n_allow = 0;
	}
	if (!count)
		return 0;
	rules = malloc(count * sizeof(*rules));
	/* without an ext: an IPv4 service, whose ext has no be6 */
	if (!rules || (!ms->ext && !(ms->ext = calloc(1, sizeof(*ms->ext))))) {
		free(rules);
		return -ENOMEM;
	}
	memcpy(rules, &all[first], count * sizeof(*rules));
	ms->ext->allow = rules;
	ms->ext->n_allow = count;
	return 0;
}

/* Does any rule wait for a cgroup that did not exist? */
bool has_unresolved(const struct dmsc_allow_entry *a, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (a[i].key.cgroup_id & DMSC_ALLOW_UNRESOLVED)
			return true;
	return false;
}

static bool rules_unresolved(const struct dmsc_mirror_svc *ms)
{
	return has_unresolved(dmsc_mirror_ext(ms)->allow, dmsc_mirror_ext(ms)->n_allow);
}

void mark(unsigned char *used, __u32 max, __u32 id, unsigned char v)
{
	if (id && id < max)
		used[id] = v;
}

/* What the mirrored services need of the two indexes: the backend index
 * entries they own, and the guard's entries (docs/design.md decision 74). */
struct owned {
	struct dmsc_be_index_entry *index;
	struct dmsc_be_mtls_entry *mtls;
	size_t n_index, n_mtls;
};

static int owned(const struct dmsc_mirror *m, struct owned *o)
{
	size_t i, cap = 0, cap_mtls = 0;
	struct dmsc_state_svc s;
	int err = 0;

	memset(o, 0, sizeof(*o));
	for (i = 0; !err && i < m->n; i++) {
		__u32 flags = m->svcs[i].flags;

		if (!(flags & (DMSC_SVC_F_BYTES_LIMIT | DMSC_SVC_F_MTLS_GUARD)))
			continue;
		materialize(&m->svcs[i], &(struct dmsc_mirror_hot){ 0 }, &s);
		err = dmsc_be_index_own(&o->index, &o->n_index, &cap, &s.key, s.svc.id, flags, s.be,
					s.meta.n_backends);
		if (!err)
			err = dmsc_be_mtls_own(&o->mtls, &o->n_mtls, &cap_mtls, &s);
	}
	dmsc_be_index_sort(o->index, o->n_index);
	dmsc_be_mtls_sort(o->mtls, o->n_mtls);
	return err;
}

static void owned_free(struct owned *o)
{
	free(o->index);
	free(o->mtls);
}

/* Backend index entries of ids that no service holds, or of backends their
 * service no longer has; the guard's index entries no guarded backend
 * needs, or that name none. */
static int find_orphan_index(struct dmsc_mirror *m, const struct dmsc_datapath *dp)
{
	struct dmsc_be_index_entry *bi = NULL;
	struct owned keep = { 0 };
	size_t n = 0, i;
	bool stale = false;
	int err;

	err = dmsc_read_be_index(dp, &bi, &n);
	if (!err)
		err = owned(m, &keep);
	for (i = 0; !err && i < n; i++)
		if (!dmsc_be_index_owned(keep.index, keep.n_index, &bi[i]))
			m->orphans = true;
	if (!err)
		err = dmsc_be_mtls_stale(dp, keep.mtls, keep.n_mtls, &stale);
	if (stale)
		m->orphans = true;
	free(bi);
	owned_free(&keep);
	return err;
}

/* Before the first write of an apply: clears what an interrupted writer
 * left (per-id state of ids without a service; the mirror holds only
 * services, so these are read from the maps here). */
int repair(struct dmsc_mirror *m, struct apply_ctx *c, bool interrupted)
{
	struct dmsc_allow_entry *allow = NULL;
	struct dmsc_be_index_entry *bi = NULL;
	size_t n_allow = 0, n_bi = 0, n_mtls = 0;
	struct owned keep = { 0 };
	int err;

	err = dmsc_read_allow(c->dp, &allow, &n_allow);
	if (!err)
		err = dmsc_read_be_index(c->dp, &bi, &n_bi);
	if (!err)
		err = owned(m, &keep);
	if (!err)
		err = dmsc_apply_sweep(c, m->svc_used, allow, n_allow, bi, n_bi, keep.index,
				       keep.n_index, interrupted, &c->res->repaired);
	if (!err)
		err = dmsc_be_mtls_sweep(c, keep.mtls, keep.n_mtls, &n_mtls);
	c->res->repaired += n_mtls;
	if (!err)
		m->orphans = false;
	free(allow);
	free(bi);
	owned_free(&keep);
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
	struct dmsc_mirror_be bes[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 be_addr6[DMSC_BACKENDS_PER_SERVICE_MAX][4], vip6[4] = {0};
	struct dmsc_limits limits;
	struct dmsc_backend6 be6;
	struct dmsc_backend be;
	char name[DMSC_NAME_MAX];
	int family;
	__u32 i, id;

	if (key6 ? bpf_map_lookup_elem(dp->fd[DMSC_M_SERVICES6], key6, &svc)
		 : bpf_map_lookup_elem(dp->fd[DMSC_M_SERVICES], key, &svc))
		return -errno;
	memset(ms, 0, sizeof(*ms));
	memset(hot, 0, sizeof(*hot));
	memset(&m->dig[m->n], 0, sizeof(m->dig[m->n]));
	svc_ident(key, key6, &family, &ms->key, vip6);
	m->dig[m->n].key = ms->key;
	memcpy(m->dig[m->n].vip6, vip6, sizeof(vip6));
	m->dig[m->n].fp = 0;
	ms->id = svc.id;
	ms->flags = svc.flags;
	id = svc.id;
	if (id < dp->max_services &&
	    bpf_map_lookup_elem_flags(dp->fd[DMSC_M_LIMITS], &id, &limits, BPF_F_LOCK) == 0)
		limits_config_only(&limits);
	else
		memset(&limits, 0, sizeof(limits));
	if (id == 0 || id >= dp->max_services ||
	    bpf_map_lookup_elem(dp->fd[DMSC_M_SVC_META], &id, &meta))
		memset(&meta, 0, sizeof(meta));
	if (meta.n_backends > DMSC_BACKENDS_PER_SERVICE_MAX) {
		meta.n_backends = 0;
		hot->stale = true;
	}
	snprintf(name, sizeof(name), "%.*s", (int)sizeof(meta.name) - 1, meta.name);
	memset(be_addr6, 0, sizeof(be_addr6));
	memset(bes, 0, sizeof(bes));
	for (i = 0; i < meta.n_backends; i++) {
		id = meta.backend_id[i];
		bes[i].id = id;
		bes[i].weight = meta.weight[i];
		if (id && id < dp->max_backends && key6 &&
		    bpf_map_lookup_elem(dp->fd[DMSC_M_BACKENDS6], &id, &be6) == 0) {
			memcpy(be_addr6[i], be6.addr, sizeof(be6.addr));
			bes[i].port = be6.port;
			bes[i].flags = (__u8)be6.flags;
		} else if (id && id < dp->max_backends && !key6 &&
			   bpf_map_lookup_elem(dp->fd[DMSC_M_BACKENDS], &id, &be) == 0) {
			bes[i].addr = be.addr;
			bes[i].port = be.port;
			bes[i].flags = (__u8)be.flags;
		}
		mark(m->be_used, m->max_backends, id, 1);
	}
	if (dmsc_mirror_svc_shape(ms, family, vip6, name, meta.n_backends,
				  (const __u32(*)[4])be_addr6, &limits, &svc.health, NULL, 0))
		return -ENOMEM;
	memcpy(ms->be, bes, ms->n_be * sizeof(*ms->be));
	if (svc.flags & DMSC_SVC_F_HEALTH) {
		unsigned char out[DMSC_BACKENDS_PER_SERVICE_MAX];

		dmsc_health_read_out(dp, meta.backend_id, ms->n_be, out);
		for (i = 0; i < ms->n_be; i++)
			ms->be[i].out = out[i];
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

void free_svcs(struct dmsc_mirror *m)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		dmsc_mirror_svc_release(&m->svcs[i]);
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
		if (!err && rules_unresolved(&m->svcs[i]))
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
		if (rules_unresolved(&m->svcs[i]))
			m->dig[i].fp = 0;
	}
	return 0;
}

bool dmsc_mirror_replan(struct dmsc_mirror *m, const struct dmsc_svc_key *k, const __u32 *vip6)
{
	long i = index_find(m, k, vip6);

	if (i < 0)
		return false;
	m->dig[i].fp = 0;
	return true;
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
