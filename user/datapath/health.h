/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Backend health as every apply sees it (docs/design.md decisions 28 and
 * 53): a backend whose dmsc_be_verdict.out is set gets no slot, unless every
 * backend with a weight is out (panic mode: all keep their slots).
 */
#ifndef DMSC_DATAPATH_HEALTH_H
#define DMSC_DATAPATH_HEALTH_H

#include <stdbool.h>

#include "datapath.h"
#include "policy.h"

/*
 * eff[i] = weight[i], or 0 when out[i] is set. When that would leave no
 * weight while some backend has one, eff is weight (panic) and the result
 * is true.
 */
bool dmsc_health_weights(const __u32 *weight, const unsigned char *out, __u32 n, __u32 *eff);

/* The kernel's passive settings of a policy service (zero: none). */
void dmsc_health_svc_config(const struct dmsc_policy_service *w, struct dmsc_svc_health *cfg);

/* out[i] = whether backend ids[i] is out of its slot table (an id of 0, or
 * one the map cannot give, is in). */
void dmsc_health_read_out(const struct dmsc_datapath *dp, const __u32 *ids, __u32 n,
			  unsigned char *out);

/* Backend id's counter (dmsc_be_health) and dmscd's verdict
 * (dmsc_be_verdict), each read under its lock. 0 or a negative errno. */
int dmsc_health_read(const struct dmsc_datapath *dp, __u32 id, struct dmsc_be_health *h,
		     struct dmsc_be_verdict *v);

/* A given-up backend id's health (both maps) starts from zero for its next
 * owner. */
void dmsc_health_zero(const struct dmsc_datapath *dp, __u32 id);

/* "in", "ejected", "probe_failed": enum dmsc_health_out in every output. */
const char *dmsc_health_out_name(__u32 out);

/* What a backend's health entries say (its counter's h, dmscd's v), for
 * show and the metrics: its state name (as dmsc_health_out_name, or
 * "ejected" while the counter's own ejection runs even if dmscd has not
 * seen it) and a sentence why.
 * eject_after: the service's consecutive_failures; l7: an http service,
 * whose failures dmsc-l7 counts (5xx responses too). now_ns:
 * CLOCK_MONOTONIC. Returns the state name. */
const char *dmsc_health_describe(const struct dmsc_be_health *h, const struct dmsc_be_verdict *v,
				 __u32 eject_after, bool l7, __u64 now_ns, char *why, size_t len);

#endif /* DMSC_DATAPATH_HEALTH_H */
