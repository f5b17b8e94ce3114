// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7's internals shared by its files: the limits, the options, the
 * connection and worker state, the per-route metrics. The design is
 * described at the top of dmsc-l7.c.
 */
#ifndef DMSC_L7_PROXY_H
#define DMSC_L7_PROXY_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <http_parser.h>

#include "addr.h"
#include "array.h"
#include "datapath.h"
#include "dmsc/shared.h"
#include "dmsc/bucket.h"
#include "l7_ep.h"
#include "l7_h2.h"
#include "l7_health.h"
#include "l7_http.h"
#include "l7_netns.h"
#include "l7_route.h"
#include "l7_via.h"
#include "log.h"
#include "parse.h"
#include "pin_dir.h"
#include "policy.h"

/* ---- limits (documented in docs/l7.md) --------------------------- */
#define CIN_SIZE (16 * 1024)   /* client input buffer */
#define UIN_SIZE (16 * 1024)   /* backend input buffer; a response head must fit */
#define OUT_HIGH (64 * 1024)   /* stop reading the other side past this */
#define RETAIN_MAX (64 * 1024) /* a request larger than this is not retried on 502/503 */
#define MAX_EVENTS 256
#define SWEEP_MS 100
#define POOL_MAX 256 /* idle keep-alive backend connections per worker */
/* pool slots per worker: the idle ones and those lent to a request */
#define POOL_SLOTS 1024
/* what epoll watches on a backend connection that reads (and on an idle
 * one): the same mask, so that lending and returning one costs no
 * epoll_ctl */
#define POOL_EV (EPOLLIN | EPOLLRDHUP)
#define CLIENT_BUCKETS 4096 /* hash buckets of the per-client connection counts */
#define LISTEN_BACKLOG 4096
/* After an answer that closes the connection, its input is read and
 * dropped this long (after shutdown(SHUT_WR)) so that unread request bytes
 * do not turn our close into a reset that destroys the answer. */
#define LINGER_MS 2000

struct l7_opts {
	struct sockaddr_in listen;
	const char *policy_file;
	const char *pin_dir;
	const char *access_log;
	const char *metrics_file;
	int workers;
	int ready_fd;
	int updates_fd; /* --policy-updates: dmscd's changes of weights (l7_update.c) */
	bool no_register;
	bool no_netns; /* --no-netns: no listeners in other namespaces */
	bool baton;    /* --baton: dmscd's helper, handing over across its restarts (baton.h) */
	uint32_t max_header_bytes; /* request line + headers: past it 431 */
	uint32_t max_headers;	   /* header fields: past it 431 */
	uint32_t max_target;	   /* request target: past it 414 */
	uint32_t idle_ms;	   /* keep-alive idle, between requests */
	uint32_t head_ms;	   /* a whole request head (slowloris): 408 */
	uint32_t io_ms;		   /* no progress on a body or a write */
	uint32_t default_timeout_ms;
	uint32_t default_retries;
	uint32_t drain_ms;
	uint32_t orphan_ms; /* serving on after dmscd died (baton.h) */
	uint32_t max_conns; /* per worker */
	uint32_t pool_idle_ms;	       /* an idle pooled backend connection lives this long */
	uint32_t max_conns_per_client; /* per client address, all workers together */
	unsigned int forwarded;	       /* FWD_* */
	const char *host;	       /* --host: this host's name (l7_via.h) */
};
extern struct l7_opts opt;

/* --forwarded: what the helper tells a backend about the client */
#define FWD_XFF 1u	 /* X-Forwarded-For: the client's address appended */
#define FWD_FORWARDED 2u /* Forwarded: for=...;proto=http appended (RFC 7239) */

/* ---- metrics ----------------------------------------------------------- */
static const int status_codes[] = {100, 101, 200, 201, 202, 204, 206, 301, 302, 304,
				   307, 308, 400, 401, 403, 404, 405, 408, 409,
				   413, 414, 429, 431, 500, 501, 502, 503, 504};
