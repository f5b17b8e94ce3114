// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7's request-head parser (l7_http.h): http_parser callbacks that
 * collect a request into bounded buffers, and the checks that refuse one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "l7_http.h"

/* the head buffer a parser starts with; it grows to max_header_bytes */
#define HEAD_FIRST_CAP 4096u

/* A piece of the head (the target, a field's name or value) appended, its
 * length counted in *piece_len: 0, or -1 past max_header_bytes (431). */
static int head_add(struct dmsc_l7_req_parser *p, const char *at, size_t len, uint32_t *piece_len)
{
	if (p->head_len + len > p->lim.max_header_bytes) {
		p->status = 431;
		return -1;
	}
	if (p->head_len + len > p->head_cap) {
		/* grown as a head needs it: a connection whose heads are small
		 * keeps a small buffer (the head is held by offsets: no view
		 * into it lives across a call) */
		size_t cap = p->head_cap * 2;
		char *head;

		if (cap < p->head_len + len)
			cap = p->head_len + len;
		if (cap > p->lim.max_header_bytes)
			cap = p->lim.max_header_bytes;
		head = realloc(p->head, cap);
		if (!head) {
			p->status = 503;
			return -1;
		}
		p->head = head;
		p->head_cap = cap;
	}
	memcpy(p->head + p->head_len, at, len);
	p->head_len += len;
	*piece_len += (uint32_t)len;
	return 0;
}

static int on_req_begin(http_parser *hp)
{
	struct dmsc_l7_req_parser *p = hp->data;

	p->head_len = p->url_off = p->url_len = 0;
	p->n_hdrs = 0;
	p->in_value = false;
	p->status = 0;
	p->req_done = p->req_chunked = p->upgrade = false;
	if (p->hooks && p->hooks->begin)
		return p->hooks->begin(p);
	return 0;
}

static int on_req_url(http_parser *hp, const char *at, size_t len)
{
	struct dmsc_l7_req_parser *p = hp->data;

	if (p->url_len + len > p->lim.max_target) {
		p->status = 414;
		return -1;
	}
	return head_add(p, at, len, &p->url_len);
}

/* The last field's value ends: without its trailing whitespace, which
 * is not part of it (RFC 9110 5.5; the parser drops only the leading), so
 * that "x-canary: yes " matches a route's "yes" as a server reads it. */
static void value_end(struct dmsc_l7_req_parser *p)
{
	struct dmsc_l7_http_hdr *h = &p->hdrs[p->n_hdrs - 1];

	while (h->val_len && (p->head[h->val_off + h->val_len - 1] == ' ' ||
			      p->head[h->val_off + h->val_len - 1] == '\t'))
		h->val_len--;
}

static int on_req_field(http_parser *hp, const char *at, size_t len)
{
	struct dmsc_l7_req_parser *p = hp->data;
	struct dmsc_l7_http_hdr *h;

	if (p->n_hdrs == 0 || p->in_value) {
		if (p->in_value)
			value_end(p);
		if (p->n_hdrs >= p->lim.max_headers) {
			p->status = 431;
			return -1;
		}
		h = &p->hdrs[p->n_hdrs++];
		h->name_off = (uint32_t)p->head_len;
		h->name_len = h->val_len = 0;
		h->val_off = 0;
		p->in_value = false;
	}
	h = &p->hdrs[p->n_hdrs - 1];
	return head_add(p, at, len, &h->name_len);
}

static int on_req_value(http_parser *hp, const char *at, size_t len)
{
	struct dmsc_l7_req_parser *p = hp->data;
	struct dmsc_l7_http_hdr *h = &p->hdrs[p->n_hdrs - 1];

	if (!p->in_value) {
		p->in_value = true;
		h->val_off = (uint32_t)p->head_len;
	}
	return head_add(p, at, len, &h->val_len);
}

