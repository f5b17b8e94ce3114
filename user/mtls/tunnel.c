// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The tunnel between hosts' helpers (tunnel.h, docs/mtls.md#the-tunnel).
 *
 * One thread, one epoll, level-triggered. Objects (listeners, TLS
 * connections, streams) start with a struct ev that epoll's data points to;
 * an object closed while a batch of events is being handled is only marked
 * dead and freed after the batch.
 *
 * Flow control: each side of a stream may send DMSC_TF_WINDOW_INITIAL bytes
 * of DATA, and more as the other side returns WINDOW credit once it has
 * written DMSC_TF_WINDOW_CREDIT_BATCH bytes to its local socket (a batch,
 * not every write: one frame per request would be a TLS record and a
 * wake-up of both sides per request); a stream's buffer towards its local
 * socket is so bounded by the window, which the receiver grows while its
 * local reader keeps up and shrinks back when it stops (docs/design.md
 * decision 69: at most 1 MiB a stream, 64 MiB past the initial windows
 * for all). A TLS connection's outgoing buffer
 * past CONN_OUT_HIGH stops every stream of it from reading its socket, so a
 * slow peer link slows the workloads down instead of filling memory.
 */
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

#include "addr.h"
#include "log.h"
#include "mtls_cert.h"
#include "pin_dir.h"
#include "reuseport.h"
#include "tunnel.h"
#include "tunnel_authz.h"
#include "baton.h"
#include "clock.h"
#include "tunnel_int.h"

/* ---- listeners ---- */

static int listen_on(struct tunnel *t, struct listener *l, const union dmsc_tunnel_sa *sa,
		     enum ev_kind kind)
{
	char a[DMSC_ADDR_PORT_LEN];
	int fd, err;

	dmsc_tunnel_sa_format(sa, a, sizeof(a));
	fd = socket(sa->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){1}, sizeof(int));
	/* a replacement helper binds beside this one while it drains */
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &(int){1}, sizeof(int));
	/* [::] takes IPv6 only: an IPv4 listener on the port is another one */
	if (sa->sa.sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &(int){1}, sizeof(int));
	if (bind(fd, &sa->sa, dmsc_tunnel_sa_len(sa)) || listen(fd, 1024)) {
		err = -errno;
		pr_warn("tunnel: cannot listen on %s: %s\n", a, strerror(errno));
		close(fd);
		return err;
	}
	dmsc_reuseport_migrate(fd);
	return tn_ev_add(t, &l->ev, kind, fd, EPOLLIN);
}

/* OPEN for a stream to dest, vouching for identity; its payload's length
 * (0: the identity is empty or too long) */
static size_t open_frame(uint8_t *p, const union dmsc_tunnel_sa *dest, const char *identity,
			 uint8_t *flags)
{
	if (dest->sa.sa_family == AF_INET6) {
		*flags = DMSC_TF_OPEN_F_IPV6;
		return dmsc_tf_open_encode6(p, dest->v6.sin6_addr.s6_addr, dest->v6.sin6_port,
					    identity);
	}
	*flags = 0;
	return dmsc_tf_open_encode(p, dest->v4.sin_addr.s_addr, dest->v4.sin_port, identity);
}

/* Every listener's epoll events: EPOLLIN, or 0 while accepts pause. */
static void listeners_set(struct tunnel *t, uint32_t events)
{
	struct listener *ls[DMSC_TUNNEL_FWD_MAX + 3];
	size_t i, n = 0;

	ls[n++] = &t->peer_l;
	ls[n++] = &t->handoff_l;
	ls[n++] = &t->handoff_l6;
	for (i = 0; i < t->o->n_fwd; i++)
		ls[n++] = &t->fwd_l[i];
	for (i = 0; i < n; i++)
		if (ls[i]->ev.fd > 0) /* made, and not closed by a drain */
			tn_ev_set(t, &ls[i]->ev, events);
}

/* An accept() on l failed. Out of descriptors or memory, the
 * level-triggered listener would wake the loop at once, for ever, while
 * nothing frees one: every listener leaves epoll until a stream or a
 * connection closes (reap) or the next tick (listeners_resume). */
static void accept_failed(struct tunnel *t, struct listener *l)
{
	if (errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM)
		return;
	/* said once a minute at most: a helper at its limit pauses often */
	if (!t->accept_warned_ms || tn_now_ms() - t->accept_warned_ms >= 60000) {
		pr_warn("tunnel: accept on fd %d: %s: new connections wait in the listeners' "
			"queues until one closes (dmsc_tunnel_accept_pauses_total)\n",
			l->ev.fd, strerror(errno));
		t->accept_warned_ms = tn_now_ms();
	}
	t->accept_paused = true;
	t->accept_pauses++;
	listeners_set(t, 0);
}

