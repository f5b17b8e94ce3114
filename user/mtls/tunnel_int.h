/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The tunnel's private parts, shared by tunnel.c (the loop, listeners,
 * options), tunnel_io.c (buffers, metrics, epoll), tunnel_ctx.c (the TLS
 * context), tunnel_tls.c (the TLS connections) and tunnel_stream.c
 * (streams, the destination's checks). Not for use outside user/mtls.
 */
#ifndef DMSC_TUNNEL_INT_H
#define DMSC_TUNNEL_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <openssl/ssl.h>

#include "mark.h"
#include "mtls_cert.h"
#include "tunnel.h"
#include "tunnel_authz.h"
#include "tunnel_handoff.h"
#include "tunnel_repick.h"

/* what a destination writes locally before it credits the sender back */
#define DMSC_TF_WINDOW_CREDIT_BATCH (DMSC_TF_WINDOW_INITIAL / 4)
/* A destination grows a stream's window past the initial one while the
 * sender fills it and the local reader keeps up, up to STREAM_WINDOW_MAX,
 * and all streams' growth together up to TUNNEL_WINDOW_EXTRA_MAX
 * (docs/design.md decision 69) */
#define STREAM_WINDOW_MAX (1u << 20)
#define TUNNEL_WINDOW_EXTRA_MAX (64u << 20)

#define CONN_OUT_HIGH (512u << 10)
#define CONN_OUT_LOW (128u << 10)
/* Bulk (docs/design.md decision 65): one readv() of a local socket takes
 * up to this many frames' payloads, straight into the connection's
 * buffer behind room left for their headers */
#define STREAM_READ_FRAMES 16
/* records sealed into the connection's wire buffer before one write() of
 * them to its socket (without kTLS), and plaintext per SSL_write call */
#define WIRE_BATCH (256u << 10)
#define SEAL_MAX (64u << 10)
/* without kTLS, one read() of a connection's socket takes up to this many
 * bytes of records, which OpenSSL then reads from memory */
#define WIRE_READ (256u << 10)
#define STREAM_BUCKETS 256
#define EPOLL_BATCH 64
/* rows of dmsc_tunnel_streams_total (side, peer, identity, verdict); past
 * them a new pair is counted as peer and identity "(other)" */
#define METRICS_MAX 16384
#define METRIC_BUCKETS 1024
#define METRIC_OTHER "(other)"
#define TICK_MS 1000
#define HANDSHAKE_TIMEOUT_S 10

enum ev_kind { EV_PEER_LISTEN, EV_FWD_LISTEN, EV_HANDOFF_LISTEN, EV_CONN, EV_STREAM, EV_UPDATES };

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
	/* Another holds a pointer into the bytes (a connection's out while
	 * OpenSSL waits to write them with kTLS: decision 89): they stay where
	 * they are, as they are, until it lets go (tn_buf_release). An append
	 * that needs room then takes a new block; the ones before are kept,
	 * unchanged, in retired. */
	bool held;
	uint8_t **retired;
	size_t n_retired;
};

struct tunnel;

struct conn {
	struct ev ev;
	struct tunnel *t;
	SSL *ssl;
	bool server, tcp_connecting, up, draining, dead, want_write;
	bool ktls_send; /* the kernel seals what SSL_write takes (decision 89) */
	union dmsc_tunnel_sa addr;
	int peer_idx;  /* client: the forward's peer; server: -1 */
	char name[64]; /* ADDR:PORT for logs */
	char peer_host[DMSC_MTLS_HOST_MAX + 1];
	/* the verify callback's reason; once up, why it takes no new streams */
	char why[DMSC_MTLS_WHY_MAX];
	time_t started;
	uint64_t idle_since_ms; /* client: when its last stream ended; 0: busy */
	/* the frame being read: its header (rd_hdr_len bytes of it so far),
	 * then rd_left bytes of its payload; a DATA payload for no stream is
	 * dropped */
	uint8_t rd_hdr[DMSC_TF_HDR];
	size_t rd_hdr_len, rd_left;
	struct dmsc_tf_hdr rd;
	bool rd_body, rd_drop;
	struct buf in, out;
	/* without kTLS: the records OpenSSL sealed, not yet written to the
	 * socket (tn_conn_flush writes them in one write()), and those read
	 * from the socket that OpenSSL has not taken yet */
	struct buf wire, rx;
	/* the last read() of the socket came back short: the socket had
	 * nothing more then, so OpenSSL's next ask for bytes waits for
	 * epoll (level-triggered) instead of a read() that says EAGAIN */
	bool rx_drained;
	struct stream *bucket[STREAM_BUCKETS];
	/* streams DATA came for in this read, written to after it */
	struct stream *to_write;
	unsigned int n_streams;
	uint32_t next_id;
	struct conn *next; /* all conns */
	struct conn *next_dead;
	/* frames queued in this batch of events, written after it */
	struct dmsc_mark flush;
};

