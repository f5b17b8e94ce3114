// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Applies killed half-way (issue 10, item 10), against the real maps of the
 * real BPF object (loaded, not attached). A child process runs the apply
 * from policy A to policy B with $DMSC_TEST_KILL_AFTER_WRITES=N, so that it
 * SIGKILLs itself after its Nth map write, for every N until the apply
 * completes. After each kill the maps are checked against A and B: no
 * service grants access (allow rules, no allow list, limits, backend index
 * entries, backends) beyond the union of what A and B give the service of
 * that key. Then the next apply (dmsc_apply, or dmscd's mirror apply, in
 * turn) of C, which is B plus new services that take the ids B freed, must
 * leave exactly C: every rule, limit and index entry owned by the service
 * that C gives it, nothing under an id without a service. Needs root;
 * without it the tests are reported as skipped, not passed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <criterion/criterion.h>

#include "fixture.h"
#include "apply_mirror.h"
#include "apply.h"
#include "apply_steps.h" /* dmsc_policy_svc_key */

#define C_MAX_SERVICES 64
#define C_MAX_BACKENDS 512
#define KILL_POINTS_MAX 400

static struct dmsc_sock *skel;
static struct dmsc_datapath dp;

static void setup(void)
{
	fixture_load(&skel, &dp, C_MAX_SERVICES, C_MAX_BACKENDS);
	fixture_install_clear(&dp);
}

static void teardown(void)
{
	dmsc_sock__destroy(skel);
	skel = NULL;
}

TestSuite(crash, .init = setup, .fini = teardown, .timeout = 120);

/* ---- policies ------------------------------------------------------- */

static void set_allow(struct dmsc_policy_service *s, const char *a, const char *b)
{
	s->has_allow_from = true;
	s->n_allow_from = b ? 2 : a ? 1 : 0;
	s->allow_from = calloc(3, sizeof(char *));
	cr_assert_not_null(s->allow_from);
	if (a)
		s->allow_from[0] = strdup(a);
	if (b)
		s->allow_from[1] = strdup(b);
}

/* Paths of cgroups that do not exist: the rules stay unresolved, which is
 * access all the same (to nobody yet), and needs no cgroup made. */
#define CG(x) "dmsc-crash-test-none/" x

/* A: s0 limited, byte-limited and closed to all but a/x, then open ones,
 * closed ones and fillers. B removes s0 and s6, swaps, narrows and
 * widens allow lists, adds s7 (closed, limited) and moves s5's backends. */
static void policy_a(struct dmsc_policy *p)
{
	fixture_policy(p, 12, 2, NULL);
	set_allow(&p->services[0], CG("a-x"), NULL);
	fixture_limits(&p->services[0], 1000, 0, 10000000);
	set_allow(&p->services[2], CG("a-z"), NULL);
	set_allow(&p->services[3], CG("a-q"), CG("a-r"));
	fixture_limits(&p->services[5], 0, 0, 5000000);
	set_allow(&p->services[6], CG("a-six"), NULL);
	fixture_limits(&p->services[6], 50, 0, 0);
}

static void policy_b(struct dmsc_policy *p, size_t extra)
{
	struct dmsc_policy_service *s;
	size_t i;

	fixture_policy(p, 12 + extra, 2, NULL);
	s = p->services;
	/* s0 and s6 go: their slots become services on VIPs of their own. */
	free(s[0].name);
	s[0].name = strdup("s7");
	s[0].vip = htonl(0xc6130100u);
	set_allow(&s[0], CG("b-n"), NULL);
	fixture_limits(&s[0], 77, 0, 0);
	free(s[6].name);
	s[6].name = strdup("s8");
	s[6].vip = htonl(0xc6130101u);
	set_allow(&s[1], CG("b-y"), NULL);
	set_allow(&s[2], CG("b-w"), NULL);
	/* s3: allow list removed (B opens it) */
	fixture_limits(&s[5], 0, 0, 6000000);
	s[5].backends[0].addr = htonl(0xc6120f00u);
	fixture_limits(&s[9], 10, 0, 0);
	set_allow(&s[10], NULL, NULL); /* closed to everyone */
	/* C: new open services beyond B, to take the ids B freed */
	for (i = 12; i < 12 + extra; i++) {
		char name[32];

		snprintf(name, sizeof(name), "n%zu", i);
		free(s[i].name);
		s[i].name = strdup(name);
		s[i].vip = htonl(0xc6130200u + (__u32)i);
	}
}

