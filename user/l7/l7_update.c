// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A change of weights taken in place (docs/design.md decision 85). dmscd
 * sends the helper a new view (the message "policy N" with its sealed
 * memfd, as it does the tunnel: decision 83) only when it differs from the
 * last one in its backends' weights alone (dmsc_l7_view_weights_only); any
 * other change replaces the helper. The helper checks that again, builds
 * the new routing tables aside and copies their pick tables over the
 * running ones, slot by slot: the services, routes and backends keep their
 * places, so nothing a connection, a stream, a metric or a health table
 * holds changes; a worker that picks during the copy gets a backend of the
 * old table or of the new one, both valid. Each policy is answered,
 * "ok N" or "fail N: why", upon which dmscd replaces the helper.
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

/* The policy in fd: its weights taken, or why not into why
 * (dmsc_policy_take_fn). */
static int take_weights(int fd, char *why, size_t len)
{
	struct dmsc_l7_config next = {0};
	struct dmsc_policy p = {0};
	char *text = read_all(fd);
	size_t i, j;
	int err;

	if (!text) {
		snprintf(why, len, "cannot read it: %s", strerror(errno ? errno : ENOMEM));
		return -EIO;
	}
	if (!view_text || !dmsc_l7_view_weights_only(view_text, text)) {
		snprintf(why, len, "more than the weights changed");
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
	for (i = 0; i < cfg.n_svcs; i++) {
		struct dmsc_l7_service *s = &cfg.svcs[i];
		const struct dmsc_l7_service *n = &next.svcs[i];
		struct dmsc_policy_backend *b =
		    cfg.policy.services[s->src - cfg.policy.services].backends;

		for (j = 0; j < s->src->n_backends; j++)
			__atomic_store_n(&b[j].weight, n->src->backends[j].weight,
					 __ATOMIC_RELAXED);
		pick_copy(&s->pick, &n->pick);
		for (j = 0; j < s->n_routes; j++)
			pick_copy(&s->routes[j].pick, &n->routes[j].pick);
	}
	dmsc_l7_config_free(&next);
	dmsc_policy_free(&p);
	free(view_text);
	view_text = text;
	return 0;
}

static int take(void *ctx, int fd, const char *msg, char *why, size_t len)
{
	int err = take_weights(fd, why, len);

	(void)ctx;
	if (err) {
		failed++;
		pr_warn("cannot take %s in place: %s; serving the last one\n", msg, why);
		return err;
	}
	taken++;
	pr_info("%s taken in place: the weights of %zu service%s; every connection kept\n", msg,
		cfg.n_svcs, cfg.n_svcs == 1 ? "" : "s");
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
