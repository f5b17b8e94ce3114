// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* HTTP/2 (h2c) through dmsc-l7: l7_h2.h. The client side, I/O and the
 * worker's entry points; l7_h2_int.h names the other parts. */
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

int dmsc_l7_h2_preface(const char *buf, size_t len)
{
	size_t n = len < H2_PREFACE_LEN ? len : H2_PREFACE_LEN;

	if (memcmp(buf, H2_PREFACE, n) != 0)
		return 0;
	return len >= H2_PREFACE_LEN ? 1 : -1;
}

/* ---- the client side ----------------------------------------------------- */
static int c_on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct dmsc_l7_h2 *hc = user;
	struct h2_stream *st;

	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = l7h2_stream_new(hc->env);
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
	l7h2_hdrs_add(&st->req, name, nlen, value, vlen);
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
		if (st->up && st->uid > 0) {
			nghttp2_session_resume_data(st->up->s, st->uid);
			l7h2_up_dirty(st->up);
		}
	}
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
		l7h2_stream_dispatch(st);
	return 0;
}

static int c_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
		     size_t len, void *user)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(s, sid);

	(void)flags;
	(void)user;
	if (!st || st->u_closed || st->resp_end) {
		if (!st || nghttp2_session_consume(s, sid, len))
			nghttp2_session_consume_connection(s, len);
		return 0;
	}
	if (l7h2_hb_add(&st->req_body, data, len))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (st->replay) {
		if (st->req_copy.len + len > DMSC_L7_H2_REPLAY_BYTES ||
		    st->hc->copy_bytes + len > DMSC_L7_H2_CONN_WINDOW ||
		    l7h2_hb_add(&st->req_copy, data, len))
			l7h2_copy_drop(st);
		else
			st->hc->copy_bytes += len;
	}
	if (st->up && st->uid > 0) {
		nghttp2_session_resume_data(st->up->s, st->uid);
		l7h2_up_dirty(st->up);
	}
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
	if (st->up && st->uid > 0 && !st->u_closed) {
		nghttp2_submit_rst_stream(st->up->s, NGHTTP2_FLAG_NONE, st->uid, NGHTTP2_CANCEL);
		l7h2_up_dirty(st->up);
	}
	l7h2_stream_maybe_free(st);
	return 0;
}

/*
 * The response to a client's stream is complete (END_STREAM sent) while
 * the client is still sending its request: a backend that answered before
 * reading the body (413, 401, a gRPC status), or the helper's own answer
 * (502, 429, 404). What the client sent that nobody took is acknowledged
 * and dropped, as what follows will be (c_on_data), so that its window
 * opens and it finishes: a client waits for the window before it reads the
 * answer (curl uploading 100 KB: a timeout instead of the 502). Not
 * RST_STREAM NO_ERROR, which RFC 9113 (8.1) allows here, but curl 7.88
 * takes for a failed transfer.
 */
static int c_on_frame_sent(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
	int32_t sid = frame->hd.stream_id;
	struct h2_stream *st;

	(void)user;
	if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
	    (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && sid > 0 &&
	    nghttp2_session_get_stream_remote_close(s, sid) == 0) {
		st = nghttp2_session_get_stream_user_data(s, sid);
		if (st)
			l7h2_req_discard(st);
	}
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
	case 'H':
		return v * 3600000;
	case 'M':
		return v * 60000;
	case 'S':
		return v * 1000;
	case 'm':
		return v;
	case 'u':
		return (v + 999) / 1000;
	case 'n':
		return (v + 999999) / 1000000;
	}
	return 0;
}

