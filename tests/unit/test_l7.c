// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* dmsc-l7's pure parts: route matching (first match wins), label selectors
 * with weights, the backend pick used by retries, request-target paths, and
 * the request token bucket driven by a fake clock. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "dmsc/bucket.h"
#include "l7_h2.h"
#include "l7_route.h"
#include "policy.h"

static const char policy_doc[] =
    "{ \"services\": ["
    "  { \"name\": \"tcp\", \"vip\": \"198.19.0.1\", \"port\": 80,"
    "    \"backends\": [ { \"address\": \"198.18.1.9\", \"port\": 80 } ] },"
    "  { \"name\": \"web\", \"vip\": \"198.19.0.2\", \"port\": 80, \"protocol\": \"http\","
    "    \"rate_limit\": { \"requests_per_second\": 10, \"burst\": 5 },"
    "    \"backends\": ["
    "      { \"address\": \"198.18.1.2\", \"port\": 80, \"weight\": 80,"
    "        \"labels\": { \"version\": \"v1\", \"pool\": \"main\" } },"
    "      { \"address\": \"198.18.1.3\", \"port\": 80, \"weight\": 20,"
    "        \"labels\": { \"version\": \"v2\", \"pool\": \"main\" } },"
    "      { \"address\": \"198.18.1.4\", \"port\": 80, \"weight\": 0,"
    "        \"labels\": { \"version\": \"v3\" } } ],"
    "    \"routes\": ["
    "      { \"match\": { \"path_prefix\": \"/api/\", \"method\": \"GET\","
    "                     \"headers\": { \"x-canary\": \"yes\" } },"
    "        \"backends\": { \"version\": \"v2\" }, \"timeout_ms\": 250, \"retries\": 3 },"
    "      { \"match\": { \"path\": \"/exact\" }, \"backends\": { \"version\": \"v1\" } },"
    "      { \"match\": { \"path_prefix\": \"/drained\" }, \"backends\": { \"version\": \"v3\" } },"
    "      { \"match\": { \"path_prefix\": \"/api/\" }, \"backends\": { \"pool\": \"main\" } } ] },"
    "  { \"name\": \"other\", \"vip\": \"198.19.0.1\", \"port\": 8080, \"protocol\": \"http\","
    "    \"backends\": [ { \"address\": \"198.18.1.5\", \"port\": 80 } ] },"
    "  { \"name\": \"web6\", \"vip\": \"2001:2:61::99\", \"port\": 80, \"protocol\": \"http\","
    "    \"backends\": [ { \"address\": \"2001:2:60::9\", \"port\": 8080 } ] } ] }";

static struct dmsc_l7_config cfg;
static const struct dmsc_l7_service *web;

static void setup(void)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p = {0};

	cr_assert_eq(dmsc_policy_parse(policy_doc, strlen(policy_doc), "t", &p, &errs), 0);
	dmsc_policy_errors_free(&errs);
	cr_assert_eq(dmsc_l7_config_build(&cfg, &p), 0);
	web = dmsc_l7_service_find(&cfg, inet_addr("198.19.0.2"), htons(80));
	cr_assert_not_null(web);
}

static void teardown(void)
{
	dmsc_l7_config_free(&cfg);
}

/* match METHOD PATH [NAME VALUE]: the route index */
static int match(const char *method, const char *target, const char *hname, const char *hval)
{
	struct dmsc_l7_header h = {hname, hval, hname ? strlen(hname) : 0, hval ? strlen(hval) : 0};
	struct dmsc_l7_request r = {0};

	r.method = method;
	r.method_len = strlen(method);
	dmsc_l7_target_path(target, strlen(target), &r.path, &r.path_len);
	r.headers = &h;
	r.n_headers = hname ? 1 : 0;
	return dmsc_l7_route_match(web, &r);
}

TestSuite(l7_route, .init = setup, .fini = teardown);

Test(l7_route, only_http_services_are_compiled_and_found_by_vip_port)
{
	cr_expect_eq(cfg.n_svcs, 3);
	cr_expect_null(dmsc_l7_service_find(&cfg, inet_addr("198.19.0.1"), htons(80)));
	cr_expect_str_eq(
	    dmsc_l7_service_find(&cfg, inet_addr("198.19.0.1"), htons(8080))->src->name, "other");
	cr_expect_null(dmsc_l7_service_find(&cfg, inet_addr("198.19.0.2"), htons(81)));
}

