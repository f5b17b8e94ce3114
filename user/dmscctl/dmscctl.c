// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl: check and apply policies, install the datapath, inspect it.
 * Every command prints text for people, or JSON with `-o json`.
 * Exit codes: 0 done, 1 failed (the reason is printed), 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <json-c/json.h>

#include "counters.h"
#include "etcd_ctl.h"
#include "datapath.h"
#include "feature.h"
#include "log.h"
#include "policy.h"
#include "addr.h"
#include "apply.h"

#define EXIT_USAGE 2
/* A policy this large takes a second or more to read: say so first. */
#define BIG_POLICY_BYTES (4 << 20)

struct opts {
	bool json;
	bool dry_run;
	const char *pin_dir;
	const char *cgroup;
	unsigned int max_services;
	unsigned int max_backends;
	const char *ifaces[DMSC_IFACES_MAX];
	size_t n_ifaces;
	bool fp_backlog_set;
	bool fp_backlog_default;
	__u32 fp_backlog_max;
};

static const char usage_text[] =
	"usage: dmscctl [options] COMMAND [ARGS]\n"
	"\n"
	"commands:\n"
	"  check FILE               validate a policy (no privileges needed)\n"
	"  apply FILE               validate, compile and write only what changed\n"
	"  diff FILE                show what apply would change (same as apply --dry-run)\n"
	"  show services            VIPs, backends, weights and the slot share each got\n"
	"  show access              allow_from rules and the cgroups they resolved to\n"
	"  stats                    connections and fail-open reasons per service and backend\n"
	"  install --cgroup PATH    load, attach to the cgroup and pin the datapath\n"
	"  uninstall                detach and remove every pin\n"
	"  status                   what is installed, where, how full, and what the\n"
	"                           kernel offers (features)\n"
	"  features                 probe the kernel's hooks and helpers that dmsc needs\n"
	"  verifier                 load every program (nothing attached) and print the\n"
	"                           verifier's figures: instructions processed, states\n"
	"  publish FILE|DIR --etcd URL --namespace NS   write a policy's services to\n"
	"                           etcd, only what changed (`dmscctl publish -h`)\n"
	"  get [NAME] / watch       read back a namespace from etcd\n"
	"\n"
	"options:\n"
	"  -o, --output text|json   output format (default text)\n"
	"      --dry-run            apply: plan and print, write nothing\n"
	"      --cgroup PATH        install: cgroup v2 path, absolute or relative to the\n"
	"                           cgroup2 mount; its processes and their children are\n"
	"                           in the mesh\n"
	"      --max-services N     install: service capacity (default %u)\n"
	"      --max-backends N     install: backend capacity (default %u)\n"
	"      --interface IF       install: police traffic arriving on IF for local\n"
	"                           backends of byte-limited services (TC ingress;\n"
	"                           repeat for more, up to 8)\n"
	"      --fastpath-backlog BYTES|default  install: how far a same-host writer\n"
	"                           may run ahead of its reader on the fast path before\n"
	"                           it leaves it for TCP (K, M, G suffixes; 0: no bound;\n"
	"                           kept by later installs; default %u MiB, at most\n"
	"                           tcp_mem[1] / %d)\n"
	"      --pin-dir DIR        where the datapath is pinned (default $DMSC_PIN_DIR or\n"
	"                           %s)\n"
	"  -v, --verbose            also print debug messages (libbpf's too)\n"
	"  -h, --help               this text\n";

static void usage(FILE *f)
{
	fprintf(f, usage_text, DMSC_DEFAULT_MAX_SERVICES - 1, DMSC_DEFAULT_MAX_BACKENDS - 1,
		DMSC_FP_BACKLOG_MAX >> 20, DMSC_FP_BACKLOG_TCP_MEM_SHARE, DMSC_PIN_ROOT "/v" DMSC_LAYOUT_VERSION);
}

static void print_json(struct json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
}

static void json_add(struct json_object *o, const char *k, struct json_object *v)
{
	json_object_object_add(o, k, v);
}

/* The end of the `show` commands: {"services": ARR} for -o json when all
 * went well; releases ARR, returns rc. */
static int print_services(const struct opts *o, int rc, struct json_object *arr)
{
	if (o->json && !rc) {
		struct json_object *top = json_object_new_object();

		json_add(top, "services", json_object_get(arr));
		print_json(top);
		json_object_put(top);
	}
	json_object_put(arr);
	return rc;
}

