/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * dmsc-l7's request-head parser: Node's http_parser (Debian's
 * libhttp-parser) driven by callbacks that collect a request's method,
 * target, headers and body framing into bounded buffers, and the checks that
 * refuse a request (400, 414, 431, 501, 505; both Content-Length and
 * Transfer-Encoding; a field name with whitespace; Host not exactly once in
 * HTTP/1.1). Pure: no I/O, no clock; dmsc-l7 and tests/fuzz/fuzz_http.c run
 * the same code.
 *
 * The parser pauses after each request head (paused_head: route it, or
 * refuse it if status is set) and after each message (paused_done: the next
 * pipelined request waits). The owner's hooks see the message begin, the
 * body bytes as they come and the message end.
 */
#ifndef DMSC_L7_HTTP_H
#define DMSC_L7_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

#include "http_list.h"

struct dmsc_l7_http_limits {
	uint32_t max_header_bytes; /* request target + header names and values: past it 431 */
	uint32_t max_headers;	   /* header fields: past it 431 */
	uint32_t max_target;	   /* request target: past it 414 */
};

/* offsets into dmsc_l7_req_parser.head */
struct dmsc_l7_http_hdr {
	uint32_t name_off, name_len, val_off, val_len;
};

struct dmsc_l7_req_parser;

struct dmsc_l7_http_hooks {
	/* a request starts; nonzero fails the parse */
	int (*begin)(struct dmsc_l7_req_parser *p);
	/* body bytes (de-chunked); nonzero fails the parse */
	int (*body)(struct dmsc_l7_req_parser *p, const char *at, size_t len);
	/* the request is complete; nonzero fails the parse */
	int (*done)(struct dmsc_l7_req_parser *p);
};

struct dmsc_l7_req_parser {
	http_parser hp; /* method, version, flags, content_length, upgrade */
	struct dmsc_l7_http_limits lim;
	const struct dmsc_l7_http_hooks *hooks;
	void *owner;

	/* the request being parsed */
	char *head; /* grows to lim.max_header_bytes */
	size_t head_len, head_cap;
	uint32_t url_off, url_len;
	struct dmsc_l7_http_hdr *hdrs; /* lim.max_headers */
	uint32_t n_hdrs;
	bool in_value;
	int status; /* 0, or the status that refuses this request */
	bool req_done, req_chunked;
	/* it asks to switch protocols (Upgrade, named by Connection; HTTP/1.1,
	 * not h2c): forwarded as such, and after the backend's 101 the
	 * connection carries bytes both ways (docs/design.md decision 82);
	 * the parser takes no byte past its head */
	bool upgrade;
	bool paused_head, paused_done; /* set by the last feed */
};

/* 0 or -ENOMEM; hooks may be NULL, and so may any of its members. */
int dmsc_l7_http_init(struct dmsc_l7_req_parser *p, const struct dmsc_l7_http_limits *lim,
		      const struct dmsc_l7_http_hooks *hooks, void *owner);
void dmsc_l7_http_free(struct dmsc_l7_req_parser *p);

/*
 * Feeds len bytes (len > 0; a pause stops early: *used says how many were
 * consumed) and resumes a paused parser first. Returns 0, or -EBADMSG when
 * the bytes are not a request it accepts: *status is then the status to
 * answer with (400, 414, 431, 501 for CONNECT, 505) and the parser is done for this
 * connection. A head parsed with p->status set must be refused with it too.
 */
int dmsc_l7_http_feed(struct dmsc_l7_req_parser *p, const char *buf, size_t len, size_t *used,
		      int *status);
/* The client closed its side: tells the parser (no more bytes). */
void dmsc_l7_http_eof(struct dmsc_l7_req_parser *p);

/* Header h's name is name (ASCII case-insensitive)? */
bool dmsc_l7_http_hdr_is(const struct dmsc_l7_req_parser *p, const struct dmsc_l7_http_hdr *h,
			 const char *name);
/* Header h's value is exactly value (ASCII case-insensitive)? */
bool dmsc_l7_http_val_is(const struct dmsc_l7_req_parser *p, const struct dmsc_l7_http_hdr *h,
			 const char *value);

/* What a request head's fields say of its framing: how many Host,
 * Content-Length and Transfer-Encoding fields; bad: a field name with
 * whitespace before its colon (RFC 9112 5.1), or a Transfer-Encoding other
 * than exactly "chunked" (the only coding a request may carry here). */
struct dmsc_l7_http_framing {
	int n_host, n_cl, n_te;
	bool bad;
};
void dmsc_l7_http_framing(const struct dmsc_l7_req_parser *p, struct dmsc_l7_http_framing *f);

/* Does a Connection header of the request name header h (RFC 9110 7.6.1:
 * then h is hop-by-hop and must not be forwarded)? */
bool dmsc_l7_http_conn_lists(const struct dmsc_l7_req_parser *p, const struct dmsc_l7_http_hdr *h);

/* dmsc_l7_resp_head_rewrite flags */
#define DMSC_L7_RESP_CLOSE 1u	  /* "Connection: close" (else keep-alive) */
#define DMSC_L7_RESP_NO_LENGTH 2u /* drop Content-Length too (close-delimited body) */
/* the client speaks the backend's version: only Connection, Keep-Alive and
 * Proxy-Connection go (the framing and the rest pass as they came) */
#define DMSC_L7_RESP_SAME_VERSION 4u

/*
 * A response head (status line to the empty line, as a parser accepted it)
 * for a client of another HTTP version than the backend's: the hop-by-hop
 * fields (Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade,
 * Transfer-Encoding, and every field that Connection names) are dropped and
 * one Connection field is added as flags say (with DMSC_L7_RESP_SAME_VERSION,
 * for a draining helper's "Connection: close", only the fields that say
 * whether the connection persists go). Writes at most cap bytes to
 * out; returns the length, -ENOSPC, or -EINVAL (no status line).
 */
int dmsc_l7_resp_head_rewrite(const char *head, size_t len, unsigned int flags, char *out,
			      size_t cap);

#endif
