// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's table of dmsc_tunnel_streams_total (user/mtls/tunnel_io.c):
 * every pair of peer and identity gets a row of its own, with its own
 * count, until METRICS_MAX rows; past them new pairs are counted under
 * "(other)", never under another pair's labels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "tunnel_int.h"

static struct tunnel *t;

static void setup(void)
{
	t = calloc(1, sizeof(*t));
	cr_assert(t);
}

static void teardown(void)
{
	tn_metrics_free(t);
	free(t);
}

static void identity(char *out, size_t len, int i)
{
	snprintf(out, len, "/mesh/app-%d", i);
}

TestSuite(tunnel_metrics, .init = setup, .fini = teardown);

Test(tunnel_metrics, a_row_per_pair_each_with_its_count)
{
	char id[64];
	int i, k, first;

	first = tn_metric_count(t, "source", "198.18.0.2", "/mesh/app-0", "opened");
	/* 1,000 pairs (the old table held 512 and counted the rest in its
	 * last row, under that row's labels), pair i counted i % 3 + 1 times */
	for (i = 0; i < 1000; i++) {
		identity(id, sizeof(id), i);
		for (k = i ? 0 : 1; k < i % 3 + 1; k++)
			cr_assert_geq(tn_metric_count(t, "source", "198.18.0.2", id, "opened"), 0);
	}
	cr_assert_eq(t->n_metrics, 1000);
	for (i = 0; i < 1000; i++) {
		int r;

		identity(id, sizeof(id), i);
		for (r = 0; r < (int)t->n_metrics; r++)
			if (!strcmp(t->metrics[r].identity, id))
				break;
		cr_assert_lt(r, (int)t->n_metrics, "no row for %s", id);
		cr_assert_eq(t->metrics[r].n, (unsigned long long)(i % 3 + 1), "%s", id);
		cr_assert_str_eq(t->metrics[r].peer, "198.18.0.2");
		cr_assert_str_eq(t->metrics[r].side, "source");
		cr_assert_str_eq(t->metrics[r].verdict, "opened");
	}
	/* the first row's index still names it after the table grew */
	cr_assert_str_eq(t->metrics[first].identity, "/mesh/app-0");
	cr_assert_eq(t->metrics[first].n, 1);
	/* the same pair under another verdict or side is another row */
	i = tn_metric_count(t, "dest", "198.18.0.2", "/mesh/app-0", "opened");
	k = tn_metric_count(t, "source", "198.18.0.2", "/mesh/app-0", "denied_peer");
	cr_assert(i != first && k != first && i != k);
	cr_assert_eq(t->n_metrics, 1002);
}

Test(tunnel_metrics, past_the_bound_new_pairs_count_as_other)
{
	char id[64];
	int i, r, other = -1;

	for (i = 0; i < METRICS_MAX; i++) {
		identity(id, sizeof(id), i);
		tn_metric_count(t, "dest", "198.18.0.3", id, "allowed");
	}
	cr_assert_eq(t->n_metrics, METRICS_MAX);
	for (i = METRICS_MAX; i < METRICS_MAX + 50; i++) {
		identity(id, sizeof(id), i);
		r = tn_metric_count(t, "dest", "198.18.0.3", id, "allowed");
		cr_assert(other < 0 || r == other);
		other = r;
	}
	/* a pair that has its row keeps counting there */
	r = tn_metric_count(t, "dest", "198.18.0.3", "/mesh/app-7", "allowed");
	cr_assert_str_eq(t->metrics[r].identity, "/mesh/app-7");
	cr_assert_eq(t->metrics[r].n, 2);
	cr_assert_eq(t->n_metrics, METRICS_MAX + 1);
	cr_assert_str_eq(t->metrics[other].identity, METRIC_OTHER);
	cr_assert_str_eq(t->metrics[other].peer, METRIC_OTHER);
	cr_assert_str_eq(t->metrics[other].verdict, "allowed");
	cr_assert_eq(t->metrics[other].n, 50);
	/* another verdict past the bound: one more "(other)" row, of its own */
	r = tn_metric_count(t, "dest", "198.18.0.4", "/mesh/new", "connect_failed");
	cr_assert_neq(r, other);
	cr_assert_str_eq(t->metrics[r].verdict, "connect_failed");
	cr_assert_str_eq(t->metrics[r].identity, METRIC_OTHER);
	cr_assert_eq(t->n_metrics, METRICS_MAX + 2);
}
