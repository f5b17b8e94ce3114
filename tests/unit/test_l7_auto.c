// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* What dmscd decides about dmsc-l7 from a policy (l7_auto.h): whether it is
 * needed, what --l7 off refuses, when unserved http services are reported. */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>

#include "l7_auto.h"

static const char doc[] = "{ \"services\": ["
			  "{ \"name\": \"plain\", \"vip\": \"198.19.0.1\", \"port\": 80,"
			  "  \"backends\": [ { \"address\": \"198.18.1.2\", \"port\": 80 } ] },"
			  "{ \"name\": \"web\", \"vip\": \"198.19.0.2\", \"port\": 80,"
			  "  \"protocol\": \"http\","
			  "  \"backends\": [ { \"address\": \"198.18.1.2\", \"port\": 80 } ] } ] }";

static void parse(const char *text, struct dmsc_policy *p)
{
	struct dmsc_policy_errors errs = {0};

	memset(p, 0, sizeof(*p));
	cr_assert_eq(dmsc_policy_parse(text, strlen(text), "t", p, &errs), 0);
	dmsc_policy_errors_free(&errs);
}

Test(l7_auto, counts_http_services_and_names_the_first)
{
	struct dmsc_policy p;
	const char *first;

	parse(doc, &p);
	cr_assert_eq(dmsc_l7_http_services(&p, &first), 1);
	cr_assert_str_eq(first, "web");
	dmsc_policy_free(&p);
}

Test(l7_auto, off_refuses_http_naming_it_and_accepts_tcp_only)
{
	static const char tcp_only[] =
	    "{ \"services\": [ { \"name\": \"plain\", \"vip\": \"198.19.0.1\", \"port\": 80,"
	    "  \"backends\": [ { \"address\": \"198.18.1.2\", \"port\": 80 } ] } ] }";
	struct dmsc_policy p;
	char buf[256];
	const char *msg;

	parse(doc, &p);
	msg = dmsc_l7_off_refusal(&p, buf, sizeof(buf));
	cr_assert_not_null(msg);
	cr_assert(strstr(msg, "service \"web\": protocol \"http\" needs dmsc-l7"), "%s", msg);
	dmsc_policy_free(&p);
	parse(tcp_only, &p);
	cr_assert_null(dmsc_l7_off_refusal(&p, buf, sizeof(buf)));
	cr_assert_eq(dmsc_l7_http_services(&p, NULL), 0);
	dmsc_policy_free(&p);
}

Test(l7_auto, mode_words)
{
	enum dmsc_l7_mode m = DMSC_L7_OFF;

	cr_assert_eq(dmsc_l7_mode_parse("auto", &m), 0);
	cr_assert_eq(m, DMSC_L7_AUTO);
	cr_assert_eq(dmsc_l7_mode_parse("off", &m), 0);
	cr_assert_eq(m, DMSC_L7_OFF);
	cr_assert_eq(dmsc_l7_mode_parse("on", &m), -EINVAL);
}

Test(l7_auto, unserved_only_after_the_grace_and_cleared_when_ready)
{
	struct dmsc_l7_supervisor sup = {.state = DMSC_L7_SUP_BACKOFF, .last_status = 256};
	struct dmsc_l7_served st = {.http_services = 2};

	dmsc_l7_served_check(&st, &sup, true, 1000);
	cr_assert_eq(st.unserved, 0, "within the grace: not yet");
	dmsc_l7_served_check(&st, &sup, true, 1000 + DMSC_L7_UNSERVED_GRACE_MS);
	cr_assert_eq(st.unserved, 2);
	cr_assert(st.reported);
	cr_assert_not(st.helper_up);
	sup.state = DMSC_L7_SUP_READY;
	dmsc_l7_served_check(&st, &sup, true, 2000 + DMSC_L7_UNSERVED_GRACE_MS);
	cr_assert_eq(st.unserved, 0);
	cr_assert(st.helper_up);
	cr_assert_not(st.reported);
	/* no helper at all (not running) with http services: unserved too */
	dmsc_l7_served_check(&st, &sup, false, 3000 + DMSC_L7_UNSERVED_GRACE_MS);
	dmsc_l7_served_check(&st, &sup, false, 3000 + 2 * DMSC_L7_UNSERVED_GRACE_MS);
	cr_assert_eq(st.unserved, 2);
}
