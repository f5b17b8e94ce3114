// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* HTTP/2 (h2c) through dmsc-l7: l7_h2.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "l7_h2.h"
#include "l7_health.h"

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24
#define H2_READ_SIZE (16 * 1024)
#define H2_READS_PER_EVENT 4
#define H2_MAX_HEADERS 64

struct h2_buf {
	char *p;
	size_t off, len, cap;
};

struct h2_hdrs {
	nghttp2_nv nv[H2_MAX_HEADERS];
	size_t n;
	char arena[DMSC_L7_H2_HEADER_BYTES];
	size_t used;
	bool overflow;
};

struct h2_up;

struct h2_stream {
	struct dmsc_l7_h2 *hc;
	struct h2_stream *next;
	int32_t cid; /* on the client's connection */
	int32_t uid; /* on up's; -1: not sent */
	struct h2_up *up;
	struct h2_hdrs req;
	struct h2_hdrs *resp, *trailers; /* allocated when they come */
	struct h2_buf req_body, resp_body;
	bool req_end, resp_end;
	bool req_body_taken; /* some request body went to a backend: no retry */
	bool resp_submitted; /* response headers went to the client */
	bool resp_final;     /* the backend's final (non-1xx) response headers came */
	bool c_closed, u_closed;
	bool finished;
	int route, backend, status, grpc_status;
	uint64_t tried;
	uint32_t retries_left, attempts, timeout_ms;
	uint64_t t_req, deadline;
	bool idempotent;
};

struct h2_up {
	struct ep ep; /* EP_H2_UP */
	struct dmsc_l7_h2 *hc;
	int fd;
	int backend;
	nghttp2_session *s;
	struct h2_buf out;
	bool connecting, dead;
	uint32_t ev;
	struct h2_up *dead_next;
};

struct dmsc_l7_h2 {
	struct ep ep; /* EP_H2_CLIENT */
	struct dmsc_l7_h2_env *env;
	struct dmsc_l7_h2 *prev, *next, *dead_next;
	int fd;
	uint32_t client_id;
	const struct dmsc_l7_service *svc;
	size_t svc_idx;
	nghttp2_session *s;
	struct h2_buf out;
	struct h2_stream *streams;
	struct h2_up *ups[DMSC_L7_H2_MAX_UPSTREAMS];
	uint64_t idle_since;
	uint32_t ev;
	bool goaway, closed, eof;
};

static uint64_t h2_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int dmsc_l7_h2_preface(const char *buf, size_t len)
{
	size_t n = len < H2_PREFACE_LEN ? len : H2_PREFACE_LEN;

	if (memcmp(buf, H2_PREFACE, n) != 0)
		return 0;
	return len >= H2_PREFACE_LEN ? 1 : -1;
}