static void listeners_resume(struct tunnel *t)
{
	if (!t->accept_paused)
		return;
	t->accept_paused = false;
	listeners_set(t, EPOLLIN);
}

static void accept_peer(struct tunnel *t)
{
	union dmsc_tunnel_sa sa;
	socklen_t l = sizeof(sa);
	int fd = accept4(t->peer_l.ev.fd, &sa.sa, &l, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0) {
		accept_failed(t, &t->peer_l);
		return;
	}
	if (!tn_conn_new(t, fd, true, &sa))
		close(fd);
}

static void accept_forward(struct tunnel *t, struct listener *l)
{
	const struct dmsc_tunnel_forward *f = &t->o->fwd[l->fwd];
	uint8_t p[DMSC_TF_OPEN_MAX], flags;
	char peer[DMSC_ADDR_PORT_LEN];
	struct stream *s;
	struct conn *c;
	size_t n;
	int fd = accept4(l->ev.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0) {
		accept_failed(t, l);
		return;
	}
	dmsc_tunnel_sa_format_ip(&f->peer, peer, sizeof(peer));
	c = tn_conn_to(t, l->fwd);
	s = c ? tn_stream_new(c, fd, tn_conn_stream_id(c)) : NULL;
	if (!s) {
		tn_metric_count(t, "source", peer, f->identity, "peer_unreachable");
		tn_fd_reset(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	s->metric = tn_metric_count(t, "source", peer, f->identity, "opened");
	n = open_frame(p, &f->dest, f->identity, &flags);
	tn_conn_frame_flags(c, DMSC_TF_OPEN, flags, s->id, p, (uint16_t)n);
	tn_conn_flush(c);
}

/* A peer slot for a host's tunnel address; -1 when all are taken. */
static int host_peer(struct tunnel *t, const union dmsc_tunnel_sa *addr)
{
	size_t i;

	for (i = 0; i < t->n_host_peers; i++)
		if (dmsc_tunnel_sa_eq(&t->peers[DMSC_TUNNEL_FWD_MAX + i].addr, addr))
			return (int)(DMSC_TUNNEL_FWD_MAX + i);
	if (t->n_host_peers == DMSC_TUNNEL_HOSTS_MAX)
		return -1;
	t->peers[DMSC_TUNNEL_FWD_MAX + t->n_host_peers].addr = *addr;
	return (int)(DMSC_TUNNEL_FWD_MAX + t->n_host_peers++);
}

/* A stream for fd to dest through the tunnel of the host at to; NULL when
 * that host's connection cannot be had (a failed connect of hk's backend). */
static struct stream *handoff_open(struct tunnel *t, int fd, const union dmsc_tunnel_sa *to,
				   const union dmsc_tunnel_sa *dest,
				   const struct dmsc_tunnel_hkey *hk, const char *identity)
{
	char peer[DMSC_ADDR_PORT_LEN];
	uint8_t p[DMSC_TF_OPEN_MAX], flags;
	struct stream *s;
	struct conn *c;
	int idx;
	size_t n;

	dmsc_tunnel_sa_format_ip(to, peer, sizeof(peer));
	idx = host_peer(t, to);
	c = idx >= 0 ? tn_conn_to(t, idx) : NULL;
	s = c ? tn_stream_new(c, fd, tn_conn_stream_id(c)) : NULL;
	if (!s) {
		tn_metric_count(t, "source", peer, identity, "peer_unreachable");
		dmsc_tunnel_health_result(&t->health, hk, false);
		return NULL;
	}
	s->probe_tcp = !strcmp(identity, DMSC_TF_ID_PROBE_TCP);
	s->hk = *hk;
	s->metric = tn_metric_count(t, "source", peer, identity, "opened");
	n = open_frame(p, dest, identity, &flags);
	tn_conn_frame_flags(c, DMSC_TF_OPEN, flags, s->id, p, (uint16_t)n);
	tn_conn_flush(c);
	return s;
}

/* A stream for fd: to the backend of hk, or, while the hosts picked cannot
 * be reached, to another backend of its service (o: NULL, none; moved: hk
 * is such another one already). false: to none, fd the caller's. */
static bool handoff_carry(struct tunnel *t, int fd, union dmsc_tunnel_sa *to,
			  union dmsc_tunnel_sa *dest, struct dmsc_tunnel_hkey *hk,
			  struct dmsc_tunnel_origin *o, const char *identity, bool moved)
{
	struct stream *s;

	while (!(s = handoff_open(t, fd, to, dest, hk, identity))) {
		union dmsc_tunnel_sa down = *to;

		if (!o)
			return false;
		if (dmsc_tunnel_repick(&t->repick, &t->health, t->policy, hk, o, &down, to, dest,
				       hk)) {
			t->repick.none_left++;
			return false;
		}
		moved = true;
	}
	s->orig = o;
	t->repick.moved += moved;
	return true;
}

/* A connection connect4 handed over (tunnel_handoff.h): a stream to the
 * backend's host, vouching for the caller's cgroup; refused (reset) when
 * it has no record: never guessed (docs/design.md decision 21). One the
 * kernel picked a backend for may go to another one of its service while
 * its stream has not opened (decision 81): it keeps an origin until then. */
static void accept_handoff(struct tunnel *t, struct listener *l)
{
	char identity[DMSC_TF_ID_MAX + 1], why[256];
	union dmsc_tunnel_sa to, dest;
	struct dmsc_tunnel_origin *o = NULL;
	struct dmsc_tunnel_hkey hk;
	int fd;

	fd = accept4(l->ev.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		accept_failed(t, l);
		return;
	}
	if (dmsc_tunnel_handoff_take(&t->ho, fd, t->policy, &to, &dest, &hk, identity,
				     sizeof(identity), why, sizeof(why))) {
		pr_warn("tunnel: handoff refused: %s\n", why);
		tn_metric_count(t, "source", "", "", "no_handoff");
		tn_fd_reset(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	/* the kernel's pick (a helper's own connection and dmscd's probes
	 * name their backend themselves: a probe tests that one) */
	if (hk.backend_id && !hk.via && strcmp(identity, DMSC_TF_ID_PROBE_TCP) &&
	    strcmp(identity, DMSC_TF_ID_PROBE_HTTP) && (o = malloc(sizeof(*o)))) {
		o->tried[0] = hk.backend_id;
		o->n_tried = 1;
		snprintf(o->identity, sizeof(o->identity), "%s", identity);
	}
	if (handoff_carry(t, fd, &to, &dest, &hk, o, identity, false))
		return;
	free(o);
	tn_fd_reset(fd);
}

bool tn_stream_repick(struct stream *s, bool host_down)
{
	struct tunnel *t = s->c->t;
	struct dmsc_tunnel_origin *o = s->orig;
	union dmsc_tunnel_sa to, dest;
	struct dmsc_tunnel_hkey hk;
	int fd;

	if (!o || s->open_ok || t->draining)
		return false;
	if (dmsc_tunnel_repick(&t->repick, &t->health, t->policy, &s->hk, o,
			       host_down ? &s->c->addr : NULL, &to, &dest, &hk)) {
		t->repick.none_left++;
		return false;
	}
	s->orig = NULL;
	fd = tn_stream_detach(s);
	if (handoff_carry(t, fd, &to, &dest, &hk, o, o->identity, true))
		return true;
	free(o);
	tn_fd_reset(fd);
	return true;
}

/* The kernel's handoffs: connect4's on handoff_listen, connect6's on
 * [::1] on the same port (docs/design.md decision 64), where the host has
 * IPv6 and the datapath the map; without them IPv4 ones still come. */
static int handoff_start(struct tunnel *t)
{
	const char *pin_dir = t->o->pin_dir ? t->o->pin_dir : dmsc_pin_dir();
	union dmsc_tunnel_sa lo6 = {.v6 = {.sin6_family = AF_INET6,
					   .sin6_addr = IN6ADDR_LOOPBACK_INIT,
					   .sin6_port = t->o->handoff_listen.v4.sin_port}};
	char a[DMSC_ADDR_PORT_LEN];
	uint16_t port6 = 0;
	int err;

	err = dmsc_tunnel_handoff_open(&t->ho, pin_dir);
	if (!err)
		err = listen_on(t, &t->handoff_l, &t->o->handoff_listen, EV_HANDOFF_LISTEN);
	if (err)
		return err;
	dmsc_tunnel_health_open(&t->health, pin_dir, t->ho.handoff_fd, t->ho.handoff6_fd);
	dmsc_tunnel_repick_open(&t->repick, pin_dir);
	if (t->ho.handoff6_fd >= 0 && !listen_on(t, &t->handoff_l6, &lo6, EV_HANDOFF_LISTEN))
		port6 = lo6.v6.sin6_port;
	else
		pr_warn("tunnel: IPv6 connections are not handed over (no [::1] listener or no "
			"%s map): connect6 connects them directly\n",
			DMSC_MAP_TUNNEL_HANDOFF6);
	err = dmsc_tunnel_handoff_register(&t->ho, &t->o->handoff_listen.v4, port6);
	dmsc_tunnel_sa_format(&t->o->handoff_listen, a, sizeof(a));
	if (!err)
		pr_info("tunnel: takes the kernel's handoffs on %s%s\n", a,
			port6 ? " and [::1] on the same port" : "");
	return err;
}

/* ---- the loop ---- */

static void reap(struct tunnel *t)
{
	/* descriptors were closed: a paused accept may go on */
	if (t->dead_streams || t->dead_conns)
		listeners_resume(t);
	while (t->dead_streams) {
		struct stream *s = t->dead_streams;

		t->dead_streams = s->next_dead;
		tn_buf_free(&s->out);
		free(s->orig);
		free(s->identity);
		free(s);
	}
	while (t->dead_conns) {
		struct conn *c = t->dead_conns;

		t->dead_conns = c->next_dead;
		SSL_free(c->ssl);
		tn_buf_free(&c->in);
		tn_buf_free(&c->out);
		tn_buf_free(&c->wire);
		tn_buf_free(&c->rx);
		free(c);
	}
}

/* A connection whose peer's certificate no longer holds (expired, or not
 * signed by the CA of a new ca.crt) takes no new streams; its open ones
 * finish (docs/design.md decision 54). Its peer is told with GOAWAY, so it
 * opens its next streams on a new connection, whose handshake checks the
 * certificate again; an OPEN already in flight is reset with why. */
static void conn_retire(struct conn *c, const char *why)
{
	if (c->draining)
		return;
	pr_warn("tunnel: connection %s %s (host %s) takes no new streams: %s\n",
		c->server ? "from" : "to", c->name, c->peer_host, why);
	snprintf(c->why, sizeof(c->why), "%s", why);
	c->draining = true;
	if (c->n_streams == 0 && !c->server) {
		tn_conn_close(c, "drained");
		return;
	}
	tn_conn_frame(c, DMSC_TF_GOAWAY, 0, NULL, 0);
	tn_conn_flush(c);
}

/* Every second: new certificate files (rotation: new connections use
 * them, the old ones drain; peers the new CA does not vouch for are
 * retired), handshakes that take too long, metrics. */
static void tick(struct tunnel *t)
{
	char why[DMSC_MTLS_WHY_MAX], td[DMSC_MTLS_TD_MAX + 1];
	time_t now = time(NULL);
	struct conn *c, *next;
	SSL_CTX *ctx;
	int i;

	if (tn_files_changed(t, false)) {
		if (tn_ctx_load(t, &ctx, td, why, sizeof(why)) == 0) {
			tn_files_changed(t, true);
			SSL_CTX_free(t->ctx);
			t->ctx = ctx;
			snprintf(t->td, sizeof(t->td), "%s", td);
			t->reloads++;
			t->reload_failed_logged = false;
			for (i = 0; i < PEERS_MAX; i++) {
				SSL_SESSION_free(t->peers[i].sess);
				t->peers[i].sess = NULL;
			}
			for (c = t->conns; c; c = next) {
				next = c->next;
				if (c->up && tn_conn_reverify(c, why, sizeof(why))) {
					conn_retire(c, why);
					continue;
				}
				if (c->server)
					continue;
				c->draining = true;
				if (c->n_streams == 0)
					tn_conn_close(c, "drained");
			}
			pr_info("tunnel: certificates in %s reloaded; connections to peers are "
				"renewed as their streams end\n",
				t->o->mtls_dir);
		} else if (!t->reload_failed_logged) {
			/* mid-rotation (a key renamed in before its certificate) or
			 * broken: read again next tick, keep serving the old ones */
			t->reload_failures++;
			t->reload_failed_logged = true;
			pr_warn("tunnel: keeping the current certificates: %s\n", why);
		}
	}
	for (c = t->conns; c; c = next) {
		X509 *peer;

		next = c->next;
		if (!c->up) {
			if (now - c->started > HANDSHAKE_TIMEOUT_S)
				tn_conn_close(c, "handshake timed out");
			continue;
		}
		/* an idle connection to a peer is closed; the next stream makes a
		 * new one, resuming the TLS session (no new key exchange proof) */
		if (!c->server && c->idle_since_ms && t->o->peer_idle_ms &&
		    tn_now_ms() - c->idle_since_ms >= t->o->peer_idle_ms) {
			tn_conn_close(c, "idle");
			continue;
		}
		/* A peer whose certificate ran out while connected gets no new
		 * stream on this connection: a new one checks it again. */
		peer = SSL_get0_peer_certificate(c->ssl);
		if (peer && X509_cmp_current_time(X509_get0_notAfter(peer)) < 0)
			conn_retire(c, "its certificate expired");
	}
	listeners_resume(t); /* ENFILE: others may have closed theirs */
	tn_metrics_write(t);
}

static void listener_close(struct tunnel *t, struct listener *l)
{
	if (l->ev.fd <= 0)
		return;
	epoll_ctl(t->ep, EPOLL_CTL_DEL, l->ev.fd, NULL);
	close(l->ev.fd);
	l->ev.fd = -1;
}

/* SIGTERM: no new connections or streams (GOAWAY tells each peer to open
 * its next streams elsewhere: the helper that replaces this one); the open
 * streams finish. */
static void tunnel_drain(struct tunnel *t)
{
	struct conn *c, *next;
	size_t i;

	t->draining = true;
	listener_close(t, &t->peer_l);
	for (i = 0; i < t->o->n_fwd; i++)
		listener_close(t, &t->fwd_l[i]);
	listener_close(t, &t->handoff_l);
	listener_close(t, &t->handoff_l6);
	for (c = t->conns; c; c = next) {
		next = c->next;
		c->draining = true;
		if (c->n_streams == 0) {
			tn_conn_close(c, "drained");
			continue;
		}
		tn_conn_frame(c, DMSC_TF_GOAWAY, 0, NULL, 0);
		tn_conn_flush(c);
	}
	pr_info("tunnel: draining: no new streams, the open ones finish\n");
}

static unsigned int streams_open(const struct tunnel *t)
{
	const struct conn *c;
	unsigned int n = 0;

	for (c = t->conns; c; c = c->next)
		n += c->n_streams;
	return n;
}

static void tunnel_free(struct tunnel *t)
{
	int i;

	while (t->conns)
		tn_conn_close(t->conns, NULL);
	reap(t);
	if (t->peer_l.ev.fd > 0)
		close(t->peer_l.ev.fd);
	for (i = 0; i < (int)t->o->n_fwd; i++)
		if (t->fwd_l[i].ev.fd > 0)
			close(t->fwd_l[i].ev.fd);
	if (t->handoff_l.ev.fd > 0)
		close(t->handoff_l.ev.fd);
	if (t->handoff_l6.ev.fd > 0)
		close(t->handoff_l6.ev.fd);
	dmsc_tunnel_handoff_close(&t->ho);
	dmsc_tunnel_health_close(&t->health);
	dmsc_tunnel_repick_close(&t->repick);
	for (i = 0; i < PEERS_MAX; i++)
		SSL_SESSION_free(t->peers[i].sess);
	SSL_CTX_free(t->ctx);
	tn_wire_method_free();
	tn_policy_free(t);
	tn_metrics_free(t);
	if (t->ep >= 0)
		close(t->ep);
	free(t);
}

/* 1, or an odd DMSC_TUNNEL_FIRST_STREAM: the tests' way to the last ids of
 * a connection without opening two billion streams first. */
static uint32_t first_stream_id(void)
{
	const char *e = getenv("DMSC_TUNNEL_FIRST_STREAM");
	char *end;
	unsigned long v;

	if (!e || !*e)
		return 1;
	errno = 0;
	v = strtoul(e, &end, 10);
	if (errno || *end || !(v & 1) || v > UINT32_MAX) {
		pr_warn("tunnel: DMSC_TUNNEL_FIRST_STREAM=%s is not an odd 32-bit number: 1\n", e);
		return 1;
	}
	return (uint32_t)v;
}

/* An orphan: whether the next dmscd adopted it (decision 86); then it
 * takes that dmscd's policies and writes its metrics where it says. */
static bool adopted(struct tunnel *t, struct dmsc_adopt *a)
{
	char next[PATH_MAX];
	pid_t by = 0;
	int fd = dmsc_adopt_taken(a, next, sizeof(next), &by);

	if (fd < 0)
		return false;
	if (tn_ev_add(t, &t->updates, EV_UPDATES, fd, EPOLLIN)) {
		pr_warn("tunnel: adopted by dmscd (pid %d) but cannot watch its updates: %s\n",
			(int)by, strerror(errno));
		close(fd);
		return false;
	}
	/* the gone dmscd's name (in metrics_path once adopted before) */
	if (t->metrics_file && strcmp(t->metrics_file, next))
		unlink(t->metrics_file);
	snprintf(t->metrics_path, sizeof(t->metrics_path), "%s", next);
	t->metrics_file = t->metrics_path;
	tn_metrics_write(t);
	pr_info("tunnel: adopted by dmscd (pid %d): serving on as its tunnel, every stream "
		"kept\n",
		(int)by);
	return true;
}

/* At a tick: whether to drain for the next dmscd's tunnel, which took
 * the baton, or as an orphan (its dmscd gone since *since, ms) whose time
 * is up or whose datapath went (baton.h); an orphan the next dmscd
 * adopts serves on. */
static bool handing_over(struct tunnel *t, struct dmsc_baton *b, struct dmsc_adopt *a,
			 int64_t *since)
{
	const struct dmsc_tunnel_opts *o = t->o;

	if (o->baton && dmsc_baton_passed(b)) {
		pr_info("tunnel: the next dmscd's tunnel serves: draining\n");
		return true;
	}
	/* adopted, it is no child of its dmscd: the end of its updates
	 * is how it hears that dmscd went */
	if (o->orphaned && t->dmscd_sends && t->updates.fd < 0)
		*o->orphaned = 1;
	if (!o->orphaned || !*o->orphaned)
		return false;
	if (!*since) {
		*since = dmsc_now_ms();
		dmsc_adopt_offer(a);
		pr_info("tunnel: dmscd is gone: serving on until the next dmscd adopts this "
			"tunnel or its own takes over (at most %u ms)\n",
			o->orphan_ms);
	}
	if (t->dmscd_sends && adopted(t, a)) {
		*o->orphaned = 0;
		*since = 0;
		return false;
	}
	return dmsc_helper_orphan_over(*since, o->orphan_ms,
				       o->pin_dir ? o->pin_dir : dmsc_pin_dir());
}

int dmsc_tunnel_run(const struct dmsc_tunnel_opts *o, volatile sig_atomic_t *stop)
{
	char listen_text[DMSC_ADDR_PORT_LEN];
	struct dmsc_baton baton = {.fd = -1};
	struct dmsc_adopt adopt = {.fd = -1};
	int64_t orphan_since = 0;
	bool handed_over = false, orphan_at_drain = false;
	struct epoll_event evs[EPOLL_BATCH];
	char why[DMSC_MTLS_WHY_MAX];
	struct tunnel *t = calloc(1, sizeof(*t));
	uint64_t next_tick, drain_end = 0;
	size_t i;
	int n, k, err;

	if (!t)
		return -ENOMEM;
	t->o = o;
	t->policy = o->policy;
	t->updates.fd = -1;
	t->metrics_file = o->metrics_file;
	t->dmscd_sends = o->baton && o->updates_fd >= 0;
	t->first_stream_id = first_stream_id();
	t->ho.handoff_fd = t->ho.handoff6_fd = t->ho.conf_fd = t->ho.own_fd = t->ho.cg_fd = -1;
	t->ep = epoll_create1(EPOLL_CLOEXEC);
	if (tn_conn_ex_idx < 0)
		tn_conn_ex_idx = SSL_get_ex_new_index(0, "dmsc conn", NULL, NULL, NULL);
	tn_files_changed(t, true);
	t->ktls = tn_ktls_probe();
	if ((err = tn_wire_method_init())) {
		pr_warn("tunnel: BIO_meth_new: %s\n", tn_ssl_err());
		goto out;
	}
	err = tn_ctx_load(t, &t->ctx, t->td, why, sizeof(why));
	if (err) {
		pr_warn("tunnel: %s\n", why);
		goto out;
	}
	if (dmsc_tunnel_sa_port(&o->listen) &&
	    (err = listen_on(t, &t->peer_l, &o->listen, EV_PEER_LISTEN)))
		goto out;
	/* Without the kernel's handoff the tunnel still serves other hosts
	 * (and its forwards); connect4 then connects directly, counted. */
	if (dmsc_tunnel_sa_port(&o->handoff_listen) && handoff_start(t))
		pr_warn("tunnel: not taking the kernel's handoffs (see above)\n");
	for (i = 0; i < o->n_fwd; i++) {
		t->peers[i].addr = o->fwd[i].peer;
		t->fwd_l[i].fwd = (int)i;
		if ((err = listen_on(t, &t->fwd_l[i], &o->fwd[i].listen, EV_FWD_LISTEN)))
			goto out;
	}
	if (o->updates_fd >= 0 && tn_ev_add(t, &t->updates, EV_UPDATES, o->updates_fd, EPOLLIN))
		pr_warn("tunnel: cannot watch --policy-updates: %s\n", strerror(errno));
	if (o->ready_fd >= 0) {
		if (write(o->ready_fd, "ready\n", 6) != 6)
			pr_warn("tunnel: --ready-fd: %s\n", strerror(errno));
		close(o->ready_fd);
	}
	next_tick = tn_now_ms() + TICK_MS;
	tn_metrics_write(t);
	/* the tunnel of a dmscd before this one, if it serves still, drains
	 * (baton.h, docs/design.md decision 80) */
	dmsc_tunnel_sa_format(dmsc_tunnel_sa_port(&o->handoff_listen) ? &o->handoff_listen
								      : &o->listen,
			      listen_text, sizeof(listen_text));
	dmsc_baton_init(&baton, "tunnel", o->pin_dir ? o->pin_dir : dmsc_pin_dir(), listen_text);
	dmsc_adopt_init(&adopt, "tunnel", o->pin_dir ? o->pin_dir : dmsc_pin_dir());
	if (o->baton)
		dmsc_baton_take(&baton);
	for (;;) {
		uint64_t now = tn_now_ms();

		if ((*stop || handed_over) && !t->draining) {
			/* draining, it serves no new connection: the next
			 * tunnel may take the baton at once */
			orphan_at_drain = orphan_since || (o->orphaned && *o->orphaned);
			dmsc_baton_close(&baton);
			dmsc_adopt_close(&adopt);
			tunnel_drain(t);
			reap(t);
			drain_end = now + o->drain_ms;
		}
		if (t->draining && (!streams_open(t) || now >= drain_end))
			break;
		int timeout = now >= next_tick ? 0 : (int)(next_tick - now);

		/* an orphan looks for its successor every 100 ms: the two
		 * serve side by side (SO_REUSEPORT) until it drains */
		if (o->orphaned && *o->orphaned && !t->draining) {
			if (timeout > 100)
				timeout = 100;
			handed_over = handed_over || handing_over(t, &baton, &adopt, &orphan_since);
		}

		n = epoll_wait(t->ep, evs, EPOLL_BATCH, timeout);
		if (n < 0 && errno != EINTR) {
			err = -errno;
			pr_warn("tunnel: epoll_wait: %s\n", strerror(errno));
			break;
		}
		for (k = 0; k < n; k++) {
			struct ev *e = evs[k].data.ptr;

			switch (e->kind) {
			case EV_PEER_LISTEN:
				accept_peer(t);
				break;
			case EV_FWD_LISTEN:
				accept_forward(t, (struct listener *)e);
				break;
			case EV_HANDOFF_LISTEN:
				accept_handoff(t, (struct listener *)e);
				break;
			case EV_CONN:
				if (!((struct conn *)e)->dead)
					tn_conn_event((struct conn *)e, evs[k].events);
				break;
			case EV_STREAM:
				if (!((struct stream *)e)->dead)
					tn_stream_event((struct stream *)e, evs[k].events);
				break;
			case EV_UPDATES:
				tn_policy_updates(t);
				/* an adopted tunnel is no child of its dmscd: the
				 * end of the updates is how it hears at once (a
				 * SIGTERM before the next tick then found it no
				 * orphan, and left its metrics file behind) */
				if (t->updates.fd < 0 && !t->draining)
					handed_over = handed_over ||
						      handing_over(t, &baton, &adopt, &orphan_since);
				break;
			}
		}
		tn_conn_flush_marked(t);
		reap(t);
		if (tn_now_ms() >= next_tick) {
			tick(t);
			reap(t);
			next_tick = tn_now_ms() + TICK_MS;
			if (!t->draining)
				handed_over = handed_over || handing_over(t, &baton, &adopt, &orphan_since);
		}
	}
	/* dmscd's tunnel: by the end of a drain the file is its successor's
	 * (the same name), whose counters a last write would set back */
	if (!o->baton)
		tn_metrics_write(t);
	dmsc_baton_close(&baton);
	dmsc_adopt_close(&adopt);
	/* an orphan's metrics (named after the dmscd that is gone): no dmscd
	 * serves them any more. One that its dmscd replaced, orphaned only
	 * while it drains, leaves its successor's file alone. */
	if (orphan_at_drain && t->metrics_file)
		unlink(t->metrics_file);
out:
	tunnel_free(t);
	return err;
}

/* ---- options ---- */

int dmsc_tunnel_addr_parse(const char *arg, union dmsc_tunnel_sa *sa)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(arg, ':');
	size_t n;
	char *end;
	unsigned long port;

	if (!colon || (size_t)(colon - arg) >= sizeof(host))
		return -EINVAL;
	n = (size_t)(colon - arg);
	memcpy(host, arg, n);
	host[n] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port == 0 || port > 65535)
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	if (host[0] == '[') {
		if (n < 3 || host[n - 1] != ']')
			return -EINVAL;
		host[n - 1] = '\0';
		sa->v6.sin6_family = AF_INET6;
		sa->v6.sin6_port = htons((uint16_t)port);
		return inet_pton(AF_INET6, host + 1, &sa->v6.sin6_addr) == 1 ? 0 : -EINVAL;
	}
	sa->v4.sin_family = AF_INET;
	sa->v4.sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &sa->v4.sin_addr) == 1 ? 0 : -EINVAL;
}

socklen_t dmsc_tunnel_sa_len(const union dmsc_tunnel_sa *a)
{
	return a->sa.sa_family == AF_INET6 ? sizeof(a->v6) : sizeof(a->v4);
}

uint16_t dmsc_tunnel_sa_port(const union dmsc_tunnel_sa *a)
{
	if (a->sa.sa_family == AF_INET6)
		return ntohs(a->v6.sin6_port);
	return a->sa.sa_family == AF_INET ? ntohs(a->v4.sin_port) : 0;
}

bool dmsc_tunnel_sa_eq(const union dmsc_tunnel_sa *a, const union dmsc_tunnel_sa *b)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return false;
	if (a->sa.sa_family == AF_INET6)
		return a->v6.sin6_port == b->v6.sin6_port &&
		       !memcmp(&a->v6.sin6_addr, &b->v6.sin6_addr, 16);
	return a->v4.sin_port == b->v4.sin_port && a->v4.sin_addr.s_addr == b->v4.sin_addr.s_addr;
}

