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
	if (!*h && !(*h = l7h2_hdrs_new(st->hc->env)))
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
	l7h2_up_dirty(st->up);
	st->up = NULL;
	st->uid = -1;
	st->retries_left--;
	l7h2_hdrs_drop(st->hc->env, &st->resp);
	l7h2_hdrs_drop(st->hc->env, &st->trailers);
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
	l7h2_conn_dirty(st->hc);
	/* the final response's headers: the first HEADERS, or the one after
	 * a 1xx (which nghttp2 may class as HCAT_HEADERS); later ones are
	 * trailers */
	if (f->hd.type == NGHTTP2_HEADERS && st->resp && !st->resp_final &&
	    (f->headers.cat == NGHTTP2_HCAT_RESPONSE || f->headers.cat == NGHTTP2_HCAT_HEADERS)) {
		stv = l7h2_hdrs_get(st->resp, ":status");
		st->status = stv ? atoi((const char *)stv->value) : 502;
		if (st->status >= 100 && st->status < 200) {
			l7h2_hdrs_drop(st->hc->env, &st->resp); /* interim: not passed on */
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
	l7h2_conn_dirty(st->hc);
	return 0;
}

int l7h2_up_on_close(nghttp2_session *s, int32_t sid, uint32_t error, void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, sid);
	struct h2_up *up = user;

	if (up->nstreams)
		up->nstreams--;
	if (!st)
		return 0;
	l7h2_conn_dirty(st->hc);
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

int l7h2_set_window(nghttp2_session *s, int32_t conn_window)
{
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, DMSC_L7_H2_MAX_STREAMS},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, DMSC_L7_H2_STREAM_WINDOW},
	};

	if (nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 2))
		return -ENOMEM;
	return nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0, conn_window)
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

/* A request that was never sent (its stream cancelled while queued, the
 * connection going away): as a stream the backend reset. */
int l7h2_up_not_sent(nghttp2_session *s, const nghttp2_frame *f, int error, void *user)
{
	(void)error;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	return l7h2_up_on_close(s, f->hd.stream_id, NGHTTP2_REFUSED_STREAM, user);
}

void l7h2_up_dirty(struct h2_up *up)
{
	if (!up->dead)
		dmsc_mark_add(&up->env->dirty_ups, &up->dirty);
}