/* ---- what the maps grant ---------------------------------------------- */

static const struct dmsc_policy_service *by_key(const struct dmsc_policy *p,
						const struct dmsc_svc_key *k)
{
	struct dmsc_svc_key pk;
	size_t i;

	for (i = 0; p && i < p->n_services; i++) {
		dmsc_policy_svc_key(&p->services[i], &pk);
		if (!memcmp(&pk, k, sizeof(pk)))
			return &p->services[i];
	}
	return NULL;
}

static bool lists(const struct dmsc_policy_service *w, const char *path)
{
	size_t i;

	for (i = 0; w && w->has_allow_from && i < w->n_allow_from; i++)
		if (!strcmp(w->allow_from[i], path))
			return true;
	return false;
}

static bool open_to_all(const struct dmsc_policy_service *w)
{
	return w && !w->has_allow_from;
}

static __u64 conn_rate(const struct dmsc_policy_service *w)
{
	return w && w->has_rate_limit && w->rate_limit.has_connections_per_second
		       ? w->rate_limit.connections_per_second
		       : 0;
}

static __u64 byte_rate(const struct dmsc_policy_service *w)
{
	return w && w->has_rate_limit && w->rate_limit.has_bytes_per_second
		       ? w->rate_limit.bytes_per_second
		       : 0;
}

static bool has_backend(const struct dmsc_policy_service *w, __u32 addr, __u16 port_be)
{
	size_t i;

	for (i = 0; w && i < w->n_backends; i++)
		if (w->backends[i].addr == addr && htons(w->backends[i].port) == port_be)
			return true;
	return false;
}

static const struct dmsc_state_svc *live_by_id(const struct dmsc_state *st, __u32 id)
{
	size_t i;

	for (i = 0; i < st->n_svcs; i++)
		if (st->svcs[i].svc.id == id)
			return &st->svcs[i];
	return NULL;
}

/*
 * After a kill: every service the maps hold is one of A or B (by key), and
 * grants at most what A and B together grant it. `when` names the kill
 * point in the messages.
 */
static void assert_within(const struct dmsc_policy *a, const struct dmsc_policy *b,
			  const char *when)
{
	struct dmsc_state st;
	size_t i, j;

	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	for (i = 0; i < st.n_svcs; i++) {
		const struct dmsc_state_svc *s = &st.svcs[i];
		const struct dmsc_policy_service *wa = by_key(a, &s->key), *wb = by_key(b, &s->key);
		__u64 cr = s->limits.conn_rate, br = s->limits.byte_rate;

		cr_assert(wa || wb, "%s: a service in neither policy", when);
		if (!(s->svc.flags & DMSC_SVC_F_ALLOW_LIST))
			cr_assert(open_to_all(wa) || open_to_all(wb),
				  "%s: %s open to all, in neither policy", when, s->meta.name);
		/* Limits that both policies set are in force (flag and rate
		 * from one of them); a rate in the map is one of theirs. */
		if (conn_rate(wa) && conn_rate(wb))
			cr_assert(s->svc.flags & DMSC_SVC_F_CONN_LIMIT, "%s: %s unlimited", when,
				  s->meta.name);
		cr_assert(cr == 0 || cr == conn_rate(wa) || cr == conn_rate(wb),
			  "%s: %s holds connection rate %llu (A %llu, B %llu)", when, s->meta.name,
			  cr, conn_rate(wa), conn_rate(wb));
		if (s->svc.flags & DMSC_SVC_F_CONN_LIMIT)
			cr_assert(cr != 0, "%s: %s flagged limited, no rate", when, s->meta.name);
		cr_assert(br == 0 || br == byte_rate(wa) || br == byte_rate(wb),
			  "%s: %s holds byte rate %llu", when, s->meta.name, br);
		for (j = 0; j < DMSC_SLOTS; j++) {
			struct dmsc_backend be;
			__u32 id = s->svc.slot[j];

			if (!id)
				continue;
			cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_BACKENDS], &id, &be), 0);
			cr_assert(has_backend(wa, be.addr, be.port) || has_backend(wb, be.addr, be.port),
				  "%s: %s sends to a backend of neither policy", when, s->meta.name);
		}
	}
	/* Rules and index entries of a service are its own: a rule under the
	 * id of a live service names a cgroup one of A and B lists for it. */
	for (i = 0; i < st.n_allow; i++) {
		const struct dmsc_state_svc *s = live_by_id(&st, st.allow[i].key.svc_id);

		if (!s)
			continue; /* nobody's: harmless until repaired */
		cr_assert(lists(by_key(a, &s->key), st.allow[i].rule.path) ||
				  lists(by_key(b, &s->key), st.allow[i].rule.path),
			  "%s: %s holds a rule for %s that neither policy gives it", when,
			  s->meta.name, st.allow[i].rule.path);
	}
	for (i = 0; i < st.n_be_index; i++) {
		const struct dmsc_state_svc *s = live_by_id(&st, st.be_index[i].svc_id);

		if (!s)
			continue;
		cr_assert(has_backend(by_key(a, &s->key), st.be_index[i].key.vip,
				      st.be_index[i].key.port) ||
				  has_backend(by_key(b, &s->key), st.be_index[i].key.vip,
					      st.be_index[i].key.port),
			  "%s: %s polices a backend of neither policy", when, s->meta.name);
	}
	dmsc_state_free(&st);
}