bool dmsc_l7_http_hdr_is(const struct dmsc_l7_req_parser *p, const struct dmsc_l7_http_hdr *h,
			 const char *name)
{
	size_t n = strlen(name);

	return h->name_len == n && strncasecmp(p->head + h->name_off, name, n) == 0;
}

bool dmsc_l7_http_conn_lists(const struct dmsc_l7_req_parser *p, const struct dmsc_l7_http_hdr *h)
{
	uint32_t i;

	for (i = 0; i < p->n_hdrs; i++) {
		const struct dmsc_l7_http_hdr *c = &p->hdrs[i];

		if (dmsc_l7_http_hdr_is(p, c, "connection") &&
		    dmsc_http_list_has(p->head + c->val_off, c->val_len, p->head + h->name_off,
				     h->name_len))
			return true;
	}
	return false;
}

static bool name_is(const char *name, size_t len, const char *what)
{
	return strlen(what) == len && strncasecmp(name, what, len) == 0;
}

/* RFC 9110 7.6.1: the hop-by-hop fields of a response (besides those its
 * Connection names); Transfer-Encoding is the next hop's framing. */
static bool resp_persistence(const char *name, size_t len)
{
	return name_is(name, len, "connection") || name_is(name, len, "keep-alive") ||
	       name_is(name, len, "proxy-connection");
}

static bool resp_hop_by_hop(const char *name, size_t len)
{
	static const char *const names[] = {"connection",	 "keep-alive", "proxy-connection",
					    "te",		 "trailer",    "upgrade",
					    "transfer-encoding", NULL};
	size_t i;

	for (i = 0; names[i]; i++)
		if (name_is(name, len, names[i]))
			return true;
	return false;
}

/* One line of a head: [*s, *e) without its line ending; *next past it.
 * False at the empty line that ends the head, or at the end. */
static bool head_line(const char *head, size_t len, size_t *pos, size_t *s, size_t *e)
{
	const char *nl = memchr(head + *pos, '\n', len - *pos);
	size_t end;

	if (!nl)
		return false;
	end = (size_t)(nl - head);
	*s = *pos;
	*e = end > *pos && head[end - 1] == '\r' ? end - 1 : end;
	*pos = end + 1;
	return *e > *s;
}

int dmsc_l7_resp_head_rewrite(const char *head, size_t len, unsigned int flags, char *out,
			      size_t cap)
{
	const char *conn = "Connection: close\r\n\r\n", *ka = "Connection: keep-alive\r\n\r\n";
	const char *tail = (flags & DMSC_L7_RESP_CLOSE) ? conn : ka;
	size_t pos = 0, s, e, o = 0, cs, ce, cpos;
	bool drop = false;

#define OUT(ptr, n)                                                                               \
	do {                                                                                      \
		if (o + (n) > cap)                                                                \
			return -ENOSPC;                                                           \
		memcpy(out + o, (ptr), (n));                                                      \
		o += (n);                                                                         \
	} while (0)
	if (!head_line(head, len, &pos, &s, &e))
		return -EINVAL;
	OUT(head + s, e - s); /* the status line */
	OUT("\r\n", 2);
	while (head_line(head, len, &pos, &s, &e)) {
		const char *colon;
		size_t nlen;

		if (head[s] == ' ' || head[s] == '\t') {
			/* obs-fold: part of the field before it */
			if (!drop) {
				OUT(head + s, e - s);
				OUT("\r\n", 2);
			}
			continue;
		}
		colon = memchr(head + s, ':', e - s);
		nlen = colon ? (size_t)(colon - (head + s)) : e - s;
		if (flags & DMSC_L7_RESP_SAME_VERSION) {
			drop = colon && resp_persistence(head + s, nlen);
			if (!drop) {
				OUT(head + s, e - s);
				OUT("\r\n", 2);
			}
			continue;
		}
		drop = !colon || resp_hop_by_hop(head + s, nlen) ||
		       ((flags & DMSC_L7_RESP_NO_LENGTH) && name_is(head + s, nlen, "content-length"));
		/* a field that the response's own Connection names */
		for (cpos = 0; !drop && head_line(head, len, &cpos, &cs, &ce);) {
			const char *cc = memchr(head + cs, ':', ce - cs);

			if (cc && name_is(head + cs, (size_t)(cc - (head + cs)), "connection") &&
			    dmsc_http_list_has(cc + 1, (size_t)((head + ce) - (cc + 1)), head + s, nlen))
				drop = true;
		}
		if (!drop) {
			OUT(head + s, e - s);
			OUT("\r\n", 2);
		}
	}
	OUT(tail, strlen(tail));
#undef OUT
	return (int)o;
}