static struct h2_up *up_open(struct dmsc_l7_h2_env *env, const struct dmsc_l7_service *svc,
			     int backend, uint64_t cgroup)
{
	struct sockaddr_storage sa;
	unsigned int sa_len = dmsc_l7_backend_sa(svc, backend, &sa);
	struct h2_up *up;
	int one = 1;

	up = calloc(1, sizeof(*up));
	if (!up)
		return NULL;
	up->ep.kind = EP_H2_UP;
	up->env = env;
	up->svc = svc;
	up->backend = backend;
	up->key = dmsc_l7_via_key(env->via, svc, backend, cgroup);
	up->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (up->fd < 0 || env->own_socket(up->fd) ||
	    nghttp2_session_client_new2(&up->s, l7h2_up_cbs, up, l7h2_h2_opt) ||
	    l7h2_set_window(up->s, DMSC_L7_H2_UP_CONN_WINDOW))
		goto fail;
	setsockopt(up->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* directly, or through the tunnel (l7_via.h); EACCES, no identity
	 * to vouch for: failed as a refused connect */
	if (dmsc_l7_via_connect(env->via, up->fd, &sa, sa_len, svc, backend, cgroup) < 0) {
		if (errno != EINPROGRESS)
			goto fail;
		up->connecting = true;
	}
	l7h2_ep_want(env, up->fd, &up->ep, &up->ev, EPOLLOUT | EPOLLIN);
	up->next = env->ups;
	env->ups = up;
	return up;
fail:
	if (up->s)
		nghttp2_session_del(up->s);
	if (up->fd >= 0)
		close(up->fd);
	free(up);
	return NULL;
}

/* A connection to the service's backend for one more stream: the first
 * of the worker's with fewer than DMSC_L7_H2_UP_STREAMS streams (and room
 * under the backend's limit), else a new
 * one while there are fewer than DMSC_L7_H2_UPS_PER_BACKEND, else the least
 * busy (nghttp2 queues the stream until one ends). */
static struct h2_up *up_get(struct dmsc_l7_h2 *hc, int backend)
{
	struct dmsc_l7_h2_env *env = hc->env;
	struct h2_up *up, *least = NULL;
	uint64_t key = dmsc_l7_via_key(env->via, hc->svc, backend, hc->cgroup);
	int n = 0;

	for (up = env->ups; up; up = up->next) {
		if (up->dead || up->full || up->svc != hc->svc || up->backend != backend ||
		    up->key != key)
			continue;
		if (up->nstreams < DMSC_L7_H2_UP_STREAMS &&
		    up->nstreams < nghttp2_session_get_remote_settings(
					up->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS))
			return up;
		if (!least || up->nstreams < least->nstreams)
			least = up;
		n++;
	}
	if (n < DMSC_L7_H2_UPS_PER_BACKEND) {
		up = up_open(env, hc->svc, backend, hc->cgroup);
		if (up)
			return up;
	}
	return least;
}

void l7h2_up_free(struct h2_up *up)
{
	struct dmsc_l7_h2_env *env = up->env;
	struct h2_up **pp;

	if (up->dead)
		return;
	for (pp = (struct h2_up **)&env->ups; *pp; pp = &(*pp)->next)
		if (*pp == up) {
			*pp = up->next;
			break;
		}
	if (up->fd >= 0) {
		epoll_ctl(env->epfd, EPOLL_CTL_DEL, up->fd, NULL);
		close(up->fd);
	}
	if (up->s)
		nghttp2_session_del(up->s);
	l7h2_hb_free(&up->out);
	/* events of this batch (and the dirty list) may still name it:
	 * freed after the batch */
	up->fd = -1;
	up->s = NULL;
	up->dead = true;
	up->dead_next = env->dead_ups;
	env->dead_ups = up;
}

/* Writes what the backend connection's session has; epoll watches the
 * rest. */
void l7h2_up_pump(struct h2_up *up)
{
	if (up->dead)
		return;
	if (!up->connecting && l7h2_flush(up->s, up->fd, &up->out) < 0) {
		l7h2_up_failed(up);
		return;
	}
	l7h2_ep_want(up->env, up->fd, &up->ep, &up->ev,
		     EPOLLIN | EPOLLRDHUP |
			 (up->connecting || l7h2_hb_pending(&up->out) ? EPOLLOUT : 0));
	if (up->nstreams)
		up->idle_since = 0;
	else if (!up->idle_since)
		up->idle_since = l7h2_h2_now();
}

/* Backend connections with no stream for the idle time (or draining),
 * and those that can take no new stream once their last ends, close. */
void l7h2_up_sweep(struct dmsc_l7_h2_env *env, uint64_t now, bool draining)
{
	struct h2_up *up, *next;

	for (up = env->ups; up; up = next) {
		next = up->next;
		if (!up->nstreams && (draining || up->full ||
				      (up->idle_since &&
				       now - up->idle_since >= (uint64_t)env->idle_ms * 1000000)))
			l7h2_up_free(up);
		else
			l7h2_up_pump(up);
	}
}

/* Sends the stream on an attempt: the next backend by weight. */
void l7h2_stream_send(struct h2_stream *st)
{
	struct dmsc_l7_h2 *hc = st->hc;
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = l7h2_req_read};
	int idx, tries;

	idx = dmsc_l7_attempt_pick(
	    hc->svc, st->route, dmsc_l7_pick_seed(hc->svc, st->seed, hc->env->rnd(hc->env->worker)),
	    &st->tried);
	if (idx < 0) {
		l7h2_respond_local(st, 503);
		return;
	}
	st->backend = idx;
	st->attempts++;
	st->deadline = dmsc_l7_deadline(l7h2_h2_now(), st->timeout_ms);
	for (tries = 0; tries < 2; tries++) {
		st->up = up_get(hc, idx);
		if (!st->up)
			break;
		st->uid = nghttp2_submit_request(
		    st->up->s, NULL, st->req.nv, st->req.n,
		    st->req_end && !l7h2_hb_pending(&st->req_body) ? NULL : &prd, st);
		if (st->uid > 0) {
			st->up->nstreams++;
			l7h2_up_dirty(st->up);
			return;
		}
		/* stream ids used up or GOAWAY received: a fresh connection */
		st->up->full = true;
		st->up = NULL;
	}
	st->up = NULL;
	st->uid = -1;
	l7h2_respond_local(st, 502);
}

/* The backend connection failed: its streams go elsewhere while their
 * retries last and nothing of them went to the client, or are answered
 * 502 (reset once the answer began). */
void l7h2_up_failed(struct h2_up *up)
{
	struct dmsc_l7_h2 *hc;
	struct h2_stream *st, *next;

	up->full = true; /* up_get must not hand it out again */
	for (hc = up->env->conns; hc; hc = hc->next) {
		for (st = hc->streams; st; st = next) {
			next = st->next;
			if (st->up != up)
				continue;
			l7h2_conn_dirty(hc);
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
				l7h2_stream_send(st);
			} else if (!st->resp_submitted) {
				l7h2_respond_local(st, 502);
			} else {
				nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, st->cid,
							  NGHTTP2_INTERNAL_ERROR);
			}
		}
	}
	l7h2_up_free(up);
}
