// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's buffers, metrics and epoll registration (tunnel_int.h). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "array.h"
#include "hash.h"
#include "log.h"
#include "mtls_cert.h"
#include "prom.h"
#include "tunnel.h"
#include "tunnel_authz.h"
#include "tunnel_int.h"

uint64_t tn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- buffers ---- */

/* Room in a held buffer: its bytes to a new block (of the same size when
 * they fit, so that a buffer held again and again does not grow), every
 * block before kept as it is until the holder lets go. Not only the first:
 * OpenSSL's retry finishes the write it holds, goes on with the bytes of
 * the address it is given now, and may stop there in turn. */
static int buf_reserve_held(struct buf *b, size_t more)
{
	size_t need = b->len + more, cap = b->cap;
	uint8_t **r, *p;

	if (need > cap)
		cap = need < 2 * cap ? 2 * cap : need;
	r = realloc(b->retired, (b->n_retired + 1) * sizeof(*r));
	if (!r)
		return -ENOMEM;
	b->retired = r;
	p = malloc(cap);
	if (!p)
		return -ENOMEM;
	memcpy(p, b->p + b->off, b->len);
	r[b->n_retired++] = b->p;
	b->p = p;
	b->off = 0;
	b->cap = cap;
	return 0;
}

int tn_buf_reserve(struct buf *b, size_t more)
{
	size_t need;
	uint8_t *p;

	if (b->off + b->len + more <= b->cap)
		return 0;
	if (b->held)
		return buf_reserve_held(b, more);
	/* what is left moves to the front when it is no more than what was
	 * consumed before it (each byte moved at most about once); else the
	 * buffer grows: a bulk stream's buffers keep a record or a window's
	 * worth queued, which moved before every append was most of the
	 * copying (decision 65) */
	if (b->off && b->len <= b->off) {
		memmove(b->p, b->p + b->off, b->len);
		b->off = 0;
	}
	need = b->off + b->len + more;
	if (need <= b->cap)
		return 0;
	if (need < 2 * b->cap)
		need = 2 * b->cap;
	p = realloc(b->p, need);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = need;
	return 0;
}

int tn_buf_append(struct buf *b, const void *data, size_t n)
{
	if (tn_buf_reserve(b, n))
		return -ENOMEM;
	memcpy(b->p + b->off + b->len, data, n);
	b->len += n;
	return 0;
}

void tn_buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	b->len -= n;
	if (!b->len)
		b->off = 0;
}

/* The holder let go of the buffer's bytes: the blocks kept for it go. */
void tn_buf_release(struct buf *b)
{
	b->held = false;
	while (b->n_retired)
		free(b->retired[--b->n_retired]);
	free(b->retired);
	b->retired = NULL;
}

