/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * dmscd's part of backend health (docs/design.md decision 28), in a thread
 * of its own: the active probes (tcp connect, http GET) of every backend of
 * a service with `health.active`, sent from the host to the backend's own
 * address (one on another host of an mtls service through this host's
 * tunnel, as a probe: decision 77), non-blocking, at most DMSC_HEALTH_PROBES_MAX at once; and every
 * DMSC_HEALTH_TICK_MS a look at the kernel's passive ejections (read in
 * dmsc_be_health, never written: decision 53). It decides whether each
 * backend is out of its slot table (dmsc_be_verdict.out, which only this
 * thread writes: the kernel ejected it, or its probes failed) and, when
 * that changes, tells
 * the main loop (an eventfd) which services to apply again: the apply lays
 * their tables out without the backends that are out (datapath/health.h).
 */
#ifndef DMSC_HEALTH_WATCH_H
#define DMSC_HEALTH_WATCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "apply_mirror.h"
#include "policy.h"
#include "tunnel_via.h"

#define DMSC_HEALTH_TICK_MS 100
#define DMSC_HEALTH_PROBES_MAX 64

struct dmsc_health_target; /* one backend of a service with health */

struct dmsc_health_stats {
	uint64_t probes_ok, probes_failed;
	uint64_t panics;  /* services that entered panic mode */
	uint64_t changes; /* backends that went out or came back */
};

/* A service to apply again: its key, and its VIP when it is IPv6 (key.vip 0). */
struct dmsc_health_svc {
	struct dmsc_svc_key key;
	__u32 vip6[4];
};

struct dmsc_health_watch {
	char pin_dir[4096];
	int health_fd, verdict_fd; /* dmsc_be_health (read), dmsc_be_verdict */
	/* the thread's: probes of backends behind the tunnel, its own sockets */
	struct dmsc_tunnel_via via;
	bool via_failed; /* warned: tried again at the next policy */
	int own_fd;	 /* dmsc_l7_own; -1: none (an older datapath) */
	int event_fd; /* readable: services to apply again */
	int wake_fd;  /* the thread's: new targets, or stop */
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;
	/* Under lock: the targets of the last policy applied (handed over to
	 * the thread), the services to apply again, the counters. */
	struct dmsc_health_target *next;
	size_t n_next;
	bool have_next;
	size_t n_set; /* targets handed over last (main thread's) */
	struct dmsc_health_svc *replan;
	size_t n_replan, cap_replan;
	struct dmsc_health_stats stats;
	/* The thread's own. */
	struct dmsc_health_target *t;
	size_t n;
	volatile bool stop;
};

/* Starts the thread: asleep until a policy with health is applied (no
 * tick without a backend to watch). */
int dmsc_health_watch_start(struct dmsc_health_watch *w, const char *pin_dir);
void dmsc_health_watch_stop(struct dmsc_health_watch *w);
int dmsc_health_watch_fd(const struct dmsc_health_watch *w);

/* After an apply: the backends of p's services with health, their ids
 * taken from the mirror (which holds p). */
int dmsc_health_watch_set(struct dmsc_health_watch *w, const struct dmsc_policy *p,
			  const struct dmsc_mirror *m);

/* Reads the eventfd and marks the services whose backends went out or
 * came back for planning again (dmsc_mirror_replan). Returns how many. */
size_t dmsc_health_watch_take(struct dmsc_health_watch *w, struct dmsc_mirror *m);

void dmsc_health_watch_stats(struct dmsc_health_watch *w, struct dmsc_health_stats *out);

/* The health series of dmscd's metrics (health_metrics.c), from the maps:
 * m is the scrape's snapshot of the mirror. */
struct dmsc_buf;
void dmsc_health_metrics(struct dmsc_buf *b, const struct dmsc_mirror *m,
			 const struct dmsc_datapath *dp, bool per_backend);

#endif /* DMSC_HEALTH_WATCH_H */
