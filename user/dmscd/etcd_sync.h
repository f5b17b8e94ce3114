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

#include "apply_mirror.h"
#include "etcd.h"
#include "etcd_opts.h"
#include "etcd_store.h"
#include "metrics.h"
#include "policy.h"

struct dmsc_etcd_sync {
	struct dmsc_etcd etcd;
	const char *prefix;
	/* the namespaces' prefixes, then (with the tunnel) PREFIX/hosts/:
	 * read and watched alike (n_pfx of them) */
	char *nsp[DMSC_ETCD_NAMESPACES_MAX + 1];
	size_t n_ns, n_pfx;
	int64_t ns_rev[DMSC_ETCD_NAMESPACES_MAX + 1]; /* last revision seen, thread only */
	pthread_t thread;
	bool started;
	int event_fd;
	volatile int stop;
	volatile int refill;  /* read the namespaces again, parsing slim keys */
	bool read_whole;      /* a read of every namespace since the last apply */
	/* A read goes a page of `page` keys at a time, in key order, all at
	 * the revision of its first answer; each page's changes are applied
	 * (a view of the dirty keys) before the next page is read, and once
	 * the last page is in, one apply removes what is gone (a view of the
	 * parsed keys with the digest of every key kept): docs/design.md
	 * decision 61. Under lock. */
	size_t page;
	const char *page_hold; /* DMSC_TEST_ETCD_PAGE_HOLD: a file that holds the next page */
	bool streaming;	       /* a read under way (or failed half-way): views of the dirty keys */
	bool batch;	       /* a page waits for its apply (batch_done) */
	bool lean;	       /* the read is in: the apply that removes what is gone waits */
	int view_kind;	       /* of the view being applied (etcd_sync.c) */
	pthread_cond_t batch_done;
	pthread_mutex_t lock; /* the store and the figures below */
	/* The watch's multi handle while it runs (under lock): a stop or a
	 * refill wakes its poll (curl_multi_wakeup), which waits otherwise
	 * for a stream's data or libcurl's own timers, never a fixed tick. */
	void *watch_multi;
	struct dmsc_etcd_store store;
	bool connected;
	int64_t revision; /* the highest revision seen */
	uint64_t events, bytes_rx, reconnects, full_reads, compactions;
	uint64_t changed_views; /* applies of a view of the changed keys */
	/* Lag (docs/etcd.md): head is the highest revision etcd's answers
	 * reported (header.revision); applied, the head when nothing received
	 * was left to apply last; pending_since, the monotonic time the
	 * oldest change not yet in the maps arrived (0: none). */
	int64_t head, applied;
	double pending_since;
	double applied_at; /* wall clock when applied was reached */
	/* Where a change's time goes (wall clock, docs/etcd.md#lag): the
	 * oldest change waiting arrived (its watch chunk read) at pend_rx,
	 * was parsed into the store at pend_parsed, and the apply that took
	 * it began at pend_view; copied to last_* when that apply is done. */
	double pend_rx, pend_parsed, pend_view;
	double last_rx, last_parsed, last_view;
};

int dmsc_etcd_sync_start(struct dmsc_etcd_sync *s, const char *urls,
			 const struct dmsc_etcd_tls *tls, const char *prefix,
			 const char *const *namespaces, size_t n_ns, bool keep_parsed);
/* Readable when the store changed; dmsc_etcd_sync_take() clears it. */
int dmsc_etcd_sync_fd(const struct dmsc_etcd_sync *s);
void dmsc_etcd_sync_take(struct dmsc_etcd_sync *s);
/* Locks the store and fills out with a view of it and d with its digests
 * (see dmsc_etcd_store_view; both mapped on their own when large:
 * mapmem.h); conflicts are logged. *changed_only, when true, asks for
 * the view of the changed keys only (dmsc_etcd_store_view_changed, for
 * dmsc_mirror_apply_some) and says whether out holds some services only
 * (for dmsc_mirror_apply_some). While a read is under way out holds the
 * keys changed since the last apply (a page's); right after one, the
 * parsed keys, with *keep the digest of every key (the others stay, what
 * the mirror holds beyond them goes); else *keep is NULL. Release with
 * _view_done. */
int dmsc_etcd_sync_view(struct dmsc_etcd_sync *s, struct dmsc_policy *out,
			struct dmsc_svc_digest **d, bool *changed_only,
			struct dmsc_svc_digest **keep, size_t *n_keep);
/* Between _view and _view_done, before the apply: whether the mirror,
 * in step with dp, holds every slim service of the view as it is (a slim
 * service has no backends to plan from); d: the digests of every key of
 * the view (n of them; a whole view's, or _view's keep). When not, the
 * store is asked to parse them again (the thread reads the namespaces
 * again and wakes the apply) and false is returned: nothing is to be
 * applied now. */
bool dmsc_etcd_sync_view_ready(struct dmsc_etcd_sync *s, struct dmsc_mirror *m,
			       const struct dmsc_datapath *dp, size_t n,
			       const struct dmsc_svc_digest *d);
/* Between _view and _view_done, once the view is in the maps: every
 * change received is applied (the lag falls to 0). changed_only: the
 * view was of the changed keys (counted). */
void dmsc_etcd_sync_applied(struct dmsc_etcd_sync *s, bool changed_only);
/* Between _view and _view_done: whether the view holds every service that
 * dmsc-l7, the tunnel and the probes read (the whole view, or every
 * service the store keeps parsed), for them to follow; not when it holds
 * changed plain services only, or a page of a read under way. */
bool dmsc_etcd_sync_view_follows(const struct dmsc_etcd_sync *s);
/* Releases the view; returns whether a read of every namespace came since
 * the last view (much was parsed and freed: the heap is worth trimming). */
bool dmsc_etcd_sync_view_done(struct dmsc_etcd_sync *s, struct dmsc_policy *out,
			      struct dmsc_svc_digest *d, struct dmsc_svc_digest *keep);
void dmsc_etcd_sync_metrics(struct dmsc_etcd_sync *s, struct dmsc_buf *b);
void dmsc_etcd_sync_stop(struct dmsc_etcd_sync *s);

#endif /* DMSC_ETCD_SYNC_H */
