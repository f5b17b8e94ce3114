// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The mirror apply (dmscd's) against the real maps of the real BPF object
 * (loaded, not attached), checked against what the maps hold afterwards
 * and against dmsc_apply(), the map-reading apply. Needs root; without it
 * the tests are reported as skipped, not passed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <criterion/criterion.h>

#include "fixture.h"
#include "apply_mirror.h"
#include "apply.h"

#define M_MAX_SERVICES 4096
#define M_MAX_BACKENDS 16384

static struct dmsc_sock *skel;
static struct dmsc_datapath dp;
static struct dmsc_mirror mir;

static void setup(void)
{
	fixture_load(&skel, &dp, M_MAX_SERVICES, M_MAX_BACKENDS);
	fixture_install_clear(&dp);
	memset(&mir, 0, sizeof(mir));
}

static void teardown(void)
{
	dmsc_mirror_free(&mir);
	dmsc_sock__destroy(skel);
	skel = NULL;
}

static size_t mapply(const struct dmsc_policy *p, bool dry_run, size_t *changes)
{
	struct dmsc_apply_result res;
	struct dmsc_svc_digest *d = calloc(p->n_services + 1, sizeof(*d));
	size_t written;

	cr_assert_not_null(d);
	dmsc_policy_digests(p, d);
	cr_assert_eq(dmsc_mirror_apply(&mir, &dp, p, d, dry_run, &res), 0);
	written = res.entries_written;
	if (changes)
		*changes = res.n_changes;
	dmsc_apply_result_free(&res);
	free(d);
	return written;
}

/* The maps hold exactly p: dmsc_apply (which reads them) has nothing to
 * write, and a mirror read afresh from them equals the incremental one. */
static void assert_maps_hold(const struct dmsc_policy *p)
{
	struct dmsc_apply_result res;
	struct dmsc_mirror fresh = { 0 };
	size_t i;

	cr_assert_eq(dmsc_apply(&dp, p, true, &res), 0);
	cr_assert_eq(res.entries_written, 0, "the maps differ from the policy: %zu writes",
		     res.entries_written);
	dmsc_apply_result_free(&res);
	cr_assert_eq(dmsc_mirror_load(&fresh, &dp), 0);
	cr_assert_eq(fresh.n, mir.n);
	cr_assert_eq(fresh.n_backends, mir.n_backends);
	for (i = 0; i < mir.n; i++) {
		const struct dmsc_mirror_svc *a = &mir.svcs[i];
		const struct dmsc_mirror_svc *b = dmsc_mirror_find(&fresh, &a->key, dmsc_mirror_vip6(a));

		cr_assert_not_null(b, "service %s is in the mirror, not in the maps", a->name);
		cr_assert_str_eq(a->name, b->name);
		cr_assert_eq(a->id, b->id);
		cr_assert_eq(a->flags, b->flags);
		cr_assert_eq(a->n_be, b->n_be);
		cr_assert_eq(memcmp(a->be, b->be, a->n_be * sizeof(*a->be)), 0);
		cr_assert_eq(memcmp(dmsc_mirror_ext(a), dmsc_mirror_ext(b),
				    offsetof(struct dmsc_mirror_ext, allow)),
			     0, "service %s: VIP, limits or health differ", a->name);
		cr_assert_eq(dmsc_mirror_ext(a)->n_be6, dmsc_mirror_ext(b)->n_be6);
		cr_assert_eq(memcmp(dmsc_mirror_ext(a)->be6, dmsc_mirror_ext(b)->be6,
				    dmsc_mirror_ext(a)->n_be6 * sizeof(dmsc_mirror_ext(a)->be6[0])),
			     0);
		cr_assert_not(fresh.hot[b - fresh.svcs].stale);
	}
	dmsc_mirror_free(&fresh);
}

#define ANY_CHANGES ((size_t)-1)

/* A mirror apply of p that writes ENTRIES map entries for CHANGES services
 * (ANY_CHANGES: not checked), after which the maps hold exactly p; WHAT
 * names the step in a failure. */
static void mapply_holds(const struct dmsc_policy *p, size_t entries, size_t changes,
			 const char *what)
{
	size_t written, n;

	written = mapply(p, false, &n);
	cr_assert_eq(written, entries, "%s: %zu entries written, not %zu", what, written, entries);
	if (changes != ANY_CHANGES)
		cr_assert_eq(n, changes, "%s: %zu services changed, not %zu", what, n, changes);
	assert_maps_hold(p);
}