bool dmsc_l7_http_val_is(const struct dmsc_l7_req_parser *p, const struct dmsc_l7_http_hdr *h,
			 const char *value)
{
	size_t n = strlen(value);

	return h->val_len == n && strncasecmp(p->head + h->val_off, value, n) == 0;
}

void dmsc_l7_http_framing(const struct dmsc_l7_req_parser *p, struct dmsc_l7_http_framing *f)
{
	uint32_t i;

	*f = (struct dmsc_l7_http_framing){0};
	for (i = 0; i < p->n_hdrs; i++) {
		const struct dmsc_l7_http_hdr *h = &p->hdrs[i];

		/* RFC 9112 5.1: no whitespace between a field name and the
		 * colon; a server must reject it (the parser lets it pass) */
		if (memchr(p->head + h->name_off, ' ', h->name_len) ||
		    memchr(p->head + h->name_off, '\t', h->name_len))
			f->bad = true;
		if (dmsc_l7_http_hdr_is(p, h, "host"))
			f->n_host++;
		else if (dmsc_l7_http_hdr_is(p, h, "content-length"))
			f->n_cl++;
		else if (dmsc_l7_http_hdr_is(p, h, "transfer-encoding")) {
			f->n_te++;
			if (!dmsc_l7_http_val_is(p, h, "chunked"))
				f->bad = true;
		}
	}
}

/* Does the request ask to upgrade to h2c alone (every Upgrade field says
 * exactly "h2c")? */
static bool upgrade_h2c(const struct dmsc_l7_req_parser *p)
{
	bool h2c = false;
	uint32_t i;

	for (i = 0; i < p->n_hdrs; i++) {
		const struct dmsc_l7_http_hdr *h = &p->hdrs[i];

		if (!dmsc_l7_http_hdr_is(p, h, "upgrade"))
			continue;
		if (!dmsc_l7_http_val_is(p, h, "h2c"))
			return false;
		h2c = true;
	}
	return h2c;
}

static int on_req_headers(http_parser *hp)
{
	struct dmsc_l7_req_parser *p = hp->data;
	struct dmsc_l7_http_framing f;
	uint32_t i;

	if (p->n_hdrs && p->in_value)
		value_end(p);
	/* RFC 9110 5.5: a field value with NUL must be refused; the parser
	 * lets one through as a value's first byte (found by fuzz_http) */
	if (memchr(p->head, '\0', p->head_len))
		p->status = 400;
	/* RFC 9112 3.2: the target is visible ASCII; the parser lets a tab
	 * (and other control bytes) through, which a backend may split on */
	for (i = 0; i < p->url_len; i++) {
		unsigned char ch = (unsigned char)p->head[p->url_off + i];

		if (ch <= 0x20 || ch == 0x7f)
			p->status = 400;
	}
	dmsc_l7_http_framing(p, &f);
	if (f.bad)
		p->status = 400;
	/* RFC 9112 6.1 and 6.3: both framings at once is how requests are
	 * smuggled; refuse and close (never guess which one the backend
	 * would believe). Host exactly once in HTTP/1.1 (RFC 9112 3.2). */
	if ((f.n_te && f.n_cl) || f.n_te > 1 || f.n_cl > 1 ||
	    ((hp->http_major == 1 && hp->http_minor >= 1) ? f.n_host != 1 : f.n_host > 1))
		p->status = 400;
	if (hp->method == HTTP_CONNECT)
		p->status = 501;
	else if (hp->upgrade && (hp->http_minor == 0 || upgrade_h2c(p)))
		/* RFC 9110 7.8: an HTTP/1.0 request's Upgrade is ignored; RFC
		 * 9113 3.1: so may h2c's be (HTTP/2 is served with prior
		 * knowledge): answered in HTTP/1.1, as a server without it
		 * answers (decision 82) */
		hp->upgrade = 0;
	else if (hp->upgrade)
		p->upgrade = true;
	if (hp->http_major != 1)
		p->status = 505;
	p->req_chunked = (hp->flags & F_CHUNKED) != 0;
	/* The parser's framing must be the one these headers say: it takes
	 * a field merely starting with "Transfer-Encoding" (say
	 * "Transfer-Encodingx: 1") as one, drops chunked and fails only after
	 * this callback, when the head has been routed and sent on without a
	 * body (found by fuzz_http). */
	if (p->req_chunked != (f.n_te == 1) || !!(hp->flags & F_CONTENTLENGTH) != (f.n_cl == 1))
		p->status = 400;
	p->paused_head = true;
	http_parser_pause(hp, 1);
	return 0;
}

