/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The smallest HTTP/1.x server that serves one page: dmscd's /metrics.
 * Each connection is served by a thread of its own, never by the caller's
 * event loop, so that a slow or silent client (or a page of 100,000
 * services) delays neither an apply nor SIGTERM; at most max_conns at
 * once, the others get a 503 on the spot. The page is rendered from what
 * make_job copied in the caller's thread (a snapshot), never from state
 * the loop changes meanwhile.
 */
#ifndef DMSC_HTTPD_H
#define DMSC_HTTPD_H

#include <stdatomic.h>
#include <stddef.h>

#include "metrics.h"

#define DMSC_HTTPD_TIMEOUT_MS 10000 /* for the request to arrive */
#define DMSC_HTTPD_IDLE_MS 30000    /* an answer without progress */
#define DMSC_HTTPD_REQUEST_MAX 8192
#define DMSC_HTTPD_CONNS_DEFAULT 4

/* Fills body for path; returns the HTTP status (200, 404, 500). Runs in
 * the connection's thread, with the job make_job made. */
typedef int (*dmsc_httpd_handler)(const char *path, struct dmsc_buf *body, void *job);

struct dmsc_httpd {
	int listen_fd;
	int max_conns;
	dmsc_httpd_handler handler;
	void *(*make_job)(void *ctx); /* in the caller's thread; NULL: job = ctx */
	void (*free_job)(void *job);  /* in the connection's thread, or NULL */
	void *ctx;
	atomic_int active;
};

/* "ADDR:PORT" (IPv4; port 0 picks a free one). Returns the listening fd
 * (non-blocking) or a negative errno; bound is set to "ADDR:PORT" as
 * bound. */
int dmsc_httpd_listen(const char *addr_port, char *bound, size_t bound_len);

/* Accepts every waiting connection and starts its thread; returns at
 * once. */
void dmsc_httpd_accept(struct dmsc_httpd *h);

/* Parses a request head: method must be GET or HEAD; copies the path
 * (without query). Returns 0, or the HTTP status to answer with (400,
 * 405). Pure, for the unit tests. */
int dmsc_httpd_parse_request(const char *req, size_t len, char *path, size_t path_len,
			     int *head_only);

#endif /* DMSC_HTTPD_H */
