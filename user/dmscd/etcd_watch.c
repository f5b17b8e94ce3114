// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's etcd watch: one stream per namespace prefix from the revision
 * after the read (docs/design.md decisions 43, 57), each event put into
 * the store for the apply; the reads, the thread and the views are in
 * etcd_sync.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "clock.h"
#include "etcd_sync_int.h"
#include "log.h"

#define WATCH_MSG_MAX (8u << 20)
/* The watch's poll: woken by data, by libcurl's own timers (which cap the
 * wait) and by a stop or refill (wake_watch); this bound is a safety net
 * only. */
#define WATCH_POLL_MAX_MS 60000

struct watch {
	struct dmsc_etcd_sync *s;
	size_t ns;
	CURL *curl;
	char *body;
	struct dmsc_etcd_splitter sp;
	double chunk_at; /* wall clock: the chunk being split was read */
	int outcome;
	char url[512];
	char cerr[DMSC_ETCD_CURL_ERR_SIZE];
};

static int watch_msg(const char *obj, size_t len, void *arg)
{
	struct watch *w = arg;
	struct dmsc_etcd_sync *s = w->s;
	struct dmsc_etcd_watch_msg m;
	char err[256];
	bool changed = false;
	size_t i;

	if (dmsc_etcd_parse_watch(obj, len, &m, err, sizeof(err))) {
		pr_warn("etcd watch %s: %s\n", s->nsp[w->ns], err);
		w->outcome = WATCH_LOST;
		return -EINVAL;
	}
	if (m.canceled) {
		if (m.compact_revision) {
			/* ns_rev: the last revision this host saw, the watch's
			 * start the next one; etcd compacted at a later one. */
			pr_warn("etcd: %s: the changes after revision %" PRId64
				" (the last this host saw) are gone: etcd compacted its "
				"history at revision %" PRId64
				"; reading the namespaces again (only what differs is "
				"applied)\n",
				s->nsp[w->ns], s->ns_rev[w->ns], m.compact_revision);
			w->outcome = WATCH_COMPACTED;
		} else {
			pr_warn("etcd watch %s canceled: %s\n", s->nsp[w->ns],
				m.error[0] ? m.error : "no reason given");
			w->outcome = WATCH_LOST;
		}
		dmsc_etcd_watch_msg_free(&m);
		return -ECANCELED;
	}
	pthread_mutex_lock(&s->lock);
	for (i = 0; i < m.n_events; i++) {
		const struct dmsc_etcd_kv *kv = &m.events[i].kv;
		int r;

		s->events++;
		if (kv->mod_rev > s->ns_rev[w->ns])
			s->ns_rev[w->ns] = kv->mod_rev;
		if (m.events[i].deleted) {
			r = w->ns == s->n_ns
				? dmsc_etcd_store_host_delete(&s->store, kv->key, kv->mod_rev)
				: dmsc_etcd_store_delete(&s->store, kv->key, kv->mod_rev);
			pr_debug("etcd: %s deleted at revision %" PRId64 "\n", kv->key,
				 kv->mod_rev);
		} else {
			r = dmsc_etcd_sync_put_kv(s, w->ns, kv);
			pr_debug("etcd: %s put at revision %" PRId64 "\n", kv->key, kv->mod_rev);
		}
		if (r > 0)
			changed = true;
	}
	/* A progress message (no events): every change up to its revision
	 * was sent already. */
	if (!m.n_events && m.revision > s->ns_rev[w->ns])
		s->ns_rev[w->ns] = m.revision;
	if (s->ns_rev[w->ns] > s->revision)
		s->revision = s->ns_rev[w->ns];
	dmsc_etcd_sync_note_answer(s, m.revision, changed, w->chunk_at);
	pthread_mutex_unlock(&s->lock);
	dmsc_etcd_watch_msg_free(&m);
	if (m.created)
		dmsc_etcd_sync_set_connected(s, true, NULL);
	if (changed)
		dmsc_etcd_sync_wake(s);
	return s->stop ? -ECANCELED : 0;
}

