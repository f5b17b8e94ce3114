// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl show services, show access and stats: the pinned maps read back,
 * the per-CPU counters and the fast path's statistics summed.
 */
#include "ctl_cmds.h"
#include "health.h"

/* Opens the datapath for reading, with the message a user needs when it
 * is not there. Returns 0 or the exit code. */
static int open_ro(struct dmsc_datapath *dp, const struct opts *o, const char *what)
{
	int err;

	if (dmsc_require_root(what))
		return 1;
	err = dmsc_datapath_open(dp, o->pin_dir, false);
	if (err == -ENOENT)
		pr_warn("dmsc is not installed at %s: run `dmscctl install --cgroup PATH` first\n",
			o->pin_dir);
	return err ? 1 : 0;
}

/* open_ro() and the datapath's state read; on failure nothing is left
 * open. Returns 0 or the exit code. */
static int open_state(struct dmsc_datapath *dp, struct dmsc_state *st, const struct opts *o,
		      const char *what)
{
	if (open_ro(dp, o, what))
		return 1;
	if (dmsc_state_read(dp, st)) {
		dmsc_datapath_close(dp);
		return 1;
	}
	return 0;
}

static struct json_object *backend_json(const struct dmsc_state_svc *s, size_t i, char *ap,
					size_t aplen)
{
	struct json_object *b = json_object_new_object();

	dmsc_format_backend(&s->be[i], s->be6[i], s->family, ap, aplen);
	json_add(b, "id", json_object_new_int64(s->meta.backend_id[i]));
	json_add(b, "address", json_object_new_string(ap));
	json_add(b, "weight", json_object_new_int64(s->meta.weight[i]));
	return b;
}

/* How connections reach a backend of an mtls service (its flags,
 * docs/design.md decisions 24 and 33): on another host, through this
 * host's tunnel; on this host, guarded against plain text from others.
 * NULL for neither; *text: the text form. */
static const char *backend_mtls(const struct dmsc_backend *be, const char **text)
{
	*text = "";
	if (be->flags & DMSC_BE_F_TUNNEL) {
		*text = "  on another host: through the tunnel";
		return "tunnel";
	}
	if (be->flags & DMSC_BE_F_MTLS_REQUIRED) {
		*text = "  here: plain text from other hosts dropped";
		return "required";
	}
	if (be->flags & DMSC_BE_F_MTLS_PERMISSIVE) {
		*text = "  here: plain text from other hosts counted";
		return "permissive";
	}
	return NULL;
}

/* A backend's health, for a service with health: "in", "ejected" or
 * "probe_failed" and why, into b; the text form into txt. */
static void backend_health(const struct dmsc_datapath *dp, const struct dmsc_state_svc *s, size_t i,
			   struct json_object *b, char *txt, size_t len)
{
	struct json_object *h = json_object_new_object();
	struct dmsc_be_verdict v;
	struct dmsc_be_health c;
	struct timespec ts;
	const char *state;
	char why[192];
	__u32 id = s->meta.backend_id[i];

