// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7: the per-host HTTP helper. cgroup/connect4 hands it the
 * connections to protocol "http" services; it routes each request on its
 * own (path, method, headers; first match wins), picks a backend by weight
 * from the route's label selector, and enforces requests_per_second,
 * timeouts and retries.
 *
 *   dmsc-l7 --listen ADDR:PORT --policy FILE [options]   (see usage())
 *
 * Design:
 * - N workers (default: one per CPU), each a thread with its own epoll and
 *   its own SO_REUSEPORT listener: the kernel spreads connections, workers
 *   share nothing on the hot path but the per-service request buckets.
 * - The service of a connection comes from the kernel: dmsc_l7_handoff,
 *   keyed by the 4-tuple this accept() sees (shared.h explains why that is
 *   exact). No record: the connection is closed, never guessed.
 * - A connection that opens with the HTTP/2 preface is handed to l7_h2.c
 *   (nghttp2; streams routed one by one to h2c backends).
 * - HTTP/1.1 parsing: Node's http_parser 2.9 (Debian's libhttp-parser),
 *   paused after each request head (to route it) and after each message
 *   (so pipelined requests wait their turn: responses leave in order).
 * - Requests are rebuilt, not copied: the head from the parsed method,
 *   target and headers (hop-by-hop headers dropped), the body re-framed
 *   from the parser's on_body (chunked stays chunked, trailers dropped).
 *   What reaches a backend is what the parser understood, which closes the
 *   door on request smuggling. Hop-by-hop fields (and those Connection
 *   names) stay behind; X-Forwarded-For / Forwarded are appended
 *   (--forwarded); a 1.0 request without Host gets the VIP. Responses are
 *   forwarded byte for byte to HTTP/1.1 clients (the parser only finds
 *   where each ends); an HTTP/1.0 client gets its head rewritten and a
 *   chunked body de-chunked and close-delimited.
 * - Bodies stream both ways with bounded buffers (back-pressure: a side
 *   is not read while the other side's buffer is full).
 * - Timers: each worker sweeps its connections every SWEEP_MS; per
 *   connection there are two deadlines (client side, backend side). A sweep
 *   is O(connections) every 100 ms, cheaper than a timer per connection at
 *   the sizes one host sees, and it cannot leak timers.
 * - Its own sockets to backends carry an entry in the pinned map
 *   dmsc_l7_own (written before connect()), so connect4 never hands its
 *   connections back to it; a workload cannot write that map (shared.h).
 * - Idle keep-alive backend connections stay in epoll: one the backend
 *   writes to or closes while idle is closed at once, and one is checked
 *   again (MSG_PEEK) before it carries a request; they expire after
 *   --pool-idle-ms. A connection whose response framing was not consumed
 *   exactly is never pooled, so no client can read another's answer.
 * - Connections per client address are bounded (--max-conns-per-client):
 *   past the bound a client gets an immediate 503 and a close.
 *
 * Exit codes, for the supervisor (user/dmscd/l7_supervisor.c): 0 drained after
 * SIGTERM/SIGINT; 1 could not start (bind, maps, policy) or died; 2 usage.
 */
#define _GNU_SOURCE
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

#include "datapath.h"
#include "dmsc/shared.h"
#include "l7_bucket.h"
#include "l7_ep.h"
#include "l7_h2.h"
#include "l7_http.h"
#include "l7_netns.h"
#include "l7_route.h"
#include "log.h"
#include "policy.h"

/* ---- limits (documented in docs/l7.md) --------------------------- */
#define CIN_SIZE (16 * 1024)   /* client input buffer */
#define UIN_SIZE (16 * 1024)   /* backend input buffer; a response head must fit */
#define OUT_HIGH (64 * 1024)   /* stop reading the other side past this */
#define RETAIN_MAX (64 * 1024) /* a request larger than this is not retried on 502/503 */
#define MAX_EVENTS 256
#define SWEEP_MS 100
#define POOL_MAX 256 /* idle keep-alive backend connections per worker */
#define CLIENT_BUCKETS 4096 /* hash buckets of the per-client connection counts */
#define LISTEN_BACKLOG 4096
/* After an answer that closes the connection, its input is read and
 * dropped this long (after shutdown(SHUT_WR)) so that unread request bytes
 * do not turn our close into a reset that destroys the answer. */
#define LINGER_MS 2000

static struct {
	struct sockaddr_in listen;
	const char *policy_file;
	const char *pin_dir;
	const char *access_log;
	const char *metrics_file;
	int workers;
	int ready_fd;
	bool no_register;
	bool no_netns; /* --no-netns: no listeners in other namespaces */
	uint32_t max_header_bytes; /* request line + headers: past it 431 */
	uint32_t max_headers;	   /* header fields: past it 431 */
	uint32_t max_target;	   /* request target: past it 414 */
	uint32_t idle_ms;	   /* keep-alive idle, between requests */
	uint32_t head_ms;	   /* a whole request head (slowloris): 408 */
	uint32_t io_ms;		   /* no progress on a body or a write */
	uint32_t default_timeout_ms;
	uint32_t default_retries;
	uint32_t drain_ms;
	uint32_t max_conns; /* per worker */
	uint32_t pool_idle_ms;	       /* an idle pooled backend connection lives this long */
	uint32_t max_conns_per_client; /* per client address, all workers together */
	unsigned int forwarded;	       /* FWD_* */
} opt = {
    .ready_fd = -1,
    .max_header_bytes = 8192,
    .max_headers = 64,
    .max_target = 4096,
    .idle_ms = 60000,
    .head_ms = 10000,
    .io_ms = 30000,
    .default_timeout_ms = 15000,
    .default_retries = 1,
    .drain_ms = 10000,
    .max_conns = 16384,
    .pool_idle_ms = 4000,
    .max_conns_per_client = 512,
    .forwarded = 1, /* FWD_XFF */
};

/* --forwarded: what the helper tells a backend about the client */
#define FWD_XFF 1u	 /* X-Forwarded-For: the client's address appended */
#define FWD_FORWARDED 2u /* Forwarded: for=...;proto=http appended (RFC 7239) */

/* ---- metrics ----------------------------------------------------------- */
static const int status_codes[] = {100, 200, 201, 202, 204, 206, 301, 302, 304,
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
};

static void ctr_add(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* ---- state ------------------------------------------------------------- */
static struct dmsc_l7_config cfg;
struct svc_rt {
	pthread_mutex_t lock;
	struct dmsc_l7_bucket bucket;
};
static struct svc_rt *svc_rt; /* parallel to cfg.svcs */
static int handoff_fd = -1;
static int own_fd = -1; /* dmsc_l7_own */
static int access_fd = -1;
static volatile int draining;
static size_t n_route_slots;

enum cstate {
	S_IDLE,	    /* between requests */
	S_HEAD,	    /* a request head is arriving */
	S_LOCAL,    /* answering it ourselves; its body is read and dropped */
	S_UPSTREAM, /* forwarding it */
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
	struct sockaddr_in peer;
	uint32_t client_id; /* what --max-conns-per-client counts it as */

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
	bool retain;	 /* uout still holds the whole request from offset 0 */
	bool connecting; /* ufd: connect() in progress */
	bool up_reused;	 /* ufd came from the idle pool */
	bool resp_head, resp_done, resp_started, resp_interim;
	bool up_reusable;
	bool u_reg; /* ufd is in epoll (added lazily, after a first write) */
	bool counted;  /* holds one of its client address's connections */
	bool h1;       /* its first bytes were not the HTTP/2 preface */
	bool client10; /* the request is HTTP/1.0: answered in 1.0 framing */
	bool dechunk;  /* the response body is de-chunked for a 1.0 client */
	int status;
	uint64_t t_req;	      /* head parsed, ns */
	uint64_t deadline;    /* client side, ns; 0: none */
	uint64_t up_deadline; /* backend side, ns; 0: none */
	uint32_t timeout_ms;
	uint32_t cev, uev; /* what epoll watches */
	bool lingering;	   /* answered and shut down; dropping input until EOF */
	bool dead;	   /* freed after the current batch of events */
	struct conn *dead_next;
};

/* An idle keep-alive backend connection. It stays in epoll (EPOLLIN |
 * EPOLLRDHUP, as EP_POOL): anything the backend sends or a close while it is
 * idle means it cannot carry a request any more. Slots do not move (epoll
 * points at them); fd -1 is a free slot. */
struct pooled {
	struct ep ep;
	int fd;
	uint32_t addr;
	uint16_t port;
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
	struct pooled pool[POOL_MAX];
	int n_pool; /* slots in use */
	struct metrics m;
	bool listening;
	bool accept_paused; /* out of fds: listener out of epoll until the next sweep */
	struct dmsc_l7_h2_env h2; /* its HTTP/2 connections (l7_h2.h) */
};

static struct worker *workers;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t rnd(struct worker *w)
{
	/* xorshift64*: per worker, no locks */
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return (uint32_t)((w->rng * 2685821657736338717ull) >> 32);
}

#define CONTAINER(ptr, field) ((struct conn *)((char *)(ptr)-offsetof(struct conn, field)))

/* ---- connections per client address ------------------------------------ */
/* The identity is the client's IPv4 address as the accepted 4-tuple shows
 * it (the handoff record is keyed by that tuple; no NAT sits between a
 * client and the helper). Workloads that share an address share the bound. */
struct client_count {
	struct client_count *next;
	uint32_t addr;
	uint32_t n;
};

static struct {
	pthread_mutex_t lock;
	struct client_count *bucket[CLIENT_BUCKETS];
} clients = {.lock = PTHREAD_MUTEX_INITIALIZER};

static size_t client_hash(uint32_t addr)
{
	return (size_t)((addr * 2654435761u) >> 20) % CLIENT_BUCKETS;
}

/* Takes one of addr's connections; false past --max-conns-per-client (or
 * out of memory). */
static bool client_take(uint32_t addr)
{
	struct client_count **pp, *cc;
	bool ok = false;

	pthread_mutex_lock(&clients.lock);
	pp = &clients.bucket[client_hash(addr)];
	for (cc = *pp; cc && cc->addr != addr; cc = cc->next)
		;
	if (!cc) {
		cc = calloc(1, sizeof(*cc));
		if (cc) {
			cc->addr = addr;
			cc->next = *pp;
			*pp = cc;
		}
	}
	if (cc && cc->n < opt.max_conns_per_client) {
		cc->n++;
		ok = true;
	}
	pthread_mutex_unlock(&clients.lock);
	return ok;
}

static void client_release(uint32_t addr)
{
	struct client_count **pp, *cc;

	pthread_mutex_lock(&clients.lock);
	for (pp = &clients.bucket[client_hash(addr)]; (cc = *pp); pp = &cc->next) {
		if (cc->addr != addr)
			continue;
		if (cc->n > 0)
			cc->n--;
		if (!cc->n) {
			*pp = cc->next;
			free(cc);
		}
		break;
	}
	pthread_mutex_unlock(&clients.lock);
}

/* ---- buffers ----------------------------------------------------------- */
static int buf_reserve(struct buf *b, size_t more)
{
	size_t need = b->len + more, cap;
	char *p;

	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 4096;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

static int buf_add(struct buf *b, const void *data, size_t len)
{
	if (buf_reserve(b, len))
		return -ENOMEM;
	memcpy(b->p + b->len, data, len);
	b->len += len;
	return 0;
}

static int __attribute__((format(printf, 2, 3))) buf_fmt(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (buf_reserve(b, 256))
		return -ENOMEM;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= b->cap - b->len) {
		if (buf_reserve(b, (size_t)n + 1))
			return -ENOMEM;
		va_start(ap, fmt);
		vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
	return 0;
}

static size_t buf_pending(const struct buf *b)
{
	return b->len - b->off;
}

static void buf_reset(struct buf *b)
{
	b->off = b->len = 0;
	/* a connection that once moved a large body gives the memory back */
	if (b->cap > OUT_HIGH * 2) {
		free(b->p);
		b->p = NULL;
		b->cap = 0;
	}
}

static void conn_close_client(struct conn *c);

/* ---- epoll ------------------------------------------------------------- */
static void ep_set(struct worker *w, int fd, struct ep *e, uint32_t *cur, uint32_t want)
{
	struct epoll_event ev = {.events = want, .data.ptr = e};

	if (fd < 0 || *cur == want)
		return;
	if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
		*cur = want;
}

static void conn_update(struct conn *c)
{
	uint32_t cw = 0, uw = 0;

	if (c->cfd >= 0) {
		/* Input is watched while there is room for it. A full buffer
		 * stops both: the end of input (EPOLLRDHUP) is only the end
		 * once every byte before it was read, when recv returns 0. */
		if ((c->cin_len < CIN_SIZE || c->lingering) && !c->cin_eof)
			cw |= EPOLLIN | EPOLLRDHUP;
		if (buf_pending(&c->cout))
			cw |= EPOLLOUT;
		ep_set(c->w, c->cfd, &c->cep, &c->cev, cw);
	}
	if (c->ufd >= 0) {
		if (c->connecting || buf_pending(&c->uout))
			uw |= EPOLLOUT;
		if (!c->connecting && buf_pending(&c->cout) < OUT_HIGH && c->uin_len < UIN_SIZE)
			uw |= EPOLLIN;
		if (!c->u_reg) {
			struct epoll_event ev = {.events = uw, .data.ptr = &c->uep};

			if (epoll_ctl(c->w->epfd, EPOLL_CTL_ADD, c->ufd, &ev) < 0) {
				/* out of kernel memory: give up on this client */
				conn_close_client(c);
				return;
			}
			c->u_reg = true;
			c->uev = uw;
		}
		ep_set(c->w, c->ufd, &c->uep, &c->uev, uw);
	}
}

/* ---- metrics and the access log --------------------------------------- */
static size_t code_index(int status)
{
	size_t i;

	for (i = 0; i < N_CODES; i++)
		if (status_codes[i] == status)
			return i;
	return CODE_OTHER;
}

static void fmt_addr(uint32_t addr, uint16_t port_be, char *buf, size_t len)
{
	char a[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &addr, a, sizeof(a));
	snprintf(buf, len, "%s:%u", a, ntohs(port_be));
}

static void access_log_line(const struct conn *c, uint64_t dur_ns)
{
	char line[1024], client[32], be[32] = "-", ts[40], path[257];
	const struct dmsc_policy_backend *b = NULL;
	struct timespec rt;
	struct tm tm;
	size_t i, n;
	int len;

	clock_gettime(CLOCK_REALTIME, &rt);
	gmtime_r(&rt.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fmt_addr(c->peer.sin_addr.s_addr, c->peer.sin_port, client, sizeof(client));
	if (c->backend >= 0) {
		b = &c->svc->src->backends[c->backend];
		fmt_addr(b->addr, htons(b->port), be, sizeof(be));
	}
	/* the target as sent, printable ASCII only, at most 256 bytes */
	n = c->rq.url_len < 256 ? c->rq.url_len : 256;
	for (i = 0; i < n; i++) {
		char ch = c->rq.head[c->rq.url_off + i];

		path[i] = (ch > 0x20 && ch < 0x7f && ch != '"') ? ch : '?';
	}
	path[n] = '\0';
	len = snprintf(line, sizeof(line),
		       "%s.%03ldZ client=%s service=%s route=%d \"%s %s\" status=%d backend=%s "
		       "attempts=%u ms=%.3f\n",
		       ts, rt.tv_nsec / 1000000, client, c->svc->src->name, c->route,
		       http_method_str((enum http_method)c->rq.hp.method), path, c->status, be,
		       c->attempts, (double)dur_ns / 1e6);
	if (len > 0 && write(access_fd, line, (size_t)len) < 0) {
		/* a full disk must not stop the traffic */
	}
}

static void request_finished(struct conn *c)
{
	struct route_metrics *rm;
	uint64_t dur = now_ns() - c->t_req;
	double secs = (double)dur / 1e9;
	size_t h;

	if (!c->svc || !c->t_req)
		return;
	rm = &c->w->m.rm[c->w->m.rm_base[c->svc_idx] + (size_t)(c->route + 1)];
	ctr_add(&rm->code[code_index(c->status)], 1);
	for (h = 0; h < N_HIST && secs > hist_le[h]; h++)
		;
	ctr_add(&rm->hist[h], 1);
	ctr_add(&rm->sum_ns, dur);
	if (c->attempts > 1)
		ctr_add(&rm->retries, c->attempts - 1);
	if (access_fd >= 0)
		access_log_line(c, dur);
	c->t_req = 0;
}

/* ---- the idle backend connections -------------------------------------- */
static void pool_drop(struct worker *w, struct pooled *p)
{
	close(p->fd); /* leaves epoll with it */
	p->fd = -1;
	w->n_pool--;
}

/* Idle and quiet: nothing to read and not closed by the backend. */
static bool pool_quiet(int fd)
{
	char ch;
	ssize_t n = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);

	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Keeps fd for the next request to addr:port (network order); closes it
 * when the pool is full. registered: fd is in epoll already. */
static void pool_put(struct worker *w, int fd, bool registered, uint32_t addr, uint16_t port)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP};
	struct pooled *p = NULL;
	int i;

	for (i = 0; i < POOL_MAX && w->n_pool < POOL_MAX; i++)
		if (w->pool[i].fd < 0) {
			p = &w->pool[i];
			break;
		}
	ev.data.ptr = p ? &p->ep : NULL;
	if (!p || epoll_ctl(w->epfd, registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		return;
	}
	p->ep.kind = EP_POOL;
	p->fd = fd;
	p->addr = addr;
	p->port = port;
	p->since = now_ns();
	w->n_pool++;
}

/* An idle connection to addr:port that can carry a request, or -1. Those
 * that cannot (the backend wrote, closed, or they are too old) are
 * closed on the way. */
static int pool_take(struct worker *w, uint32_t addr, uint16_t port)
{
	uint64_t oldest = now_ns() - (uint64_t)opt.pool_idle_ms * 1000000;
	int i, fd;

	for (i = 0; i < POOL_MAX && w->n_pool > 0; i++) {
		struct pooled *p = &w->pool[i];

		if (p->fd < 0 || p->addr != addr || p->port != port)
			continue;
		if (p->since < oldest || !pool_quiet(p->fd)) {
			pool_drop(w, p);
			continue;
		}
		fd = p->fd;
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, fd, NULL);
		p->fd = -1;
		w->n_pool--;
		return fd;
	}
	return -1;
}

/* The sweep: idle connections past --pool-idle-ms go (all of them when
 * draining). */
static void pool_expire(struct worker *w, uint64_t now)
{
	uint64_t oldest = now - (uint64_t)opt.pool_idle_ms * 1000000;
	int i;

	for (i = 0; i < POOL_MAX && w->n_pool > 0; i++)
		if (w->pool[i].fd >= 0 && (draining || w->pool[i].since < oldest))
			pool_drop(w, &w->pool[i]);
}

/* ---- connections -------------------------------------------------------- */
static void upstream_close(struct conn *c, bool reuse)
{
	struct worker *w = c->w;

	if (c->ufd < 0)
		return;
	if (reuse && !draining && c->backend >= 0) {
		const struct dmsc_policy_backend *b = &c->svc->src->backends[c->backend];

		pool_put(w, c->ufd, c->u_reg, b->addr, htons(b->port));
	} else {
		close(c->ufd);
	}
	c->ufd = -1;
	c->uev = 0;
	c->u_reg = false;
	c->connecting = false;
	c->up_deadline = 0;
}

/* Closes a connection; its memory goes after the current batch of epoll
 * events, which may still point at it. */
static void conn_free(struct conn *c)
{
	struct worker *w = c->w;

	if (c->dead)
		return;
	if (c->t_req && c->status)
		request_finished(c);
	upstream_close(c, false);
	if (c->counted)
		client_release(c->client_id);
	c->counted = false;
	if (c->cfd >= 0)
		close(c->cfd);
	c->cfd = -1;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->n_conns--;
	c->dead = true;
	c->dead_next = w->dead;
	w->dead = c;
}

static void conn_reap(struct worker *w)
{
	struct conn *c;

	while ((c = w->dead)) {
		w->dead = c->dead_next;
		free(c->cout.p);
		free(c->uout.p);
		dmsc_l7_http_free(&c->rq);
		free(c);
	}
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 400:
		return "Bad Request";
	case 408:
		return "Request Timeout";
	case 414:
		return "URI Too Long";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Error";
	}
}

/* Answering before the request's body is in: the rest is read and dropped
 * to keep the connection, unless it is large or of unknown length. */
static bool body_left_large(const struct conn *c)
{
	/* content_length is ULLONG_MAX when the request has none */
	return !c->rq.req_done && (c->rq.req_chunked || ((c->rq.hp.flags & F_CONTENTLENGTH) &&
							 c->rq.hp.content_length > RETAIN_MAX));
}

/* Queues a response of our own; close: "Connection: close" and close after. */
static void respond_local(struct conn *c, int status, bool close, uint64_t retry_after_s)
{
	const char *reason = reason_phrase(status);
	char extra[64] = "";

	if (retry_after_s)
		snprintf(extra, sizeof(extra), "Retry-After: %llu\r\n",
			 (unsigned long long)retry_after_s);
	if (close || draining)
		c->close_after = true;
	c->status = status;
	buf_fmt(&c->cout,
		"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s"
		"Connection: %s\r\n\r\n%s\n",
		status, reason, strlen(reason) + 1, extra, c->close_after ? "close" : "keep-alive",
		reason);
	c->resp_started = true;
	c->resp_done = true;
	c->state = S_LOCAL;
}

/* ---- the request parser's callbacks ------------------------------------ */
/* The request parser is user/l7/l7_http.c (the fuzzer runs it too); these
 * hooks tie it to the connection. */
static int on_req_begin(struct dmsc_l7_req_parser *p)
{
	struct conn *c = p->owner;

	c->state = S_HEAD;
	c->resp_started = c->resp_done = false;
	c->status = 0;
	c->deadline = now_ns() + (uint64_t)opt.head_ms * 1000000;
	return 0;
}

static int on_req_body(struct dmsc_l7_req_parser *p, const char *at, size_t len)
{
	struct conn *c = p->owner;

	c->deadline = now_ns() + (uint64_t)opt.io_ms * 1000000;
	if (c->state != S_UPSTREAM)
		return 0; /* answered locally: dropped */
	if (c->rq.req_chunked && buf_fmt(&c->uout, "%zx\r\n", len))
		return -1;
	if (buf_add(&c->uout, at, len))
		return -1;
	if (c->rq.req_chunked && buf_add(&c->uout, "\r\n", 2))
		return -1;
	return 0;
}

static int on_req_done(struct dmsc_l7_req_parser *p)
{
	struct conn *c = p->owner;

	if (c->state == S_UPSTREAM && c->rq.req_chunked && buf_add(&c->uout, "0\r\n\r\n", 5))
		return -1;
	return 0;
}

static const struct dmsc_l7_http_hooks req_hooks = {
    .begin = on_req_begin,
    .body = on_req_body,
    .done = on_req_done,
};

/* ---- the response parser's callbacks ----------------------------------- */
static int on_resp_begin(http_parser *p)
{
	struct conn *c = p->data;

	c->resp_interim = false;
	return 0;
}

static int on_resp_headers(http_parser *p)
{
	struct conn *c = p->data;

	/* 1xx (but 101) is interim: the final response follows */
	c->resp_interim = p->status_code >= 100 && p->status_code < 200 && p->status_code != 101;
	if (!c->resp_interim) {
		c->resp_head = true;
		c->status = p->status_code;
		c->paused_head = true;
		http_parser_pause(p, 1);
	}
	/* a response to HEAD has no body, whatever its headers say */
	return c->is_head ? 1 : 0;
}

/* A 1.0 client's de-chunked body (dechunk): the parser's decoded bytes. */
static int on_resp_body(http_parser *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	if (c->dechunk && buf_add(&c->cout, at, len))
		return -1;
	return 0;
}

static int on_resp_done(http_parser *p)
{
	struct conn *c = p->data;

	if (c->resp_interim)
		return 0;
	c->resp_done = true;
	c->paused_done = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings resp_settings = {
    .on_message_begin = on_resp_begin,
    .on_headers_complete = on_resp_headers,
    .on_body = on_resp_body,
    .on_message_complete = on_resp_done,
};

/* ---- the backend side --------------------------------------------------- */
static void conn_close_client(struct conn *c);
static void upstream_start(struct conn *c);
static void client_parse(struct conn *c);

static bool hop_by_hop(const struct conn *c, const struct dmsc_l7_http_hdr *h)
{
	/* "expect": the helper answers 100-continue itself (dispatch);
	 * forwarding headers are written again below (--forwarded) */
	static const char *const names[] = {
	    "connection",     "keep-alive", "proxy-connection", "te",	  "transfer-encoding",
	    "content-length", "upgrade",    "trailer",		"expect", NULL};
	size_t i;

	for (i = 0; names[i]; i++)
		if (dmsc_l7_http_hdr_is(&c->rq, h, names[i]))
			return true;
	if (((opt.forwarded & FWD_XFF) && dmsc_l7_http_hdr_is(&c->rq, h, "x-forwarded-for")) ||
	    ((opt.forwarded & FWD_FORWARDED) && dmsc_l7_http_hdr_is(&c->rq, h, "forwarded")))
		return true;
	/* RFC 9110 7.6.1: the fields the client's Connection names are
	 * for this hop only (but Host, which says where the request goes) */
	return !dmsc_l7_http_hdr_is(&c->rq, h, "host") && dmsc_l7_http_conn_lists(&c->rq, h);
}

/* "name: v1, v2, client\r\n": the values of the request's fields called
 * name, then this hop's. */
static int add_forwarding(struct conn *c, const char *name, const char *hop)
{
	struct buf *b = &c->uout;
	const char *sep = "";
	uint32_t i;
	int err;

	err = buf_fmt(b, "%s: ", name);
	for (i = 0; !err && i < c->rq.n_hdrs; i++) {
		const struct dmsc_l7_http_hdr *h = &c->rq.hdrs[i];

		if (!dmsc_l7_http_hdr_is(&c->rq, h, name) || !h->val_len)
			continue;
		err = buf_fmt(b, "%s%.*s", sep, (int)h->val_len, c->rq.head + h->val_off);
		sep = ", ";
	}
	return err ?: buf_fmt(b, "%s%s\r\n", sep, hop);
}

/* The request head as the backend gets it: parsed fields, re-serialised. */
static int build_upstream_head(struct conn *c)
{
	char addr[32], client[INET_ADDRSTRLEN];
	struct buf *b = &c->uout;
	bool host = false;
	uint32_t i;
	int err;

	err = buf_fmt(b, "%s ", http_method_str((enum http_method)c->rq.hp.method));
	err = err ?: buf_add(b, c->rq.head + c->rq.url_off, c->rq.url_len);
	err = err ?: buf_add(b, " HTTP/1.1\r\n", 11);
	for (i = 0; !err && i < c->rq.n_hdrs; i++) {
		const struct dmsc_l7_http_hdr *h = &c->rq.hdrs[i];

		if (dmsc_l7_http_hdr_is(&c->rq, h, "host"))
			host = true;
		if (hop_by_hop(c, h))
			continue;
		err = buf_add(b, c->rq.head + h->name_off, h->name_len);
		err = err ?: buf_add(b, ": ", 2);
		err = err ?: buf_add(b, c->rq.head + h->val_off, h->val_len);
		err = err ?: buf_add(b, "\r\n", 2);
	}
	/* HTTP/1.0 may leave Host out; 1.1, as forwarded, must carry it
	 * (RFC 9112 3.2): the address the client asked for, the VIP */
	if (!err && !host) {
		fmt_addr(c->svc->vip, c->svc->vport, addr, sizeof(addr));
		err = buf_fmt(b, "Host: %s\r\n", addr);
	}
	inet_ntop(AF_INET, &c->peer.sin_addr, client, sizeof(client));
	if (!err && (opt.forwarded & FWD_XFF))
		err = add_forwarding(c, "X-Forwarded-For", client);
	if (!err && (opt.forwarded & FWD_FORWARDED)) {
		char hop[64];

		snprintf(hop, sizeof(hop), "for=%s;proto=http", client);
		err = add_forwarding(c, "Forwarded", hop);
	}
	if (!err && c->rq.req_chunked)
		err = buf_add(b, "Transfer-Encoding: chunked\r\n", 28);
	else if (!err && (c->rq.hp.flags & F_CONTENTLENGTH))
		err = buf_fmt(b, "Content-Length: %llu\r\n",
			      (unsigned long long)c->rq.hp.content_length);
	err = err ?: buf_add(b, "Connection: keep-alive\r\n\r\n", 26);
	return err;
}

static bool method_idempotent(unsigned int m)
{
	/* RFC 9110, 9.2.2 */
	return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_PUT || m == HTTP_DELETE ||
	       m == HTTP_OPTIONS || m == HTTP_TRACE;
}

/* Routes the request whose head was just parsed. */
static void dispatch(struct conn *c)
{
	struct dmsc_l7_header hv[256];
	struct dmsc_l7_request req = {0};
	const struct dmsc_l7_route *route = NULL;
	const char *method = http_method_str((enum http_method)c->rq.hp.method);
	uint64_t now = now_ns(), wait;
	uint32_t i, n = c->rq.n_hdrs < 256 ? c->rq.n_hdrs : 256;

	c->t_req = now;
	c->status = 0;
	c->attempts = 0;
	c->tried = 0;
	c->backend = -1;
	c->resp_head = c->resp_done = c->resp_started = false;
	c->client_keepalive = http_should_keep_alive(&c->rq.hp) != 0;
	c->idempotent = method_idempotent(c->rq.hp.method);
	c->is_head = c->rq.hp.method == HTTP_HEAD;
	c->client10 = c->rq.hp.http_major == 1 && c->rq.hp.http_minor == 0;
	c->deadline = now + (uint64_t)opt.io_ms * 1000000;

	req.method = method;
	req.method_len = strlen(method);
	dmsc_l7_target_path(c->rq.head + c->rq.url_off, c->rq.url_len, &req.path, &req.path_len);
	for (i = 0; i < n; i++) {
		hv[i].name = c->rq.head + c->rq.hdrs[i].name_off;
		hv[i].name_len = c->rq.hdrs[i].name_len;
		hv[i].value = c->rq.head + c->rq.hdrs[i].val_off;
		hv[i].value_len = c->rq.hdrs[i].val_len;
	}
	req.headers = hv;
	req.n_headers = n;
	c->route = dmsc_l7_route_match(c->svc, &req);
	if (c->route >= 0)
		route = &c->svc->routes[c->route];

	if (c->svc->has_request_limit) {
		struct svc_rt *rt = &svc_rt[c->svc_idx];

		pthread_mutex_lock(&rt->lock);
		wait = dmsc_l7_bucket_take(&rt->bucket, now);
		pthread_mutex_unlock(&rt->lock);
		if (wait) {
			c->state = S_LOCAL;
			respond_local(c, 429, false, dmsc_l7_retry_after_s(wait));
			return;
		}
	}
	if ((route ? &route->pick : &c->svc->pick)->empty) {
		c->state = S_LOCAL;
		respond_local(c, 503, false, 0);
		return;
	}
	c->retries_left = route && route->has_retries ? route->retries : opt.default_retries;
	c->timeout_ms = route && route->has_timeout_ms ? route->timeout_ms : opt.default_timeout_ms;
	c->up_deadline = now + (uint64_t)c->timeout_ms * 1000000;
	buf_reset(&c->uout);
	c->retain = true;
	if (build_upstream_head(c)) {
		c->state = S_LOCAL;
		respond_local(c, 502, true, 0);
		return;
	}
	c->state = S_UPSTREAM;
	/* Expect: 100-continue (RFC 9110 10.1.1): the helper streams the body
	 * as it comes, so it says "continue" at once rather than making the
	 * client wait for the backend's (or for its own timer). */
	if (!c->rq.req_done &&
	    (c->rq.req_chunked ||
	     ((c->rq.hp.flags & F_CONTENTLENGTH) && c->rq.hp.content_length > 0)) &&
	    c->rq.hp.http_minor >= 1) {
		for (i = 0; i < c->rq.n_hdrs; i++)
			if (dmsc_l7_http_hdr_is(&c->rq, &c->rq.hdrs[i], "expect") &&
			    dmsc_l7_http_val_is(&c->rq, &c->rq.hdrs[i], "100-continue")) {
				buf_add(&c->cout, "HTTP/1.1 100 Continue\r\n\r\n", 25);
				break;
			}
	}
	upstream_start(c);
}

/* After a failed attempt: retry, or answer status (if nothing was sent). */
static void upstream_failed(struct conn *c, bool may_retry, int status)
{
	upstream_close(c, false);
	if (may_retry && c->retries_left > 0 && c->retain) {
		c->retries_left--;
		c->uout.off = 0;
		upstream_start(c);
		return;
	}
	if (c->resp_started) {
		/* part of a response went out: only closing tells the client */
		conn_close_client(c);
		return;
	}
	respond_local(c, status, body_left_large(c), 0);
}

static void upstream_start(struct conn *c)
{
	const struct dmsc_l7_route *route = c->route >= 0 ? &c->svc->routes[c->route] : NULL;
	const struct dmsc_policy_backend *b;
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct dmsc_l7_own own = {.magic = DMSC_L7_OWN_MAGIC};
	int idx, fd, one = 1;

	idx = dmsc_l7_pick_backend(route ? &route->pick : &c->svc->pick, rnd(c->w), c->tried);
	if (idx < 0) {
		upstream_failed(c, false, 503);
		return;
	}
	c->backend = idx;
	if (idx < 64)
		c->tried |= 1ull << idx;
	c->attempts++;
	/* every attempt has the route's whole timeout: a retry after a 503
	 * must not wait for ever on a backend that then says nothing */
	c->up_deadline = now_ns() + (uint64_t)c->timeout_ms * 1000000;
	b = &c->svc->src->backends[idx];
	sa.sin_addr.s_addr = b->addr;
	sa.sin_port = htons(b->port);
	http_parser_init(&c->sp, HTTP_RESPONSE);
	c->sp.data = c;
	c->uin_len = 0;
	c->resp_head = c->resp_done = false;
	c->up_reusable = false;
	c->dechunk = false;

	/* A pooled connection may have been closed by the backend a moment
	 * ago; only requests that are safe to send twice use one. */
	fd = c->idempotent ? pool_take(c->w, sa.sin_addr.s_addr, sa.sin_port) : -1;
	c->up_reused = fd >= 0;
	c->connecting = false;
	if (fd < 0) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			upstream_failed(c, false, 502);
			return;
		}
		/* ours: connect4 must not hand it back to us (shared.h,
		 * dmsc_l7_own); without the entry it could loop */
		if (bpf_map_update_elem(own_fd, &fd, &own, BPF_ANY)) {
			pr_warn("cannot mark a backend socket in %s: %s\n", DMSC_MAP_L7_OWN,
				strerror(errno));
			close(fd);
			upstream_failed(c, false, 502);
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			if (errno != EINPROGRESS) {
				close(fd);
				/* refused at once: nothing reached a backend */
				upstream_failed(c, true, 502);
				return;
			}
			c->connecting = true;
		}
	}
	/* Not in epoll yet: conn_step writes the request first and
	 * conn_update adds the fd with what is left to wait for, which saves
	 * an epoll_ctl per request on a pooled connection. */
	c->ufd = fd;
	c->uev = 0;
	c->u_reg = false;
}