TestSuite(mirror, .init = setup, .fini = teardown);

Test(mirror, first_apply_matches_dmsc_apply_counts)
{
	struct dmsc_policy p = { 0 };
	size_t changes;

	fixture_policy(&p, 50, 4, NULL);
	cr_assert_eq(mapply(&p, true, &changes), 50 * 6, "dry run plans every entry");
	cr_assert_eq(mir.n, 0, "a dry run leaves the mirror as it was");
	mapply_holds(&p, 50 * 6, 50, "the first apply");
	cr_assert_eq(mapply(&p, false, &changes), 0);
	cr_assert_eq(changes, 0);
	dmsc_policy_free(&p);
}

Test(mirror, one_weight_among_many_writes_two_entries)
{
	struct dmsc_policy p = { 0 };
	struct dmsc_state before, after;
	size_t changes;

	fixture_policy(&p, 2000, 4, NULL);
	mapply(&p, false, NULL);
	cr_assert_eq(dmsc_state_read(&dp, &before), 0);
	p.services[1234].backends[2].weight = 9;
	cr_assert_eq(mapply(&p, false, &changes), 2);
	cr_assert_eq(changes, 1);
	cr_assert_eq(dmsc_state_read(&dp, &after), 0);
	cr_assert_eq(fixture_svcs_differ(&before, &after), 1, "only the changed service differs in the maps");
	assert_maps_hold(&p);
	dmsc_state_free(&before);
	dmsc_state_free(&after);
	dmsc_policy_free(&p);
}

/* dmscd's view of the changed keys: dmsc_mirror_apply_some() of the
 * changed services only (out of the policy's order) writes what the whole
 * apply would, keeps every other service, adds a new one, and leaves the
 * maps holding the whole policy. */
Test(mirror, some_services_applied_keep_the_others)
{
	struct dmsc_policy p = { 0 }, some = { 0 };
	struct dmsc_policy_service two[2];
	struct dmsc_svc_digest d[2];
	struct dmsc_apply_result res;

	fixture_policy(&p, 300, 4, NULL);
	mapply(&p, false, NULL);
	p.services[250].backends[1].weight = 9;
	p.services[17].backends[3].weight = 0;
	two[0] = p.services[250];
	two[1] = p.services[17];
	some.services = two;
	some.n_services = 2;
	dmsc_policy_digests(&some, d);
	cr_assert_eq(dmsc_mirror_apply_some(&mir, &dp, &some, d, NULL, 0, &res), 0);
	cr_assert_eq(res.n_changes, 2);
	cr_assert_eq(res.entries_written, 4, "meta and service of each");
	cr_assert_eq(res.n_services, 300, "every service the mirror holds");
	dmsc_apply_result_free(&res);
	assert_maps_hold(&p);
	cr_assert_eq(mapply(&p, false, NULL), 0, "the whole apply after it writes nothing");
	/* unchanged: nothing written; the last one of p, new to the mirror: added */
	p.n_services = 299;
	mapply(&p, false, NULL);
	two[0] = p.services[5];
	two[1] = p.services[299];
	dmsc_policy_digests(&some, d);
	cr_assert_eq(dmsc_mirror_apply_some(&mir, &dp, &some, d, NULL, 0, &res), 0);
	cr_assert_eq(res.n_changes, 1);
	cr_assert_eq(res.n_services, 300);
	dmsc_apply_result_free(&res);
	p.n_services = 300;
	assert_maps_hold(&p);
	dmsc_policy_free(&p);
}

/* A read of etcd a page at a time (docs/design.md decision 61): a fresh
 * mirror takes the policy a page at a time with dmsc_mirror_apply_some(),
 * then one apply with keep (the digest of every service) removes what the
 * maps hold beyond it; applied again page by page over those maps it
 * writes nothing. */
