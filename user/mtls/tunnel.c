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
 * written the bytes to its local socket; a stream's buffer towards its local
 * socket is so bounded by the window. A TLS connection's outgoing buffer
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

#include "log.h"
#include "mtls_cert.h"
#include "pin_dir.h"
#include "tunnel.h"
#include "tunnel_authz.h"
#include "tunnel_handoff.h"

#define DMSC_TF_WINDOW_INITIAL (256u << 10)
#define CONN_OUT_HIGH (512u << 10)
#define CONN_OUT_LOW (128u << 10)
#define STREAM_BUCKETS 256
#define EPOLL_BATCH 64
#define READS_PER_EVENT 4
#define METRICS_MAX 512
#define TICK_MS 1000
#define HANDSHAKE_TIMEOUT_S 10

enum ev_kind { EV_PEER_LISTEN, EV_FWD_LISTEN, EV_HANDOFF_LISTEN, EV_CONN, EV_STREAM };

/* peers: one per forward, then the hosts handoffs went to */
#define PEERS_MAX (DMSC_TUNNEL_FWD_MAX + DMSC_TUNNEL_HOSTS_MAX)

struct ev {
	enum ev_kind kind;
	int fd;
	uint32_t events; /* the mask epoll has */
};

struct buf {
	uint8_t *p;
	size_t off, len, cap;
};

struct tunnel;

struct conn {
	struct ev ev;
	struct tunnel *t;
	SSL *ssl;
	bool server, tcp_connecting, up, draining, dead, want_write;
	struct sockaddr_in addr;
	int peer_idx;  /* client: the forward's peer; server: -1 */
	char name[64]; /* ADDR:PORT for logs */
	char peer_host[DMSC_MTLS_HOST_MAX + 1];
	char why[DMSC_MTLS_WHY_MAX]; /* the verify callback's reason */
	time_t started;
	uint64_t idle_since_ms; /* client: when its last stream ended; 0: busy */
	struct buf in, out;
	struct stream *bucket[STREAM_BUCKETS];
	unsigned int n_streams;
	uint32_t next_id;
	struct conn *next; /* all conns */
	struct conn *next_dead;
};

struct stream {
	struct ev ev;
	struct conn *c;
	struct stream *hnext;
	uint32_t id;
	int metric;	    /* index in t->metrics */
	struct buf out;	    /* from the tunnel, to the local socket */
	uint32_t credit;    /* DATA bytes we may still send */
	uint32_t unacked;   /* written locally, not yet credited back */
	uint32_t recv_room; /* DATA bytes the peer may still send */
	bool open_ok, connecting, rd_eof, peer_fin, wr_shut, dead;
	struct stream *next_dead;
};

struct listener {
	struct ev ev;
	int fwd; /* EV_FWD_LISTEN: index in o->fwd */
};

struct peer {
	SSL_SESSION *sess; /* the last ticket it gave us: resumption */
	struct sockaddr_in addr;
};

struct metric {
	char side[8], peer[DMSC_MTLS_HOST_MAX + 1], identity[DMSC_TF_ID_MAX + 1], verdict[24];
	unsigned long long n;
};

struct tunnel {
	const struct dmsc_tunnel_opts *o;
	int ep;
	SSL_CTX *ctx;
	char td[DMSC_MTLS_TD_MAX + 1];
	struct timespec files_mtime[3];
	bool reload_failed_logged;
	struct listener peer_l, fwd_l[DMSC_TUNNEL_FWD_MAX];
	struct peer peers[PEERS_MAX];
	size_t n_host_peers; /* used after the forwards' */
	struct listener handoff_l;
	struct dmsc_tunnel_handoff ho;
	struct conn *conns;
	struct conn *dead_conns;
	struct stream *dead_streams;
	struct metric metrics[METRICS_MAX];
	size_t n_metrics;
	unsigned long long hs_ok[2], hs_refused[2], hs_resumed[2]; /* [server] */
	unsigned long long bytes_in, bytes_out, reloads, reload_failures;
	bool draining; /* stopping: no new streams, the open ones finish */
};

static int conn_ex_idx = -1;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- buffers ---- */

static int buf_reserve(struct buf *b, size_t more)
{
	size_t need;
	uint8_t *p;

	if (b->off && b->off + b->len + more > b->cap) {
		memmove(b->p, b->p + b->off, b->len);
		b->off = 0;
	}
	need = b->len + more;
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

static int buf_append(struct buf *b, const void *data, size_t n)
{
	if (buf_reserve(b, n))
		return -ENOMEM;
	memcpy(b->p + b->off + b->len, data, n);
	b->len += n;
	return 0;
}

static void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	b->len -= n;
	if (!b->len)
		b->off = 0;
}

static void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* ---- metrics ---- */

static int metric_idx(struct tunnel *t, const char *side, const char *peer, const char *identity,
		      const char *verdict)
{
	size_t i;

	for (i = 0; i < t->n_metrics; i++) {
		struct metric *m = &t->metrics[i];

		if (!strcmp(m->side, side) && !strcmp(m->peer, peer) &&
		    !strcmp(m->identity, identity) && !strcmp(m->verdict, verdict))
			return (int)i;
	}
	if (t->n_metrics == METRICS_MAX)
		return (int)METRICS_MAX - 1; /* the last row takes the rest */
	i = t->n_metrics++;
	snprintf(t->metrics[i].side, sizeof(t->metrics[i].side), "%s", side);
	snprintf(t->metrics[i].peer, sizeof(t->metrics[i].peer), "%s", peer);
	snprintf(t->metrics[i].identity, sizeof(t->metrics[i].identity), "%s", identity);
	snprintf(t->metrics[i].verdict, sizeof(t->metrics[i].verdict), "%s", verdict);
	return (int)i;
}

