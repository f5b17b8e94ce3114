// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl install, uninstall, features, verifier and status: the datapath
 * itself, what the kernel offers it, and its health.
 */
#include "ctl_cmds.h"

int cmd_install(const struct opts *o)
{
	struct dmsc_install_result res;
	int err;

	if (!o->install.io.cgroup) {
		pr_warn("install needs --cgroup PATH: the cgroup v2 whose processes are in the "
			"mesh\n");
		return EXIT_USAGE;
	}
	if (dmsc_require_root("install"))
		return 1;
	err = dmsc_install(o->pin_dir, &o->install.io, &res);
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

int cmd_uninstall(const struct opts *o)
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

int cmd_features(const struct opts *o)
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

int cmd_verifier(const struct opts *o)
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

int cmd_status(const struct opts *o)
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
	/* Both families' pending connections (decision 34: IPv6 has its own table). */
	fp_pending = count_keys(dp.fd[DMSC_M_FP_PENDING], sizeof(struct dmsc_fp_conn_key)) +
		     count_keys(dp.fd[DMSC_M_FP_PENDING6], sizeof(struct dmsc_fp_conn6_key));
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