/* ---- buffers ------------------------------------------------------------ */
static int hb_add(struct h2_buf *b, const void *p, size_t n)
{
	if (b->off && b->off == b->len)
		b->off = b->len = 0;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *q;

		if (b->off) {
			memmove(b->p, b->p + b->off, b->len - b->off);
			b->len -= b->off;
			b->off = 0;
		}
		while (cap < b->len + n)
			cap *= 2;
		if (cap != b->cap) {
			q = realloc(b->p, cap);
			if (!q)
				return -ENOMEM;
			b->p = q;
			b->cap = cap;
		}
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

static size_t hb_pending(const struct h2_buf *b)
{
	return b->len - b->off;
}

/* Up to len of b's pending bytes copied to buf and taken: how many. */
static size_t hb_take(struct h2_buf *b, uint8_t *buf, size_t len)
{
	size_t n = hb_pending(b);

	if (n > len)
		n = len;
	if (n) { /* b->p may be NULL while nothing is pending */
		memcpy(buf, b->p + b->off, n);
		b->off += n;
	}
	return n;
}

static void hb_free(struct h2_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static int hdrs_add(struct h2_hdrs *h, const uint8_t *name, size_t nlen, const uint8_t *value,
		    size_t vlen)
{
	nghttp2_nv *nv;

	if (h->n == H2_MAX_HEADERS || h->used + nlen + vlen + 2 > sizeof(h->arena)) {
		h->overflow = true;
		return -ENOSPC;
	}
	nv = &h->nv[h->n++];
	nv->name = (uint8_t *)h->arena + h->used;
	memcpy(nv->name, name, nlen);
	nv->name[nlen] = '\0';
	h->used += nlen + 1;
	nv->value = (uint8_t *)h->arena + h->used;
	memcpy(nv->value, value, vlen);
	nv->value[vlen] = '\0';
	h->used += vlen + 1;
	nv->namelen = nlen;
	nv->valuelen = vlen;
	nv->flags = NGHTTP2_NV_FLAG_NONE;
	return 0;
}

static const nghttp2_nv *hdrs_get(const struct h2_hdrs *h, const char *name)
{
	size_t i;

	for (i = 0; h && i < h->n; i++)
		if (!strcmp((const char *)h->nv[i].name, name))
			return &h->nv[i];
	return NULL;
}

/* ---- streams -------------------------------------------------------------- */
static void conn_close(struct dmsc_l7_h2 *hc);
static void up_failed(struct h2_up *up);
static void stream_dispatch(struct h2_stream *st);

static void stream_finish(struct h2_stream *st)
{
	struct dmsc_l7_h2_env *env = st->hc->env;

	if (st->finished || !st->t_req)
		return;
	st->finished = true;
	env->finished(env->worker, st->hc->svc, st->hc->svc_idx, st->route, st->status,
		      h2_now() - st->t_req, st->attempts, st->grpc_status);
}

static void stream_free(struct h2_stream *st)
{
	struct h2_stream **pp;

	for (pp = &st->hc->streams; *pp; pp = &(*pp)->next)
		if (*pp == st) {
			*pp = st->next;
			break;
		}
	stream_finish(st);
	if (st->up && st->uid > 0 && st->up->s)
		nghttp2_session_set_stream_user_data(st->up->s, st->uid, NULL);
	hb_free(&st->req_body);
	hb_free(&st->resp_body);
	free(st->resp);
	free(st->trailers);
	free(st);
}

/* Both sides done with it? */
static void stream_maybe_free(struct h2_stream *st)
{
	if (st->c_closed && (st->u_closed || st->uid < 0))
		stream_free(st);
}

/* A response of the helper's own (429, 502, 503, 504), headers only. */
static void respond_local(struct h2_stream *st, int status)
{
	char code[4];
	nghttp2_nv nv[] = {
	    {(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE},
	    {(uint8_t *)"content-length", (uint8_t *)"0", 14, 1, NGHTTP2_NV_FLAG_NONE},
	};

	if (st->resp_submitted || st->c_closed)
		return;
	snprintf(code, sizeof(code), "%03d", status);
	st->status = status;
	st->resp_submitted = true;
	st->resp_end = true;
	if (nghttp2_submit_response(st->hc->s, st->cid, nv, 2, NULL))
		nghttp2_submit_rst_stream(st->hc->s, NGHTTP2_FLAG_NONE, st->cid,
					  NGHTTP2_INTERNAL_ERROR);
	stream_finish(st);
}

/* ---- data providers: each side reads what the other side received ------ */
/* The client's response body, from what the backend sent. */
static ssize_t resp_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct h2_stream *st = src->ptr;
	size_t n = hb_take(&st->resp_body, buf, len);

	(void)s;
	(void)sid;
	(void)user;
	if (n) {
		/* taken: now the backend may send this much more */
		if (st->up && st->up->s && st->uid > 0)
			nghttp2_session_consume(st->up->s, st->uid, n);
	}
	if (hb_pending(&st->resp_body))
		return (ssize_t)n;
	if (!st->resp_end)
		return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (st->trailers && st->trailers->n) {
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		nghttp2_submit_trailer(st->hc->s, st->cid, st->trailers->nv, st->trailers->n);
	}
	return (ssize_t)n;
}

/* The backend's request body, from what the client sent. */
static ssize_t req_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
			uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct h2_stream *st = src->ptr;
	size_t n = hb_take(&st->req_body, buf, len);

	(void)s;
	(void)sid;
	(void)user;
	if (n) {
		st->req_body_taken = true;
		if (!st->c_closed)
			nghttp2_session_consume(st->hc->s, st->cid, n);
	}
	if (hb_pending(&st->req_body))
		return (ssize_t)n;
	if (!st->req_end)
		return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* ---- the backend side ---------------------------------------------------- */
static int up_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
			size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	struct h2_hdrs **h;

	(void)flags;
	(void)user;
	if (!st || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	h = st->resp_final ? &st->trailers : &st->resp;
	if (!*h && !(*h = calloc(1, sizeof(**h))))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	hdrs_add(*h, name, nlen, value, vlen);
	return 0;
}

static void grpc_status_of(struct h2_stream *st, const struct h2_hdrs *h)
{
	const nghttp2_nv *g = hdrs_get(h, "grpc-status");

	if (g)
		st->grpc_status = atoi((const char *)g->value);
}

static int up_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	nghttp2_data_provider prd;
	const nghttp2_nv *stv;

	(void)user;
	if (!st)
		return 0;
	/* the final response's headers: the first HEADERS, or the one after
	 * a 1xx (which nghttp2 may class as HCAT_HEADERS); later ones are
	 * trailers */
	if (f->hd.type == NGHTTP2_HEADERS && st->resp && !st->resp_final &&
	    (f->headers.cat == NGHTTP2_HCAT_RESPONSE || f->headers.cat == NGHTTP2_HCAT_HEADERS)) {
		stv = hdrs_get(st->resp, ":status");
		st->status = stv ? atoi((const char *)stv->value) : 502;
		if (st->status >= 100 && st->status < 200) {
			free(st->resp); /* interim: not passed on */
			st->resp = NULL;
			return 0;
		}
		st->resp_final = true;
		dmsc_l7_health_result(st->hc->svc, st->backend, st->status);
		grpc_status_of(st, st->resp);
		st->resp_end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
		if (st->c_closed || st->resp_submitted)
			return 0;
		st->resp_submitted = true;
		prd.source.ptr = st;
		prd.read_callback = resp_read;
		if (st->resp->overflow ||
		    nghttp2_submit_response(st->hc->s, st->cid, st->resp->nv, st->resp->n,
					    st->resp_end ? NULL : &prd)) {
			st->status = 502;
			nghttp2_submit_rst_stream(st->hc->s, NGHTTP2_FLAG_NONE, st->cid,
						  NGHTTP2_INTERNAL_ERROR);
		}
		if (st->resp_end)
			stream_finish(st);
		return 0;
	}
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		st->resp_end = true;
		if (st->trailers)
			grpc_status_of(st, st->trailers);
		if (!st->c_closed)
			nghttp2_session_resume_data(st->hc->s, st->cid);
	}
	return 0;
}

