// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7's backend side: the idle keep-alive pool, the response parser's
 * callbacks, dispatch (route, bucket, backend pick), the request rebuilt
 * for the backend, retries, and the response relayed to the client.
 */
#define _GNU_SOURCE
#include "l7_proxy.h"

/* ---- the idle backend connections -------------------------------------- */
/* A pooled connection closes, idle or lent (with its request): its slot
 * is free. */
void pool_drop(struct worker *w, struct pooled *p)
{
	close(p->fd); /* leaves epoll with it */
	p->fd = -1;
	if (!p->lent)
		w->n_pool--;
	p->lent = NULL;
}

/* Idle and quiet: nothing to read and not closed by the backend. */
bool pool_quiet(int fd)
{
	char ch;
	ssize_t n = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);

	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* A backend's address and port as the pool keys them: both families in
 * one form (an IPv4 address as ::ffff:a.b.c.d). */
static void pool_key(const struct sockaddr_storage *to, uint8_t addr[16], uint16_t *port)
{
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)to;
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)to;

	if (to->ss_family == AF_INET6) {
		memcpy(addr, &a6->sin6_addr, 16);
		*port = a6->sin6_port;
		return;
	}
	memset(addr, 0, 10);
	addr[10] = addr[11] = 0xff;
	memcpy(addr + 12, &a4->sin_addr, 4);
	*port = a4->sin_port;
}

/* Keeps c's backend connection for the next request to the backend at
 * `to`; closes it when the pool is full. One that came from the pool goes
 * back to its slot, in epoll as it was (POOL_EV: no system call); a new one
 * takes a free slot. */
void pool_put(struct worker *w, struct conn *c, const struct sockaddr_storage *to, uint64_t key)
{
	struct epoll_event ev = {.events = POOL_EV};
	struct pooled *p = c->uslot;
	int i;

	if (p) {
		ev.data.ptr = &p->ep;
		if (w->n_pool >= POOL_MAX ||
		    (c->uev != POOL_EV && epoll_ctl(w->epfd, EPOLL_CTL_MOD, p->fd, &ev) < 0)) {
			pool_drop(w, p);
			return;
		}
		p->lent = NULL;
		p->since = now_ns();
		w->n_pool++;
		return;
	}
	for (i = 0; i < POOL_SLOTS && w->n_pool < POOL_MAX; i++)
		if (w->pool[i].fd < 0) {
			p = &w->pool[i];
			break;
		}
	ev.data.ptr = p ? &p->ep : NULL;
	if (!p || epoll_ctl(w->epfd, c->u_reg ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->ufd, &ev) < 0) {
		close(c->ufd);
		return;
	}
	p->ep.kind = EP_POOL;
	p->fd = c->ufd;
	p->lent = NULL;
	pool_key(to, p->addr, &p->port);
	p->key = key;
	p->since = now_ns();
	w->n_pool++;
}

/* An idle connection to the backend at `to`, carrying the identity key,
 * lent to c; or NULL. Those too old are closed on the way. One the backend
 * wrote to or closed while idle is gone already: epoll said so, and the
 * batch's events on idle connections ran first (pool_events). A close that
 * comes after is the race every keep-alive pool has: only requests that are
 * safe to send twice take a pooled connection, and they go again on a new
 * one. */
static struct pooled *pool_take(struct worker *w, struct conn *c,
				const struct sockaddr_storage *to, uint64_t key)
{
	uint64_t oldest = now_ns() - (uint64_t)opt.pool_idle_ms * 1000000;
	uint8_t addr[16];
	uint16_t port;
	int i;

	pool_key(to, addr, &port);
	for (i = 0; i < POOL_SLOTS && w->n_pool > 0; i++) {
		struct pooled *p = &w->pool[i];

		if (p->fd < 0 || p->lent || p->port != port || p->key != key ||
		    memcmp(p->addr, addr, sizeof(addr)))
			continue;
		if (p->since < oldest) {
			pool_drop(w, p);
			continue;
		}
		p->lent = c;
		w->n_pool--;
		return p;
	}
	return NULL;
}

/* The sweep: idle connections past --pool-idle-ms go (all of them when
 * draining). */