/* RFC 9110, 9.2.2 */
static bool h2_method_idempotent(const nghttp2_nv *m)
{
	static const char *const safe[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
	size_t i;

	for (i = 0; i < sizeof(safe) / sizeof(safe[0]); i++)
		if (!strcmp((const char *)m->value, safe[i]))
			return true;
	return false;
}

/* The request's name fields replaced by one: their values, then this
 * hop's (hop NULL: Forwarded's for=CLIENT;proto=http). -ENOSPC: no room. */
static int h2_forward(struct h2_stream *st, const char *name, const char *hop)
{
	const char *vals[H2_MAX_HEADERS];
	size_t lens[H2_MAX_HEADERS], i, n = 0, k = 0;
	char v[DMSC_L7_H2_HEADER_BYTES], fwd[96];
	int len;

	if (!st->hc->client[0])
		return 0;
	if (!hop) {
		bool v6 = strchr(st->hc->client, ':') != NULL; /* RFC 7239: quoted, bracketed */

		snprintf(fwd, sizeof(fwd), "for=%s%s%s;proto=http", v6 ? "\"[" : "", st->hc->client,
			 v6 ? "]\"" : "");
		hop = fwd;
	}
	for (i = 0; i < st->req.n; i++) {
		if (strcmp((const char *)st->req.nv[i].name, name)) {
			st->req.nv[k++] = st->req.nv[i];
			continue;
		}
		vals[n] = (const char *)st->req.nv[i].value;
		lens[n++] = st->req.nv[i].valuelen;
	}
	len = dmsc_l7_h2_forward_value(vals, lens, n, hop, v, sizeof(v));
	st->req.n = k; /* the arena keeps the old values: vals stay valid */
	if (len < 0)
		return len;
	return l7h2_hdrs_add(&st->req, (const uint8_t *)name, strlen(name), (const uint8_t *)v,
			     (size_t)len);
}

/* Routes a stream whose request headers are complete. */
void l7h2_stream_dispatch(struct h2_stream *st)
{
	struct dmsc_l7_h2 *hc = st->hc;
	struct dmsc_l7_header hv[H2_MAX_HEADERS];
	struct dmsc_l7_request req = {0};
	const struct dmsc_l7_route *route;
	const nghttp2_nv *m = l7h2_hdrs_get(&st->req, ":method"),
			 *p = l7h2_hdrs_get(&st->req, ":path");
	const nghttp2_nv *gt = l7h2_hdrs_get(&st->req, "grpc-timeout");
	uint64_t now = l7h2_h2_now(), gms;
	size_t i, n = 0;

	st->t_req = now;
	if (st->req.overflow || !m || !p) {
		l7h2_respond_local(st, st->req.overflow ? 431 : 400);
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
	st->seed = dmsc_l7_request_seed(hc->svc, &req, hc->affinity_key, hc->cgroup);
	route = st->route >= 0 ? &hc->svc->routes[st->route] : NULL;
	if (dmsc_l7_service_limited(hc->svc) && hc->env->bucket_wait(hc->svc_idx, now)) {
		l7h2_respond_local(st, 429);
		return;
	}
	if ((hc->env->xff && h2_forward(st, "x-forwarded-for", hc->client)) ||
	    (hc->env->forwarded && h2_forward(st, "forwarded", NULL))) {
		l7h2_respond_local(st, 431);
		return;
	}
	st->retries_left = dmsc_l7_route_retries(route, hc->env->default_retries);
	st->idempotent = (route && route->idempotent) || h2_method_idempotent(m);
	st->replay = st->idempotent && st->retries_left > 0;
	st->timeout_ms = dmsc_l7_route_timeout_ms(route, hc->env->default_timeout_ms);
	/* a gRPC deadline shorter than the route's wins */
	gms = gt ? grpc_timeout_ms(gt) : 0;
	if (gms && (!st->timeout_ms || gms < st->timeout_ms))
		st->timeout_ms = gms < UINT32_MAX ? (uint32_t)gms : UINT32_MAX;
	l7h2_stream_send(st);
}

/* ---- I/O -------------------------------------------------------------------- */
/* Writes what the session has for fd, as far as the socket takes it.
 * -1: the connection is broken. */
int l7h2_flush(nghttp2_session *s, int fd, struct h2_buf *out)
{
	for (;;) {
		/* frames gathered up to H2_WRITE_BATCH: one send() for many
		 * small frames (nghttp2 hands out one frame at a time) */
		while (l7h2_hb_pending(out) < H2_WRITE_BATCH) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(s, &data);

			if (n < 0)
				return -1;
			if (n == 0)
				break;
			if (l7h2_hb_add(out, data, (size_t)n))
				return -1;
		}
		if (!l7h2_hb_pending(out))
			return 0;
		while (l7h2_hb_pending(out)) {
			ssize_t w = send(fd, out->p + out->off, l7h2_hb_pending(out), MSG_NOSIGNAL);

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
	struct h2_stream *st;

	if (hc->closed)
		return;
	/* what the client's session takes may let the backends send more */
	for (st = hc->streams; st; st = st->next)
		if (st->up)
			l7h2_up_dirty(st->up);
	if (l7h2_flush(hc->s, hc->fd, &hc->out) < 0) {
		l7h2_conn_close(hc);
		return;
	}
	if (!nghttp2_session_want_read(hc->s) && !nghttp2_session_want_write(hc->s) &&
	    !l7h2_hb_pending(&hc->out)) {
		l7h2_conn_close(hc);
		return;
	}
	l7h2_ep_want(hc->env, hc->fd, &hc->ep, &hc->ev,
		     EPOLLIN | EPOLLRDHUP | (l7h2_hb_pending(&hc->out) ? EPOLLOUT : 0));
	if (hc->streams) {
		hc->idle_since = 0;
		return;
	}
	if (!hc->idle_since)
		hc->idle_since = l7h2_h2_now();
	if (!l7h2_hb_pending(&hc->out))
		l7h2_hb_free(&hc->out); /* an idle connection holds no buffer */
}

/* Reads what fd has (epoll is level-triggered: a short read ends it, and
 * what is left wakes the next batch). -1: closed or broken. */
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
		if ((size_t)n < sizeof(buf))
			break;
	}
	return 0;
}

void l7h2_conn_dirty(struct dmsc_l7_h2 *hc)
{
	dmsc_mark_add(&hc->env->dirty, &hc->dirty);
}

void dmsc_l7_h2_flush(struct dmsc_l7_h2_env *env)
{
	struct dmsc_mark *m;
	int pass;

	/* a client's session taking DATA acknowledges it to a backend and
	 * the other way round: a few passes settle it; what is left waits
	 * for the next batch (the sweep pumps everything) */
	for (pass = 0; pass < 4 && (env->dirty || env->dirty_ups); pass++) {
		/* a closed connection's pump returns at once */
		while ((m = dmsc_mark_take(&env->dirty)))
			conn_pump(dmsc_container_of(m, struct dmsc_l7_h2, dirty));
		while ((m = dmsc_mark_take(&env->dirty_ups)))
			l7h2_up_pump(dmsc_container_of(m, struct h2_up, dirty));
	}
}

void dmsc_l7_h2_event(struct ep *e, uint32_t events)
{
	struct dmsc_l7_h2 *hc;

	if (e->kind == EP_H2_UP) {
		struct h2_up *up = (struct h2_up *)e;

		if (up->dead)
			return;
		if (up->connecting) {
			int err = 0;
			socklen_t len = sizeof(err);

			if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
				return;
			if (getsockopt(up->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
				/* (a reset by the tunnel, which could not
				 * reach the backend, is counted as that) */
				if (!dmsc_l7_via_unreached(up->env->via, up->fd, up->svc,
							   up->backend))
					dmsc_l7_health_result(up->svc, up->backend, 0);
				l7h2_up_failed(up);
				return;
			}
			up->connecting = false;
		}
		if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
		    feed(up->s, up->fd) < 0) {
			/* through the tunnel to a backend it could not reach:
			 * a failed connect (decision 79) */
			dmsc_l7_via_unreached(up->env->via, up->fd, up->svc, up->backend);
			l7h2_up_failed(up);
			return;
		}
		l7h2_up_dirty(up);
		return;
	}
	hc = (struct dmsc_l7_h2 *)e;
	if (hc->closed)
		return;
	if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && feed(hc->s, hc->fd) < 0) {
		l7h2_conn_close(hc);
		return;
	}
	l7h2_conn_dirty(hc);
}

