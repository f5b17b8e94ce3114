// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl check and apply: a policy read and validated, then written into
 * the pinned maps (or shown, with --dry-run).
 */
#include "ctl_cmds.h"

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

int cmd_check(const char *file, const struct opts *o)
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

int cmd_apply(const char *file, const struct opts *o)
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