void pool_expire(struct worker *w, uint64_t now)
{
	uint64_t oldest = now - (uint64_t)opt.pool_idle_ms * 1000000;
	int i;

	for (i = 0; i < POOL_SLOTS && w->n_pool > 0; i++)
		if (w->pool[i].fd >= 0 && !w->pool[i].lent &&
		    (draining || w->pool[i].since < oldest))
			pool_drop(w, &w->pool[i]);
}

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
static void upstream_start(struct conn *c);

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
	char addr[DMSC_ADDR_PORT_LEN], client[INET6_ADDRSTRLEN];
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
		dmsc_format_ip_port(c->svc->src->family, c->svc->vip, c->svc->vip6,
				    ntohs(c->svc->vport), addr, sizeof(addr));
		err = buf_fmt(b, "Host: %s\r\n", addr);
	}
	fmt_peer(&c->peer, false, client, sizeof(client));
	if (!err && (opt.forwarded & FWD_XFF))
		err = add_forwarding(c, "X-Forwarded-For", client);
	if (!err && (opt.forwarded & FWD_FORWARDED)) {
		char hop[64];

		/* RFC 7239 6: an IPv6 node is quoted and bracketed */
		snprintf(hop, sizeof(hop),
			 c->peer.ss_family == AF_INET6 ? "for=\"[%s]\";proto=http" : "for=%s;proto=http",
			 client);
		err = add_forwarding(c, "Forwarded", hop);
	}
	if (!err && c->rq.req_chunked)
		err = buf_add(b, "Transfer-Encoding: chunked\r\n", 28);
	else if (!err && (c->rq.hp.flags & F_CONTENTLENGTH))
		err = buf_fmt(b, "Content-Length: %llu\r\n",
			      (unsigned long long)c->rq.hp.content_length);
	if (c->rq.upgrade) {
		/* the switch the client asks for, for the backend to take or
		 * not (decision 82): its Upgrade fields, named by Connection */
		for (i = 0; !err && i < c->rq.n_hdrs; i++) {
			const struct dmsc_l7_http_hdr *h = &c->rq.hdrs[i];

			if (!dmsc_l7_http_hdr_is(&c->rq, h, "upgrade"))
				continue;
			err = buf_add(b, "Upgrade: ", 9);
			err = err ?: buf_add(b, c->rq.head + h->val_off, h->val_len);
			err = err ?: buf_add(b, "\r\n", 2);
		}
		return err ?: buf_add(b, "Connection: upgrade\r\n\r\n", 23);
	}
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
void dispatch(struct conn *c)
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
	c->seed = dmsc_l7_request_seed(c->svc, &req, c->affinity_key, c->cgroup);
	if (c->route >= 0)
		route = &c->svc->routes[c->route];
	if (route && route->idempotent)
		c->idempotent = true; /* the policy says it is safe to send twice */

	if (dmsc_l7_service_limited(c->svc)) {
		struct svc_rt *rt = &svc_rt[c->svc_idx];

		pthread_mutex_lock(&rt->lock);
		wait = dmsc_tb_take(&rt->bucket, now, rt->rate, rt->depth, 1)
			       ? 0
			       : dmsc_tb_wait_seconds(&rt->bucket, rt->rate, 1);
		pthread_mutex_unlock(&rt->lock);
		if (wait) {
			c->state = S_LOCAL;
			respond_local(c, 429, false, wait);
			return;
		}
	}
	/* (a change of weights may empty it meanwhile: decision 85) */
	if (__atomic_load_n(&(route ? &route->pick : &c->svc->pick)->empty, __ATOMIC_RELAXED)) {
		c->state = S_LOCAL;
		respond_local(c, 503, false, 0);
		return;
	}
	c->retries_left = dmsc_l7_route_retries(route, opt.default_retries);
	c->timeout_ms = dmsc_l7_route_timeout_ms(route, opt.default_timeout_ms);
	c->up_deadline = dmsc_l7_deadline(now, c->timeout_ms);
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

/* A fresh connection through the tunnel, nothing back yet, whose backend
 * the tunnel could not reach (l7_via.h): counted as a failed connect; the
 * request got no further than the tunnel, so it may go elsewhere. */
