// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's applies: the policy applied through the mirror (timed on three
 * clocks), the L7 helper's snapshot followed, unresolved allow_from
 * retried, deferred drops flushed.
 */
#define _GNU_SOURCE
#include "dmscd_agent.h"

/* An apply from etcd with more changes than this, or after a read of
 * every namespace, gives the heap back. */
#define ETCD_TRIM_CHANGES 64

/*
 * The helper runs the policy just applied, as dmscd read it: its L7 view
 * goes to the helper in a sealed memfd (never the user's file, which may
 * have changed since). Any change of that view (routes, timeouts, retries,
 * labels, weights, requests_per_second: also those no kernel map holds)
 * reaches the helper without refusing or cutting a connection: handed to
 * the running one where it takes updates (the tunnel every one,
 * docs/design.md decision 83; dmsc-l7 a change of values alone, decision
 * 85), else by replacing it (one asked for during a hand-over is queued:
 * dmsc_l7_sup_replace).
 */
static void helper_follow(const char *name, struct dmsc_l7_supervisor *sup,
			  const char *const *argv, char **cur, size_t *cur_len,
			  int (*view_json)(const struct dmsc_policy *, char **, size_t *),
			  const struct dmsc_policy *policy)
{
	uint64_t now = (uint64_t)dmsc_now_ms();
	const char *how = "starting it with the policy applied";
	char *view;
	size_t len;
	int err;

	err = view_json(policy, &view, &len);
	if (err) {
		pr_warn("%s: cannot build the policy it should run: %s; it keeps the last "
			"one\n",
			name, strerror(-err));
		return;
	}
	if (*cur && len == *cur_len && memcmp(view, *cur, len) == 0) {
		free(view);
		return;
	}
	err = dmsc_l7_sup_set_policy(sup, view, len);
	if (!err && !*cur && dmsc_l7_sup_adopt(sup, now) == 0) {
		/* the one of the dmscd before: the policy it runs is not
		 * known here, so it is handed over; one it cannot take in
		 * place replaces it (decision 86) */
		how = "adopted; the policy applied handed to it";
		if (dmsc_l7_sup_update(sup))
			err = dmsc_l7_sup_replace(sup, argv, now);
	} else if (!err && !*cur) {
		err = dmsc_l7_sup_start(sup, now);
	} else if (!err && (!sup->takes || sup->takes(*cur, view)) &&
		   dmsc_l7_sup_update(sup) == 0) {
		how = "the policy applied handed to it in place";
	} else if (!err) {
		how = "replacing it with the policy applied";
		err = dmsc_l7_sup_replace(sup, argv, now);
	}
	if (err) {
		pr_warn("%s: cannot hand it the policy applied: %s\n", name, strerror(-err));
		free(view);
		return;
	}
	pr_info("%s: %s\n", name, how);
	free(*cur);
	*cur = view;
	*cur_len = len;
}

void l7_follow(struct agent *ag, const struct dmsc_policy *policy)
{
	ag->l7_served.http_services = dmsc_l7_http_services(policy, NULL);
	/* Started by the first policy that has http services; then it follows
	 * every policy applied (also one without: it serves none). */
	if (!ag->l7_served.http_services && !ag->l7_view)
		return;
	helper_follow("dmsc-l7", &ag->l7_sup, ag->l7_argv, &ag->l7_view, &ag->l7_view_len,
		      dmsc_l7_view_json, policy);
}

/* The tunnel follows every policy applied, http or not: the destination
 * checks allow_from of any service whose backend a stream asks for. */
void tunnel_follow(struct agent *ag, const struct dmsc_policy *policy)
{
	helper_follow("dmsc-l7 tunnel", &ag->tunnel_sup, ag->tunnel_argv, &ag->tunnel_view,
		      &ag->tunnel_view_len, dmsc_mtls_view_json, policy);
}

/* Parses, validates, compiles and applies the policy; logs one line per
 * change applied and one summary line. A policy that does not validate
 * leaves the datapath as it is. */
