// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
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

#include "dmsc/slots.h"
#include "allow_resolve.h"
#include "log.h"
#include "apply.h"
#include "apply_steps.h"

/* The services the maps hold, ordered by key, for find_cur. */
static int by_key(const void *a, const void *b)
{
	const struct dmsc_state_svc *const *x = a, *const *y = b;

	return dmsc_svc_key_cmp(&(*x)->key, (*x)->vip6, &(*y)->key, (*y)->vip6);
}

static const struct dmsc_state_svc **key_index(const struct dmsc_state *st)
{
	const struct dmsc_state_svc **idx = calloc(st->n_svcs + 1, sizeof(*idx));
	size_t i;

	if (!idx)
		return NULL;
	for (i = 0; i < st->n_svcs; i++)
		idx[i] = &st->svcs[i];
	if (st->n_svcs)
		qsort(idx, st->n_svcs, sizeof(*idx), by_key);
	return idx;
}

const struct dmsc_state_svc *find_cur(const struct dmsc_state *st,
					     const struct dmsc_state_svc **idx,
					     const struct dmsc_svc_key *k, const uint8_t *vip6,
					     unsigned char *matched)
{
	struct dmsc_state_svc probe;
	const struct dmsc_state_svc *pp = &probe, **hit;
	size_t i;

	if (!st->n_svcs)
		return NULL;
	probe.key = *k;
	memcpy(probe.vip6, vip6, sizeof(probe.vip6));
	hit = bsearch(&pp, idx, st->n_svcs, sizeof(*idx), by_key);
	if (!hit)
		return NULL;
	i = (size_t)(*hit - st->svcs);
	if (matched[i])
		return NULL; /* keys are unique: the policy validator sees to it */
	matched[i] = 1;
	return *hit;
}

static size_t count_new_backends(const struct dmsc_policy *p)
{
	size_t i, n = 0;

	for (i = 0; i < p->n_services; i++)
		n += p->services[i].n_backends;
	return n;
}

static bool dmsc_allow_capacity_exceeded(const struct dmsc_datapath *dp, size_t n)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(dp->fd[DMSC_M_ALLOW], &info, &len) || n <= info.max_entries)
		return false;
	pr_warn("the policy has %zu allow_from rules; this datapath holds at most %u\n", n,
		info.max_entries);
	return true;
}

static dmsc_progress_fn progress_fn;
static void *progress_arg;
#define PROGRESS_EVERY 4096

void dmsc_apply_set_progress(dmsc_progress_fn fn, void *arg)
{
	progress_fn = fn;
	progress_arg = arg;
}

static void progress(const char *phase, size_t done, size_t total)
{
	if (progress_fn && total >= PROGRESS_EVERY && (done % PROGRESS_EVERY == 0 || done == total))
		progress_fn(phase, done, total, progress_arg);
}

int dmsc_apply(const struct dmsc_datapath *dp, const struct dmsc_policy *p, bool dry_run,
	       struct dmsc_apply_result *res)
{
	struct apply_ctx c = { .dp = dp, .res = res, .dry_run = dry_run, .next_svc = 1, .next_be = 1 };
	struct dmsc_state st = { 0 };
	unsigned char *matched = NULL, *live = NULL;
	struct dmsc_be_index_entry *keep = NULL;
	struct dmsc_be_mtls_entry *keep_mtls = NULL;
	size_t n_keep = 0, cap_keep = 0, n_keep_mtls = 0, cap_keep_mtls = 0, n_mtls = 0;
	struct plan_svc *plan = NULL;
	const struct dmsc_state_svc **idx = NULL;
	const struct dmsc_allow_entry *rules;
	char detail[512], keybuf[DMSC_ADDR_PORT_LEN + 8];
	size_t i, n, n_backends, n_rules;
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
	idx = key_index(&st);
	if (!c.svc_used || !c.be_used || !matched || !plan || !res->changes || !idx) {
		err = -ENOMEM;
		goto out;
	}
	mark_used(&c, &st);

	/* Plan everything before the first write: running out of ids is found
	 * here, with the datapath untouched. */
	for (i = 0; i < p->n_services; i++) {
		plan[i].want = &p->services[i];
		dmsc_policy_svc_key(plan[i].want, &plan[i].key);
		plan[i].cur = find_cur(&st, idx, &plan[i].key, plan[i].want->vip6, matched);
		if (plan[i].cur)
			plan[i].cur_allow =
				dmsc_state_allow(&st, plan[i].cur->svc.id, &plan[i].n_cur_allow);
		err = dmsc_plan_service(&c, &plan[i], detail, sizeof(detail));
		progress("planning", i + 1, p->n_services);
		if (err == -ENOSPC)
			pr_warn("not enough room in the datapath for services[%zu] (%s): every "
				"service or backend id is taken (capacity %u services, %u "
				"backends)\n",
				i, p->services[i].name, dp->max_services - 1, dp->max_backends - 1);
		if (err)
			goto out;
		if (!plan[i].cur) {
			dmsc_format_svc_key(&plan[i].key, plan[i].want->family,
					     (const __u32 *)plan[i].want->vip6, keybuf, sizeof(keybuf));
			snprintf(detail, sizeof(detail), "%s, %zu backend%s", keybuf,
				 plan[i].want->n_backends, plan[i].want->n_backends == 1 ? "" : "s");
			change(&c, DMSC_CHANGE_ADD, plan[i].want->name, detail);
		} else if (memcmp(&plan[i].cur->svc, &plan[i].svc, sizeof(plan[i].svc)) ||
			   memcmp(&plan[i].cur->meta, &plan[i].meta, sizeof(plan[i].meta)) ||
			   !limits_cfg_equal(&plan[i].cur->limits, &plan[i].limits) || detail[0]) {
			change(&c, DMSC_CHANGE_UPDATE, plan[i].want->name,
			       detail[0] ? detail : "slot table rebuilt");
		}
	}