Test(l7_route, ipv6_services_are_found_by_vip6_and_connect_over_ipv6)
{
	const struct dmsc_l7_service *s;
	struct sockaddr_storage ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	uint8_t vip6[16], be6[16];

	inet_pton(AF_INET6, "2001:2:61::99", vip6);
	inet_pton(AF_INET6, "2001:2:60::9", be6);
	s = dmsc_l7_service_find6(&cfg, vip6, htons(80));
	cr_assert_not_null(s);
	cr_expect_str_eq(s->src->name, "web6");
	cr_expect_null(dmsc_l7_service_find6(&cfg, vip6, htons(81)));
	cr_expect_null(dmsc_l7_service_find(&cfg, 0, htons(80)), "not by an IPv4 address");
	cr_expect_eq(dmsc_l7_backend_sa(s, 0, &ss), sizeof(*a6));
	cr_expect_eq(a6->sin6_family, AF_INET6);
	cr_expect_eq(a6->sin6_port, htons(8080));
	cr_expect_arr_eq(&a6->sin6_addr, be6, 16);
	cr_expect_eq(dmsc_l7_backend_sa(web, 0, &ss), sizeof(struct sockaddr_in));
	cr_expect_eq(((struct sockaddr_in *)&ss)->sin_addr.s_addr, inet_addr("198.18.1.2"));
}

Test(l7_route, first_match_wins_on_prefix_method_and_header)
{
	cr_expect_eq(match("GET", "/api/x", "x-canary", "yes"), 0);
	cr_expect_eq(match("GET", "/api/x", "X-Canary", "yes"), 0, "header names ignore case");
	cr_expect_eq(match("GET", "/api/x", "x-canary", "YES"), 3, "values are exact");
	cr_expect_eq(match("POST", "/api/x", "x-canary", "yes"), 3, "method differs");
	cr_expect_eq(match("get", "/api/x", "x-canary", "yes"), 3, "methods are case-sensitive");
	cr_expect_eq(match("GET", "/api/x", NULL, NULL), 3);
	cr_expect_eq(match("GET", "/api", NULL, NULL), -1, "a prefix is not matched by less");
	cr_expect_eq(match("GET", "/other", NULL, NULL), -1);
}

Test(l7_route, exact_path_ignores_the_query_but_not_more)
{
	cr_expect_eq(match("GET", "/exact", NULL, NULL), 1);
	cr_expect_eq(match("PUT", "/exact?a=b", NULL, NULL), 1);
	cr_expect_eq(match("GET", "/exact/", NULL, NULL), -1);
	cr_expect_eq(match("GET", "/exactly", NULL, NULL), -1);
	cr_expect_eq(match("GET", "http://host:80/exact?q", NULL, NULL), 1, "absolute form");
}

Test(l7_route, target_paths)
{
	const char *p;
	size_t n;

	dmsc_l7_target_path("/a/b?c=d#e", 10, &p, &n);
	cr_expect_eq(n, 4);
	cr_expect_eq(memcmp(p, "/a/b", 4), 0);
	dmsc_l7_target_path("http://h", 8, &p, &n);
	cr_expect_eq(n, 1);
	cr_expect_eq(p[0], '/');
	dmsc_l7_target_path("*", 1, &p, &n);
	cr_expect_eq(n, 1);
	cr_expect_eq(p[0], '*');
}

Test(l7_route, route_settings_are_carried)
{
	cr_expect_eq(web->n_routes, 4);
	cr_expect(web->routes[0].has_timeout_ms && web->routes[0].timeout_ms == 250);
	cr_expect(web->routes[0].has_retries && web->routes[0].retries == 3);
	cr_expect(!web->routes[1].has_timeout_ms && !web->routes[1].has_retries);
	cr_expect(web->has_request_limit);
	cr_expect_eq(web->requests_per_second, 10);
	cr_expect_eq(web->burst, 5);
}

static void shares(const struct dmsc_l7_pick *pick, unsigned out[4])
{
	unsigned s;

	memset(out, 0, 4 * sizeof(unsigned));
	for (s = 0; s < DMSC_SLOTS; s++) {
		cr_assert_lt(pick->slot[s], 4);
		out[pick->slot[s]]++;
	}
}

