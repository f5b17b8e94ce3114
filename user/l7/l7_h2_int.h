/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * dmsc-l7's HTTP/2 internals, shared by l7_h2.c (the client side, I/O, the
 * worker's entry points), l7_h2_stream.c (buffers, streams, the data
 * providers) and l7_h2_up.c (the backend side). Not for use outside
 * user/l7's HTTP/2 files.
 */
#ifndef DMSC_L7_H2_INT_H
#define DMSC_L7_H2_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <nghttp2/nghttp2.h>

#include "l7_h2.h"
#include "l7_health.h"

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24
#define H2_READ_SIZE (16 * 1024)
#define H2_READS_PER_EVENT 4
#define H2_WRITE_BATCH (16 * 1024)
#define H2_MAX_HEADERS 100
/* a worker keeps this many ended streams and header blocks for reuse */
#define DMSC_L7_H2_CACHE 128
/* buffers up to this size stay with a kept stream or header block */
#define H2_KEEP_BYTES (16 * 1024)

struct h2_buf {
	char *p;
	size_t off, len, cap;
};

/* A header block: nv's names and values live in arena. Both grow as
 * headers come (most blocks are a few hundred bytes), up to H2_MAX_HEADERS
 * and DMSC_L7_H2_HEADER_BYTES. */
struct h2_hdrs {
	nghttp2_nv *nv;
	size_t n, nv_cap;
	char *arena;
	size_t used, cap;
	bool overflow;
	struct h2_hdrs *next; /* env->free_hdrs */
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
	uint32_t seed; /* under an affinity (dmsc_l7_request_seed) */
	uint32_t retries_left, attempts, timeout_ms;
	uint64_t t_req, deadline;
	bool idempotent; /* by its method or its route: may be sent again after a 502/503 */
	/* the request body kept for sending again (while it fits: replay) */
	struct h2_buf req_copy;
	bool replay;
	size_t req_sent, req_acked; /* body bytes this attempt sent; acknowledged to the client */
};

/* A backend connection: the worker's, shared by its client connections'
 * streams to that backend of that service (env->ups). */
struct h2_up {
	struct ep ep; /* EP_H2_UP */
	struct dmsc_l7_h2_env *env;
	const struct dmsc_l7_service *svc;
	int fd;
	int backend;
	/* the identity it carries (dmsc_l7_via_key): through the tunnel, one
	 * client cgroup's streams only (docs/design.md decision 75) */
	uint64_t key;
	nghttp2_session *s;
	struct h2_buf out;
	bool connecting, dead;
	bool full;	   /* no new streams (stream ids used up, GOAWAY) */
	struct dmsc_mark dirty; /* on env->dirty_ups */
	uint32_t nstreams; /* submitted and not closed */
	uint32_t ev;
	uint64_t idle_since;
	struct h2_up *next, *dead_next;
};

struct dmsc_l7_h2 {
	struct ep ep; /* EP_H2_CLIENT */
	struct dmsc_l7_h2_env *env;
	struct dmsc_l7_h2 *prev, *next, *dead_next;
	int fd;
	struct dmsc_l7_client *counted_as; /* --max-conns-per-client */
	const struct dmsc_l7_service *svc;
	size_t svc_idx;
	uint64_t cgroup; /* the client's (dmsc_l7_h2_start) */
	uint64_t affinity_key; /* env->client_id(counted_as), if svc has affinity */
	nghttp2_session *s;
	struct h2_buf out;
	struct h2_stream *streams;
	uint64_t idle_since;
	uint64_t notice_at, goaway_at; /* the drain's two GOAWAYs, ns (h2_drain) */
	uint32_t ev;
	bool goaway, closed, eof;
	struct dmsc_mark dirty; /* on env->dirty: pumped once at the end of the batch */
	char client[48];   /* its address, for --forwarded ("" unknown) */
	size_t copy_bytes; /* the streams' req_copy together */
};

/* l7_h2_stream.c */
uint64_t l7h2_h2_now(void);
int l7h2_hb_add(struct h2_buf *b, const void *p, size_t n);
void l7h2_hb_free(struct h2_buf *b);
size_t l7h2_hb_pending(const struct h2_buf *b);
int l7h2_hdrs_add(struct h2_hdrs *h, const uint8_t *name, size_t nlen, const uint8_t *value,
		  size_t vlen);
const nghttp2_nv *l7h2_hdrs_get(const struct h2_hdrs *h, const char *name);
void l7h2_hdrs_free(struct h2_hdrs *h);
struct h2_hdrs *l7h2_hdrs_new(struct dmsc_l7_h2_env *env);
void l7h2_hdrs_drop(struct dmsc_l7_h2_env *env, struct h2_hdrs **h);
struct h2_stream *l7h2_stream_new(struct dmsc_l7_h2_env *env);
void l7h2_cache_free(struct dmsc_l7_h2_env *env);
ssize_t l7h2_req_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
		      nghttp2_data_source *src, void *user);
ssize_t l7h2_resp_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
		       nghttp2_data_source *src, void *user);
void l7h2_respond_local(struct h2_stream *st, int status);
void l7h2_req_discard(struct h2_stream *st);
void l7h2_stream_finish(struct h2_stream *st);
void l7h2_stream_free(struct h2_stream *st);
void l7h2_stream_maybe_free(struct h2_stream *st);
void l7h2_copy_drop(struct h2_stream *st);

/* l7_h2_up.c */
extern nghttp2_session_callbacks *l7h2_up_cbs, *l7h2_client_cbs;
void l7h2_ep_want(struct dmsc_l7_h2_env *env, int fd, struct ep *e, uint32_t *cur, uint32_t want);
extern nghttp2_option *l7h2_h2_opt;
ssize_t l7h2_no_send(nghttp2_session *s, const uint8_t *d, size_t l, int f, void *u);
int l7h2_set_window(nghttp2_session *s, int32_t conn_window);
void l7h2_stream_send(struct h2_stream *st);
void l7h2_up_failed(struct h2_up *up);
void l7h2_up_dirty(struct h2_up *up);
void l7h2_up_pump(struct h2_up *up);
void l7h2_up_sweep(struct dmsc_l7_h2_env *env, uint64_t now, bool draining);
int l7h2_up_not_sent(nghttp2_session *s, const nghttp2_frame *f, int error, void *user);
void l7h2_up_free(struct h2_up *up);
int l7h2_up_on_close(nghttp2_session *s, int32_t sid, uint32_t error, void *user);
int l7h2_up_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
		    void *user);
int l7h2_up_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *user);
int l7h2_up_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
		      const uint8_t *value, size_t vlen, uint8_t flags, void *user);

/* l7_h2.c */
void l7h2_conn_close(struct dmsc_l7_h2 *hc);
void l7h2_conn_dirty(struct dmsc_l7_h2 *hc);
int l7h2_flush(nghttp2_session *s, int fd, struct h2_buf *out);
void l7h2_stream_dispatch(struct h2_stream *st);

#endif /* DMSC_L7_H2_INT_H */
