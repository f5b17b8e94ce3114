// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The apply and its diff, against the real maps of the real BPF object
 * loaded into the running kernel (programs loaded, not attached). Needs
 * root; without it the tests are reported as skipped, not passed.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <criterion/criterion.h>

#include "fixture.h"
#include "apply.h"

#define T_MAX_SERVICES 2048
#define T_MAX_BACKENDS 8192

static struct dmsc_sock *skel;
static struct dmsc_datapath dp;
static char cgroup_made[PATH_MAX + 64]; /* removed by teardown, also on failure */

static void setup(void)
{
	fixture_load(&skel, &dp, T_MAX_SERVICES, T_MAX_BACKENDS);
}

static void teardown(void)
{
	if (cgroup_made[0])
		rmdir(cgroup_made);
	cgroup_made[0] = '\0';
	dmsc_sock__destroy(skel);
	skel = NULL;
}

static size_t apply(const struct dmsc_policy *p, bool dry_run, size_t *changes)
{
	struct dmsc_apply_result res;
	size_t written;

	cr_assert_eq(dmsc_apply(&dp, p, dry_run, &res), 0);
	written = res.entries_written;
	if (changes)
		*changes = res.n_changes;
	dmsc_apply_result_free(&res);
	return written;
}

/* Applies p and reads back what the maps hold into st. */
static void apply_read(const struct dmsc_policy *p, struct dmsc_state *st)
{
	apply(p, false, NULL);
	cr_assert_eq(dmsc_state_read(&dp, st), 0);
}

static size_t count_services(void)
{
	struct dmsc_state st;
	size_t n;

	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	n = st.n_svcs;
	dmsc_state_free(&st);
	return n;
}

static void snapshot_backends(struct dmsc_backend *out)
{
	__u32 id;

	for (id = 0; id < 64; id++)
		cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BACKENDS], &id, &out[id]), 0);
}

TestSuite(apply, .init = setup, .fini = teardown);

Test(apply, dry_run_writes_nothing_then_the_first_apply_each_entry_once)
{
	static const __u32 w[] = { 80, 20 };
	struct dmsc_policy p = { 0 };
	size_t changes;

	fixture_policy(&p, 3, 2, w);
	/* Per service: 2 backends + meta + service, planned and not written. */
	cr_assert_eq(apply(&p, true, &changes), 3 * 4);
	cr_assert_eq(changes, 3);
	cr_assert_eq(count_services(), 0);
	/* Written. */
	cr_assert_eq(apply(&p, false, &changes), 3 * 4);
	cr_assert_eq(changes, 3);
	cr_assert_eq(count_services(), 3);
	/* The same policy again changes nothing. */
	cr_assert_eq(apply(&p, false, &changes), 0);
	cr_assert_eq(changes, 0);
	dmsc_policy_free(&p);
}

Test(apply, slot_table_in_the_kernel_follows_weights_and_all_zero_flags_the_service)
{
	static const __u32 w[] = { 80, 20 };
	struct dmsc_policy p = { 0 };
	struct dmsc_state st;

	fixture_policy(&p, 1, 2, w);
	apply_read(&p, &st);
	cr_assert_eq(st.n_svcs, 1);
	cr_assert_eq(st.svcs[0].be_slots[0], 102);
	cr_assert_eq(st.svcs[0].be_slots[1], 26);
	cr_assert_str_eq(st.svcs[0].meta.name, "s0");
	cr_assert_eq(st.svcs[0].be[0].addr, p.services[0].backends[0].addr);
	cr_assert_eq(st.svcs[0].be[0].port, htons(8080));
	cr_assert_eq(st.svcs[0].be[0].svc_id, st.svcs[0].svc.id);
	cr_assert_not(st.svcs[0].svc.flags & DMSC_SVC_F_NO_BACKEND);
	dmsc_state_free(&st);
	/* All weights 0: the service is flagged, it refuses new connections. */
	p.services[0].backends[0].weight = 0;
	p.services[0].backends[1].weight = 0;
	apply_read(&p, &st);
	cr_assert(st.svcs[0].svc.flags & DMSC_SVC_F_NO_BACKEND);
	dmsc_state_free(&st);
	dmsc_policy_free(&p);
}