static void upstream_write(struct conn *c)
{
	struct buf *b = &c->uout;

	while (buf_pending(b)) {
		ssize_t n = send(c->ufd, b->p + b->off, buf_pending(b), MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			/* A pooled connection the backend closed meanwhile (the
			 * keep-alive race): only idempotent requests use those,
			 * and such a retry does not spend the route's retries.
			 * A fresh connection that fails here: 502. */
			if (c->idempotent && c->up_reused)
				c->retries_left++;
			upstream_failed(c, c->idempotent && c->up_reused, 502);
			return;
		}
		b->off += (size_t)n;
	}
	/* Written bytes are kept (retain) so that a retry can send the request
	 * again, up to RETAIN_MAX; past it they go, and so does the retry. */
	if (!buf_pending(b) && (!c->retain || b->len > RETAIN_MAX)) {
		c->retain = false;
		buf_reset(b);
	}
}

static void upstream_on_connected(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		/* refused or unreachable: nothing reached a backend */
		upstream_failed(c, true, 502);
		return;
	}
	c->connecting = false;
}

/* The response (or its end) is complete: next request, or close. */
static void response_complete(struct conn *c)
{
	/* reused only when both framings ended exactly: the response parsed
	 * to its last byte (up_reusable) and the whole request sent */
	upstream_close(c, c->up_reusable && c->rq.req_done && !buf_pending(&c->uout) &&
			      !c->close_after);
	request_finished(c);
	c->state = S_IDLE;
	if (!c->client_keepalive || !c->rq.req_done || draining)
		c->close_after = true;
	c->deadline = now_ns() + (uint64_t)opt.idle_ms * 1000000;
}

