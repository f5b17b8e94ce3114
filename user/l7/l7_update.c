// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A change of values taken in place (docs/design.md decision 85). dmscd
 * sends the helper a new view (the message "policy N" with its sealed
 * memfd, as it does the tunnel: decision 83) only when it differs from the
 * last one in values alone (dmsc_l7_view_values_only: backends' weights,
 * routes' timeout_ms and retries, services' rate_limit); any other change
 * replaces the helper. The helper checks that again, builds the new
 * routing tables aside and copies their values over the running ones: the
 * pick tables slot by slot, the rest field by field (relaxed atomics; the
 * request buckets under their lock). The services, routes and backends
 * keep their places, so nothing a connection, a stream, a metric or a
 * health table holds changes; a worker that picks during the copy gets a
 * backend of the old table or of the new one, both valid. Each policy is
 * answered, "ok N" or "fail N: why", upon which dmscd replaces the helper.
 */
#define _GNU_SOURCE
#include "fd_pass.h"
#include "l7_proxy.h"
#include "l7_snapshot.h"
#include "prom.h"

static char *view_text; /* the view the tables were built from, NUL-terminated */
static unsigned long long taken, failed;

/* The whole of fd from its start, NUL-terminated (free()), or NULL. */
static char *read_all(int fd)
{
	size_t len = 0, cap = 0;
	char *text = NULL;
	ssize_t n;

	for (;;) {
		char *p = dmsc_bytes_room(text, &cap, len + 4097, 4096);

		if (!p) {
			free(text);
			return NULL;
		}
		text = p;
		n = pread(fd, text + len, cap - len - 1, (off_t)len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(text);
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	text[len] = '\0';
	return text;
}

int l7_update_keep_view(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	free(view_text);
	view_text = read_all(fd);
	close(fd);
	return view_text ? 0 : -ENOMEM;
}

static void pick_copy(struct dmsc_l7_pick *to, const struct dmsc_l7_pick *from)
{
	size_t i;

	for (i = 0; i < DMSC_SLOTS; i++)
		__atomic_store_n(&to->slot[i], from->slot[i], __ATOMIC_RELAXED);
	__atomic_store_n(&to->empty, from->empty, __ATOMIC_RELAXED);
}

#define STORE(field, from) __atomic_store_n(&(field), (from), __ATOMIC_RELAXED)

/* One service's values from n (the same places): weights and their pick
 * tables, routes' timeouts and retries, the request limit (its bucket
 * keeps its tokens, up to a new depth; a new limit starts full). */
static void values_copy(struct dmsc_l7_service *s, const struct dmsc_l7_service *n,
			struct svc_rt *rt)
{
	struct dmsc_policy_backend *b = cfg.policy.services[s->src - cfg.policy.services].backends;
	size_t j;

	for (j = 0; j < s->src->n_backends; j++)
		STORE(b[j].weight, n->src->backends[j].weight);
	pick_copy(&s->pick, &n->pick);
	for (j = 0; j < s->n_routes; j++) {
		struct dmsc_l7_route *r = &s->routes[j];

		pick_copy(&r->pick, &n->routes[j].pick);
		STORE(r->timeout_ms, n->routes[j].timeout_ms);
		STORE(r->has_timeout_ms, n->routes[j].has_timeout_ms);
		STORE(r->retries, n->routes[j].retries);
		STORE(r->has_retries, n->routes[j].has_retries);
	}
	pthread_mutex_lock(&rt->lock);
	if (n->has_request_limit && !s->has_request_limit)
		rt->bucket = (struct dmsc_tb){0};
	rt->rate = n->requests_per_second;
	rt->depth = dmsc_tb_request_depth(n->requests_per_second, n->burst);
	STORE(s->requests_per_second, n->requests_per_second);
	STORE(s->burst, n->burst);
	STORE(s->has_request_limit, n->has_request_limit);
	pthread_mutex_unlock(&rt->lock);
}

/* Do the tables of next have the places of the running ones? */
static bool same_places(const struct dmsc_l7_config *next)
{
	size_t i, j;

	if (next->n_svcs != cfg.n_svcs)
		return false;
	for (i = 0; i < cfg.n_svcs; i++) {
		const struct dmsc_l7_service *a = &cfg.svcs[i], *b = &next->svcs[i];

		if (a->vip != b->vip || a->vport != b->vport || a->n_routes != b->n_routes ||
		    a->src->n_backends != b->src->n_backends ||
		    a->pick.n_backends != b->pick.n_backends)
			return false;
		for (j = 0; j < a->n_routes; j++)
			if (a->routes[j].pick.n_backends != b->routes[j].pick.n_backends)
				return false;
	}
	return true;
}

/* The policy in fd: its values taken, or why not into why. */
static int take_values(int fd, char *why, size_t len)
{
	struct dmsc_l7_config next = {0};
	struct dmsc_policy p = {0};
	char *text = read_all(fd);
	size_t i;
	int err;

	if (!text) {
		snprintf(why, len, "cannot read it: %s", strerror(errno ? errno : ENOMEM));
		return -EIO;
	}
	if (!view_text || !dmsc_l7_view_values_only(view_text, text)) {
		snprintf(why, len, "more than weights, timeouts, retries and limits changed");
		free(text);
		return -EINVAL;
	}
	err = dmsc_policy_load_fd(fd, DMSC_POLICY_HOSTS_ELSEWHERE, &p, why, len);
	if (err) {
		free(text);
		return err;
	}
	err = dmsc_l7_config_build(&next, &p);
	if (err || !same_places(&next)) {
		snprintf(why, len, err ? "out of memory" : "its services or routes moved");
		dmsc_l7_config_free(&next);
		dmsc_policy_free(&p);
		free(text);
		return err ? err : -EINVAL;
	}
	for (i = 0; i < cfg.n_svcs; i++)
		values_copy(&cfg.svcs[i], &next.svcs[i], &svc_rt[i]);
	dmsc_l7_config_free(&next);
	dmsc_policy_free(&p);
	free(view_text);
	view_text = text;
	return 0;
}

static int take(void *ctx, int fd, const char *msg, char *why, size_t len)
{
	int err = take_values(fd, why, len);

	(void)ctx;
	if (err) {
		failed++;
		pr_warn("cannot take %s in place: %s; serving the last one\n", msg, why);
		return err;
	}
	taken++;
	pr_info("%s taken in place: the weights, timeouts, retries and limits of %zu service%s; "
		"every connection kept\n",
		msg, cfg.n_svcs, cfg.n_svcs == 1 ? "" : "s");
	return 0;
}

void l7_policy_updates(int *sock)
{
	dmsc_policy_updates_serve(sock, take, NULL, "dmsc-l7");
}

void l7_update_metrics(struct dmsc_buf *b)
{
	int k;

	dmsc_prom_family(b, "dmsc_l7_policy_updates_total", "counter",
			 "Changes of weights dmscd handed this helper in place, by result "
			 "(failed: dmscd replaced it).");
	for (k = 0; k < 2; k++) {
		struct dmsc_prom_label l = {"result", k ? "failed" : "taken"};

		dmsc_prom_sample(b, "dmsc_l7_policy_updates_total", &l, 1, k ? failed : taken);
	}
}