static int up_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
		      size_t len, void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, sid);

	(void)flags;
	(void)user;
	if (!st || st->c_closed) {
		/* nobody reads it */
		if (!st || nghttp2_session_consume(s, sid, len))
			nghttp2_session_consume_connection(s, len);
		return 0;
	}
	if (hb_add(&st->resp_body, data, len))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	nghttp2_session_resume_data(st->hc->s, st->cid);
	return 0;
}

static int up_on_close(nghttp2_session *s, int32_t sid, uint32_t error, void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, sid);

	(void)user;
	if (!st)
		return 0;
	st->u_closed = true;
	if (error != NGHTTP2_NO_ERROR && !st->c_closed) {
		if (!st->resp_submitted)
			respond_local(st, 502);
		else if (!st->resp_end)
			nghttp2_submit_rst_stream(st->hc->s, NGHTTP2_FLAG_NONE, st->cid,
						  NGHTTP2_INTERNAL_ERROR);
	}
	nghttp2_session_set_stream_user_data(s, sid, NULL);
	st->up = NULL;
	stream_maybe_free(st);
	return 0;
}

static ssize_t no_send(nghttp2_session *s, const uint8_t *d, size_t l, int f, void *u)
{
	(void)s;
	(void)d;
	(void)l;
	(void)f;
	(void)u;
	return NGHTTP2_ERR_CALLBACK_FAILURE; /* mem_send only */
}

