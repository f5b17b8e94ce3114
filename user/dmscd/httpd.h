/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The smallest HTTP/1.x server that serves one page: dmscd's /metrics.
 * One connection at a time, from the caller's poll loop; every read and
 * write has a deadline, so a slow or silent client cannot stall the agent
 * for more than DMSC_HTTPD_TIMEOUT_MS.
 */
#ifndef DMSC_HTTPD_H
#define DMSC_HTTPD_H

#include <stddef.h>

#include "metrics.h"

#define DMSC_HTTPD_TIMEOUT_MS 2000
#define DMSC_HTTPD_REQUEST_MAX 8192

/* Fills body for path; returns the HTTP status (200, 404, 500). */
typedef int (*dmsc_httpd_handler)(const char *path, struct dmsc_buf *body, void *ctx);

/* "ADDR:PORT" (IPv4; port 0 picks a free one). Returns the listening fd
 * (non-blocking) or a negative errno; bound is set to "ADDR:PORT" as
 * bound. */
int dmsc_httpd_listen(const char *addr_port, char *bound, size_t bound_len);

/* Accepts and answers one waiting connection (if any). */
void dmsc_httpd_serve(int listen_fd, dmsc_httpd_handler handler, void *ctx);

/* Parses a request head: method must be GET or HEAD; copies the path
 * (without query). Returns 0, or the HTTP status to answer with (400,
 * 405). Pure, for the unit tests. */
int dmsc_httpd_parse_request(const char *req, size_t len, char *path, size_t path_len,
			     int *head_only);

#endif /* DMSC_HTTPD_H */