static void metric_count(struct tunnel *t, const char *side, const char *peer, const char *identity,
			 const char *verdict)
{
	t->metrics[metric_idx(t, side, peer, identity, verdict)].n++;
}

/* A label value: backslash, quote and newline escaped (Prometheus text). */
static void label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n') {
			fputs("\\n", f);
			continue;
		}
		fputc(*s, f);
	}
}

static void metrics_write(struct tunnel *t)
{
	char tmp[4096];
	size_t i;
	FILE *f;
	int s;

	if (!t->o->metrics_file)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", t->o->metrics_file);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fputs("# HELP dmsc_tunnel_streams_total Tunnel streams by side, peer host, vouched "
	      "identity and verdict.\n# TYPE dmsc_tunnel_streams_total counter\n",
	      f);
	for (i = 0; i < t->n_metrics; i++) {
		fprintf(f, "dmsc_tunnel_streams_total{side=\"%s\",peer=\"", t->metrics[i].side);
		label(f, t->metrics[i].peer);
		fputs("\",identity=\"", f);
		label(f, t->metrics[i].identity);
		fprintf(f, "\",verdict=\"%s\"} %llu\n", t->metrics[i].verdict, t->metrics[i].n);
	}
	fputs("# HELP dmsc_tunnel_handshakes_total TLS handshakes with peers by our side and "
	      "result.\n# TYPE dmsc_tunnel_handshakes_total counter\n",
	      f);
	for (s = 0; s < 2; s++) {
		const char *side = s ? "server" : "client";

		fprintf(f, "dmsc_tunnel_handshakes_total{side=\"%s\",result=\"ok\"} %llu\n", side,
			t->hs_ok[s]);
		fprintf(f, "dmsc_tunnel_handshakes_total{side=\"%s\",result=\"refused\"} %llu\n",
			side, t->hs_refused[s]);
		fprintf(f, "dmsc_tunnel_handshakes_total{side=\"%s\",result=\"resumed\"} %llu\n",
			side, t->hs_resumed[s]);
	}
	fprintf(f,
		"# TYPE dmsc_tunnel_bytes_total counter\n"
		"dmsc_tunnel_bytes_total{direction=\"in\"} %llu\n"
		"dmsc_tunnel_bytes_total{direction=\"out\"} %llu\n"
		"# TYPE dmsc_tunnel_cert_reloads_total counter\n"
		"dmsc_tunnel_cert_reloads_total{result=\"ok\"} %llu\n"
		"dmsc_tunnel_cert_reloads_total{result=\"failed\"} %llu\n",
		t->bytes_in, t->bytes_out, t->reloads, t->reload_failures);
	if (fclose(f) == 0)
		rename(tmp, t->o->metrics_file);
}

/* ---- epoll ---- */

static void ev_set(struct tunnel *t, struct ev *e, uint32_t events)
{
	struct epoll_event ee = {.events = events, .data.ptr = e};

	if (e->events == events)
		return;
	if (epoll_ctl(t->ep, EPOLL_CTL_MOD, e->fd, &ee))
		pr_warn("tunnel: epoll_ctl(%d): %s\n", e->fd, strerror(errno));
	e->events = events;
}

static int ev_add(struct tunnel *t, struct ev *e, uint32_t events)
{
	struct epoll_event ee = {.events = events, .data.ptr = e};

	e->events = events;
	return epoll_ctl(t->ep, EPOLL_CTL_ADD, e->fd, &ee) ? -errno : 0;
}

/* ---- TLS context ---- */

static const char *ssl_err(void)
{
	static char buf[256];
	unsigned long e = ERR_peek_last_error();

	if (!e)
		return "no detail";
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

static int verify_cb(int ok, X509_STORE_CTX *x)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct conn *c = ssl ? SSL_get_ex_data(ssl, conn_ex_idx) : NULL;
	X509 *cert = X509_STORE_CTX_get_current_cert(x);
	char subject[256] = "?";

	if (!ok && c && !c->why[0]) {
		if (cert)
			X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
		snprintf(c->why, sizeof(c->why), "its certificate %s: %s (depth %d)", subject,
			 X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)),
			 X509_STORE_CTX_get_error_depth(x));
	}
	return ok;
}

/* Keeps the newest ticket per peer, for the next connection to it. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct conn *c = SSL_get_ex_data(ssl, conn_ex_idx);
	struct peer *p;

	if (!c || c->server || c->peer_idx < 0)
		return 0;
	p = &c->t->peers[c->peer_idx];
	SSL_SESSION_free(p->sess);
	p->sess = sess;
	return 1; /* we keep the reference */
}

static void files(const struct tunnel *t, char paths[3][4096])
{
	snprintf(paths[0], 4096, "%s/" DMSC_MTLS_CA_CERT, t->o->mtls_dir);
	snprintf(paths[1], 4096, "%s/" DMSC_MTLS_HOST_CERT, t->o->mtls_dir);
	snprintf(paths[2], 4096, "%s/" DMSC_MTLS_HOST_KEY, t->o->mtls_dir);
}