static nghttp2_session_callbacks *up_cbs, *client_cbs;
static nghttp2_option *h2_opt;

static int set_window(nghttp2_session *s)
{
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, DMSC_L7_H2_MAX_STREAMS},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, DMSC_L7_H2_STREAM_WINDOW},
	};

	if (nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 2))
		return -ENOMEM;
	return nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0,
						     DMSC_L7_H2_CONN_WINDOW)
		   ? -ENOMEM
		   : 0;
}

static void ep_want(struct dmsc_l7_h2_env *env, int fd, struct ep *e, uint32_t *cur, uint32_t want)
{
	struct epoll_event ev = {.events = want, .data.ptr = e};

	if (*cur == want)
		return;
	epoll_ctl(env->epfd, *cur ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
	*cur = want;
}

static struct h2_up *up_get(struct dmsc_l7_h2 *hc, int backend)
{
	const struct dmsc_policy_backend *b = &hc->svc->src->backends[backend];
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct h2_up *up = NULL;
	int i, slot = -1, one = 1;

	for (i = 0; i < DMSC_L7_H2_MAX_UPSTREAMS; i++) {
		if (hc->ups[i] && !hc->ups[i]->dead && hc->ups[i]->backend == backend)
			return hc->ups[i];
		if (!hc->ups[i] && slot < 0)
			slot = i;
	}
	if (slot < 0)
		return NULL;
	up = calloc(1, sizeof(*up));
	if (!up)
		return NULL;
	up->ep.kind = EP_H2_UP;
	up->hc = hc;
	up->backend = backend;
	up->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (up->fd < 0 || hc->env->own_socket(up->fd) ||
	    nghttp2_session_client_new2(&up->s, up_cbs, up, h2_opt) || set_window(up->s))
		goto fail;
	setsockopt(up->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	sa.sin_addr.s_addr = b->addr;
	sa.sin_port = htons(b->port);
	if (connect(up->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno != EINPROGRESS)
			goto fail;
		up->connecting = true;
	}
	ep_want(hc->env, up->fd, &up->ep, &up->ev, EPOLLOUT | EPOLLIN);
	hc->ups[slot] = up;
	return up;
fail:
	if (up->s)
		nghttp2_session_del(up->s);
	if (up->fd >= 0)
		close(up->fd);
	free(up);
	return NULL;
}

static void up_free(struct h2_up *up)
{
	int i;

	for (i = 0; i < DMSC_L7_H2_MAX_UPSTREAMS; i++)
		if (up->hc->ups[i] == up)
			up->hc->ups[i] = NULL;
	if (up->fd >= 0) {
		epoll_ctl(up->hc->env->epfd, EPOLL_CTL_DEL, up->fd, NULL);
		close(up->fd);
	}
	if (up->s)
		nghttp2_session_del(up->s);
	hb_free(&up->out);
	/* events of this batch may still name it: freed after it */
	up->fd = -1;
	up->s = NULL;
	up->dead = true;
	up->dead_next = up->hc->env->dead_ups;
	up->hc->env->dead_ups = up;
}

/* Sends the stream on an attempt: the next backend by weight. */
static void stream_send(struct h2_stream *st)
{
	struct dmsc_l7_h2 *hc = st->hc;
	const struct dmsc_l7_route *route = st->route >= 0 ? &hc->svc->routes[st->route] : NULL;
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = req_read};
	int idx;

	idx = dmsc_l7_health_pick(hc->svc, route ? &route->pick : &hc->svc->pick,
				  hc->env->rnd(hc->env->worker), st->tried);
	if (idx < 0) {
		respond_local(st, 503);
		return;
	}
	st->backend = idx;
	if (idx < 64)
		st->tried |= 1ull << idx;
	st->attempts++;
	st->deadline = h2_now() + (uint64_t)st->timeout_ms * 1000000;
	st->up = up_get(hc, idx);
	if (!st->up) {
		respond_local(st, 502);
		return;
	}
	st->uid = nghttp2_submit_request(st->up->s, NULL, st->req.nv, st->req.n,
					 st->req_end && !hb_pending(&st->req_body) ? NULL : &prd, st);
	if (st->uid < 0) {
		st->up = NULL;
		respond_local(st, 502);
	}
}

/* The backend connection failed before it carried anything: its streams
 * go elsewhere while their retries last, or are answered 502. */
static void up_failed(struct h2_up *up)
{
	struct h2_stream *st, *next;

	for (st = up->hc->streams; st; st = next) {
		next = st->next;
		if (st->up != up)
			continue;
		if (up->s && st->uid > 0)
			nghttp2_session_set_stream_user_data(up->s, st->uid, NULL);
		st->up = NULL;
		st->uid = -1;
		if (st->c_closed) {
			stream_maybe_free(st);
			continue;
		}
		if (!st->resp_submitted && !st->req_body_taken && st->retries_left > 0) {
			st->retries_left--;
			up->dead = true; /* up_get must not hand it out again */
			stream_send(st);
		} else if (!st->resp_submitted) {
			respond_local(st, 502);
		} else {
			nghttp2_submit_rst_stream(up->hc->s, NGHTTP2_FLAG_NONE, st->cid,
						  NGHTTP2_INTERNAL_ERROR);
		}
	}
	up_free(up);
}

/* ---- the client side ----------------------------------------------------- */
static int c_on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct dmsc_l7_h2 *hc = user;
	struct h2_stream *st;

	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = calloc(1, sizeof(*st));
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	st->hc = hc;
	st->cid = f->hd.stream_id;
	st->uid = -1;
	st->route = -1;
	st->backend = -1;
	st->grpc_status = -1;
	st->next = hc->streams;
	hc->streams = st;
	nghttp2_session_set_stream_user_data(s, st->cid, st);
	return 0;
}