#define N_CODES (sizeof(status_codes) / sizeof(status_codes[0]))
#define CODE_OTHER N_CODES
/* Latency buckets, seconds; a request's latency is from its head parsed to
 * its response complete. */
static const double hist_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
				 0.1,	 0.25,	0.5,	1,     2.5,  5,	    10};
#define N_HIST (sizeof(hist_le) / sizeof(hist_le[0]))

/* gRPC status codes 0 (OK) to 16 (UNAUTHENTICATED) */
#define DMSC_L7_GRPC_CODES 17
struct route_metrics {
	uint64_t code[N_CODES + 1];
	uint64_t grpc[DMSC_L7_GRPC_CODES]; /* HTTP/2 streams that carried grpc-status */
	uint64_t hist[N_HIST + 1];
	uint64_t sum_ns;
	uint64_t retries;
};

/* Per worker, written by its worker only, read by the metrics writer
 * (relaxed atomics: counters, not invariants). */
struct metrics {
	struct route_metrics *rm; /* [svc][route + 1]; slot 0 is "no route" */
	size_t *rm_base;	  /* per service: first index in rm */
	uint64_t accepted, no_handoff, unknown_service, over_capacity, client_limit;
	uint64_t h2_moved; /* HTTP/2 connections handed to a less busy worker */
	/* accepts paused for want of descriptors (l7_worker.c accept_pause):
	 * the worker's --listen socket, a namespace's listener */
	uint64_t accept_pauses, accept_pauses_ns;
};