/* A new context from the files; the caller swaps it in. */
static int ctx_load(struct tunnel *t, SSL_CTX **out, char *td, char *why, size_t len)
{
	struct dmsc_mtls_cert_info ca_info, host_info;
	char paths[3][4096];
	struct stat st;
	SSL_CTX *ctx;
	X509 *ca = NULL;
	int err;

	*out = NULL;
	files(t, paths);
	if (stat(paths[2], &st) == 0 && (st.st_mode & 077)) {
		snprintf(why, len, "%.400s: mode %04o lets others read a private key; chmod 600 it",
			 paths[2], (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	if ((err = dmsc_mtls_read_cert(paths[0], &ca, why, len)) ||
	    (err = dmsc_mtls_cert_describe(ca, &ca_info, why, len)))
		goto out;
	if ((err = dmsc_mtls_verify_file(paths[1], paths[0], 0, &host_info, why, len)))
		goto out;
	ctx = SSL_CTX_new(TLS_method());
	if (!ctx) {
		err = -ENOMEM;
		snprintf(why, len, "SSL_CTX_new: %s", ssl_err());
		goto out;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"dmsc-tunnel", 11);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_SERVER |
						SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
	if (!SSL_CTX_load_verify_locations(ctx, paths[0], NULL) ||
	    !SSL_CTX_use_certificate_file(ctx, paths[1], SSL_FILETYPE_PEM) ||
	    !SSL_CTX_use_PrivateKey_file(ctx, paths[2], SSL_FILETYPE_PEM) ||
	    !SSL_CTX_check_private_key(ctx)) {
		err = -EINVAL;
		snprintf(why, len, "%s: %s", t->o->mtls_dir, ssl_err());
		SSL_CTX_free(ctx);
		goto out;
	}
	snprintf(td, DMSC_MTLS_TD_MAX + 1, "%s", ca_info.trust_domain);
	*out = ctx;
	pr_info("tunnel: identity %s (valid until %ld), trust domain %s\n", host_info.id,
		(long)host_info.not_after, td);
out:
	X509_free(ca);
	ERR_clear_error();
	return err;
}

static bool files_changed(struct tunnel *t, bool remember)
{
	char paths[3][4096];
	struct stat st;
	bool changed = false;
	int i;

	files(t, paths);
	for (i = 0; i < 3; i++) {
		if (stat(paths[i], &st))
			continue;
		if (st.st_mtim.tv_sec != t->files_mtime[i].tv_sec ||
		    st.st_mtim.tv_nsec != t->files_mtime[i].tv_nsec) {
			changed = true;
			if (remember)
				t->files_mtime[i] = st.st_mtim;
		}
	}
	return changed;
}

/* ---- streams ---- */

static struct stream *stream_find(struct conn *c, uint32_t id)
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

static void conn_close(struct conn *c, const char *why);
static void conn_flush(struct conn *c);

static int conn_frame(struct conn *c, uint8_t type, uint32_t stream, const void *payload,
		      uint16_t len)
{
	uint8_t hdr[DMSC_TF_HDR];

	dmsc_tf_put_hdr(hdr, type, len, stream);
	if (buf_reserve(&c->out, DMSC_TF_HDR + len))
		return -ENOMEM;
	buf_append(&c->out, hdr, sizeof(hdr));
	if (len)
		buf_append(&c->out, payload, len);
	return 0;
}

static void conn_frame_u32(struct conn *c, uint8_t type, uint32_t stream, uint32_t v)
{
	uint32_t n = htonl(v);

	conn_frame(c, type, stream, &n, sizeof(n));
}

static void conn_reset(struct conn *c, uint32_t stream, enum dmsc_tf_reset reason, const char *text)
{
	uint8_t p[256];
	size_t n = strlen(text);

	if (n > sizeof(p) - 1)
		n = sizeof(p) - 1;
	p[0] = (uint8_t)reason;
	memcpy(p + 1, text, n);
	conn_frame(c, DMSC_TF_RESET, stream, p, (uint16_t)(n + 1));
}

/* Closes the local socket; abort sends a TCP reset to the local peer, so a
 * refused or broken stream is an error there, not an orderly end. */
static void stream_close(struct stream *s, bool abort)
{
	struct conn *c = s->c;

	if (s->dead)
		return;
	if (abort) {
		struct linger l = {.l_onoff = 1, .l_linger = 0};

		setsockopt(s->ev.fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	epoll_ctl(c->t->ep, EPOLL_CTL_DEL, s->ev.fd, NULL);
	close(s->ev.fd);
	s->ev.fd = -1;
	s->dead = true;
	stream_unlink(s);
	c->n_streams--;
	s->next_dead = c->t->dead_streams;
	c->t->dead_streams = s;
	if (c->n_streams == 0 && !c->server)
		c->idle_since_ms = now_ms();
	if (c->draining && c->n_streams == 0 && !c->server)
		conn_close(c, "drained");
}

static void stream_events(struct stream *s)
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
	ev_set(c->t, &s->ev, ev);
}

static void stream_maybe_done(struct stream *s)
{
	if (!s->dead && s->rd_eof && s->peer_fin && s->wr_shut && !s->out.len)
		stream_close(s, false);
}

/* Writes what the tunnel brought to the local socket; credits it back.
 * The caller flushes the connection. */
static void stream_flush_local(struct stream *s)
{
	struct conn *c = s->c;
	ssize_t n;

	while (s->out.len) {
		n = write(s->ev.fd, s->out.p + s->out.off, s->out.len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			conn_reset(c, s->id, DMSC_TF_R_ERROR, strerror(errno));
			stream_close(s, true);
			return;
		}
		buf_consume(&s->out, (size_t)n);
		s->unacked += (uint32_t)n;
	}
	if (s->unacked >= DMSC_TF_WINDOW_INITIAL / 2 || (s->unacked && !s->out.len)) {
		/* every byte written locally is credited back at once once the
		 * buffer is empty: a request/response flow never waits on credit */
		conn_frame_u32(c, DMSC_TF_WINDOW, s->id, s->unacked);
		s->recv_room += s->unacked;
		s->unacked = 0;
	}
	if (!s->out.len && s->peer_fin && !s->wr_shut) {
		shutdown(s->ev.fd, SHUT_WR);
		s->wr_shut = true;
	}
	if (!s->dead) {
		stream_events(s);
		stream_maybe_done(s);
	}
}

static void stream_read_local(struct stream *s)
{
	struct conn *c = s->c;
	uint8_t data[DMSC_TF_PAYLOAD_MAX];
	int i;

	for (i = 0; i < READS_PER_EVENT && !s->dead; i++) {
		size_t want = s->credit < sizeof(data) ? s->credit : sizeof(data);
		ssize_t n;

		if (!want || s->rd_eof || c->out.len >= CONN_OUT_HIGH)
			break;
		n = read(s->ev.fd, data, want);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			conn_reset(c, s->id, DMSC_TF_R_ERROR, strerror(errno));
			stream_close(s, true);
			break;
		}
		if (n == 0) {
			conn_frame(c, DMSC_TF_FIN, s->id, NULL, 0);
			s->rd_eof = true;
			break;
		}
		conn_frame(c, DMSC_TF_DATA, s->id, data, (uint16_t)n);
		s->credit -= (uint32_t)n;
		c->t->bytes_out += (unsigned long long)n;
	}
	conn_flush(c);
	if (!s->dead) {
		stream_events(s);
		stream_maybe_done(s);
	}
}

static void stream_event(struct stream *s, uint32_t events)
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
			struct metric *m = &c->t->metrics[s->metric];

			metric_count(c->t, "dest", m->peer, m->identity, "connect_failed");
			m->n--;
			pr_info("tunnel: stream %u from %s: connect: %s\n", s->id, c->peer_host,
				strerror(err));
			conn_reset(c, s->id, DMSC_TF_R_CONNECT, strerror(err));
			stream_close(s, false);
			conn_flush(c);
			return;
		}
		s->open_ok = true;
		conn_frame(c, DMSC_TF_OPEN_OK, s->id, NULL, 0);
		conn_flush(c);
		stream_events(s);
		return;
	}
	if (events & EPOLLOUT)
		stream_flush_local(s);
	if (!s->dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		stream_read_local(s);
	conn_flush(c);
}

static struct stream *stream_new(struct conn *c, int fd, uint32_t id)
{
	struct stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->ev.kind = EV_STREAM;
	s->ev.fd = fd;
	s->c = c;
	s->id = id;
	s->credit = DMSC_TF_WINDOW_INITIAL;
	s->recv_room = DMSC_TF_WINDOW_INITIAL;
	if (ev_add(c->t, &s->ev, 0)) {
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
 * may reach this host's workloads, not what listens on its loopback only. */
static const char *dest_refused(uint32_t addr)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = addr};
	int fd, err = 0;

	if ((ntohl(addr) >> 24) == 127)
		return "a loopback address";
	if (addr == INADDR_ANY || addr == INADDR_BROADCAST)
		return "not a host address";
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return "no socket";
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		err = errno;
	close(fd);
	return err ? "not an address of this host" : NULL;
}

static void handle_open(struct conn *c, uint32_t id, const uint8_t *p, uint16_t len)
{
	struct dmsc_tf_open o;
	struct sockaddr_in sa = {.sin_family = AF_INET};
	char addr[INET_ADDRSTRLEN];
	const char *refused;
	struct stream *s;
	int fd;

	if (!c->server || !(id & 1) || stream_find(c, id)) {
		conn_close(c, "OPEN on a stream it may not open");
		return;
	}
	if (!dmsc_tf_open_decode(p, len, &o)) {
		conn_reset(c, id, DMSC_TF_R_PROTOCOL, "malformed OPEN");
		return;
	}
	inet_ntop(AF_INET, &o.dest_addr, addr, sizeof(addr));
	refused = dest_refused(o.dest_addr);
	if (refused) {
		metric_count(c->t, "dest", c->peer_host, o.identity, "denied_dest");
		pr_info("tunnel: refused %s from host %s for %s: %s\n", addr, c->peer_host,
			o.identity, refused);
		conn_reset(c, id, DMSC_TF_R_DENIED, refused);
		return;
	}
	if (c->t->o->policy) {
		enum dmsc_tunnel_verdict v = dmsc_tunnel_authorize(c->t->o->policy, o.dest_addr,
								   ntohs(o.dest_port), o.identity);

		if (v != DMSC_TV_ALLOWED) {
			refused = v == DMSC_TV_DENIED
				      ? "no service with this backend allows the identity"
				      : "not a backend of this host's policy";
			metric_count(c->t, "dest", c->peer_host, o.identity,
				     v == DMSC_TV_DENIED ? "denied_identity" : "denied_dest");
			pr_info("tunnel: refused %s:%u from host %s for %s: %s\n", addr,
				ntohs(o.dest_port), c->peer_host, o.identity, refused);
			conn_reset(c, id, DMSC_TF_R_DENIED, refused);
			return;
		}
	}
	sa.sin_addr.s_addr = o.dest_addr;
	sa.sin_port = o.dest_port;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS)) {
		metric_count(c->t, "dest", c->peer_host, o.identity, "connect_failed");
		conn_reset(c, id, DMSC_TF_R_CONNECT, strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	s = stream_new(c, fd, id);
	if (!s) {
		close(fd);
		conn_reset(c, id, DMSC_TF_R_ERROR, "out of memory");
		return;
	}
	s->connecting = true;
	s->metric = metric_idx(c->t, "dest", c->peer_host, o.identity, "allowed");
	c->t->metrics[s->metric].n++;
	stream_events(s);
}

/* ---- TLS connections ---- */

static void conn_events(struct conn *c)
{
	uint32_t ev = EPOLLIN;

	if (c->dead)
		return;
	if (c->tcp_connecting || c->want_write || (c->up && c->out.len))
		ev |= EPOLLOUT;
	ev_set(c->t, &c->ev, ev);
}

static void conn_close(struct conn *c, const char *why)
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
		while (c->bucket[b])
			stream_close(c->bucket[b], true);
	epoll_ctl(c->t->ep, EPOLL_CTL_DEL, c->ev.fd, NULL);
	if (c->ssl && c->up)
		SSL_shutdown(c->ssl);
	close(c->ev.fd);
	for (pp = &c->t->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	c->next_dead = c->t->dead_conns;
	c->t->dead_conns = c;
}

static void conn_flush(struct conn *c)
{
	bool was_high = c->out.len >= CONN_OUT_HIGH;
	int b;

	if (c->dead || !c->up)
		return;
	c->want_write = false;
	while (c->out.len) {
		size_t n = c->out.len < 16384 ? c->out.len : 16384;
		int r = SSL_write(c->ssl, c->out.p + c->out.off, (int)n);

		if (r > 0) {
			buf_consume(&c->out, (size_t)r);
			continue;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_WRITE:
			c->want_write = true;
			break;
		case SSL_ERROR_WANT_READ:
			break;
		default:
			conn_close(c, ssl_err());
			return;
		}
		break;
	}
	conn_events(c);
	if (was_high && c->out.len < CONN_OUT_LOW)
		for (b = 0; b < STREAM_BUCKETS; b++) {
			struct stream *s;

			for (s = c->bucket[b]; s; s = s->hnext)
				stream_events(s);
		}
}

static void handle_frame(struct conn *c, const struct dmsc_tf_hdr *h, const uint8_t *p)
{
	struct stream *s;

	if (h->type == DMSC_TF_OPEN) {
		if (c->t->draining) {
			conn_reset(c, h->stream, DMSC_TF_R_SHUTDOWN, "the helper is going away");
			return;
		}
		handle_open(c, h->stream, p, h->len);
		return;
	}
	if (h->type == DMSC_TF_GOAWAY) {
		c->draining = true;
		if (!c->server && c->n_streams == 0)
			conn_close(c, "drained");
		return;
	}
	s = stream_find(c, h->stream);
	if (!s)
		return; /* reset here a moment ago: its frames in flight are dropped */
	switch (h->type) {
	case DMSC_TF_OPEN_OK:
		if (c->server || s->open_ok) {
			conn_close(c, "unexpected OPEN_OK");
			return;
		}
		s->open_ok = true;
		stream_events(s);
		break;
	case DMSC_TF_DATA:
		if (h->len > s->recv_room || s->peer_fin) {
			conn_reset(c, s->id, DMSC_TF_R_PROTOCOL, "DATA past the window or FIN");
			stream_close(s, true);
			break;
		}
		s->recv_room -= h->len;
		buf_append(&s->out, p, h->len);
		c->t->bytes_in += h->len;
		stream_flush_local(s);
		break;
	case DMSC_TF_WINDOW: {
		uint32_t v;

		if (h->len != 4) {
			conn_close(c, "malformed WINDOW");
			return;
		}
		memcpy(&v, p, 4);
		s->credit += ntohl(v);
		stream_events(s);
		break;
	}
	case DMSC_TF_FIN:
		s->peer_fin = true;
		stream_flush_local(s);
		break;
	case DMSC_TF_RESET:
		if (!s->open_ok && h->len > 1)
			pr_info("tunnel: stream %u to %s refused: %.*s\n", s->id, c->name,
				(int)h->len - 1, (const char *)p + 1);
		stream_close(s, true);
		break;
	}
}

static void conn_read(struct conn *c)
{
	for (;;) {
		struct dmsc_tf_hdr h;
		int r;

		if (buf_reserve(&c->in, 16384)) {
			conn_close(c, "out of memory");
			return;
		}
		r = SSL_read(c->ssl, c->in.p + c->in.off + c->in.len, 16384);
		if (r <= 0) {
			int e = SSL_get_error(c->ssl, r);

			if (e == SSL_ERROR_WANT_READ)
				break;
			if (e == SSL_ERROR_WANT_WRITE) {
				c->want_write = true;
				break;
			}
			conn_close(c, e == SSL_ERROR_ZERO_RETURN ? "closed by the peer"
				      : ERR_peek_last_error()	 ? ssl_err()
								 : "connection lost");
			return;
		}
		c->in.len += (size_t)r;
		while (c->in.len >= DMSC_TF_HDR && !c->dead) {
			const uint8_t *p = c->in.p + c->in.off;

			if (!dmsc_tf_get_hdr(p, &h)) {
				conn_close(c, "malformed frame header");
				return;
			}
			if (c->in.len < DMSC_TF_HDR + (size_t)h.len)
				break;
			handle_frame(c, &h, p + DMSC_TF_HDR);
			buf_consume(&c->in, DMSC_TF_HDR + (size_t)h.len);
		}
		if (c->dead)
			return;
	}
	conn_flush(c);
}

static void conn_handshake(struct conn *c)
{
	struct tunnel *t = c->t;
	char why[DMSC_MTLS_WHY_MAX];
	int r = SSL_do_handshake(c->ssl), e;

	if (r != 1) {
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			c->want_write = e == SSL_ERROR_WANT_WRITE;
			conn_events(c);
			return;
		}
		t->hs_refused[c->server]++;
		pr_warn("tunnel: %s %s refused: %s%s%s\n", c->server ? "peer" : "connection to",
			c->name, c->why[0] ? c->why : "", c->why[0] ? "; " : "",
			ERR_peek_last_error() ? ssl_err() : "the peer closed the handshake");
		conn_close(c, NULL);
		return;
	}
	if (dmsc_mtls_peer_identity(SSL_get0_peer_certificate(c->ssl), t->td, c->peer_host,
				    sizeof(c->peer_host), why, sizeof(why))) {
		t->hs_refused[c->server]++;
		c->peer_host[0] = '\0';
		pr_warn("tunnel: %s %s refused: %s\n", c->server ? "peer" : "connection to",
			c->name, why);
		conn_close(c, NULL);
		return;
	}
	c->up = true;
	t->hs_ok[c->server]++;
	if (SSL_session_reused(c->ssl))
		t->hs_resumed[c->server]++;
	pr_info("tunnel: %s %s is host %s (%s)\n", c->server ? "peer" : "connection to", c->name,
		c->peer_host, SSL_session_reused(c->ssl) ? "resumed" : "full handshake");
	conn_flush(c);
	if (!c->dead) {
		int b;

		for (b = 0; b < STREAM_BUCKETS; b++) {
			struct stream *s;

			for (s = c->bucket[b]; s; s = s->hnext)
				stream_events(s);
		}
	}
}