Test(apply, one_weight_in_a_thousand_services_writes_two_entries)
{
	static const __u32 w[] = { 25, 25, 25, 25 };
	struct dmsc_policy p = { 0 };
	struct dmsc_state before, after;
	size_t changes;

	fixture_policy(&p, 1000, 4, w);
	cr_assert_eq(apply(&p, false, NULL), 1000 * 6);
	cr_assert_eq(dmsc_state_read(&dp, &before), 0);
	p.services[500].backends[1].weight = 70;
	/* The service element (new slot table) and its meta (the weight). */
	cr_assert_eq(apply(&p, true, &changes), 2, "dry run plans 2 writes");
	cr_assert_eq(apply(&p, false, &changes), 2);
	cr_assert_eq(changes, 1);
	cr_assert_eq(dmsc_state_read(&dp, &after), 0);
	cr_assert_eq(before.n_svcs, after.n_svcs);
	cr_assert_eq(fixture_svcs_differ(&before, &after), 1, "only the changed service differs in the maps");
	dmsc_state_free(&before);
	dmsc_state_free(&after);
	dmsc_policy_free(&p);
}

Test(apply, backend_added_and_removed_reuses_ids_of_the_rest)
{
	static const __u32 w[] = { 1, 1, 1 };
	struct dmsc_policy p = { 0 };
	struct dmsc_state st;
	__u32 kept_id;

	fixture_policy(&p, 1, 3, w);
	apply_read(&p, &st);
	kept_id = st.svcs[0].meta.backend_id[0];
	dmsc_state_free(&st);
	/* Drop the last backend: service, meta, and the dropped backend. */
	p.services[0].n_backends = 2;
	cr_assert_eq(apply(&p, false, NULL), 3);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert_eq(st.svcs[0].meta.n_backends, 2);
	cr_assert_eq(st.svcs[0].meta.backend_id[0], kept_id);
	cr_assert_eq(st.svcs[0].be_slots[0] + st.svcs[0].be_slots[1], DMSC_SLOTS);
	dmsc_state_free(&st);
	p.services[0].n_backends = 3;
	dmsc_policy_free(&p);
}

Test(apply, removed_service_leaves_no_entry)
{
	static const __u32 w[] = { 1, 1 };
	struct dmsc_policy p = { 0 }, empty = { 0 };
	struct dmsc_backend be;
	__u32 id = 1;
	size_t changes;

	fixture_policy(&p, 2, 2, w);
	apply(&p, false, NULL);
	/* Per service: the service, its meta, two backends. */
	cr_assert_eq(apply(&empty, false, &changes), 2 * 4);
	cr_assert_eq(changes, 2);
	cr_assert_eq(count_services(), 0);
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BACKENDS], &id, &be), 0);
	cr_assert_eq(be.addr, 0, "backend entry cleared");
	dmsc_policy_free(&p);
}

/* accelerate: on/off/auto becomes the service flags the fast path reads,
 * and changing it is an update of the one service element. */
Test(apply, accelerate_sets_the_service_flags)
{
	static const __u32 w[] = { 1 };
	static const enum dmsc_accelerate modes[] = { DMSC_ACCEL_ON, DMSC_ACCEL_OFF,
						      DMSC_ACCEL_AUTO };
	static const __u32 want[] = { DMSC_SVC_F_ACCEL_ON, DMSC_SVC_F_ACCEL_OFF, 0 };
	struct dmsc_policy p = { 0 };
	struct dmsc_state st;
	size_t i, changes;

	fixture_policy(&p, 1, 1, w);
	apply(&p, false, NULL); /* auto */
	for (i = 0; i < 3; i++) {
		p.services[0].accelerate = modes[i];
		cr_assert_eq(apply(&p, false, &changes), 1, "mode %zu: one write", i);
		cr_assert_eq(changes, 1);
		cr_assert_eq(dmsc_state_read(&dp, &st), 0);
		cr_assert_eq(st.svcs[0].svc.flags & (DMSC_SVC_F_ACCEL_ON | DMSC_SVC_F_ACCEL_OFF),
			     want[i], "mode %zu", i);
		dmsc_state_free(&st);
	}
	dmsc_policy_free(&p);
}

Test(apply, over_capacity_is_refused_before_any_write)
{
	static const __u32 w[] = { 1 };
	struct dmsc_policy p = { 0 };
	struct dmsc_apply_result res;

	fixture_policy(&p, T_MAX_SERVICES, 1, w);
	cr_assert_eq(dmsc_apply(&dp, &p, false, &res), -ENOSPC);
	dmsc_apply_result_free(&res);
	cr_assert_eq(count_services(), 0);
	dmsc_policy_free(&p);
}