void apply_policy(struct agent *ag, const char *why)
{
	struct dmsc_apply_result res = {0};
	struct dmsc_policy_set set = {0};
	struct dmsc_msgs msgs = {0};
	double t0, t1, t2, t3, c2, c3;
	struct rusage ru2, ru3;
	struct dmsc_svc_digest *digests = NULL, *keep = NULL;
	size_t n_keep = 0;
	char buf[512];
	bool etcd_view = false, changed_only = false, trim = true;
	size_t i, n_changes;
	int err;

	/* Before etcd's first read the store is empty, not the policy: a
	 * SIGHUP then must not empty the maps an earlier dmscd wrote. */
	if (ag->etcd && !ag->etcd_read) {
		pr_info("%s (%s): etcd not read yet; nothing applied, the datapath runs as it is\n",
			ag->policy, why);
		return;
	}
	ag->retry_at_ms = 0;
	t0 = dmsc_now_seconds();
	if (ag->etcd) {
		/* a view of the store and its digests, locked until
		 * _view_done: of the changed keys only when the mirror holds
		 * every other service (checked again under the lock); never
		 * for SIGHUP, health (services to plan again) or a retry.
		 * During and right after a read of every namespace, what
		 * its pages changed, then what is gone (keep: decision 61) */
		changed_only = ag->mirror.loaded && !strcmp(why, "etcd");
		err = dmsc_etcd_sync_view(ag->etcd, &set.policy, &digests, &changed_only, &keep,
					  &n_keep);
		etcd_view = !err;
	} else {
		err = dmsc_policy_set_load(ag->policy, &set, &msgs);
	}
	if (err) {
		for (i = 0; i < msgs.n; i++)
			pr_warn("%s\n", msgs.lines[i]);
		if (!msgs.n)
			pr_warn("%s: %s\n", ag->policy, strerror(-err));
		pr_warn("%s: not applied (%zu problem%s); the datapath is unchanged\n", ag->policy,
			msgs.n, msgs.n == 1 ? "" : "s");
		ag->stats.applies[DMSC_APPLY_INVALID]++;
		goto out;
	}
	if (dmsc_policy_unsupported(&set.policy, buf, sizeof(buf)) ||
	    (ag->l7_mode == DMSC_L7_OFF && dmsc_l7_off_refusal(&set.policy, buf, sizeof(buf)))) {
		pr_warn("%s: %s; not applied, the datapath is unchanged\n", ag->policy, buf);
		ag->stats.applies[DMSC_APPLY_INVALID]++;
		goto out;
	}
	if (!etcd_view) {
		digests = calloc(set.policy.n_services ? set.policy.n_services : 1,
				 sizeof(*digests));
		if (!digests) {
			pr_warn("%s: out of memory\n", ag->policy);
			ag->stats.applies[DMSC_APPLY_FAILED]++;
			goto out;
		}
		dmsc_policy_digests(&set.policy, digests);
	}
	t1 = dmsc_now_seconds();

	err = write_lock(ag);
	if (err) {
		pr_warn("%s: not applied: the datapath at %s cannot be opened: %s%s\n", ag->policy,
			ag->pin_dir, strerror(-err),
			err == -ENOENT ? " (removed by `dmscctl uninstall`?)" : "");
		ag->stats.applies[DMSC_APPLY_FAILED]++;
		goto out;
	}
	if (changed_only && !dmsc_mirror_in_step(&ag->mirror, &ag->dp)) {
		/* another writer since the last apply: the whole view */
		dmsc_etcd_sync_view_done(ag->etcd, &set.policy, digests, keep);
		digests = keep = NULL;
		changed_only = false;
		err = dmsc_etcd_sync_view(ag->etcd, &set.policy, &digests, &changed_only, &keep,
					  &n_keep);
		etcd_view = !err;
		if (err) {
			write_unlock(ag);
			pr_warn("%s: not applied: %s\n", ag->policy, strerror(-err));
			ag->stats.applies[DMSC_APPLY_FAILED]++;
			goto out;
		}
	}
	if (etcd_view && (!changed_only || keep) &&
	    !dmsc_etcd_sync_view_ready(ag->etcd, &ag->mirror, &ag->dp,
				       keep ? n_keep : set.policy.n_services, keep ? keep : digests)) {
		write_unlock(ag);
		goto out; /* applied when the store has them whole again */
	}
	getrusage(RUSAGE_THREAD, &ru2);
	t2 = dmsc_now_seconds();
	c2 = dmsc_clock_seconds(CLOCK_THREAD_CPUTIME_ID);
	if (changed_only)
		err = dmsc_mirror_apply_some(&ag->mirror, &ag->dp, &set.policy, digests, keep,
					     n_keep, &res);
	else
		err = dmsc_mirror_apply(&ag->mirror, &ag->dp, &set.policy, digests, false, &res);
	t3 = dmsc_now_seconds();
	c3 = dmsc_clock_seconds(CLOCK_THREAD_CPUTIME_ID);
	getrusage(RUSAGE_THREAD, &ru3);
	pr_debug("apply: %ld minor page faults, %ld context switches\n",
		 ru3.ru_minflt - ru2.ru_minflt,
		 ru3.ru_nivcsw - ru2.ru_nivcsw + ru3.ru_nvcsw - ru2.ru_nvcsw);
	write_unlock(ag);
	if (err) {
		pr_warn("%s: apply failed: %s; the datapath is as it was%s\n", ag->policy,
			strerror(-err), res.rolled_back ? " (rolled back)" : "");
		ag->stats.applies[DMSC_APPLY_FAILED]++;
		goto out;
	}
	if (etcd_view)
		dmsc_etcd_sync_applied(ag->etcd, changed_only);
	for (i = 0; i < res.n_changes; i++)
		pr_info("%s %s: %s\n", dmsc_change_op_name(res.changes[i].op),
			res.changes[i].service, res.changes[i].detail);
	if (res.unresolved && res.unresolved != ag->unresolved)
		pr_info("%zu allow_from path%s with no cgroup yet (no one matches them): applying "
			"again every %d ms until they exist\n",
			res.unresolved, res.unresolved == 1 ? "" : "s", UNRESOLVED_RETRY_MS);
	ag->unresolved = res.unresolved;
	ag->retry_at_ms = res.unresolved ? dmsc_now_ms() + UNRESOLVED_RETRY_MS : 0;
	/* A retry that changed nothing is not worth a line. */
	dmsc_log(res.n_changes || strcmp(why, "retry") ? DMSC_LOG_INFO : DMSC_LOG_DEBUG,
		 "applied %s (%s): %zu service%s, %zu change%s, %zu map entr%s written "
		 "(%zu deferred) in %.3f ms (cpu %.3f ms); parse and compile %.1f ms\n",
		 ag->policy, why, res.n_services, res.n_services == 1 ? "" : "s", res.n_changes,
		 res.n_changes == 1 ? "" : "s", res.entries_written,
		 res.entries_written == 1 ? "y" : "ies", res.entries_deferred, (t3 - t2) * 1e3,
		 (c3 - c2) * 1e3, (t1 - t0) * 1e3);
	ag->stats.applies[DMSC_APPLY_OK]++;
	/* A view of changed plain services only: what the helpers and the
	 * probes run is as it was (a change of an http, health, IPv6 or
	 * allow_from service brings every service kept parsed, all they
	 * read); a page of a read waits for the read's end. */
	if (etcd_view && !dmsc_etcd_sync_view_follows(ag->etcd))
		goto done;
	if (dmsc_health_watch_set(&ag->health, &set.policy, &ag->mirror))
		pr_warn("health: out of memory: the backends of this policy are not watched\n");
	if (ag->l7)
		l7_follow(ag, &set.policy);
	if (ag->tunnel)
		tunnel_follow(ag, &set.policy);
done:
	ag->stats.entries_written += res.entries_written;
	dmsc_histogram_observe(&ag->stats.apply_seconds, t3 - t2);
	ag->stats.policy_services = res.n_services;
	ag->stats.last_apply_time = dmsc_clock_seconds(CLOCK_REALTIME);
out:
	n_changes = res.n_changes;
	dmsc_apply_result_free(&res);
	if (etcd_view) {
		/* a view: nothing to free */
		trim = dmsc_etcd_sync_view_done(ag->etcd, &set.policy, digests, keep) ||
		       n_changes > ETCD_TRIM_CHANGES;
	} else {
		free(digests);
		dmsc_policy_set_free(&set);
	}
	dmsc_msgs_free(&msgs);
	/* json-c and the parse leave freed memory in the heap: give it back
	 * (not after a few changes from etcd: each parsed one value only, and
	 * a trim walks the whole heap, on the way of the next change). */
	if (trim)
		malloc_trim(0);
}

