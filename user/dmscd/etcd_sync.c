// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's etcd source: the reading and watching thread. See etcd_sync.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "clock.h"
#include "etcd_sync.h"
#include "etcd_sync_int.h"
#include "log.h"
#include "mapmem.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define READ_TIMEOUT_MAX_MS 80000
#define VIEW_MSGS_MAX 16
/* Keys a page of a read holds (DMSC_ETCD_PAGE_KEYS): what the apply of a
 * page plans at once, about 6 KB a new service (docs/design.md decision
 * 61). */
#define PAGE_KEYS 1000
#define PAGE_KEYS_MAX 1000000


void dmsc_etcd_sync_wake(struct dmsc_etcd_sync *s)
{
	uint64_t one = 1;

	if (write(s->event_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_warn("etcd: cannot wake the apply: %s\n", strerror(errno));
}

/* Under s->lock: the watch's poll returns now (a stop, a refill). */
static void wake_watch(struct dmsc_etcd_sync *s)
{
	if (s->watch_multi)
		curl_multi_wakeup(s->watch_multi);
}

void dmsc_etcd_sync_set_connected(struct dmsc_etcd_sync *s, bool up, const char *why)
{
	pthread_mutex_lock(&s->lock);
	if (s->connected != up) {
		if (up)
			pr_info("etcd: connected to %s at revision %" PRId64 "\n",
				s->etcd.endpoints[s->etcd.cur], s->revision);
		else
			pr_warn("etcd: disconnected (%s); the datapath keeps its last policy; "
				"retrying\n",
				why);
	}
	s->connected = up;
	pthread_mutex_unlock(&s->lock);
}

/* Under the lock, after an answer of etcd at revision head: a change to
 * the store waits for the apply; with none waiting, the maps are as
 * current as what etcd has said. */
void dmsc_etcd_sync_note_answer(struct dmsc_etcd_sync *s, int64_t head, bool changed, double rx_at)
{
	if (head > s->head)
		s->head = head;
	if (changed && !s->pending_since) {
		s->pending_since = dmsc_now_seconds();
		s->pend_rx = rx_at ? rx_at : dmsc_clock_seconds(CLOCK_REALTIME);
		s->pend_parsed = dmsc_clock_seconds(CLOCK_REALTIME);
		s->pend_view = 0;
	}
	if (!s->pending_since && s->applied != s->head) {
		s->applied = s->head;
		s->applied_at = dmsc_clock_seconds(CLOCK_REALTIME);
	}
}

/* Sleeps ms in short steps, so that a stop is taken quickly. */
static void pause_ms(struct dmsc_etcd_sync *s, int ms)
{
	while (ms > 0 && !s->stop) {
		struct timespec ts = {0, (ms > 50 ? 50 : ms) * 1000000L};

		nanosleep(&ts, NULL);
		ms -= 50;
	}
}

static bool in_range(const char *key, void *arg)
{
	const struct dmsc_etcd_kvs *kvs = arg;
	size_t i;

	for (i = 0; i < kvs->n; i++)
		if (!strcmp(kvs->kv[i].key, key))
			return true;
	return false;
}

/* A page's keys, asked in key order (dmsc_etcd_store_retain_range). */
struct page_keys {
	const struct dmsc_etcd_kvs *kvs;
	size_t at;
};

static bool in_page(const char *key, void *arg)
{
	struct page_keys *pk = arg;
	int c = 1;

	while (pk->at < pk->kvs->n && (c = strcmp(pk->kvs->kv[pk->at].key, key)) < 0)
		pk->at++;
	return pk->at < pk->kvs->n && !c;
}

/* A key of prefix i into the store: a service of a namespace, or a host
 * (PREFIX/hosts/NAME, the last prefix). 1 when the store changed. */
int dmsc_etcd_sync_put_kv(struct dmsc_etcd_sync *s, size_t i, const struct dmsc_etcd_kv *kv)
{
	const char *name = dmsc_etcd_key_name(kv->key, s->nsp[i]);

	if (!name) {
		pr_warn("etcd key %s: not %s; ignored\n", kv->key,
			i == s->n_ns ? "PREFIX/hosts/NAME" : "PREFIX/ns/NS/services/NAME");
		return 0;
	}
	if (i == s->n_ns)
		return dmsc_etcd_store_host_put(&s->store, kv->key, name, kv->value, kv->value_len,
						kv->mod_rev);
	return dmsc_etcd_store_put(&s->store, kv->key, name, kv->value, kv->value_len, kv->mod_rev);
}

/* Under s->lock: a page waiting for its apply goes on. */
static void batch_release(struct dmsc_etcd_sync *s)
{
	if (!s->batch)
		return;
	s->batch = false;
	pthread_cond_broadcast(&s->batch_done);
}

/* The keys a page changed go to the apply; returns once they are in the
 * maps (or the apply gave up on them, or a stop). */
static void page_apply(struct dmsc_etcd_sync *s)
{
	pthread_mutex_lock(&s->lock);
	s->batch = true;
	pthread_mutex_unlock(&s->lock);
	dmsc_etcd_sync_wake(s);
	pthread_mutex_lock(&s->lock);
	while (s->batch && !s->stop)
		pthread_cond_wait(&s->batch_done, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

/* The kernel suite's way to change etcd between two pages: the read
 * waits while the file DMSC_TEST_ETCD_PAGE_HOLD names exists (30 s at
 * most). */
static void page_hold(struct dmsc_etcd_sync *s)
{
	int i;

	for (i = 0; s->page_hold && i < 3000 && !s->stop && !access(s->page_hold, F_OK); i++) {
		struct timespec ts = {0, 10 * 1000000L};

		if (!i)
			pr_info("etcd: %s exists: the next page waits\n", s->page_hold);
		nanosleep(&ts, NULL);
	}
}

static int by_prefix(const void *a, const void *b, void *arg)
{
	char *const *nsp = arg;

	return strcmp(nsp[*(const size_t *)a], nsp[*(const size_t *)b]);
}

/* One namespace a page at a time at revision *rev (0: the first answer's,
 * set); once a page's worth of changes waits, they are applied before the
 * next page is read, and the keys a page covers that it does not hold
 * leave the store (the maps keep them until the read is in). */
static int read_namespace(struct dmsc_etcd_sync *s, size_t ns, int64_t *rev, bool *changed,
			  size_t *pages)
{
	char *end = dmsc_etcd_prefix_end(s->nsp[ns]), *after = NULL;
	struct dmsc_etcd_kvs kvs = {0};
	bool more = true;
	size_t j;
	int e = end ? 0 : -ENOMEM;

	while (!e && more && !s->stop) {
		struct page_keys pk = {&kvs, 0};
		bool batch;

		if (after)
			page_hold(s);
		/* from the last key of the page before, which is skipped */
		e = dmsc_etcd_range(&s->etcd, after ? after : s->nsp[ns], end, *rev,
				    (int64_t)s->page + (after ? 1 : 0), &kvs);
		if (e)
			break;
		if (!*rev)
			*rev = kvs.revision;
		more = kvs.more && kvs.n;
		pthread_mutex_lock(&s->lock);
		for (j = 0; j < kvs.n; j++)
			if ((!after || strcmp(kvs.kv[j].key, after)) && dmsc_etcd_sync_put_kv(s, ns, &kvs.kv[j]) > 0)
				*changed = true;
		if (dmsc_etcd_store_retain_range(&s->store, s->nsp[ns], after,
						 more ? kvs.kv[kvs.n - 1].key : NULL, in_page,
						 &pk) > 0)
			*changed = true;
		/* a page's worth of changes is applied before the next page;
		 * fewer wait for the next pages or the read's end (a small
		 * read is applied once, when it is in) */
		batch = s->store.n_dirty >= s->page;
		if (batch)
			dmsc_etcd_sync_note_answer(s, *rev, true, 0);
		pthread_mutex_unlock(&s->lock);
		(*pages)++;
		free(after);
		after = more ? strdup(kvs.kv[kvs.n - 1].key) : NULL;
		dmsc_etcd_kvs_free(&kvs);
		if (more && !after)
			e = -ENOMEM;
		if (!e && batch)
			page_apply(s);
	}
	free(after);
	free(end);
	return e;
}

/* Every namespace (and the hosts) at one revision, a page at a time; the
 * store takes only what differs. */
static int full_read(struct dmsc_etcd_sync *s)
{
	struct dmsc_etcd_kvs kvs = {0};
	size_t order[DMSC_ETCD_NAMESPACES_MAX], i, j, pages = 0;
	uint64_t rx0 = s->etcd.bytes_rx;
	int64_t rev = 0;
	bool changed = false;
	int e = 0;

	pthread_mutex_lock(&s->lock);
	s->streaming = true;
	s->lean = false;
	s->store.refill = s->refill;
	pthread_mutex_unlock(&s->lock);
	/* the hosts first, whole (a key per host): the read's revision is
	 * theirs, and every page of services resolves its hosts */
	if (s->n_pfx > s->n_ns) {
		e = dmsc_etcd_range_prefix(&s->etcd, s->nsp[s->n_ns], 0, &kvs);
		if (e)
			goto out;
		rev = kvs.revision;
		pthread_mutex_lock(&s->lock);
		for (j = 0; j < kvs.n; j++)
			if (dmsc_etcd_sync_put_kv(s, s->n_ns, &kvs.kv[j]) > 0)
				changed = true;
		if (dmsc_etcd_store_host_retain(&s->store, in_range, &kvs) > 0)
			changed = true;
		pthread_mutex_unlock(&s->lock);
		dmsc_etcd_kvs_free(&kvs);
	}
	/* the namespaces in key order: a key is left out for the name or
	 * vip:port of an earlier key, and every earlier key is in by then */
	for (i = 0; i < s->n_ns; i++)
		order[i] = i;
	qsort_r(order, s->n_ns, sizeof(order[0]), by_prefix, s->nsp);
	for (i = 0; i < s->n_ns && !e && !s->stop; i++)
		e = read_namespace(s, order[i], &rev, &changed, &pages);
	if (e || s->stop)
		goto out;
	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->n_pfx; i++)
		s->ns_rev[i] = rev;
	if (s->store.refill) {
		changed = true; /* the apply waits for these services */
		s->store.refill = false;
		s->refill = 0;
	}
	if (rev > s->revision)
		s->revision = rev;
	/* the first read is applied even when nothing changed */
	dmsc_etcd_sync_note_answer(s, rev, changed || !s->full_reads, 0);
	s->full_reads++;
	s->read_whole = true;
	s->streaming = false;
	s->lean = true;
	pthread_mutex_unlock(&s->lock);
	pr_info("etcd: read %zu namespace%s%s at revision %" PRId64 "%s\n", s->n_ns,
		s->n_ns == 1 ? "" : "s", s->n_pfx > s->n_ns ? " and the hosts" : "", rev,
		changed ? "" : " (nothing changed)");
	pr_debug("etcd: the read took %zu page%s of up to %zu keys\n", pages,
		 pages == 1 ? "" : "s", s->page);
	dmsc_etcd_sync_wake(s); /* the first read is applied even when it is empty */
out:
	pthread_mutex_lock(&s->lock);
	s->bytes_rx += s->etcd.bytes_rx - rx0;
	pthread_mutex_unlock(&s->lock);
	dmsc_etcd_kvs_free(&kvs);
	return e;
}

static void *sync_thread(void *arg)
{
	struct dmsc_etcd_sync *s = arg;
	bool need_read = true;
	int backoff = BACKOFF_MIN_MS;
	char why[640];

	while (!s->stop) {
		int outcome;

		if (need_read) {
			if (full_read(s)) {
				dmsc_etcd_sync_set_connected(s, false, s->etcd.err);
				/* a large namespace on a busy etcd may take longer
				 * to read than one request is given: each failed
				 * read gives the next one twice as long */
				if (s->etcd.timeout_ms < READ_TIMEOUT_MAX_MS)
					s->etcd.timeout_ms *= 2;
				pr_info("etcd: %s; next try in %d ms (reads wait up to %ld ms)\n",
					s->etcd.err, backoff, s->etcd.timeout_ms);
				pause_ms(s, backoff);
				backoff =
				    backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
				continue;
			}
			need_read = false;
			backoff = BACKOFF_MIN_MS;
			dmsc_etcd_sync_set_connected(s, true, NULL);
		}
		outcome = dmsc_etcd_sync_watch_all(s, why, sizeof(why));
		if (outcome == WATCH_STOPPED)
			break;
		if (outcome == WATCH_REFILL) {
			need_read = true;
			continue;
		}
		pthread_mutex_lock(&s->lock);
		s->reconnects++;
		if (outcome == WATCH_COMPACTED)
			s->compactions++;
		pthread_mutex_unlock(&s->lock);
		if (outcome == WATCH_COMPACTED) {
			need_read = true;
			continue;
		}
		/* a stream that was up: the first retry comes soon */
		if (s->connected)
			backoff = BACKOFF_MIN_MS;
		dmsc_etcd_sync_set_connected(s, false, why);
		/* next endpoint; resume from the revisions seen */
		s->etcd.cur = (s->etcd.cur + 1) % s->etcd.n_endpoints;
		pr_info("etcd: resuming the watch after revision %" PRId64 " in %d ms\n",
			s->ns_rev[0], backoff);
		pause_ms(s, backoff);
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

int dmsc_etcd_sync_start(struct dmsc_etcd_sync *s, const char *urls,
			 const struct dmsc_etcd_tls *tls, const char *prefix,
			 const char *const *namespaces, size_t n_ns, bool keep_parsed)
{
	const char *env;
	size_t i;
	int e;

	memset(s, 0, sizeof(*s));
	s->event_fd = -1;
	s->store.fp_of = dmsc_policy_service_fp;
	s->store.keep_all = keep_parsed;
	s->page = PAGE_KEYS;
	env = getenv("DMSC_ETCD_PAGE_KEYS");
	if (env && *env) {
		char *end;
		unsigned long v = strtoul(env, &end, 10);

		if (*end || !v || v > PAGE_KEYS_MAX) {
			pr_warn("DMSC_ETCD_PAGE_KEYS=%s: give 1 to %d keys a page\n", env,
				PAGE_KEYS_MAX);
			return -EINVAL;
		}
		s->page = v;
	}
	s->page_hold = getenv("DMSC_TEST_ETCD_PAGE_HOLD");
	if (!n_ns || n_ns > DMSC_ETCD_NAMESPACES_MAX) {
		pr_warn("--namespace: give 1 to %d\n", DMSC_ETCD_NAMESPACES_MAX);
		return -EINVAL;
	}
	e = dmsc_etcd_init(&s->etcd, urls, tls);
	if (e) {
		pr_warn("%s\n", s->etcd.err);
		return e;
	}
	s->prefix = prefix;
	for (i = 0; i < n_ns; i++) {
		if (!dmsc_etcd_ns_valid(namespaces[i])) {
			pr_warn("--namespace: \"%s\" is not a namespace (1-%d of a-z 0-9 . _ -)\n",
				namespaces[i], DMSC_ETCD_NS_MAX);
			e = -EINVAL;
			goto fail;
		}
		s->nsp[i] = dmsc_etcd_ns_prefix(prefix, namespaces[i]);
		if (!s->nsp[i]) {
			e = -ENOMEM;
			goto fail;
		}
		s->n_ns++;
	}
	s->n_pfx = s->n_ns;
	/* with the tunnel (which keeps every service parsed), the hosts'
	 * tunnel addresses too (docs/design.md decision 55) */
	if (keep_parsed) {
		s->nsp[s->n_ns] = dmsc_etcd_hosts_prefix(prefix);
		if (!s->nsp[s->n_ns]) {
			e = -ENOMEM;
			goto fail;
		}
		s->n_pfx++;
	}
	s->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->event_fd < 0) {
		e = -errno;
		goto fail;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->batch_done, NULL);
	e = -pthread_create(&s->thread, NULL, sync_thread, s);
	if (e)
		goto fail;
	s->started = true;
	return 0;
fail:
	dmsc_etcd_sync_stop(s);
	return e;
}

int dmsc_etcd_sync_fd(const struct dmsc_etcd_sync *s)
{
	return s->event_fd;
}

void dmsc_etcd_sync_take(struct dmsc_etcd_sync *s)
{
	uint64_t n;

	if (read(s->event_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		pr_warn("etcd: eventfd: %s\n", strerror(errno));
}

/* A view of: every key; the changed keys; the changed keys with every
 * key kept parsed; a page's changed keys; after a read, the parsed keys
 * with every key's digest kept. */
enum { VIEW_WHOLE, VIEW_CHANGED, VIEW_PARSED, VIEW_PAGE, VIEW_LEAN };

/* Under s->lock, after a view of the parsed keys: the digest of every key
 * the whole view would hold, in the same order (mapped on its own when
 * large: 40 bytes a key, against the whole view's 280). */
static int keep_digests(struct dmsc_etcd_sync *s, struct dmsc_svc_digest **keep, size_t *n_keep)
{
	size_t i, n = 0;

	*keep = dmsc_mapmem_calloc(s->store.n + 1, sizeof(**keep));
	if (!*keep)
		return -ENOMEM;
	for (i = 0; i < s->store.n; i++) {
		const struct dmsc_etcd_entry *en = &s->store.e[i];
		struct dmsc_policy_service v;

		if (!en->valid || en->dropped)
			continue;
		dmsc_etcd_entry_service(en, &v);
		dmsc_policy_svc_key(&v, &(*keep)[n].key);
		memcpy((*keep)[n].vip6, v.vip6, sizeof((*keep)[n].vip6));
		(*keep)[n++].fp = en->fp;
	}
	*n_keep = n;
	return 0;
}

int dmsc_etcd_sync_view(struct dmsc_etcd_sync *s, struct dmsc_policy *out,
			struct dmsc_svc_digest **d, bool *changed_only,
			struct dmsc_svc_digest **keep, size_t *n_keep)
{
	char *msgs[VIEW_MSGS_MAX];
	uint64_t *fps = NULL;
	size_t n = 0, i;
	int e = -EAGAIN;

	*d = NULL;
	*keep = NULL;
	*n_keep = 0;
	pthread_mutex_lock(&s->lock);
	if (s->pending_since && !s->pend_view)
		s->pend_view = dmsc_clock_seconds(CLOCK_REALTIME);
	s->view_kind = VIEW_WHOLE;
	if (s->streaming) {
		/* a read under way: what its pages changed, nothing removed */
		s->view_kind = VIEW_PAGE;
		e = dmsc_etcd_store_view_some(&s->store, false, out, &fps, msgs, VIEW_MSGS_MAX, &n);
	} else if (s->lean && s->store.fp_of && !s->store.keep_all) {
		/* a read is in: the parsed keys, every key kept, the rest
		 * removed (not a view of every key: 280 bytes a key) */
		s->view_kind = VIEW_LEAN;
		e = dmsc_etcd_store_view_some(&s->store, true, out, &fps, msgs, VIEW_MSGS_MAX, &n);
		if (!e && keep_digests(s, keep, n_keep)) {
			dmsc_etcd_store_view_free(out, fps);
			fps = NULL;
			e = -ENOMEM;
		}
	} else if (*changed_only && !s->read_whole && !s->refill) {
		/* not after a read of every namespace: the maps get its whole
		 * policy (a refill among others) */
		bool parsed;

		e = dmsc_etcd_store_view_changed(&s->store, out, &fps, &parsed);
		if (!e)
			s->view_kind = parsed ? VIEW_PARSED : VIEW_CHANGED;
	}
	if (e == -EAGAIN)
		e = dmsc_etcd_store_view(&s->store, out, &fps, msgs, VIEW_MSGS_MAX, &n);
	*changed_only = !e && s->view_kind != VIEW_WHOLE;
	for (i = 0; i < n; i++) {
		pr_warn("%s\n", msgs[i]);
		free(msgs[i]);
	}
	if (!e) {
		/* the digests from the fingerprints kept: no service is
		 * fingerprinted again */
		*d = dmsc_mapmem_calloc(out->n_services + 1, sizeof(**d));
		if (!*d) {
			dmsc_etcd_store_view_free(out, NULL);
			e = -ENOMEM;
		}
	}
	for (i = 0; !e && i < out->n_services; i++) {
		const struct dmsc_policy_service *v = &out->services[i];

		dmsc_policy_svc_key(v, &(*d)[i].key);
		memcpy((*d)[i].vip6, v->vip6, sizeof((*d)[i].vip6));
		(*d)[i].fp = fps[i];
	}
	dmsc_mapmem_free(fps);
	if (e) {
		dmsc_mapmem_free(*keep);
		*keep = NULL;
		*n_keep = 0;
		batch_release(s);
		pthread_mutex_unlock(&s->lock);
	}
	return e;
}

bool dmsc_etcd_sync_view_ready(struct dmsc_etcd_sync *s, struct dmsc_mirror *m,
			       const struct dmsc_datapath *dp, size_t n,
			       const struct dmsc_svc_digest *d)
{
	size_t i, k = 0, missing = 0;
	bool in_step;

	if (!s->store.n_slim)
		return true;
	in_step = dmsc_mirror_in_step(m, dp);
	/* the view's services are the valid entries not left out, in order */
	for (i = 0; in_step && i < s->store.n && k < n; i++) {
		const struct dmsc_etcd_entry *en = &s->store.e[i];

		if (!en->valid || en->dropped)
			continue;
		if (!en->svc && !dmsc_mirror_holds(m, &d[k], k))
			missing++;
		k++;
	}
	if (in_step && !missing)
		return true;
	pr_info("etcd: the maps are not as dmscd last wrote them (%s): reading the namespaces "
		"again to apply their services whole\n",
		in_step ? "services it held are gone or out of date" : "another writer");
	s->refill = 1;
	wake_watch(s); /* the lock is held since the view */
	return false;
}

void dmsc_etcd_sync_applied(struct dmsc_etcd_sync *s, bool changed_only)
{
	(void)changed_only;
	s->changed_views += s->view_kind == VIEW_CHANGED || s->view_kind == VIEW_PARSED;
	/* the read is in the maps, what is gone removed */
	if (s->view_kind == VIEW_WHOLE || s->view_kind == VIEW_LEAN)
		s->lean = false;
	/* the lock is held since the view: nothing arrived meanwhile */
	if (s->pending_since) {
		s->last_rx = s->pend_rx;
		s->last_parsed = s->pend_parsed;
		s->last_view = s->pend_view;
	}
	s->pending_since = 0;
	s->applied = s->head;
	s->applied_at = dmsc_clock_seconds(CLOCK_REALTIME);
	/* the maps and the mirror hold them now */
	dmsc_etcd_store_slim(&s->store);
}

bool dmsc_etcd_sync_view_follows(const struct dmsc_etcd_sync *s)
{
	return s->view_kind == VIEW_WHOLE || s->view_kind == VIEW_PARSED ||
	       s->view_kind == VIEW_LEAN;
}

bool dmsc_etcd_sync_view_done(struct dmsc_etcd_sync *s, struct dmsc_policy *out,
			      struct dmsc_svc_digest *d, struct dmsc_svc_digest *keep)
{
	bool read_whole = s->read_whole;

	dmsc_etcd_store_view_free(out, NULL);
	dmsc_mapmem_free(d);
	dmsc_mapmem_free(keep);
	s->read_whole = false;
	batch_release(s);
	pthread_mutex_unlock(&s->lock);
	return read_whole;
}

void dmsc_etcd_sync_metrics(struct dmsc_etcd_sync *s, struct dmsc_buf *b)
{
	static const char *const stages[] = {"received", "parsed", "apply_started"};
	size_t i;

	pthread_mutex_lock(&s->lock);
	dmsc_prom_single(b, "dmsc_etcd_connected", "gauge",
			 "1 while dmscd reads and watches etcd, 0 while it retries", s->connected);
	dmsc_prom_single(b, "dmsc_etcd_revision", "gauge",
			 "the highest etcd revision seen (events and progress)",
			 (uint64_t)s->revision);
	dmsc_prom_single(b, "dmsc_etcd_applied_revision", "gauge",
			 "every change up to this etcd revision is in the maps (or was refused)",
			 (uint64_t)s->applied);
	dmsc_prom_single_f(b, "dmsc_etcd_applied_timestamp_seconds", "gauge",
			   "when the maps reached dmsc_etcd_applied_revision (0: not yet)",
			   s->applied_at);
	dmsc_prom_family(b, "dmsc_etcd_applied_stage_timestamp_seconds", "gauge",
			 "the last apply of changes from etcd: when the oldest of them was "
			 "received (its watch data read), parsed into the store, and taken by "
			 "the apply (stage: received, parsed, apply_started); 0: none yet");
	for (i = 0; i < 3; i++) {
		struct dmsc_prom_label l = {"stage", stages[i]};

		dmsc_prom_sample_f(b, "dmsc_etcd_applied_stage_timestamp_seconds", &l, 1,
				   i == 0   ? s->last_rx
				   : i == 1 ? s->last_parsed
					    : s->last_view);
	}
	dmsc_prom_single(b, "dmsc_etcd_lag_revisions", "gauge",
			 "etcd revisions received but not in the maps yet: the highest "
			 "header revision etcd reported minus dmsc_etcd_applied_revision",
			 (uint64_t)(s->head > s->applied ? s->head - s->applied : 0));
	dmsc_prom_single_f(b, "dmsc_etcd_lag_seconds", "gauge",
			   "how long the oldest change received has waited for the maps "
			   "(0: none waits)",
			   s->pending_since ? dmsc_now_seconds() - s->pending_since : 0);
	dmsc_prom_single(b, "dmsc_etcd_events_total", "counter",
			 "watch events received (puts and deletes)", s->events);
	dmsc_prom_single(b, "dmsc_etcd_received_bytes_total", "counter",
			 "bytes received from etcd: watch streams and reads", s->bytes_rx);
	dmsc_prom_single(b, "dmsc_etcd_reconnects_total", "counter",
			 "watch streams lost and opened again", s->reconnects);
	dmsc_prom_single(b, "dmsc_etcd_full_reads_total", "counter",
			 "reads of every namespace (start, compaction)", s->full_reads);
	dmsc_prom_single(b, "dmsc_etcd_refused_values_total", "counter",
			 "service values refused (invalid; the key is in the log)",
			 s->store.refused);
	dmsc_prom_single(b, "dmsc_etcd_keys", "gauge", "service keys held", s->store.n);
	dmsc_prom_single(b, "dmsc_etcd_changed_key_applies_total", "counter",
			 "applies that took a view of the changed keys only, not of every key",
			 s->changed_views);
	pthread_mutex_unlock(&s->lock);
}

void dmsc_etcd_sync_stop(struct dmsc_etcd_sync *s)
{
	size_t i;

	s->stop = 1;
	if (s->started) {
		pthread_mutex_lock(&s->lock);
		wake_watch(s);
		pthread_cond_broadcast(&s->batch_done); /* a page waiting for its apply */
		pthread_mutex_unlock(&s->lock);
	}
	if (s->started)
		pthread_join(s->thread, NULL);
	s->started = false;
	for (i = 0; i < sizeof(s->nsp) / sizeof(s->nsp[0]); i++) {
		free(s->nsp[i]);
		s->nsp[i] = NULL;
	}
	s->n_ns = s->n_pfx = 0;
	if (s->event_fd >= 0)
		close(s->event_fd);
	s->event_fd = -1;
	dmsc_etcd_store_free(&s->store);
	dmsc_etcd_free(&s->etcd);
}