void dmsc_tunnel_sa_format(const union dmsc_tunnel_sa *a, char *buf, size_t len)
{
	bool v6 = a->sa.sa_family == AF_INET6;

	dmsc_format_ip_port(v6 ? AF_INET6 : AF_INET, a->v4.sin_addr.s_addr, &a->v6.sin6_addr,
			    dmsc_tunnel_sa_port(a), buf, len);
}

void dmsc_tunnel_sa_format_ip(const union dmsc_tunnel_sa *a, char *buf, size_t len)
{
	bool v6 = a->sa.sa_family == AF_INET6;

	dmsc_format_ip(v6 ? AF_INET6 : AF_INET, a->v4.sin_addr.s_addr, &a->v6.sin6_addr, buf, len);
}

int dmsc_tunnel_forward_parse(const char *arg, struct dmsc_tunnel_forward *f, char *why, size_t len)
{
	char buf[3 * 56 + DMSC_TF_ID_MAX + 4], *eq, *c1, *c2;

	memset(f, 0, sizeof(*f));
	if (strlen(arg) >= sizeof(buf)) {
		snprintf(why, len, "\"%.40s...\" is too long", arg);
		return -EINVAL;
	}
	strcpy(buf, arg);
	eq = strchr(buf, '=');
	c1 = eq ? strchr(eq + 1, ',') : NULL;
	c2 = c1 ? strchr(c1 + 1, ',') : NULL;
	if (!c2) {
		snprintf(why, len, "\"%s\" is not LADDR:LPORT=PEER:PPORT,DEST:DPORT,IDENTITY", arg);
		return -EINVAL;
	}
	*eq = *c1 = *c2 = '\0';
	if (dmsc_tunnel_addr_parse(buf, &f->listen)) {
		snprintf(why, len, "\"%s\" is not an ADDR:PORT ([ADDR]:PORT) to listen on", buf);
		return -EINVAL;
	}
	if (dmsc_tunnel_addr_parse(eq + 1, &f->peer)) {
		snprintf(why, len, "\"%s\" is not the peer helper's ADDR:PORT ([ADDR]:PORT)",
			 eq + 1);
		return -EINVAL;
	}
	if (dmsc_tunnel_addr_parse(c1 + 1, &f->dest)) {
		snprintf(why, len, "\"%s\" is not the destination's ADDR:PORT ([ADDR]:PORT)",
			 c1 + 1);
		return -EINVAL;
	}
	if (!c2[1] || strlen(c2 + 1) > DMSC_TF_ID_MAX) {
		snprintf(why, len, "the identity is empty or longer than %d bytes", DMSC_TF_ID_MAX);
		return -EINVAL;
	}
	snprintf(f->identity, sizeof(f->identity), "%s", c2 + 1);
	return 0;
}