static int c_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
		       const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

	(void)flags;
	(void)user;
	if (!st || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0; /* request trailers: not forwarded */
	hdrs_add(&st->req, name, nlen, value, vlen);
	return 0;
}

static int c_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

	(void)user;
	if (!st)
		return 0;
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		st->req_end = true;
		if (st->up && st->uid > 0)
			nghttp2_session_resume_data(st->up->s, st->uid);
	}
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
		stream_dispatch(st);
	return 0;
}

static int c_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
		     void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, sid);

	(void)flags;
	(void)user;
	if (!st || st->u_closed || st->resp_end) {
		if (!st || nghttp2_session_consume(s, sid, len))
			nghttp2_session_consume_connection(s, len);
		return 0;
	}
	if (hb_add(&st->req_body, data, len))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (st->up && st->uid > 0)
		nghttp2_session_resume_data(st->up->s, st->uid);
	return 0;
}

static int c_on_close(nghttp2_session *s, int32_t sid, uint32_t error, void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, sid);

	(void)user;
	if (!st)
		return 0;
	st->c_closed = true;
	if (!st->finished && error != NGHTTP2_NO_ERROR && !st->status)
		st->status = 499; /* the client gave up */
	if (st->up && st->uid > 0 && !st->u_closed)
		nghttp2_submit_rst_stream(st->up->s, NGHTTP2_FLAG_NONE, st->uid, NGHTTP2_CANCEL);
	stream_maybe_free(st);
	return 0;
}

