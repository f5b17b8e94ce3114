// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Backend health: the ejection arithmetic the kernel runs
 * (include/dmsc/health.h) and the weights every apply lays a slot table out
 * from (user/datapath/health.c).
 */
#include <criterion/criterion.h>

#include "dmsc/health.h"
#include "dmsc/slots.h"
#include "health.h"

#define MS DMSC_NS_PER_MS

static const struct dmsc_svc_health cfg = {
    .eject_after = 3, .base_ejection_ms = 1000, .max_ejection_ms = 2500};

Test(health_kernel, ejects_after_consecutive_failures)
{
	struct dmsc_be_health h = {0};
	__u64 now = 1000 * MS;

	cr_expect_eq(dmsc_health_failed(&h, &cfg, now), 0);
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now), 0);
	cr_expect_not(dmsc_health_ejected(&h, now));
	cr_expect_eq(dmsc_health_failed(&h, &cfg, now), 1);
	cr_expect(dmsc_health_ejected(&h, now));
	cr_expect(dmsc_health_ejected(&h, now + 999 * MS));
	cr_expect_not(dmsc_health_ejected(&h, now + 1000 * MS));
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
	cr_expect_not(dmsc_health_would_eject(&h, &(struct dmsc_svc_health){.eject_after = 9}, now));
	cr_expect(dmsc_health_would_eject(&h, &cfg, now));
	cr_expect_eq(dmsc_health_failed_room(&h, &cfg, now, 0), 0, "no room: not ejected");
	cr_expect_not(dmsc_health_ejected(&h, now));
	cr_expect_eq(h.consecutive, 2, "one short of the run");
	cr_expect_eq(dmsc_health_failed_room(&h, &cfg, now, 1), 1, "room again: the next ejects");
	cr_expect(dmsc_health_ejected(&h, now));
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