void l7h2_conn_close(struct dmsc_l7_h2 *hc)
{
	struct dmsc_l7_h2_env *env = hc->env;
	struct h2_stream *st;

	if (hc->closed)
		return;
	hc->closed = true;
	while ((st = hc->streams)) {
		/* the backend connection is shared: only this stream goes */
		if (st->up && st->uid > 0 && !st->u_closed && st->up->s) {
			nghttp2_submit_rst_stream(st->up->s, NGHTTP2_FLAG_NONE, st->uid,
						  NGHTTP2_CANCEL);
			l7h2_up_dirty(st->up);
		}
		st->c_closed = st->u_closed = true;
		l7h2_stream_free(st);
	}
	epoll_ctl(env->epfd, EPOLL_CTL_DEL, hc->fd, NULL);
	close(hc->fd);
	hc->fd = -1;
	nghttp2_session_del(hc->s);
	hc->s = NULL;
	l7h2_hb_free(&hc->out);
	env->release_client(hc->counted_as);
	if (hc->prev)
		hc->prev->next = hc->next;
	else
		env->conns = hc->next;
	if (hc->next)
		hc->next->prev = hc->prev;
	__atomic_sub_fetch(&env->n_conns, 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&env->placed, 1, __ATOMIC_RELAXED); /* read by l7_h2_move.c */
	hc->dead_next = env->dead;
	env->dead = hc;
}