Test(mirror, pages_then_keep_removes_what_is_gone)
{
	struct dmsc_policy p = { 0 }, page = { 0 }, none = { 0 };
	struct dmsc_svc_digest *d, *keep;
	struct dmsc_apply_result res;
	size_t i, written = 0;

	fixture_policy(&p, 300, 4, NULL);
	mapply(&p, false, NULL); /* the maps before: 300 services */
	dmsc_mirror_free(&mir);	 /* a new dmscd: it reads them */
	d = calloc(p.n_services, sizeof(*d));
	cr_assert_not_null(d);
	dmsc_policy_digests(&p, d);
	/* etcd holds 280 of them (the last 20 were deleted), one changed */
	p.services[3].backends[1].weight = 9;
	dmsc_policy_digests(&p, d);
	for (i = 0; i < 280; i += 64) {
		page.services = &p.services[i];
		page.n_services = i + 64 > 280 ? 280 - i : 64;
		cr_assert_eq(dmsc_mirror_apply_some(&mir, &dp, &page, &d[i], NULL, 0, &res), 0);
		cr_assert_eq(res.n_services, 300, "a page removes nothing");
		written += res.entries_written;
		dmsc_apply_result_free(&res);
	}
	cr_assert_eq(written, 2, "the changed service only (meta and service)");
	keep = d;
	cr_assert_eq(dmsc_mirror_apply_some(&mir, &dp, &none, NULL, keep, 280, &res), 0);
	cr_assert_eq(res.n_changes, 20, "the 20 services etcd no longer has");
	cr_assert_eq(res.n_services, 280);
	dmsc_apply_result_free(&res);
	p.n_services = 280;
	assert_maps_hold(&p);
	cr_assert_eq(mapply(&p, false, NULL), 0, "the whole apply after it writes nothing");
	/* again, as a dmscd restarted against the same store: nothing */
	dmsc_mirror_free(&mir);
	for (i = 0; i < 280; i += 100) {
		page.services = &p.services[i];
		page.n_services = i + 100 > 280 ? 280 - i : 100;
		cr_assert_eq(dmsc_mirror_apply_some(&mir, &dp, &page, &d[i], NULL, 0, &res), 0);
		cr_assert_eq(res.entries_written, 0);
		dmsc_apply_result_free(&res);
	}
	cr_assert_eq(dmsc_mirror_apply_some(&mir, &dp, &none, NULL, keep, 280, &res), 0);
	cr_assert_eq(res.entries_written, 0);
	cr_assert_eq(res.n_changes, 0);
	dmsc_apply_result_free(&res);
	p.n_services = 300;
	free(d);
	dmsc_policy_free(&p);
}

Test(mirror, adds_removes_and_moves)
{
	struct dmsc_policy p = { 0 };
	struct dmsc_policy_service tmp;

	fixture_policy(&p, 20, 2, NULL);
	mapply(&p, false, NULL);
	/* Remove s5 (the array keeps its order). */
	tmp = p.services[5];
	memmove(&p.services[5], &p.services[6], 14 * sizeof(tmp));
	p.services[19] = tmp;
	p.n_services = 19;
	mapply_holds(&p, 4, 1, "s5 removed: service, meta, two backends");
	/* Put it back, first: an add in front of everything. */
	memmove(&p.services[1], &p.services[0], 19 * sizeof(tmp));
	p.services[0] = tmp;
	p.n_services = 20;
	mapply_holds(&p, 4, 1, "s5 back in front: two backends, meta, service");
	/* Reverse the order: nothing to write. */
	for (size_t i = 0; i < 10; i++) {
		tmp = p.services[i];
		p.services[i] = p.services[19 - i];
		p.services[19 - i] = tmp;
	}
	mapply_holds(&p, 0, ANY_CHANGES, "the order reversed");
	/* A backend replaced: one new entry, meta, service, one drop. */
	p.services[3].backends[0].addr = htonl(0xc612ff01u);
	mapply_holds(&p, 4, ANY_CHANGES, "a backend replaced");
	dmsc_policy_free(&p);
}

Test(mirror, adopting_a_datapath_writes_nothing)
{
	struct dmsc_policy p = { 0 };
	size_t changes;

	fixture_policy(&p, 100, 3, NULL);
	mapply(&p, false, NULL);
	/* A new dmscd: the mirror comes from the maps, no fingerprints. */
	dmsc_mirror_free(&mir);
	cr_assert_eq(dmsc_mirror_load(&mir, &dp), 0);
	cr_assert_eq(mir.n, 100);
	cr_assert_eq(mapply(&p, false, &changes), 0);
	cr_assert_eq(changes, 0);
	/* ...and now it knows the fingerprints: one change is 2 writes. */
	p.services[7].backends[0].weight = 3;
	cr_assert_eq(mapply(&p, false, &changes), 2);
	assert_maps_hold(&p);
	dmsc_policy_free(&p);
}