static void client_write(struct conn *c);

/*
 * The response head for an HTTP/1.0 client, queued to it: uin[0, end) holds
 * the final head, after any 1xx heads (a 1.0 client gets none: RFC 9110
 * 15.2). A chunked body is de-chunked and the connection closed after it
 * (1.0 has no chunked coding); a body with a Content-Length keeps the
 * connection if the client asked for keep-alive; hop-by-hop fields go.
 */
static int response_head_10(struct conn *c, size_t end)
{
	bool body = !c->is_head && c->status != 204 && c->status != 304;
	char out[UIN_SIZE + 64];
	unsigned int flags = 0;
	size_t start = 0, i;
	bool keep;
	int n;

	for (i = 0; i + 2 < end; i++) {
		size_t next = 0;

		if (c->uin[i] != '\n')
			continue;
		if (c->uin[i + 1] == '\n')
			next = i + 2;
		else if (c->uin[i + 1] == '\r' && c->uin[i + 2] == '\n')
			next = i + 3;
		if (next && next < end)
			start = next;
	}
	c->dechunk = body && (c->sp.flags & F_CHUNKED);
	keep = c->client_keepalive && !c->close_after && !draining && !c->dechunk &&
	       http_should_keep_alive(&c->sp) && (!body || (c->sp.flags & F_CONTENTLENGTH));
	if (!keep) {
		flags |= DMSC_L7_RESP_CLOSE;
		c->close_after = true;
	}
	if (c->dechunk)
		flags |= DMSC_L7_RESP_NO_LENGTH;
	n = dmsc_l7_resp_head_rewrite(c->uin + start, end - start, flags, out, sizeof(out));
	if (n < 0)
		return n;
	return buf_add(&c->cout, out, (size_t)n);
}

