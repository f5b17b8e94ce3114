// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Backend health: the ejection arithmetic the kernel runs
 * (include/dmsc/health.h) and the weights every apply lays a slot table out
 * from (user/datapath/health.c); dmscd's verdicts in their own map
 * (docs/design.md decision 53) and the migration that split them out.
 */
#include <criterion/criterion.h>

#include "dmsc/health.h"
#include "dmsc/slots.h"
#include "health.h"
#include "migrate.h"

#define MS DMSC_NS_PER_MS

static const struct dmsc_svc_health cfg = {
    .eject_after = 3, .base_ejection_ms = 1000, .max_ejection_ms = 2500};

Test(health_kernel, ejects_after_consecutive_failures)
{
	struct dmsc_be_health h = {0};
	__u64 now = 1000 * MS;

	cr_expect_eq(dmsc_health_failed(&h, &cfg, now), 0);
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now), 0);
	cr_expect_not(dmsc_health_ejected(&h, 0, now));
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now), 1);
	cr_expect(dmsc_health_ejected(&h, 0, now));
	cr_expect(dmsc_health_ejected(&h, 0, now + 999 * MS));
	cr_expect_not(dmsc_health_ejected(&h, 0, now + 1000 * MS));
	cr_expect_eq(h.failures, 3);
	cr_expect_eq(h.ejections, 1);
	cr_expect_eq(h.consecutive, 0, "a new run of failures starts after an ejection");
}

Test(health_kernel, max_ejection_percent_caps_all_but_the_first)
{
	struct dmsc_svc_health c = cfg;

	c.max_eject_pct = 0; /* an older build's element: no cap */
	cr_expect(dmsc_health_may_eject(&c, 9, 10));
	c.max_eject_pct = 100;
	cr_expect(dmsc_health_may_eject(&c, 9, 10));
	c.max_eject_pct = 50;
	cr_expect(dmsc_health_may_eject(&c, 0, 2), "the first one always");
	cr_expect_not(dmsc_health_may_eject(&c, 1, 2));
	cr_expect(dmsc_health_may_eject(&c, 1, 4));
	cr_expect_not(dmsc_health_may_eject(&c, 2, 4));
	c.max_eject_pct = 10;
	cr_expect(dmsc_health_may_eject(&c, 0, 3), "the first one, even above 10 %");
	cr_expect_not(dmsc_health_may_eject(&c, 1, 3));
}

Test(health_kernel, a_run_without_room_stays_one_short)
{
	struct dmsc_be_health h = {0};
	__u64 now = 1000 * MS;

	cr_expect_eq(dmsc_health_failed_room(&h, &cfg, now, 0), 0);
	cr_expect_eq(dmsc_health_failed_room(&h, &cfg, now, 0), 0);
	cr_expect_not(dmsc_health_would_eject(&h, 0, &(struct dmsc_svc_health){.eject_after = 9}, now));
	cr_expect(dmsc_health_would_eject(&h, 0, &cfg, now));
	cr_expect_eq(dmsc_health_failed_room(&h, &cfg, now, 0), 0, "no room: not ejected");
	cr_expect_not(dmsc_health_ejected(&h, 0, now));
	cr_expect_eq(h.consecutive, 2, "one short of the run");
	cr_expect_eq(dmsc_health_failed_room(&h, &cfg, now, 1), 1, "room again: the next ejects");
	cr_expect(dmsc_health_ejected(&h, 0, now));
}

Test(health_kernel, late_failures_do_not_count_toward_the_next)
{
	struct dmsc_be_health h = {0};
	__u64 now = 1000 * MS;

	dmsc_health_failed(&h, &cfg, now);
	dmsc_health_failed(&h, &cfg, now);
	dmsc_health_failed(&h, &cfg, now);
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now + MS), 0);
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now + 2 * MS), 0);
	cr_expect_eq(h.ejected_until_ns, now + 1000 * MS, "not extended by late failures");
	cr_expect_eq(h.failures, 5);
	/* After the ejection: a full run again. */
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now + 1001 * MS), 0);
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now + 1001 * MS), 0);
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now + 1001 * MS), 1);
}

