// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's streams: one workload connection each, and the destination's
 * checks before it connects one (tunnel_int.h). */
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
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "addr.h"
#include "log.h"
#include "mtls_cert.h"
#include "tunnel.h"
#include "tunnel_authz.h"
#include "tunnel_int.h"

/* ---- streams ---- */

struct stream *tn_stream_find(struct conn *c, uint32_t id)
{
	struct stream *s = c->bucket[id % STREAM_BUCKETS];

	while (s && s->id != id)
		s = s->hnext;
	return s;
}

static void stream_unlink(struct stream *s)
{
	struct stream **pp = &s->c->bucket[s->id % STREAM_BUCKETS];

	while (*pp && *pp != s)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = s->hnext;
}

int tn_conn_frame(struct conn *c, uint8_t type, uint32_t stream, const void *payload, uint16_t len)
{
	return tn_conn_frame_flags(c, type, 0, stream, payload, len);
}

int tn_conn_frame_flags(struct conn *c, uint8_t type, uint8_t flags, uint32_t stream,
			const void *payload, uint16_t len)
{
	uint8_t hdr[DMSC_TF_HDR];

	dmsc_tf_put_hdr(hdr, type, len, stream);
	hdr[1] = flags;
	if (tn_buf_reserve(&c->out, DMSC_TF_HDR + len))
		return -ENOMEM;
	tn_buf_append(&c->out, hdr, sizeof(hdr));
	if (len)
		tn_buf_append(&c->out, payload, len);
	return 0;
}

static void conn_frame_u32(struct conn *c, uint8_t type, uint32_t stream, uint32_t v)
{
	uint32_t n = htonl(v);

	tn_conn_frame(c, type, stream, &n, sizeof(n));
}

void tn_conn_reset(struct conn *c, uint32_t stream, enum dmsc_tf_reset reason, const char *text)
{
	uint8_t p[256];
	size_t n = strlen(text);

	if (n > sizeof(p) - 1)
		n = sizeof(p) - 1;
	p[0] = (uint8_t)reason;
	memcpy(p + 1, text, n);
	tn_conn_frame(c, DMSC_TF_RESET, stream, p, (uint16_t)(n + 1));
}

/* The stream out of its connection and epoll, on the dead list: its
 * local socket is the caller's. */
static int stream_end(struct stream *s)
{
	struct conn *c = s->c;
	int fd = s->ev.fd;

	epoll_ctl(c->t->ep, EPOLL_CTL_DEL, fd, NULL);
	s->ev.fd = -1;
	s->dead = true;
	c->t->window_extra -= s->window - DMSC_TF_WINDOW_INITIAL;
	stream_unlink(s);
	c->n_streams--;
	s->next_dead = c->t->dead_streams;
	c->t->dead_streams = s;
	if (c->n_streams == 0 && !c->server)
		c->idle_since_ms = tn_now_ms();
	if (c->draining && c->n_streams == 0 && !c->server)
		tn_conn_close(c, "drained");
	return fd;
}

int tn_stream_detach(struct stream *s)
{
	return s->dead ? -1 : stream_end(s);
}

/* Closes the local socket; abort sends a TCP reset to the local peer, so a
 * refused or broken stream is an error there, not an orderly end. */
void tn_stream_close(struct stream *s, bool abort)
{
	int fd;

	if (s->dead)
		return;
	fd = stream_end(s);
	if (abort)
		tn_fd_reset(fd);
	else
		close(fd);
}

void tn_stream_events(struct stream *s)
{
	struct conn *c = s->c;
	uint32_t ev = 0;

	if (s->dead)
		return;
	if (s->connecting) {
		ev = EPOLLOUT;
	} else {
		if (s->open_ok && !s->rd_eof && s->credit > 0 && c->out.len < CONN_OUT_HIGH &&
		    c->up)
			ev |= EPOLLIN;
		if (s->out.len)
			ev |= EPOLLOUT;
	}
	tn_ev_set(c->t, &s->ev, ev);
}

static void stream_maybe_done(struct stream *s)
{
	if (!s->dead && s->rd_eof && s->peer_fin && s->wr_shut && !s->out.len)
		tn_stream_close(s, false);
}

/* A read or write of the stream's local socket returned < 0: false when it
 * only has to wait (EAGAIN, EINTR); else true, the stream reset to the peer
 * and closed. */
