// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer harness for dmsc-l7's HTTP request handling: the request-head
 * parser of user/l7/l7_http.c (Debian's libhttp-parser driven by the
 * callbacks that collect method, target, headers and body framing, and the
 * checks that refuse a request), the very code dmsc-l7 runs, fed the way
 * client_parse() feeds it: in pieces, resuming after each pause.
 *
 * Input: byte 0 picks the limits (bit 0: small ones, to reach 414 and 431
 * often; else dmsc-l7's defaults, 60 KiB of head), bytes 1-2 where the
 * rest is split into two feeds (streaming), the rest is the client's byte
 * stream.
 *
 * Beyond "no crash, no sanitizer report" it checks, and aborts when not:
 *   - a refusal's status is 400, 414, 431, 501 or 505 (503: out of memory);
 *   - a feed that does not fail and does not pause consumes at least one
 *     byte (else dmsc-l7's loop would spin), never more than it was given;
 *   - a head that is accepted has a known method, a target within the limit
 *     that starts with "/" or "*" or is an absolute URI (scheme "://"), at
 *     most max_headers fields inside the head buffer, no whitespace in a
 *     field name, no NUL, CR or LF byte, HTTP/1.x, not both Content-Length and
 *     Transfer-Encoding, at most one of each, Host exactly once in 1.1;
 *   - a request reported complete had an accepted head; its body bytes never
 *     exceed the bytes fed, and equal its Content-Length when it had one.
 * Build and run: `make fuzz-build`, `scripts/fuzz.sh 30 http`.
 */
#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l7_http.h"
#include "fuzz_check.h"


struct run {
	size_t fed;	 /* bytes the parser consumed so far */
	const char *cur; /* the feed in progress */
	size_t cur_len;
	uint64_t body;	     /* body bytes of the current request */
	uint64_t body_total; /* of every request */
	uint64_t cl;	     /* Content-Length of the current request */
	bool has_cl, in_head, head_ok;
	unsigned int requests;
};

static int hook_begin(struct dmsc_l7_req_parser *p)
{
	struct run *r = p->owner;

	r->body = 0;
	r->has_cl = false;
	r->in_head = true;
	r->head_ok = false;
	return 0;
}

static int hook_body(struct dmsc_l7_req_parser *p, const char *at, size_t len)
{
	struct run *r = p->owner;

	CHECK(r->head_ok);
	CHECK(at != NULL && len > 0);
	/* body bytes are bytes of the feed in progress, never past it */
	CHECK(at >= r->cur && len <= r->cur_len && at - r->cur <= (ptrdiff_t)(r->cur_len - len));
	r->body += len;
	r->body_total += len;
	CHECK(r->body_total <= r->fed + r->cur_len);
	return 0;
}

static int hook_done(struct dmsc_l7_req_parser *p)
{
	struct run *r = p->owner;

	CHECK(r->head_ok);
	if (r->has_cl)
		CHECK(r->body == r->cl);
	r->requests++;
	return 0;
}

static const struct dmsc_l7_http_hooks hooks = {
    .begin = hook_begin,
    .body = hook_body,
    .done = hook_done,
};

static bool status_documented(int status)
{
	return status == 400 || status == 414 || status == 431 || status == 501 || status == 503 ||
	       status == 505;
}

static bool target_ok(const char *t, size_t n)
{
	size_t i = 0;

	if (n == 0)
		return false;
	if (t[0] == '/' || t[0] == '*')
		return true;
	/* absolute-form: scheme "://" (http_parser's schema is letters) */
	while (i < n && isalpha((unsigned char)t[i]))
		i++;
	return i > 0 && n - i >= 3 && !memcmp(t + i, "://", 3);
}

static void check_head(const struct dmsc_l7_req_parser *p, struct run *r)
{
	struct dmsc_l7_http_framing f;
	const char *m = http_method_str((enum http_method)p->hp.method);
	uint32_t i;

	CHECK(m && strcmp(m, "<unknown>") != 0);
	CHECK(p->head_len <= p->lim.max_header_bytes);
	CHECK(p->head_len <= p->head_cap && p->head_cap <= p->lim.max_header_bytes);
	CHECK(p->url_len <= p->lim.max_target);
	CHECK((size_t)p->url_off + p->url_len <= p->head_len);
	CHECK(target_ok(p->head + p->url_off, p->url_len));
	CHECK(!memchr(p->head, '\0', p->head_len));
	CHECK(!memchr(p->head, '\r', p->head_len) && !memchr(p->head, '\n', p->head_len));
	CHECK(p->n_hdrs <= p->lim.max_headers);
	CHECK(p->hp.http_major == 1);
	/* an accepted switch is one the helper forwards (decision 82) */
	CHECK(!!p->hp.upgrade == p->upgrade && p->hp.method != HTTP_CONNECT);
	CHECK(!p->upgrade || p->hp.http_minor >= 1);
	for (i = 0; i < p->n_hdrs; i++) {
		const struct dmsc_l7_http_hdr *h = &p->hdrs[i];

		CHECK(h->name_len > 0);
		CHECK((size_t)h->name_off + h->name_len <= p->head_len);
		CHECK((size_t)h->val_off + h->val_len <= p->head_len);
	}
	dmsc_l7_http_framing(p, &f);
	CHECK(!f.bad);
	CHECK(f.n_cl <= 1 && f.n_te <= 1 && !(f.n_cl && f.n_te));
	CHECK(p->hp.http_minor >= 1 ? f.n_host == 1 : f.n_host <= 1);
	CHECK(p->req_chunked == (f.n_te == 1));
	r->has_cl = (p->hp.flags & F_CONTENTLENGTH) != 0;
	CHECK(r->has_cl == (f.n_cl == 1));
	r->cl = r->has_cl ? p->hp.content_length : 0;
	r->head_ok = true;
}

/* One feed, as client_parse() does it: resume after each pause. Returns
 * false when the connection is over (refused). */
static bool feed(struct dmsc_l7_req_parser *p, struct run *r, const char *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		size_t used = 0;
		int status = 0;
		int err;

		r->cur = buf + off;
		r->cur_len = len - off;
		err = dmsc_l7_http_feed(p, buf + off, len - off, &used, &status);
		CHECK(used <= len - off);
		r->fed += used;
		off += used;
		if (err) {
			CHECK(err == -EBADMSG);
			CHECK(status_documented(status));
			return false;
		}
		/* a pause in on_headers_complete or on_message_complete leaves
		 * the byte it stopped on unconsumed: 0 is fine then (that byte
		 * is parsed again on resume), never else */
		CHECK(used > 0 || p->paused_head || p->paused_done);
		if (p->paused_head) {
			r->in_head = false;
			if (p->status) {
				CHECK(status_documented(p->status));
				return false;
			}
			check_head(p, r);
		}
		if (p->paused_done)
			CHECK(p->req_done);
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct dmsc_l7_http_limits helper = {61440, 100, 61440}, small = {256, 8, 64};
	struct dmsc_l7_req_parser p;
	struct run r = {0};
	const char *buf;
	size_t len, split;

	if (size < 3)
		return 0;
	split = (size_t)data[1] << 8 | data[2];
	buf = (const char *)data + 3;
	len = size - 3;
	split %= len + 1;
	CHECK(dmsc_l7_http_init(&p, (data[0] & 1) ? &small : &helper, &hooks, &r) == 0);
	if (feed(&p, &r, buf, split) && feed(&p, &r, buf + split, len - split) && r.in_head)
		dmsc_l7_http_eof(&p); /* the client closed mid-head */
	CHECK(r.body_total <= r.fed && r.fed <= len);
	dmsc_l7_http_free(&p);
	return 0;
}