/* grpc-timeout (gRPC over HTTP/2): an integer and a unit, H M S m u n. */
static uint64_t grpc_timeout_ms(const nghttp2_nv *nv)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i + 1 < nv->valuelen && i < 8; i++) {
		if (nv->value[i] < '0' || nv->value[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(nv->value[i] - '0');
	}
	if (i + 1 != nv->valuelen)
		return 0;
	switch (nv->value[i]) {
	case 'H': return v * 3600000;
	case 'M': return v * 60000;
	case 'S': return v * 1000;
	case 'm': return v;
	case 'u': return (v + 999) / 1000;
	case 'n': return (v + 999999) / 1000000;
	}
	return 0;
}

/* Routes a stream whose request headers are complete. */
static void stream_dispatch(struct h2_stream *st)
{
	struct dmsc_l7_h2 *hc = st->hc;
	struct dmsc_l7_header hv[H2_MAX_HEADERS];
	struct dmsc_l7_request req = {0};
	const struct dmsc_l7_route *route;
	const nghttp2_nv *m = hdrs_get(&st->req, ":method"), *p = hdrs_get(&st->req, ":path");
	const nghttp2_nv *gt = hdrs_get(&st->req, "grpc-timeout");
	uint64_t now = h2_now(), gms;
	size_t i, n = 0;

	st->t_req = now;
	if (st->req.overflow || !m || !p) {
		respond_local(st, st->req.overflow ? 431 : 400);
		return;
	}
	req.method = (const char *)m->value;
	req.method_len = m->valuelen;
	dmsc_l7_target_path((const char *)p->value, p->valuelen, &req.path, &req.path_len);
	for (i = 0; i < st->req.n; i++) {
		if (st->req.nv[i].name[0] == ':')
			continue;
		hv[n].name = (const char *)st->req.nv[i].name;
		hv[n].name_len = st->req.nv[i].namelen;
		hv[n].value = (const char *)st->req.nv[i].value;
		hv[n].value_len = st->req.nv[i].valuelen;
		n++;
	}
	req.headers = hv;
	req.n_headers = n;
	st->route = dmsc_l7_route_match(hc->svc, &req);
	route = st->route >= 0 ? &hc->svc->routes[st->route] : NULL;
	if (hc->svc->has_request_limit && hc->env->bucket_wait(hc->svc_idx, now)) {
		respond_local(st, 429);
		return;
	}
	st->retries_left = route && route->has_retries ? route->retries : hc->env->default_retries;
	st->timeout_ms =
	    route && route->has_timeout_ms ? route->timeout_ms : hc->env->default_timeout_ms;
	/* a gRPC deadline shorter than the route's wins */
	gms = gt ? grpc_timeout_ms(gt) : 0;
	if (gms && gms < st->timeout_ms)
		st->timeout_ms = (uint32_t)gms;
	stream_send(st);
}

/* ---- I/O -------------------------------------------------------------------- */
/* Writes what the session has for fd, as far as the socket takes it.
 * -1: the connection is broken. */
static int flush(nghttp2_session *s, int fd, struct h2_buf *out)
{
	for (;;) {
		if (!hb_pending(out)) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(s, &data);

			if (n < 0)
				return -1;
			if (n == 0)
				return 0;
			out->off = out->len = 0;
			if (hb_add(out, data, (size_t)n))
				return -1;
		}
		while (hb_pending(out)) {
			ssize_t w = send(fd, out->p + out->off, hb_pending(out), MSG_NOSIGNAL);

			if (w < 0)
				return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
			out->off += (size_t)w;
		}
	}
}

/* After any event of the connection: everything that can go goes, and
 * epoll watches what is left to wait for. */