Test(l7_route, selectors_keep_weights)
{
	unsigned n[4];

	/* service: 80/20/0 -> 102 + 26 slots (largest remainder), v3 none */
	shares(&web->pick, n);
	cr_expect_eq(n[1], 102);
	cr_expect_eq(n[2], 26);
	cr_expect_eq(n[3], 0);
	cr_expect_eq(web->pick.n_backends, 3);
	/* {version: v2}: all slots to v2 */
	shares(&web->routes[0].pick, n);
	cr_expect_eq(n[2], DMSC_SLOTS);
	/* {pool: main}: v1 and v2 with their weights */
	shares(&web->routes[3].pick, n);
	cr_expect_eq(n[1] + n[2], DMSC_SLOTS);
	cr_expect_eq(n[1], 102);
	/* {version: v3}: a backend of weight 0 only: empty (503) */
	cr_expect(web->routes[2].pick.empty);
	cr_expect_eq(dmsc_l7_pick_backend(&web->routes[2].pick, 7, 0), -1);
}

Test(l7_route, pick_follows_weights_over_random_numbers)
{
	unsigned count[3] = {0};
	uint32_t r;

	for (r = 0; r < 128 * 100; r++)
		count[dmsc_l7_pick_backend(&web->pick, r * 2654435761u, 0)]++;
	cr_expect_eq(count[0], 102 * 100);
	cr_expect_eq(count[1], 26 * 100);
	cr_expect_eq(count[2], 0);
}

Test(l7_route, a_retry_skips_tried_backends_while_others_are_left)
{
	uint32_t r;

	for (r = 0; r < 1000; r++) {
		cr_assert_eq(dmsc_l7_pick_backend(&web->pick, r, 1u << 0), 1);
		cr_assert_eq(dmsc_l7_pick_backend(&web->pick, r, 1u << 1), 0);
		/* all tried: any backend with slots again, never -1 */
		cr_assert_geq(dmsc_l7_pick_backend(&web->pick, r, 3), 0);
	}
}

Test(l7_route, empty_selector_means_every_backend)
{
	struct dmsc_l7_pick pick;
	unsigned n[4];

	dmsc_l7_pick_build(&pick, web->src, NULL, 0);
	shares(&pick, n);
	cr_expect_eq(n[1], 102);
	cr_expect_eq(pick.n_backends, 3);
}

/* ---- the request bucket ---------------------------------------------- */
/* dmsc-l7's requests_per_second runs include/dmsc/bucket.h (one token per
 * request, depth from dmsc_tb_request_depth), started full like the
 * helper's (last_ns 0). Its clock is CLOCK_MONOTONIC, never 0: T0. */
#define SEC 1000000000ull
#define T0 (5 * SEC)

struct req_bucket {
	struct dmsc_tb b;
	uint64_t rate, depth;
};

static void req_init(struct req_bucket *r, uint64_t rate, uint64_t burst)
{
	memset(r, 0, sizeof(*r));
	r->rate = rate;
	r->depth = dmsc_tb_request_depth(rate, burst);
}

/* 0 when the request passes, else the Retry-After seconds (never 0) */
static uint64_t req_take(struct req_bucket *r, uint64_t now)
{
	if (dmsc_tb_take(&r->b, now, r->rate, r->depth, 1))
		return 0;
	return dmsc_tb_wait_seconds(&r->b, r->rate, 1);
}

Test(l7_bucket, burst_then_rate)
{
	struct req_bucket b;
	uint64_t t = T0;
	int i, passed = 0;

	req_init(&b, 10, 5);
	for (i = 0; i < 20; i++)
		passed += req_take(&b, t) == 0;
	cr_expect_eq(passed, 5, "a full bucket lets the burst through at once");
	/* 1 s later: 10 more, not 15 */
	t += SEC;
	for (i = 0, passed = 0; i < 20; i++)
		passed += req_take(&b, t) == 0;
	cr_expect_eq(passed, 5, "refill is capped at the burst");
	/* 100 ms: one token */
	t += SEC / 10;
	cr_expect_eq(req_take(&b, t), 0);
	cr_expect_neq(req_take(&b, t), 0);
}

Test(l7_bucket, wait_and_retry_after)
{
	struct req_bucket b;

	req_init(&b, 1, 1);
	cr_expect_eq(req_take(&b, T0), 0);
	cr_expect_eq(req_take(&b, T0 + SEC / 4), 1, "a refusal waits whole seconds, at least 1");
	cr_expect_eq(dmsc_tb_wait_ns(&b.b, b.rate, 1), 3 * SEC / 4);
	cr_expect_eq(dmsc_tb_wait_seconds(&b.b, b.rate, 2), 2, "rounded up");
	cr_expect_eq(req_take(&b, T0 + SEC), 0, "a token after exactly 1 s");
}

