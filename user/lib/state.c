// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "dmsc/slots.h"
#include "log.h"
#include "state.h"

void dmsc_format_addr_port(__u32 addr_be, __u16 port_be, char *buf, size_t len)
{
	char a[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &addr_be, a, sizeof(a));
	snprintf(buf, len, "%s:%u", a, ntohs(port_be));
}

void dmsc_format_svc_key(const struct dmsc_svc_key *k, char *buf, size_t len)
{
	char ap[32];

	dmsc_format_addr_port(k->vip, k->port, ap, sizeof(ap));
	snprintf(buf, len, "%s/%s", ap, k->proto == DMSC_PROTO_UDP ? "udp" : "tcp");
}

const char *dmsc_change_op_name(enum dmsc_change_op op)
{
	switch (op) {
	case DMSC_CHANGE_ADD:
		return "add";
	case DMSC_CHANGE_UPDATE:
		return "update";
	case DMSC_CHANGE_REMOVE:
		return "remove";
	}
	return "?";
}

static int svc_by_name(const void *a, const void *b)
{
	const struct dmsc_state_svc *x = a, *y = b;

	return strncmp(x->meta.name, y->meta.name, sizeof(x->meta.name));
}

static int read_one(const struct dmsc_datapath *dp, const struct dmsc_svc_key *key,
		    struct dmsc_state_svc *s)
{
	__u32 i, j, id;

	memset(s, 0, sizeof(*s));
	s->key = *key;
	if (bpf_map_lookup_elem(dp->fd[DMSC_M_SERVICES], key, &s->svc))
		return -errno;
	id = s->svc.id;
	if (id == 0 || id >= dp->max_services ||
	    bpf_map_lookup_elem(dp->fd[DMSC_M_SVC_META], &id, &s->meta))
		memset(&s->meta, 0, sizeof(s->meta));
	if (s->meta.n_backends > DMSC_BACKENDS_PER_SERVICE_MAX)
		s->meta.n_backends = 0;
	for (i = 0; i < s->meta.n_backends; i++) {
		id = s->meta.backend_id[i];
		if (id == 0 || id >= dp->max_backends ||
		    bpf_map_lookup_elem(dp->fd[DMSC_M_BACKENDS], &id, &s->be[i]))
			memset(&s->be[i], 0, sizeof(s->be[i]));
		for (j = 0; j < DMSC_SLOTS; j++)
			if (s->svc.slot[j] == id)
				s->be_slots[i]++;
	}
	return 0;
}

int dmsc_state_read(const struct dmsc_datapath *dp, struct dmsc_state *st)
{
	struct dmsc_svc_key key, next;
	struct dmsc_state_svc *grown;
	size_t cap = 0;
	int err;
	void *prev = NULL;

	memset(st, 0, sizeof(*st));
	while (bpf_map_get_next_key(dp->fd[DMSC_M_SERVICES], prev, &next) == 0) {
		key = next;
		prev = &key;
		if (st->n_svcs == cap) {
			cap = cap ? cap * 2 : 64;
			grown = realloc(st->svcs, cap * sizeof(*st->svcs));
			if (!grown) {
				err = -ENOMEM;
				goto fail;
			}
			st->svcs = grown;
		}
		err = read_one(dp, &key, &st->svcs[st->n_svcs]);
		if (err == -ENOENT)
			continue; /* deleted under us */
		if (err)
			goto fail;
		st->n_svcs++;
	}
	if (errno != ENOENT) {
		err = -errno;
		goto fail;
	}
	if (st->n_svcs)
		qsort(st->svcs, st->n_svcs, sizeof(*st->svcs), svc_by_name);
	return 0;
fail:
	pr_warn("cannot read %s: %s\n", DMSC_MAP_SERVICES, strerror(-err));
	dmsc_state_free(st);
	return err;
}

void dmsc_state_free(struct dmsc_state *st)
{
	free(st->svcs);
	memset(st, 0, sizeof(*st));
}

/* ---- apply ---------------------------------------------------------- */

/* One write, remembered so that a failure later can put it back. */
struct undo {
	enum dmsc_map_id map;
	union {
		__u32 id;
		struct dmsc_svc_key svc;
	} key;
	bool existed;
	void *old;
};