static void conn_pump(struct dmsc_l7_h2 *hc)
{
	int i;

	if (hc->closed)
		return;
	for (i = 0; i < DMSC_L7_H2_MAX_UPSTREAMS; i++) {
		struct h2_up *up = hc->ups[i];

		if (!up)
			continue;
		if (up->dead) {
			hc->ups[i] = NULL;
			continue;
		}
		if (!up->connecting && flush(up->s, up->fd, &up->out) < 0) {
			up_failed(up);
			continue;
		}
		ep_want(hc->env, up->fd, &up->ep, &up->ev,
			EPOLLIN | EPOLLRDHUP |
			    (up->connecting || hb_pending(&up->out) ? EPOLLOUT : 0));
	}
	if (flush(hc->s, hc->fd, &hc->out) < 0) {
		conn_close(hc);
		return;
	}
	if (!nghttp2_session_want_read(hc->s) && !nghttp2_session_want_write(hc->s) &&
	    !hb_pending(&hc->out)) {
		conn_close(hc);
		return;
	}
	ep_want(hc->env, hc->fd, &hc->ep, &hc->ev,
		EPOLLIN | EPOLLRDHUP | (hb_pending(&hc->out) ? EPOLLOUT : 0));
	if (hc->streams)
		hc->idle_since = 0;
	else if (!hc->idle_since)
		hc->idle_since = h2_now();
}

static int feed(nghttp2_session *s, int fd)
{
	char buf[H2_READ_SIZE];
	int i;

	for (i = 0; i < H2_READS_PER_EVENT; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n == 0)
			return -1;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		if (nghttp2_session_mem_recv(s, (const uint8_t *)buf, (size_t)n) < 0)
			return -1;
	}
	return 0;
}

void dmsc_l7_h2_event(struct ep *e, uint32_t events)
{
	struct dmsc_l7_h2 *hc;

	if (e->kind == EP_H2_UP) {
		struct h2_up *up = (struct h2_up *)e;

		hc = up->hc;
		if (up->dead || hc->closed)
			return;
		if (up->connecting) {
			int err = 0;
			socklen_t len = sizeof(err);

			if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
				return;
			if (getsockopt(up->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
				dmsc_l7_health_result(hc->svc, up->backend, 0);
				up_failed(up);
				conn_pump(hc);
				return;
			}
			up->connecting = false;
		}
		if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
		    feed(up->s, up->fd) < 0)
			up_failed(up);
		conn_pump(hc);
		return;
	}
	hc = (struct dmsc_l7_h2 *)e;
	if (hc->closed)
		return;
	if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && feed(hc->s, hc->fd) < 0) {
		conn_close(hc);
		return;
	}
	conn_pump(hc);
}

static void conn_close(struct dmsc_l7_h2 *hc)
{
	struct dmsc_l7_h2_env *env = hc->env;
	int i;

	if (hc->closed)
		return;
	hc->closed = true;
	while (hc->streams) {
		hc->streams->c_closed = hc->streams->u_closed = true;
		stream_free(hc->streams);
	}
	for (i = 0; i < DMSC_L7_H2_MAX_UPSTREAMS; i++)
		if (hc->ups[i])
			up_free(hc->ups[i]);
	epoll_ctl(env->epfd, EPOLL_CTL_DEL, hc->fd, NULL);
	close(hc->fd);
	hc->fd = -1;
	nghttp2_session_del(hc->s);
	hc->s = NULL;
	hb_free(&hc->out);
	env->release_client(hc->client_id);
	if (hc->prev)
		hc->prev->next = hc->next;
	else
		env->conns = hc->next;
	if (hc->next)
		hc->next->prev = hc->prev;
	env->n_conns--;
	hc->dead_next = env->dead;
	env->dead = hc;
}