/* Exactly p: each service's flags, limits, rules and index entries are
 * what p gives it, and no id without a service holds anything. */
static void assert_exactly(const struct dmsc_policy *p, const char *when)
{
	struct dmsc_state st;
	struct dmsc_apply_result res;
	struct dmsc_svc_meta meta, zero_meta;
	struct dmsc_limits lim;
	size_t i, n_rules = 0, n_index = 0;
	__u32 id;

	cr_assert_eq(dmsc_apply(&dp, p, true, &res), 0);
	cr_assert_eq(res.entries_written, 0, "%s: the maps differ from the policy (%zu writes)",
		     when, res.entries_written);
	dmsc_apply_result_free(&res);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert_eq(st.n_svcs, p->n_services, "%s", when);
	for (i = 0; i < st.n_svcs; i++) {
		const struct dmsc_state_svc *s = &st.svcs[i];
		const struct dmsc_policy_service *w = by_key(p, &s->key);

		cr_assert_not_null(w, "%s", when);
		cr_assert_eq(!!(s->svc.flags & DMSC_SVC_F_ALLOW_LIST), w->has_allow_from, "%s: %s",
			     when, w->name);
		cr_assert_eq(s->limits.conn_rate, conn_rate(w), "%s: %s", when, w->name);
		cr_assert_eq(s->limits.byte_rate, byte_rate(w), "%s: %s", when, w->name);
		n_rules += w->has_allow_from ? w->n_allow_from : 0;
		n_index += byte_rate(w) ? w->n_backends : 0;
	}
	for (i = 0; i < st.n_allow; i++) {
		const struct dmsc_state_svc *s = live_by_id(&st, st.allow[i].key.svc_id);

		cr_assert_not_null(s, "%s: a rule for %s under id %u, which no service holds",
				   when, st.allow[i].rule.path, st.allow[i].key.svc_id);
		cr_assert(lists(by_key(p, &s->key), st.allow[i].rule.path),
			  "%s: %s holds a rule for %s it does not own", when, s->meta.name,
			  st.allow[i].rule.path);
	}
	cr_assert_eq(st.n_allow, n_rules, "%s", when);
	for (i = 0; i < st.n_be_index; i++) {
		const struct dmsc_state_svc *s = live_by_id(&st, st.be_index[i].svc_id);

		cr_assert_not_null(s, "%s: a backend index entry of id %u, which no service holds",
				   when, st.be_index[i].svc_id);
		cr_assert(byte_rate(by_key(p, &s->key)), "%s: %s is not byte-limited", when,
			  s->meta.name);
	}
	if (st.n_be_index != n_index)
		for (i = 0; i < st.n_be_index; i++)
			fprintf(stderr, "index %08x:%u -> %u\n", ntohl(st.be_index[i].key.vip),
				ntohs(st.be_index[i].key.port), st.be_index[i].svc_id);
	cr_assert_eq(st.n_be_index, n_index, "%s: %zu backend index entries, want %zu", when,
		     st.n_be_index, n_index);
	memset(&zero_meta, 0, sizeof(zero_meta));
	for (id = 1; id < C_MAX_SERVICES; id++) {
		if (live_by_id(&st, id))
			continue;
		cr_assert_eq(bpf_map_lookup_elem(dp.fd[DMSC_M_SVC_META], &id, &meta), 0);
		cr_assert_eq(memcmp(&meta, &zero_meta, sizeof(meta)), 0,
			     "%s: id %u has no service and a meta (%s)", when, id, meta.name);
		cr_assert_eq(bpf_map_lookup_elem_flags(dp.fd[DMSC_M_LIMITS], &id, &lim, BPF_F_LOCK),
			     0);
		cr_assert(!lim.conn_rate && !lim.byte_rate, "%s: id %u has no service and limits",
			  when, id);
	}
	dmsc_state_free(&st);
}

