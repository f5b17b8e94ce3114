/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* The views dmscd hands its helpers (dmsc-l7's, the tunnel's) are policies:
 * a test parses a document, renders a view of it and parses that again. */
#ifndef DMSC_TEST_VIEW_ROUND_TRIP_H
#define DMSC_TEST_VIEW_ROUND_TRIP_H

#include <string.h>

#include <criterion/criterion.h>

#include "policy.h"

/* DOC parsed into *p, rendered by RENDER and that parsed into *q; returns
 * the view's text (the caller frees it, and p and q). */
static inline char *view_round_trip(const char *doc,
				    int (*render)(const struct dmsc_policy *, char **, size_t *),
				    struct dmsc_policy *p, struct dmsc_policy *q)
{
	struct dmsc_policy_errors errs = {0};
	char *v = NULL;
	size_t len = 0;

	cr_assert_eq(dmsc_policy_parse(doc, strlen(doc), "t", p, &errs), 0);
	cr_assert_eq(render(p, &v, &len), 0);
	cr_assert_eq(dmsc_policy_parse(v, len, "view", q, &errs), 0, "%s", v);
	dmsc_policy_errors_free(&errs);
	return v;
}

#endif /* DMSC_TEST_VIEW_ROUND_TRIP_H */