static bool unreached(struct conn *c)
{
	return !c->up_reused && !c->uin_len && !c->resp_head &&
	       dmsc_l7_via_unreached(&via, c->ufd, c->svc, c->backend);
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
	struct sockaddr_storage sa;
	struct pooled *slot;
	unsigned int sa_len;
	int idx, fd, err, one = 1;

	idx = dmsc_l7_attempt_pick(c->svc, c->route, dmsc_l7_pick_seed(c->svc, c->seed, rnd(c->w)),
				   &c->tried);
	if (idx < 0) {
		upstream_failed(c, false, 503);
		return;
	}
	c->backend = idx;
	c->attempts++;
	/* every attempt has the route's whole timeout: a retry after a 503
	 * must not wait for ever on a backend that then says nothing */
	c->up_deadline = dmsc_l7_deadline(now_ns(), c->timeout_ms);
	sa_len = dmsc_l7_backend_sa(c->svc, idx, &sa);
	http_parser_init(&c->sp, HTTP_RESPONSE);
	c->sp.data = c;
	c->uin_len = 0;
	c->resp_head = c->resp_done = false;
	c->up_reusable = false;
	c->dechunk = false;

	/* A pooled connection may have been closed by the backend a moment
	 * ago; only requests that are safe to send twice use one. */
	c->up_key = dmsc_l7_via_key(&via, c->svc, idx, c->cgroup);
	slot = c->idempotent ? pool_take(c->w, c, &sa, c->up_key) : NULL;
	fd = slot ? slot->fd : -1;
	c->up_reused = fd >= 0;
	c->connecting = false;
	if (fd < 0) {
		fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			upstream_failed(c, false, 502);
			return;
		}
		/* ours: connect4 must not hand it back to us (shared.h,
		 * dmsc_l7_own); without the entry it could loop */
		if ((err = dmsc_l7_own_mark(own_fd, fd))) {
			pr_warn("cannot mark a backend socket in %s: %s\n", DMSC_MAP_L7_OWN,
				strerror(-err));
			close(fd);
			upstream_failed(c, false, 502);
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* directly, or through the tunnel (l7_via.h) */
		if (dmsc_l7_via_connect(&via, fd, &sa, sa_len, c->svc, idx, c->cgroup) < 0) {
			if (errno == EACCES) {
				/* no identity to vouch for: no backend would
				 * take it, nor is the backend at fault */
				close(fd);
				upstream_failed(c, false, 502);
				return;
			}
			if (errno != EINPROGRESS) {
				close(fd);
				dmsc_l7_health_result(c->svc, idx, 0);
				/* refused at once: nothing reached a backend */
				upstream_failed(c, true, 502);
				return;
			}
			c->connecting = true;
		}
	}
	/* A new connection is not in epoll yet: conn_step writes the request
	 * first and conn_update adds the fd with what is left to wait for. One
	 * from the pool stays in epoll as its slot's, watched for POOL_EV,
	 * which is what conn_update asks of it while the response comes: no
	 * epoll_ctl per request. */
	c->ufd = fd;
	c->uslot = slot;
	c->uev = slot ? POOL_EV : 0;
	c->u_reg = slot != NULL;
}

