// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The Prometheus text exposition format (prom.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "prom.h"

static void append_escaped(struct dmsc_buf *b, const char *s, const char *special)
{
	size_t run;

	while (*s) {
		run = strcspn(s, special);
		dmsc_buf_append(b, s, run);
		s += run;
		if (!*s)
			break;
		dmsc_buf_append(b, *s == '\n' ? "\\n" : *s == '"' ? "\\\"" : "\\\\", 2);
		s++;
	}
}

void dmsc_prom_family(struct dmsc_buf *b, const char *name, const char *type, const char *help)
{
	/* HELP text escapes \ and newline (not "). */
	dmsc_buf_printf(b, "# HELP %s ", name);
	append_escaped(b, help, "\\\n");
	dmsc_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

void dmsc_prom_label_value(struct dmsc_buf *b, const char *v)
{
	append_escaped(b, v, "\\\"\n");
}

static void labels(struct dmsc_buf *b, const char *name, const struct dmsc_prom_label *l, size_t n)
{
	size_t i;

	dmsc_buf_append(b, name, strlen(name));
	if (!n)
		return;
	for (i = 0; i < n; i++) {
		dmsc_buf_append(b, i ? "," : "{", 1);
		dmsc_buf_append(b, l[i].name, strlen(l[i].name));
		dmsc_buf_append(b, "=\"", 2);
		dmsc_prom_label_value(b, l[i].value);
		dmsc_buf_append(b, "\"", 1);
	}
	dmsc_buf_append(b, "}", 1);
}

void dmsc_prom_sample(struct dmsc_buf *b, const char *name, const struct dmsc_prom_label *l,
		      size_t n, uint64_t v)
{
	labels(b, name, l, n);
	dmsc_buf_printf(b, " %llu\n", (unsigned long long)v);
}

void dmsc_prom_sample_f(struct dmsc_buf *b, const char *name, const struct dmsc_prom_label *l,
			size_t n, double v)
{
	labels(b, name, l, n);
	if (isnan(v))
		dmsc_buf_printf(b, " NaN\n");
	else if (isinf(v))
		dmsc_buf_printf(b, " %sInf\n", v > 0 ? "+" : "-");
	else
		dmsc_buf_printf(b, " %.17g\n", v);
}

void dmsc_prom_single(struct dmsc_buf *b, const char *name, const char *type, const char *help,
		      uint64_t v)
{
	dmsc_prom_family(b, name, type, help);
	dmsc_prom_sample(b, name, NULL, 0, v);
}

void dmsc_prom_single_f(struct dmsc_buf *b, const char *name, const char *type, const char *help,
			double v)
{
	dmsc_prom_family(b, name, type, help);
	dmsc_prom_sample_f(b, name, NULL, 0, v);
}

void dmsc_histogram_init(struct dmsc_histogram *h, const double *bounds, size_t n)
{
	memset(h, 0, sizeof(*h));
	h->bounds = bounds;
	h->n_bounds = n < DMSC_HISTOGRAM_MAX_BUCKETS - 1 ? n : DMSC_HISTOGRAM_MAX_BUCKETS - 1;
}

void dmsc_histogram_observe(struct dmsc_histogram *h, double v)
{
	size_t i;

	for (i = 0; i < h->n_bounds && v > h->bounds[i]; i++)
		;
	h->counts[i]++; /* i == n_bounds: the +Inf bucket */
	h->count++;
	h->sum += v;
}

void dmsc_prom_histogram(struct dmsc_buf *b, const char *name, const char *help,
			 const struct dmsc_histogram *h)
{
	char metric[128], le[32];
	uint64_t cum = 0;
	size_t i;

	dmsc_prom_family(b, name, "histogram", help);
	snprintf(metric, sizeof(metric), "%s_bucket", name);
	for (i = 0; i <= h->n_bounds; i++) {
		struct dmsc_prom_label l = {"le", le};

		cum += h->counts[i];
		if (i < h->n_bounds)
			snprintf(le, sizeof(le), "%g", h->bounds[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		dmsc_prom_sample(b, metric, &l, 1, cum);
	}
	snprintf(metric, sizeof(metric), "%s_sum", name);
	dmsc_prom_sample_f(b, metric, NULL, 0, h->sum);
	snprintf(metric, sizeof(metric), "%s_count", name);
	dmsc_prom_sample(b, metric, NULL, 0, h->count);
}