struct plan_svc {
	const struct dmsc_policy_service *want; /* NULL: remove */
	const struct dmsc_state_svc *cur;       /* NULL: add */
	struct dmsc_svc_key key;
	struct dmsc_svc svc;
	struct dmsc_svc_meta meta;
	struct dmsc_backend be[DMSC_BACKENDS_PER_SERVICE_MAX];
	bool be_new[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 drop_be[DMSC_BACKENDS_PER_SERVICE_MAX];
	size_t n_drop;
};

struct apply_ctx {
	const struct dmsc_datapath *dp;
	struct dmsc_apply_result *res;
	bool dry_run;
	struct undo *undo;
	size_t n_undo, cap_undo;
	unsigned char *svc_used; /* by id */
	unsigned char *be_used;
	__u32 next_svc, next_be;  /* where the free-id search resumes */
};

static size_t value_size(enum dmsc_map_id m)
{
	switch (m) {
	case DMSC_M_SERVICES:
		return sizeof(struct dmsc_svc);
	case DMSC_M_BACKENDS:
		return sizeof(struct dmsc_backend);
	case DMSC_M_SVC_META:
		return sizeof(struct dmsc_svc_meta);
	default:
		return 0;
	}
}

static int undo_push(struct apply_ctx *c, enum dmsc_map_id m, const void *key)
{
	struct undo *u, *grown;
	size_t vs = value_size(m);

	if (c->n_undo == c->cap_undo) {
		c->cap_undo = c->cap_undo ? c->cap_undo * 2 : 64;
		grown = realloc(c->undo, c->cap_undo * sizeof(*c->undo));
		if (!grown)
			return -ENOMEM;
		c->undo = grown;
	}
	u = &c->undo[c->n_undo];
	memset(u, 0, sizeof(*u));
	u->map = m;
	memcpy(&u->key, key, m == DMSC_M_SERVICES ? sizeof(u->key.svc) : sizeof(u->key.id));
	u->old = malloc(vs);
	if (!u->old)
		return -ENOMEM;
	u->existed = bpf_map_lookup_elem(c->dp->fd[m], key, u->old) == 0;
	c->n_undo++;
	return 0;
}

static int put(struct apply_ctx *c, enum dmsc_map_id m, const void *key, const void *val)
{
	int err;

	c->res->entries_written++;
	if (c->dry_run)
		return 0;
	err = undo_push(c, m, key);
	if (err)
		return err;
	if (bpf_map_update_elem(c->dp->fd[m], key, val, BPF_ANY)) {
		err = -errno;
		pr_warn("cannot write %s: %s\n", dmsc_map_names[m], strerror(-err));
		return err;
	}
	return 0;
}

/* Arrays cannot lose an element: their "delete" writes zeros. */
static int drop(struct apply_ctx *c, enum dmsc_map_id m, const void *key)
{
	static const char zeros[sizeof(struct dmsc_svc_meta)];
	int err;

	if (m != DMSC_M_SERVICES)
		return put(c, m, key, zeros);
	c->res->entries_written++;
	if (c->dry_run)
		return 0;
	err = undo_push(c, m, key);
	if (err)
		return err;
	if (bpf_map_delete_elem(c->dp->fd[m], key) && errno != ENOENT) {
		err = -errno;
		pr_warn("cannot delete from %s: %s\n", dmsc_map_names[m], strerror(-err));
		return err;
	}
	return 0;
}

static void rollback(struct apply_ctx *c)
{
	size_t i;

	for (i = c->n_undo; i-- > 0;) {
		struct undo *u = &c->undo[i];
		int fd = c->dp->fd[u->map];

		if (u->existed)
			bpf_map_update_elem(fd, &u->key, u->old, BPF_ANY);
		else if (u->map == DMSC_M_SERVICES)
			bpf_map_delete_elem(fd, &u->key);
		else {
			memset(u->old, 0, value_size(u->map));
			bpf_map_update_elem(fd, &u->key, u->old, BPF_ANY);
		}
	}
	c->res->rolled_back = true;
}

/* Statistics of an id that is given up start from zero for its next
 * owner. Not undone: counters of a removed id mean nothing. */
static void zero_stats(struct apply_ctx *c, enum dmsc_map_id m, __u32 id, size_t vs)
{
	size_t stride = (vs + 7) & ~(size_t)7;
	void *zeros;

	if (c->dry_run)
		return;
	zeros = calloc(c->dp->nr_cpus, stride);
	if (!zeros)
		return;
	bpf_map_update_elem(c->dp->fd[m], &id, zeros, BPF_ANY);
	free(zeros);
}

static __u32 alloc_id(unsigned char *used, __u32 max, __u32 *next)
{
	__u32 n, id;

	for (n = 0; n < max; n++) {
		id = (*next + n) % max;
		if (id == 0 || used[id])
			continue;
		used[id] = 1;
		*next = id + 1;
		return id;
	}
	return 0;
}

static void change(struct apply_ctx *c, enum dmsc_change_op op, const char *name,
		   const char *detail)
{
	struct dmsc_change *ch = &c->res->changes[c->res->n_changes++];

	ch->op = op;
	snprintf(ch->service, sizeof(ch->service), "%s", name);
	snprintf(ch->detail, sizeof(ch->detail), "%s", detail);
}

static void policy_key(const struct dmsc_policy_service *w, struct dmsc_svc_key *k)
{
	memset(k, 0, sizeof(*k));
	k->vip = w->vip;
	k->port = htons(w->port);
	k->proto = w->protocol == DMSC_POLICY_UDP ? DMSC_PROTO_UDP : DMSC_PROTO_TCP;
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

/* Fills p from its policy service, reusing the current backend ids of the
 * same address:port. Describes the difference in detail. */
static int plan_one(struct apply_ctx *c, struct plan_svc *p, char *detail, size_t dlen)
{
	const struct dmsc_policy_service *w = p->want;
	const struct dmsc_state_svc *cur = p->cur;
	__u32 counts[DMSC_BACKENDS_PER_SERVICE_MAX], weight[DMSC_BACKENDS_PER_SERVICE_MAX];
	bool kept[DMSC_BACKENDS_PER_SERVICE_MAX] = { false };
	char ap[32];
	size_t i, j;

	p->svc.id = cur ? cur->svc.id : alloc_id(c->svc_used, c->dp->max_services, &c->next_svc);
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
		p->be[i].port = htons(b->port);
		p->be[i].svc_id = p->svc.id;
		weight[i] = b->weight;
		p->meta.weight[i] = b->weight;
		dmsc_format_addr_port(p->be[i].addr, p->be[i].port, ap, sizeof(ap));
		for (j = 0; cur && j < cur->meta.n_backends; j++) {
			if (!kept[j] && cur->be[j].addr == p->be[i].addr &&
			    cur->be[j].port == p->be[i].port && cur->be[j].svc_id == p->svc.id) {
				kept[j] = true;
				id = cur->meta.backend_id[j];
				if (cur->meta.weight[j] != b->weight)
					append(detail, dlen, "%s weight %u -> %u; ", ap,
					       cur->meta.weight[j], b->weight);
				break;
			}
		}
		if (!id) {
			id = alloc_id(c->be_used, c->dp->max_backends, &c->next_be);
			if (!id)
				return -ENOSPC;
			p->be_new[i] = true;
			append(detail, dlen, "+ %s weight %u; ", ap, b->weight);
		}
		p->meta.backend_id[i] = id;
	}
	for (j = 0; cur && j < cur->meta.n_backends; j++) {
		if (kept[j])
			continue;
		p->drop_be[p->n_drop++] = cur->meta.backend_id[j];
		dmsc_format_addr_port(cur->be[j].addr, cur->be[j].port, ap, sizeof(ap));
		append(detail, dlen, "- %s; ", ap);
	}
	if (dmsc_slot_counts(weight, (__u32)w->n_backends, counts) == 0)
		p->svc.flags |= DMSC_SVC_F_NO_BACKEND;
	/* The same-host fast path: "auto" sets neither flag. */
	if (w->accelerate == DMSC_ACCEL_OFF)
		p->svc.flags |= DMSC_SVC_F_ACCEL_OFF;
	else if (w->accelerate == DMSC_ACCEL_ON)
		p->svc.flags |= DMSC_SVC_F_ACCEL_ON;
	if (cur && (cur->svc.flags ^ p->svc.flags) & (DMSC_SVC_F_ACCEL_OFF | DMSC_SVC_F_ACCEL_ON))
		append(detail, dlen, "accelerate %s; ",
		       w->accelerate == DMSC_ACCEL_OFF ? "off"
		       : w->accelerate == DMSC_ACCEL_ON	 ? "on"
							 : "auto");
	dmsc_slot_layout(counts, p->meta.backend_id, (__u32)w->n_backends, p->svc.slot);
	i = strlen(detail);
	if (i >= 2 && detail[i - 2] == ';')
		detail[i - 2] = '\0';
	return 0;
}

/* Marks every id the datapath references: ids in meta and ids in slot
 * tables (after an interrupted apply they may differ). */
static void mark_used(struct apply_ctx *c, const struct dmsc_state *st)
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

static int write_one(struct apply_ctx *c, const struct plan_svc *p)
{
	size_t i;
	int err;

	for (i = 0; i < p->meta.n_backends; i++) {
		if (!p->be_new[i])
			continue;
		err = put(c, DMSC_M_BACKENDS, &p->meta.backend_id[i], &p->be[i]);
		if (err)
			return err;
	}
	if (!p->cur || memcmp(&p->cur->meta, &p->meta, sizeof(p->meta)) != 0) {
		err = put(c, DMSC_M_SVC_META, &p->svc.id, &p->meta);
		if (err)
			return err;
	}
	if (!p->cur || memcmp(&p->cur->svc, &p->svc, sizeof(p->svc)) != 0) {
		err = put(c, DMSC_M_SERVICES, &p->key, &p->svc);
		if (err)
			return err;
	}
	for (i = 0; i < p->n_drop; i++) {
		err = drop(c, DMSC_M_BACKENDS, &p->drop_be[i]);
		if (err)
			return err;
		zero_stats(c, DMSC_M_BE_STATS, p->drop_be[i], sizeof(struct dmsc_be_stats));
	}
	return 0;
}

static int remove_one(struct apply_ctx *c, const struct dmsc_state_svc *s)
{
	__u32 id = s->svc.id;
	size_t i;
	int err;

	/* The service first: no connect() can reach a backend after it. */
	err = drop(c, DMSC_M_SERVICES, &s->key);
	if (!err)
		err = drop(c, DMSC_M_SVC_META, &id);
	for (i = 0; !err && i < s->meta.n_backends; i++) {
		err = drop(c, DMSC_M_BACKENDS, &s->meta.backend_id[i]);
		zero_stats(c, DMSC_M_BE_STATS, s->meta.backend_id[i], sizeof(struct dmsc_be_stats));
	}
	if (!err) {
		zero_stats(c, DMSC_M_SVC_STATS, id, sizeof(struct dmsc_svc_stats));
		zero_stats(c, DMSC_M_FP_STATS, id, sizeof(struct dmsc_fp_stats));
		if (!c->dry_run) /* a plain array: one value */
			bpf_map_update_elem(c->dp->fd[DMSC_M_FP_SVC], &id,
					    &(struct dmsc_fp_svc){ 0 }, BPF_ANY);
	}
	return err;
}

static const struct dmsc_state_svc *find_cur(const struct dmsc_state *st,
					     const struct dmsc_svc_key *k, unsigned char *matched)
{
	size_t i;

	/* Linear: fine for dmscctl's one-shot apply; dmscd keeps an index. */
	for (i = 0; i < st->n_svcs; i++)
		if (!matched[i] && memcmp(&st->svcs[i].key, k, sizeof(*k)) == 0) {
			matched[i] = 1;
			return &st->svcs[i];
		}
	return NULL;
}

static size_t count_new_backends(const struct dmsc_policy *p)
{
	size_t i, n = 0;

	for (i = 0; i < p->n_services; i++)
		n += p->services[i].n_backends;
	return n;
}

int dmsc_apply(const struct dmsc_datapath *dp, const struct dmsc_policy *p, bool dry_run,
	       struct dmsc_apply_result *res)
{
	struct apply_ctx c = { .dp = dp, .res = res, .dry_run = dry_run, .next_svc = 1, .next_be = 1 };
	struct dmsc_state st = { 0 };
	unsigned char *matched = NULL;
	struct plan_svc *plan = NULL;
	char detail[512], keybuf[48];
	size_t i, n_backends;
	int err;

