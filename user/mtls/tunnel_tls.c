// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's TLS connections to and from peers with their frames
 * (tunnel_int.h); the context from the certificate files is in
 * tunnel_ctx.c. */
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

#include "log.h"
#include "mtls_cert.h"
#include "tunnel.h"
#include "tunnel_authz.h"
#include "tunnel_frame.h"
#include "tunnel_int.h"

/* ---- the wire: records written and read in batches ---- */

/* Without kTLS OpenSSL would write each sealed record (16 KiB) with a
 * write() of its own, and read records with a read() each (read-ahead and
 * a larger read buffer do not help: OpenSSL 3.0 moves what is left in its
 * buffer to the front before each record, so a buffer of many records is
 * copied over and over). The connection's BIO is this one instead: it
 * appends the records OpenSSL writes to c->wire, which tn_conn_flush
 * writes in one write(), and serves OpenSSL's reads from c->rx, filled by
 * one read() of up to WIRE_READ (docs/design.md decision 65). With kTLS
 * the records are the kernel's: plain socket BIOs. */
static BIO_METHOD *wire_method;

static int wire_write(BIO *b, const char *data, int len)
{
	struct conn *c = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	return tn_buf_append(&c->wire, data, (size_t)len) ? -1 : len;
}

/* OpenSSL reads a record's header, then its body (no read-ahead: it asks
 * for what it needs, so nothing is left over in its buffer to move) */
static int wire_read(BIO *b, char *out, int len)
{
	struct conn *c = BIO_get_data(b);
	size_t n;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (!c->rx.len) {
		ssize_t r;

		if (c->rx_drained) {
			BIO_set_retry_read(b);
			return -1;
		}
		if (tn_buf_reserve(&c->rx, WIRE_READ))
			return -1;
		r = read(c->ev.fd, c->rx.p, WIRE_READ);
		if (r <= 0) {
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				BIO_set_retry_read(b);
			return (int)r;
		}
		c->rx.len = (size_t)r;
		c->rx_drained = (size_t)r < WIRE_READ;
	}
	n = (size_t)len < c->rx.len ? (size_t)len : c->rx.len;
	memcpy(out, c->rx.p + c->rx.off, n);
	tn_buf_consume(&c->rx, n);
	return (int)n;
}

static long wire_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	/* a flush is ours to do after the call that sealed the records */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int wire_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

int tn_wire_method_init(void)
{
	if (wire_method)
		return 0;
	wire_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "dmsc tunnel wire");
	if (!wire_method || !BIO_meth_set_write(wire_method, wire_write) ||
	    !BIO_meth_set_read(wire_method, wire_read) ||
	    !BIO_meth_set_ctrl(wire_method, wire_ctrl) ||
	    !BIO_meth_set_create(wire_method, wire_create)) {
		tn_wire_method_free();
		return -ENOMEM;
	}
	return 0;
}

void tn_wire_method_free(void)
{
	BIO_meth_free(wire_method);
	wire_method = NULL;
}

/* The connection's SSL reads and writes through c->rx and c->wire. */
static int conn_set_bio(struct conn *c)
{
	BIO *b = BIO_new(wire_method);

	if (!b)
		return -ENOMEM;
	BIO_set_data(b, c);
	SSL_set_bio(c->ssl, b, b);
	SSL_set_read_ahead(c->ssl, 0);
	return 0;
}

/* c->wire to the socket, until it is empty or the socket full: 0, or
 * -EPIPE when the connection is lost (and closed here). */
static int conn_wire_send(struct conn *c)
{
	while (c->wire.len) {
		ssize_t n = write(c->ev.fd, c->wire.p + c->wire.off, c->wire.len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			tn_conn_close(c, strerror(errno));
			return -EPIPE;
		}
		tn_buf_consume(&c->wire, (size_t)n);
	}
	return 0;
}

/* ---- TLS connections ---- */

static void conn_events(struct conn *c)
{
	uint32_t ev = EPOLLIN;

	if (c->dead)
		return;
	if (c->tcp_connecting || c->want_write || c->wire.len || (c->up && c->out.len))
		ev |= EPOLLOUT;
	tn_ev_set(c->t, &c->ev, ev);
}