struct stream {
	struct ev ev;
	struct conn *c;
	struct stream *hnext;
	uint32_t id;
	int metric;	    /* index in t->metrics; -1: not counted (no memory) */
	struct buf out;	    /* from the tunnel, to the local socket */
	uint32_t credit;    /* DATA bytes we may still send */
	uint32_t unacked;   /* written locally, not yet credited back */
	uint32_t recv_room; /* DATA bytes the peer may still send */
	/* what we let the peer have in flight, buffered here or written and
	 * not yet credited: recv_room + out.len + unacked (decision 69) */
	uint32_t window;
	bool window_filled; /* the peer came near its end since the last credit */
	/* a write to the local socket would have blocked once: the window
	 * grows no more */
	bool reader_slow;
	bool open_ok, connecting, rd_eof, peer_fin, wr_shut, dead, write_marked;
	/* source: dmscd's tcp probe (DMSC_TF_ID_PROBE_TCP), ended once open */
	bool probe_tcp;
	/* source: the backend whose passive health the stream's opening
	 * counts for (tunnel_health.h); zero ids: none */
	struct dmsc_tunnel_hkey hk;
	/* source: a handover that may go to another backend while it has not
	 * opened (tunnel_repick.h); NULL for other streams, and once open */
	struct dmsc_tunnel_origin *orig;
	/* destination: the backend and the identity it was allowed for,
	 * checked again when a new policy comes (decision 83) */
	union dmsc_tunnel_sa dest;
	char *identity;
	struct stream *next_dead;
	struct stream *next_write; /* c->to_write */
};

struct listener {
	struct ev ev;
	int fwd; /* EV_FWD_LISTEN: index in o->fwd */
};

struct peer {
	SSL_SESSION *sess; /* the last ticket it gave us: resumption */
	union dmsc_tunnel_sa addr;
};

/* A row of dmsc_tunnel_streams_total. Rows are never removed: an index
 * stays valid, and so do peer and identity (their own blocks) when the
 * table grows. */
struct metric {
	char side[8], verdict[24];
	char *peer, *identity;
	unsigned long long n;
	int next; /* the next row of its bucket, or -1 */
};

struct tunnel {
	const struct dmsc_tunnel_opts *o;
	/* this host's policy: o->policy, then the last one dmscd handed over
	 * (own_policy, decision 83) */
	const struct dmsc_policy *policy;
	struct dmsc_policy *own_policy;
	struct ev updates; /* o->updates_fd, or the one of a dmscd that adopted it */
	/* dmscd sends it policies: the end of their socket says dmscd went
	 * (its parent-death signal cannot, once adopted: decision 86) */
	bool dmscd_sends;
	const char *metrics_file; /* o->metrics_file, or metrics_path */
	char metrics_path[PATH_MAX]; /* named by a dmscd that adopted it */
	/* policies dmscd handed over: [0] taken, [1] not */
	unsigned long long policy_updates[2];
	int ep;
	SSL_CTX *ctx;
	char td[DMSC_MTLS_TD_MAX + 1];
	struct timespec files_mtime[3];
	bool reload_failed_logged;
	struct listener peer_l, fwd_l[DMSC_TUNNEL_FWD_MAX];
	struct peer peers[PEERS_MAX];
	size_t n_host_peers; /* used after the forwards' */
	struct listener handoff_l, handoff_l6; /* connect4's, connect6's ([::1]) */
	struct dmsc_tunnel_handoff ho;
	struct dmsc_tunnel_health health; /* of the backends of ho's streams */
	struct dmsc_tunnel_repick repick; /* another backend for them */
	struct conn *conns;
	struct conn *dead_conns;
	struct dmsc_mark *to_flush; /* tn_conn_flush_later's, this batch */
	struct stream *dead_streams;
	struct metric *metrics;
	size_t n_metrics, cap_metrics;
	int metric_heads[METRIC_BUCKETS]; /* each bucket's first row + 1; 0: none */
	bool metrics_full_said;
	unsigned long long hs_ok[2], hs_refused[2], hs_resumed[2]; /* [server] */
	unsigned long long bytes_in, bytes_out, reloads, reload_failures;
	/* a stream stopped reading its socket: no credit left (the peer's
	 * window is full), or its connection's buffer past CONN_OUT_HIGH */
	unsigned long long stalls_window, stalls_conn;
	/* streams' windows past the initial one, in bytes (decision 69), and
	 * how often one grew or shrank */
	unsigned long long window_extra, window_grown, window_shrunk;
	/* kTLS (docs/design.md decision 45): whether this kernel has it, and
	 * per direction [0 send, 1 receive] the TLS connections whose records
	 * the kernel seals or opens, and those OpenSSL does in userspace */
	bool ktls;
	unsigned long long ktls_conns[2], user_crypto_conns[2];
	bool draining; /* stopping: no new streams, the open ones finish */
	/* out of descriptors (or memory) at an accept: the listeners are out
	 * of epoll until a stream or connection closes, or the next tick;
	 * the connections wait in their queues meanwhile */
	bool accept_paused;
	unsigned long long accept_pauses;
	uint64_t accept_warned_ms;
	/* the first stream id of a connection: 1 (DMSC_TUNNEL_FIRST_STREAM, odd,
	 * lets a test reach the last ids) */
	uint32_t first_stream_id;
};