	txt[0] = '\0';
	if (!(s->svc.flags & DMSC_SVC_F_HEALTH) || dmsc_health_read(dp, id, &c, &v)) {
		json_object_put(h);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	state = dmsc_health_describe(
	    &c, &v, s->svc.health.eject_after, (s->svc.flags & DMSC_SVC_F_L7) != 0,
	    (__u64)ts.tv_sec * 1000000000ull + (__u64)ts.tv_nsec, why, sizeof(why));
	json_add(h, "state", json_object_new_string(state));
	json_add(h, "why", json_object_new_string(why));
	json_add(h, "connect_failures", json_object_new_int64((int64_t)c.failures));
	json_add(h, "ejections", json_object_new_int64(c.ejections));
	json_add(h, "probes", json_object_new_int64(v.probes));
	json_add(b, "health", h);
	snprintf(txt, len, "  health %s: %s", state, why);
}

/* One service of a show command: what it says of s, into js and as text
 * (key: its VIP, formatted). */
typedef void (*show_one_fn)(const struct opts *o, const struct dmsc_datapath *dp,
			    const struct dmsc_state *st, const struct dmsc_state_svc *s,
			    const char *key, struct json_object *js);

/* A show command: one object per service that one() fills, printed as a
 * JSON array or one() left its text. empty: the text when there is no
 * service, or NULL. Returns the exit code. */
static int show_each(const struct opts *o, const char *empty, show_one_fn one)
{
	struct json_object *arr = json_object_new_array();
	struct dmsc_datapath dp;
	struct dmsc_state st;
	char key[DMSC_ADDR_PORT_LEN + 8];
	size_t i;
	int rc;

	rc = open_state(&dp, &st, o, "show");
	if (rc)
		goto out_put;
	if (!o->json && st.n_svcs == 0 && empty)
		printf("%s\n", empty);
	for (i = 0; i < st.n_svcs; i++) {
		struct json_object *js = json_object_new_object();

		dmsc_format_service(&st.svcs[i], key, sizeof(key));
		one(o, &dp, &st, &st.svcs[i], key, js);
		json_object_array_add(arr, js);
	}
	dmsc_state_free(&st);
	dmsc_datapath_close(&dp);
out_put:
	return print_services(o, rc, arr);
}

static void show_service(const struct opts *o, const struct dmsc_datapath *dp,
			 const struct dmsc_state *st, const struct dmsc_state_svc *s,
			 const char *key, struct json_object *js)
{
	struct json_object *bes = json_object_new_array();
	char ap[DMSC_ADDR_PORT_LEN];
	size_t j;

	(void)st;
	json_add(js, "name", json_object_new_string(s->meta.name));
	json_add(js, "id", json_object_new_int64(s->svc.id));
	json_add(js, "vip", json_object_new_string(key));
	json_add(js, "refuses_connections",
		 json_object_new_boolean(s->svc.flags & DMSC_SVC_F_NO_BACKEND));
	if (s->svc.flags & DMSC_SVC_F_HEALTH)
		json_add(js, "health_panic",
			 json_object_new_boolean(s->svc.flags & DMSC_SVC_F_HEALTH_PANIC));
	json_add(js, "affinity",
		 json_object_new_string(s->svc.flags & DMSC_SVC_F_AFFINITY ? "client" : "none"));
	if (!o->json)
		printf("%s  %s%s%s%s\n", s->meta.name, key,
		       s->svc.flags & DMSC_SVC_F_AFFINITY ? "  affinity client" : "",
		       s->svc.flags & DMSC_SVC_F_NO_BACKEND
			   ? "  (every weight is 0: new connections refused)"
			   : "",
		       s->svc.flags & DMSC_SVC_F_HEALTH_PANIC
			   ? "  (panic: every backend is unhealthy, all are kept)"
			   : "");
	for (j = 0; j < s->meta.n_backends; j++) {
		struct json_object *b = backend_json(s, j, ap, sizeof(ap));
		char health[256];

		json_add(b, "slots", json_object_new_int64(s->be_slots[j]));
		json_add(b, "share", json_object_new_double((double)s->be_slots[j] / DMSC_SLOTS));
		const char *where, *mtls = backend_mtls(&s->be[j], &where);

		backend_health(dp, s, j, b, health, sizeof(health));
		if (mtls)
			json_add(b, "mtls", json_object_new_string(mtls));
		json_object_array_add(bes, b);
		if (!o->json)
			printf("  -> %-21s weight %-5u slots %3u/%u (%.1f%%)%s%s\n", ap,
			       s->meta.weight[j], s->be_slots[j], DMSC_SLOTS,
			       100.0 * s->be_slots[j] / DMSC_SLOTS, where, health);
	}
	json_add(js, "backends", bes);
}

int cmd_show_services(const struct opts *o)
{
	return show_each(o, "no services: apply a policy with `dmscctl apply FILE`", show_service);
}

/* The fast path's counters, in struct dmsc_fp_stats order. */
static const char *const fp_stat_names[] = {
    "registered",
    "paired",
    "redirected_msgs",
    "redirected_bytes",
    "stack_msgs",
    "stack_bytes",
    "miss",
    "no_peer",
    "accel_off",
    "register_failed",
    "backlog_fallback",
    "backlog_unknown",
    "bulk_fallback",
    "policy_fallback",
    "bulk_skip",
    "early_data",
    "budget_fallback",
    "pressure_fallback",
    "released",
    "window_fallback",
};
#define FP_N_STATS (sizeof(struct dmsc_fp_stats) / sizeof(__u64))
_Static_assert(sizeof(fp_stat_names) / sizeof(fp_stat_names[0]) == FP_N_STATS,
	       "a name for every fast path counter");

static struct json_object *fp_stats_json(const struct dmsc_fp_stats *fs)
{
	struct json_object *j = json_object_new_object();
	const __u64 *v = (const __u64 *)fs;
	size_t k;

