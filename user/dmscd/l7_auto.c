// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "l7_auto.h"
#include "log.h"

int dmsc_l7_mode_parse(const char *s, enum dmsc_l7_mode *out)
{
	if (!strcmp(s, "auto"))
		*out = DMSC_L7_AUTO;
	else if (!strcmp(s, "off"))
		*out = DMSC_L7_OFF;
	else
		return -EINVAL;
	return 0;
}

size_t dmsc_l7_http_services(const struct dmsc_policy *p, const char **first)
{
	size_t i, n = 0;

	if (first)
		*first = NULL;
	for (i = 0; i < p->n_services; i++) {
		if (p->services[i].protocol != DMSC_POLICY_HTTP)
			continue;
		if (!n && first)
			*first = p->services[i].name;
		n++;
	}
	return n;
}

const char *dmsc_l7_off_refusal(const struct dmsc_policy *p, char *buf, size_t len)
{
	const char *first;
	size_t n = dmsc_l7_http_services(p, &first);

	if (!n)
		return NULL;
	snprintf(buf, len,
		 "service \"%s\"%s: protocol \"http\" needs dmsc-l7, which --l7 off turns off "
		 "(its connections would be balanced at L4 without routes or limits)",
		 first, n > 1 ? " and others" : "");
	return buf;
}

void dmsc_l7_served_check(struct dmsc_l7_served *st, const struct dmsc_l7_supervisor *sup,
			  bool running, uint64_t now_ms)
{
	bool up = running && sup->state == DMSC_L7_SUP_READY;

	st->helper_up = up;
	if (!st->http_services || up) {
		if (st->reported)
			pr_info("dmsc-l7 is ready: the %zu http service%s %s served again\n",
				st->http_services, st->http_services == 1 ? "" : "s",
				st->http_services == 1 ? "is" : "are");
		st->unserved = 0;
		st->reported = false;
		st->needed_ms = 0;
		return;
	}
	if (!st->needed_ms)
		st->needed_ms = now_ms;
	if (now_ms - st->needed_ms < DMSC_L7_UNSERVED_GRACE_MS)
		return;
	st->unserved = st->http_services;
	if (st->reported)
		return;
	st->reported = true;
	pr_warn("error: %zu http service%s not served: dmsc-l7 is %s%s; their connections are balanced "
	       "at L4 without routes, request limits or timeouts (reason l7_no_helper) until it "
	       "is ready\n",
	       st->http_services, st->http_services == 1 ? "" : "s",
	       running ? dmsc_l7_sup_state_name(sup->state) : "not running",
	       running && sup->last_status >= 0 ? " (it exited; see its log above)" : "");
}