/* the SSL ex_data index holding a connection (dmsc_tunnel_run sets it) */
extern int tn_conn_ex_idx;

uint64_t tn_now_ms(void);

/* buffers */
int tn_buf_reserve(struct buf *b, size_t more);
int tn_buf_append(struct buf *b, const void *data, size_t n);
void tn_buf_consume(struct buf *b, size_t n);
void tn_buf_release(struct buf *b);
void tn_buf_free(struct buf *b);

/* metrics */
int tn_metric_count(struct tunnel *t, const char *side, const char *peer, const char *identity,
		    const char *verdict);
void tn_metrics_free(struct tunnel *t);
void tn_metrics_write(struct tunnel *t);

/* Closes fd with a TCP reset (linger 0), not an orderly end: the local
 * peer sees an error. */
void tn_fd_reset(int fd);

/* epoll */
void tn_ev_set(struct tunnel *t, struct ev *e, uint32_t events);
/* e (kind, fd) added to the tunnel's epoll: 0 or a negative errno. */
int tn_ev_add(struct tunnel *t, struct ev *e, enum ev_kind kind, int fd, uint32_t events);

/* TLS context and connections */
const char *tn_ssl_err(void);
const char *tn_ssl_io_why(int e, int err);
/* The BIO that collects a connection's records for one write() (decision
 * 65); tn_wire_method_free at the end. */
int tn_wire_method_init(void);
void tn_wire_method_free(void);
int tn_ctx_load(struct tunnel *t, SSL_CTX **out, char *td, char *why, size_t len);
/* Whether this kernel has kTLS (the "tls" TCP upper layer protocol); logs
 * which path the tunnel's records take. */
bool tn_ktls_probe(void);
bool tn_files_changed(struct tunnel *t, bool remember);
/* The peer's certificate checked again under t->ctx: 0, or -EACCES and why. */
int tn_conn_reverify(struct conn *c, char *why, size_t len);
void tn_conn_close(struct conn *c, const char *why);
void tn_conn_flush(struct conn *c);
/* The frames queued on c leave after this batch of events, with those of
 * every other stream of c that had an event in it: one write of TLS
 * records for all of them, not one per stream (tn_conn_flush_marked). */
void tn_conn_flush_later(struct conn *c);
void tn_conn_flush_marked(struct tunnel *t);
void tn_conn_event(struct conn *c, uint32_t events);
struct conn *tn_conn_new(struct tunnel *t, int fd, bool server, const union dmsc_tunnel_sa *sa);
struct conn *tn_conn_to(struct tunnel *t, int idx);
/* The id of c's next stream (odd, rising); after the last one c takes no
 * new streams (draining). */
uint32_t tn_conn_stream_id(struct conn *c);

/* streams */
int tn_conn_frame(struct conn *c, uint8_t type, uint32_t stream, const void *payload, uint16_t len);
int tn_conn_frame_flags(struct conn *c, uint8_t type, uint8_t flags, uint32_t stream,
			const void *payload, uint16_t len);
void tn_conn_reset(struct conn *c, uint32_t stream, enum dmsc_tf_reset reason, const char *text);
struct stream *tn_stream_find(struct conn *c, uint32_t id);
void tn_stream_close(struct stream *s, bool abort);
/* Ends the stream as tn_stream_close does, its local socket left open
 * and out of epoll: the descriptor, for another stream. */
int tn_stream_detach(struct stream *s);
/* A stream the kernel handed over failed before it opened (its backend's
 * host could not connect, or was not reached: host_down): true when its
 * connection went to another backend of its service (decision 81), s
 * gone; false when it may not or no other backend is left: the caller
 * closes s. */
bool tn_stream_repick(struct stream *s, bool host_down);
void tn_stream_events(struct stream *s);
void tn_stream_flush_local(struct stream *s);
void tn_stream_event(struct stream *s, uint32_t events);
struct stream *tn_stream_new(struct conn *c, int fd, uint32_t id);
void tn_handle_open(struct conn *c, uint32_t id, uint8_t flags, const uint8_t *p, uint16_t len);
/* The destination's check of identity for the backend at dest under p
 * (tunnel_authz.h), at a stream's OPEN and again for a new policy */
enum dmsc_tunnel_verdict tn_authorize(const struct dmsc_policy *p, const union dmsc_tunnel_sa *dest,
				     const char *identity);

/* policies dmscd hands over (tunnel_policy.c, decision 83): what waits on
 * t->updates taken, each answered; the policy taken freed at the end */
void tn_policy_updates(struct tunnel *t);
void tn_policy_free(struct tunnel *t);

#endif /* DMSC_TUNNEL_INT_H */
