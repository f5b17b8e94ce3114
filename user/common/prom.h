/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The Prometheus text exposition format (version 0.0.4) into a buf.h
 * buffer: families, samples with escaped labels, histograms. Pure,
 * unit-tested (tests/unit/test_agent.c).
 */
#ifndef DMSC_PROM_H
#define DMSC_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct dmsc_prom_label {
	const char *name;
	const char *value;
};

/* "# HELP" and "# TYPE" lines; type is counter, gauge or histogram. */
void dmsc_prom_family(struct dmsc_buf *b, const char *name, const char *type, const char *help);
/* A label value with \, " and newline escaped as the format wants. */
void dmsc_prom_label_value(struct dmsc_buf *b, const char *v);
void dmsc_prom_sample(struct dmsc_buf *b, const char *name, const struct dmsc_prom_label *l,
		      size_t n, uint64_t v);
void dmsc_prom_sample_f(struct dmsc_buf *b, const char *name, const struct dmsc_prom_label *l,
			size_t n, double v);
/* A family of one sample without labels: HELP, TYPE and the sample. */
void dmsc_prom_single(struct dmsc_buf *b, const char *name, const char *type, const char *help,
		      uint64_t v);
void dmsc_prom_single_f(struct dmsc_buf *b, const char *name, const char *type, const char *help,
			double v);

#define DMSC_HISTOGRAM_MAX_BUCKETS 16
struct dmsc_histogram {
	const double *bounds; /* upper bounds, increasing; +Inf is implicit */
	size_t n_bounds;
	uint64_t counts[DMSC_HISTOGRAM_MAX_BUCKETS]; /* per bucket, not cumulative */
	uint64_t count;
	double sum;
};

void dmsc_histogram_init(struct dmsc_histogram *h, const double *bounds, size_t n);
void dmsc_histogram_observe(struct dmsc_histogram *h, double v);
/* HELP, TYPE, cumulative _bucket lines with le, _sum and _count. */
void dmsc_prom_histogram(struct dmsc_buf *b, const char *name, const char *help,
			 const struct dmsc_histogram *h);

#endif /* DMSC_PROM_H */
