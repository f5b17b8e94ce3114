// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* dmsc-l7's request checks and header rewriting (l7_http.c), and the L7
 * view of a policy that dmscd hands the helper (l7_snapshot.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <criterion/criterion.h>

#include "l7_http.h"
#include "l7_snapshot.h"
#include "policy.h"
#include "view_round_trip.h"

static const struct dmsc_l7_http_limits lim = {8192, 64, 4096};

/* Feeds a whole head; returns the status refusing it (0: accepted). */
static int head_status(struct dmsc_l7_req_parser *p, const char *req)
{
	size_t used;
	int status = 0;

	cr_assert_eq(dmsc_l7_http_init(p, &lim, NULL, NULL), 0);
	if (dmsc_l7_http_feed(p, req, strlen(req), &used, &status))
		return status;
	cr_assert(p->paused_head, "the head was parsed: %s", req);
	return p->status;
}

Test(l7_http, control_bytes_in_the_target_are_refused)
{
	struct dmsc_l7_req_parser p;

	cr_expect_eq(head_status(&p, "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
	dmsc_l7_http_free(&p);
	cr_expect_eq(head_status(&p, "GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
	dmsc_l7_http_free(&p);
	cr_expect_eq(head_status(&p, "GET /a%09b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
	dmsc_l7_http_free(&p);
}

/* The head buffer starts small and grows as a head needs it (decision
 * 94): a 20,000-byte field fed 1,000 bytes at a time, across several
 * moves of the buffer, comes out whole; past max_header_bytes, 431. */
Test(l7_http, a_large_head_grows_its_buffer_and_keeps_every_byte)
{
	static const struct dmsc_l7_http_limits big = {61440, 100, 61440};
	struct dmsc_l7_req_parser p;
	size_t used, all = 0, len, vlen = 20000, i;
	char *req = malloc(vlen + 128), *v;
	int status = 0;

	cr_assert(req);
	len = (size_t)sprintf(req, "GET /x HTTP/1.1\r\nHost: x\r\nCookie: ");
	for (i = 0; i < vlen; i++)
		req[len++] = (char)('a' + i % 26);
	len += (size_t)sprintf(req + len, "\r\nX-After: y\r\n\r\n");
	cr_assert_eq(dmsc_l7_http_init(&p, &big, NULL, NULL), 0);
	cr_expect_lt(p.head_cap, vlen, "a parser starts with a small buffer");
	while (all < len && !p.paused_head) {
		size_t n = len - all < 1000 ? len - all : 1000;

		cr_assert_eq(dmsc_l7_http_feed(&p, req + all, n, &used, &status), 0);
		all += used;
	}
	cr_assert(p.paused_head);
	cr_assert_eq(p.status, 0);
	cr_assert_eq(p.n_hdrs, 3);
	cr_expect(dmsc_l7_http_hdr_is(&p, &p.hdrs[1], "cookie"));
	cr_assert_eq(p.hdrs[1].val_len, vlen);
	v = p.head + p.hdrs[1].val_off;
	for (i = 0; i < vlen && v[i] == (char)('a' + i % 26); i++)
		;
	cr_expect_eq(i, vlen, "the value differs at byte %zu", i);
	cr_expect(dmsc_l7_http_val_is(&p, &p.hdrs[2], "y"));
	dmsc_l7_http_free(&p);

	/* the same head with a bound below it: 431 */
	{
		static const struct dmsc_l7_http_limits small = {16384, 100, 61440};

		cr_assert_eq(dmsc_l7_http_init(&p, &small, NULL, NULL), 0);
		status = 0;
		cr_expect_neq(dmsc_l7_http_feed(&p, req, len, &used, &status), 0);
		cr_expect_eq(status, 431);
		dmsc_l7_http_free(&p);
	}
	free(req);
}

/* A field value is what a server reads: without the whitespace around it
 * (RFC 9110 5.5), fed at once or a byte at a time, so that a route's
 * header and an affinity's value match it. */
Test(l7_http, field_values_lose_their_surrounding_whitespace)
{
	static const char req[] = "GET /x HTTP/1.1\r\nHost: x\r\nX-Canary:  yes \t \r\nA:\r\n"
				  "B: y z \r\nC:  \r\n\r\n";
	static const char *const want[][2] = {
	    {"Host", "x"}, {"X-Canary", "yes"}, {"A", ""}, {"B", "y z"}, {"C", ""}};
	struct dmsc_l7_req_parser p;
	size_t used, all, step, i;
	int status = 0;

	for (step = 1; step <= sizeof(req); step += sizeof(req) - 1) {
		cr_assert_eq(dmsc_l7_http_init(&p, &lim, NULL, NULL), 0);
		for (all = 0; all < sizeof(req) - 1 && !p.paused_head; all += used) {
			size_t n = sizeof(req) - 1 - all < step ? sizeof(req) - 1 - all : step;

			cr_assert_eq(dmsc_l7_http_feed(&p, req + all, n, &used, &status), 0);
		}
		cr_assert(p.paused_head);
		cr_assert_eq(p.n_hdrs, 5);
		for (i = 0; i < 5; i++) {
			cr_expect(dmsc_l7_http_hdr_is(&p, &p.hdrs[i], want[i][0]));
			cr_expect_eq(p.hdrs[i].val_len, strlen(want[i][1]),
				     "%s, %zu bytes at a time", want[i][0], step);
			cr_expect(
			    !memcmp(p.head + p.hdrs[i].val_off, want[i][1], strlen(want[i][1])));
		}
		dmsc_l7_http_free(&p);
	}
}

/* Feeds a head and the bytes after it, resumed past the head's pause as
 * dmsc-l7 resumes it: how many bytes the parser took in all. */
static size_t fed(struct dmsc_l7_req_parser *p, const char *req)
{
	size_t used, all = 0, len = strlen(req);
	int status = 0;

	cr_assert_eq(dmsc_l7_http_init(p, &lim, NULL, NULL), 0);
	while (all < len && !p->req_done) {
		cr_assert_eq(dmsc_l7_http_feed(p, req + all, len - all, &used, &status), 0, "%s",
			     req);
		if (!used)
			break;
		all += used;
	}
	return all;
}

Test(l7_http, an_upgrade_is_forwarded_but_h2c_and_http10_ones_are_ignored)
{
	static const char ws[] =
	    "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
	static const char h2c[] =
	    "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
	    "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
	struct dmsc_l7_req_parser p;

	/* a WebSocket handshake: accepted, marked, nothing taken past it */
	cr_expect_eq(head_status(&p, ws), 0);
	cr_expect(p.upgrade);
	dmsc_l7_http_free(&p);
	cr_expect_eq(fed(&p, "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n"
			     "Upgrade: websocket\r\n\r\n\x81\x05hello"),
		     strlen(ws));
	cr_expect(p.req_done && p.upgrade);
	dmsc_l7_http_free(&p);
	/* h2c: served as HTTP/1.1; the next request is parsed as one */
	cr_expect_eq(head_status(&p, h2c), 0);
	cr_expect_not(p.upgrade);
	dmsc_l7_http_free(&p);
	cr_expect_eq(fed(&p, "POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
			     "Content-Length: 2\r\n\r\nabGET"),
		     strlen("POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
			    "Content-Length: 2\r\n\r\nab"));
	cr_expect_not(p.upgrade);
	dmsc_l7_http_free(&p);
	/* h2c among others is a switch the backend may take */
	cr_expect_eq(head_status(&p, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
				     "Upgrade: h2c\r\nUpgrade: websocket\r\n\r\n"),
		     0);
	cr_expect(p.upgrade);
	dmsc_l7_http_free(&p);
	/* HTTP/1.0: ignored (RFC 9110 7.8) */
	cr_expect_eq(
	    head_status(&p, "GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
	    0);
	cr_expect_not(p.upgrade);
	dmsc_l7_http_free(&p);
	/* Upgrade not named by Connection: a field like another */
	cr_expect_eq(head_status(&p, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"), 0);
	cr_expect_not(p.upgrade);
	dmsc_l7_http_free(&p);
	/* CONNECT stays refused */
	cr_expect_eq(head_status(&p, "CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n"), 501);
	dmsc_l7_http_free(&p);
}

Test(l7_http, tokens_of_a_list)
{
	const char *v = " keep-alive ,X-Secret,, \tUpgrade\t";

	cr_expect(dmsc_http_list_has(v, strlen(v), "x-secret", 8));
	cr_expect(dmsc_http_list_has(v, strlen(v), "upgrade", 7));
	cr_expect(dmsc_http_list_has(v, strlen(v), "Keep-Alive", 10));
	cr_expect_not(dmsc_http_list_has(v, strlen(v), "x-secre", 7));
	cr_expect_not(dmsc_http_list_has(v, strlen(v), "", 0));
	cr_expect_not(dmsc_http_list_has("", 0, "a", 1));
}

Test(l7_http, fields_named_by_connection_are_hop_by_hop)
{
	struct dmsc_l7_req_parser p;
	uint32_t i;
	int listed = 0;

	cr_assert_eq(head_status(&p, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-A\r\n"
				     "X-A: 1\r\nX-B: 2\r\nconnection: x-c\r\nX-C: 3\r\n\r\n"),
		     0);
	for (i = 0; i < p.n_hdrs; i++) {
		bool l = dmsc_l7_http_conn_lists(&p, &p.hdrs[i]);

		if (dmsc_l7_http_hdr_is(&p, &p.hdrs[i], "x-a") ||
		    dmsc_l7_http_hdr_is(&p, &p.hdrs[i], "x-c"))
			cr_expect(l, "header %u is named by a Connection field", i);
		else
			cr_expect_not(l, "header %u is not", i);
		listed += l;
	}
	cr_expect_eq(listed, 2);
	dmsc_l7_http_free(&p);
}

Test(l7_http, response_head_for_an_http10_client)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
				   "Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\n"
				   "Keep-Alive: timeout=5\r\nX-Folded: a\r\n b\r\nContent-Length: 3\r\n"
				   "X-End: 1\r\n\r\n";
	char out[512];
	int n;

	n = dmsc_l7_resp_head_rewrite(head, sizeof(head) - 1,
				      DMSC_L7_RESP_CLOSE | DMSC_L7_RESP_NO_LENGTH, out, sizeof(out));
	cr_assert_gt(n, 0);
	out[n] = '\0';
	cr_expect_str_eq(out, "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nX-End: 1\r\n"
			      "Connection: close\r\n\r\n");
	n = dmsc_l7_resp_head_rewrite(head, sizeof(head) - 1, 0, out, sizeof(out));
	cr_assert_gt(n, 0);
	out[n] = '\0';
	cr_expect(strstr(out, "Content-Length: 3\r\n"), "%s", out);
	cr_expect(strstr(out, "Connection: keep-alive\r\n\r\n"), "%s", out);
	cr_expect_eq(dmsc_l7_resp_head_rewrite(head, sizeof(head) - 1, 0, out, 20), -ENOSPC);
	cr_expect_eq(dmsc_l7_resp_head_rewrite("", 0, 0, out, sizeof(out)), -EINVAL);
}

/* A draining helper tells an HTTP/1.1 client that the connection ends
 * after this response: only the persistence fields change. */
Test(l7_http, response_head_closed_at_the_drain)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
				   "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
				   "X-Folded: a\r\n b\r\nTrailer: X-Sum\r\n\r\n";
	char out[512];
	int n;

	n = dmsc_l7_resp_head_rewrite(head, sizeof(head) - 1,
				      DMSC_L7_RESP_CLOSE | DMSC_L7_RESP_SAME_VERSION, out,
				      sizeof(out));
	cr_assert_gt(n, 0);
	out[n] = '\0';
	cr_expect_str_eq(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
			      "X-Folded: a\r\n b\r\nTrailer: X-Sum\r\nConnection: close\r\n\r\n");
}

/* ---- the L7 view ---- */
static const char *const doc_fmt =
    "{ \"services\": ["
    "  { \"name\": \"db\", \"vip\": \"198.19.0.1\", \"port\": 5432,"
    "    \"allow_from\": [ \"%s\" ],"
    "    \"backends\": [ { \"address\": \"198.18.1.9\", \"port\": 5432 } ] },"
    "  { \"name\": \"web\", \"vip\": \"198.19.0.2\", \"port\": 80, \"protocol\": \"http\","
    "    \"allow_from\": [ \"%s\" ], \"accelerate\": \"off\","
    "    \"rate_limit\": { \"requests_per_second\": %d, \"burst\": 5,"
    "                    \"connections_per_second\": 100 },"
    "    \"backends\": ["
    "      { \"address\": \"198.18.1.2\", \"port\": 80, \"weight\": 80,"
    "        \"labels\": { \"version\": \"v1\" } },"
    "      { \"address\": \"198.18.1.3\", \"port\": 80, \"weight\": 0,"
    "        \"labels\": { \"version\": \"%s\" } } ],"
    "    \"routes\": ["
    "      { \"match\": { \"path_prefix\": \"/api/\", \"method\": \"GET\","
    "                     \"headers\": { \"x-canary\": \"yes\" } },"
    "        \"backends\": { \"version\": \"%s\" }, \"timeout_ms\": %d, \"retries\": 3 },"
    "      { \"match\": { \"path\": \"/exact\" }, \"idempotent\": true } ] } ] }";

static char *view(const char *allow, int rps, const char *label, const char *sel, int timeout)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p = {0};
	char doc[4096], *out;
	size_t len;

	snprintf(doc, sizeof(doc), doc_fmt, allow, allow, rps, label, sel, timeout);
	cr_assert_eq(dmsc_policy_parse(doc, strlen(doc), "t", &p, &errs), 0, "%s", doc);
	cr_assert_eq(dmsc_l7_view_json(&p, &out, &len), 0);
	cr_assert_eq(strlen(out), len);
	dmsc_policy_free(&p);
	dmsc_policy_errors_free(&errs);
	return out;
}

Test(l7_view, is_a_policy_of_the_http_services_that_gives_itself_again)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p = {0};
	char *v = view("a.slice", 10, "v1", "v1", 250), *again;
	size_t len;

	cr_assert_eq(dmsc_policy_parse(v, strlen(v), "view", &p, &errs), 0, "%s", v);
	cr_expect_eq(p.n_services, 1, "tcp services are not in it");
	cr_expect_str_eq(p.services[0].name, "web");
	cr_expect_eq(p.services[0].n_routes, 2);
	cr_expect_eq(p.services[0].routes[0].timeout_ms, 250);
	cr_expect(p.services[0].routes[1].idempotent && !p.services[0].routes[0].idempotent);
	cr_expect_eq(p.services[0].rate_limit.requests_per_second, 10);
	cr_expect_eq(p.services[0].backends[1].weight, 0);
	cr_assert_eq(dmsc_l7_view_json(&p, &again, &len), 0);
	cr_expect_str_eq(again, v, "the same policy, the same bytes");
	free(again);
	free(v);
	dmsc_policy_free(&p);
	dmsc_policy_errors_free(&errs);
}

Test(l7_view, changes_with_every_field_the_helper_uses_and_only_those)
{
	char *base = view("a.slice", 10, "v1", "v1", 250);
	char *same = view("b.slice", 10, "v1", "v1", 250); /* allow_from: the kernel's */
	char *timeout = view("a.slice", 10, "v1", "v1", 300);
	char *rps = view("a.slice", 11, "v1", "v1", 250);
	char *label = view("a.slice", 10, "v2", "v1", 250);
	char *sel = view("a.slice", 10, "v2", "v2", 250);

	cr_expect_str_eq(base, same);
	cr_expect_str_neq(base, timeout);
	cr_expect_str_neq(base, rps);
	cr_expect_str_neq(base, label);
	cr_expect_str_neq(label, sel);
	free(base);
	free(same);
	free(timeout);
	free(rps);
	free(label);
	free(sel);
}

/* A change of weights, routes' timeouts and retries, and services' rate
 * limits is taken in place by the running helper (docs/design.md decision
 * 85); any other change of the view is not. */
Test(l7_view, values_only_says_when_the_helper_takes_a_change_in_place)
{
	char *base = view("a.slice", 10, "v1", "v1", 250);
	char *timeout = view("a.slice", 10, "v1", "v1", 300);
	char *rps = view("a.slice", 11, "v1", "v1", 250);
	char *label = view("a.slice", 10, "v2", "v1", 250);
	char *sel = view("a.slice", 10, "v2", "v2", 250);
	char *weights = strdup(base), *w;

	cr_assert_not_null(weights);
	w = strstr(weights, "\"weight\":80");
	cr_assert_not_null(w, "%s", base);
	memcpy(w, "\"weight\":55", 11);
	cr_expect(dmsc_l7_view_values_only(base, base));
	cr_expect(dmsc_l7_view_values_only(base, weights), "%s\n%s", base, weights);
	cr_expect(dmsc_l7_view_values_only(base, timeout));
	cr_expect(dmsc_l7_view_values_only(weights, rps));
	cr_expect_not(dmsc_l7_view_values_only(base, label), "a label moves a backend between routes");
	cr_expect_not(dmsc_l7_view_values_only(label, sel), "a route's selector");
	cr_expect_not(dmsc_l7_view_values_only(base, "{ \"services\": [ broken"));
	free(base);
	free(timeout);
	free(rps);
	free(label);
	free(sel);
	free(weights);
}

/* dmsc-l7 sends what goes to another host's backend through the tunnel
 * (docs/design.md decision 75): its view says which services have mtls
 * and where their backends are, without the tunnels' addresses, and the
 * helper reads it with DMSC_POLICY_HOSTS_ELSEWHERE. */
Test(l7_view, names_the_hosts_of_an_mtls_service)
{
	static const char doc[] =
	    "{ \"mtls\": \"required\", \"hosts\": { \"node-b\": \"198.18.13.2:15008\" },"
	    "  \"services\": ["
	    "  { \"name\": \"web\", \"vip\": \"198.19.0.1\", \"port\": 80, \"protocol\": \"http\","
	    "    \"backends\": [ { \"address\": \"198.18.13.2\", \"port\": 8080, \"host\": \"node-b\" },"
	    "                  { \"address\": \"198.18.0.1\", \"port\": 8080 } ] },"
	    "  { \"name\": \"plain\", \"vip\": \"198.19.0.2\", \"port\": 80, \"protocol\": \"http\","
	    "    \"mtls\": \"off\","
	    "    \"backends\": [ { \"address\": \"198.18.13.2\", \"port\": 8081, \"host\": \"node-b\" } ] } ] }";
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p = {0}, q = {0};
	char *v = NULL, *again = NULL;
	size_t len = 0;

	cr_assert_eq(dmsc_policy_parse(doc, strlen(doc), "t", &p, &errs), 0);
	cr_assert_eq(dmsc_l7_view_json(&p, &v, &len), 0);
	cr_expect_null(strstr(v, "15008"), "no tunnel address: %s", v);
	cr_assert_eq(dmsc_policy_parse_flags(v, len, "view", DMSC_POLICY_HOSTS_ELSEWHERE, &q, &errs),
		     0, "%s", v);
	cr_expect_eq(q.services[0].mtls, DMSC_MTLS_REQUIRED, "%s", v);
	cr_expect_str_eq(q.services[0].backends[0].host, "node-b", "%s", v);
	cr_expect_null(q.services[0].backends[1].host, "%s", v);
	cr_expect(dmsc_policy_backend_tunneled(&q.services[0], &q.services[0].backends[0], "node-a"));
	cr_expect_eq(q.services[1].mtls, DMSC_MTLS_OFF, "%s", v);
	cr_expect_null(q.services[1].backends[0].host, "mtls off: direct, no host needed: %s", v);
	cr_assert_eq(dmsc_l7_view_json(&q, &again, &len), 0);
	cr_expect_str_eq(again, v, "the same policy, the same bytes");
	free(again);
	free(v);
	dmsc_policy_free(&p);
	dmsc_policy_free(&q);
	dmsc_policy_errors_free(&errs);
}

Test(l7_view, keeps_an_ipv6_service_and_its_health)
{
	static const char doc[] =
	    "{ \"services\": [ { \"name\": \"web6\", \"vip\": \"2001:2:61::10\", \"port\": 80,"
	    "  \"protocol\": \"http\","
	    "  \"backends\": [ { \"address\": \"2001:2:60::11\", \"port\": 8080 } ],"
	    "  \"health\": { \"passive\": { \"consecutive_failures\": 3,"
	    "                               \"base_ejection_ms\": 1000 },"
	    "               \"active\": { \"type\": \"http\", \"path\": \"/healthz\" } } } ] }";
	struct dmsc_policy p = {0}, q = {0};
	char *v = view_round_trip(doc, dmsc_l7_view_json, &p, &q);

	cr_expect_eq(q.services[0].family, AF_INET6);
	cr_expect_arr_eq(q.services[0].vip6, p.services[0].vip6, 16, "%s", v);
	cr_expect_arr_eq(q.services[0].backends[0].addr6, p.services[0].backends[0].addr6, 16);
	cr_expect(q.services[0].has_health && q.services[0].health.has_passive, "%s", v);
	cr_expect_eq(q.services[0].health.passive.consecutive_failures, 3);
	cr_expect_eq(q.services[0].health.passive.base_ejection_ms, 1000);
	cr_expect_eq(q.services[0].health.passive.max_ejection_ms,
		     p.services[0].health.passive.max_ejection_ms);
	cr_expect(q.services[0].health.has_active);
	cr_expect_str_eq(q.services[0].health.active.path, "/healthz");
	free(v);
	dmsc_policy_free(&p);
	dmsc_policy_free(&q);
}

/* The helper hashes what dmscd hashes: affinity by header and by cookie
 * reach it as written (docs/design.md decision 98). */
Test(l7_view, keeps_affinity_by_header_and_by_cookie)
{
	static const char doc[] =
	    "{ \"services\": ["
	    "  { \"name\": \"h\", \"vip\": \"198.19.0.7\", \"port\": 80, \"protocol\": \"http\","
	    "    \"affinity\": { \"header\": \"X-User\" },"
	    "    \"backends\": [ { \"address\": \"198.18.1.2\", \"port\": 80 } ] },"
	    "  { \"name\": \"c\", \"vip\": \"198.19.0.8\", \"port\": 80, \"protocol\": \"http\","
	    "    \"affinity\": { \"cookie\": \"Session\" },"
	    "    \"backends\": [ { \"address\": \"198.18.1.2\", \"port\": 80 } ] },"
	    "  { \"name\": \"k\", \"vip\": \"198.19.0.9\", \"port\": 80, \"protocol\": \"http\","
	    "    \"affinity\": \"client\","
	    "    \"backends\": [ { \"address\": \"198.18.1.2\", \"port\": 80 } ] } ] }";
	struct dmsc_policy p = {0}, q = {0};
	char *v = view_round_trip(doc, dmsc_l7_view_json, &p, &q);

	cr_assert_eq(q.n_services, 3, "%s", v);
	cr_expect_eq(q.services[0].affinity, DMSC_AFFINITY_HEADER, "%s", v);
	cr_expect_str_eq(q.services[0].affinity_name, "x-user");
	cr_expect_eq(q.services[1].affinity, DMSC_AFFINITY_COOKIE, "%s", v);
	cr_expect_str_eq(q.services[1].affinity_name, "Session");
	cr_expect_eq(q.services[2].affinity, DMSC_AFFINITY_CLIENT, "%s", v);
	free(v);
	dmsc_policy_free(&p);
	dmsc_policy_free(&q);
}