void tn_conn_close(struct conn *c, const char *why)
{
	struct conn **pp;
	int b;

	if (c->dead)
		return;
	c->dead = true;
	if (why && strcmp(why, "drained"))
		pr_info("tunnel: connection %s %s%s closed: %s\n", c->server ? "from" : "to",
			c->name, c->peer_host[0] ? "" : " (no identity yet)", why);
	for (b = 0; b < STREAM_BUCKETS; b++)
		while (c->bucket[b]) {
			struct stream *s = c->bucket[b];

			/* the backend's host not reached (its helper down,
			 * a handshake refused) before the stream opened: a
			 * failed connect, as the kernel counts an unanswered
			 * SYN; not when this helper is the one stopping */
			if (!c->server && !s->open_ok && !c->t->draining) {
				dmsc_tunnel_health_result(&c->t->health, &s->hk, false);
				/* to a backend on another host (decision 81) */
				if (tn_stream_repick(s, true))
					continue;
			}
			tn_stream_close(s, true);
		}
	c->to_write = NULL;
	epoll_ctl(c->t->ep, EPOLL_CTL_DEL, c->ev.fd, NULL);
	if (c->ssl && c->up)
		SSL_shutdown(c->ssl);
	/* the close_notify behind what is still queued, if the socket takes
	 * it now: the connection ends either way */
	if (c->wire.len && write(c->ev.fd, c->wire.p + c->wire.off, c->wire.len) < 0)
		c->wire.len = 0;
	close(c->ev.fd);
	for (pp = &c->t->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	c->next_dead = c->t->dead_conns;
	c->t->dead_conns = c;
}

void tn_conn_flush_later(struct conn *c)
{
	if (!c->dead)
		dmsc_mark_add(&c->t->to_flush, &c->flush);
}

void tn_conn_flush_marked(struct tunnel *t)
{
	struct dmsc_mark *m;

	while ((m = dmsc_mark_take(&t->to_flush)))
		tn_conn_flush(dmsc_container_of(m, struct conn, flush));
}

/* The queued frames sealed and written: without kTLS up to WIRE_BATCH of
 * records per write() (c->wire), with it SSL_write writes them itself. */
void tn_conn_flush(struct conn *c)
{
	bool was_high = c->out.len >= CONN_OUT_HIGH, waits = false;
	int b;

	if (c->dead || !c->up)
		return;
	c->want_write = false;
	for (;;) {
		while (c->out.len && c->wire.len < WIRE_BATCH && !waits) {
			size_t n = c->out.len < SEAL_MAX ? c->out.len : SEAL_MAX;
			int r, e, err;

			errno = 0;
			r = SSL_write(c->ssl, c->out.p + c->out.off, (int)n);
			err = errno;
			if (r > 0) {
				tn_buf_release(&c->out);
				tn_buf_consume(&c->out, (size_t)r);
				continue;
			}
			switch ((e = SSL_get_error(c->ssl, r))) {
			case SSL_ERROR_WANT_WRITE:
				c->want_write = true;
				/* fall through */
			case SSL_ERROR_WANT_READ:
				/* With kTLS OpenSSL writes from our buffer, and
				 * its retry goes on from the address of this
				 * call: those bytes stay put (decision 89). */
				c->out.held = c->ktls_send;
				break;
			default:
				tn_conn_close(c, tn_ssl_io_why(e, err));
				return;
			}
			waits = true;
		}
		if (conn_wire_send(c))
			return;
		/* the socket is full, all is written, or OpenSSL waits */
		if (c->wire.len || !c->out.len || waits)
			break;
	}
	conn_events(c);
	if (was_high && c->out.len < CONN_OUT_LOW)
		for (b = 0; b < STREAM_BUCKETS; b++) {
			struct stream *s;

			for (s = c->bucket[b]; s; s = s->hnext)
				tn_stream_events(s);
		}
}

static void handle_frame(struct conn *c, const struct dmsc_tf_hdr *h, const uint8_t *p)
{
	struct stream *s;

	if (h->type == DMSC_TF_OPEN) {
		if (c->t->draining) {
			tn_conn_reset(c, h->stream, DMSC_TF_R_SHUTDOWN, "the helper is going away");
			return;
		}
		tn_handle_open(c, h->stream, h->flags, p, h->len);
		return;
	}
	if (h->type == DMSC_TF_GOAWAY) {
		c->draining = true;
		if (!c->server && c->n_streams == 0)
			tn_conn_close(c, "drained");
		return;
	}
	s = tn_stream_find(c, h->stream);
	if (!s)
		return; /* reset here a moment ago: its frames in flight are dropped */
	switch (h->type) {
	case DMSC_TF_OPEN_OK:
		if (c->server || s->open_ok) {
			tn_conn_close(c, "unexpected OPEN_OK");
			return;
		}
		s->open_ok = true;
		free(s->orig); /* it stays with this backend */
		s->orig = NULL;
		dmsc_tunnel_health_result(&c->t->health, &s->hk, true);
		if (s->probe_tcp) {
			/* dmscd's tcp probe: the backend took the connection at
			 * the other end, which is all it asks. A reset ends the
			 * stream there at once (no half-closed leftover, whatever
			 * the backend does with an end of file); an orderly
			 * close here is the probe's "passed". */
			tn_conn_reset(c, s->id, DMSC_TF_R_ERROR, "health probe done");
			tn_stream_close(s, false);
			break;
		}
		tn_stream_events(s);
		break;
	case DMSC_TF_WINDOW: {
		uint32_t v;

		if (h->len != 4) {
			tn_conn_close(c, "malformed WINDOW");
			return;
		}
		memcpy(&v, p, 4);
		s->credit += ntohl(v);
		tn_stream_events(s);
		break;
	}
	case DMSC_TF_FIN:
		s->peer_fin = true;
		tn_stream_flush_local(s);
		break;
	case DMSC_TF_RESET:
		if (!s->open_ok && h->len > 1)
			pr_info("tunnel: stream %u to %s refused: %.*s\n", s->id, c->name,
				(int)h->len - 1, (const char *)p + 1);
		/* the backend's host could not connect to it: a failed
		 * connect (a refused identity is no fault of the backend) */
		if (!s->open_ok && h->len >= 1 && p[0] == DMSC_TF_R_CONNECT) {
			dmsc_tunnel_health_result(&c->t->health, &s->hk, false);
			/* the workload's bytes are still in its socket: another
			 * backend may take them (decision 81) */
			if (tn_stream_repick(s, false))
				break;
		}
		tn_stream_close(s, true);
		break;
	}
}

/* What the last read brought each stream, to its local socket. */
static void conn_write_streams(struct conn *c)
{
	while (c->to_write) {
		struct stream *s = c->to_write;

		c->to_write = s->next_write;
		s->write_marked = false;
		if (!s->dead)
			tn_stream_flush_local(s);
	}
}

/* SSL_read into buf: the bytes read, 0 when OpenSSL needs more from the
 * socket, -1 when the connection is gone (closed here). */
static int conn_ssl_read(struct conn *c, void *buf, size_t n)
{
	int r, e, err;

	errno = 0;
	r = SSL_read(c->ssl, buf, (int)n);
	err = errno;
	if (r > 0)
		return r;
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		return 0;
	if (e == SSL_ERROR_WANT_WRITE) {
		c->want_write = true;
		return 0;
	}
	tn_conn_close(c, tn_ssl_io_why(e, err));
	return -1;
}

/* A DATA frame's header: the stream it is for takes its payload, or the
 * payload is dropped (a stream reset a moment ago, or one the frame
 * would overrun). */
static void data_begin(struct conn *c)
{
	struct stream *s = tn_stream_find(c, c->rd.stream);

	c->rd_drop = !s;
	if (s && (c->rd.len > s->recv_room || s->peer_fin)) {
		tn_conn_reset(c, s->id, DMSC_TF_R_PROTOCOL, "DATA past the window or FIN");
		tn_stream_close(s, true);
		c->rd_drop = true;
	} else if (s) {
		s->recv_room -= c->rd.len;
		/* the peer is within a credit batch of its window's end:
		 * it may stall before our next credit reaches it */
		if (s->recv_room < DMSC_TF_WINDOW_CREDIT_BATCH)
			s->window_filled = true;
	}
}

/* Where the next bytes of the current frame's payload go: a DATA frame's
 * straight to its stream's buffer towards the local socket (no copy
 * through c->in: decision 65), the others' to c->in. NULL: out of
 * memory. */
static uint8_t *payload_dest(struct conn *c, struct stream **to)
{
	struct buf *b = &c->in;

	*to = NULL;
	if (c->rd.type == DMSC_TF_DATA && !c->rd_drop) {
		*to = tn_stream_find(c, c->rd.stream);
		if (*to)
			b = &(*to)->out;
		else
			c->rd_drop = true; /* closed while its frame arrived */
	}
	if (c->rd.type == DMSC_TF_DATA && c->rd_drop)
		b->len = b->off = 0; /* c->in: a scratch buffer */
	if (tn_buf_reserve(b, c->rd_left))
		return NULL;
	return b->p + b->off + b->len;
}

/* The frames of what arrived: headers and control payloads into c->in,
 * DATA payloads into their streams, which are written to their local
 * sockets after the read (one write() for many frames). A frame may span
 * reads: c->rd_hdr_len and c->rd_left say where the last one stopped. */
static void conn_read(struct conn *c)
{
	for (;;) {
		struct stream *s;
		uint8_t *dst;
		int r;

		if (!c->rd_body) {
			r = conn_ssl_read(c, c->rd_hdr + c->rd_hdr_len,
					  DMSC_TF_HDR - c->rd_hdr_len);
			if (r <= 0)
				break;
			c->rd_hdr_len += (size_t)r;
			if (c->rd_hdr_len < DMSC_TF_HDR)
				continue;
			c->rd_hdr_len = 0;
			if (!dmsc_tf_get_hdr(c->rd_hdr, &c->rd)) {
				tn_conn_close(c, "malformed frame header");
				return;
			}
			c->rd_body = true;
			c->rd_left = c->rd.len;
			c->in.len = c->in.off = 0;
			if (c->rd.type == DMSC_TF_DATA)
				data_begin(c);
		}
		if (c->rd_left) {
			dst = payload_dest(c, &s);
			if (!dst) {
				tn_conn_close(c, "out of memory");
				return;
			}
			r = conn_ssl_read(c, dst, c->rd_left);
			if (r <= 0)
				break;
			c->rd_left -= (size_t)r;
			if (s) {
				s->out.len += (size_t)r;
				c->t->bytes_in += (unsigned long long)r;
				if (!s->write_marked) {
					s->write_marked = true;
					s->next_write = c->to_write;
					c->to_write = s;
				}
			} else if (c->rd.type != DMSC_TF_DATA) {
				c->in.len += (size_t)r;
			}
			if (c->rd_left)
				continue;
		}
		c->rd_body = false;
		if (c->rd.type != DMSC_TF_DATA)
			handle_frame(c, &c->rd, c->in.p + c->in.off);
		if (c->dead)
			return;
	}
	if (c->dead)
		return;
	conn_write_streams(c);
	tn_conn_flush_later(c);
}

static void conn_handshake(struct conn *c)
{
	struct tunnel *t = c->t;
	char why[DMSC_MTLS_WHY_MAX];
	int r = SSL_do_handshake(c->ssl), e, d;
	const unsigned char *alpn = NULL;
	unsigned int alpn_len = 0;
	bool ktls[2];

	if (r != 1) {
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			c->want_write = e == SSL_ERROR_WANT_WRITE;
			if (conn_wire_send(c) == 0)
				conn_events(c);
			return;
		}
		t->hs_refused[c->server]++;
		pr_warn("tunnel: %s %s refused: %s%s%s\n", c->server ? "peer" : "connection to",
			c->name, c->why[0] ? c->why : "", c->why[0] ? "; " : "",
			ERR_peek_last_error() ? tn_ssl_err() : "the peer closed the handshake");
		tn_conn_close(c, NULL);
		return;
	}
	SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
	if (alpn_len != sizeof(DMSC_TF_ALPN) - 1 || memcmp(alpn, DMSC_TF_ALPN, alpn_len)) {
		/* a client: the server chose none (it is no tunnel helper, or
		 * one from before decision 64) or another */
		t->hs_refused[c->server]++;
		pr_warn("tunnel: %s %s refused: it chose %s%.*s%s (" DMSC_TF_ALPN " required)\n",
			c->server ? "peer" : "connection to", c->name,
			alpn_len ? "ALPN protocol \"" : "no ALPN protocol", (int)alpn_len,
			alpn_len ? (const char *)alpn : "", alpn_len ? "\"" : "");
		tn_conn_close(c, NULL);
		return;
	}
	if (dmsc_mtls_peer_identity(SSL_get0_peer_certificate(c->ssl), t->td, c->peer_host,
				    sizeof(c->peer_host), why, sizeof(why))) {
		t->hs_refused[c->server]++;
		c->peer_host[0] = '\0';
		pr_warn("tunnel: %s %s refused: %s\n", c->server ? "peer" : "connection to",
			c->name, why);
		tn_conn_close(c, NULL);
		return;
	}
	c->up = true;
	t->hs_ok[c->server]++;
	if (SSL_session_reused(c->ssl))
		t->hs_resumed[c->server]++;
	ktls[0] = BIO_get_ktls_send(SSL_get_wbio(c->ssl)) > 0;
	ktls[1] = BIO_get_ktls_recv(SSL_get_rbio(c->ssl)) > 0;
	c->ktls_send = ktls[0];
	for (d = 0; d < 2; d++) {
		t->ktls_conns[d] += ktls[d];
		t->user_crypto_conns[d] += !ktls[d];
	}
	pr_info("tunnel: %s %s is host %s (%s; records: send %s, receive %s)\n",
		c->server ? "peer" : "connection to", c->name, c->peer_host,
		SSL_session_reused(c->ssl) ? "resumed" : "full handshake",
		ktls[0] ? "kTLS" : "OpenSSL", ktls[1] ? "kTLS" : "OpenSSL");
	tn_conn_flush(c);
	if (!c->dead) {
		int b;

		for (b = 0; b < STREAM_BUCKETS; b++) {
			struct stream *s;

			for (s = c->bucket[b]; s; s = s->hnext)
				tn_stream_events(s);
		}
	}
}

