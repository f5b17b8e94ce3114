/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * dmsc-l7's passive health (docs/design.md decision 35): the helper counts
 * what the kernel counts for a tcp service, and more (a 5xx response), in
 * the very dmsc_be_health entry of the backend, with the same function and
 * thresholds (include/dmsc/health.h), and passes over the backends that
 * entry says are out: ejected (by the helper) or out by dmscd's verdict
 * (ejected, or its active probes failed). dmscd makes an ejection durable
 * and ends it as it does for the kernel's.
 */
#ifndef DMSC_L7_HEALTH_H
#define DMSC_L7_HEALTH_H

#include <stdint.h>
#include <stdio.h>

#include "l7_route.h"

/* After cfg is built: opens dmsc_be_health and the maps that name the
 * backends' ids, when a service has health. 0 or a negative errno. */
int dmsc_l7_health_open(const char *pin_dir);
void dmsc_l7_health_close(void);

/* dmsc_l7_pick_backend, passing over the backends that are out while one
 * is in (retries: `tried` as there); when every backend of the pick is
 * out, the pick as if none were (panic mode, counted). */
int dmsc_l7_health_pick(const struct dmsc_l7_service *svc, const struct dmsc_l7_pick *pick,
			uint32_t r, uint64_t tried);

/* The backend of a request's next attempt: dmsc_l7_health_pick from its
 * route's pick (route: an index of svc->routes; -1, none: the service's),
 * recorded in *tried. -1: none. */
int dmsc_l7_attempt_pick(const struct dmsc_l7_service *svc, int route, uint32_t r, uint64_t *tried);

/* The outcome of an attempt on backend idx of svc: status 0 for a connect
 * that failed, DMSC_L7_HEALTH_TIMEOUT for no response head within the
 * route's timeout_ms (the client's 504), else the HTTP status of the
 * response head (5xx: a failure, any other: ends a run of failures). */
#define DMSC_L7_HEALTH_TIMEOUT (-1)
void dmsc_l7_health_result(const struct dmsc_l7_service *svc, int idx, int status);

/* The Prometheus text of the helper's health counters. */
void dmsc_l7_health_metrics(FILE *f);

#endif /* DMSC_L7_HEALTH_H */