void upstream_write(struct conn *c)
{
	struct buf *b = &c->uout;

	while (buf_pending(b)) {
		ssize_t n = send(c->ufd, b->p + b->off, buf_pending(b), MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			if (c->state == S_TUNNEL) {
				tunnel_abort(c);
				return;
			}
			/* A pooled connection the backend closed meanwhile (the
			 * keep-alive race): only idempotent requests use those,
			 * and such a retry does not spend the route's retries.
			 * A fresh connection that fails here: 502. */
			if (c->idempotent && c->up_reused)
				c->retries_left++;
			upstream_failed(c, (c->idempotent && c->up_reused) || unreached(c), 502);
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

void upstream_on_connected(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		/* refused or unreachable: nothing reached a backend. Through
		 * the tunnel, a reset that came before we saw the connect
		 * complete is the tunnel's word that it could not reach the
		 * backend: counted as that (unreached() counts the failure) */
		if (!unreached(c))
			dmsc_l7_health_result(c->svc, c->backend, 0);
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
	/* draining, a connection whose head said keep-alive (the drain began
	 * after it) waits idle for its next request, answered with a close,
	 * or for the drain's idle close (l7_worker.c sweep) */
	if (!c->client_keepalive || !c->rq.req_done)
		c->close_after = true;
	c->idle_since = now_ns();
	c->deadline = c->idle_since + (uint64_t)opt.idle_ms * 1000000;
}


/* Where the final head starts in uin[0, end): after any 1xx heads. */
static size_t head_start(const struct conn *c, size_t end)
{
	size_t start = 0, i;

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
	return start;
}

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
	size_t start = head_start(c, end);
	unsigned int flags = 0;
	bool keep;
	int n;

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

/*
 * A draining helper's answer to an HTTP/1.1 client that would keep the
 * connection: its head says "Connection: close" (decision 84), the 1xx
 * heads before it and the framing as they came. A client told so opens a
 * new connection for its next request (to the next helper); one closed
 * after a keep-alive head would see its next request fail.
 */
static int response_head_close(struct conn *c, size_t end)
{
	char out[UIN_SIZE + 64];
	size_t start = head_start(c, end);
	int n;

	c->close_after = true;
	n = dmsc_l7_resp_head_rewrite(c->uin + start, end - start,
				      DMSC_L7_RESP_CLOSE | DMSC_L7_RESP_SAME_VERSION, out,
				      sizeof(out));
	if (n < 0)
		return n;
	if (start && buf_add(&c->cout, c->uin, start))
		return -ENOMEM;
	return buf_add(&c->cout, out, (size_t)n);
}

/* ---- after a 101: bytes both ways (decision 82) ------------------------ */
/* A reset on one side: the other side gets one too (linger 0), as a
 * client straight to the backend would have seen. */
void tunnel_abort(struct conn *c)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	if (c->cfd >= 0)
		setsockopt(c->cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	if (c->ufd >= 0)
		setsockopt(c->ufd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	conn_close_client(c);
}

/* The backend's 101 ended at uin[parsed] (its head queued to the client):
 * what followed it is the new protocol's, and so is everything after. */
static void tunnel_start(struct conn *c, size_t parsed)
{
	if (buf_add(&c->cout, c->uin + parsed, c->uin_len - parsed)) {
		conn_close_client(c);
		return;
	}
	c->uin_len = 0;
	request_finished(c);
	c->state = S_TUNNEL;
	/* no timeout: a switched connection (a WebSocket) may idle for
	 * long, as it would straight to the backend */
	c->deadline = c->up_deadline = 0;
	c->retain = false;
	if (!buf_pending(&c->uout))
		buf_reset(&c->uout);
}

static void tunnel_read(struct conn *c)
{
	while (!c->up_eof && buf_pending(&c->cout) < OUT_HIGH) {
		ssize_t n = recv(c->ufd, c->uin, UIN_SIZE, 0);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			tunnel_abort(c);
			return;
		}
		if (n == 0) {
			c->up_eof = true;
			break;
		}
		if (buf_add(&c->cout, c->uin, (size_t)n)) {
			tunnel_abort(c);
			return;
		}
		if ((size_t)n < UIN_SIZE)
			break; /* drained, most likely: epoll says if not */
	}
}

void tunnel_step(struct conn *c)
{
	/* an end goes on once every byte before it did */
	if (c->cin_eof && !c->cin_len && !buf_pending(&c->uout) && c->ufd >= 0 &&
	    !c->u_wr_shut) {
		shutdown(c->ufd, SHUT_WR);
		c->u_wr_shut = true;
	}
	if (c->up_eof && !buf_pending(&c->cout) && c->cfd >= 0 && !c->c_wr_shut) {
		shutdown(c->cfd, SHUT_WR);
		c->c_wr_shut = true;
	}
	/* the backend's connection, done both ways, has nothing more to say
	 * (and would wake epoll for ever: EPOLLHUP) */
	if (c->up_eof && c->u_wr_shut)
		upstream_close(c, false);
	if (c->c_wr_shut && c->ufd < 0)
		conn_close_client(c);
}

void upstream_read(struct conn *c)
{
	if (c->state == S_TUNNEL) {
		tunnel_read(c);
		return;
	}
	for (;;) {
		size_t parsed, fwd, room, head_end;
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
			/* reset: the response, if any, is cut; through the
			 * tunnel to a backend not reached, a failed connect */
			upstream_failed(c, unreached(c), 502);
			return;
		}
		if (n == 0 && unreached(c)) {
			upstream_failed(c, true, 502);
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
				if (c->status == 101 && !c->rq.upgrade) {
					/* a switch nobody asked for */
					upstream_failed(c, false, 502);
					return;
				}
				/* an upgrade the backend did not take: the client
				 * may already speak the protocol it asked for */
				if (c->rq.upgrade && c->status != 101)
					c->close_after = true;
				dmsc_l7_health_result(c->svc, c->backend, c->status);
				if ((c->status == 502 || c->status == 503) && c->idempotent &&
				    c->retain && c->rq.req_done && c->retries_left > 0) {
					upstream_failed(c, true, c->status);
					return;
				}
				c->resp_started = true;
				c->up_deadline = now_ns() + (uint64_t)opt.io_ms * 1000000;
				/* Paused in on_headers_complete, the parser stops on
				 * the head's last byte (its final LF), taken at the
				 * next call: the head ends one past `parsed`. */
				head_end = parsed + (parsed < c->uin_len && c->uin[parsed] == '\n');
				if (c->client10) {
					if (response_head_10(c, head_end)) {
						conn_close_client(c);
						return;
					}
					fwd = head_end; /* the head went rewritten */
				} else if (draining && c->status != 101 && !c->close_after &&
					   http_should_keep_alive(&c->sp)) {
					if (response_head_close(c, head_end)) {
						conn_close_client(c);
						return;
					}
					fwd = head_end;
				}
			}
		}
		if (!c->resp_head)
			continue; /* keep the partial head */
		/* everything up to `parsed` goes to the client; bytes past the
		 * message end are garbage (or a pipelining backend): dropped,
		 * and the connection is not reused */
		if (!c->dechunk && parsed > fwd && buf_add(&c->cout, c->uin + fwd, parsed - fwd)) {
			conn_close_client(c);
			return;
		}
		if (c->resp_done && c->status == 101) {
			tunnel_start(c, parsed);
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
