/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * dmscd's etcd source: a thread that reads the host's namespaces at one
 * revision R, then watches each namespace prefix from R+1, keeping a store
 * of one parsed service per key (each event parses its one value). The
 * main thread is woken through an eventfd and applies a view of the store
 * through the mirror's incremental apply. A lost stream resumes from the
 * last revision seen; a compacted one reads the namespaces again (only
 * keys whose revision moved are parsed). etcd unreachable: nothing is
 * applied, the datapath runs as it is, retries back off up to 5 s.
 */
#ifndef DMSC_ETCD_SYNC_H
#define DMSC_ETCD_SYNC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "etcd.h"
#include "etcd_opts.h"
#include "etcd_store.h"
#include "metrics.h"
#include "policy.h"

struct dmsc_etcd_sync {
	struct dmsc_etcd etcd;
	const char *prefix;
	char *nsp[DMSC_ETCD_NAMESPACES_MAX]; /* namespace prefixes */
	size_t n_ns;
	int64_t ns_rev[DMSC_ETCD_NAMESPACES_MAX]; /* last revision seen, thread only */
	pthread_t thread;
	bool started;
	int event_fd;
	volatile int stop;
	pthread_mutex_t lock; /* the store and the figures below */
	struct dmsc_etcd_store store;
	bool connected;
	int64_t revision; /* the highest revision seen */
	uint64_t events, bytes_rx, reconnects, full_reads, compactions;
	/* Lag (docs/etcd.md): head is the highest revision etcd's answers
	 * reported (header.revision); applied, the head when nothing received
	 * was left to apply last; pending_since, the monotonic time the
	 * oldest change not yet in the maps arrived (0: none). */
	int64_t head, applied;
	double pending_since;
	double applied_at; /* wall clock when applied was reached */
};

int dmsc_etcd_sync_start(struct dmsc_etcd_sync *s, const char *urls,
			 const struct dmsc_etcd_tls *tls, const char *prefix,
			 const char *const *namespaces, size_t n_ns);
/* Readable when the store changed; dmsc_etcd_sync_take() clears it. */
int dmsc_etcd_sync_fd(const struct dmsc_etcd_sync *s);
void dmsc_etcd_sync_take(struct dmsc_etcd_sync *s);
/* Locks the store and fills out with a view of it (see
 * dmsc_etcd_store_view); conflicts are logged. Release with _view_done. */
int dmsc_etcd_sync_view(struct dmsc_etcd_sync *s, struct dmsc_policy *out);
/* Between _view and _view_done, once the view is in the maps: every
 * change received is applied (the lag falls to 0). */
void dmsc_etcd_sync_applied(struct dmsc_etcd_sync *s);
void dmsc_etcd_sync_view_done(struct dmsc_etcd_sync *s, struct dmsc_policy *out);
void dmsc_etcd_sync_metrics(struct dmsc_etcd_sync *s, struct dmsc_buf *b);
void dmsc_etcd_sync_stop(struct dmsc_etcd_sync *s);

#endif /* DMSC_ETCD_SYNC_H */