void tn_buf_free(struct buf *b)
{
	tn_buf_release(b);
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* ---- metrics ---- */

/* the four labels hashed, each with its terminating NUL */
static unsigned int metric_bucket(const char *const labels[4])
{
	uint64_t h = DMSC_FNV1A_INIT;
	int i;

	for (i = 0; i < 4; i++)
		h = dmsc_fnv1a(h, labels[i], strlen(labels[i]) + 1);
	return (unsigned int)((h ^ (h >> 32)) % METRIC_BUCKETS);
}

static int metric_find(const struct tunnel *t, unsigned int b, const char *const l[4])
{
	int i;

	for (i = t->metric_heads[b] - 1; i >= 0; i = t->metrics[i].next) {
		const struct metric *m = &t->metrics[i];

		if (!strcmp(m->identity, l[2]) && !strcmp(m->peer, l[1]) &&
		    !strcmp(m->verdict, l[3]) && !strcmp(m->side, l[0]))
			return i;
	}
	return -1;
}

static int metric_add(struct tunnel *t, unsigned int b, const char *const l[4])
{
	struct metric *arr = dmsc_array_room(t->metrics, t->n_metrics, &t->cap_metrics,
					     sizeof(*arr), 64);
	struct metric *m;

	if (!arr)
		return -1;
	t->metrics = arr;
	m = &arr[t->n_metrics];
	memset(m, 0, sizeof(*m));
	m->peer = strdup(l[1]);
	m->identity = strdup(l[2]);
	if (!m->peer || !m->identity) {
		free(m->peer);
		free(m->identity);
		return -1;
	}
	snprintf(m->side, sizeof(m->side), "%s", l[0]);
	snprintf(m->verdict, sizeof(m->verdict), "%s", l[3]);
	m->next = t->metric_heads[b] - 1;
	t->metric_heads[b] = (int)++t->n_metrics;
	return (int)t->n_metrics - 1;
}

/* One more stream counted in its row of dmsc_tunnel_streams_total, the row
 * made on its first count: its index, or -1 when out of memory. Past
 * METRICS_MAX rows a new pair is counted as peer and identity "(other)",
 * said once in the log: the counts stay true, and the table bounded. */
int tn_metric_count(struct tunnel *t, const char *side, const char *peer, const char *identity,
		    const char *verdict)
{
	const char *l[4] = {side, peer, identity, verdict};
	unsigned int b = metric_bucket(l);
	int i = metric_find(t, b, l);

	if (i < 0 && t->n_metrics >= METRICS_MAX) {
		if (!t->metrics_full_said)
			pr_warn("tunnel: %d rows of stream metrics: streams of further peers and "
				"identities are counted as \"" METRIC_OTHER "\"\n",
				METRICS_MAX);
		t->metrics_full_said = true;
		l[1] = l[2] = METRIC_OTHER; /* a row per side and verdict at most */
		b = metric_bucket(l);
		i = metric_find(t, b, l);
	}
	if (i < 0)
		i = metric_add(t, b, l);
	if (i >= 0)
		t->metrics[i].n++;
	return i;
}

void tn_metrics_free(struct tunnel *t)
{
	size_t i;

	for (i = 0; i < t->n_metrics; i++) {
		free(t->metrics[i].peer);
		free(t->metrics[i].identity);
	}
	free(t->metrics);
}

void tn_metrics_write(struct tunnel *t)
{
	static const char *const results[] = {"ok", "refused", "resumed"};
	struct dmsc_buf b = {0};
	char tmp[4096];
	size_t i, r;
	FILE *f;
	int s;

	if (!t->metrics_file)
		return;
	dmsc_prom_family(&b, "dmsc_tunnel_streams_total", "counter",
			 "Tunnel streams by side, peer host, vouched identity and verdict.");
	for (i = 0; i < t->n_metrics; i++) {
		struct dmsc_prom_label l[] = {{"side", t->metrics[i].side},
					      {"peer", t->metrics[i].peer},
					      {"identity", t->metrics[i].identity},
					      {"verdict", t->metrics[i].verdict}};

		dmsc_prom_sample(&b, "dmsc_tunnel_streams_total", l, 4, t->metrics[i].n);
	}
	dmsc_prom_family(&b, "dmsc_tunnel_handshakes_total", "counter",
			 "TLS handshakes with peers by our side and result.");
	for (s = 0; s < 2; s++) {
		const unsigned long long n[] = {t->hs_ok[s], t->hs_refused[s], t->hs_resumed[s]};

		for (r = 0; r < 3; r++) {
			struct dmsc_prom_label l[] = {{"side", s ? "server" : "client"},
						      {"result", results[r]}};

			dmsc_prom_sample(&b, "dmsc_tunnel_handshakes_total", l, 2, n[r]);
		}
	}
	dmsc_prom_family(&b, "dmsc_tunnel_record_crypto_total", "counter",
			 "TLS connections with peers by direction and who seals or opens "
			 "their records: the kernel (ktls) or OpenSSL (userspace).");
	for (s = 0; s < 2; s++) {
		const unsigned long long n[] = {t->ktls_conns[s], t->user_crypto_conns[s]};

		for (r = 0; r < 2; r++) {
			struct dmsc_prom_label l[] = {{"direction", s ? "receive" : "send"},
						      {"path", r ? "userspace" : "ktls"}};

			dmsc_prom_sample(&b, "dmsc_tunnel_record_crypto_total", l, 2, n[r]);
		}
	}
	dmsc_buf_printf(&b, "# TYPE dmsc_tunnel_bytes_total counter\n");
	dmsc_prom_sample(&b, "dmsc_tunnel_bytes_total",
			 &(struct dmsc_prom_label){"direction", "in"}, 1, t->bytes_in);
	dmsc_prom_sample(&b, "dmsc_tunnel_bytes_total",
			 &(struct dmsc_prom_label){"direction", "out"}, 1, t->bytes_out);
	dmsc_prom_family(&b, "dmsc_tunnel_stream_stalls_total", "counter",
			 "Times a stream stopped reading its local socket: its window at the "
			 "peer was full (window) or its connection's buffer was (connection).");
	dmsc_prom_sample(&b, "dmsc_tunnel_stream_stalls_total",
			 &(struct dmsc_prom_label){"reason", "window"}, 1, t->stalls_window);
	dmsc_prom_sample(&b, "dmsc_tunnel_stream_stalls_total",
			 &(struct dmsc_prom_label){"reason", "connection"}, 1, t->stalls_conn);
	dmsc_prom_family(&b, "dmsc_tunnel_stream_window_changes_total", "counter",
			 "Times a stream's window grew (its sender filled it while the local "
			 "reader kept up) or shrank back (the local reader blocked).");
	dmsc_prom_sample(&b, "dmsc_tunnel_stream_window_changes_total",
			 &(struct dmsc_prom_label){"change", "grown"}, 1, t->window_grown);
	dmsc_prom_sample(&b, "dmsc_tunnel_stream_window_changes_total",
			 &(struct dmsc_prom_label){"change", "shrunk"}, 1, t->window_shrunk);
	dmsc_prom_family(&b, "dmsc_tunnel_stream_window_extra_bytes", "gauge",
			 "What the open streams' windows hold past the initial 256 KiB, together "
			 "(at most 64 MiB).");
	dmsc_prom_sample(&b, "dmsc_tunnel_stream_window_extra_bytes", NULL, 0, t->window_extra);
	dmsc_prom_family(&b, "dmsc_tunnel_policy_updates_total", "counter",
			 "Policies dmscd handed to this tunnel in place (decision 83): taken, or "
			 "not (then it is replaced). Streams reset because a policy taken no "
			 "longer allows their identity: dmsc_tunnel_streams_total{verdict="
			 "\"revoked\"}.");
	dmsc_prom_sample(&b, "dmsc_tunnel_policy_updates_total",
			 &(struct dmsc_prom_label){"result", "taken"}, 1, t->policy_updates[0]);
	dmsc_prom_sample(&b, "dmsc_tunnel_policy_updates_total",
			 &(struct dmsc_prom_label){"result", "failed"}, 1, t->policy_updates[1]);
	dmsc_prom_family(&b, "dmsc_tunnel_accept_pauses_total", "counter",
			 "Accepts that failed for want of a descriptor or memory: the listeners "
			 "then wait until a connection closes.");
	dmsc_prom_sample(&b, "dmsc_tunnel_accept_pauses_total", NULL, 0, t->accept_pauses);
	dmsc_prom_family(&b, "dmsc_tunnel_backend_health_total", "counter",
			 "Passive health of backends on other hosts (decision 78): streams that "
			 "could not reach their backend, counted in its dmsc_be_health entry; "
			 "ejections they made; runs completed with no room under "
			 "max_ejection_percent; a helper's own streams that did not reach theirs, "
			 "told back to it (decision 79).");
	dmsc_prom_sample(&b, "dmsc_tunnel_backend_health_total",
			 &(struct dmsc_prom_label){"event", "connect_failed"}, 1,
			 t->health.failures);
	dmsc_prom_sample(&b, "dmsc_tunnel_backend_health_total",
			 &(struct dmsc_prom_label){"event", "ejected"}, 1, t->health.ejections);
	dmsc_prom_sample(&b, "dmsc_tunnel_backend_health_total",
			 &(struct dmsc_prom_label){"event", "capped"}, 1, t->health.capped);
	dmsc_prom_sample(&b, "dmsc_tunnel_backend_health_total",
			 &(struct dmsc_prom_label){"event", "helper_told"}, 1,
			 t->health.via_failed);
	dmsc_prom_family(&b, "dmsc_tunnel_connect_retries_total", "counter",
			 "Connections handed over whose backend's host could not connect to it, "
			 "or was not reached, before their stream opened (decision 81): moved "
			 "to another backend of their service, or reset as none was left.");
	dmsc_prom_sample(&b, "dmsc_tunnel_connect_retries_total",
			 &(struct dmsc_prom_label){"result", "moved"}, 1, t->repick.moved);
	dmsc_prom_sample(&b, "dmsc_tunnel_connect_retries_total",
			 &(struct dmsc_prom_label){"result", "none_left"}, 1, t->repick.none_left);
	dmsc_buf_printf(&b, "# TYPE dmsc_tunnel_cert_reloads_total counter\n");
	dmsc_prom_sample(&b, "dmsc_tunnel_cert_reloads_total",
			 &(struct dmsc_prom_label){"result", "ok"}, 1, t->reloads);
	dmsc_prom_sample(&b, "dmsc_tunnel_cert_reloads_total",
			 &(struct dmsc_prom_label){"result", "failed"}, 1, t->reload_failures);
	snprintf(tmp, sizeof(tmp), "%s.tmp", t->metrics_file);
	f = b.failed ? NULL : fopen(tmp, "w");
	if (f) {
		bool written = fwrite(b.p, 1, b.len, f) == b.len;

		if (fclose(f) == 0 && written)
			rename(tmp, t->metrics_file);
		else
			unlink(tmp);
	}
	dmsc_buf_free(&b);
}

/* ---- local sockets ---- */

void tn_fd_reset(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* ---- epoll ---- */

void tn_ev_set(struct tunnel *t, struct ev *e, uint32_t events)
{
	struct epoll_event ee = {.events = events, .data.ptr = e};

	if (e->events == events)
		return;
	if (epoll_ctl(t->ep, EPOLL_CTL_MOD, e->fd, &ee))
		pr_warn("tunnel: epoll_ctl(%d): %s\n", e->fd, strerror(errno));
	e->events = events;
}

int tn_ev_add(struct tunnel *t, struct ev *e, enum ev_kind kind, int fd, uint32_t events)
{
	struct epoll_event ee = {.events = events, .data.ptr = e};

	e->kind = kind;
	e->fd = fd;
	e->events = events;
	return epoll_ctl(t->ep, EPOLL_CTL_ADD, e->fd, &ee) ? -errno : 0;
}