static void upstream_read(struct conn *c)
{
	for (;;) {
		size_t parsed, fwd, room;
		ssize_t n;
		enum http_errno e;

		if (c->uin_len == UIN_SIZE) {
			if (!c->resp_head) {
				upstream_failed(c, false, 502); /* head too large */
				return;
			}
			break;
		}
		room = UIN_SIZE - c->uin_len;
		n = recv(c->ufd, c->uin + c->uin_len, room, 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			/* reset: the response, if any, is cut */
			upstream_failed(c, false, 502);
			return;
		}
		if (n == 0) {
			/* end of the response stream */
			c->paused_done = false;
			http_parser_execute(&c->sp, &resp_settings, NULL, 0);
			if (c->resp_head && c->resp_done) {
				/* read-until-close body: the client must see the close */
				c->close_after = true;
				c->up_reusable = false;
				response_complete(c);
				return;
			}
			if (!c->resp_head && c->up_reused && c->idempotent && c->retain) {
				/* keep-alive race: the pooled connection was closing */
				c->retries_left++;
				upstream_failed(c, true, 502);
				return;
			}
			upstream_failed(c, false, 502);
			return;
		}
		c->up_deadline =
		    c->resp_head ? now_ns() + (uint64_t)opt.io_ms * 1000000 : c->up_deadline;
		/* parse the new bytes; forward everything parsed once the head
		 * has been judged */
		parsed = c->uin_len;
		c->uin_len += (size_t)n;
		fwd = c->resp_head ? parsed : 0;
		while (parsed < c->uin_len && !c->resp_done) {
			bool head_before = c->resp_head;

			c->paused_head = c->paused_done = false;
			parsed += http_parser_execute(&c->sp, &resp_settings, c->uin + parsed,
						      c->uin_len - parsed);
			e = HTTP_PARSER_ERRNO(&c->sp);
			if (e == HPE_PAUSED) {
				http_parser_pause(&c->sp, 0);
			} else if (e != HPE_OK) {
				upstream_failed(c, false, 502);
				return;
			}
			if (!head_before && c->resp_head) {
				if ((c->status == 502 || c->status == 503) && c->idempotent &&
				    c->retain && c->rq.req_done && c->retries_left > 0) {
					upstream_failed(c, true, c->status);
					return;
				}
				c->resp_started = true;
				c->up_deadline = now_ns() + (uint64_t)opt.io_ms * 1000000;
				if (c->client10) {
					if (response_head_10(c, parsed)) {
						conn_close_client(c);
						return;
					}
					fwd = parsed; /* the head went rewritten */
				}
			}
		}
		if (!c->resp_head)
			continue; /* keep the partial head */
		/* everything up to `parsed` goes to the client; bytes past the
		 * message end are garbage (or a pipelining backend): dropped,
		 * and the connection is not reused */
		if (!c->dechunk && buf_add(&c->cout, c->uin + fwd, parsed - fwd)) {
			conn_close_client(c);
			return;
		}
		if (c->resp_done) {
			c->up_reusable = parsed == c->uin_len && http_should_keep_alive(&c->sp);
			/* the client read the backend's "Connection: close" */
			if (!http_should_keep_alive(&c->sp))
				c->close_after = true;
			c->uin_len = 0;
			response_complete(c);
			return;
		}
		c->uin_len = 0;
		if (buf_pending(&c->cout) >= OUT_HIGH || (size_t)n < room)
			break; /* full, or drained most likely: epoll says if not */
	}
}