Test(apply, failed_write_rolls_back_everything)
{
	static const __u32 w[] = { 60, 40 };
	struct dmsc_policy p = { 0 }, q = { 0 };
	struct dmsc_apply_result res;
	struct dmsc_state before, after;
	struct dmsc_backend be_before[64], be_after[64];
	int rw_fd;

	fixture_policy(&p, 4, 2, w);
	apply(&p, false, NULL);
	cr_assert_eq(dmsc_state_read(&dp, &before), 0);
	snapshot_backends(be_before);
	/* The next apply adds two services; its first write to the meta map
	 * fails (read-only fd) after two backends were written. */
	fixture_policy(&q, 6, 2, w);
	rw_fd = fixture_meta_read_only(&dp);
	cr_assert_neq(dmsc_apply(&dp, &q, false, &res), 0);
	cr_assert(res.rolled_back);
	dmsc_apply_result_free(&res);
	fixture_meta_writable(&dp, rw_fd);
	cr_assert_eq(dmsc_state_read(&dp, &after), 0);
	cr_assert_eq(after.n_svcs, before.n_svcs);
	cr_assert_eq(memcmp(after.svcs, before.svcs, before.n_svcs * sizeof(*before.svcs)), 0,
		     "the maps hold what they held before the failed apply");
	snapshot_backends(be_after);
	cr_assert_eq(memcmp(be_before, be_after, sizeof(be_before)), 0,
		     "backend entries written before the failure are undone");
	dmsc_state_free(&before);
	dmsc_state_free(&after);
	dmsc_policy_free(&p);
	dmsc_policy_free(&q);
}

Test(apply, limits_flags_and_backend_index)
{
	static const __u32 w[] = { 1, 1 };
	struct dmsc_policy p = { 0 };
	struct dmsc_state st;
	size_t changes;

	fixture_policy(&p, 2, 2, w);
	fixture_limits(&p.services[1], 100, 20, 1000000);
	/* Per service 4 entries; service 1 also its limits and 2 index
	 * entries. */
	cr_assert_eq(apply(&p, false, &changes), 2 * 4 + 1 + 2);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert_eq(st.n_be_index, 2);
	cr_assert_eq(st.svcs[1].limits.conn_rate, 100);
	cr_assert_eq(st.svcs[1].limits.conn_depth, 20);
	cr_assert_eq(st.svcs[1].limits.byte_rate, 1000000);
	cr_assert_eq(st.svcs[1].limits.byte_depth, 100000, "default: 100 ms worth");
	cr_assert(st.svcs[1].svc.flags & DMSC_SVC_F_CONN_LIMIT);
	cr_assert(st.svcs[1].svc.flags & DMSC_SVC_F_BYTES_LIMIT);
	cr_assert(st.svcs[1].svc.flags & DMSC_SVC_F_ACCEL_OFF, "byte limits stay off the fast path");
	cr_assert_eq(st.svcs[0].limits.conn_rate, 0);
	cr_assert_eq(st.be_index[0].svc_id, st.svcs[1].svc.id);
	dmsc_state_free(&st);
	cr_assert_eq(apply(&p, false, &changes), 0, "nothing changed");
	/* Dropping the limits: the service flips, limits zeroed, index out. */
	p.services[1].has_rate_limit = false;
	cr_assert_eq(apply(&p, false, &changes), 1 + 1 + 2);
	cr_assert_eq(changes, 1);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert_eq(st.n_be_index, 0);
	cr_assert_eq(st.svcs[1].limits.conn_rate, 0);
	cr_assert_eq(st.svcs[1].svc.flags & (DMSC_SVC_F_CONN_LIMIT | DMSC_SVC_F_BYTES_LIMIT), 0);
	dmsc_state_free(&st);
	dmsc_policy_free(&p);
}

/* docs/design.md decision 70: an IPv6 backend of this host of a required
 * service is flagged as an IPv4 one and indexed in dmsc_be_mtls6 (the
 * guard's and connect6's index), one of another host goes through the
 * tunnel; the entry goes with the mtls that set it. */