Test(health_kernel, back_off_grows_to_the_max_and_starts_over)
{
	struct dmsc_be_health h = {0};
	__u64 now = 1000 * MS;
	int i;

	for (i = 0; i < 3; i++)
		dmsc_health_failed(&h, &cfg, now);
	cr_expect_eq(h.ejected_until_ns - now, 1000 * MS);
	now = h.ejected_until_ns;
	for (i = 0; i < 3; i++)
		dmsc_health_failed(&h, &cfg, now);
	cr_expect_eq(h.ejections, 2);
	cr_expect_eq(h.ejected_until_ns - now, 2000 * MS);
	now = h.ejected_until_ns;
	for (i = 0; i < 3; i++)
		dmsc_health_failed(&h, &cfg, now);
	cr_expect_eq(h.ejected_until_ns - now, 2500 * MS, "capped at max_ejection_ms");
	/* Healthy for longer than max_ejection_ms: the next one is the first. */
	now = h.ejected_until_ns + 2501 * MS;
	for (i = 0; i < 3; i++)
		dmsc_health_failed(&h, &cfg, now);
	cr_expect_eq(h.ejections, 1);
	cr_expect_eq(h.ejected_until_ns - now, 1000 * MS);
}

Test(health_kernel, no_passive_never_ejects)
{
	struct dmsc_svc_health off = {0};
	struct dmsc_be_health h = {0};
	int i;

	for (i = 0; i < 100; i++)
		cr_expect_eq(dmsc_health_failed(&h, &off, 5 * MS), 0);
	cr_expect_eq(h.failures, 100);
	cr_expect_eq(h.ejected_until_ns, 0);
}

Test(health_weights, out_backends_get_no_slot)
{
	__u32 w[3] = {50, 30, 20}, eff[3], counts[3];
	unsigned char out[3] = {0, 1, 0};

	cr_expect_not(dmsc_health_weights(w, out, 3, eff));
	cr_expect_eq(eff[0], 50);
	cr_expect_eq(eff[1], 0);
	cr_expect_eq(eff[2], 20);
	dmsc_slot_counts(eff, 3, counts);
	cr_expect_eq(counts[1], 0);
	cr_expect_eq(counts[0] + counts[2], DMSC_SLOTS);
}

Test(health_weights, all_out_is_panic_and_keeps_all)
{
	__u32 w[3] = {50, 0, 20}, eff[3];
	unsigned char out[3] = {1, 0, 1};

	cr_expect(dmsc_health_weights(w, out, 3, eff), "the weight-0 backend cannot carry it");
	cr_expect_eq(eff[0], 50);
	cr_expect_eq(eff[1], 0);
	cr_expect_eq(eff[2], 20);
}

Test(health_weights, all_weights_zero_is_not_panic)
{
	__u32 w[2] = {0, 0}, eff[2];
	unsigned char out[2] = {1, 1};

	cr_expect_not(dmsc_health_weights(w, out, 2, eff));
}

/* dmscd ends a restarted backend's ejection in its own map (the verdict's
 * ejection_ended): every reader sees it over at once; the counter's writer
 * ends it in its element at its next failure, which then starts a run. */