static void conn_event(struct conn *c, uint32_t events)
{
	if (c->tcp_connecting) {
		int err = 0;
		socklen_t l = sizeof(err);

		getsockopt(c->ev.fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			pr_warn("tunnel: connection to %s: %s\n", c->name, strerror(err));
			conn_close(c, NULL);
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
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		conn_read(c);
	if (!c->dead && (events & EPOLLOUT))
		conn_flush(c);
}

static struct conn *conn_new(struct tunnel *t, int fd, bool server, const struct sockaddr_in *sa)
{
	struct conn *c = calloc(1, sizeof(*c));
	char a[INET_ADDRSTRLEN];

	if (!c)
		return NULL;
	c->ev.kind = EV_CONN;
	c->ev.fd = fd;
	c->t = t;
	c->server = server;
	c->addr = *sa;
	c->peer_idx = -1;
	c->next_id = 1;
	c->started = time(NULL);
	inet_ntop(AF_INET, &sa->sin_addr, a, sizeof(a));
	snprintf(c->name, sizeof(c->name), "%s:%u", a, ntohs(sa->sin_port));
	c->ssl = SSL_new(t->ctx);
	if (!c->ssl || !SSL_set_fd(c->ssl, fd) || !SSL_set_ex_data(c->ssl, conn_ex_idx, c)) {
		SSL_free(c->ssl);
		free(c);
		return NULL;
	}
	if (server)
		SSL_set_accept_state(c->ssl);
	else
		SSL_set_connect_state(c->ssl);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	if (ev_add(t, &c->ev, EPOLLIN)) {
		SSL_free(c->ssl);
		free(c);
		return NULL;
	}
	c->next = t->conns;
	t->conns = c;
	return c;
}

/* A connection to the forward's peer that can take a new stream. */
static struct conn *conn_to(struct tunnel *t, int idx)
{
	const struct sockaddr_in *peer = &t->peers[idx].addr;
	struct conn *c;
	int fd;

	for (c = t->conns; c; c = c->next)
		if (!c->server && !c->dead && !c->draining && c->peer_idx == idx)
			return c;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	if (connect(fd, (const struct sockaddr *)peer, sizeof(*peer)) && errno != EINPROGRESS) {
		close(fd);
		return NULL;
	}
	c = conn_new(t, fd, false, peer);
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

/* ---- listeners ---- */

static int listen_on(struct tunnel *t, struct listener *l, const struct sockaddr_in *sa,
		     enum ev_kind kind)
{
	char a[INET_ADDRSTRLEN];
	int fd, err;

	inet_ntop(AF_INET, &sa->sin_addr, a, sizeof(a));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){1}, sizeof(int));
	/* a replacement helper binds beside this one while it drains */
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &(int){1}, sizeof(int));
	if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) || listen(fd, 1024)) {
		err = -errno;
		pr_warn("tunnel: cannot listen on %s:%u: %s\n", a, ntohs(sa->sin_port),
			strerror(errno));
		close(fd);
		return err;
	}
	l->ev.kind = kind;
	l->ev.fd = fd;
	return ev_add(t, &l->ev, EPOLLIN);
}