/* Resolves every allow_from rule in the maps again (whoever wrote it) and
 * watches the cgroup directories of their paths afresh. */
void reresolve(struct agent *ag)
{
	struct dmsc_allow_entry *rules = NULL;
	struct dmsc_datapath *dp = &ag->dp;
	size_t n = 0;
	bool in_step;
	int changed;

	ag->reresolve_at_ms = 0;
	ag->recheck_at_ms = dmsc_now_ms() + CGROUP_RECHECK_MS;
	if (!ag->cg_watch.root[0] &&
	    dmsc_cgroup2_mount(ag->cg_watch.root, sizeof(ag->cg_watch.root)))
		return;
	if (write_lock(ag))
		return;
	in_step = dmsc_mirror_in_step(&ag->mirror, dp);
	/* The watches first: a cgroup made after its path is resolved below
	 * is an event then. */
	if (dmsc_allow_rules(dp, &rules, &n) == 0)
		dmsc_cgroup_watch_set(&ag->cg_watch, rules, n);
	free(rules);
	rules = NULL;
	changed = dmsc_allow_reresolve(dp, ag->cg_watch.root, &rules, &n);
	if (changed > 0 && dmsc_datapath_bump_generation(dp) == 0 && in_step &&
	    dmsc_mirror_take_allow(&ag->mirror, rules, n) == 0)
		ag->mirror.generation++; /* in step: the generation just bumped */
	free(rules);
	write_unlock(ag);
}

void flush_drops(struct agent *ag, bool force)
{
	int n;

	if (!ag->mirror.n_drops)
		return;
	if (write_lock(ag))
		return;
	n = dmsc_mirror_flush_drops(&ag->mirror, &ag->dp, dmsc_now_ms(), force);
	write_unlock(ag);
	if (n > 0)
		pr_debug("cleared %d removed backend entr%s\n", n, n == 1 ? "y" : "ies");
}

int write_lock(struct agent *ag)
{
	bool reopened;
	int err;

	err = dmsc_datapath_hold(&ag->dp, ag->pin_dir, &reopened);
	if (reopened && !err)
		ag->stats.datapath_opens++;
	return err;
}

void write_unlock(struct agent *ag)
{
	dmsc_datapath_release(&ag->dp);
}