Test(l7_bucket, exact_over_a_long_run)
{
	struct req_bucket b;
	uint64_t t;
	unsigned passed = 0;

	/* 8/s with burst 1, asked every ms for 10 s: the first, then one per
	 * 125 ms: 1 + 80 pass, none lost to rounding */
	req_init(&b, 8, 1);
	for (t = T0; t <= T0 + 10 * SEC; t += SEC / 1000)
		passed += req_take(&b, t) == 0;
	cr_expect_eq(passed, 81);
	/* 7/s: a token every 142.9 ms, asked at whole ms: each waits 143 ms
	 * (a full bucket of 1 holds no more), so 1 + 69 */
	req_init(&b, 7, 1);
	for (t = T0, passed = 0; t <= T0 + 10 * SEC; t += SEC / 1000)
		passed += req_take(&b, t) == 0;
	cr_expect_eq(passed, 70);
}

Test(l7_bucket, extremes_do_not_overflow)
{
	struct req_bucket b;

	req_init(&b, UINT64_MAX, UINT64_MAX);
	cr_expect_eq(req_take(&b, T0), 0);
	cr_expect_eq(req_take(&b, UINT64_MAX), 0, "a huge gap fills, no wrap");
	req_init(&b, 1, 0);
	cr_expect_eq(b.depth, 1, "burst 0 means one second's worth");
	cr_expect_eq(req_take(&b, 10 * SEC), 0);
	cr_expect_neq(req_take(&b, 5 * SEC), 0, "a clock going back refills nothing");
}

Test(l7_h2_forward, appends_the_hop_after_the_values_the_client_sent)
{
	const char *vals[] = {"203.0.113.9", "", "198.51.100.1, 10.0.0.1"};
	size_t lens[] = {11, 0, 22};
	char out[64];

	cr_expect_eq(dmsc_l7_h2_forward_value(vals, lens, 0, "198.18.0.2", out, sizeof(out)), 10);
	cr_expect_str_eq(out, "198.18.0.2");
	cr_expect_eq(dmsc_l7_h2_forward_value(vals, lens, 3, "198.18.0.2", out, sizeof(out)),
		     (int)strlen("203.0.113.9, 198.51.100.1, 10.0.0.1, 198.18.0.2"));
	cr_expect_str_eq(out, "203.0.113.9, 198.51.100.1, 10.0.0.1, 198.18.0.2",
			 "empty values left out");
	cr_expect_eq(dmsc_l7_h2_forward_value(vals, lens, 3, "198.18.0.2", out, 40), -ENOSPC);
}

/* Affinity by header and by cookie (docs/design.md decision 98): a value
 * picks the same backend whoever sends it; without one, the client's own
 * pick (decision 97). */
static const char affinity_doc[] =
    "{ \"services\": ["
    "  { \"name\": \"h\", \"vip\": \"198.19.0.7\", \"port\": 80, \"protocol\": \"http\","
    "    \"affinity\": { \"header\": \"X-User\" },"
    "    \"backends\": [ { \"address\": \"198.18.1.2\", \"port\": 80 },"
    "                    { \"address\": \"198.18.1.3\", \"port\": 80 } ] },"
    "  { \"name\": \"c\", \"vip\": \"198.19.0.8\", \"port\": 80, \"protocol\": \"http\","
    "    \"affinity\": { \"cookie\": \"session\" },"
    "    \"backends\": [ { \"address\": \"198.18.1.2\", \"port\": 80 },"
    "                    { \"address\": \"198.18.1.3\", \"port\": 80 } ] } ] }";

static struct dmsc_l7_config acfg;
static const struct dmsc_l7_service *by_header, *by_cookie;

static void affinity_setup(void)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p = {0};

	cr_assert_eq(dmsc_policy_parse(affinity_doc, strlen(affinity_doc), "t", &p, &errs), 0);
	dmsc_policy_errors_free(&errs);
	cr_assert_eq(dmsc_l7_config_build(&acfg, &p), 0);
	by_header = dmsc_l7_service_find(&acfg, inet_addr("198.19.0.7"), htons(80));
	by_cookie = dmsc_l7_service_find(&acfg, inet_addr("198.19.0.8"), htons(80));
	cr_assert(by_header && by_cookie);
	cr_assert(by_header->affinity && by_cookie->affinity);
}