static size_t watch_data(char *data, size_t size, size_t nmemb, void *arg)
{
	struct watch *w = arg;
	size_t n = size * nmemb;

	w->chunk_at = dmsc_clock_seconds(CLOCK_REALTIME);
	pthread_mutex_lock(&w->s->lock);
	w->s->bytes_rx += n;
	pthread_mutex_unlock(&w->s->lock);
	if (dmsc_etcd_split(&w->sp, data, n, watch_msg, w)) {
		if (w->outcome == WATCH_OK)
			w->outcome = WATCH_LOST;
		return 0;
	}
	return n;
}

/* One stream per namespace, all on one multi handle; returns when one
 * ends (or on stop) with what happened. */
int dmsc_etcd_sync_watch_all(struct dmsc_etcd_sync *s, char *why, size_t why_len)
{
	struct watch w[DMSC_ETCD_NAMESPACES_MAX + 1] = {0};
	CURLM *multi = curl_multi_init();
	int outcome = WATCH_LOST, running = 1;
	size_t i;

	snprintf(why, why_len, "the watch ended");
	if (!multi)
		return WATCH_LOST;
	for (i = 0; i < s->n_pfx; i++) {
		char *end = dmsc_etcd_prefix_end(s->nsp[i]);

		w[i].s = s;
		w[i].ns = i;
		w[i].sp.max = WATCH_MSG_MAX;
		w[i].body = end ? dmsc_etcd_watch_body(s->nsp[i], end, s->ns_rev[i] + 1) : NULL;
		free(end);
		w[i].curl = curl_easy_init();
		if (!w[i].body || !w[i].curl)
			goto out;
		dmsc_etcd_setup_curl(&s->etcd, w[i].curl, "/watch", w[i].url, sizeof(w[i].url),
				     w[i].cerr);
		curl_easy_setopt(w[i].curl, CURLOPT_POSTFIELDS, w[i].body);
		curl_easy_setopt(w[i].curl, CURLOPT_WRITEFUNCTION, watch_data);
		curl_easy_setopt(w[i].curl, CURLOPT_WRITEDATA, &w[i]);
		curl_easy_setopt(w[i].curl, CURLOPT_PRIVATE, &w[i]);
		curl_multi_add_handle(multi, w[i].curl);
	}
	pthread_mutex_lock(&s->lock);
	s->watch_multi = multi;
	pthread_mutex_unlock(&s->lock);
	while (running && !s->stop && !s->refill) {
		struct watch *ww;
		int res;

		curl_multi_perform(multi, &running);
		while ((ww = dmsc_etcd_next_done(multi, &res))) {
			if (ww->outcome == WATCH_COMPACTED)
				outcome = WATCH_COMPACTED;
			if (res == CURLE_OK) {
				snprintf(why, why_len, "%s: the stream ended", ww->url);
			} else {
				int n = snprintf(why, why_len, "%s: ", ww->url);

				if (n > 0 && (size_t)n < why_len)
					dmsc_etcd_describe(&s->etcd, res, ww->cerr, why + n,
							   why_len - (size_t)n);
			}
			running = 0;
		}
		if (running)
			curl_multi_poll(multi, NULL, 0, WATCH_POLL_MAX_MS, NULL);
	}
	if (s->stop)
		outcome = WATCH_STOPPED;
	else if (s->refill)
		outcome = WATCH_REFILL;
out:
	pthread_mutex_lock(&s->lock);
	s->watch_multi = NULL;
	pthread_mutex_unlock(&s->lock);
	for (i = 0; i < s->n_pfx; i++) {
		if (w[i].curl) {
			curl_multi_remove_handle(multi, w[i].curl);
			curl_easy_cleanup(w[i].curl);
		}
		free(w[i].body);
		dmsc_etcd_splitter_free(&w[i].sp);
	}
	curl_multi_cleanup(multi);
	return outcome;
}
