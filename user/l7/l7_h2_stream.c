// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* dmsc-l7's HTTP/2: buffers, streams and the data providers (l7_h2_int.h). */
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

#include "array.h"
#include "l7_h2_int.h"

uint64_t l7h2_h2_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
/* ---- buffers ------------------------------------------------------------ */
int l7h2_hb_add(struct h2_buf *b, const void *p, size_t n)
{
	if (b->off && b->off == b->len)
		b->off = b->len = 0;
	if (b->len + n > b->cap) {
		char *q;

		if (b->off) {
			memmove(b->p, b->p + b->off, b->len - b->off);
			b->len -= b->off;
			b->off = 0;
		}
		q = dmsc_bytes_room(b->p, &b->cap, b->len + n, 4096);
		if (!q)
			return -ENOMEM;
		b->p = q;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

size_t l7h2_hb_pending(const struct h2_buf *b)
{
	return b->len - b->off;
}

/* Up to len of b's pending bytes copied to buf and taken: how many. */
static size_t hb_take(struct h2_buf *b, uint8_t *buf, size_t len)
{
	size_t n = l7h2_hb_pending(b);

	if (n > len)
		n = len;
	if (n) { /* b->p may be NULL while nothing is pending */
		memcpy(buf, b->p + b->off, n);
		b->off += n;
	}
	return n;
}

void l7h2_hb_free(struct h2_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

#define H2_HDRS_NV0 16
#define H2_HDRS_ARENA0 512

/* Room for need more arena bytes and one more nv: 0 or -ENOSPC (past the
 * limits) or -ENOMEM. A moved arena's names and values are rebased. */
static int hdrs_room(struct h2_hdrs *h, size_t need)
{
	size_t cap = h->cap ? h->cap : H2_HDRS_ARENA0, i;

	if (h->n == H2_MAX_HEADERS || h->used + need > DMSC_L7_H2_HEADER_BYTES)
		return -ENOSPC;
	if (h->n == h->nv_cap) {
		size_t nc = h->nv_cap ? h->nv_cap * 2 : H2_HDRS_NV0;
		nghttp2_nv *nv = realloc(h->nv, nc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		h->nv = nv;
		h->nv_cap = nc;
	}
	if (h->used + need > h->cap) {
		char *a;

		while (cap < h->used + need)
			cap *= 2;
		if (cap > DMSC_L7_H2_HEADER_BYTES)
			cap = DMSC_L7_H2_HEADER_BYTES;
		for (i = 0; i < h->n; i++) { /* offsets while the arena moves */
			h->nv[i].name = (uint8_t *)(uintptr_t)((char *)h->nv[i].name - h->arena);
			h->nv[i].value = (uint8_t *)(uintptr_t)((char *)h->nv[i].value - h->arena);
		}
		a = realloc(h->arena, cap);
		if (a) {
			h->arena = a;
			h->cap = cap;
		}
		for (i = 0; i < h->n; i++) {
			h->nv[i].name = (uint8_t *)h->arena + (uintptr_t)h->nv[i].name;
			h->nv[i].value = (uint8_t *)h->arena + (uintptr_t)h->nv[i].value;
		}
		if (!a)
			return -ENOMEM;
	}
	return 0;
}

int l7h2_hdrs_add(struct h2_hdrs *h, const uint8_t *name, size_t nlen, const uint8_t *value,
		  size_t vlen)
{
	nghttp2_nv *nv;
	int err = hdrs_room(h, nlen + vlen + 2);

	if (err) {
		h->overflow = true;
		return err;
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

/* h's storage freed; h is an empty block again */
void l7h2_hdrs_free(struct h2_hdrs *h)
{
	free(h->nv);
	free(h->arena);
	memset(h, 0, sizeof(*h));
}

/* An empty header block: a kept one (its buffers with it) or a new one. */
struct h2_hdrs *l7h2_hdrs_new(struct dmsc_l7_h2_env *env)
{
	struct h2_hdrs *h = env->free_hdrs;

	if (!h)
		return calloc(1, sizeof(*h));
	env->free_hdrs = h->next;
	env->n_free_hdrs--;
	h->next = NULL;
	return h;
}

/* An empty block, its buffers kept while small. */
static void hdrs_reset(struct h2_hdrs *h)
{
	if (h->cap > H2_KEEP_BYTES)
		l7h2_hdrs_free(h);
	h->n = h->used = 0;
	h->overflow = false;
}

/* *h (from l7h2_hdrs_new) kept for the next one or freed; *h NULL */
void l7h2_hdrs_drop(struct dmsc_l7_h2_env *env, struct h2_hdrs **h)
{
	if (!*h)
		return;
	if (env->n_free_hdrs < DMSC_L7_H2_CACHE) {
		hdrs_reset(*h);
		(*h)->next = env->free_hdrs;
		env->free_hdrs = *h;
		env->n_free_hdrs++;
	} else {
		l7h2_hdrs_free(*h);
		free(*h);
	}
	*h = NULL;
}

/* A zeroed stream: a kept one (its buffers with it) or a new one. */
struct h2_stream *l7h2_stream_new(struct dmsc_l7_h2_env *env)
{
	struct h2_stream *st = env->free_streams;
	struct h2_hdrs req;
	struct h2_buf qb, rb;

	if (!st)
		return calloc(1, sizeof(*st));
	env->free_streams = st->next;
	env->n_free_streams--;
	req = st->req;
	qb = st->req_body;
	rb = st->resp_body;
	memset(st, 0, sizeof(*st));
	st->req = req;
	st->req_body = qb;
	st->resp_body = rb;
	return st;
}

/* An empty buffer, its memory kept while small. */
static void hb_reset(struct h2_buf *b)
{
	if (b->cap > H2_KEEP_BYTES)
		l7h2_hb_free(b);
	b->off = b->len = 0;
}

/* The worker's kept streams and header blocks freed. */
void l7h2_cache_free(struct dmsc_l7_h2_env *env)
{
	struct h2_stream *st;
	struct h2_hdrs *h;

	while ((st = env->free_streams)) {
		env->free_streams = st->next;
		l7h2_hdrs_free(&st->req);
		l7h2_hb_free(&st->req_body);
		l7h2_hb_free(&st->resp_body);
		free(st);
	}
	while ((h = env->free_hdrs)) {
		env->free_hdrs = h->next;
		l7h2_hdrs_free(h);
		free(h);
	}
	env->n_free_streams = env->n_free_hdrs = 0;
}

const nghttp2_nv *l7h2_hdrs_get(const struct h2_hdrs *h, const char *name)
{
	size_t i, len = strlen(name);

	/* the length first: most names differ in it (strcmp on every field
	 * was 1.5% of the helper's CPU at 64 streams) */
	for (i = 0; h && i < h->n; i++)
		if (h->nv[i].namelen == len && !memcmp(h->nv[i].name, name, len))
			return &h->nv[i];
	return NULL;
}

/* ---- streams -------------------------------------------------------------- */

void l7h2_stream_finish(struct h2_stream *st)
{
	struct dmsc_l7_h2_env *env = st->hc->env;

	if (st->finished || !st->t_req)
		return;
	st->finished = true;
	env->finished(env->worker, st->hc->svc, st->hc->svc_idx, st->route, st->status,
		      l7h2_h2_now() - st->t_req, st->attempts, st->grpc_status);
}

void l7h2_stream_free(struct h2_stream *st)
{
	struct dmsc_l7_h2_env *env = st->hc->env;
	struct h2_stream **pp;

	for (pp = &st->hc->streams; *pp; pp = &(*pp)->next)
		if (*pp == st) {
			*pp = st->next;
			break;
		}
	l7h2_stream_finish(st);
	if (st->up && st->uid > 0 && st->up->s)
		nghttp2_session_set_stream_user_data(st->up->s, st->uid, NULL);
	l7h2_copy_drop(st);
	l7h2_hdrs_drop(env, &st->resp);
	l7h2_hdrs_drop(env, &st->trailers);
	if (env->n_free_streams < DMSC_L7_H2_CACHE) {
		hdrs_reset(&st->req);
		hb_reset(&st->req_body);
		hb_reset(&st->resp_body);
		st->next = env->free_streams;
		env->free_streams = st;
		env->n_free_streams++;
		return;
	}
	l7h2_hb_free(&st->req_body);
	l7h2_hb_free(&st->resp_body);
	l7h2_hdrs_free(&st->req);
	free(st);
}

/* Both sides done with it? */
void l7h2_stream_maybe_free(struct h2_stream *st)
{
	if (st->c_closed && (st->u_closed || st->uid < 0))
		l7h2_stream_free(st);
}

/* A response of the helper's own (429, 502, 503, 504), headers only. */
void l7h2_respond_local(struct h2_stream *st, int status)
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
	l7h2_stream_finish(st);
}

/* ---- data providers: each side reads what the other side received ------ */
/* The client's response body, from what the backend sent. */
ssize_t l7h2_resp_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
		       nghttp2_data_source *src, void *user)
{
	struct h2_stream *st = src->ptr;
	size_t n = hb_take(&st->resp_body, buf, len);

	(void)s;
	(void)sid;
	(void)user;
	if (n) {
		/* taken: now the backend may send this much more */
		if (st->up && st->up->s && st->uid > 0) {
			nghttp2_session_consume(st->up->s, st->uid, n);
			l7h2_up_dirty(st->up);
		}
	}
	if (l7h2_hb_pending(&st->resp_body))
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
ssize_t l7h2_req_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
		      nghttp2_data_source *src, void *user)
{
	struct h2_stream *st = src->ptr;
	size_t n = hb_take(&st->req_body, buf, len);

	(void)s;
	(void)sid;
	(void)user;
	if (n) {
		st->req_body_taken = true;
		st->req_sent += n;
		/* a replayed body was acknowledged the first time */
		if (!st->c_closed && st->req_sent > st->req_acked) {
			nghttp2_session_consume(st->hc->s, st->cid, st->req_sent - st->req_acked);
			l7h2_conn_dirty(st->hc);
		}
		if (st->req_sent > st->req_acked)
			st->req_acked = st->req_sent;
	}
	if (l7h2_hb_pending(&st->req_body))
		return (ssize_t)n;
	if (!st->req_end)
		return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* The response is complete while the client still sends (l7_h2.c,
 * c_on_frame_sent): what its request body holds is acknowledged and
 * dropped; c_on_data drops what follows. */
void l7h2_req_discard(struct h2_stream *st)
{
	size_t n = l7h2_hb_pending(&st->req_body);

	if (!n || st->c_closed)
		return;
	l7h2_hb_free(&st->req_body);
	st->req_acked += n;
	nghttp2_session_consume(st->hc->s, st->cid, n);
	l7h2_conn_dirty(st->hc);
}

/* The stream will not be sent again: its request copy goes. */
void l7h2_copy_drop(struct h2_stream *st)
{
	st->hc->copy_bytes -= st->req_copy.len;
	l7h2_hb_free(&st->req_copy);
	st->replay = false;
}