static void accept_peer(struct tunnel *t)
{
	struct sockaddr_in sa;
	socklen_t l = sizeof(sa);
	int fd = accept4(t->peer_l.ev.fd, (struct sockaddr *)&sa, &l, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (!conn_new(t, fd, true, &sa))
		close(fd);
}

static void accept_forward(struct tunnel *t, struct listener *l)
{
	const struct dmsc_tunnel_forward *f = &t->o->fwd[l->fwd];
	uint8_t p[6 + DMSC_TF_ID_MAX];
	char peer[INET_ADDRSTRLEN];
	struct stream *s;
	struct conn *c;
	size_t n;
	int fd = accept4(l->ev.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	inet_ntop(AF_INET, &f->peer.sin_addr, peer, sizeof(peer));
	c = conn_to(t, l->fwd);
	s = c ? stream_new(c, fd, c->next_id) : NULL;
	if (!s) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};

		metric_count(t, "source", peer, f->identity, "peer_unreachable");
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	c->next_id += 2;
	s->metric = metric_idx(t, "source", peer, f->identity, "opened");
	t->metrics[s->metric].n++;
	n = dmsc_tf_open_encode(p, f->dest.sin_addr.s_addr, f->dest.sin_port, f->identity);
	conn_frame(c, DMSC_TF_OPEN, s->id, p, (uint16_t)n);
	conn_flush(c);
}

/* A peer slot for a host's tunnel address; -1 when all are taken. */
static int host_peer(struct tunnel *t, const struct sockaddr_in *addr)
{
	size_t i;

	for (i = 0; i < t->n_host_peers; i++) {
		const struct sockaddr_in *a = &t->peers[DMSC_TUNNEL_FWD_MAX + i].addr;

		if (a->sin_addr.s_addr == addr->sin_addr.s_addr && a->sin_port == addr->sin_port)
			return (int)(DMSC_TUNNEL_FWD_MAX + i);
	}
	if (t->n_host_peers == DMSC_TUNNEL_HOSTS_MAX)
		return -1;
	t->peers[DMSC_TUNNEL_FWD_MAX + t->n_host_peers].addr = *addr;
	return (int)(DMSC_TUNNEL_FWD_MAX + t->n_host_peers++);
}

/* A connection connect4 handed over (tunnel_handoff.h): a stream to the
 * backend's host, vouching for the caller's cgroup; refused (reset) when
 * it has no record: never guessed (docs/design.md decision 21). */
static void accept_handoff(struct tunnel *t)
{
	char identity[DMSC_TF_ID_MAX + 1], why[256], peer[INET_ADDRSTRLEN];
	uint8_t p[6 + DMSC_TF_ID_MAX];
	struct sockaddr_in to, dest;
	struct stream *s = NULL;
	struct conn *c = NULL;
	int fd, idx = -1;
	size_t n;

	fd = accept4(t->handoff_l.ev.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (dmsc_tunnel_handoff_take(&t->ho, fd, t->o->policy, &to, &dest, identity,
				     sizeof(identity), why, sizeof(why))) {
		pr_warn("tunnel: handoff refused: %s\n", why);
		metric_count(t, "source", "", "", "no_handoff");
		goto refuse;
	}
	inet_ntop(AF_INET, &to.sin_addr, peer, sizeof(peer));
	idx = host_peer(t, &to);
	c = idx >= 0 ? conn_to(t, idx) : NULL;
	s = c ? stream_new(c, fd, c->next_id) : NULL;
	if (!s) {
		metric_count(t, "source", peer, identity, "peer_unreachable");
		goto refuse;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	c->next_id += 2;
	s->metric = metric_idx(t, "source", peer, identity, "opened");
	t->metrics[s->metric].n++;
	n = dmsc_tf_open_encode(p, dest.sin_addr.s_addr, dest.sin_port, identity);
	conn_frame(c, DMSC_TF_OPEN, s->id, p, (uint16_t)n);
	conn_flush(c);
	return;
refuse:;
	/* a reset, not an orderly close: the client sees an error */
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static int handoff_start(struct tunnel *t)
{
	const char *pin_dir = t->o->pin_dir ? t->o->pin_dir : dmsc_pin_dir();
	int err;

	err = dmsc_tunnel_handoff_open(&t->ho, pin_dir);
	if (!err)
		err = listen_on(t, &t->handoff_l, &t->o->handoff_listen, EV_HANDOFF_LISTEN);
	if (!err)
		err = dmsc_tunnel_handoff_register(&t->ho, &t->o->handoff_listen);
	if (!err)
		pr_info("tunnel: takes the kernel's handoffs on %s:%u\n",
			inet_ntoa(t->o->handoff_listen.sin_addr),
			ntohs(t->o->handoff_listen.sin_port));
	return err;
}

/* ---- the loop ---- */

static void reap(struct tunnel *t)
{
	while (t->dead_streams) {
		struct stream *s = t->dead_streams;

		t->dead_streams = s->next_dead;
		buf_free(&s->out);
		free(s);
	}
	while (t->dead_conns) {
		struct conn *c = t->dead_conns;

		t->dead_conns = c->next_dead;
		SSL_free(c->ssl);
		buf_free(&c->in);
		buf_free(&c->out);
		free(c);
	}
}

/* Every second: new certificate files (rotation: new connections use
 * them, the old ones drain), handshakes that take too long, metrics. */
static void tick(struct tunnel *t)
{
	char why[DMSC_MTLS_WHY_MAX], td[DMSC_MTLS_TD_MAX + 1];
	time_t now = time(NULL);
	struct conn *c, *next;
	SSL_CTX *ctx;
	int i;

	if (files_changed(t, false)) {
		if (ctx_load(t, &ctx, td, why, sizeof(why)) == 0) {
			files_changed(t, true);
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
				if (c->server)
					continue;
				c->draining = true;
				if (c->n_streams == 0)
					conn_close(c, "drained");
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
				conn_close(c, "handshake timed out");
			continue;
		}
		/* an idle connection to a peer is closed; the next stream makes a
		 * new one, resuming the TLS session (no new key exchange proof) */
		if (!c->server && c->idle_since_ms && t->o->peer_idle_ms &&
		    now_ms() - c->idle_since_ms >= t->o->peer_idle_ms) {
			conn_close(c, "idle");
			continue;
		}
		/* A peer whose certificate ran out while connected gets no new
		 * stream on this connection: a new one checks it again. */
		peer = SSL_get0_peer_certificate(c->ssl);
		if (peer && X509_cmp_current_time(X509_get0_notAfter(peer)) < 0) {
			if (!c->draining)
				pr_warn("tunnel: the certificate of host %s (%s) expired\n",
					c->peer_host, c->name);
			c->draining = true;
			if (c->n_streams == 0)
				conn_close(c, "the peer's certificate expired");
		}
	}
	metrics_write(t);
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
	for (c = t->conns; c; c = next) {
		next = c->next;
		c->draining = true;
		if (c->n_streams == 0) {
			conn_close(c, "drained");
			continue;
		}
		conn_frame(c, DMSC_TF_GOAWAY, 0, NULL, 0);
		conn_flush(c);
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
		conn_close(t->conns, NULL);
	reap(t);
	if (t->peer_l.ev.fd > 0)
		close(t->peer_l.ev.fd);
	for (i = 0; i < (int)t->o->n_fwd; i++)
		if (t->fwd_l[i].ev.fd > 0)
			close(t->fwd_l[i].ev.fd);
	if (t->handoff_l.ev.fd > 0)
		close(t->handoff_l.ev.fd);
	dmsc_tunnel_handoff_close(&t->ho);
	for (i = 0; i < PEERS_MAX; i++)
		SSL_SESSION_free(t->peers[i].sess);
	SSL_CTX_free(t->ctx);
	if (t->ep >= 0)
		close(t->ep);
	free(t);
}

int dmsc_tunnel_run(const struct dmsc_tunnel_opts *o, volatile sig_atomic_t *stop)
{
	struct epoll_event evs[EPOLL_BATCH];
	char why[DMSC_MTLS_WHY_MAX];
	struct tunnel *t = calloc(1, sizeof(*t));
	uint64_t next_tick, drain_end = 0;
	size_t i;
	int n, k, err;

	if (!t)
		return -ENOMEM;
	t->o = o;
	t->ho.handoff_fd = t->ho.conf_fd = t->ho.cg_fd = -1;
	t->ep = epoll_create1(EPOLL_CLOEXEC);
	if (conn_ex_idx < 0)
		conn_ex_idx = SSL_get_ex_new_index(0, "dmsc conn", NULL, NULL, NULL);
	files_changed(t, true);
	err = ctx_load(t, &t->ctx, t->td, why, sizeof(why));
	if (err) {
		pr_warn("tunnel: %s\n", why);
		goto out;
	}
	if (o->listen.sin_port && (err = listen_on(t, &t->peer_l, &o->listen, EV_PEER_LISTEN)))
		goto out;
	/* Without the kernel's handoff the tunnel still serves other hosts
	 * (and its forwards); connect4 then connects directly, counted. */
	if (o->handoff_listen.sin_port && handoff_start(t))
		pr_warn("tunnel: not taking the kernel's handoffs (see above)\n");
	for (i = 0; i < o->n_fwd; i++) {
		t->peers[i].addr = o->fwd[i].peer;
		t->fwd_l[i].fwd = (int)i;
		if ((err = listen_on(t, &t->fwd_l[i], &o->fwd[i].listen, EV_FWD_LISTEN)))
			goto out;
	}
	if (o->ready_fd >= 0) {
		if (write(o->ready_fd, "ready\n", 6) != 6)
			pr_warn("tunnel: --ready-fd: %s\n", strerror(errno));
		close(o->ready_fd);
	}
	next_tick = now_ms() + TICK_MS;
	metrics_write(t);
	for (;;) {
		uint64_t now = now_ms();

		if (*stop && !t->draining) {
			tunnel_drain(t);
			reap(t);
			drain_end = now + o->drain_ms;
		}
		if (t->draining && (!streams_open(t) || now >= drain_end))
			break;
		int timeout = now >= next_tick ? 0 : (int)(next_tick - now);

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
				accept_handoff(t);
				break;
			case EV_CONN:
				if (!((struct conn *)e)->dead)
					conn_event((struct conn *)e, evs[k].events);
				break;
			case EV_STREAM:
				if (!((struct stream *)e)->dead)
					stream_event((struct stream *)e, evs[k].events);
				break;
			}
		}
		reap(t);
		if (now_ms() >= next_tick) {
			tick(t);
			reap(t);
			next_tick = now_ms() + TICK_MS;
		}
	}
	metrics_write(t);
out:
	tunnel_free(t);
	return err;
}

/* ---- options ---- */

int dmsc_tunnel_addr_parse(const char *arg, struct sockaddr_in *sa)
{
	char host[INET_ADDRSTRLEN];
	const char *colon = strrchr(arg, ':');
	char *end;
	unsigned long port;

	if (!colon || (size_t)(colon - arg) >= sizeof(host))
		return -EINVAL;
	memcpy(host, arg, (size_t)(colon - arg));
	host[colon - arg] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port == 0 || port > 65535)
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -EINVAL;
}

int dmsc_tunnel_forward_parse(const char *arg, struct dmsc_tunnel_forward *f, char *why, size_t len)
{
	char buf[3 * 32 + DMSC_TF_ID_MAX + 4], *eq, *c1, *c2;

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
		snprintf(why, len, "\"%s\" is not an IPv4 ADDR:PORT to listen on", buf);
		return -EINVAL;
	}
	if (dmsc_tunnel_addr_parse(eq + 1, &f->peer)) {
		snprintf(why, len, "\"%s\" is not the peer helper's IPv4 ADDR:PORT", eq + 1);
		return -EINVAL;
	}
	if (dmsc_tunnel_addr_parse(c1 + 1, &f->dest)) {
		snprintf(why, len, "\"%s\" is not the destination's IPv4 ADDR:PORT", c1 + 1);
		return -EINVAL;
	}
	if (!c2[1] || strlen(c2 + 1) > DMSC_TF_ID_MAX) {
		snprintf(why, len, "the identity is empty or longer than %d bytes", DMSC_TF_ID_MAX);
		return -EINVAL;
	}
	snprintf(f->identity, sizeof(f->identity), "%s", c2 + 1);
	return 0;
}