/* Loads and validates; prints every problem. Returns 0, or 1 (exit code). */
static int load_policy(const char *file, const struct opts *o, struct dmsc_policy *p,
		       struct json_object *report)
{
	struct dmsc_policy_errors errs = { 0 };
	struct json_object *arr;
	struct stat st;
	char line[1024];
	size_t i;
	int err;

	if (!o->json && isatty(STDERR_FILENO) && stat(file, &st) == 0 &&
	    st.st_size > BIG_POLICY_BYTES)
		fprintf(stderr, "reading and checking %s (%lld MB)...\n", file,
			(long long)st.st_size >> 20);
	err = dmsc_policy_load_file(file, p, &errs);
	if (!err)
		return 0;
	arr = json_object_new_array();
	for (i = 0; i < errs.count; i++) {
		struct json_object *e = json_object_new_object();

		dmsc_policy_error_format(&errs.items[i], line, sizeof(line));
		if (!o->json)
			fprintf(stderr, "%s: %s\n", file, line);
		json_add(e, "path", json_object_new_string(errs.items[i].path));
		json_add(e, "message", json_object_new_string(errs.items[i].message));
		json_object_array_add(arr, e);
	}
	if (errs.count == 0 && !o->json)
		fprintf(stderr, "%s: %s\n", file, strerror(-err));
	if (!o->json)
		fprintf(stderr, "%s: %zu problem%s; nothing was applied\n", file, errs.count,
			errs.count == 1 ? "" : "s");
	json_add(report, "valid", json_object_new_boolean(false));
	json_add(report, "errors", arr);
	dmsc_policy_errors_free(&errs);
	return 1;
}

static int cmd_check(const char *file, const struct opts *o)
{
	struct json_object *report = json_object_new_object();
	struct dmsc_policy p = { 0 };
	char why[512];
	const char *unsupported;
	size_t i, n_backends = 0;
	int rc;

	json_add(report, "file", json_object_new_string(file));
	rc = load_policy(file, o, &p, report);
	if (rc)
		goto out;
	for (i = 0; i < p.n_services; i++)
		n_backends += p.services[i].n_backends;
	unsupported = dmsc_policy_unsupported(&p, why, sizeof(why));
	json_add(report, "valid", json_object_new_boolean(true));
	json_add(report, "services", json_object_new_int64((int64_t)p.n_services));
	json_add(report, "backends", json_object_new_int64((int64_t)n_backends));
	if (unsupported)
		json_add(report, "unsupported", json_object_new_string(unsupported));
	if (!o->json) {
		printf("%s: valid: %zu service%s, %zu backend%s\n", file, p.n_services,
		       p.n_services == 1 ? "" : "s", n_backends, n_backends == 1 ? "" : "s");
		if (unsupported)
			printf("%s: note: %s; apply will refuse it\n", file, unsupported);
	}
	dmsc_policy_free(&p);
out:
	if (o->json)
		print_json(report);
	json_object_put(report);
	return rc;
}

/* Progress of a long apply on a terminal: one line, rewritten. */
static void show_progress(const char *phase, size_t done, size_t total, void *arg)
{
	(void)arg;
	fprintf(stderr, "\r%s: %zu of %zu services%s", phase, done, total,
		done == total ? "\n" : "");
	fflush(stderr);
}