/* ---- the client side ---------------------------------------------------- */
static void conn_close_client(struct conn *c)
{
	if (c->cfd >= 0) {
		epoll_ctl(c->w->epfd, EPOLL_CTL_DEL, c->cfd, NULL);
		close(c->cfd);
		c->cfd = -1;
	}
}

static void client_write(struct conn *c)
{
	struct buf *b = &c->cout;

	while (buf_pending(b) && c->cfd >= 0) {
		ssize_t n = send(c->cfd, b->p + b->off, buf_pending(b), MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			conn_close_client(c);
			return;
		}
		b->off += (size_t)n;
		c->deadline = now_ns() + (uint64_t)opt.io_ms * 1000000;
	}
	if (!buf_pending(b)) {
		buf_reset(b);
		if (c->state == S_IDLE)
			c->deadline = now_ns() + (uint64_t)opt.idle_ms * 1000000;
	}
}

static void reject(struct conn *c, int status)
{
	upstream_close(c, false);
	c->state = S_LOCAL;
	if (!c->t_req) {
		c->t_req = now_ns();
		c->route = -1;
		c->backend = -1;
		c->attempts = 0;
	}
	if (!c->resp_started)
		respond_local(c, status, true, 0);
	c->close_after = true;
	c->resp_done = true;
	request_finished(c);
}

/* Feeds buffered client bytes to the parser while the state allows. */
/* The connection opened with the HTTP/2 preface: l7_h2.c takes it over,
 * with the bytes read so far and its place in the per-client count. */
static void h2_takeover(struct conn *c)
{
	int fd = c->cfd;

	epoll_ctl(c->w->epfd, EPOLL_CTL_DEL, fd, NULL);
	c->cfd = -1; /* conn_step frees the rest */
	c->counted = false;
	if (dmsc_l7_h2_start(&c->w->h2, fd, c->client_id, c->svc, c->svc_idx, c->cin,
			     c->cin_len)) {
		close(fd);
		client_release(c->client_id);
	}
	c->cin_len = c->cin_off = 0;
}

static void client_parse(struct conn *c)
{
	if (!c->h1 && c->cin_len > c->cin_off) {
		int h2 = dmsc_l7_h2_preface(c->cin + c->cin_off, c->cin_len - c->cin_off);

		if (h2 > 0) {
			h2_takeover(c);
			return;
		}
		if (h2 < 0 && !c->cin_eof)
			return; /* a prefix of the preface: more bytes decide */
		c->h1 = true;
	}
	while (c->cfd >= 0 && !c->close_after) {
		size_t n;
		int status;

		if (c->state == S_LOCAL && c->rq.req_done && c->resp_done) {
			/* a local answer and its request are both done */
			request_finished(c);
			c->state = S_IDLE;
			if (!c->client_keepalive)
				c->close_after = true;
			c->deadline = now_ns() + (uint64_t)opt.idle_ms * 1000000;
			continue;
		}
		if (c->state == S_IDLE && (buf_pending(&c->cout) >= OUT_HIGH || c->ufd >= 0))
			break; /* the previous response is still leaving */
		if (c->rq.req_done && c->state != S_IDLE)
			break; /* pipelined: wait for the response */
		if (c->state == S_UPSTREAM && buf_pending(&c->uout) >= OUT_HIGH)
			break; /* back-pressure from the backend */
		if (c->cin_off == c->cin_len)
			break;
		if (dmsc_l7_http_feed(&c->rq, c->cin + c->cin_off, c->cin_len - c->cin_off, &n,
				      &status)) {
			c->cin_off += n;
			if (c->state == S_UPSTREAM)
				upstream_close(c, false);
			reject(c, status);
			break;
		}
		c->cin_off += n;
		if (c->rq.paused_head && c->state == S_HEAD) {
			if (c->rq.status) {
				reject(c, c->rq.status);
				break;
			}
			dispatch(c);
		}
	}
	if (c->cin_off > 0) {
		memmove(c->cin, c->cin + c->cin_off, c->cin_len - c->cin_off);
		c->cin_len -= c->cin_off;
		c->cin_off = 0;
	}
}

static void client_read(struct conn *c)
{
	while (c->lingering && !c->cin_eof) {
		char sink[4096];
		ssize_t n = recv(c->cfd, sink, sizeof(sink), 0);

		if (n == 0)
			c->cin_eof = true;
		if (n <= 0)
			return;
	}
	while (c->cin_len < CIN_SIZE) {
		size_t room = CIN_SIZE - c->cin_len;
		ssize_t n = recv(c->cfd, c->cin + c->cin_len, room, 0);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			conn_close_client(c);
			return;
		}
		if (n == 0) {
			c->cin_eof = true;
			break;
		}
		c->cin_len += (size_t)n;
		if (c->state == S_IDLE)
			c->deadline = now_ns() + (uint64_t)opt.head_ms * 1000000;
		if ((size_t)n < room)
			break; /* drained, most likely: epoll says if not */
	}
}

/* One step after any event: parse, write, decide to close. */
static void conn_step(struct conn *c)
{
	if (c->cfd >= 0)
		client_parse(c);
	if (c->ufd >= 0 && !c->connecting && buf_pending(&c->uout)) {
		upstream_write(c);
		/* the backend took some: parse the body bytes waiting */
		if (c->cfd >= 0 && c->cin_len && c->state == S_UPSTREAM &&
		    buf_pending(&c->uout) < OUT_HIGH) {
			client_parse(c);
			if (c->ufd >= 0 && !c->connecting && buf_pending(&c->uout))
				upstream_write(c);
		}
	}
	if (c->cfd >= 0 && buf_pending(&c->cout))
		client_write(c);
	if (c->cfd >= 0 && c->cin_eof && c->state == S_IDLE && c->cin_len == 0 &&
	    !buf_pending(&c->cout))
		conn_close_client(c);
	if (c->cfd >= 0 && c->cin_eof && !c->rq.req_done && c->cin_len == 0 &&
	    (c->state == S_UPSTREAM || c->state == S_LOCAL) && !c->resp_started)
		conn_close_client(c); /* the body will never be complete */
	if (c->cfd >= 0 && c->cin_eof && c->state == S_HEAD) {
		/* ended mid-head: nothing to answer to */
		dmsc_l7_http_eof(&c->rq);
		conn_close_client(c);
	}
	if (c->cfd >= 0 && c->close_after && !buf_pending(&c->cout) &&
	    (c->state == S_IDLE || c->resp_done)) {
		if (c->cin_eof) {
			conn_close_client(c);
		} else if (!c->lingering) {
			upstream_close(c, false);
			shutdown(c->cfd, SHUT_WR);
			c->lingering = true;
			c->cin_len = c->cin_off = 0;
			c->deadline = now_ns() + LINGER_MS * 1000000ull;
		}
	}
	if (c->cfd < 0) {
		conn_free(c);
		return;
	}
	conn_update(c);
}

/* ---- accept --------------------------------------------------------------- */
/* A client past --max-conns-per-client: a 503 at once, then the close. What
 * it sent already is read first, so that the close does not turn into a
 * reset that destroys the answer (bytes that arrive later still may). */
static void refuse_busy(int fd)
{
	static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
				   "Content-Type: text/plain\r\nContent-Length: 34\r\n"
				   "Retry-After: 1\r\nConnection: close\r\n\r\n"
				   "too many connections from client\n";
	char sink[4096];
	int i;

	for (i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
		;
	if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* nothing more to tell it */
	}
	shutdown(fd, SHUT_WR);
	close(fd);
}

static void accept_one(struct worker *w, int fd)
{
	struct dmsc_l7_handoff_key key;
	struct dmsc_l7_handoff val;
	struct sockaddr_in peer, local;
	socklen_t len = sizeof(peer);
	const struct dmsc_l7_service *svc;
	struct epoll_event ev;
	const struct dmsc_l7_http_limits lim = {
	    .max_header_bytes = opt.max_header_bytes,
	    .max_headers = opt.max_headers,
	    .max_target = opt.max_target,
	};
	struct conn *c;
	uint32_t client_id;
	int one = 1;

	if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0 ||
	    (len = sizeof(local), getsockname(fd, (struct sockaddr *)&local, &len) < 0)) {
		close(fd);
		return;
	}
	memset(&key, 0, sizeof(key));
	key.client_addr = peer.sin_addr.s_addr;
	key.client_port = peer.sin_port;
	key.helper_addr = local.sin_addr.s_addr;
	key.helper_port = local.sin_port;
	if (bpf_map_lookup_and_delete_elem(handoff_fd, &key, &val) != 0 &&
	    (bpf_map_lookup_elem(handoff_fd, &key, &val) != 0 ||
	     (bpf_map_delete_elem(handoff_fd, &key), false))) {
		/* not handed over by the kernel: no service to guess */
		ctr_add(&w->m.no_handoff, 1);
		close(fd);
		return;
	}
	svc = dmsc_l7_service_find(&cfg, val.vip, val.vport);
	if (!svc) {
		ctr_add(&w->m.unknown_service, 1);
		close(fd);
		return;
	}
	if (w->n_conns >= opt.max_conns) {
		ctr_add(&w->m.over_capacity, 1);
		close(fd);
		return;
	}
	/* Through a namespace's own listener every client is 127.0.0.1:
	 * count them per namespace (its listener's address). */
	client_id = dmsc_l7_netns_addr(local.sin_addr.s_addr) ? local.sin_addr.s_addr
							      : peer.sin_addr.s_addr;
	if (!client_take(client_id)) {
		ctr_add(&w->m.client_limit, 1);
		refuse_busy(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c || dmsc_l7_http_init(&c->rq, &lim, &req_hooks, c)) {
		free(c);
		close(fd);
		client_release(client_id);
		return;
	}
	c->counted = true;
	c->client_id = client_id;
	c->cep.kind = EP_CLIENT;
	c->uep.kind = EP_UPSTREAM;
	c->w = w;
	c->cfd = fd;
	c->ufd = -1;
	c->svc = svc;
	c->svc_idx = (size_t)(svc - cfg.svcs);
	c->peer = peer;
	c->route = -1;
	c->backend = -1;
	c->state = S_IDLE;
	c->deadline = now_ns() + (uint64_t)opt.idle_ms * 1000000;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->cev = EPOLLIN | EPOLLRDHUP;
	ev.events = c->cev;
	ev.data.ptr = &c->cep;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		dmsc_l7_http_free(&c->rq);
		free(c);
		close(fd);
		client_release(client_id);
		return;
	}
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	ctr_add(&w->m.accepted, 1);
}