static bool stream_io_failed(struct stream *s)
{
	if (errno == EAGAIN || errno == EINTR)
		return false;
	tn_conn_reset(s->c, s->id, DMSC_TF_R_ERROR, strerror(errno));
	tn_stream_close(s, true);
	return true;
}

/* At a credit: how the stream's window changes (docs/design.md decision
 * 69). The peer came near its end since the last credit and the local
 * socket has never refused a write: the window, not the reader, holds the
 * stream back, so it doubles (up to STREAM_WINDOW_MAX, and while the
 * tunnel's streams together stay under TUNNEL_WINDOW_EXTRA_MAX). Once the
 * local socket blocked, the reader is the limit: what the window has past
 * the initial one is withheld from the credits (returned as negative, at
 * most the credit) until it is back at the initial bound, and it grows no
 * more (a larger window for a reader that falls behind only buffers more
 * here, in memory the copies then miss in cache: decision 65). */
static int64_t stream_window_change(struct stream *s)
{
	struct tunnel *t = s->c->t;
	int64_t d = 0;

	if (s->reader_slow && s->window > DMSC_TF_WINDOW_INITIAL) {
		uint32_t over = s->window - DMSC_TF_WINDOW_INITIAL;

		d = -(int64_t)(over < s->unacked ? over : s->unacked);
		t->window_shrunk++;
	} else if (!s->reader_slow && s->window_filled && s->window < STREAM_WINDOW_MAX &&
		   t->window_extra + s->window <= TUNNEL_WINDOW_EXTRA_MAX) {
		d = s->window;
		t->window_grown++;
	}
	s->window = (uint32_t)((int64_t)s->window + d);
	t->window_extra = t->window_extra + (unsigned long long)d; /* d < 0: wraps back */
	s->window_filled = false;
	return d;
}

/* Writes what the tunnel brought to the local socket; credits it back.
 * The caller flushes the connection. */
void tn_stream_flush_local(struct stream *s)
{
	struct conn *c = s->c;
	ssize_t n;

	while (s->out.len) {
		n = write(s->ev.fd, s->out.p + s->out.off, s->out.len);
		if (n < 0) {
			if (stream_io_failed(s))
				return;
			s->reader_slow = true;
			break;
		}
		tn_buf_consume(&s->out, (size_t)n);
		s->unacked += (uint32_t)n;
	}
	if (s->unacked >= DMSC_TF_WINDOW_CREDIT_BATCH) {
		/* credit goes back in batches, not after every write: a frame
		 * per request was a TLS record and a wake-up of each side per
		 * request (docs/bench.md). No stall: a sender out of credit
		 * means a window's worth here, which is past the batch once
		 * written. */
		uint32_t credit = (uint32_t)((int64_t)s->unacked + stream_window_change(s));

		if (credit)
			conn_frame_u32(c, DMSC_TF_WINDOW, s->id, credit);
		s->recv_room += credit;
		s->unacked = 0;
	}
	if (!s->out.len && s->peer_fin && !s->wr_shut) {
		shutdown(s->ev.fd, SHUT_WR);
		s->wr_shut = true;
	}
	if (!s->dead) {
		tn_stream_events(s);
		stream_maybe_done(s);
	}
}

/* One readv() of the local socket, its payloads straight into the
 * connection's buffer as DATA frames: the iovecs leave a header's room
 * before each frame's payload, filled once readv says how much came (no
 * copy through a bounce buffer; up to STREAM_READ_FRAMES frames a call,
 * docs/design.md decision 65). Level-triggered epoll wakes us again while
 * there is more. */
static void stream_read_local(struct stream *s)
{
	struct conn *c = s->c;
	struct iovec iov[STREAM_READ_FRAMES];
	size_t want = s->credit, niov;
	uint8_t *base;
	ssize_t n;

	if (s->rd_eof || !want || c->out.len >= CONN_OUT_HIGH)
		goto out;
	if (want > STREAM_READ_FRAMES * DMSC_TF_PAYLOAD_MAX)
		want = STREAM_READ_FRAMES * DMSC_TF_PAYLOAD_MAX;
	if (tn_buf_reserve(&c->out, dmsc_tf_data_room(want))) {
		tn_conn_reset(c, s->id, DMSC_TF_R_ERROR, "out of memory");
		tn_stream_close(s, true);
		goto out;
	}
	base = c->out.p + c->out.off + c->out.len;
	niov = dmsc_tf_data_iov(base, want, iov, STREAM_READ_FRAMES);
	n = readv(s->ev.fd, iov, (int)niov);
	if (n < 0) {
		stream_io_failed(s);
		goto out;
	}
	if (n == 0) {
		tn_conn_frame(c, DMSC_TF_FIN, s->id, NULL, 0);
		s->rd_eof = true;
		goto out;
	}
	c->out.len += dmsc_tf_data_seal(base, (size_t)n, s->id);
	s->credit -= (uint32_t)n;
	c->t->bytes_out += (unsigned long long)n;
	if (!s->credit)
		c->t->stalls_window++;
	else if (c->out.len >= CONN_OUT_HIGH)
		c->t->stalls_conn++;
out:
	tn_conn_flush_later(c);
	if (!s->dead) {
		tn_stream_events(s);
		stream_maybe_done(s);
	}
}