static int cmd_apply(const char *file, const struct opts *o)
{
	struct json_object *report = json_object_new_object(), *arr;
	struct dmsc_apply_result res = { 0 };
	struct dmsc_datapath dp;
	struct dmsc_policy p = { 0 };
	struct timespec t0, t1;
	char why[512];
	bool opened = false;
	size_t i;
	int rc = 1, err;

	json_add(report, "file", json_object_new_string(file));
	json_add(report, "dry_run", json_object_new_boolean(o->dry_run));
	if (load_policy(file, o, &p, report))
		goto out;
	if (dmsc_policy_unsupported(&p, why, sizeof(why))) {
		pr_warn("%s: %s; nothing was applied\n", file, why);
		json_add(report, "error", json_object_new_string(why));
		goto out;
	}
	if (dmsc_require_root(o->dry_run ? "diff" : "apply"))
		goto out;
	err = dmsc_datapath_open(&dp, o->pin_dir, true);
	if (err == -ENOENT)
		pr_warn("dmsc is not installed at %s: run `dmscctl install --cgroup PATH` first\n",
			o->pin_dir);
	if (err) {
		json_add(report, "error", json_object_new_string(strerror(-err)));
		goto out;
	}
	opened = true;
	if (!o->json && isatty(STDERR_FILENO))
		dmsc_apply_set_progress(show_progress, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	err = dmsc_apply(&dp, &p, o->dry_run, &res);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (err) {
		pr_warn("%s: apply failed: %s; the datapath is as it was%s\n", file, strerror(-err),
			res.rolled_back ? " (rolled back)" : "");
		json_add(report, "error", json_object_new_string(strerror(-err)));
		goto out;
	}
	rc = 0;
	arr = json_object_new_array();
	for (i = 0; i < res.n_changes; i++) {
		struct json_object *c = json_object_new_object();

		json_add(c, "op", json_object_new_string(dmsc_change_op_name(res.changes[i].op)));
		json_add(c, "service", json_object_new_string(res.changes[i].service));
		json_add(c, "detail", json_object_new_string(res.changes[i].detail));
		json_object_array_add(arr, c);
		if (!o->json)
			printf("%c %s: %s\n", "+~-"[res.changes[i].op], res.changes[i].service,
			       res.changes[i].detail);
	}
	json_add(report, "changes", arr);
	json_add(report, "services", json_object_new_int64((int64_t)res.n_services));
	json_add(report, "entries_written", json_object_new_int64((int64_t)res.entries_written));
	json_add(report, "seconds", json_object_new_double((double)(t1.tv_sec - t0.tv_sec) +
							     (double)(t1.tv_nsec - t0.tv_nsec) / 1e9));
	if (!o->json)
		printf("%s%zu change%s, %zu map entr%s %s, %zu service%s in the policy\n",
		       o->dry_run ? "dry run: " : "", res.n_changes, res.n_changes == 1 ? "" : "s",
		       res.entries_written, res.entries_written == 1 ? "y" : "ies",
		       o->dry_run ? "to write" : "written", res.n_services,
		       res.n_services == 1 ? "" : "s");
out:
	if (o->json)
		print_json(report);
	json_object_put(report);
	dmsc_apply_result_free(&res);
	dmsc_policy_free(&p);
	if (opened)
		dmsc_datapath_close(&dp);
	return rc;
}

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

static int cmd_show_services(const struct opts *o)
{
	struct json_object *arr = json_object_new_array();
	struct dmsc_datapath dp;
	struct dmsc_state st;
	char key[DMSC_ADDR_PORT_LEN + 8], ap[DMSC_ADDR_PORT_LEN];
	size_t i, j;
	int rc;

	rc = open_ro(&dp, o, "show");
	if (rc)
		goto out_put;
	if (dmsc_state_read(&dp, &st)) {
		rc = 1;
		goto out;
	}
	if (!o->json && st.n_svcs == 0)
		printf("no services: apply a policy with `dmscctl apply FILE`\n");
	for (i = 0; i < st.n_svcs; i++) {
		const struct dmsc_state_svc *s = &st.svcs[i];
		struct json_object *js = json_object_new_object(), *bes = json_object_new_array();

		dmsc_format_service(s, key, sizeof(key));
		json_add(js, "name", json_object_new_string(s->meta.name));
		json_add(js, "id", json_object_new_int64(s->svc.id));
		json_add(js, "vip", json_object_new_string(key));
		json_add(js, "refuses_connections",
			 json_object_new_boolean(s->svc.flags & DMSC_SVC_F_NO_BACKEND));
		if (!o->json)
			printf("%s  %s%s\n", s->meta.name, key,
			       s->svc.flags & DMSC_SVC_F_NO_BACKEND
				       ? "  (every weight is 0: new connections refused)"
				       : "");
		for (j = 0; j < s->meta.n_backends; j++) {
			struct json_object *b = backend_json(s, j, ap, sizeof(ap));

			json_add(b, "slots", json_object_new_int64(s->be_slots[j]));
			json_add(b, "share", json_object_new_double((double)s->be_slots[j] / DMSC_SLOTS));
			json_object_array_add(bes, b);
			if (!o->json)
				printf("  -> %-21s weight %-5u slots %3u/%u (%.1f%%)\n", ap,
				       s->meta.weight[j], s->be_slots[j], DMSC_SLOTS,
				       100.0 * s->be_slots[j] / DMSC_SLOTS);
		}
		json_add(js, "backends", bes);
		json_object_array_add(arr, js);
	}
	dmsc_state_free(&st);
out:
	dmsc_datapath_close(&dp);
out_put:
	return print_services(o, rc, arr);
}

/* The fast path's counters, in struct dmsc_fp_stats order. */
static const char *const fp_stat_names[] = {
	"registered", "paired",	   "redirected_msgs", "redirected_bytes", "stack_msgs",
	"stack_bytes", "miss",	   "no_peer",	      "accel_off",	  "register_failed",
	"backlog_fallback", "backlog_unknown", "bulk_fallback", "policy_fallback", "bulk_skip",
	"early_data", "budget_fallback", "pressure_fallback", "released",
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

static int cmd_stats(const struct opts *o)
{
	struct json_object *top = json_object_new_object(), *arr = json_object_new_array();
	struct json_object *reasons = json_object_new_object();
	struct dmsc_datapath dp;
	struct dmsc_state st;
	char key[DMSC_ADDR_PORT_LEN + 8], ap[DMSC_ADDR_PORT_LEN];
	size_t i, j;
	int rc;

	struct json_object *fp = json_object_new_object();
	struct dmsc_fp_stats fs, fp_total = { 0 };

	json_add(top, "services", arr);
	json_add(top, "reasons", reasons);
	json_add(top, "fastpath", fp);
	rc = open_ro(&dp, o, "stats");
	if (rc)
		goto out_put;
	if (dmsc_state_read(&dp, &st)) {
		rc = 1;
		goto out;
	}
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
		struct dmsc_fp_host host = { 0 };
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
out:
	dmsc_datapath_close(&dp);
out_put:
	if (o->json && !rc)
		print_json(top);
	json_object_put(top);
	return rc;
}

static int cmd_show_access(const struct opts *o)
{
	struct json_object *arr = json_object_new_array();
	struct dmsc_datapath dp;
	struct dmsc_state st;
	char key[DMSC_ADDR_PORT_LEN + 8];
	size_t i, j, n;
	int rc;

	rc = open_ro(&dp, o, "show");
	if (rc)
		goto out_put;
	if (dmsc_state_read(&dp, &st)) {
		rc = 1;
		goto out;
	}
	for (i = 0; i < st.n_svcs; i++) {
		const struct dmsc_state_svc *s = &st.svcs[i];
		const struct dmsc_allow_entry *rules = dmsc_state_allow(&st, s->svc.id, &n);
		bool listed = s->svc.flags & DMSC_SVC_F_ALLOW_LIST;
		struct json_object *js = json_object_new_object(), *jr = json_object_new_array();

		dmsc_format_service(s, key, sizeof(key));
		json_add(js, "name", json_object_new_string(s->meta.name));
		json_add(js, "vip", json_object_new_string(key));
		json_add(js, "open_to_all", json_object_new_boolean(!listed));
		if (!o->json)
			printf("%s  %s: %s\n", s->meta.name, key,
			       !listed ? "open to every cgroup in the mesh"
			       : n	 ? "only these cgroups and their descendants"
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
		json_object_array_add(arr, js);
	}
	dmsc_state_free(&st);
out:
	dmsc_datapath_close(&dp);
out_put:
	return print_services(o, rc, arr);
}

static int cmd_install(const struct opts *o)
{
	struct dmsc_install_opts io = { .cgroup = o->cgroup,
					.max_services = o->max_services ? o->max_services + 1 : 0,
					.max_backends = o->max_backends ? o->max_backends + 1 : 0,
					.ifaces = o->ifaces,
					.n_ifaces = o->n_ifaces,
					.fp_backlog_set = o->fp_backlog_set,
					.fp_backlog_default = o->fp_backlog_default,
					.fp_backlog_max = o->fp_backlog_max };
	struct dmsc_install_result res;
	int err;

	if (!o->cgroup) {
		pr_warn("install needs --cgroup PATH: the cgroup v2 whose processes are in the "
			"mesh\n");
		return EXIT_USAGE;
	}
	if (dmsc_require_root("install"))
		return 1;
	err = dmsc_install(o->pin_dir, &io, &res);
	if (err) {
		pr_warn("install failed: %s\n", strerror(-err));
		return 1;
	}
	if (o->json) {
		struct json_object *r = json_object_new_object();

		json_add(r, "pin_dir", json_object_new_string(o->pin_dir));
		json_add(r, "cgroup", json_object_new_string(res.cgroup_path));
		json_add(r, "adopted", json_object_new_boolean(res.adopted));
		json_add(r, "hooks", json_object_new_int((int)res.n_links));
		json_add(r, "interfaces", json_object_new_int((int)res.n_ifaces));
		json_add(r, "fastpath", json_object_new_boolean(res.fastpath));
		json_add(r, "fastpath_note", json_object_new_string(res.fastpath_note));
		print_json(r);
		json_object_put(r);
	} else {
		printf("%s dmsc on cgroup %s: %u hooks, %u interface%s, pinned at %s\n",
		       res.adopted ? "updated programs in place of" : "installed", res.cgroup_path,
		       res.n_links, res.n_ifaces, res.n_ifaces == 1 ? "" : "s", o->pin_dir);
		printf("same-host fast path: %s\n",
		       res.fastpath ? (res.fastpath_note[0] ? res.fastpath_note : "on")
				    : res.fastpath_note);
	}
	return 0;
}

static int cmd_uninstall(const struct opts *o)
{
	bool was = false;
	int err;

	if (dmsc_require_root("uninstall"))
		return 1;
	err = dmsc_uninstall(o->pin_dir, &was);
	if (o->json) {
		struct json_object *r = json_object_new_object();

		json_add(r, "pin_dir", json_object_new_string(o->pin_dir));
		json_add(r, "removed", json_object_new_boolean(was));
		if (err)
			json_add(r, "error", json_object_new_string(strerror(-err)));
		print_json(r);
		json_object_put(r);
	} else if (!err) {
		printf(was ? "uninstalled dmsc from %s\n" : "nothing installed at %s\n", o->pin_dir);
	}
	return err ? 1 : 0;
}

/* The features section of status and the output of `features`. */
static struct json_object *features_json(const struct dmsc_features *fs)
{
	struct json_object *arr = json_object_new_array();
	size_t i;

	for (i = 0; i < fs->n; i++) {
		const struct dmsc_feature_result *r = &fs->r[i];
		struct json_object *f = json_object_new_object();

		json_add(f, "name", json_object_new_string(r->f.name));
		json_add(f, "kind", json_object_new_string(dmsc_feature_kind_name(r->f.kind)));
		json_add(f, "present", json_object_new_boolean(r->present));
		json_add(f, "required", json_object_new_boolean(r->f.fallback == NULL));
		json_add(f, "min_linux", json_object_new_string(r->f.min_linux));
		if (r->f.fallback)
			json_add(f, "fallback", json_object_new_string(r->f.fallback));
		if (r->detail[0])
			json_add(f, "detail", json_object_new_string(r->detail));
		json_object_array_add(arr, f);
	}
	return arr;
}

static void features_text(const struct dmsc_features *fs)
{
	size_t i;

	printf("features (%zu probed, %zu required missing, %zu optional missing):\n", fs->n,
	       fs->n_missing_required, fs->n_missing_optional);
	for (i = 0; i < fs->n; i++) {
		const struct dmsc_feature_result *r = &fs->r[i];

		printf("  %-40s %-7s Linux %-5s %s", r->f.name, r->present ? "yes" : "MISSING",
		       r->f.min_linux, r->f.fallback ? "optional" : "required");
		if (!r->present && r->f.fallback)
			printf(": %s", r->f.fallback);
		if (r->detail[0])
			printf(" (%s)", r->detail);
		printf("\n");
	}
}

static int cmd_features(const struct opts *o)
{
	struct dmsc_features fs;
	struct utsname u;
	int err;

	if (dmsc_require_root("features"))
		return 1;
	uname(&u);
	err = dmsc_features_probe(&fs);
	if (o->json) {
		struct json_object *r = json_object_new_object();

		json_add(r, "kernel", json_object_new_string(u.release));
		json_add(r, "usable", json_object_new_boolean(!err && !fs.n_missing_required));
		json_add(r, "features", features_json(&fs));
		print_json(r);
		json_object_put(r);
	} else {
		printf("kernel %s: dmsc %s\n", u.release,
		       fs.n_missing_required ? "CANNOT run here" : "can run here");
		features_text(&fs);
	}
	return err || fs.n_missing_required ? 1 : 0;
}

static int cmd_verifier(const struct opts *o)
{
	struct dmsc_verifier_stats st[DMSC_VERIFIER_MAX];
	struct json_object *arr;
	struct utsname u;
	int n, i, failed = 0;

	if (dmsc_require_root("verifier"))
		return 1;
	uname(&u);
	n = dmsc_verifier_report(st, DMSC_VERIFIER_MAX);
	if (n < 0)
		return 1;
	arr = json_object_new_array();
	if (!o->json)
		printf("%-20s %-22s %6s %9s %6s %6s %8s %7s %6s\n", "program", "section", "insns",
		       "processed", "states", "peak", "verified", "xlated", "jited");
	for (i = 0; i < n; i++) {
		struct json_object *p = json_object_new_object();

		json_add(p, "program", json_object_new_string(st[i].prog));
		json_add(p, "section", json_object_new_string(st[i].sec));
		json_add(p, "loaded", json_object_new_boolean(st[i].loaded));
		json_add(p, "insns", json_object_new_int64(st[i].insns));
		json_add(p, "processed_insns", json_object_new_int64(st[i].processed_insns));
		json_add(p, "total_states", json_object_new_int64(st[i].total_states));
		json_add(p, "peak_states", json_object_new_int64(st[i].peak_states));
		json_add(p, "max_states_per_insn", json_object_new_int64(st[i].max_states_per_insn));
		json_add(p, "verified_insns", json_object_new_int64(st[i].verified_insns));
		json_add(p, "xlated_bytes", json_object_new_int64(st[i].xlated_bytes));
		json_add(p, "jited_bytes", json_object_new_int64(st[i].jited_bytes));
		if (st[i].error[0])
			json_add(p, "error", json_object_new_string(st[i].error));
		json_object_array_add(arr, p);
		if (!st[i].loaded && strncmp(st[i].error, "not loaded", 10) != 0)
			failed++;
		if (!o->json) {
			char verified[16] = "n/a"; /* the kernel reports it from 5.16 */

			if (st[i].verified_insns)
				snprintf(verified, sizeof(verified), "%u", st[i].verified_insns);
			if (st[i].loaded)
				printf("%-20s %-22s %6u %9u %6u %6u %8s %7u %6u\n", st[i].prog, st[i].sec,
				       st[i].insns, st[i].processed_insns, st[i].total_states,
				       st[i].peak_states, verified, st[i].xlated_bytes,
				       st[i].jited_bytes);
			else
				printf("%-20s %-22s %6u %s\n", st[i].prog, st[i].sec, st[i].insns,
				       st[i].error);
		}
	}
	if (o->json) {
		struct json_object *r = json_object_new_object();

		json_add(r, "kernel", json_object_new_string(u.release));
		json_add(r, "programs", arr);
		print_json(r);
		json_object_put(r);
	} else {
		json_object_put(arr);
	}
	return failed ? 1 : 0;
}

/* Elements of a hash-like map (the sockhash: one per registered socket). */
static long long count_keys(int fd, size_t key_size)
{
	char key[64], next[64];
	long long n = 0;
	void *prev = NULL;

	if (key_size > sizeof(key))
		return -1;
	while (bpf_map_get_next_key(fd, prev, next) == 0 && n < 100000000) {
		memcpy(key, next, key_size);
		prev = key;
		n++;
	}
	return n;
}

static int cmd_status(const struct opts *o)
{
	struct json_object *r = json_object_new_object(), *hooks = json_object_new_array(), *ifaces;
	struct dmsc_link_info links[16];
	struct dmsc_features fs;
	struct dmsc_datapath dp;
	struct dmsc_state st = { 0 };
	struct utsname u;
	char when[64];
	size_t i, n, used_be = 0;
	long long fp_socks, fp_pending;
	int err;

	if (dmsc_require_root("status")) {
		json_object_put(r);
		json_object_put(hooks);
		return 1;
	}
	uname(&u);
	json_add(r, "kernel", json_object_new_string(u.release));
	json_add(r, "pin_dir", json_object_new_string(o->pin_dir));
	dmsc_features_probe(&fs);
	json_add(r, "features", features_json(&fs));
	err = dmsc_datapath_open(&dp, o->pin_dir, false);
	json_add(r, "installed", json_object_new_boolean(err == 0));
	if (err) {
		if (!o->json) {
			printf("dmsc is not installed at %s (kernel %s)\n", o->pin_dir, u.release);
			features_text(&fs);
		}
		json_object_put(hooks);
		goto out;
	}
	n = (size_t)dmsc_datapath_links(o->pin_dir, links, 16);
	if (dmsc_state_read(&dp, &st) == 0)
		for (i = 0; i < st.n_svcs; i++)
			used_be += st.svcs[i].meta.n_backends;
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ",
		 gmtime(&(time_t){ (time_t)dp.install.installed_at }));
	json_add(r, "cgroup", json_object_new_string(dp.install.cgroup_path));
	json_add(r, "cgroup_id", json_object_new_int64((int64_t)dp.install.cgroup_id));
	json_add(r, "installed_at", json_object_new_string(when));
	json_add(r, "services", json_object_new_int64((int64_t)st.n_svcs));
	json_add(r, "services_capacity", json_object_new_int64(dp.max_services - 1));
	json_add(r, "backends", json_object_new_int64((int64_t)used_be));
	json_add(r, "backends_capacity", json_object_new_int64(dp.max_backends - 1));
	fp_socks = count_keys(dp.fd[DMSC_M_FP_SOCKS], sizeof(__u64));
	fp_pending = count_keys(dp.fd[DMSC_M_FP_PENDING], sizeof(struct dmsc_fp_conn_key));
	json_add(r, "fastpath_sockets", json_object_new_int64(fp_socks));
	json_add(r, "fastpath_pending", json_object_new_int64(fp_pending));
	json_add(r, "fastpath_backlog_max", json_object_new_int64(dp.install.fp_backlog_max));
	json_add(r, "fastpath_backlog_set",
		 json_object_new_boolean(dp.install.fp_backlog_set != 0));
	if (!o->json) {
		printf("installed at %s on cgroup %s (id %llu) since %s, kernel %s\n", o->pin_dir,
		       dp.install.cgroup_path, (unsigned long long)dp.install.cgroup_id, when,
		       u.release);
		printf("services %zu of %u, backends %zu of %u\n", st.n_svcs, dp.max_services - 1,
		       used_be, dp.max_backends - 1);
		printf("fast path: %lld sockets registered, %lld connections pending\n", fp_socks,
		       fp_pending);
		if (dp.install.fp_backlog_max)
			printf("fast path: a writer leaves it when its reader has more than %u "
			       "bytes unread (%s)\n",
			       dp.install.fp_backlog_max,
			       dp.install.fp_backlog_set ? "set at install" : "the default");
		else
			printf("fast path: no bound on a reader's unread bytes\n");
	}
	for (i = 0; i < n; i++) {
		struct json_object *h;
		/* sk_msg sits on the sockhash, not on the cgroup. */
		bool ok = links[i].present && (links[i].hook->attach == DMSC_ATTACH_SOCKHASH ||
					       links[i].cgroup_id == dp.install.cgroup_id);
		const struct dmsc_feature_result *feat;
		bool skipped;

		if (links[i].hook->attach == DMSC_ATTACH_TC_INGRESS)
			continue;
		h = json_object_new_object();
		json_add(h, "hook", json_object_new_string(links[i].hook->hook));
		json_add(h, "program", json_object_new_string(links[i].hook->prog));
		json_add(h, "attached", json_object_new_boolean(ok));
		json_add(h, "fastpath", json_object_new_boolean(links[i].hook->fastpath));
		json_add(h, "link_id", json_object_new_int64(links[i].link_id));
		json_add(h, "prog_id", json_object_new_int64(links[i].prog_id));
		feat = dmsc_features_find(&fs, links[i].hook->hook);
		skipped = !ok && feat && !feat->present && feat->f.fallback;
		if (skipped)
			json_add(h, "skipped", json_object_new_string(feat->f.fallback));
		json_object_array_add(hooks, h);
		if (!o->json && skipped)
			printf("  %-22s skipped, this kernel lacks it (Linux %s): %s\n",
			       links[i].hook->hook, feat->f.min_linux, feat->f.fallback);
		else if (!o->json)
			printf("  %-22s %s (link %u, prog %u)\n", links[i].hook->hook,
			       ok ? "attached" : "NOT ATTACHED", links[i].link_id, links[i].prog_id);
	}
	if (!o->json)
		features_text(&fs);
	json_add(r, "hooks", hooks);
	ifaces = json_object_new_array();
	for (i = 0; i < dp.install.n_ifaces && i < DMSC_IFACES_MAX; i++) {
		json_object_array_add(ifaces, json_object_new_string(dp.install.ifname[i]));
		if (!o->json)
			printf("  %-22s on %s (ifindex %u)\n", "tc/ingress", dp.install.ifname[i],
			       dp.install.ifindex[i]);
	}
	json_add(r, "interfaces", ifaces);
	dmsc_state_free(&st);
	dmsc_datapath_close(&dp);
out:
	if (o->json)
		print_json(r);
	json_object_put(r);
	return 0;
}

static int parse_count(const char *flag, const char *arg, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || *end || end == arg || v < 1 || v > 4000000) {
		pr_warn("%s: \"%s\" is not a count from 1 to 4000000\n", flag, arg);
		return -EINVAL;
	}
	*out = (unsigned int)v;
	return 0;
}

int main(int argc, char **argv)
{
	enum {
		OPT_DRY_RUN = 256,
		OPT_CGROUP,
		OPT_MAX_SVC,
		OPT_MAX_BE,
		OPT_PIN_DIR,
		OPT_IFACE,
		OPT_FP_BACKLOG,
	};
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ "cgroup", required_argument, NULL, OPT_CGROUP },
		{ "max-services", required_argument, NULL, OPT_MAX_SVC },
		{ "max-backends", required_argument, NULL, OPT_MAX_BE },
		{ "pin-dir", required_argument, NULL, OPT_PIN_DIR },
		{ "interface", required_argument, NULL, OPT_IFACE },
		{ "fastpath-backlog", required_argument, NULL, OPT_FP_BACKLOG },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { 0 };
	enum dmsc_log_level level = DMSC_LOG_INFO;
	const char *cmd;
	int c;

	dmsc_log_init("dmscctl", level);
	/* publish, get, watch: policy in etcd, with their own options */
	for (c = 1; c < argc && argv[c][0] == '-'; c++)
		if (!strcmp(argv[c], "-o") || !strcmp(argv[c], "--output"))
			c++;
	if (c < argc && dmsc_etcd_ctl_command(argv[c]))
		return dmsc_etcd_ctl_main(argc, argv);
	while ((c = getopt_long(argc, argv, "o:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (strcmp(optarg, "json") && strcmp(optarg, "text")) {
				pr_warn("-o: \"%s\" is not an output format (text, json)\n", optarg);
				return EXIT_USAGE;
			}
			o.json = strcmp(optarg, "json") == 0;
			break;
		case OPT_DRY_RUN:
			o.dry_run = true;
			break;
		case OPT_CGROUP:
			o.cgroup = optarg;
			break;
		case OPT_MAX_SVC:
			if (parse_count("--max-services", optarg, &o.max_services))
				return EXIT_USAGE;
			break;
		case OPT_MAX_BE:
			if (parse_count("--max-backends", optarg, &o.max_backends))
				return EXIT_USAGE;
			break;
		case OPT_PIN_DIR:
			o.pin_dir = optarg;
			break;
		case OPT_IFACE:
			if (o.n_ifaces == DMSC_IFACES_MAX) {
				pr_warn("--interface: at most %d interfaces\n", DMSC_IFACES_MAX);
				return EXIT_USAGE;
			}
			o.ifaces[o.n_ifaces++] = optarg;
			break;
		case OPT_FP_BACKLOG:
			if (!strcmp(optarg, "default"))
				o.fp_backlog_default = true;
			else if (dmsc_parse_bytes("--fastpath-backlog", optarg, &o.fp_backlog_max))
				return EXIT_USAGE;
			o.fp_backlog_set = true;
			break;
		case 'v':
			level = DMSC_LOG_DEBUG;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	dmsc_log_init("dmscctl", level);
	if (!o.pin_dir)
		o.pin_dir = dmsc_pin_dir();
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[optind++];
	argc -= optind;
	argv += optind;

	if ((!strcmp(cmd, "check") || !strcmp(cmd, "apply") || !strcmp(cmd, "diff"))) {
		if (argc != 1) {
			pr_warn("%s takes one policy file (or - for standard input)\n", cmd);
			return EXIT_USAGE;
		}
		if (!strcmp(cmd, "check"))
			return cmd_check(argv[0], &o);
		if (!strcmp(cmd, "diff"))
			o.dry_run = true;
		return cmd_apply(argv[0], &o);
	}
	if (!strcmp(cmd, "show")) {
		if (argc == 1 && !strcmp(argv[0], "services"))
			return cmd_show_services(&o);
		if (argc == 1 && !strcmp(argv[0], "access"))
			return cmd_show_access(&o);
		pr_warn("show takes one of: services, access\n");
		return EXIT_USAGE;
	}
	if (argc != 0) {
		pr_warn("%s takes no arguments, got \"%s\"\n", cmd, argv[0]);
		return EXIT_USAGE;
	}
	if (!strcmp(cmd, "stats"))
		return cmd_stats(&o);
	if (!strcmp(cmd, "install"))
		return cmd_install(&o);
	if (!strcmp(cmd, "uninstall"))
		return cmd_uninstall(&o);
	if (!strcmp(cmd, "status"))
		return cmd_status(&o);
	if (!strcmp(cmd, "features"))
		return cmd_features(&o);
	if (!strcmp(cmd, "verifier"))
		return cmd_verifier(&o);
	pr_warn("unknown command \"%s\"; `dmscctl --help` lists them\n", cmd);
	return EXIT_USAGE;
}