/* Up to 64 connections from listener lfd: the worker's own or a
 * namespace's. Returns false once the queue is empty (or cannot be taken). */
static bool accept_batch(struct worker *w, int lfd)
{
	int i, fd;

	for (i = 0; i < 64; i++) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			/* Out of descriptors: the level-triggered listener would
			 * wake us at once, for ever. Stop watching it until the
			 * next sweep; the backlog waits meanwhile. */
			if ((errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			     errno == ENOMEM) &&
			    lfd == w->lfd && !w->accept_paused) {
				epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->lfd, NULL);
				w->accept_paused = true;
			}
			return false;
		}
		accept_one(w, fd);
	}
	return true;
}

/* A namespace listener at the drain: what its queue holds (bounded). */
static void accept_queued(void *arg, int lfd)
{
	int i;

	for (i = 0; i < 64 && accept_batch(arg, lfd); i++)
		;
}

/* Namespace listeners (l7_netns.h): in every worker's epoll, one woken. */
static void netns_watch(struct dmsc_l7_nsl *l)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &l->ep};
	int i;

	for (i = 0; i < opt.workers; i++)
		if (epoll_ctl(workers[i].epfd, EPOLL_CTL_ADD, l->fd, &ev) < 0)
			pr_warn("worker %d cannot watch a namespace listener: %s\n", i,
				strerror(errno));
}

static void netns_unwatch(struct dmsc_l7_nsl *l)
{
	int i;

	for (i = 0; i < opt.workers; i++)
		epoll_ctl(workers[i].epfd, EPOLL_CTL_DEL, l->fd, NULL);
}

static const struct dmsc_l7_netns_ops netns_ops = {
    .watch = netns_watch,
    .unwatch = netns_unwatch,
};

static void stop_listening(struct worker *w)
{
	if (!w->listening)
		return;
	/* take what is queued already, then close: nothing is reset */
	accept_batch(w, w->lfd);
	/* (the main thread stopped the namespace scanner before the drain) */
	if (w->id == 0)
		dmsc_l7_netns_close(accept_queued, w);
	if (!w->accept_paused)
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->lfd, NULL);
	close(w->lfd);
	w->lfd = -1;
	w->listening = false;
}

/* ---- timers ---------------------------------------------------------------- */
static void sweep(struct worker *w, uint64_t now)
{
	struct conn *c, *next;

	for (c = w->conns; c; c = next) {
		next = c->next;
		if (c->up_deadline && now >= c->up_deadline && c->ufd >= 0) {
			if (!c->resp_started) {
				/* no answer within the route's timeout_ms */
				upstream_close(c, false);
				respond_local(c, 504, body_left_large(c), 0);
			} else {
				/* a response that stalled mid-way: close */
				conn_close_client(c);
			}
		} else if (c->deadline && now >= c->deadline) {
			if (c->lingering)
				conn_close_client(c);
			else if (c->state == S_HEAD)
				reject(c, 408); /* slowloris: the head took too long */
			else if (c->state == S_IDLE)
				conn_close_client(c); /* idle, or a reader that stalled */
			else if (!c->rq.req_done && !c->resp_started)
				reject(c, 408); /* a body that stalled */
			else if (!c->rq.req_done || buf_pending(&c->cout))
				conn_close_client(c);
			else
				c->deadline = 0; /* waiting on the backend: up_deadline */
		}
		if (draining && c->cfd >= 0 && c->state == S_IDLE && c->cin_len == 0 &&
		    !buf_pending(&c->cout))
			conn_close_client(c);
		if (!c->dead)
			conn_step(c);
	}
	pool_expire(w, now);
}

/* ---- what the HTTP/2 code borrows (l7_h2.h) --------------------------------- */
static uint32_t h2_rnd(void *w)
{
	return rnd(w);
}

static int h2_own_socket(int fd)
{
	struct dmsc_l7_own own = {.magic = DMSC_L7_OWN_MAGIC};

	if (bpf_map_update_elem(own_fd, &fd, &own, BPF_ANY)) {
		pr_warn("cannot mark a backend socket in %s: %s\n", DMSC_MAP_L7_OWN,
			strerror(errno));
		return -errno;
	}
	return 0;
}

static uint64_t h2_bucket_wait(size_t svc_idx, uint64_t now)
{
	struct svc_rt *rt = &svc_rt[svc_idx];
	uint64_t wait;

	pthread_mutex_lock(&rt->lock);
	wait = dmsc_l7_bucket_take(&rt->bucket, now);
	pthread_mutex_unlock(&rt->lock);
	return wait;
}

static void h2_finished(void *worker, const struct dmsc_l7_service *svc, size_t svc_idx, int route,
			int status, uint64_t dur, uint32_t attempts, int grpc_status)
{
	struct worker *w = worker;
	struct route_metrics *rm = &w->m.rm[w->m.rm_base[svc_idx] + (size_t)(route + 1)];
	double secs = (double)dur / 1e9;
	size_t h;

	ctr_add(&rm->code[code_index(status)], 1);
	for (h = 0; h < N_HIST && secs > hist_le[h]; h++)
		;
	ctr_add(&rm->hist[h], 1);
	ctr_add(&rm->sum_ns, dur);
	if (attempts > 1)
		ctr_add(&rm->retries, attempts - 1);
	if (grpc_status >= 0 && grpc_status < DMSC_L7_GRPC_CODES)
		ctr_add(&rm->grpc[grpc_status], 1);
	if (access_fd >= 0) {
		char line[256];
		int n = snprintf(line, sizeof(line),
				 "service=%s route=%d proto=h2 status=%d grpc_status=%d attempts=%u "
				 "ms=%.3f\n",
				 svc->src->name, route, status, grpc_status, attempts, secs * 1e3);

		if (n > 0 && write(access_fd, line, (size_t)n) < 0) {
			/* a full disk must not stop the traffic */
		}
	}
}

/* ---- workers ---------------------------------------------------------------- */
static int open_listener(void)
{
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&opt.listen, sizeof(opt.listen)) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	uint64_t next_sweep = now_ns() + SWEEP_MS * 1000000ull, drain_end = 0;
	int i, n;

	for (;;) {
		uint64_t now;

		n = epoll_wait(w->epfd, evs, MAX_EVENTS, SWEEP_MS);
		for (i = 0; i < n; i++) {
			struct ep *e = evs[i].data.ptr;
			uint32_t ev = evs[i].events;
			struct conn *c;

			if (e->kind == EP_LISTEN) {
				if (!draining)
					accept_batch(w, w->lfd);
				continue;
			}
			if (e->kind == EP_H2_CLIENT || e->kind == EP_H2_UP) {
				dmsc_l7_h2_event(e, ev);
				continue;
			}
			if (e->kind == EP_NS_LISTEN) {
				int lfd = ((struct dmsc_l7_nsl *)e)->fd;

				if (!draining && lfd >= 0)
					accept_batch(w, lfd);
				continue;
			}
			if (e->kind == EP_POOL) {
				/* an idle backend connection wrote or closed:
				 * it can carry no request any more */
				struct pooled *p = (struct pooled *)e;

				if (p->fd >= 0 && !pool_quiet(p->fd))
					pool_drop(w, p);
				continue;
			}
			if (e->kind == EP_CLIENT) {
				c = CONTAINER(e, cep);
				if (c->dead || c->cfd < 0)
					continue;
				if (ev & (EPOLLERR | EPOLLHUP)) {
					conn_close_client(c);
				} else {
					/* recv returning 0 says the end of input */
					if (ev & (EPOLLIN | EPOLLRDHUP))
						client_read(c);
				}
			} else {
				c = CONTAINER(e, uep);
				if (c->dead || c->ufd < 0)
					continue;
				if (c->connecting && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
					upstream_on_connected(c);
				if (c->ufd >= 0 && !c->connecting &&
				    (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
					upstream_read(c);
			}
			if (!c->dead)
				conn_step(c);
		}
		now = now_ns();
		if (draining && w->listening) {
			stop_listening(w);
			drain_end = now + (uint64_t)opt.drain_ms * 1000000;
		}
		if (now >= next_sweep || draining) {
			if (w->accept_paused && w->listening) {
				struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->lep};

				if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev) == 0)
					w->accept_paused = false;
			}
			sweep(w, now);
			dmsc_l7_h2_sweep(&w->h2, now, draining);
			next_sweep = now + SWEEP_MS * 1000000ull;
		}
		conn_reap(w);
		dmsc_l7_h2_reap(&w->h2);
		if (draining && ((w->n_conns == 0 && w->h2.n_conns == 0) || now >= drain_end))
			break;
	}
	while (w->conns)
		conn_free(w->conns);
	conn_reap(w);
	dmsc_l7_h2_close_all(&w->h2);
	pool_expire(w, now_ns());
	return NULL;
}