Test(apply, ipv6_guarded_backend_indexed_in_be_mtls6)
{
	static const __u32 w[] = { 1, 1 };
	struct dmsc_policy p = { 0 };
	struct dmsc_svc6_key k6 = { 0 };
	struct dmsc_backend6 be6;
	__u32 id = 0;

	fixture_policy(&p, 1, 2, w);
	fixture_ipv6(&p, 0, 0x61);
	p.services[0].mtls = DMSC_MTLS_REQUIRED;
	p.services[0].has_allow_from = true;
	p.services[0].backends[0].host = strdup("node-b");
	p.services[0].backends[1].host = strdup("node-a");
	dmsc_apply_set_host("node-b");
	apply(&p, false, NULL);
	memcpy(k6.vip, p.services[0].backends[0].addr6, sizeof(k6.vip));
	k6.port = htons(8080);
	k6.proto = DMSC_PROTO_TCP;
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BE_MTLS6], &k6, &id), 0);
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BACKENDS6], &id, &be6), 0);
	cr_assert_eq(memcmp(be6.addr, k6.vip, sizeof(k6.vip)), 0);
	cr_assert_eq(be6.flags, DMSC_BE_F_MTLS_REQUIRED | DMSC_BE_F_MTLS_ALLOW_LIST);
	k6.vip[3] ^= htonl(3); /* backend 1's address: another host's */
	cr_assert_neq(bpf_map_lookup_elem(dp.fd[DMSC_M_BE_MTLS6], &k6, &id), 0);
	k6.vip[3] ^= htonl(3);
	p.services[0].mtls = DMSC_MTLS_OFF;
	apply(&p, false, NULL);
	dmsc_apply_set_host(NULL);
	cr_assert_neq(bpf_map_lookup_elem(dp.fd[DMSC_M_BE_MTLS6], &k6, &id), 0,
		      "mtls off: the index entry is gone");
	dmsc_policy_free(&p);
}

/* A connection rate above the deepest bucket without a burst: the default
 * burst (one second's worth) is clamped to DMSC_TB_DEPTH_MAX, and the
 * bucket the kernel runs with what was written lets every connection of a
 * burst through (at 10^10/s the unclamped depth wrapped negative: 0 of
 * 1000 passed). */
Test(apply, large_connection_rate_without_burst_is_clamped)
{
	static const __u64 rates[] = { 9300000000ull, 10000000000ull, 17000000000ull,
				       DMSC_TB_RATE_MAX };
	struct dmsc_policy p = { 0 };
	struct dmsc_state st;
	size_t i;
	int n;

	fixture_policy(&p, 1, 1, NULL);
	p.services[0].has_rate_limit = true;
	p.services[0].rate_limit.has_connections_per_second = true;
	for (i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
		struct dmsc_tb b = { 0 };

		p.services[0].rate_limit.connections_per_second = rates[i];
		apply_read(&p, &st);
		cr_assert_eq(st.svcs[0].limits.conn_rate, rates[i]);
		cr_assert_eq(st.svcs[0].limits.conn_depth, DMSC_TB_DEPTH_MAX, "rate %llu", rates[i]);
		for (n = 0; n < 1000 && dmsc_tb_take(&b, 1000000000ull, st.svcs[0].limits.conn_rate,
						     st.svcs[0].limits.conn_depth, 1);
		     n++)
			;
		cr_assert_eq(n, 1000, "rate %llu: %d of 1000 connections", rates[i], n);
		dmsc_state_free(&st);
	}
	dmsc_policy_free(&p);
}

/* A run that crashed (a sanitizer abort) never reached teardown: remove the
 * empty test cgroups of processes that are gone. rmdir only removes an
 * empty cgroup, so nothing in use can go. */
static void remove_stale_cgroups(const char *mnt)
{
	char path[PATH_MAX + 2 * NAME_MAX];
	struct dirent *e;
	DIR *d = opendir(mnt);
	int pid;

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (sscanf(e->d_name, "dmsc-unit-%d", &pid) != 1 || pid <= 0 ||
		    (kill(pid, 0) != 0 && errno == ESRCH) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", mnt, e->d_name);
		rmdir(path);
	}
	closedir(d);
}

