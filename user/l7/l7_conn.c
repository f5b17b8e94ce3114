// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7's connections: the per-client-address bound, the growable
 * buffers, epoll interest, closing and freeing a connection, and the
 * answers the helper gives itself (respond_local).
 */
#define _GNU_SOURCE
#include "l7_proxy.h"
#include "hash.h"
#include "http_reason.h"

/* ---- connections per client address ------------------------------------ */
/* The identity is the client's address as the accepted socket shows it,
 * within its namespace (struct dmsc_l7_client_key); no NAT sits between a
 * client and the helper. Workloads that share an address share the bound. */
struct dmsc_l7_client {
	struct dmsc_l7_client *next;
	struct dmsc_l7_client_key key;
	uint32_t n;
};

static struct {
	pthread_mutex_t lock;
	struct dmsc_l7_client *bucket[CLIENT_BUCKETS];
} clients = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t key_hash(const struct dmsc_l7_client_key *k)
{
	return dmsc_fnv1a(k->scope * 0x9e3779b97f4a7c15ull, k->addr, sizeof(k->addr));
}

static size_t client_hash(const struct dmsc_l7_client_key *k)
{
	return (size_t)(key_hash(k) >> 32) % CLIENT_BUCKETS;
}

uint64_t client_id(const struct dmsc_l7_client *client)
{
	return client ? key_hash(&client->key) : 0;
}

static bool client_is(const struct dmsc_l7_client *cc, const struct dmsc_l7_client_key *k)
{
	return cc->key.scope == k->scope && !memcmp(cc->key.addr, k->addr, sizeof(k->addr));
}

struct dmsc_l7_client *client_take(const struct dmsc_l7_client_key *k)
{
	struct dmsc_l7_client **pp, *cc;
	bool ok = false;

	pthread_mutex_lock(&clients.lock);
	pp = &clients.bucket[client_hash(k)];
	for (cc = *pp; cc && !client_is(cc, k); cc = cc->next)
		;
	if (!cc) {
		cc = calloc(1, sizeof(*cc));
		if (cc) {
			cc->key = *k;
			cc->next = *pp;
			*pp = cc;
		}
	}
	if (cc && cc->n < opt.max_conns_per_client) {
		cc->n++;
		ok = true;
	}
	pthread_mutex_unlock(&clients.lock);
	return ok ? cc : NULL;
}

void client_release(struct dmsc_l7_client *client)
{
	struct dmsc_l7_client **pp, *cc;

	if (!client)
		return;
	pthread_mutex_lock(&clients.lock);
	for (pp = &clients.bucket[client_hash(&client->key)]; (cc = *pp); pp = &cc->next) {
		if (cc != client)
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
	char *p = dmsc_bytes_room(b->p, &b->cap, b->len + more, 4096);

	if (!p)
		return -ENOMEM;
	b->p = p;
	return 0;
}

int buf_add(struct buf *b, const void *data, size_t len)
{
	if (!len)
		return 0; /* (an empty buffer has no room to reserve) */
	if (buf_reserve(b, len))
		return -ENOMEM;
	memcpy(b->p + b->len, data, len);
	b->len += len;
	return 0;
}

int __attribute__((format(printf, 2, 3))) buf_fmt(struct buf *b, const char *fmt, ...)
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

size_t buf_pending(const struct buf *b)
{
	return b->len - b->off;
}

void buf_reset(struct buf *b)
{
	b->off = b->len = 0;
	/* a connection that once moved a large body gives the memory back */
	if (b->cap > OUT_HIGH * 2) {
		free(b->p);
		b->p = NULL;
		b->cap = 0;
	}
}


/* ---- epoll ------------------------------------------------------------- */
static void ep_set(struct worker *w, int fd, struct ep *e, uint32_t *cur, uint32_t want)
{
	struct epoll_event ev = {.events = want, .data.ptr = e};

	if (fd < 0 || *cur == want)
		return;
	if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
		*cur = want;
}

void conn_update(struct conn *c)
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
		/* EPOLLRDHUP with EPOLLIN only, as on the client's side: a
		 * close is seen by the read that returns 0 */
		if (!c->connecting && !c->up_eof && buf_pending(&c->cout) < OUT_HIGH &&
		    c->uin_len < UIN_SIZE)
			uw |= EPOLLIN | EPOLLRDHUP;
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
		ep_set(c->w, c->ufd, c->uslot ? &c->uslot->ep : &c->uep, &c->uev, uw);
	}
}

/* ---- connections -------------------------------------------------------- */
void upstream_close(struct conn *c, bool reuse)
{
	struct worker *w = c->w;

	if (c->ufd < 0)
		return;
	if (reuse && !draining && c->backend >= 0) {
		struct sockaddr_storage to;

		dmsc_l7_backend_sa(c->svc, c->backend, &to);
		pool_put(w, c, &to, c->up_key);
	} else if (c->uslot) {
		pool_drop(w, c->uslot);
	} else {
		close(c->ufd);
	}
	c->ufd = -1;
	c->uslot = NULL;
	c->uev = 0;
	c->u_reg = false;
	c->connecting = false;
	c->up_deadline = 0;
}

/* Closes a connection; its memory goes after the current batch of epoll
 * events, which may still point at it. */
void conn_free(struct conn *c)
{
	struct worker *w = c->w;

	if (c->dead)
		return;
	if (c->t_req && c->status)
		request_finished(c);
	upstream_close(c, false);
	if (c->counted)
		client_release(c->client);
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
	__atomic_sub_fetch(&w->n_conns, 1, __ATOMIC_RELAXED); /* read by l7_h2_move.c */
	c->dead = true;
	c->dead_next = w->dead;
	w->dead = c;
}

void conn_reap(struct worker *w)
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

/* Answering before the request's body is in: the rest is read and dropped
 * to keep the connection, unless it is large or of unknown length. */
bool body_left_large(const struct conn *c)
{
	/* content_length is ULLONG_MAX when the request has none */
	return !c->rq.req_done && (c->rq.req_chunked || ((c->rq.hp.flags & F_CONTENTLENGTH) &&
							 c->rq.hp.content_length > RETAIN_MAX));
}

/* Queues a response of our own; close: "Connection: close" and close after. */
void respond_local(struct conn *c, int status, bool close, uint64_t retry_after_s)
{
	const char *reason = dmsc_http_reason(status);
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
