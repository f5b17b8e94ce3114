// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include "array.h"
#include "mirror_steps.h"

/* ---- apply ---------------------------------------------------------- */

/* A service whose policy differs from the mirror. 12 KB with its plan and
 * what the maps hold (cur), times every service on a first apply or a
 * restart: a new service's record stops before cur, and one found the
 * same as the maps keeps only what precedes its plan. */
struct mchange {
	long mi;   /* mirror index; -1: new */
	size_t pi; /* policy index */
	bool same; /* compiled equal to what the maps hold: nothing to write */
	struct plan_svc plan;      /* (not there when same) */
	struct dmsc_state_svc cur; /* (not there when new) */
};

struct ptrs {
	void **v;
	size_t n, cap;
};

static int ptrs_push(struct ptrs *a, void *p)
{
	void **grown = dmsc_array_room(a->v, a->n, &a->cap, sizeof(*a->v), 16);

	if (!grown)
		return -ENOMEM;
	a->v = grown;
	a->v[a->n++] = p;
	return 0;
}

static int change_push(struct dmsc_apply_result *res, size_t *cap, enum dmsc_change_op op,
		       const char *name, const char *detail)
{
	struct dmsc_change *ch;

	ch = dmsc_array_room(res->changes, res->n_changes, cap, sizeof(*ch), 16);
	if (!ch)
		return -ENOMEM;
	res->changes = ch;
	ch = &res->changes[res->n_changes++];
	ch->op = op;
	snprintf(ch->service, sizeof(ch->service), "%s", name);
	snprintf(ch->detail, sizeof(ch->detail), "%s", detail);
	return 0;
}

static int pend_drop(struct dmsc_mirror *m, __u32 id, int64_t due)
{
	struct dmsc_pending_drop *grown =
	    dmsc_array_room(m->drops, m->n_drops, &m->cap_drops, sizeof(*m->drops), 16);

	if (!grown)
		return -ENOMEM;
	m->drops = grown;
	m->drops[m->n_drops].id = id;
	m->drops[m->n_drops].due_ms = due;
	m->n_drops++;
	return 0;
}

/* Removes a service with its backends left for later: the service element
 * first, so no new connect() finds it, then its meta. */