Test(mirror, another_writer_is_noticed)
{
	struct dmsc_policy p = { 0 }, q = { 0 };
	struct dmsc_apply_result res;
	size_t changes;

	fixture_policy(&p, 10, 2, NULL);
	fixture_policy(&q, 12, 3, NULL);
	mapply(&p, false, NULL);
	/* dmscctl apply in between: it bumps the generation. */
	cr_assert_eq(dmsc_apply(&dp, &q, false, &res), 0);
	dmsc_apply_result_free(&res);
	cr_assert_gt(mapply(&p, false, &changes), 0, "the mirror was re-read: p is rewritten");
	assert_maps_hold(&p);
	dmsc_policy_free(&p);
	dmsc_policy_free(&q);
}

Test(mirror, failed_write_rolls_back_and_the_mirror_stays_right)
{
	struct dmsc_policy p = { 0 }, q = { 0 };
	struct dmsc_apply_result res;
	struct dmsc_state before, after;
	struct dmsc_svc_digest d[8];
	int rw_fd;

	fixture_policy(&p, 4, 2, NULL);
	fixture_policy(&q, 6, 2, NULL);
	mapply(&p, false, NULL);
	cr_assert_eq(dmsc_state_read(&dp, &before), 0);
	rw_fd = fixture_meta_read_only(&dp);
	dmsc_policy_digests(&q, d);
	cr_assert_neq(dmsc_mirror_apply(&mir, &dp, &q, d, false, &res), 0);
	cr_assert(res.rolled_back);
	dmsc_apply_result_free(&res);
	fixture_meta_writable(&dp, rw_fd);
	cr_assert_eq(dmsc_state_read(&dp, &after), 0);
	cr_assert_eq(after.n_svcs, before.n_svcs);
	cr_assert_eq(memcmp(after.svcs, before.svcs, before.n_svcs * sizeof(*before.svcs)), 0);
	assert_maps_hold(&p);
	/* The ids the failed plan took were given back: q still fits. */
	cr_assert_eq(mapply(&q, false, NULL), 2 * 4);
	assert_maps_hold(&q);
	dmsc_state_free(&before);
	dmsc_state_free(&after);
	dmsc_policy_free(&p);
	dmsc_policy_free(&q);
}

Test(mirror, removed_backends_are_cleared_after_the_delay)
{
	struct dmsc_policy p = { 0 };
	struct dmsc_apply_result res;
	struct dmsc_backend be;
	__u32 gone;
	size_t changes;
	struct dmsc_svc_digest d;

	mir.drop_delay_ms = 60000;
	fixture_policy(&p, 1, 3, NULL);
	mapply(&p, false, NULL);
	gone = mir.svcs[0].be[2].id;
	p.services[0].n_backends = 2;
	dmsc_policy_digests(&p, &d);
	cr_assert_eq(dmsc_mirror_apply(&mir, &dp, &p, &d, false, &res), 0);
	cr_assert_eq(res.entries_written, 3, "service, meta, and the deferred drop");
	cr_assert_eq(res.entries_deferred, 1);
	dmsc_apply_result_free(&res);
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BACKENDS], &gone, &be), 0);
	cr_assert_neq(be.addr, 0, "still there while a connect() may hold the old table");
	cr_assert_gt(dmsc_mirror_next_drop_ms(&mir, dmsc_now_ms()), 1000);
	cr_assert_eq(dmsc_mirror_flush_drops(&mir, &dp, dmsc_now_ms(), false), 0, "not due yet");
	cr_assert_eq(dmsc_mirror_flush_drops(&mir, &dp, dmsc_now_ms(), true), 1);
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BACKENDS], &gone, &be), 0);
	cr_assert_eq(be.addr, 0, "cleared");
	cr_assert_eq(dmsc_mirror_next_drop_ms(&mir, dmsc_now_ms()), -1);
	p.services[0].n_backends = 3;
	cr_assert_eq(mapply(&p, false, &changes), 3);
	dmsc_policy_free(&p);
}