static int callbacks_init(void)
{
	if (l7h2_client_cbs)
		return 0;
	if (nghttp2_option_new(&l7h2_h2_opt))
		return -ENOMEM;
	/* WINDOW_UPDATE only for what the other side took (flow control end
	 * to end: l7_h2.h) */
	nghttp2_option_set_no_auto_window_update(l7h2_h2_opt, 1);
	/* no priority tree to keep closed streams for (decision 91): each
	 * stream's open and close reshaped the retained ones' */
	nghttp2_option_set_no_closed_streams(l7h2_h2_opt, 1);
	if (nghttp2_session_callbacks_new(&l7h2_client_cbs) ||
	    nghttp2_session_callbacks_new(&l7h2_up_cbs))
		return -ENOMEM;
	nghttp2_session_callbacks_set_send_callback(l7h2_client_cbs, l7h2_no_send);
	nghttp2_session_callbacks_set_on_begin_headers_callback(l7h2_client_cbs,
								c_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(l7h2_client_cbs, c_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(l7h2_client_cbs, c_on_frame);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(l7h2_client_cbs, c_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(l7h2_client_cbs, c_on_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(l7h2_client_cbs, c_on_frame_sent);
	nghttp2_session_callbacks_set_send_callback(l7h2_up_cbs, l7h2_no_send);
	nghttp2_session_callbacks_set_on_header_callback(l7h2_up_cbs, l7h2_up_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(l7h2_up_cbs, l7h2_up_on_frame);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(l7h2_up_cbs, l7h2_up_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(l7h2_up_cbs, l7h2_up_on_close);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(l7h2_up_cbs, l7h2_up_not_sent);
	return 0;
}

int dmsc_l7_h2_start(struct dmsc_l7_h2_env *env, int cfd, struct dmsc_l7_client *client,
		     const struct dmsc_l7_service *svc, size_t svc_idx, uint64_t cgroup,
		     const char *in, size_t len)
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
	hc->counted_as = client;
	hc->svc = svc;
	hc->svc_idx = svc_idx;
	hc->cgroup = cgroup;
	if (svc->affinity)
		hc->affinity_key = env->client_id(client);
	if (dmsc_l7_h2_client_addr(cfd, hc->client, sizeof(hc->client)))
		hc->client[0] = '\0';
	if (nghttp2_session_server_new2(&hc->s, l7h2_client_cbs, hc, l7h2_h2_opt) ||
	    l7h2_set_window(hc->s, DMSC_L7_H2_CONN_WINDOW)) {
		if (hc->s)
			nghttp2_session_del(hc->s);
		free(hc);
		return -ENOMEM;
	}
	hc->next = env->conns;
	if (env->conns)
		env->conns->prev = hc;
	env->conns = hc;
	__atomic_add_fetch(&env->n_conns, 1, __ATOMIC_RELAXED);
	if (len && nghttp2_session_mem_recv(hc->s, (const uint8_t *)in, len) < 0) {
		l7h2_conn_close(hc);
		return 0; /* closed: the client's fd went with it */
	}
	conn_pump(hc);
	return 0;
}

static void h2_goaway(struct dmsc_l7_h2 *hc, uint64_t now)
{
	hc->goaway = true;
	hc->goaway_at = now;
	nghttp2_submit_goaway(hc->s, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(hc->s), NGHTTP2_NO_ERROR,
			      NULL, 0);
}

/*
 * One connection of a draining helper (decision 84): a GOAWAY notice first
 * (last stream 2^31-1: the client opens no new stream here, and those it
 * sent meanwhile are still served), the final GOAWAY one
 * DMSC_L7_DRAIN_IDLE_MS later, and the close one more after that, once no
 * stream is left: a single GOAWAY would refuse the streams already on
 * their way, which a client counts as failed. True: closed.
 */
static bool h2_drain(struct dmsc_l7_h2 *hc, uint64_t now)
{
	const uint64_t step = DMSC_L7_DRAIN_IDLE_MS * 1000000ull;

	if (!hc->notice_at && !hc->goaway) {
		hc->notice_at = now;
		if (nghttp2_submit_shutdown_notice(hc->s))
			h2_goaway(hc, now);
	}
	if (!hc->goaway && now - hc->notice_at >= step)
		h2_goaway(hc, now);
	if (hc->goaway && !hc->streams && now - hc->goaway_at >= step) {
		conn_pump(hc);
		if (!hc->closed)
			l7h2_conn_close(hc);
		return true;
	}
	return false;
}

void dmsc_l7_h2_sweep(struct dmsc_l7_h2_env *env, uint64_t now, bool draining)
{
	struct dmsc_l7_h2 *hc, *next;
	struct h2_stream *st, *snext;

	for (hc = env->conns; hc; hc = next) {
		next = hc->next;
		for (st = hc->streams; st; st = snext) {
			snext = st->next;
			if (st->resp_submitted || st->c_closed || !st->deadline ||
			    now < st->deadline)
				continue;
			/* no answer within the route's timeout_ms (or grpc-timeout) */
			if (st->up && st->uid > 0 && !st->u_closed) {
				nghttp2_submit_rst_stream(st->up->s, NGHTTP2_FLAG_NONE, st->uid,
							  NGHTTP2_CANCEL);
				l7h2_up_dirty(st->up);
				/* a failure of the backend for passive health */
				dmsc_l7_health_result(hc->svc, st->backend,
						      DMSC_L7_HEALTH_TIMEOUT);
			}
			l7h2_respond_local(st, 504);
		}
		if (draining && h2_drain(hc, now))
			continue;
		if (!draining && !hc->streams && hc->idle_since &&
		    now - hc->idle_since >= (uint64_t)env->idle_ms * 1000000) {
			if (!hc->goaway)
				h2_goaway(hc, now);
			conn_pump(hc);
			if (!hc->closed)
				l7h2_conn_close(hc);
			continue;
		}
		conn_pump(hc);
	}
	l7h2_up_sweep(env, now, draining);
	dmsc_l7_h2_flush(env);
}

void dmsc_l7_h2_reap(struct dmsc_l7_h2_env *env)
{
	struct dmsc_l7_h2 *hc;
	struct h2_up *up;

	dmsc_l7_h2_flush(env); /* nothing dirty may be freed */
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
		l7h2_conn_close(env->conns);
	while (env->ups)
		l7h2_up_free(env->ups);
	dmsc_l7_h2_reap(env);
	l7h2_cache_free(env);
}