static inline void ctr_add(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* ---- state ------------------------------------------------------------- */
extern struct dmsc_l7_config cfg;
struct svc_rt {
	pthread_mutex_t lock;
	struct dmsc_tb bucket; /* requests_per_second, include/dmsc/bucket.h */
	uint64_t rate, depth;
};
extern struct svc_rt *svc_rt; /* parallel to cfg.svcs */
extern int handoff_fd;
extern int handoff6_fd;
extern int own_fd; /* dmsc_l7_own */
extern struct dmsc_l7_via via; /* backends on other hosts: the tunnel */
extern int access_fd;
extern volatile int draining;
extern size_t n_route_slots;

enum cstate {
	S_IDLE,	    /* between requests */
	S_HEAD,	    /* a request head is arriving */
	S_LOCAL,    /* answering it ourselves; its body is read and dropped */
	S_UPSTREAM, /* forwarding it */
	/* after a 101 to its Upgrade: bytes both ways, unparsed, until both
	 * ends close (decision 82) */
	S_TUNNEL,
};

struct buf {
	char *p;
	size_t off, len, cap;
};

struct worker;

struct conn {
	struct ep cep, uep;
	struct worker *w;
	struct conn *prev, *next;
	int cfd, ufd;
	const struct dmsc_l7_service *svc;
	size_t svc_idx;
	struct sockaddr_storage peer;
	struct dmsc_l7_client *client; /* its count in --max-conns-per-client */
	uint64_t cgroup; /* the client's, from its handoff record; 0: unknown (IPv6) */
	uint64_t affinity_key; /* client_id(client), if its service has affinity */
	uint32_t seed;	       /* the request's, under an affinity (dmsc_l7_request_seed) */
	uint64_t up_key; /* the identity ufd carries (dmsc_l7_via_key) */

	http_parser sp;
	enum cstate state;
	char cin[CIN_SIZE];
	size_t cin_len, cin_off;
	bool cin_eof;
	struct buf cout; /* to the client */
	struct buf uout; /* to the backend */
	char uin[UIN_SIZE];
	size_t uin_len;

	struct dmsc_l7_req_parser rq;  /* the request being parsed */
	bool paused_head, paused_done; /* the response parser's */

	/* routing and the backend side */
	int route;
	int backend;
	uint64_t tried;
	uint32_t retries_left;
	uint32_t attempts;
	bool idempotent, is_head, client_keepalive, close_after;
	bool spoke; /* the client has sent something: a drain may close it idle */
	bool retain;	 /* uout still holds the whole request from offset 0 */
	bool connecting; /* ufd: connect() in progress */
	bool up_reused;	 /* ufd came from the idle pool */
	bool resp_head, resp_done, resp_started, resp_interim;
	bool up_reusable;
	bool u_reg; /* ufd is in epoll (added lazily, after a first write) */
	/* the pool slot ufd came from: it stays in epoll as that slot's
	 * (EP_POOL, its events this connection's while lent) */
	struct pooled *uslot;
	bool counted;  /* holds one of its client address's connections */
	bool h1;       /* its first bytes were not the HTTP/2 preface */
	bool client10; /* the request is HTTP/1.0: answered in 1.0 framing */
	bool dechunk;  /* the response body is de-chunked for a 1.0 client */
	int status;
	uint64_t t_req;	      /* head parsed, ns */
	uint64_t idle_since;  /* its last response complete, ns (the drain's idle close) */
	uint64_t deadline;    /* client side, ns; 0: none */
	uint64_t up_deadline; /* backend side, ns; 0: none */
	uint32_t timeout_ms;
	uint32_t cev, uev; /* what epoll watches */
	bool lingering;	   /* answered and shut down; dropping input until EOF */
	/* S_TUNNEL: the backend ended its side; each side's end passed on */
	bool up_eof, c_wr_shut, u_wr_shut;
	bool dead;	   /* freed after the current batch of events */
	struct conn *dead_next;
};

/* A keep-alive backend connection of the pool. It stays in epoll (POOL_EV,
 * as EP_POOL) from its first return to the pool until it closes: idle,
 * anything the backend sends or a close means it cannot carry a request
 * any more; lent to a request (lent), its events are that connection's.
 * Slots do not move (epoll points at them); fd -1 is a free slot. */
struct pooled {
	struct ep ep;
	int fd;
	struct conn *lent; /* carrying this connection's request; NULL: idle */
	uint8_t addr[16]; /* the backend's; an IPv4 one as ::ffff:a.b.c.d */
	uint16_t port;	  /* network order */
	/* the identity it carries (dmsc_l7_via_key): a connection through
	 * the tunnel is vouched for one client's cgroup, and carries no other
	 * client's requests (docs/design.md decision 75); 0: direct */
	uint64_t key;
	uint64_t since; /* ns: idle since */
};

struct worker {
	int id;
	pthread_t th;
	int epfd, lfd;
	struct ep lep;
	struct conn *conns;
	struct conn *dead; /* events of this batch may still name them */
	uint32_t n_conns;
	uint64_t rng;
	struct pooled pool[POOL_SLOTS];
	int n_pool; /* idle connections (at most POOL_MAX) */
	struct metrics m;
	bool listening;
	bool accept_paused; /* out of fds: lfd out of epoll until the next sweep */
	struct dmsc_l7_h2_env h2; /* its HTTP/2 connections (l7_h2.h) */
	/* HTTP/2 connections other workers hand over (l7_h2_move.c) */
	struct ep move_ep; /* EP_H2_MOVE */
	int move_efd;
	pthread_mutex_t move_lock;
	struct h2_moved *moved;
};

extern struct worker *workers;

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint32_t rnd(struct worker *w)
{
	/* xorshift64*: per worker, no locks */
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return (uint32_t)((w->rng * 2685821657736338717ull) >> 32);
}

#define CONTAINER(ptr, field) ((struct conn *)((char *)(ptr)-offsetof(struct conn, field)))


/* l7_h2_move.c: HTTP/2 client connections spread over the workers */
int h2_move_init(struct worker *w);
/* true: the connection (fd, its place in the per-client count, the bytes
 * read so far) went to a worker with fewer HTTP/2 connections than w;
 * false: w serves it, and calls h2_unplace(w) if it cannot start it */
bool h2_move(struct worker *w, int fd, struct dmsc_l7_client *client,
	     const struct dmsc_l7_service *svc, size_t svc_idx, uint64_t cgroup, const char *in,
	     size_t len);
void h2_unplace(struct worker *w);
void h2_move_event(struct worker *w);
/* at the worker's exit: what is queued for it closes */
void h2_move_close(struct worker *w);

/* l7_conn.c */
/*
 * What --max-conns-per-client counts a connection as: its client's address
 * as the accepted socket shows it (an IPv4 one as ::ffff:a.b.c.d), within
 * the namespace it came from where addresses repeat: 0 for --listen, the
 * IPv4 listener's address tagged DMSC_L7_SCOPE_NS4 for a namespace's
 * listener (every client there is 127.0.0.1 or another loopback address of
 * its own), the namespace's cookie for a [::1] listener (cookies count up
 * from 1 and never reach the tag). docs/l7.md "Connections per client".
 */
#define DMSC_L7_SCOPE_NS4 (1ull << 63)
struct dmsc_l7_client_key {
	uint64_t scope;
	uint8_t addr[16];
};

/* One of the client's connections; NULL past --max-conns-per-client (or
 * out of memory). */
struct dmsc_l7_client *client_take(const struct dmsc_l7_client_key *k);
void client_release(struct dmsc_l7_client *client);
/* Who the client is, its key hashed (affinity "client", dmsc_l7_pick_seed);
 * 0 for NULL. */
uint64_t client_id(const struct dmsc_l7_client *client);
int buf_add(struct buf *b, const void *data, size_t len);
int __attribute__((format(printf, 2, 3))) buf_fmt(struct buf *b, const char *fmt, ...);
size_t buf_pending(const struct buf *b);
void buf_reset(struct buf *b);
void conn_update(struct conn *c);
void upstream_close(struct conn *c, bool reuse);
void conn_free(struct conn *c);
void conn_reap(struct worker *w);
bool body_left_large(const struct conn *c);
void respond_local(struct conn *c, int status, bool close, uint64_t retry_after_s);

/* l7_client.c */
extern const struct dmsc_l7_http_hooks req_hooks;
void conn_close_client(struct conn *c);
void client_write(struct conn *c);
void reject(struct conn *c, int status);
void client_parse(struct conn *c);
void client_read(struct conn *c);
void conn_step(struct conn *c);

/* l7_upstream.c */
void pool_drop(struct worker *w, struct pooled *p);
bool pool_quiet(int fd);
void pool_put(struct worker *w, struct conn *c, const struct sockaddr_storage *to, uint64_t key);
void pool_expire(struct worker *w, uint64_t now);
void dispatch(struct conn *c);
void upstream_write(struct conn *c);
void upstream_on_connected(struct conn *c);
void upstream_read(struct conn *c);
/* S_TUNNEL (decision 82): ends passed on, the connection closed once both
 * sides ended; a reset on either side resets both */
void tunnel_step(struct conn *c);
void tunnel_abort(struct conn *c);

/* l7_worker.c */
void sweep(struct worker *w, uint64_t now);
int open_listener(void);
void *worker_main(void *arg);
void worker_h2_init(struct worker *w);
extern const struct dmsc_l7_netns_ops netns_ops;

/* l7_metrics.c */
void fmt_addr(uint32_t addr, uint16_t port_be, char *buf, size_t len);
/* A client's address, [IPv6] bracketed when port is true. */
void fmt_peer(const struct sockaddr_storage *ss, bool port, char *buf, size_t len);
void request_finished(struct conn *c);
void h2_finished(void *worker, const struct dmsc_l7_service *svc, size_t svc_idx, int route,
		 int status, uint64_t dur, uint32_t attempts, int grpc_status);
void metrics_write(void);

/* l7_update.c: a change of weights taken in place (decision 85) */
/* Keeps the view at path, what the next one is compared with. */
int l7_update_keep_view(const char *path);
/* What dmscd sent on *sock (--policy-updates), each answered; *sock
 * becomes -1 once dmscd's end is gone. */
void l7_policy_updates(int *sock);
struct dmsc_buf;
void l7_update_metrics(struct dmsc_buf *b);

#endif