Test(mirror, over_capacity_is_refused_before_any_write)
{
	struct dmsc_policy p = { 0 };
	struct dmsc_apply_result res;
	struct dmsc_svc_digest *d;

	fixture_policy(&p, M_MAX_SERVICES, 1, NULL);
	d = calloc(p.n_services, sizeof(*d));
	dmsc_policy_digests(&p, d);
	cr_assert_eq(dmsc_mirror_apply(&mir, &dp, &p, d, false, &res), -ENOSPC);
	dmsc_apply_result_free(&res);
	cr_assert_eq(mir.n, 0);
	free(d);
	dmsc_policy_free(&p);
}

/* Every field of a policy service changes its fingerprint. */
Test(fingerprint, every_field_counts)
{
	struct dmsc_label lab = { "version", "v1" }, lab2 = { "version", "v2" };
	struct dmsc_policy_backend be = { .addr = 1, .port = 2, .weight = 3 };
	struct dmsc_route route = { 0 };
	char *allow[] = { "a.slice" };
	struct dmsc_policy_service s = { .name = "x", .vip = 1, .port = 80, .backends = &be,
					 .n_backends = 1 };
	uint64_t base = dmsc_policy_service_fp(&s);

#define CHANGED(stmt, undo)                                                            \
	do {                                                                           \
		stmt;                                                                  \
		cr_assert_neq(dmsc_policy_service_fp(&s), base, "unnoticed: " #stmt); \
		undo;                                                                  \
		cr_assert_eq(dmsc_policy_service_fp(&s), base);                       \
	} while (0)
	CHANGED(s.name = "y", s.name = "x");
	CHANGED(s.vip = 2, s.vip = 1);
	CHANGED(s.vip6[15] = 1, s.vip6[15] = 0);
	CHANGED(s.family = AF_INET6, s.family = 0);
	CHANGED(s.port = 81, s.port = 80);
	CHANGED(s.protocol = DMSC_POLICY_UDP, s.protocol = DMSC_POLICY_TCP);
	CHANGED(s.accelerate = DMSC_ACCEL_OFF, s.accelerate = DMSC_ACCEL_AUTO);
	CHANGED(s.affinity = DMSC_AFFINITY_CLIENT, s.affinity = DMSC_AFFINITY_NONE);
	CHANGED(s.affinity_name = "x-user", s.affinity_name = NULL);
	CHANGED(be.addr = 9, be.addr = 1);
	CHANGED(be.addr6[0] = 0x20, be.addr6[0] = 0);
	CHANGED(be.port = 9, be.port = 2);
	CHANGED(be.weight = 9, be.weight = 3);
	CHANGED((be.labels = &lab, be.n_labels = 1), (be.labels = NULL, be.n_labels = 0));
	be.labels = &lab;
	be.n_labels = 1;
	base = dmsc_policy_service_fp(&s);
	CHANGED(be.labels = &lab2, be.labels = &lab);
	CHANGED(s.n_backends = 0, s.n_backends = 1);
	CHANGED(s.has_rate_limit = true, s.has_rate_limit = false);
	s.has_rate_limit = true;
	base = dmsc_policy_service_fp(&s);
	CHANGED(s.rate_limit.has_burst = true, s.rate_limit.has_burst = false);
	CHANGED(s.rate_limit.connections_per_second = 5, s.rate_limit.connections_per_second = 0);
	CHANGED(s.rate_limit.burst = 5, s.rate_limit.burst = 0);
	CHANGED(s.rate_limit.bytes_per_second = 5, s.rate_limit.bytes_per_second = 0);
	CHANGED(s.rate_limit.has_bytes_burst = true, s.rate_limit.has_bytes_burst = false);
	CHANGED(s.rate_limit.bytes_burst = 5, s.rate_limit.bytes_burst = 0);
	CHANGED(s.rate_limit.requests_per_second = 5, s.rate_limit.requests_per_second = 0);
	CHANGED(s.has_allow_from = true, s.has_allow_from = false);
	CHANGED((s.allow_from = allow, s.n_allow_from = 1), (s.allow_from = NULL, s.n_allow_from = 0));
	CHANGED((s.routes = &route, s.n_routes = 1), (s.routes = NULL, s.n_routes = 0));
	s.routes = &route;
	s.n_routes = 1;
	base = dmsc_policy_service_fp(&s);
	CHANGED(route.match.path_prefix = "/a", route.match.path_prefix = NULL);
	CHANGED(route.match.path = "/a", route.match.path = NULL);
	CHANGED(route.match.method = "GET", route.match.method = NULL);
	CHANGED((route.match.headers = &lab, route.match.n_headers = 1),
		(route.match.headers = NULL, route.match.n_headers = 0));
	CHANGED((route.selector = &lab, route.n_selector = 1),
		(route.selector = NULL, route.n_selector = 0));
	CHANGED(route.has_timeout_ms = true, route.has_timeout_ms = false);
	CHANGED(route.timeout_ms = 5, route.timeout_ms = 0);
	CHANGED(route.has_retries = true, route.has_retries = false);
	CHANGED(route.retries = 5, route.retries = 0);
	CHANGED(s.has_health = true, s.has_health = false);
	CHANGED(s.health.has_active = true, s.health.has_active = false);
	CHANGED(s.health.has_passive = true, s.health.has_passive = false);
	s.health.has_active = true;
	s.health.has_passive = true;
	base = dmsc_policy_service_fp(&s);
	CHANGED(s.health.active.type = DMSC_PROBE_HTTP, s.health.active.type = DMSC_PROBE_TCP);
	CHANGED(s.health.active.path = "/h", s.health.active.path = NULL);
	CHANGED(s.health.active.expected_status = 204, s.health.active.expected_status = 0);
	CHANGED(s.health.active.interval_ms = 5, s.health.active.interval_ms = 0);
	CHANGED(s.health.active.timeout_ms = 5, s.health.active.timeout_ms = 0);
	CHANGED(s.health.active.unhealthy_threshold = 5, s.health.active.unhealthy_threshold = 0);
	CHANGED(s.health.active.healthy_threshold = 5, s.health.active.healthy_threshold = 0);
	CHANGED(s.health.passive.consecutive_failures = 5,
		s.health.passive.consecutive_failures = 0);
	CHANGED(s.health.passive.base_ejection_ms = 5, s.health.passive.base_ejection_ms = 0);
	CHANGED(s.health.passive.max_ejection_ms = 5, s.health.passive.max_ejection_ms = 0);
#undef CHANGED
}

/* Limits and allow rules (paths with no cgroup: unresolved) go through the
 * mirror as through dmsc_apply, survive a re-read, and leave with them. */
Test(mirror, limits_and_allow_rules)
{
	static char *paths[] = { "dmsc-test/no-such-cgroup-a", "dmsc-test/no-such-cgroup-b" };
	struct dmsc_policy p = { 0 };
	struct dmsc_allow_key k, next;
	size_t changes, j, rules = 0;
	long i;

	fixture_policy(&p, 3, 2, NULL);
	fixture_limits(&p.services[1], 50, 0, 1 << 20);
	p.services[2].has_allow_from = true;
	p.services[2].allow_from = paths;
	p.services[2].n_allow_from = 2;
	mapply(&p, false, &changes);
	cr_assert_eq(changes, 3);
	assert_maps_hold(&p);
	cr_assert_eq(dmsc_mirror_ext(&mir.svcs[1])->limits.conn_rate, 50);
	cr_assert_eq(dmsc_mirror_ext(&mir.svcs[2])->n_allow, 2);
	cr_assert_eq(mir.dig[2].fp, 0, "unresolved rules: the next apply looks again");
	cr_assert_eq(mapply(&p, false, &changes), 0, "nothing to write while still unresolved");
	/* Adopted: a mirror read from the maps has them too. */
	dmsc_mirror_free(&mir);
	cr_assert_eq(dmsc_mirror_load(&mir, &dp), 0);
	for (j = 0; j < mir.n; j++)
		rules += dmsc_mirror_ext(&mir.svcs[j])->n_allow;
	cr_assert_eq(rules, 2);
	cr_assert_eq(mapply(&p, false, &changes), 0);
	/* The limit changes: the limits element, and nothing else. */
	p.services[1].rate_limit.connections_per_second = 70;
	cr_assert_eq(mapply(&p, false, &changes), 1);
	assert_maps_hold(&p);
	/* Limits and rules removed from the policy go from the maps. */
	p.services[2].allow_from = NULL;
	p.services[2].n_allow_from = 0;
	p.services[2].has_allow_from = false;
	p.services[1].has_rate_limit = false;
	cr_assert_gt(mapply(&p, false, &changes), 0);
	assert_maps_hold(&p);
	for (i = 0; bpf_map_get_next_key(dp.fd[DMSC_M_ALLOW], i ? &k : NULL, &next) == 0; i++)
		k = next;
	cr_assert_eq(i, 0, "no allow rule left");
	dmsc_policy_free(&p);
}

/* IPv6 services through the mirror: the same writes as dmsc_apply, found
 * again by their full VIP (two VIPs whose words fold alike stay apart). */
Test(mirror, ipv6_services)
{
	struct dmsc_policy p = { 0 };
	size_t changes;

	fixture_policy(&p, 6, 2, NULL);
	fixture_ipv6(&p, 1, 0x61);
	fixture_ipv6(&p, 2, 0x62);
	/* Service 4's VIP: the words of service 2's in another order. */
	fixture_ipv6(&p, 4, 0x62);
	memcpy(p.services[4].vip6, p.services[2].vip6, 16);
	memcpy(p.services[4].vip6 + 4, p.services[2].vip6 + 12, 4);
	memcpy(p.services[4].vip6 + 12, p.services[2].vip6 + 4, 4);
	mapply_holds(&p, 6 * 4, 6, "the first apply");
	cr_assert_eq(mapply(&p, false, &changes), 0);
	p.services[4].backends[0].weight = 3;
	mapply_holds(&p, 2, ANY_CHANGES, "one weight of an IPv6 service");
	/* Adopted by a restarted writer: nothing to write. */
	dmsc_mirror_free(&mir);
	memset(&mir, 0, sizeof(mir));
	cr_assert_eq(mapply(&p, false, &changes), 0);
	p.n_services = 3; /* services 3..5 go */
	cr_assert_eq(mapply(&p, false, &changes), 3 * 4);
	p.n_services = 6;
	dmsc_policy_free(&p);
}

/* The number of entries of the guard's index map m. */
static size_t index_entries(enum dmsc_map_id m)
{
	unsigned char key[sizeof(struct dmsc_svc6_key)], next[sizeof(key)];
	size_t n = 0;
	void *prev = NULL;

	while (bpf_map_get_next_key(dp.fd[m], prev, next) == 0) {
		memcpy(key, next, sizeof(key));
		prev = key;
		n++;
	}
	return n;
}

/* docs/design.md decision 74: entries of dmsc_be_mtls and dmsc_be_mtls6
 * that no guarded backend needs (an interrupted apply's), or that name no
 * guarded backend at their address:port, are put right by the next writer
 * that adopts the maps (dmscd's mirror) and by dmsc_apply; the ones the
 * guarded backends need stay. */
Test(mirror, stale_guard_index_entries_are_swept)
{
	struct dmsc_policy p = { 0 };
	struct dmsc_apply_result res;
	struct dmsc_svc_key k4 = { 0 }, stale4 = { 0 };
	struct dmsc_svc6_key k6 = { 0 }, stale6 = { 0 };
	__u32 id4 = 0, id6 = 0, got = 0, bogus;
	size_t i, b;

	fixture_policy(&p, 2, 2, NULL);
	fixture_ipv6(&p, 1, 0x61);
	for (i = 0; i < 2; i++) {
		p.services[i].mtls = DMSC_MTLS_REQUIRED;
		for (b = 0; b < 2; b++)
			p.services[i].backends[b].host = strdup("node-b");
	}
	dmsc_apply_set_host("node-b");
	mapply(&p, false, NULL);
	cr_assert_eq(index_entries(DMSC_M_BE_MTLS), 2);
	cr_assert_eq(index_entries(DMSC_M_BE_MTLS6), 2);
	k4.vip = p.services[0].backends[0].addr;
	k4.port = htons(8080);
	k4.proto = DMSC_PROTO_TCP;
	memcpy(k6.vip, p.services[1].backends[0].addr6, sizeof(k6.vip));
	k6.port = htons(8080);
	k6.proto = DMSC_PROTO_TCP;
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BE_MTLS], &k4, &id4), 0);
	cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BE_MTLS6], &k6, &id6), 0);
	/* What a killed apply leaves: an address no backend has, in either
	 * map, and a live backend's entry naming another backend (its guard
	 * off, since the kernel compares the backend's address). */
	stale4 = k4;
	stale4.vip = htonl(0xc6126301u);
	stale6 = k6;
	stale6.vip[3] = htonl(0x99);
	bogus = id6;
	for (i = 0; i < 2; i++) {
		cr_assert_eq(bpf_map_update_elem(dp.fd[DMSC_M_BE_MTLS], &stale4, &id4, BPF_ANY), 0);
		cr_assert_eq(bpf_map_update_elem(dp.fd[DMSC_M_BE_MTLS6], &stale6, &id6, BPF_ANY), 0);
		cr_assert_eq(bpf_map_update_elem(dp.fd[DMSC_M_BE_MTLS], &k4, &bogus, BPF_ANY), 0);
		if (i == 0) {
			/* a new dmscd adopts the maps: its first apply sweeps */
			dmsc_mirror_free(&mir);
			memset(&mir, 0, sizeof(mir));
			cr_assert_eq(dmsc_mirror_load(&mir, &dp), 0);
			cr_assert(mir.orphans, "the load saw the stale entries");
			cr_assert_eq(mapply(&p, false, NULL), 3, "two deleted, one pointed back");
		} else {
			/* dmsc_apply (dmscctl) reads everything at each apply */
			cr_assert_eq(dmsc_apply(&dp, &p, false, &res), 0);
			cr_assert_eq(res.repaired, 3);
			dmsc_apply_result_free(&res);
		}
		cr_assert_neq(bpf_map_lookup_elem(dp.fd[DMSC_M_BE_MTLS], &stale4, &got), 0,
			      "pass %zu: the stale IPv4 entry is gone", i);
		cr_assert_neq(bpf_map_lookup_elem(dp.fd[DMSC_M_BE_MTLS6], &stale6, &got), 0,
			      "pass %zu: the stale IPv6 entry is gone", i);
		cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BE_MTLS], &k4, &got), 0);
		cr_assert_eq(got, id4, "pass %zu: the live entry names its backend again", i);
		cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BE_MTLS6], &k6, &got), 0);
		cr_assert_eq(got, id6);
		cr_assert_eq(index_entries(DMSC_M_BE_MTLS), 2, "pass %zu", i);
		cr_assert_eq(index_entries(DMSC_M_BE_MTLS6), 2, "pass %zu", i);
	}
	/* nothing stale: the mirror's next apply writes nothing */
	cr_assert_eq(mapply(&p, false, NULL), 0);
	dmsc_apply_set_host(NULL);
	dmsc_policy_free(&p);
}

