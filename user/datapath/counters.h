/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Names of the datapath's counters, for every output (dmscctl stats, the
 * metrics): one table per counter struct in dmsc/shared.h, so adding a
 * counter is one row.
 */
#ifndef DMSC_COUNTERS_H
#define DMSC_COUNTERS_H

#include <stddef.h>

#include "dmsc/shared.h"

struct dmsc_counter {
	const char *name;   /* JSON key and metric stem: "refused_rate" */
	size_t offset;      /* of the __u64 in its struct */
	const char *help;   /* one line, for people */
};

extern const struct dmsc_counter dmsc_svc_counters[];
extern const size_t dmsc_n_svc_counters;
extern const char *const dmsc_reason_names[DMSC_R_MAX];

static inline unsigned long long dmsc_counter_get(const void *stats, const struct dmsc_counter *c)
{
	return *(const __u64 *)((const char *)stats + c->offset);
}

#endif /* DMSC_COUNTERS_H */