static int callbacks_init(void)
{
	if (client_cbs)
		return 0;
	if (nghttp2_option_new(&h2_opt))
		return -ENOMEM;
	/* WINDOW_UPDATE only for what the other side took (flow control end
	 * to end: l7_h2.h) */
	nghttp2_option_set_no_auto_window_update(h2_opt, 1);
	if (nghttp2_session_callbacks_new(&client_cbs) || nghttp2_session_callbacks_new(&up_cbs))
		return -ENOMEM;
	nghttp2_session_callbacks_set_send_callback(client_cbs, no_send);
	nghttp2_session_callbacks_set_on_begin_headers_callback(client_cbs, c_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(client_cbs, c_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(client_cbs, c_on_frame);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(client_cbs, c_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(client_cbs, c_on_close);
	nghttp2_session_callbacks_set_send_callback(up_cbs, no_send);
	nghttp2_session_callbacks_set_on_header_callback(up_cbs, up_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(up_cbs, up_on_frame);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(up_cbs, up_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(up_cbs, up_on_close);
	return 0;
}

int dmsc_l7_h2_start(struct dmsc_l7_h2_env *env, int cfd, uint32_t client_id,
		     const struct dmsc_l7_service *svc, size_t svc_idx, const char *in, size_t len)
{
	static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
	struct dmsc_l7_h2 *hc;
	int err;

	pthread_mutex_lock(&once);
	err = callbacks_init();
	pthread_mutex_unlock(&once);
	if (err)
		return err;
	hc = calloc(1, sizeof(*hc));
	if (!hc)
		return -ENOMEM;
	hc->ep.kind = EP_H2_CLIENT;
	hc->env = env;
	hc->fd = cfd;
	hc->client_id = client_id;
	hc->svc = svc;
	hc->svc_idx = svc_idx;
	if (nghttp2_session_server_new2(&hc->s, client_cbs, hc, h2_opt) || set_window(hc->s)) {
		if (hc->s)
			nghttp2_session_del(hc->s);
		free(hc);
		return -ENOMEM;
	}
	hc->next = env->conns;
	if (env->conns)
		env->conns->prev = hc;
	env->conns = hc;
	env->n_conns++;
	if (len && nghttp2_session_mem_recv(hc->s, (const uint8_t *)in, len) < 0) {
		conn_close(hc);
		return 0; /* closed: the client's fd went with it */
	}
	conn_pump(hc);
	return 0;
}

void dmsc_l7_h2_sweep(struct dmsc_l7_h2_env *env, uint64_t now, bool draining)
{
	struct dmsc_l7_h2 *hc, *next;
	struct h2_stream *st, *snext;

	for (hc = env->conns; hc; hc = next) {
		next = hc->next;
		for (st = hc->streams; st; st = snext) {
			snext = st->next;
			if (st->resp_submitted || st->c_closed || !st->deadline || now < st->deadline)
				continue;
			/* no answer within the route's timeout_ms (or grpc-timeout) */
			if (st->up && st->uid > 0 && !st->u_closed)
				nghttp2_submit_rst_stream(st->up->s, NGHTTP2_FLAG_NONE, st->uid,
							  NGHTTP2_CANCEL);
			respond_local(st, 504);
		}
		if (draining && !hc->goaway) {
			hc->goaway = true;
			nghttp2_submit_goaway(hc->s, NGHTTP2_FLAG_NONE,
					      nghttp2_session_get_last_proc_stream_id(hc->s),
					      NGHTTP2_NO_ERROR, NULL, 0);
		}
		if (!hc->streams && hc->idle_since &&
		    (draining || now - hc->idle_since >= (uint64_t)env->idle_ms * 1000000)) {
			if (!hc->goaway) {
				hc->goaway = true;
				nghttp2_submit_goaway(hc->s, NGHTTP2_FLAG_NONE,
						      nghttp2_session_get_last_proc_stream_id(hc->s),
						      NGHTTP2_NO_ERROR, NULL, 0);
			}
			conn_pump(hc);
			if (!hc->closed)
				conn_close(hc);
			continue;
		}
		conn_pump(hc);
	}
}

void dmsc_l7_h2_reap(struct dmsc_l7_h2_env *env)
{
	struct dmsc_l7_h2 *hc;

	struct h2_up *up;

	while ((up = env->dead_ups)) {
		env->dead_ups = up->dead_next;
		free(up);
	}
	while ((hc = env->dead)) {
		env->dead = hc->dead_next;
		free(hc);
	}
}

void dmsc_l7_h2_close_all(struct dmsc_l7_h2_env *env)
{
	while (env->conns)
		conn_close(env->conns);
	dmsc_l7_h2_reap(env);
}