	for (i = 0, n_rules = 0; i < p->n_services; i++)
		n_rules += plan[i].n_allow;
	if (dmsc_allow_capacity_exceeded(dp, n_rules)) {
		err = -ENOSPC;
		goto out;
	}

	/* What an interrupted apply left goes first, before any id can get a
	 * new owner: rules and index entries of ids without a service entry
	 * always (they are in st already), the arrays when the install record
	 * says an apply was interrupted. */
	if (!dry_run) {
		bool interrupted = false;

		err = dmsc_datapath_interrupted(dp, &interrupted);
		live = calloc(dp->max_services, 1);
		if (!err && !live)
			err = -ENOMEM;
		for (i = 0; !err && i < st.n_svcs; i++) {
			if (st.svcs[i].svc.id < dp->max_services)
				live[st.svcs[i].svc.id] = 1;
			err = dmsc_be_index_own(&keep, &n_keep, &cap_keep, &st.svcs[i].key,
						st.svcs[i].svc.id, st.svcs[i].svc.flags,
						st.svcs[i].be, st.svcs[i].meta.n_backends);
			if (!err)
				err = dmsc_be_mtls_own(&keep_mtls, &n_keep_mtls, &cap_keep_mtls,
						       &st.svcs[i]);
		}
		dmsc_be_index_sort(keep, n_keep);
		dmsc_be_mtls_sort(keep_mtls, n_keep_mtls);
		if (!err)
			err = dmsc_apply_sweep(&c, live, st.allow, st.n_allow, st.be_index,
					       st.n_be_index, keep, n_keep, interrupted,
					       &res->repaired);
		if (!err)
			err = dmsc_be_mtls_sweep(&c, keep_mtls, n_keep_mtls, &n_mtls);
		res->repaired += n_mtls;
		if (err)
			goto out;
	}
	for (i = 0; i < p->n_services; i++) {
		err = dmsc_plan_write(&c, &plan[i]);
		if (err)
			goto fail;
		if (!dry_run)
			progress("writing", i + 1, p->n_services);
	}
	for (i = 0; i < st.n_svcs; i++) {
		if (matched[i])
			continue;
		dmsc_format_svc_key(&st.svcs[i].key, st.svcs[i].family, st.svcs[i].vip6, keybuf,
				     sizeof(keybuf));
		change(&c, DMSC_CHANGE_REMOVE, st.svcs[i].meta.name, keybuf);
		rules = dmsc_state_allow(&st, st.svcs[i].svc.id, &n);
		err = dmsc_plan_remove(&c, &st.svcs[i], rules, n);
		if (err)
			goto fail;
	}
	goto out;
fail:
	pr_warn("apply failed after %zu writes: rolling back\n", c.n_undo);
	dmsc_apply_rollback(&c);
out:
	/* Success, or rolled back: the maps hold a whole policy again. A
	 * failure to clear the mark leaves it for the next apply, which
	 * then checks everything. */
	dmsc_apply_finish(&c);
	dmsc_apply_ctx_release(&c);
	free(live);
	free(keep);
	free(keep_mtls);
	free(c.svc_used);
	free(c.be_used);
	for (i = 0; plan && i < p->n_services; i++)
		free(plan[i].allow);
	free(idx);
	free(matched);
	free(plan);
	dmsc_state_free(&st);
	return err;
}

int dmsc_plan_be_index_drops(struct apply_ctx *c, const struct dmsc_state_svc *s)
{
	int err = be_index_drops(c, s, NULL);

	return err ? err : be_mtls_drops(c, s, NULL);
}

void dmsc_apply_ctx_release(struct apply_ctx *c)
{
	size_t i;

	for (i = 0; i < c->n_undo; i++)
		free(c->undo[i].old);
	free(c->undo);
	c->undo = NULL;
	c->n_undo = c->cap_undo = 0;
}

void dmsc_apply_result_free(struct dmsc_apply_result *res)
{
	free(res->changes);
	memset(res, 0, sizeof(*res));
}
