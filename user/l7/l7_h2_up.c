// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* dmsc-l7's HTTP/2: the backend side (l7_h2_int.h). */
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

#include "l7_h2_int.h"

/* ---- the backend side ---------------------------------------------------- */
int l7h2_up_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
		      const uint8_t *value, size_t vlen, uint8_t flags, void *user)
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
	l7h2_hdrs_add(*h, name, nlen, value, vlen);
	return 0;
}

static void grpc_status_of(struct h2_stream *st, const struct h2_hdrs *h)
{
	const nghttp2_nv *g = l7h2_hdrs_get(h, "grpc-status");

	if (g)
		st->grpc_status = atoi((const char *)g->value);
}

/*
 * The backend's final response headers came and none went to the client:
 * an idempotent request (its method, or its route's "idempotent") answered
 * 502 or 503, or a gRPC UNAVAILABLE (14) trailers-only answer on an
 * "idempotent" route, goes to another backend while its retries last and
 * its body was kept whole. true: sent again, this answer dropped.
 */
static bool stream_again(struct h2_stream *st)
{
	bool unavailable = st->grpc_status == 14 && st->resp_end;

	if (!st->replay || !st->retries_left || !st->up ||
	    !(st->status == 502 || st->status == 503 || unavailable))
		return false;
	nghttp2_submit_rst_stream(st->up->s, NGHTTP2_FLAG_NONE, st->uid, NGHTTP2_CANCEL);
	nghttp2_session_set_stream_user_data(st->up->s, st->uid, NULL);
	st->up = NULL;
	st->uid = -1;
	st->retries_left--;
	l7h2_hdrs_drop(&st->resp);
	l7h2_hdrs_drop(&st->trailers);
	st->resp_final = st->resp_end = false;
	st->status = 0;
	st->grpc_status = -1;
	l7h2_hb_free(&st->resp_body);
	l7h2_hb_free(&st->req_body);
	if (st->req_copy.len && l7h2_hb_add(&st->req_body, st->req_copy.p, st->req_copy.len)) {
		l7h2_respond_local(st, 502);
		return true;
	}
	st->req_body_taken = false;
	st->req_sent = 0;
	l7h2_stream_send(st);
	return true;
}

int l7h2_up_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *user)
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
		stv = l7h2_hdrs_get(st->resp, ":status");
		st->status = stv ? atoi((const char *)stv->value) : 502;
		if (st->status >= 100 && st->status < 200) {
			l7h2_hdrs_drop(&st->resp); /* interim: not passed on */
			return 0;
		}
		st->resp_final = true;
		dmsc_l7_health_result(st->hc->svc, st->backend, st->status);
		grpc_status_of(st, st->resp);
		st->resp_end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
		if (st->c_closed || st->resp_submitted)
			return 0;
		if (stream_again(st))
			return 0;
		l7h2_copy_drop(st);
		st->resp_submitted = true;
		prd.source.ptr = st;
		prd.read_callback = l7h2_resp_read;
		if (st->resp->overflow ||
		    nghttp2_submit_response(st->hc->s, st->cid, st->resp->nv, st->resp->n,
					    st->resp_end ? NULL : &prd)) {
			st->status = 502;
			nghttp2_submit_rst_stream(st->hc->s, NGHTTP2_FLAG_NONE, st->cid,
						  NGHTTP2_INTERNAL_ERROR);
		}
		if (st->resp_end)
			l7h2_stream_finish(st);
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

int l7h2_up_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
		    void *user)
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
	if (l7h2_hb_add(&st->resp_body, data, len))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	nghttp2_session_resume_data(st->hc->s, st->cid);
	return 0;
}