	for (k = 0; k < FP_N_STATS; k++)
		json_add(j, fp_stat_names[k], json_object_new_int64((int64_t)v[k]));
	return j;
}

static void fp_stats_add(struct dmsc_fp_stats *sum, const struct dmsc_fp_stats *fs)
{
	__u64 *a = (__u64 *)sum;
	const __u64 *b = (const __u64 *)fs;
	size_t k;

	for (k = 0; k < FP_N_STATS; k++)
		a[k] += b[k];
}

static void fp_stats_print(const char *who, const struct dmsc_fp_stats *fs)
{
	printf("  %-22s %10llu %10llu %12llu %14llu %10llu %8llu %8llu %8llu\n", who,
	       (unsigned long long)fs->paired, (unsigned long long)fs->registered,
	       (unsigned long long)fs->redirected_msgs, (unsigned long long)fs->redirected_bytes,
	       (unsigned long long)fs->stack_msgs, (unsigned long long)fs->miss,
	       (unsigned long long)fs->no_peer, (unsigned long long)fs->accel_off);
}

int cmd_stats(const struct opts *o)
{
	struct json_object *top = json_object_new_object(), *arr = json_object_new_array();
	struct json_object *reasons = json_object_new_object();
	struct dmsc_datapath dp;
	struct dmsc_state st;
	char key[DMSC_ADDR_PORT_LEN + 8], ap[DMSC_ADDR_PORT_LEN];
	size_t i, j;
	int rc;

	struct json_object *fp = json_object_new_object();
	struct dmsc_fp_stats fs, fp_total = {0};

	json_add(top, "services", arr);
	json_add(top, "reasons", reasons);
	json_add(top, "fastpath", fp);
	rc = open_state(&dp, &st, o, "stats");
	if (rc)
		goto out_put;
	for (i = 0; i < st.n_svcs; i++) {
		const struct dmsc_state_svc *s = &st.svcs[i];
		struct json_object *js = json_object_new_object(), *bes = json_object_new_array();
		struct dmsc_svc_stats ss;

		dmsc_percpu_sum(&dp, DMSC_M_SVC_STATS, s->svc.id, &ss, sizeof(ss));
		dmsc_format_service(s, key, sizeof(key));
		json_add(js, "name", json_object_new_string(s->meta.name));
		json_add(js, "vip", json_object_new_string(key));
		if (!o->json)
			printf("%s  %s\n", s->meta.name, key);
		/* Text shows the counters that moved; JSON shows them all. */
		for (j = 0; j < dmsc_n_svc_counters; j++) {
			unsigned long long v = dmsc_counter_get(&ss, &dmsc_svc_counters[j]);

			json_add(js, dmsc_svc_counters[j].name, json_object_new_int64((int64_t)v));
			if (!o->json && (v || j == 0))
				printf("  %-20s %14llu\n", dmsc_svc_counters[j].name, v);
		}
		for (j = 0; j < s->meta.n_backends; j++) {
			struct json_object *b = backend_json(s, j, ap, sizeof(ap));
			struct dmsc_be_stats bs;

			dmsc_percpu_sum(&dp, DMSC_M_BE_STATS, s->meta.backend_id[j], &bs,
					sizeof(bs));
			json_add(b, "connections", json_object_new_int64((int64_t)bs.connections));
			json_object_array_add(bes, b);
			if (!o->json)
				printf("  -> %-21s connections %10llu\n", ap,
				       (unsigned long long)bs.connections);
		}
		json_add(js, "backends", bes);
		dmsc_percpu_sum(&dp, DMSC_M_FP_STATS, s->svc.id, &fs, sizeof(fs));
		fp_stats_add(&fp_total, &fs);
		json_add(js, "fastpath", fp_stats_json(&fs));
		json_object_array_add(arr, js);
	}
	/* Id 0: connections between mesh sockets that used no VIP. */
	dmsc_percpu_sum(&dp, DMSC_M_FP_STATS, 0, &fs, sizeof(fs));
	fp_stats_add(&fp_total, &fs);
	json_add(fp, "direct", fp_stats_json(&fs));
	json_add(fp, "total", fp_stats_json(&fp_total));
	{
		/* Unread redirected bytes host-wide, as the writers last saw
		 * them: what the host budget is checked against. */
		struct dmsc_fp_host host = {0};
		__u32 zero = 0;

		if (dp.fd[DMSC_M_FP_HOST] >= 0)
			bpf_map_lookup_elem(dp.fd[DMSC_M_FP_HOST], &zero, &host);
		json_add(fp, "inflight_bytes", json_object_new_int64((int64_t)host.inflight));
	}
	if (!o->json) {
		printf("same-host fast path:\n  %-22s %10s %10s %12s %14s %10s %8s %8s %8s\n", "",
		       "PAIRED", "SOCKETS", "REDIR_MSGS", "REDIR_BYTES", "STACK_MSGS", "MISSES",
		       "NOPEER", "OFF");
		for (i = 0; i < st.n_svcs; i++) {
			dmsc_percpu_sum(&dp, DMSC_M_FP_STATS, st.svcs[i].svc.id, &fs, sizeof(fs));
			fp_stats_print(st.svcs[i].meta.name, &fs);
		}
		dmsc_percpu_sum(&dp, DMSC_M_FP_STATS, 0, &fs, sizeof(fs));
		fp_stats_print("(direct, no VIP)", &fs);
		fp_stats_print("(total)", &fp_total);
		printf("  stack_bytes=%llu register_failed=%llu backlog_fallback=%llu "
		       "backlog_unknown=%llu\n",
		       (unsigned long long)fp_total.stack_bytes,
		       (unsigned long long)fp_total.register_failed,
		       (unsigned long long)fp_total.backlog_fallback,
		       (unsigned long long)fp_total.backlog_unknown);
	}
	if (!o->json)
		printf("datapath events:");
	for (i = 0; i < DMSC_R_MAX; i++) {
		__u64 n = 0;

		dmsc_percpu_sum(&dp, DMSC_M_REASONS, (__u32)i, &n, sizeof(n));
		json_add(reasons, dmsc_reason_names[i], json_object_new_int64((int64_t)n));
		if (!o->json)
			printf(" %s=%llu", dmsc_reason_names[i], (unsigned long long)n);
	}
	if (!o->json)
		printf("\n");
	dmsc_state_free(&st);
	dmsc_datapath_close(&dp);
out_put:
	if (o->json && !rc)
		print_json(top);
	json_object_put(top);
	return rc;
}

static void show_access(const struct opts *o, const struct dmsc_datapath *dp,
			const struct dmsc_state *st, const struct dmsc_state_svc *s,
			const char *key, struct json_object *js)
{
	size_t j, n;
	const struct dmsc_allow_entry *rules = dmsc_state_allow(st, s->svc.id, &n);
	bool listed = s->svc.flags & DMSC_SVC_F_ALLOW_LIST;
	struct json_object *jr = json_object_new_array();

	(void)dp;
	json_add(js, "name", json_object_new_string(s->meta.name));
	json_add(js, "vip", json_object_new_string(key));
	json_add(js, "open_to_all", json_object_new_boolean(!listed));
	if (!o->json)
		printf("%s  %s: %s\n", s->meta.name, key,
		       !listed ? "open to every cgroup in the mesh"
		       : n     ? "only these cgroups and their descendants"
			       : "closed to everyone (allow_from is empty)");
	for (j = 0; j < n; j++) {
		struct json_object *r = json_object_new_object();
		bool resolved = !(rules[j].key.cgroup_id & DMSC_ALLOW_UNRESOLVED);

		json_add(r, "cgroup", json_object_new_string(rules[j].rule.path));
		json_add(r, "resolved", json_object_new_boolean(resolved));
		if (resolved)
			json_add(r, "cgroup_id",
				 json_object_new_int64((int64_t)rules[j].key.cgroup_id));
		json_object_array_add(jr, r);
		if (!o->json && resolved)
			printf("  allow %s (cgroup id %llu)\n", rules[j].rule.path,
			       (unsigned long long)rules[j].key.cgroup_id);
		else if (!o->json)
			printf("  allow %s (does not exist yet: nobody matches it until it "
			       "appears and the policy is applied again)\n",
			       rules[j].rule.path);
	}
	json_add(js, "allow", jr);
}

int cmd_show_access(const struct opts *o)
{
	return show_each(o, NULL, show_access);
}
