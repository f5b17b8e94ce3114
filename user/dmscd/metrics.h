/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Metrics in the Prometheus text exposition format (version 0.0.4): the
 * formatting (pure, unit-tested) and the collection from the maps.
 */
#ifndef DMSC_METRICS_H
#define DMSC_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "datapath.h"
#include "prom.h"
#include "apply_mirror.h"

enum dmsc_apply_outcome {
	DMSC_APPLY_OK,
	DMSC_APPLY_FAILED,  /* the kernel refused a write, or capacity: rolled back */
	DMSC_APPLY_INVALID, /* the policy did not validate: nothing written */
	DMSC_APPLY_OUTCOMES,
};

/* What dmscd counts about itself. */
struct dmsc_agent_stats {
	uint64_t applies[DMSC_APPLY_OUTCOMES];
	uint64_t entries_written;
	uint64_t datapath_opens; /* the held datapath opened afresh */
	struct dmsc_histogram apply_seconds;
	size_t policy_services;
	double start_time;	/* seconds since the epoch */
	double last_apply_time; /* of the last successful apply; 0: none */
	/* protocol http services of the policy applied, those that no ready
	 * dmsc-l7 serves, and whether one is ready (l7_auto.h) */
	size_t l7_http_services;
	size_t l7_unserved;
	bool l7_helper_up;
};

void dmsc_agent_stats_init(struct dmsc_agent_stats *a);

/* Every metric: per service (and, if per_backend, per backend) counters
 * from the maps (named by the mirror), datapath events, map usage and
 * capacity, and the agent's own counters. */
int dmsc_metrics_render(struct dmsc_buf *b, const struct dmsc_mirror *m,
			const struct dmsc_datapath *dp, const struct dmsc_agent_stats *a,
			bool per_backend);

/* Per-backend series: a page of 100,000 services with 4 backends each is
 * hundreds of MB with them, so auto leaves them out above this many
 * services (dmscd --metrics-backends). */
enum dmsc_metrics_backends {
	DMSC_METRICS_BACKENDS_AUTO,
	DMSC_METRICS_BACKENDS_ON,
	DMSC_METRICS_BACKENDS_OFF,
};
#define DMSC_METRICS_BACKENDS_AUTO_MAX 1000
bool dmsc_metrics_backends_on(enum dmsc_metrics_backends mode, size_t n_services);

/* What the render reads of a mirror, copied (backends only if asked), so
 * that a page is rendered in another thread while the mirror changes.
 * Free with dmsc_metrics_snapshot_free. */
int dmsc_metrics_snapshot(const struct dmsc_mirror *m, bool backends, struct dmsc_mirror *out);
void dmsc_metrics_snapshot_free(struct dmsc_mirror *snap);

#endif /* DMSC_METRICS_H */