/* affinity "client" (docs/design.md decision 97): its table is laid out
 * by address, and the mirror lays out what the maps hold, IPv4 and IPv6,
 * before and after a weight change and when adopted afresh. */
Test(mirror, affinity_tables)
{
	struct dmsc_policy p = {0};
	struct dmsc_state st;
	size_t changes, i;

	fixture_policy(&p, 6, 3, NULL);
	fixture_ipv6(&p, 4, 0x64);
	p.services[1].affinity = DMSC_AFFINITY_CLIENT;
	p.services[4].affinity = DMSC_AFFINITY_CLIENT;
	mapply_holds(&p, 6 * 5, 6, "the first apply");
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	for (i = 0; i < st.n_svcs; i++)
		cr_expect_eq(!!(st.svcs[i].svc.flags & DMSC_SVC_F_AFFINITY),
			     !strcmp(st.svcs[i].meta.name, p.services[1].name) ||
				 !strcmp(st.svcs[i].meta.name, p.services[4].name),
			     "service %s", st.svcs[i].meta.name);
	dmsc_state_free(&st);
	p.services[1].backends[0].weight = 7;
	p.services[4].backends[2].weight = 5;
	mapply_holds(&p, 2 * 2, 2, "a weight of each");
	dmsc_mirror_free(&mir);
	memset(&mir, 0, sizeof(mir));
	cr_assert_eq(mapply(&p, false, &changes), 0, "adopted: nothing to write");
	p.services[1].affinity = DMSC_AFFINITY_NONE;
	mapply_holds(&p, 1, 1, "affinity off: the service element only");
	dmsc_policy_free(&p);
}