void tn_stream_event(struct stream *s, uint32_t events)
{
	struct conn *c = s->c;

	if (s->connecting) {
		int err = 0;
		socklen_t l = sizeof(err);

		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		getsockopt(s->ev.fd, SOL_SOCKET, SO_ERROR, &err, &l);
		s->connecting = false;
		if (err) {
			if (s->metric >= 0) { /* counted as allowed: now as connect_failed */
				struct metric *m = &c->t->metrics[s->metric];
				const char *peer = m->peer, *identity = m->identity;

				m->n--; /* m may move below; peer and identity do not */
				tn_metric_count(c->t, "dest", peer, identity, "connect_failed");
			}
			pr_info("tunnel: stream %u from %s: connect: %s\n", s->id, c->peer_host,
				strerror(err));
			tn_conn_reset(c, s->id, DMSC_TF_R_CONNECT, strerror(err));
			tn_stream_close(s, false);
			tn_conn_flush(c);
			return;
		}
		s->open_ok = true;
		tn_conn_frame(c, DMSC_TF_OPEN_OK, s->id, NULL, 0);
		tn_conn_flush(c);
		tn_stream_events(s);
		return;
	}
	if (events & EPOLLOUT)
		tn_stream_flush_local(s);
	if (!s->dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		stream_read_local(s);
	tn_conn_flush_later(c);
}

struct stream *tn_stream_new(struct conn *c, int fd, uint32_t id)
{
	struct stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->c = c;
	s->id = id;
	s->credit = DMSC_TF_WINDOW_INITIAL;
	s->recv_room = DMSC_TF_WINDOW_INITIAL;
	s->window = DMSC_TF_WINDOW_INITIAL;
	if (tn_ev_add(c->t, &s->ev, EV_STREAM, fd, 0)) {
		free(s);
		return NULL;
	}
	s->hnext = c->bucket[id % STREAM_BUCKETS];
	c->bucket[id % STREAM_BUCKETS] = s;
	c->n_streams++;
	c->idle_since_ms = 0;
	return s;
}

/* ---- the destination's checks ---- */

/* An address this host owns (a bind() to it works), not loopback: a peer
 * may reach this host's workloads, not what listens on its loopback only.
 * Either family (docs/design.md decision 64). */
static const char *dest_refused(const union dmsc_tunnel_sa *dest)
{
	union dmsc_tunnel_sa any_port = *dest, *sa = &any_port;
	int fd, err = 0;

	/* the address alone: a socket of the destination's may hold the port */
	if (sa->sa.sa_family == AF_INET6)
		sa->v6.sin6_port = 0;
	else
		sa->v4.sin_port = 0;

	if (sa->sa.sa_family == AF_INET6) {
		const struct in6_addr *a = &sa->v6.sin6_addr;

		if (IN6_IS_ADDR_LOOPBACK(a) ||
		    (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127))
			return "a loopback address";
		if (IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_MULTICAST(a) ||
		    IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_LINKLOCAL(a))
			return "not a host address";
	} else {
		uint32_t addr = sa->v4.sin_addr.s_addr;

		if ((ntohl(addr) >> 24) == 127)
			return "a loopback address";
		if (addr == INADDR_ANY || addr == INADDR_BROADCAST)
			return "not a host address";
	}
	fd = socket(sa->sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return "no socket";
	if (bind(fd, &sa->sa, dmsc_tunnel_sa_len(sa)))
		err = errno;
	close(fd);
	return err ? "not an address of this host" : NULL;
}

enum dmsc_tunnel_verdict tn_authorize(const struct dmsc_policy *p, const union dmsc_tunnel_sa *dest,
				     const char *identity)
{
	if (dest->sa.sa_family == AF_INET6)
		return dmsc_tunnel_authorize6(p, dest->v6.sin6_addr.s6_addr,
					      ntohs(dest->v6.sin6_port), identity);
	return dmsc_tunnel_authorize(p, dest->v4.sin_addr.s_addr, ntohs(dest->v4.sin_port),
				     identity);
}

void tn_handle_open(struct conn *c, uint32_t id, uint8_t flags, const uint8_t *p, uint16_t len)
{
	struct dmsc_tf_open o;
	union dmsc_tunnel_sa sa;
	char addr[DMSC_ADDR_PORT_LEN];
	const char *refused;
	struct stream *s;
	int fd;

	if (!c->server || !(id & 1) || tn_stream_find(c, id)) {
		tn_conn_close(c, "OPEN on a stream it may not open");
		return;
	}
	if (!dmsc_tf_open_decode(p, len, flags, &o)) {
		tn_conn_reset(c, id, DMSC_TF_R_PROTOCOL, "malformed OPEN");
		return;
	}
	memset(&sa, 0, sizeof(sa));
	if (o.ipv6) {
		sa.v6.sin6_family = AF_INET6;
		memcpy(&sa.v6.sin6_addr, o.dest_addr6, 16);
		sa.v6.sin6_port = o.dest_port;
	} else {
		sa.v4.sin_family = AF_INET;
		sa.v4.sin_addr.s_addr = o.dest_addr;
		sa.v4.sin_port = o.dest_port;
	}
	dmsc_tunnel_sa_format_ip(&sa, addr, sizeof(addr));
	if (c->draining) {
		/* retired (its certificate no longer holds) or going away: an
		 * OPEN sent before our GOAWAY reached the peer */
		tn_metric_count(c->t, "dest", c->peer_host, o.identity, "denied_peer");
		pr_info("tunnel: refused %s from host %s for %s: this connection takes no new "
			"streams: %s\n",
			addr, c->peer_host, o.identity,
			c->why[0] ? c->why : "the peer is going away");
		tn_conn_reset(c, id, DMSC_TF_R_DENIED, c->why[0] ? c->why : "going away");
		return;
	}
	refused = dest_refused(&sa);
	if (refused) {
		tn_metric_count(c->t, "dest", c->peer_host, o.identity, "denied_dest");
		pr_info("tunnel: refused %s from host %s for %s: %s\n", addr, c->peer_host,
			o.identity, refused);
		tn_conn_reset(c, id, DMSC_TF_R_DENIED, refused);
		return;
	}
	if (c->t->policy) {
		enum dmsc_tunnel_verdict v = tn_authorize(c->t->policy, &sa, o.identity);

		if (v != DMSC_TV_ALLOWED) {
			dmsc_tunnel_sa_format(&sa, addr, sizeof(addr));
			refused = v == DMSC_TV_DENIED
				      ? "no service with this backend allows the identity"
				      : "not a backend of this host's policy";
			tn_metric_count(c->t, "dest", c->peer_host, o.identity,
					v == DMSC_TV_DENIED ? "denied_identity" : "denied_dest");
			pr_info("tunnel: refused %s from host %s for %s: %s\n", addr,
				c->peer_host, o.identity, refused);
			tn_conn_reset(c, id, DMSC_TF_R_DENIED, refused);
			return;
		}
	}
	fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || dmsc_tunnel_handoff_own(&c->t->ho, fd) ||
	    (connect(fd, &sa.sa, dmsc_tunnel_sa_len(&sa)) && errno != EINPROGRESS)) {
		tn_metric_count(c->t, "dest", c->peer_host, o.identity, "connect_failed");
		tn_conn_reset(c, id, DMSC_TF_R_CONNECT, strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	s = tn_stream_new(c, fd, id);
	if (s) {
		s->dest = sa;
		s->identity = strdup(o.identity);
	}
	if (!s || !s->identity) {
		if (s)
			tn_stream_close(s, true);
		else
			close(fd);
		tn_conn_reset(c, id, DMSC_TF_R_ERROR, "out of memory");
		return;
	}
	s->connecting = true;
	s->metric = tn_metric_count(c->t, "dest", c->peer_host, o.identity, "allowed");
	tn_stream_events(s);
}
