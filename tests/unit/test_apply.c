// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The apply and its diff, against the real maps of the real BPF object
 * loaded into the running kernel (programs loaded, not attached). Needs
 * root; without it the tests are reported as skipped, not passed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <criterion/criterion.h>

#include "dmsc_sock.skel.h"
#include "state.h"

#define T_MAX_SERVICES 2048
#define T_MAX_BACKENDS 8192

static struct dmsc_sock *skel;
static struct dmsc_datapath dp;

static void setup(void)
{
	int i;

	if (geteuid() != 0)
		cr_skip_test("needs root to load BPF maps");
	skel = dmsc_sock__open();
	cr_assert_not_null(skel);
	bpf_map__set_max_entries(skel->maps.dmsc_services, T_MAX_SERVICES);
	bpf_map__set_max_entries(skel->maps.dmsc_svc_meta, T_MAX_SERVICES);
	bpf_map__set_max_entries(skel->maps.dmsc_svc_stats, T_MAX_SERVICES);
	bpf_map__set_max_entries(skel->maps.dmsc_backends, T_MAX_BACKENDS);
	bpf_map__set_max_entries(skel->maps.dmsc_be_stats, T_MAX_BACKENDS);
	cr_assert_eq(dmsc_sock__load(skel), 0, "load: %s", strerror(errno));
	memset(&dp, 0, sizeof(dp));
	dp.dir_fd = -1;
	dp.fd[DMSC_M_SERVICES] = bpf_map__fd(skel->maps.dmsc_services);
	dp.fd[DMSC_M_BACKENDS] = bpf_map__fd(skel->maps.dmsc_backends);
	dp.fd[DMSC_M_SVC_META] = bpf_map__fd(skel->maps.dmsc_svc_meta);
	dp.fd[DMSC_M_SVC_STATS] = bpf_map__fd(skel->maps.dmsc_svc_stats);
	dp.fd[DMSC_M_BE_STATS] = bpf_map__fd(skel->maps.dmsc_be_stats);
	dp.fd[DMSC_M_REASONS] = bpf_map__fd(skel->maps.dmsc_reasons);
	dp.fd[DMSC_M_SOCK_VIP] = bpf_map__fd(skel->maps.dmsc_sock_vip);
	dp.fd[DMSC_M_INSTALL] = bpf_map__fd(skel->maps.dmsc_install);
	dp.fd[DMSC_M_FP_SOCKS] = bpf_map__fd(skel->maps.dmsc_fp_socks);
	dp.fd[DMSC_M_FP_PENDING] = bpf_map__fd(skel->maps.dmsc_fp_pending);
	dp.fd[DMSC_M_FP_SOCK] = bpf_map__fd(skel->maps.dmsc_fp_sock);
	dp.fd[DMSC_M_FP_STATS] = bpf_map__fd(skel->maps.dmsc_fp_stats);
	dp.fd[DMSC_M_FP_SVC] = bpf_map__fd(skel->maps.dmsc_fp_svc);
	dp.max_services = T_MAX_SERVICES;
	dp.max_backends = T_MAX_BACKENDS;
	dp.nr_cpus = libbpf_num_possible_cpus();
	for (i = 0; i < DMSC_M_COUNT; i++)
		cr_assert_geq(dp.fd[i], 0);
}

static void teardown(void)
{
	dmsc_sock__destroy(skel);
	skel = NULL;
}

/* A policy of n services "s<i>" on 198.19.<i/256>.<i%256>:80, each with nb
 * backends 198.18.<i/256>.<i%256+b>... with the given weights. */
