/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * HTTP/2 in dmsc-l7 (docs/design.md decision 26), with nghttp2 (Debian's
 * libnghttp2): a client connection that opens with the HTTP/2 preface (h2c
 * with prior knowledge) is taken over from the HTTP/1.1 code. Each stream is
 * routed on its own (:path, :method, headers; the service's routes, first
 * match wins) and sent as a stream of an HTTP/2 (h2c) connection to the
 * backend chosen: the worker's connections to that backend, shared by
 * all its client connections (docs/design.md decision 46).
 * Trailers pass through both ways (gRPC's grpc-status is one).
 *
 * Flow control is end to end: a stream's DATA is acknowledged (WINDOW_UPDATE)
 * to the side that sent it only once the other side's session has taken it
 * for sending, so each direction holds at most the window the helper
 * advertises, per stream (DMSC_L7_H2_STREAM_WINDOW) and per connection
 * (DMSC_L7_H2_CONN_WINDOW), whatever the speed of the reader.
 */
#ifndef DMSC_L7_H2_H
#define DMSC_L7_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "l7_ep.h"
#include "mark.h"
#include "l7_route.h"
#include "l7_via.h"

#define DMSC_L7_H2_STREAM_WINDOW (64 * 1024)
#define DMSC_L7_H2_CONN_WINDOW (256 * 1024)
#define DMSC_L7_H2_MAX_STREAMS 128	  /* concurrent, per client connection */
#define DMSC_L7_H2_HEADER_BYTES (60 * 1024) /* a stream's header block, stored (decision 94) */
/* backend connections per backend per worker, shared by the worker's
 * client connections: another opens when each has DMSC_L7_H2_UP_STREAMS
 * (or the backend's SETTINGS_MAX_CONCURRENT_STREAMS) streams open */
#define DMSC_L7_H2_UPS_PER_BACKEND 4
#define DMSC_L7_H2_UP_STREAMS 8
/* a shared backend connection's receive window: a slow reader's stream
 * holds at most DMSC_L7_H2_STREAM_WINDOW of it, so that one slow client
 * does not stall the others' streams on the same connection */
#define DMSC_L7_H2_UP_CONN_WINDOW (4 * 1024 * 1024)
/* a request body kept to send again after a 502/503 (as HTTP/1.1's); all
 * of a connection's streams together keep at most DMSC_L7_H2_CONN_WINDOW */
#define DMSC_L7_H2_REPLAY_BYTES (64 * 1024)

struct dmsc_l7_h2;

/* What the helper's worker lends the HTTP/2 code: one per worker. */
/* A client's count in --max-conns-per-client (l7_proxy.h), released when
 * its connection ends. */
struct dmsc_l7_client;

struct dmsc_l7_h2_env {
	int epfd;
	void *worker;
	uint32_t (*rnd)(void *worker);
	/* marks fd as the helper's own before connect() (dmsc_l7_own); 0 or -errno */
	int (*own_socket)(int fd);
	/* backends on other hosts: through the tunnel (l7_via.h) */
	struct dmsc_l7_via *via;
	/* the service's request bucket: 0 to go, else ns until a token */
	uint64_t (*bucket_wait)(size_t svc_idx, uint64_t now_ns);
	/* a stream answered: metrics and access log */
	void (*finished)(void *worker, const struct dmsc_l7_service *svc, size_t svc_idx, int route,
			 int status, uint64_t dur_ns, uint32_t attempts, int grpc_status);
	void (*release_client)(struct dmsc_l7_client *client);
	uint64_t (*client_id)(const struct dmsc_l7_client *client);
	uint32_t default_timeout_ms, default_retries, idle_ms;
	bool xff, forwarded; /* --forwarded: X-Forwarded-For, Forwarded appended */
	/* the worker's HTTP/2 connections */
	struct dmsc_l7_h2 *conns, *dead;
	struct dmsc_mark *dirty; /* connections with events in this batch: dmsc_l7_h2_flush */
	void *ups;	/* the worker's backend connections (struct h2_up) */
	struct dmsc_mark *dirty_ups; /* backend connections written to in this batch */
	void *dead_ups;	/* backend connections closed during this batch */
	/* ended streams and header blocks kept with their buffers for the
	 * next ones (at most DMSC_L7_H2_CACHE each) */
	void *free_streams, *free_hdrs;
	uint32_t n_free_streams, n_free_hdrs;
	uint32_t n_conns;
	/* connections placed on this worker (l7_h2_move.c), queued or served:
	 * counted at the choice, down when one closes */
	uint32_t placed;
};

/* Does buf (len bytes: the first of a connection) start the HTTP/2 client
 * preface? 1 yes, 0 no, -1 too short to say (and a prefix of it). */
int dmsc_l7_h2_preface(const char *buf, size_t len);

/*
 * Takes over client socket cfd (not in epoll) with the bytes read already
 * (in: the preface and what followed); cgroup: the client's (its handoff
 * record's, 0 unknown), vouched for through the tunnel. 0, or a negative errno (the caller
 * then closes cfd).
 */
int dmsc_l7_h2_start(struct dmsc_l7_h2_env *env, int cfd, struct dmsc_l7_client *client,
		     const struct dmsc_l7_service *svc, size_t svc_idx, uint64_t cgroup,
		     const char *in, size_t len);

/* An epoll event for EP_H2_CLIENT or EP_H2_UP: input taken; what it makes
 * the connection send waits for dmsc_l7_h2_flush. */
void dmsc_l7_h2_event(struct ep *e, uint32_t events);

/* After a batch of events: each connection that had some writes what its
 * sessions have, one send() per socket for the whole batch. */
void dmsc_l7_h2_flush(struct dmsc_l7_h2_env *env);

/* Draining (decision 84): an HTTP/1.1 keep-alive connection idle this long
 * is closed (one in use is told "Connection: close" with its next
 * response); an HTTP/2 client gets the final GOAWAY this long after the
 * notice, and its connection closes this long after that, once its
 * streams are done. */
#define DMSC_L7_DRAIN_IDLE_MS 1000

/* Deadlines (each stream's timeout, idle connections); draining: each
 * connection gets a GOAWAY notice, then the final GOAWAY, and closes once
 * its streams are done. */
void dmsc_l7_h2_sweep(struct dmsc_l7_h2_env *env, uint64_t now_ns, bool draining);

/* Frees the connections closed during the last batch of events. */
void dmsc_l7_h2_reap(struct dmsc_l7_h2_env *env);

/* The client's address of socket fd as text (IPv4 for an IPv4-mapped
 * one): 0 or a negative errno. */
int dmsc_l7_h2_client_addr(int fd, char *out, size_t size);

/* "v1, v2, hop" into out (size bytes): the n values (lens[i] bytes each,
 * empty ones left out) the client sent, then this hop's. Its length, or
 * -ENOSPC. */
int dmsc_l7_h2_forward_value(const char *const *values, const size_t *lens, size_t n,
			     const char *hop, char *out, size_t size);

/* Closes every connection (the worker exits). */
void dmsc_l7_h2_close_all(struct dmsc_l7_h2_env *env);

#endif /* DMSC_L7_H2_H */