	memset(res, 0, sizeof(*res));
	res->n_services = p->n_services;
	n_backends = count_new_backends(p);
	if (p->n_services >= dp->max_services || n_backends >= dp->max_backends) {
		pr_warn("the policy has %zu services and %zu backends; this datapath holds at "
			"most %u and %u (set with `dmscctl install --max-services N "
			"--max-backends N`)\n",
			p->n_services, n_backends, dp->max_services - 1, dp->max_backends - 1);
		return -ENOSPC;
	}
	err = dmsc_state_read(dp, &st);
	if (err)
		return err;
	c.svc_used = calloc(dp->max_services, 1);
	c.be_used = calloc(dp->max_backends, 1);
	matched = calloc(st.n_svcs + 1, 1);
	plan = calloc(p->n_services + 1, sizeof(*plan));
	res->changes = calloc(p->n_services + st.n_svcs + 1, sizeof(*res->changes));
	if (!c.svc_used || !c.be_used || !matched || !plan || !res->changes) {
		err = -ENOMEM;
		goto out;
	}
	mark_used(&c, &st);

	/* Plan everything before the first write: running out of ids is found
	 * here, with the datapath untouched. */
	for (i = 0; i < p->n_services; i++) {
		plan[i].want = &p->services[i];
		policy_key(plan[i].want, &plan[i].key);
		plan[i].cur = find_cur(&st, &plan[i].key, matched);
		err = plan_one(&c, &plan[i], detail, sizeof(detail));
		if (err) {
			pr_warn("not enough room in the datapath for services[%zu] (%s): every "
				"service or backend id is taken (capacity %u services, %u "
				"backends)\n",
				i, p->services[i].name, dp->max_services - 1, dp->max_backends - 1);
			goto out;
		}
		if (!plan[i].cur) {
			dmsc_format_svc_key(&plan[i].key, keybuf, sizeof(keybuf));
			snprintf(detail, sizeof(detail), "%s, %zu backend%s", keybuf,
				 plan[i].want->n_backends, plan[i].want->n_backends == 1 ? "" : "s");
			change(&c, DMSC_CHANGE_ADD, plan[i].want->name, detail);
		} else if (memcmp(&plan[i].cur->svc, &plan[i].svc, sizeof(plan[i].svc)) ||
			   memcmp(&plan[i].cur->meta, &plan[i].meta, sizeof(plan[i].meta))) {
			change(&c, DMSC_CHANGE_UPDATE, plan[i].want->name,
			       detail[0] ? detail : "slot table rebuilt");
		}
	}

	for (i = 0; i < p->n_services; i++) {
		err = write_one(&c, &plan[i]);
		if (err)
			goto fail;
	}
	for (i = 0; i < st.n_svcs; i++) {
		if (matched[i])
			continue;
		dmsc_format_svc_key(&st.svcs[i].key, keybuf, sizeof(keybuf));
		change(&c, DMSC_CHANGE_REMOVE, st.svcs[i].meta.name, keybuf);
		err = remove_one(&c, &st.svcs[i]);
		if (err)
			goto fail;
	}
	err = 0;
	goto out;
fail:
	pr_warn("apply failed after %zu writes: rolling back\n", c.n_undo);
	rollback(&c);
out:
	for (i = 0; i < c.n_undo; i++)
		free(c.undo[i].old);
	free(c.undo);
	free(c.svc_used);
	free(c.be_used);
	free(matched);
	free(plan);
	dmsc_state_free(&st);
	return err;
}

void dmsc_apply_result_free(struct dmsc_apply_result *res)
{
	free(res->changes);
	memset(res, 0, sizeof(*res));
}
