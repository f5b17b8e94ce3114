// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7's client side: the request parser's callbacks and the state
 * machine of a client connection (read, parse, reject, write, step).
 */
#define _GNU_SOURCE
#include "l7_proxy.h"

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

const struct dmsc_l7_http_hooks req_hooks = {
    .begin = on_req_begin,
    .body = on_req_body,
    .done = on_req_done,
};

/* ---- the client side ---------------------------------------------------- */
void conn_close_client(struct conn *c)
{
	if (c->cfd >= 0) {
		epoll_ctl(c->w->epfd, EPOLL_CTL_DEL, c->cfd, NULL);
		close(c->cfd);
		c->cfd = -1;
	}
}

void client_write(struct conn *c)
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

void reject(struct conn *c, int status)
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
	if (h2_move(c->w, fd, c->client, c->svc, c->svc_idx, c->cgroup, c->cin, c->cin_len)) {
		c->cin_len = c->cin_off = 0;
		return;
	}
	if (dmsc_l7_h2_start(&c->w->h2, fd, c->client, c->svc, c->svc_idx, c->cgroup, c->cin,
			     c->cin_len)) {
		close(fd);
		client_release(c->client);
		h2_unplace(c->w);
	}
	c->cin_len = c->cin_off = 0;
}

void client_parse(struct conn *c)
{
	if (c->state == S_TUNNEL) {
		/* after a 101: the client's bytes go as they are (decision 82) */
		if (c->cin_len > c->cin_off && buf_pending(&c->uout) < OUT_HIGH) {
			if (buf_add(&c->uout, c->cin + c->cin_off, c->cin_len - c->cin_off)) {
				tunnel_abort(c);
				return;
			}
			c->cin_len = c->cin_off = 0;
		}
		return;
	}
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
			c->idle_since = now_ns();
			c->deadline = c->idle_since + (uint64_t)opt.idle_ms * 1000000;
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

void client_read(struct conn *c)
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
		c->spoke = true;
		if (c->state == S_IDLE)
			c->deadline = now_ns() + (uint64_t)opt.head_ms * 1000000;
		if ((size_t)n < room)
			break; /* drained, most likely: epoll says if not */
	}
}

/* One step after any event: parse, write, decide to close. */
void conn_step(struct conn *c)
{
	if (c->cfd >= 0)
		client_parse(c);
	if (c->ufd >= 0 && !c->connecting && buf_pending(&c->uout)) {
		upstream_write(c);
		/* the backend took some: parse the body bytes waiting */
		if (c->cfd >= 0 && c->cin_len && (c->state == S_UPSTREAM || c->state == S_TUNNEL) &&
		    buf_pending(&c->uout) < OUT_HIGH) {
			client_parse(c);
			if (c->ufd >= 0 && !c->connecting && buf_pending(&c->uout))
				upstream_write(c);
		}
	}
	if (c->cfd >= 0 && buf_pending(&c->cout))
		client_write(c);
	if (c->cfd >= 0 && c->state == S_TUNNEL)
		tunnel_step(c);
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