void tn_conn_event(struct conn *c, uint32_t events)
{
	c->rx_drained = false;
	if (c->tcp_connecting) {
		int err = 0;
		socklen_t l = sizeof(err);

		getsockopt(c->ev.fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			pr_warn("tunnel: connection to %s: %s\n", c->name, strerror(err));
			tn_conn_close(c, NULL);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		c->tcp_connecting = false;
	}
	if (!c->up) {
		conn_handshake(c);
		if (!c->up)
			return;
	}
	/* records the handshake's read left in c->rx are read now */
	if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->rx.len)
		conn_read(c);
	if (!c->dead && (events & EPOLLOUT))
		tn_conn_flush(c);
}

struct conn *tn_conn_new(struct tunnel *t, int fd, bool server, const union dmsc_tunnel_sa *sa)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->t = t;
	c->server = server;
	c->addr = *sa;
	c->peer_idx = -1;
	c->next_id = t->first_stream_id;
	c->started = time(NULL);
	dmsc_tunnel_sa_format(sa, c->name, sizeof(c->name));
	c->ssl = SSL_new(t->ctx);
	if (!c->ssl || (t->ktls ? !SSL_set_fd(c->ssl, fd) : conn_set_bio(c) != 0) ||
	    !SSL_set_ex_data(c->ssl, tn_conn_ex_idx, c)) {
		SSL_free(c->ssl);
		free(c);
		return NULL;
	}
	if (server)
		SSL_set_accept_state(c->ssl);
	else
		SSL_set_connect_state(c->ssl);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	if (tn_ev_add(t, &c->ev, EV_CONN, fd, EPOLLIN)) {
		SSL_free(c->ssl);
		free(c);
		return NULL;
	}
	c->next = t->conns;
	t->conns = c;
	return c;
}