static int remove_deferred(struct apply_ctx *c, const struct dmsc_mirror_svc *ms)
{
	const struct dmsc_mirror_ext *x = dmsc_mirror_ext(ms);
	__u32 id = ms->id;
	size_t i;
	int err;

	/* The order of dmsc_plan_remove(): meta last. */
	if (ms->family == AF_INET6) {
		struct dmsc_svc6_key key6;

		dmsc_svc6_key(&ms->key, dmsc_mirror_vip6(ms), &key6);
		err = dmsc_apply_drop(c, DMSC_M_SERVICES6, &key6);
	} else {
		err = dmsc_apply_drop(c, DMSC_M_SERVICES, &ms->key);
	}
	if (err)
		return err;
	dmsc_apply_zero_stats(c, DMSC_M_SVC_STATS, id, sizeof(struct dmsc_svc_stats));
	if (x->limits.conn_rate || x->limits.byte_rate) {
		struct dmsc_limits none;

		memset(&none, 0, sizeof(none));
		err = dmsc_apply_put(c, DMSC_M_LIMITS, &id, &none);
	}
	for (i = 0; !err && i < x->n_allow; i++)
		err = dmsc_apply_drop(c, DMSC_M_ALLOW, &x->allow[i].key);
	if (!err && (ms->flags & (DMSC_SVC_F_BYTES_LIMIT | DMSC_SVC_F_MTLS_GUARD))) {
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
	struct dmsc_limits limits = p->limits;
	__u32 i, n = p->meta.n_backends;
	int err;

	limits_config_only(&limits);
	err = dmsc_mirror_svc_shape(ms, p->want->family, (const __u32 *)p->want->vip6,
				    p->meta.name, n, (const __u32(*)[4])p->be6, &limits,
				    &p->svc.health, p->allow, p->n_allow);
	if (err)
		return err;
	ms->key = p->key;
	ms->id = p->svc.id;
	ms->flags = p->svc.flags;
	dig->key = p->key;
	memcpy(dig->vip6, dmsc_mirror_vip6(ms), sizeof(dig->vip6));
	/* Unknown while a rule waits for its cgroup: planned again next time. */
	dig->fp = has_unresolved(p->allow, p->n_allow) ? 0 : fp;
	hot->stale = 0;
	for (i = 0; i < n; i++) {
		ms->be[i].id = p->meta.backend_id[i];
		ms->be[i].weight = p->meta.weight[i];
		ms->be[i].addr = p->be[i].addr;
		ms->be[i].port = p->be[i].port;
		ms->be[i].out = p->be_out[i];
		ms->be[i].flags = (__u8)p->be[i].flags;
	}
	return 0;
}

bool dmsc_mirror_in_step(const struct dmsc_mirror *m, const struct dmsc_datapath *dp)
{
	__u64 gen = 0;

	return m->loaded && dmsc_datapath_generation(dp, &gen) == 0 && gen == m->generation &&
	       dmsc_map_id(dp->fd[DMSC_M_SERVICES]) == m->services_map_id &&
	       m->max_services == dp->max_services && m->max_backends == dp->max_backends;
}

bool dmsc_mirror_holds(const struct dmsc_mirror *m, const struct dmsc_svc_digest *d, size_t pos)
{
	long j;

	if (pos < m->n && key_eq(&m->dig[pos], &d->key, d->vip6))
		j = (long)pos;
	else
		j = index_find(m, &d->key, d->vip6);
	return j >= 0 && m->dig[j].fp && m->dig[j].fp == d->fp && !m->hot[j].stale;
}

static int in_step(struct dmsc_mirror *m, const struct dmsc_datapath *dp)
{
	if (dmsc_mirror_in_step(m, dp))
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
	int err = -ENOMEM;

	if (!ordered || !hot || !dig)
		goto out;
	for (i = 0; i < n; i++) {
		j = index_find(m, &d[i].key, d[i].vip6);
		if (j < 0) { /* cannot happen: every policy service is in */
			err = -EINVAL;
			goto out;
		}
		ordered[i] = m->svcs[j];
		hot[i] = m->hot[j];
		dig[i] = m->dig[j];
		/* Moved: free_svcs() below must not free what it points to. */
		m->svcs[j].be = NULL;
		m->svcs[j].ext = NULL;
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
out:
	free(ordered);
	free(hot);
	free(dig);
	return err;
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

/* The mirror without the services at the indexes of removed (ascending),
 * in its order. */
static int drop_removed(struct dmsc_mirror *m, const struct ptrs *removed)
{
	size_t i, k = 0, r = 0;

	for (i = 0; i < m->n; i++) {
		if (r < removed->n && (uintptr_t)removed->v[r] == i) {
			dmsc_mirror_svc_release(&m->svcs[i]);
			r++;
			continue;
		}
		m->svcs[k] = m->svcs[i];
		m->hot[k] = m->hot[i];
		m->dig[k] = m->dig[i];
		k++;
	}
	m->n = k;
	return index_rebuild(m, m->n);
}

/* partial: p holds only services that changed or are new; every other
 * service the mirror holds stays (the order is kept), unless keep: then
 * those in neither p nor keep are removed. */
static int mirror_apply(struct dmsc_mirror *m, const struct dmsc_datapath *dp,
			const struct dmsc_policy *p, const struct dmsc_svc_digest *d, bool dry_run,
			bool partial, const struct dmsc_svc_digest *keep, size_t n_keep,
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
		ch = calloc(1, mi >= 0 ? sizeof(*ch) : offsetof(struct mchange, cur));
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
			ch->plan.cur_allow = dmsc_mirror_ext(&m->svcs[mi])->allow;
			ch->plan.n_cur_allow = dmsc_mirror_ext(&m->svcs[mi])->n_allow;
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
			struct mchange *small;

			ch->same = true;
			free(ch->plan.allow);
			small = realloc(ch, offsetof(struct mchange, plan));
			if (small)
				changed.v[changed.n - 1] = small;
		}
		if (err)
			goto undo_ids;
	}
	/* every service kept is matched too */
	for (i = 0; partial && keep && i < n_keep; i++) {
		long kj = index_find(m, &keep[i].key, keep[i].vip6);

		if (kj >= 0)
			m->hot[kj].pass = m->pass;
	}
	if ((!partial && seen < m->n) || (partial && keep)) {
		for (i = 0; i < m->n; i++) {
			if (matched(m, d, n_pol, i))
				continue;
			be_delta -= (long)m->svcs[i].n_be;
			err = ptrs_push(&removed, (void *)(uintptr_t)i);
			dmsc_format_svc_key(&m->svcs[i].key, m->svcs[i].family,
					     dmsc_mirror_vip6(&m->svcs[i]),
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
		size_t n_drop;

		if (ch->same)
			continue; /* (its record has no plan) */
		n_drop = ch->plan.n_drop;
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
			err = dmsc_plan_remove(&c, &s, dmsc_mirror_ext(ms)->allow,
					       dmsc_mirror_ext(ms)->n_allow);
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
	if (!partial && (removed.n || !aligned)) {
		err = reorder(m, d, p->n_services);
		if (err)
			goto fatal;
	} else if (partial && removed.n) {
		err = drop_removed(m, &removed);
		if (err)
			goto fatal;
	}
	m->n_backends = (size_t)((long)m->n_backends + be_delta);
	in_step_after(m, &c);
	if (partial)
		res->n_services = m->n;
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
		struct mchange *ch = changed.v[i];

		/* The rules dmsc_plan_service() allocated (mirror_set copied
		 * them; a record found the same freed them). */
		if (!ch->same)
			free(ch->plan.allow);
		free(ch);
	}
	free(changed.v);
	free(removed.v);
	free(new_svc_ids.v);
	free(new_be_ids.v);
	return err;
}

int dmsc_mirror_apply(struct dmsc_mirror *m, const struct dmsc_datapath *dp,
		      const struct dmsc_policy *p, const struct dmsc_svc_digest *d, bool dry_run,
		      struct dmsc_apply_result *res)
{
	return mirror_apply(m, dp, p, d, dry_run, false, NULL, 0, res);
}

int dmsc_mirror_apply_some(struct dmsc_mirror *m, const struct dmsc_datapath *dp,
			   const struct dmsc_policy *p, const struct dmsc_svc_digest *d,
			   const struct dmsc_svc_digest *keep, size_t n_keep,
			   struct dmsc_apply_result *res)
{
	return mirror_apply(m, dp, p, d, false, true, keep, n_keep, res);
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
		dmsc_health_zero(dp, d->id);
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