Test(health_verdict, an_ejection_dmscd_ended_is_over_for_every_reader)
{
	struct dmsc_be_health h = {0};
	__u64 now = 1000 * MS, at;

	for (int i = 0; i < 3; i++)
		dmsc_health_failed(&h, &cfg, now);
	at = h.ejected_at_ns;
	cr_assert(dmsc_health_ejected(&h, 0, now + MS));
	cr_expect_not(dmsc_health_ejected(&h, at, now + MS), "ended by dmscd");
	cr_expect(dmsc_health_ejected(&h, at + 1, now + MS), "another ejection was ended");
	cr_expect_not(dmsc_health_would_eject(&h, 0, &cfg, now + MS), "ejected: no run");
	h.consecutive = 2;
	cr_expect(dmsc_health_would_eject(&h, at, &cfg, now + MS));
	h.consecutive = 0;

	dmsc_health_take_end(&h, at + 1);
	cr_expect_eq(h.ejected_until_ns, now + 1000 * MS, "not the ejection dmscd ended");
	dmsc_health_take_end(&h, at);
	cr_expect_eq(h.ejected_until_ns, 0);
	cr_expect_eq(h.ejected_at_ns, at, "kept: the back-off's reference");
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now + 2 * MS), 0);
	cr_expect_eq(h.consecutive, 1, "a failure after the end counts towards a new run");
	dmsc_health_failed(&h, &cfg, now + 3 * MS);
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now + 4 * MS), 1, "and ejects again");
	cr_expect_eq(h.ejections, 2, "in a row: the back-off grows");
	cr_expect(dmsc_health_ejected(&h, at, now + 5 * MS), "the new ejection runs");
}

Test(health_verdict, describe_reads_the_state_from_the_verdict)
{
	struct dmsc_be_health h = {.failures = 7, .ejections = 1};
	struct dmsc_be_verdict v = {
	    .out = DMSC_HEALTH_OUT_PROBE, .probe_failed = 3, .probe_detail = 503, .probes = 9};
	char why[192];

	cr_expect_str_eq(dmsc_health_describe(&h, &v, 3, false, 10 * MS, why, sizeof(why)),
			 "probe_failed");
	cr_expect_str_eq(why, "3 probes failed in a row (last: HTTP status 503)");
	h.ejected_at_ns = 5 * MS;
	h.ejected_until_ns = 20 * MS;
	cr_expect_str_eq(dmsc_health_describe(&h, &v, 3, false, 10 * MS, why, sizeof(why)),
			 "ejected", "the counter's ejection, before dmscd saw it");
	v.out = DMSC_HEALTH_IN;
	v.ejection_ended = 5 * MS;
	cr_expect_str_eq(dmsc_health_describe(&h, &v, 3, false, 10 * MS, why, sizeof(why)), "in",
			 "an ejection dmscd ended");
	cr_expect_str_eq(why, "7 connect failures in all, 9 probes");
}

/* An install over a build whose dmsc_be_health still held dmscd's fields
 * (64 bytes) splits each entry between the two maps. */
Test(health_verdict, migration_splits_the_old_entry)
{
	struct {
		__u32 lock, consecutive;
		__u64 failures, ejected_at_ns, ejected_until_ns;
		__u32 ejections, out;
		__u64 out_since_ns;
		__u32 probe_ok, probe_failed;
		__s32 probe_detail;
		__u32 probes;
	} old = {0, 2, 41, 100, 900, 3, DMSC_HEALTH_OUT_EJECTED, 120, 0, 4, -111, 17};
	unsigned char zero[DMSC_BE_HEALTH_V0_SIZE] = {0};
	struct dmsc_be_verdict v;
	struct dmsc_be_health h;

	cr_assert_eq(sizeof(old), DMSC_BE_HEALTH_V0_SIZE);
	cr_expect(dmsc_migrate_split_be_health(&old, &h, &v));
	cr_expect_eq(h.consecutive, 2);
	cr_expect_eq(h.failures, 41);
	cr_expect_eq(h.ejected_at_ns, 100);
	cr_expect_eq(h.ejected_until_ns, 900);
	cr_expect_eq(h.ejections, 3);
	cr_expect_eq(v.out, DMSC_HEALTH_OUT_EJECTED);
	cr_expect_eq(v.out_since_ns, 120);
	cr_expect_eq(v.probe_failed, 4);
	cr_expect_eq(v.probe_detail, -111);
	cr_expect_eq(v.probes, 17);
	cr_expect_eq(v.ejection_ended, 0);
	cr_expect_not(dmsc_migrate_split_be_health(zero, &h, &v), "nothing of dmscd's to write");
}