Test(apply, allow_rules_resolve_cgroups_and_keep_unknown_ones_closed)
{
	static const __u32 w[] = { 1 };
	struct dmsc_policy p = { 0 };
	struct dmsc_apply_result res;
	const struct dmsc_allow_entry *rules;
	char mnt[PATH_MAX], rel[64];
	char *abs = cgroup_made;
	struct dmsc_state st;
	struct stat sb;
	size_t n;

	cr_assert_eq(dmsc_cgroup2_mount(mnt, sizeof(mnt)), 0);
	remove_stale_cgroups(mnt);
	snprintf(rel, sizeof(rel), "dmsc-unit-%d", (int)getpid());
	snprintf(cgroup_made, sizeof(cgroup_made), "%s/%s", mnt, rel);
	cr_assert_eq(mkdir(abs, 0755), 0, "mkdir %s: %s", abs, strerror(errno));
	cr_assert_eq(stat(abs, &sb), 0);

	fixture_policy(&p, 1, 1, w);
	p.services[0].has_allow_from = true;
	p.services[0].n_allow_from = 2;
	p.services[0].allow_from = calloc(2, sizeof(char *));
	p.services[0].allow_from[0] = strdup(rel);
	p.services[0].allow_from[1] = strdup("dmsc-unit-does-not-exist/x");
	cr_assert_eq(dmsc_apply(&dp, &p, false, &res), 0);
	cr_assert_eq(res.unresolved, 1);
	dmsc_apply_result_free(&res);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert(st.svcs[0].svc.flags & DMSC_SVC_F_ALLOW_LIST);
	rules = dmsc_state_allow(&st, st.svcs[0].svc.id, &n);
	cr_assert_eq(n, 2);
	cr_assert_eq(rules[0].key.cgroup_id, (__u64)sb.st_ino);
	cr_assert_str_eq(rules[0].rule.path, rel);
	cr_assert(rules[1].key.cgroup_id & DMSC_ALLOW_UNRESOLVED);
	cr_assert_str_eq(rules[1].rule.path, "dmsc-unit-does-not-exist/x");
	dmsc_state_free(&st);
	cr_assert_eq(apply(&p, false, NULL), 0, "same rules: nothing written");
	/* Without allow_from the service opens and the rules go. */
	p.services[0].has_allow_from = false;
	cr_assert_eq(apply(&p, false, NULL), 1 + 2);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert_eq(st.n_allow, 0);
	cr_assert_eq(st.svcs[0].svc.flags & DMSC_SVC_F_ALLOW_LIST, 0);
	dmsc_state_free(&st);
	p.services[0].has_allow_from = true;
	dmsc_policy_free(&p);
}

/* IPv6 services live in dmsc_services6 and dmsc_backends6, with ids shared
 * with IPv4 ones; an apply writes only what differs, as for IPv4. */
Test(apply, ipv6_services_in_their_own_maps_written_by_difference)
{
	static const __u32 w[] = { 70, 30 };
	struct dmsc_policy p = { 0 };
	struct dmsc_svc6_key k6 = { 0 };
	struct dmsc_backend6 be6;
	struct dmsc_backend be;
	struct dmsc_state st;
	struct dmsc_svc svc;
	__u32 id6 = 0, i;
	size_t changes;

	fixture_policy(&p, 4, 2, w);
	fixture_ipv6(&p, 1, 0x61);
	fixture_ipv6(&p, 3, 0x61);
	cr_assert_eq(apply(&p, false, &changes), 4 * 4);
	cr_assert_eq(apply(&p, false, &changes), 0, "the same policy again writes nothing");
	cr_assert_eq(changes, 0);
	memcpy(k6.vip, p.services[1].vip6, sizeof(k6.vip));
	k6.port = htons(80);
	k6.proto = DMSC_PROTO_TCP;
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_SERVICES6], &k6, &svc), 0);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert_eq(st.n_svcs, 4);
	for (i = 0; i < st.n_svcs; i++) {
		if (strcmp(st.svcs[i].meta.name, "s1"))
			continue;
		cr_assert_eq(st.svcs[i].family, AF_INET6);
		cr_assert_eq(st.svcs[i].svc.id, svc.id);
		cr_assert_eq(st.svcs[i].be_slots[0], 90);
		id6 = st.svcs[i].meta.backend_id[0];
	}
	dmsc_state_free(&st);
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BACKENDS6], &id6, &be6), 0);
	cr_assert_eq(memcmp(be6.addr, p.services[1].backends[0].addr6, 16), 0);
	cr_assert_eq(be6.port, htons(8080));
	cr_assert_eq(be6.svc_id, svc.id);
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BACKENDS], &id6, &be), 0);
	cr_assert_eq(be.addr, 0, "an IPv6 backend's id has no IPv4 entry");

	/* A weight: the service element and its meta. */
	p.services[1].backends[1].weight = 50;
	cr_assert_eq(apply(&p, false, &changes), 2);
	cr_assert_eq(changes, 1);
	/* Removed: its element, meta and both backends; the entries go. */
	p.services[1].vip6[15] = 0x77;
	cr_assert_eq(apply(&p, false, &changes), 2 * 4, "a new VIP is a new service");
	cr_assert_eq(changes, 2);
	cr_assert_neq(bpf_map_lookup_elem(dp.fd[DMSC_M_SERVICES6], &k6, &svc), 0);
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BACKENDS6], &id6, &be6), 0);
	cr_assert_eq(be6.port, 0, "the removed IPv6 backend's entry is cleared");
	cr_assert_eq(count_services(), 4);
	dmsc_policy_free(&p);
}