/* ---- metrics file ------------------------------------------------------------ */
static void metrics_write(void)
{
	char tmp[PATH_MAX];
	FILE *f;
	size_t s, r, k, i;
	int wi;

	if (!opt.metrics_file)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", opt.metrics_file);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "# HELP dmsc_l7_requests_total Requests answered by dmsc-l7, by service, "
		   "route (index in the policy, \"none\": no route matched) and status code.\n"
		   "# TYPE dmsc_l7_requests_total counter\n");
	for (s = 0; s < cfg.n_svcs; s++)
		for (r = 0; r <= cfg.svcs[s].n_routes; r++) {
			char route[16];

			snprintf(route, sizeof(route), r ? "%zu" : "none", r - 1);
			for (k = 0; k <= N_CODES; k++) {
				uint64_t sum = 0;

				for (wi = 0; wi < opt.workers; wi++)
					sum += __atomic_load_n(
					    &workers[wi].m.rm[workers[wi].m.rm_base[s] + r].code[k],
					    __ATOMIC_RELAXED);
				if (!sum)
					continue;
				if (k < N_CODES)
					fprintf(
					    f,
					    "dmsc_l7_requests_total{service=\"%s\",route=\"%s\","
					    "code=\"%d\"} %llu\n",
					    cfg.svcs[s].src->name, route, status_codes[k],
					    (unsigned long long)sum);
				else
					fprintf(
					    f,
					    "dmsc_l7_requests_total{service=\"%s\",route=\"%s\","
					    "code=\"other\"} %llu\n",
					    cfg.svcs[s].src->name, route, (unsigned long long)sum);
			}
		}
	fprintf(f, "# HELP dmsc_l7_request_duration_seconds From request head parsed to "
		   "response complete.\n# TYPE dmsc_l7_request_duration_seconds histogram\n");
	for (s = 0; s < cfg.n_svcs; s++)
		for (r = 0; r <= cfg.svcs[s].n_routes; r++) {
			uint64_t cum = 0, sum_ns = 0, retries = 0;
			char route[16];

			snprintf(route, sizeof(route), r ? "%zu" : "none", r - 1);
			for (i = 0; i <= N_HIST; i++) {
				for (wi = 0; wi < opt.workers; wi++)
					cum += __atomic_load_n(
					    &workers[wi].m.rm[workers[wi].m.rm_base[s] + r].hist[i],
					    __ATOMIC_RELAXED);
				if (i < N_HIST)
					fprintf(f,
						"dmsc_l7_request_duration_seconds_bucket{service="
						"\"%s\","
						"route=\"%s\",le=\"%g\"} %llu\n",
						cfg.svcs[s].src->name, route, hist_le[i],
						(unsigned long long)cum);
				else
					fprintf(f,
						"dmsc_l7_request_duration_seconds_bucket{service="
						"\"%s\","
						"route=\"%s\",le=\"+Inf\"} %llu\n",
						cfg.svcs[s].src->name, route,
						(unsigned long long)cum);
			}
			for (wi = 0; wi < opt.workers; wi++) {
				struct route_metrics *m =
				    &workers[wi].m.rm[workers[wi].m.rm_base[s] + r];

				sum_ns += __atomic_load_n(&m->sum_ns, __ATOMIC_RELAXED);
				retries += __atomic_load_n(&m->retries, __ATOMIC_RELAXED);
			}
			fprintf(f,
				"dmsc_l7_request_duration_seconds_sum{service=\"%s\",route=\"%s\"} "
				"%.6f\n",
				cfg.svcs[s].src->name, route, (double)sum_ns / 1e9);
			fprintf(f,
				"dmsc_l7_request_duration_seconds_count{service=\"%s\",route=\"%"
				"s\"} %llu\n",
				cfg.svcs[s].src->name, route, (unsigned long long)cum);
			fprintf(f, "dmsc_l7_retries_total{service=\"%s\",route=\"%s\"} %llu\n",
				cfg.svcs[s].src->name, route, (unsigned long long)retries);
		}
	/* gRPC: the grpc-status each HTTP/2 stream ended with (only those seen) */
	fprintf(f, "# HELP dmsc_l7_grpc_responses_total HTTP/2 streams by service, route and the "
		   "grpc-status they ended with.\n"
		   "# TYPE dmsc_l7_grpc_responses_total counter\n");
	for (s = 0; s < cfg.n_svcs; s++)
		for (r = 0; r <= cfg.svcs[s].n_routes; r++)
			for (k = 0; k < DMSC_L7_GRPC_CODES; k++) {
				char route[16];
				uint64_t sum = 0;

				for (wi = 0; wi < opt.workers; wi++)
					sum += __atomic_load_n(
					    &workers[wi].m.rm[workers[wi].m.rm_base[s] + r].grpc[k],
					    __ATOMIC_RELAXED);
				if (!sum)
					continue;
				snprintf(route, sizeof(route), r ? "%zu" : "none", r - 1);
				fprintf(f,
					"dmsc_l7_grpc_responses_total{service=\"%s\",route=\"%s\","
					"grpc_status=\"%zu\"} %llu\n",
					cfg.svcs[s].src->name, route, k, (unsigned long long)sum);
			}
	{
		uint64_t acc = 0, noh = 0, unk = 0, over = 0, cl = 0;

		for (wi = 0; wi < opt.workers; wi++) {
			acc += __atomic_load_n(&workers[wi].m.accepted, __ATOMIC_RELAXED);
			noh += __atomic_load_n(&workers[wi].m.no_handoff, __ATOMIC_RELAXED);
			unk += __atomic_load_n(&workers[wi].m.unknown_service, __ATOMIC_RELAXED);
			over += __atomic_load_n(&workers[wi].m.over_capacity, __ATOMIC_RELAXED);
			cl += __atomic_load_n(&workers[wi].m.client_limit, __ATOMIC_RELAXED);
		}
		fprintf(f,
			"# TYPE dmsc_l7_connections_total counter\n"
			"dmsc_l7_connections_total %llu\n"
			"# HELP dmsc_l7_refused_connections_total Closed at accept: no handoff "
			"record, a service the policy lacks, over capacity, or a client past "
			"--max-conns-per-client (answered 503).\n"
			"# TYPE dmsc_l7_refused_connections_total counter\n"
			"dmsc_l7_refused_connections_total{reason=\"no_handoff\"} %llu\n"
			"dmsc_l7_refused_connections_total{reason=\"unknown_service\"} %llu\n"
			"dmsc_l7_refused_connections_total{reason=\"over_capacity\"} %llu\n"
			"dmsc_l7_refused_connections_total{reason=\"client_limit\"} %llu\n"
			"# HELP dmsc_l7_namespaces Network namespaces the helper listens in "
			"besides its own.\n"
			"# TYPE dmsc_l7_namespaces gauge\n"
			"dmsc_l7_namespaces %u\n",
			(unsigned long long)acc, (unsigned long long)noh, (unsigned long long)unk,
			(unsigned long long)over, (unsigned long long)cl, dmsc_l7_netns_count());
	}
	if (fclose(f) == 0)
		rename(tmp, opt.metrics_file);
	else
		unlink(tmp);
}

/* ---- startup ---------------------------------------------------------------- */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: dmsc-l7 --listen ADDR:PORT --policy FILE [options]\n"
		"  --listen ADDR:PORT      where connect4 sends http services' connections\n"
		"  --policy FILE           the policy (its protocol \"http\" services)\n"
		"  --pin-dir DIR           the datapath (default $DMSC_PIN_DIR or %s/v%s)\n"
		"  --workers N             worker threads (default: CPUs)\n"
		"  --ready-fd FD           write \"ready\\n\" to FD and close it once serving\n"
		"  --access-log FILE|-     one line per request (default: off)\n"
		"  --metrics-file FILE     Prometheus text, rewritten every second\n"
		"  --no-register           do not write the listen address to the datapath\n"
		"  --no-netns              no listeners in the mesh's other network namespaces\n"
		"  --max-header-bytes N    request line + headers (default 8192; past it 431)\n"
		"  --max-headers N         header fields (default 64; past it 431)\n"
		"  --max-target N          request target (default 4096; past it 414)\n"
		"  --idle-timeout-ms N     keep-alive idle (default 60000)\n"
		"  --head-timeout-ms N     a whole request head (default 10000; then 408)\n"
		"  --io-timeout-ms N       no progress on a body or a write (default 30000)\n"
		"  --default-timeout-ms N  a route without timeout_ms (default 15000)\n"
		"  --default-retries N     a route without retries (default 1)\n"
		"  --drain-ms N            SIGTERM: finish in-flight requests within N (10000)\n"
		"  --max-conns N           connections per worker (default 16384)\n"
		"  --max-conns-per-client N  connections from one client address, all\n"
		"                          workers together (default 512; past it 503 + close)\n"
		"  --pool-idle-ms N        an idle keep-alive backend connection is closed\n"
		"                          after N ms (default 4000)\n"
		"  --forwarded MODE        xff (default: X-Forwarded-For), forwarded\n"
		"                          (Forwarded: for=), both, or none\n"
		"Exit: 0 drained, 1 failed, 2 usage.\n",
		DMSC_PIN_ROOT, DMSC_LAYOUT_VERSION);
}

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || end == s || v < min || v > max || s[0] == '-')
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static int parse_args(int argc, char **argv)
{
	static const struct {
		const char *name;
		uint32_t *val;
		uint32_t min, max;
	} nums[] = {
	    {"--max-header-bytes", &opt.max_header_bytes, 256, 1 << 20},
	    {"--max-headers", &opt.max_headers, 1, 1024},
	    {"--max-target", &opt.max_target, 16, 1 << 20},
	    {"--idle-timeout-ms", &opt.idle_ms, 1, 86400000},
	    {"--head-timeout-ms", &opt.head_ms, 1, 86400000},
	    {"--io-timeout-ms", &opt.io_ms, 1, 86400000},
	    {"--default-timeout-ms", &opt.default_timeout_ms, 1, 86400000},
	    {"--default-retries", &opt.default_retries, 0, 10},
	    {"--drain-ms", &opt.drain_ms, 0, 3600000},
	    {"--max-conns", &opt.max_conns, 1, 1 << 24},
	    {"--max-conns-per-client", &opt.max_conns_per_client, 1, 1 << 24},
	    {"--pool-idle-ms", &opt.pool_idle_ms, 1, 3600000},
	};
	uint32_t u;
	size_t k;
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		}
		if (!strcmp(a, "--no-register")) {
			opt.no_register = true;
			continue;
		}
		if (!strcmp(a, "--no-netns")) {
			opt.no_netns = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "dmsc-l7: %s: unknown option or missing value\n", a);
			return -EINVAL;
		}
		i++;
		for (k = 0; k < sizeof(nums) / sizeof(nums[0]); k++)
			if (!strcmp(a, nums[k].name))
				break;
		if (k < sizeof(nums) / sizeof(nums[0])) {
			if (parse_u32(v, nums[k].min, nums[k].max, nums[k].val)) {
				fprintf(stderr, "dmsc-l7: %s \"%s\": %u to %u\n", a, v, nums[k].min,
					nums[k].max);
				return -EINVAL;
			}
		} else if (!strcmp(a, "--listen")) {
			char host[64];
			const char *colon = strrchr(v, ':');

			if (!colon || (size_t)(colon - v) >= sizeof(host) ||
			    parse_u32(colon + 1, 1, 65535, &u)) {
				fprintf(stderr, "dmsc-l7: --listen \"%s\": not IPV4:PORT\n", v);
				return -EINVAL;
			}
			memcpy(host, v, (size_t)(colon - v));
			host[colon - v] = '\0';
			opt.listen.sin_family = AF_INET;
			opt.listen.sin_port = htons((uint16_t)u);
			if (inet_pton(AF_INET, host, &opt.listen.sin_addr) != 1 ||
			    opt.listen.sin_addr.s_addr == INADDR_ANY) {
				fprintf(stderr,
					"dmsc-l7: --listen \"%s\": a concrete IPv4 address "
					"(connect4 redirects to it)\n",
					v);
				return -EINVAL;
			}
		} else if (!strcmp(a, "--forwarded")) {
			if (!strcmp(v, "xff"))
				opt.forwarded = FWD_XFF;
			else if (!strcmp(v, "forwarded"))
				opt.forwarded = FWD_FORWARDED;
			else if (!strcmp(v, "both"))
				opt.forwarded = FWD_XFF | FWD_FORWARDED;
			else if (!strcmp(v, "none"))
				opt.forwarded = 0;
			else {
				fprintf(stderr,
					"dmsc-l7: --forwarded \"%s\": xff, forwarded, both or none\n",
					v);
				return -EINVAL;
			}
		} else if (!strcmp(a, "--policy")) {
			opt.policy_file = v;
		} else if (!strcmp(a, "--pin-dir")) {
			opt.pin_dir = v;
		} else if (!strcmp(a, "--access-log")) {
			opt.access_log = v;
		} else if (!strcmp(a, "--metrics-file")) {
			opt.metrics_file = v;
		} else if (!strcmp(a, "--workers")) {
			if (parse_u32(v, 1, 1024, &u)) {
				fprintf(stderr, "dmsc-l7: --workers \"%s\": 1 to 1024\n", v);
				return -EINVAL;
			}
			opt.workers = (int)u;
		} else if (!strcmp(a, "--ready-fd")) {
			if (parse_u32(v, 0, INT_MAX, &u)) {
				fprintf(stderr, "dmsc-l7: --ready-fd \"%s\": a file descriptor\n",
					v);
				return -EINVAL;
			}
			opt.ready_fd = (int)u;
		} else {
			fprintf(stderr, "dmsc-l7: unknown option %s\n", a);
			return -EINVAL;
		}
	}
	if (!opt.listen.sin_family || !opt.policy_file) {
		fprintf(stderr, "dmsc-l7: --listen and --policy are required\n");
		return -EINVAL;
	}
	return 0;
}