static bool install_marked(void)
{
	bool interrupted = true;

	cr_assert_eq(dmsc_datapath_interrupted(&dp, &interrupted), 0);
	return interrupted;
}

/* Runs the apply of p in a child that kills itself after `after` writes.
 * Returns true when it was killed, false when it completed. */
static bool apply_killed_after(const struct dmsc_policy *p, unsigned long after, bool mirror)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct dmsc_apply_result res;
		char n[32];
		int err;

		snprintf(n, sizeof(n), "%lu", after);
		setenv("DMSC_TEST_KILL_AFTER_WRITES", n, 1);
		if (mirror) {
			struct dmsc_mirror m = { 0 };
			struct dmsc_svc_digest *d = calloc(p->n_services + 1, sizeof(*d));

			dmsc_policy_digests(p, d);
			err = dmsc_mirror_apply(&m, &dp, p, d, false, &res);
		} else {
			err = dmsc_apply(&dp, p, false, &res);
		}
		_exit(err ? 2 : 0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status)) {
		cr_assert_eq(WTERMSIG(status), SIGKILL);
		return true;
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the apply failed");
	return false;
}

static void kill_at_every_write(bool mirror_writer)
{
	struct dmsc_policy a = { 0 }, b = { 0 }, c = { 0 };
	struct dmsc_mirror m = { 0 };
	struct dmsc_apply_result res;
	struct dmsc_svc_digest *dc;
	unsigned long n;
	char when[96];
	size_t kills = 0;

	policy_a(&a);
	policy_b(&b, 0);
	policy_b(&c, 3);
	dc = calloc(c.n_services, sizeof(*dc));
	cr_assert_not_null(dc);
	dmsc_policy_digests(&c, dc);
	for (n = 1; n <= KILL_POINTS_MAX; n++) {
		/* From a clean A (repairing what the last round left). */
		cr_assert_eq(dmsc_apply(&dp, &a, false, &res), 0);
		dmsc_apply_result_free(&res);
		assert_exactly(&a, "A");
		cr_assert_not(install_marked());
		/* dmscd's mirror, in step with A before the kill. */
		cr_assert_eq(dmsc_mirror_load(&m, &dp), 0);
		if (!apply_killed_after(&b, n, mirror_writer))
			break;
		kills++;
		snprintf(when, sizeof(when), "killed after %lu writes of A -> B", n);
		cr_assert(install_marked(), "%s: the install record says so", when);
		assert_within(&a, &b, when);
		/* The next apply: C takes the ids B freed. In turn by dmscctl's
		 * apply and by the mirror that was in step before the kill. */
		snprintf(when, sizeof(when), "C after a kill at write %lu (%s)", n,
			 n % 2 ? "mirror" : "dmsc_apply");
		if (n % 2)
			cr_assert_eq(dmsc_mirror_apply(&m, &dp, &c, dc, false, &res), 0, "%s", when);
		else
			cr_assert_eq(dmsc_apply(&dp, &c, false, &res), 0, "%s", when);
		dmsc_apply_result_free(&res);
		cr_assert_not(install_marked(), "%s: the mark is cleared", when);
		assert_exactly(&c, when);
		/* The mirror that repaired (or that saw dmsc_apply repair) is in
		 * step: applying C again writes nothing. */
		cr_assert_eq(dmsc_mirror_apply(&m, &dp, &c, dc, false, &res), 0);
		cr_assert_eq(res.entries_written, 0, "%s: the mirror is in step", when);
		dmsc_apply_result_free(&res);
		dmsc_mirror_free(&m);
	}
	cr_assert_lt(n, KILL_POINTS_MAX, "the apply completes within %d writes", KILL_POINTS_MAX);
	cr_assert_gt(kills, 20, "killed at %zu points", kills);
	/* Completed: exactly B, the mark cleared. */
	assert_exactly(&b, "the apply that ran to its end");
	cr_assert_not(install_marked());
	dmsc_mirror_free(&m);
	free(dc);
	dmsc_policy_free(&a);
	dmsc_policy_free(&b);
	dmsc_policy_free(&c);
}