int l7h2_up_on_close(nghttp2_session *s, int32_t sid, uint32_t error, void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, sid);

	(void)user;
	if (!st)
		return 0;
	st->u_closed = true;
	if (error != NGHTTP2_NO_ERROR && !st->c_closed) {
		if (!st->resp_submitted)
			l7h2_respond_local(st, 502);
		else if (!st->resp_end)
			nghttp2_submit_rst_stream(st->hc->s, NGHTTP2_FLAG_NONE, st->cid,
						  NGHTTP2_INTERNAL_ERROR);
	}
	nghttp2_session_set_stream_user_data(s, sid, NULL);
	st->up = NULL;
	l7h2_stream_maybe_free(st);
	return 0;
}

ssize_t l7h2_no_send(nghttp2_session *s, const uint8_t *d, size_t l, int f, void *u)
{
	(void)s;
	(void)d;
	(void)l;
	(void)f;
	(void)u;
	return NGHTTP2_ERR_CALLBACK_FAILURE; /* mem_send only */
}

nghttp2_session_callbacks *l7h2_up_cbs, *l7h2_client_cbs;
nghttp2_option *l7h2_h2_opt;

int l7h2_set_window(nghttp2_session *s)
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

void l7h2_ep_want(struct dmsc_l7_h2_env *env, int fd, struct ep *e, uint32_t *cur, uint32_t want)
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
	    nghttp2_session_client_new2(&up->s, l7h2_up_cbs, up, l7h2_h2_opt) ||
	    l7h2_set_window(up->s))
		goto fail;
	setsockopt(up->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	sa.sin_addr.s_addr = b->addr;
	sa.sin_port = htons(b->port);
	if (connect(up->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno != EINPROGRESS)
			goto fail;
		up->connecting = true;
	}
	l7h2_ep_want(hc->env, up->fd, &up->ep, &up->ev, EPOLLOUT | EPOLLIN);
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

void l7h2_up_free(struct h2_up *up)
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
	l7h2_hb_free(&up->out);
	/* events of this batch may still name it: freed after it */
	up->fd = -1;
	up->s = NULL;
	up->dead = true;
	up->dead_next = up->hc->env->dead_ups;
	up->hc->env->dead_ups = up;
}

/* Sends the stream on an attempt: the next backend by weight. */
void l7h2_stream_send(struct h2_stream *st)
{
	struct dmsc_l7_h2 *hc = st->hc;
	const struct dmsc_l7_route *route = st->route >= 0 ? &hc->svc->routes[st->route] : NULL;
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = l7h2_req_read};
	int idx;

	idx = dmsc_l7_health_pick(hc->svc, route ? &route->pick : &hc->svc->pick,
				  hc->env->rnd(hc->env->worker), st->tried);
	if (idx < 0) {
		l7h2_respond_local(st, 503);
		return;
	}
	st->backend = idx;
	if (idx < 64)
		st->tried |= 1ull << idx;
	st->attempts++;
	st->deadline = l7h2_h2_now() + (uint64_t)st->timeout_ms * 1000000;
	st->up = up_get(hc, idx);
	if (!st->up) {
		l7h2_respond_local(st, 502);
		return;
	}
	st->uid = nghttp2_submit_request(
	    st->up->s, NULL, st->req.nv, st->req.n,
	    st->req_end && !l7h2_hb_pending(&st->req_body) ? NULL : &prd, st);
	if (st->uid < 0) {
		st->up = NULL;
		l7h2_respond_local(st, 502);
	}
}

/* The backend connection failed before it carried anything: its streams
 * go elsewhere while their retries last, or are answered 502. */
void l7h2_up_failed(struct h2_up *up)
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
			l7h2_stream_maybe_free(st);
			continue;
		}
		if (!st->resp_submitted && !st->req_body_taken && st->retries_left > 0) {
			st->retries_left--;
			up->dead = true; /* up_get must not hand it out again */
			l7h2_stream_send(st);
		} else if (!st->resp_submitted) {
			l7h2_respond_local(st, 502);
		} else {
			nghttp2_submit_rst_stream(up->hc->s, NGHTTP2_FLAG_NONE, st->cid,
						  NGHTTP2_INTERNAL_ERROR);
		}
	}
	l7h2_up_free(up);
}