static int on_req_body(http_parser *hp, const char *at, size_t len)
{
	struct dmsc_l7_req_parser *p = hp->data;

	if (p->hooks && p->hooks->body)
		return p->hooks->body(p, at, len);
	return 0;
}

static int on_req_done(http_parser *hp)
{
	struct dmsc_l7_req_parser *p = hp->data;

	if (p->hooks && p->hooks->done && p->hooks->done(p))
		return -1;
	p->req_done = true;
	p->paused_done = true;
	http_parser_pause(hp, 1);
	return 0;
}

static const http_parser_settings req_settings = {
    .on_message_begin = on_req_begin,
    .on_url = on_req_url,
    .on_header_field = on_req_field,
    .on_header_value = on_req_value,
    .on_headers_complete = on_req_headers,
    .on_body = on_req_body,
    .on_message_complete = on_req_done,
};

int dmsc_l7_http_init(struct dmsc_l7_req_parser *p, const struct dmsc_l7_http_limits *lim,
		      const struct dmsc_l7_http_hooks *hooks, void *owner)
{
	memset(p, 0, sizeof(*p));
	p->lim = *lim;
	p->hooks = hooks;
	p->owner = owner;
	p->head_cap = lim->max_header_bytes < HEAD_FIRST_CAP ? lim->max_header_bytes : HEAD_FIRST_CAP;
	p->head = malloc(p->head_cap ? p->head_cap : 1);
	p->hdrs = calloc(lim->max_headers ? lim->max_headers : 1, sizeof(*p->hdrs));
	if (!p->head || !p->hdrs) {
		dmsc_l7_http_free(p);
		return -ENOMEM;
	}
	http_parser_init(&p->hp, HTTP_REQUEST);
	p->hp.data = p;
	return 0;
}

void dmsc_l7_http_free(struct dmsc_l7_req_parser *p)
{
	free(p->head);
	free(p->hdrs);
	p->head = NULL;
	p->hdrs = NULL;
}

int dmsc_l7_http_feed(struct dmsc_l7_req_parser *p, const char *buf, size_t len, size_t *used,
		      int *status)
{
	enum http_errno e;

	p->paused_head = p->paused_done = false;
	*used = http_parser_execute(&p->hp, &req_settings, buf, len);
	e = HTTP_PARSER_ERRNO(&p->hp);
	if (e == HPE_PAUSED) {
		http_parser_pause(&p->hp, 0);
	} else if (e != HPE_OK) {
		*status = e == HPE_HEADER_OVERFLOW ? 431 : p->status ? p->status : 400;
		return -EBADMSG;
	}
	return 0;
}

void dmsc_l7_http_eof(struct dmsc_l7_req_parser *p)
{
	http_parser_execute(&p->hp, &req_settings, NULL, 0);
}