static int load_policy(void)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p = {0};
	char line[1024];
	size_t i, k;
	int err;

	err = dmsc_policy_load_file(opt.policy_file, &p, &errs);
	if (err) {
		for (i = 0; i < errs.count; i++) {
			dmsc_policy_error_format(&errs.items[i], line, sizeof(line));
			pr_warn("%s: %s\n", opt.policy_file, line);
		}
		dmsc_policy_errors_free(&errs);
		return err;
	}
	dmsc_policy_errors_free(&errs);
	err = dmsc_l7_config_build(&cfg, &p);
	if (err) {
		pr_warn("cannot build the routing tables: %s\n", strerror(-err));
		return err;
	}
	svc_rt = calloc(cfg.n_svcs + 1, sizeof(*svc_rt));
	if (!svc_rt)
		return -ENOMEM;
	for (i = 0; i < cfg.n_svcs; i++) {
		pthread_mutex_init(&svc_rt[i].lock, NULL);
		if (cfg.svcs[i].has_request_limit)
			dmsc_l7_bucket_init(&svc_rt[i].bucket, cfg.svcs[i].requests_per_second,
					    cfg.svcs[i].burst, now_ns());
	}
	for (k = 0; k < cfg.n_svcs; k++)
		n_route_slots += cfg.svcs[k].n_routes + 1;
	return 0;
}

static int open_maps(const char *pin_dir, int *conf_fd)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, DMSC_MAP_L7_HANDOFF);
	handoff_fd = bpf_obj_get(path);
	if (handoff_fd < 0) {
		pr_warn("cannot open %s: %s (is dmsc installed there, by a build with the "
			"L7 handoff?)\n",
			path, strerror(errno));
		return -errno;
	}
	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, DMSC_MAP_L7_OWN);
	own_fd = bpf_obj_get(path);
	if (own_fd < 0) {
		pr_warn("cannot open %s: %s (a datapath installed by an older build: install "
			"again to add it)\n",
			path, strerror(errno));
		return -errno;
	}
	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, DMSC_MAP_L7_CONF);
	*conf_fd = bpf_obj_get(path);
	if (*conf_fd < 0) {
		pr_warn("cannot open %s: %s\n", path, strerror(errno));
		return -errno;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct dmsc_l7_conf conf = {0};
	struct rlimit rl;
	sigset_t mask;
	__u32 zero = 0;
	int conf_fd = -1, i, err, sig;
	size_t s, base;
	uint64_t seed;

	if (parse_args(argc, argv)) {
		usage(stderr);
		return 2;
	}
	if (!opt.workers) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		opt.workers = n > 0 && n < 1024 ? (int)n : 1;
	}
	/* Signals are taken by the main thread alone (sigtimedwait below). */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	if (load_policy())
		return 1;
	if (open_maps(opt.pin_dir ? opt.pin_dir : dmsc_pin_dir(), &conf_fd))
		return 1;
	if (opt.access_log) {
		access_fd =
		    strcmp(opt.access_log, "-") == 0
			? dup(STDERR_FILENO)
			: open(opt.access_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
		if (access_fd < 0) {
			pr_warn("cannot open the access log %s: %s\n", opt.access_log,
				strerror(errno));
			return 1;
		}
	}

	workers = calloc((size_t)opt.workers, sizeof(*workers));
	if (!workers)
		return 1;
	for (i = 0; i < opt.workers; i++) {
		struct worker *w = &workers[i];
		struct epoll_event ev = {.events = EPOLLIN};

		w->id = i;
		for (s = 0; s < POOL_MAX; s++)
			w->pool[s].fd = -1;
		if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
			seed = now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)i;
		w->rng = seed | 1;
		w->m.rm = calloc(n_route_slots + 1, sizeof(*w->m.rm));
		w->m.rm_base = calloc(cfg.n_svcs + 1, sizeof(*w->m.rm_base));
		if (!w->m.rm || !w->m.rm_base)
			return 1;
		for (s = 0, base = 0; s < cfg.n_svcs; s++) {
			w->m.rm_base[s] = base;
			base += cfg.svcs[s].n_routes + 1;
		}
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		w->h2 = (struct dmsc_l7_h2_env){
		    .epfd = w->epfd,
		    .worker = w,
		    .rnd = h2_rnd,
		    .own_socket = h2_own_socket,
		    .bucket_wait = h2_bucket_wait,
		    .finished = h2_finished,
		    .release_client = client_release,
		    .default_timeout_ms = opt.default_timeout_ms,
		    .default_retries = opt.default_retries,
		    .idle_ms = opt.idle_ms,
		};
		w->lfd = open_listener();
		if (w->epfd < 0 || w->lfd < 0) {
			err = w->lfd < 0 ? w->lfd : -errno;
			pr_warn("cannot listen on %s:%u: %s\n", inet_ntoa(opt.listen.sin_addr),
				ntohs(opt.listen.sin_port), strerror(-err));
			return 1;
		}
		w->lep.kind = EP_LISTEN;
		ev.data.ptr = &w->lep;
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev) < 0)
			return 1;
		w->listening = true;
	}
	for (i = 0; i < opt.workers; i++) {
		err = pthread_create(&workers[i].th, NULL, worker_main, &workers[i]);
		if (err) {
			pr_warn("cannot start worker %d: %s\n", i, strerror(err));
			return 1;
		}
	}
	/* Listeners in the mesh's other network namespaces, before "ready". */
	if (!opt.no_netns &&
	    dmsc_l7_netns_start(opt.pin_dir ? opt.pin_dir : dmsc_pin_dir(), opt.listen.sin_port,
				&netns_ops))
		return 1;
	if (!opt.no_register) {
		conf.addr = opt.listen.sin_addr.s_addr;
		conf.port = opt.listen.sin_port;
		if (bpf_map_update_elem(conf_fd, &zero, &conf, BPF_ANY)) {
			pr_warn("cannot register in %s: %s\n", DMSC_MAP_L7_CONF, strerror(errno));
			return 1;
		}
	}
	pr_info("serving %zu http service%s on %s:%u with %d workers\n", cfg.n_svcs,
		cfg.n_svcs == 1 ? "" : "s", inet_ntoa(opt.listen.sin_addr),
		ntohs(opt.listen.sin_port), opt.workers);
	printf("ready\n");
	fflush(stdout);
	if (opt.ready_fd >= 0) {
		if (write(opt.ready_fd, "ready\n", 6) != 6)
			pr_warn("cannot write to --ready-fd %d: %s\n", opt.ready_fd,
				strerror(errno));
		close(opt.ready_fd);
	}

	for (;;) {
		struct timespec one_s = {1, 0};

		sig = sigtimedwait(&mask, NULL, &one_s);
		if (sig == SIGTERM || sig == SIGINT)
			break;
		metrics_write();
	}
	/* Drain: workers stop accepting, finish what is in flight within
	 * --drain-ms, and return. The registration stays: a restarted helper
	 * takes the same address (SO_REUSEPORT), so no connection is balanced
	 * around the routes meanwhile; those that arrive in between are refused. */
	pr_info("draining (at most %u ms)\n", opt.drain_ms);
	dmsc_l7_netns_stop_scanning();
	draining = 1;
	for (i = 0; i < opt.workers; i++)
		pthread_join(workers[i].th, NULL);
	metrics_write();
	pr_info("drained\n");
	return 0;
}