static void make_policy(struct dmsc_policy *p, size_t n, size_t nb, const __u32 *weights)
{
	size_t i, b;
	char name[32];

	p->n_services = n;
	p->services = calloc(n, sizeof(*p->services));
	cr_assert_not_null(p->services);
	for (i = 0; i < n; i++) {
		struct dmsc_policy_service *s = &p->services[i];

		snprintf(name, sizeof(name), "s%zu", i);
		s->name = strdup(name);
		s->vip = htonl(0xc6130000u + (__u32)i); /* 198.19.0.0 + i */
		s->port = 80;
		s->protocol = DMSC_POLICY_TCP;
		s->n_backends = nb;
		s->backends = calloc(nb, sizeof(*s->backends));
		cr_assert_not_null(s->backends);
		for (b = 0; b < nb; b++) {
			s->backends[b].addr = htonl(0xc6120000u + (__u32)(i * 8 + b));
			s->backends[b].port = 8080;
			s->backends[b].weight = weights[b];
		}
	}
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

Test(apply, first_apply_writes_each_entry_once)
{
	static const __u32 w[] = { 80, 20 };
	struct dmsc_policy p = { 0 };
	size_t changes;

	make_policy(&p, 3, 2, w);
	/* Per service: 2 backends + meta + service. */
	cr_assert_eq(apply(&p, false, &changes), 3 * 4);
	cr_assert_eq(changes, 3);
	cr_assert_eq(count_services(), 3);
	/* The same policy again changes nothing. */
	cr_assert_eq(apply(&p, false, &changes), 0);
	cr_assert_eq(changes, 0);
	dmsc_policy_free(&p);
}

Test(apply, slot_table_in_the_kernel_follows_weights)
{
	static const __u32 w[] = { 80, 20 };
	struct dmsc_policy p = { 0 };
	struct dmsc_state st;

	make_policy(&p, 1, 2, w);
	apply(&p, false, NULL);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert_eq(st.n_svcs, 1);
	cr_assert_eq(st.svcs[0].be_slots[0], 102);
	cr_assert_eq(st.svcs[0].be_slots[1], 26);
	cr_assert_str_eq(st.svcs[0].meta.name, "s0");
	cr_assert_eq(st.svcs[0].be[0].addr, p.services[0].backends[0].addr);
	cr_assert_eq(st.svcs[0].be[0].port, htons(8080));
	cr_assert_eq(st.svcs[0].be[0].svc_id, st.svcs[0].svc.id);
	dmsc_state_free(&st);
	dmsc_policy_free(&p);
}

Test(apply, one_weight_in_a_thousand_services_writes_two_entries)
{
	static const __u32 w[] = { 25, 25, 25, 25 };
	struct dmsc_policy p = { 0 };
	struct dmsc_state before, after;
	size_t changes, i, diff = 0;

	make_policy(&p, 1000, 4, w);
	cr_assert_eq(apply(&p, false, NULL), 1000 * 6);
	cr_assert_eq(dmsc_state_read(&dp, &before), 0);
	p.services[500].backends[1].weight = 70;
	/* The service element (new slot table) and its meta (the weight). */
	cr_assert_eq(apply(&p, true, &changes), 2, "dry run plans 2 writes");
	cr_assert_eq(apply(&p, false, &changes), 2);
	cr_assert_eq(changes, 1);
	cr_assert_eq(dmsc_state_read(&dp, &after), 0);
	cr_assert_eq(before.n_svcs, after.n_svcs);
	for (i = 0; i < after.n_svcs; i++)
		if (memcmp(&before.svcs[i], &after.svcs[i], sizeof(after.svcs[i])))
			diff++;
	cr_assert_eq(diff, 1, "only the changed service differs in the maps");
	dmsc_state_free(&before);
	dmsc_state_free(&after);
	dmsc_policy_free(&p);
}

Test(apply, dry_run_writes_nothing)
{
	static const __u32 w[] = { 1 };
	struct dmsc_policy p = { 0 };
	size_t changes;

	make_policy(&p, 5, 1, w);
	cr_assert_eq(apply(&p, true, &changes), 5 * 3);
	cr_assert_eq(changes, 5);
	cr_assert_eq(count_services(), 0);
	dmsc_policy_free(&p);
}

Test(apply, backend_added_and_removed_reuses_ids_of_the_rest)
{
	static const __u32 w[] = { 1, 1, 1 };
	struct dmsc_policy p = { 0 };
	struct dmsc_state st;
	__u32 kept_id;

	make_policy(&p, 1, 3, w);
	apply(&p, false, NULL);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
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

	make_policy(&p, 2, 2, w);
	apply(&p, false, NULL);
	/* Per service: the service, its meta, two backends. */
	cr_assert_eq(apply(&empty, false, &changes), 2 * 4);
	cr_assert_eq(changes, 2);
	cr_assert_eq(count_services(), 0);
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BACKENDS], &id, &be), 0);
	cr_assert_eq(be.addr, 0, "backend entry cleared");
	dmsc_policy_free(&p);
}

Test(apply, all_weights_zero_flags_the_service)
{
	static const __u32 w[] = { 0, 0 };
	struct dmsc_policy p = { 0 };
	struct dmsc_state st;

	make_policy(&p, 1, 2, w);
	apply(&p, false, NULL);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert(st.svcs[0].svc.flags & DMSC_SVC_F_NO_BACKEND);
	dmsc_state_free(&st);
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

	make_policy(&p, 1, 1, w);
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

	make_policy(&p, T_MAX_SERVICES, 1, w);
	cr_assert_eq(dmsc_apply(&dp, &p, false, &res), -ENOSPC);
	dmsc_apply_result_free(&res);
	cr_assert_eq(count_services(), 0);
	dmsc_policy_free(&p);
}

Test(apply, failed_write_rolls_back_everything)
{
	static const __u32 w[] = { 60, 40 };
	LIBBPF_OPTS(bpf_get_fd_by_id_opts, ro, .open_flags = BPF_F_RDONLY);
	struct dmsc_policy p = { 0 }, q = { 0 };
	struct dmsc_apply_result res;
	struct dmsc_state before, after;
	struct dmsc_backend be_before[64], be_after[64];
	struct bpf_map_info info;
	__u32 len = sizeof(info);
	int rw_fd;

	make_policy(&p, 4, 2, w);
	apply(&p, false, NULL);
	cr_assert_eq(dmsc_state_read(&dp, &before), 0);
	snapshot_backends(be_before);
	/* The next apply adds two services; its first write to the meta map
	 * fails (read-only fd) after two backends were written. */
	make_policy(&q, 6, 2, w);
	memset(&info, 0, sizeof(info));
	cr_assert_eq(bpf_obj_get_info_by_fd(dp.fd[DMSC_M_SVC_META], &info, &len), 0);
	rw_fd = dp.fd[DMSC_M_SVC_META];
	dp.fd[DMSC_M_SVC_META] = bpf_map_get_fd_by_id_opts(info.id, &ro);
	cr_assert_geq(dp.fd[DMSC_M_SVC_META], 0);
	cr_assert_neq(dmsc_apply(&dp, &q, false, &res), 0);
	cr_assert(res.rolled_back);
	dmsc_apply_result_free(&res);
	close(dp.fd[DMSC_M_SVC_META]);
	dp.fd[DMSC_M_SVC_META] = rw_fd;
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