static void affinity_teardown(void)
{
	dmsc_l7_config_free(&acfg);
}

TestSuite(l7_affinity, .init = affinity_setup, .fini = affinity_teardown);

/* the seed of a GET / with the headers given as "name", "value" pairs */
static uint32_t seed_of(const struct dmsc_l7_service *svc, uint64_t who, uint64_t cgroup, size_t n,
			const char *const *nv)
{
	struct dmsc_l7_header h[4];
	struct dmsc_l7_request r = {.method = "GET", .method_len = 3, .path = "/", .path_len = 1};
	size_t i;

	for (i = 0; i < n; i++)
		h[i] = (struct dmsc_l7_header){nv[2 * i], nv[2 * i + 1], strlen(nv[2 * i]),
					       strlen(nv[2 * i + 1])};
	r.headers = h;
	r.n_headers = n;
	return dmsc_l7_request_seed(svc, &r, who, cgroup);
}

Test(l7_affinity, one_header_value_one_seed_whoever_sends_it)
{
	const char *const u7[] = {"accept", "*/*", "x-user", "u7"};
	const char *const u7_upper[] = {"X-USER", "u7"};
	const char *const u8[] = {"x-user", "u8"};
	const char *const empty[] = {"x-user", ""};
	uint32_t s = seed_of(by_header, 1, 10, 2, u7);

	cr_expect_eq(seed_of(by_header, 2, 20, 2, u7), s, "another client, the same user");
	cr_expect_eq(seed_of(by_header, 3, 30, 1, u7_upper), s, "header names ignore case");
	cr_expect_neq(seed_of(by_header, 1, 10, 1, u8), s, "another user");
	/* no value (absent or empty): the client's own seed */
	cr_expect_eq(seed_of(by_header, 1, 10, 0, NULL), seed_of(by_header, 1, 10, 1, empty));
	cr_expect_neq(seed_of(by_header, 1, 10, 0, NULL), seed_of(by_header, 2, 10, 0, NULL));
	cr_expect_eq(dmsc_l7_pick_seed(by_header, s, 12345), s);
	cr_expect_eq(dmsc_l7_pick_seed(&(struct dmsc_l7_service){0}, s, 12345), 12345u,
		     "no affinity: random");
}

Test(l7_affinity, a_cookie_is_found_among_others_and_across_fields)
{
	const char *const alone[] = {"cookie", "session=abc"};
	const char *const among[] = {"Cookie", "a=1; session=abc; z=9"};
	const char *const split[] = {"cookie", "a=1", "cookie", "sessionx=2; session=abc"};
	const char *const other[] = {"cookie", "session=abd"};
	const char *const prefix_only[] = {"cookie", "sessionx=abc; xsession=abc"};
	const char *const no_value[] = {"cookie", "session=; a=1"};
	uint32_t s = seed_of(by_cookie, 1, 10, 1, alone), mine = seed_of(by_cookie, 5, 50, 0, NULL);

	cr_expect_eq(seed_of(by_cookie, 2, 20, 1, among), s);
	cr_expect_eq(seed_of(by_cookie, 3, 30, 2, split), s, "HTTP/2 splits cookies over fields");
	cr_expect_neq(seed_of(by_cookie, 1, 10, 1, other), s);
	cr_expect_eq(seed_of(by_cookie, 5, 50, 1, prefix_only), mine,
		     "not the cookie: the client's");
	cr_expect_eq(seed_of(by_cookie, 5, 50, 1, no_value), mine);
}

/* Users spread over both backends by weight (50/50), each on one. */
Test(l7_affinity, users_spread_over_the_backends)
{
	char user[16];
	const char *nv[] = {"x-user", user};
	int hits[2] = {0, 0}, i, b;

	for (i = 0; i < 200; i++) {
		snprintf(user, sizeof(user), "user%d", i);
		b = dmsc_l7_pick_backend(&by_header->pick, seed_of(by_header, 1, 1, 1, nv), 0);
		cr_assert(b == 0 || b == 1);
		cr_expect_eq(
		    dmsc_l7_pick_backend(&by_header->pick, seed_of(by_header, 9, 9, 1, nv), 0), b);
		hits[b]++;
	}
	cr_expect(hits[0] > 70 && hits[1] > 70, "200 users: %d and %d", hits[0], hits[1]);
}