uint32_t tn_conn_stream_id(struct conn *c)
{
	uint32_t id = c->next_id;

	c->next_id += 2;
	if (c->next_id < id) {
		/* That was the last id: a stream's id is never used twice on a
		 * connection (the peer would take a second OPEN of one still
		 * open as a protocol error, and close the connection with every
		 * stream on it). Its open streams finish; the next one makes a
		 * new connection. */
		c->draining = true;
		pr_info("tunnel: connection to %s: its stream ids are spent: new streams go "
			"on a new connection\n",
			c->name);
	}
	return id;
}

/* A connection to the forward's peer that can take a new stream. */
struct conn *tn_conn_to(struct tunnel *t, int idx)
{
	const union dmsc_tunnel_sa *peer = &t->peers[idx].addr;
	struct conn *c;
	int fd;

	for (c = t->conns; c; c = c->next)
		if (!c->server && !c->dead && !c->draining && c->peer_idx == idx)
			return c;
	fd = socket(peer->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	if (connect(fd, &peer->sa, dmsc_tunnel_sa_len(peer)) && errno != EINPROGRESS) {
		close(fd);
		return NULL;
	}
	c = tn_conn_new(t, fd, false, peer);
	if (!c) {
		close(fd);
		return NULL;
	}
	c->peer_idx = idx;
	c->tcp_connecting = true;
	if (t->peers[idx].sess)
		SSL_set_session(c->ssl, t->peers[idx].sess);
	conn_events(c);
	return c;
}