Test(crash, dmsc_apply_killed_at_every_write)
{
	kill_at_every_write(false);
}

Test(crash, mirror_apply_killed_at_every_write)
{
	kill_at_every_write(true);
}

/* Killed right after marking the install record, before any other write:
 * the next apply, with nothing else to write, still clears the mark (and a
 * mirror in step before the kill notices the other writer). */
Test(crash, killed_after_the_mark_alone)
{
	struct dmsc_policy a = { 0 };
	struct dmsc_mirror m = { 0 };
	struct dmsc_apply_result res;
	struct dmsc_svc_digest *d;
	__u64 gen0, gen1;

	policy_a(&a);
	d = calloc(a.n_services, sizeof(*d));
	cr_assert_not_null(d);
	dmsc_policy_digests(&a, d);
	cr_assert_eq(dmsc_mirror_apply(&m, &dp, &a, d, false, &res), 0);
	dmsc_apply_result_free(&res);
	cr_assert_eq(dmsc_datapath_generation(&dp, &gen0), 0);
	cr_assert_eq(m.generation, gen0, "the mirror is in step after its own apply");
	cr_assert(apply_killed_after(&(struct dmsc_policy){ 0 }, 1, false));
	cr_assert(install_marked());
	cr_assert_eq(dmsc_datapath_generation(&dp, &gen1), 0);
	cr_assert_neq(gen1, gen0, "the generation moved at the first write");
	cr_assert_eq(dmsc_mirror_apply(&m, &dp, &a, d, false, &res), 0);
	dmsc_apply_result_free(&res);
	cr_assert_not(install_marked(), "cleared by an apply that had nothing else to write");
	assert_exactly(&a, "after the mark alone");
	dmsc_mirror_free(&m);
	free(d);
	dmsc_policy_free(&a);
}

/* The scenario of the issue: a removal killed after the service entry went
 * and before its rules and limits did; the next service takes the lowest
 * free id, which is the removed one's. It must not inherit them. */
Test(crash, new_service_does_not_inherit_an_orphaned_id)
{
	struct dmsc_policy a = { 0 }, none = { 0 }, c = { 0 };
	struct dmsc_apply_result res;
	struct dmsc_state st;
	__u32 id;

	fixture_policy(&a, 1, 1, NULL);
	set_allow(&a.services[0], CG("only-this"), NULL);
	fixture_limits(&a.services[0], 5, 0, 1000000);
	cr_assert_eq(dmsc_apply(&dp, &a, false, &res), 0);
	dmsc_apply_result_free(&res);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	id = st.svcs[0].svc.id;
	dmsc_state_free(&st);
	/* Killed right after its first write past the mark: the service
	 * element is gone, everything else of the id is left. */
	cr_assert(apply_killed_after(&none, 2, false));
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert_eq(st.n_svcs, 0);
	cr_assert_gt(st.n_allow, 0, "the orphaned rule is there");
	dmsc_state_free(&st);
	/* An open, unlimited service on another VIP takes the lowest id. */
	fixture_policy(&c, 1, 1, NULL);
	c.services[0].vip = htonl(0xc6130300u);
	cr_assert_eq(dmsc_apply(&dp, &c, false, &res), 0);
	cr_assert_gt(res.repaired, 0);
	dmsc_apply_result_free(&res);
	cr_assert_eq(dmsc_state_read(&dp, &st), 0);
	cr_assert_eq(st.svcs[0].svc.id, id, "the same id, reused");
	cr_assert_eq(st.n_allow, 0, "no rule inherited");
	cr_assert_eq(st.n_be_index, 0, "no backend index entry inherited");
	cr_assert_eq(st.svcs[0].limits.conn_rate, 0, "no limit inherited");
	cr_assert_eq(st.svcs[0].limits.byte_rate, 0);
	dmsc_state_free(&st);
	assert_exactly(&c, "after the repair");
	dmsc_policy_free(&a);
	dmsc_policy_free(&none);
	dmsc_policy_free(&c);
}
