/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * dmscd runs dmsc-l7 whenever the policy applied has protocol "http"
 * services, with no flag (docs/design.md decision 11): this is what it
 * decides and reports. --l7 off turns the helper off, and then a policy
 * with http services is refused (applying it would balance them at L4
 * without their routes and limits). An http service that no ready helper
 * serves is an error in the log and a metric (dmsc_l7_unserved_services),
 * never a silent downgrade.
 */
#ifndef DMSC_L7_AUTO_H
#define DMSC_L7_AUTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "l7_supervisor.h"
#include "policy.h"

/* Where the helper listens when --l7-listen is not given: its own network
 * namespace's loopback; every other namespace with mesh processes gets a
 * listener of its own (dmsc-l7's l7_netns.c). */
#define DMSC_L7_DEFAULT_LISTEN "127.0.0.1:15001"
/* A helper not ready this long after it was needed is reported. */
#define DMSC_L7_UNSERVED_GRACE_MS 5000

enum dmsc_l7_mode {
	DMSC_L7_AUTO, /* default: run it when the policy has http services */
	DMSC_L7_OFF,  /* never: a policy with http services is refused */
};

/* 0 or -EINVAL for a word other than auto and off. */
int dmsc_l7_mode_parse(const char *s, enum dmsc_l7_mode *out);

/* The number of protocol "http" services in p; *first: the name of the
 * first one (NULL when none). */
size_t dmsc_l7_http_services(const struct dmsc_policy *p, const char **first);

/*
 * For --l7 off: NULL when p can be applied, else a message naming the
 * first http service (written into buf).
 */
const char *dmsc_l7_off_refusal(const struct dmsc_policy *p, char *buf, size_t len);

/* Whether the http services of the policy applied are served. */
struct dmsc_l7_served {
	size_t http_services; /* in the policy applied */
	size_t unserved;      /* http_services, when no ready helper serves them */
	bool helper_up;	      /* a helper is ready */
	bool reported;	      /* the error was logged; cleared when served again */
	uint64_t needed_ms;   /* since when a helper is needed and not ready; 0: not */
};

/*
 * Called from dmscd's loop: compares what the policy needs with the
 * supervisor's state, logs an error once when http services go unserved
 * for DMSC_L7_UNSERVED_GRACE_MS (and a line when they are served again),
 * and keeps the counts the metrics export. running: a supervisor exists.
 */
void dmsc_l7_served_check(struct dmsc_l7_served *st, const struct dmsc_l7_supervisor *sup,
			  bool running, uint64_t now_ms);

#endif /* DMSC_L7_AUTO_H */
