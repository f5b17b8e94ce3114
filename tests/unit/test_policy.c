// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Policy parsing and validation: every rule of "Policy, version 1" in
 * docs/policy.md, checked through the exact messages a user reads.
 *
 * Documents are written with ' where JSON has ", so that they read as JSON;
 * json() turns them into the real thing.
 */
#define _GNU_SOURCE /* asprintf */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "dmsc/slots.h"
#include "policy.h"
#include "tmpdir.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define DOC(services) "{'services':[" services "]}"
#define VIP_PORT "'vip':'198.19.0.1','port':80"
#define ONE_BACKEND "'backends':[{'address':'198.18.0.1','port':8080}]"
/* A valid service; the arguments add fields (each starting with ','). */
#define SVC(...) "{'name':'web'," VIP_PORT "," ONE_BACKEND __VA_ARGS__ "}"
#define HTTP_SVC(...) SVC(",'protocol':'http'" __VA_ARGS__)
/* A service with one field replaced: NAMED('\"x\"'), ... */
#define NAMED(name) DOC("{'name':" name "," VIP_PORT "," ONE_BACKEND "}")
#define AT_VIP(vip) DOC("{'name':'web','vip':" vip ",'port':80," ONE_BACKEND "}")
#define AT_PORT(port) DOC("{'name':'web','vip':'198.19.0.1','port':" port "," ONE_BACKEND "}")
#define WITH_BACKENDS(list) DOC("{'name':'web'," VIP_PORT ",'backends':" list "}")
#define BACKEND(...) WITH_BACKENDS("[{'address':'198.18.0.1','port':8080" __VA_ARGS__ "}]")
#define ROUTE(...) DOC(HTTP_SVC(",'routes':[" __VA_ARGS__ "]"))
#define VIP6_PORT "'vip':'2001:2::10','port':80"
#define ONE_BACKEND6 "'backends':[{'address':'2001:2:0:1::2','port':8080}]"
#define SVC6(...) "{'name':'web6'," VIP6_PORT "," ONE_BACKEND6 __VA_ARGS__ "}"
#define AT_VIP6(vip) DOC("{'name':'web','vip':" vip ",'port':80," ONE_BACKEND6 "}")
#define WITH_BACKENDS6(list) DOC("{'name':'web'," VIP6_PORT ",'backends':" list "}")

struct want {
	const char *path;
	const char *message;
};

/* One bad document and the one error it must produce. */
struct bad_case {
	const char *doc;
	struct want error;
};

static char *json(const char *doc)
{
	char *text = strdup(doc), *c;

	cr_assert_not_null(text);
	for (c = text; *c; c++)
		if (*c == '\'')
			*c = '"';
	return text;
}

static void formatted(const struct want *w, char *buf, size_t len)
{
	if (w->path[0])
		snprintf(buf, len, "%s: %s", w->path, w->message);
	else
		snprintf(buf, len, "%s", w->message);
}

/* All errors, one a line, for a failure message. */
static void list_errors(const struct dmsc_policy_errors *errs, char *buf, size_t len)
{
	size_t i, o = 0;

	buf[0] = '\0';
	for (i = 0; i < errs->count && o < len; i++) {
		char line[1024];

		dmsc_policy_error_format(&errs->items[i], line, sizeof(line));
		o += snprintf(buf + o, len - o, "  %s\n", line);
	}
}

static void check_errors_len(const char *text, size_t len, const struct want *want, size_t n)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p;
	char got[1024], expect[1024];
	static char all[64 * 1024];
	size_t i;
	int err;

	err = dmsc_policy_parse(text, len, "test.json", &p, &errs);
	list_errors(&errs, all, sizeof(all));
	cr_expect_eq(err, -EINVAL, "parse returned %d for %s", err, text);
	cr_expect_eq(p.n_services, 0);
	cr_expect_null(p.services);
	cr_assert_eq(errs.count, n, "%s\nwants %zu errors, got %zu:\n%s", text, n, errs.count, all);
	for (i = 0; i < n; i++) {
		cr_expect_str_eq(errs.items[i].path, want[i].path, "%s\npath: got `%s`, want `%s`",
				 text, errs.items[i].path, want[i].path);
		cr_expect_str_eq(errs.items[i].message, want[i].message,
				 "%s\nmessage: got `%s`, want `%s`", text, errs.items[i].message,
				 want[i].message);
		dmsc_policy_error_format(&errs.items[i], got, sizeof(got));
		formatted(&want[i], expect, sizeof(expect));
		cr_expect_str_eq(got, expect);
	}
	dmsc_policy_errors_free(&errs);
}

static void check_errors(const char *doc, const struct want *want, size_t n)
{
	char *text = json(doc);

	check_errors_len(text, strlen(text), want, n);
	free(text);
}

static void check_cases(const struct bad_case *cases, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		check_errors(cases[i].doc, &cases[i].error, 1);
}

#define EXPECT_ERRORS(doc, ...)                                                                    \
	do {                                                                                       \
		const struct want want_[] = {__VA_ARGS__};                                         \
		check_errors(doc, want_, ARRAY_LEN(want_));                                        \
	} while (0)

#define CHECK_CASES(...)                                                                           \
	do {                                                                                       \
		const struct bad_case cases_[] = {__VA_ARGS__};                                    \
		check_cases(cases_, ARRAY_LEN(cases_));                                            \
	} while (0)

static void parse_ok(const char *doc, struct dmsc_policy *p)
{
	struct dmsc_policy_errors errs = {0};
	static char all[64 * 1024];
	char *text = json(doc);
	int err;

	err = dmsc_policy_parse(text, strlen(text), "test.json", p, &errs);
	list_errors(&errs, all, sizeof(all));
	cr_assert_eq(err, 0, "%s\nreturned %d:\n%s", text, err, all);
	cr_assert_eq(errs.count, 0);
	dmsc_policy_errors_free(&errs);
	free(text);
}

static uint32_t ip(const char *s)
{
	struct in_addr a;

	cr_assert_eq(inet_pton(AF_INET, s, &a), 1);
	return a.s_addr;
}

/* n copies of `item` (with %zu for the index) joined by commas. */
static char *repeat(const char *head, const char *item, size_t n, const char *tail)
{
	size_t cap = strlen(head) + strlen(tail) + n * (strlen(item) + 24) + 1, o, i;
	char *s = malloc(cap);

	cr_assert_not_null(s);
	o = snprintf(s, cap, "%s", head);
	for (i = 0; i < n; i++)
		o += snprintf(s + o, cap - o, item, i ? "," : "", i);
	snprintf(s + o, cap - o, "%s", tail);
	return s;
}

static char *backends_doc(size_t n)
{
	return repeat("{'services':[{'name':'web'," VIP_PORT ",'backends':[",
		      "%s{'address':'198.18.1.%zu','port':80}", n, "]}]}");
}

/* A string of n copies of c, for lengths at and past a limit. */
static const char *run(char c, size_t n)
{
	static char bufs[4][512];
	static int next;
	char *b = bufs[next++ % 4];

	cr_assert_lt(n, sizeof(bufs[0]));
	memset(b, c, n);
	b[n] = '\0';
	return b;
}

/* ---- syntax ---------------------------------------------------------- */

Test(policy_syntax, error_names_line_and_column)
{
	EXPECT_ERRORS("{\n  'services': [\n    {'name': x}]}",
		      {"", "line 3, column 14: JSON syntax error: unexpected character"});
}

Test(policy_syntax, empty_and_truncated_documents)
{
	CHECK_CASES({"", {"", "line 1, column 1: JSON syntax error: unexpected end of data"}},
		    {"  \n ", {"", "line 2, column 2: JSON syntax error: unexpected end of data"}},
		    {"{'services': [",
		     {"", "line 1, column 15: JSON syntax error: unexpected end of data"}},
		    {"{'services': [], 'x': 12",
		     {"", "line 1, column 25: JSON syntax error: unexpected end of data"}});
}

Test(policy_syntax, not_json)
{
	CHECK_CASES(
	    {"{'services': []} x",
	     {"", "line 1, column 18: JSON syntax error: unexpected character"}},
	    {"{'services': [],}",
	     {"", "line 1, column 17: JSON syntax error: unexpected character"}},
	    {"{services: []}",
	     {"", "line 1, column 2: JSON syntax error: quoted object property name expected"}},
	    {"{'services' []}",
	     {"", "line 1, column 13: JSON syntax error: object property name separator ':' "
		  "expected"}},
	    {"// comment\n{'services': []}",
	     {"", "line 1, column 1: JSON syntax error: unexpected character"}},
	    {"{'services': [1 2]}",
	     {"", "line 1, column 17: JSON syntax error: array value separator ',' expected"}});
}

Test(policy_syntax, columns_count_characters_not_bytes)
{
	EXPECT_ERRORS("{'services': ['\xc3\xa9\xc3\xa9', x]}",
		      {"", "line 1, column 21: JSON syntax error: unexpected character"});
}

Test(policy_syntax, invalid_utf8)
{
	EXPECT_ERRORS("{'services': ['a\xff']}",
		      {"", "line 1, column 17: JSON syntax error: invalid utf-8 string"});
}

Test(policy_syntax, nul_byte_anywhere)
{
	static const char after[] = "{\"services\": []}\0 trailing";
	static const char in_string[] = "{\"services\": [\"a\0b\"]}";
	const struct want at_17 = {"", "line 1, column 17: JSON syntax error: unexpected NUL byte"};

	check_errors_len(after, sizeof(after) - 1, &at_17, 1);
	check_errors_len(in_string, sizeof(in_string) - 1, &at_17, 1);
}

Test(policy_syntax, nesting_too_deep)
{
	char *doc = NULL;

	cr_assert(asprintf(&doc, "{'services':%s", run('[', 40)) > 0);
	EXPECT_ERRORS(doc, {"", "line 1, column 44: JSON syntax error: nesting too deep"});
	free(doc);
}

/* ---- document and services ------------------------------------------- */

Test(policy_document, top_level_shape)
{
	CHECK_CASES({"[]", {"", "expected an object, got an array"}},
		    {"42", {"", "expected an object, got integer 42"}},
		    {"{}", {"services", "required field is missing"}},
		    {"{'services':{}}", {"services", "expected an array, got an object"}},
		    {"{'services':null}", {"services", "expected an array, got null"}});
}

Test(policy_document, unknown_top_level_field)
{
	EXPECT_ERRORS("{'services':[],'version':1,'a b':2}",
		      {"version", "unknown field \"version\" (allowed: services, mtls, hosts)"},
		      {"[\"a b\"]", "unknown field \"a b\" (allowed: services, mtls, hosts)"});
}

Test(policy_service, not_an_object)
{
	EXPECT_ERRORS(DOC("null,'web',[]"), {"services[0]", "expected an object, got null"},
		      {"services[1]", "expected an object, got string \"web\""},
		      {"services[2]", "expected an object, got an array"});
}

Test(policy_service, required_fields)
{
	EXPECT_ERRORS(DOC("{}"), {"services[0].name", "required field is missing"},
		      {"services[0].vip", "required field is missing"},
		      {"services[0].port", "required field is missing"},
		      {"services[0].backends", "required field is missing"});
}

Test(policy_service, unknown_field_lists_the_allowed_ones)
{
	EXPECT_ERRORS(DOC(SVC(",'foo':1")),
		      {"services[0].foo",
		       "unknown field \"foo\" (allowed: name, vip, port, protocol, backends, "
		       "rate_limit, allow_from, accelerate, routes, health, mtls, affinity)"});
}

#define BAD_NAME "is not a valid name: use 1 to 63 characters from A-Z a-z 0-9 . _ -"

Test(policy_service, name)
{
	char *long_name = NULL;

	CHECK_CASES(
	    {NAMED("'a b'"), {"services[0].name", "\"a b\" " BAD_NAME}},
	    {NAMED("''"), {"services[0].name", "\"\" " BAD_NAME}},
	    {NAMED("'caf\xc3\xa9'"), {"services[0].name", "\"caf\xc3\xa9\" " BAD_NAME}},
	    {NAMED("5"), {"services[0].name", "expected a string, got integer 5"}},
	    {NAMED("'a\\u0000b'"), {"services[0].name", "\"a\\u0000b\" contains a NUL character"}});
	cr_assert(asprintf(&long_name, NAMED("'%s'"), run('n', 64)) > 0);
	EXPECT_ERRORS(long_name, {"services[0].name", "\"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"
						      "nnnnnnnnnnnnnnnnnnnnnnnn\" " BAD_NAME});
	free(long_name);
}

Test(policy_service, names_are_unique)
{
	EXPECT_ERRORS(DOC(SVC() ","
				"{'name':'web','vip':'198.19.0.2','port':80," ONE_BACKEND "}"),
		      {"services[1].name", "\"web\" is already used by services[0]"});
}

#define UNICAST " needs a unicast IPv4 address"
#define UNICAST6 " needs a unicast IPv6 address"

Test(policy_service, vip)
{
	CHECK_CASES(
	    {AT_VIP("'10.0.0.300'"), {"services[0].vip", "\"10.0.0.300\" is not an IPv4 or IPv6 address"}},
	    {AT_VIP("'010.0.0.1'"), {"services[0].vip", "\"010.0.0.1\" is not an IPv4 or IPv6 address"}},
	    {AT_VIP("'10.1'"), {"services[0].vip", "\"10.1\" is not an IPv4 or IPv6 address"}},
	    {AT_VIP("' 10.0.0.1'"), {"services[0].vip", "\" 10.0.0.1\" is not an IPv4 or IPv6 address"}},
	    {AT_VIP("'fe80::1'"),
	     {"services[0].vip", "\"fe80::1\" is a link-local address (the socket hooks cannot "
				 "set its zone); a service needs a unicast IPv6 address"}},
	    {AT_VIP("'0.0.0.0'"),
	     {"services[0].vip", "\"0.0.0.0\" is the unspecified address; a service" UNICAST}},
	    {AT_VIP("'255.255.255.255'"),
	     {"services[0].vip",
	      "\"255.255.255.255\" is the broadcast address; a service" UNICAST}},
	    {AT_VIP("'224.0.0.1'"),
	     {"services[0].vip", "\"224.0.0.1\" is a multicast address; a service" UNICAST}},
	    {AT_VIP("'239.255.255.255'"),
	     {"services[0].vip", "\"239.255.255.255\" is a multicast address; a service" UNICAST}},
	    {AT_VIP("3323134721"),
	     {"services[0].vip", "expected a string, got integer 3323134721"}});
}

#define NOT_A_PORT "is not a port (1-65535)"

Test(policy_service, port)
{
	CHECK_CASES(
	    {AT_PORT("'80'"), {"services[0].port", "expected an integer, got string \"80\""}},
	    {AT_PORT("80.0"), {"services[0].port", "expected an integer, got number 80.0"}},
	    {AT_PORT("8e1"), {"services[0].port", "expected an integer, got number 8e1"}},
	    {AT_PORT("true"), {"services[0].port", "expected an integer, got boolean true"}},
	    {AT_PORT("null"), {"services[0].port", "expected an integer, got null"}},
	    {AT_PORT("0"), {"services[0].port", "0 " NOT_A_PORT}},
	    {AT_PORT("65536"), {"services[0].port", "65536 " NOT_A_PORT}},
	    {AT_PORT("-1"), {"services[0].port", "-1 " NOT_A_PORT}},
	    {AT_PORT("99999999999999999999"),
	     {"services[0].port", "a number this large " NOT_A_PORT}},
	    {AT_PORT("-99999999999999999999"),
	     {"services[0].port", "a number this small " NOT_A_PORT}});
}

Test(policy_service, protocol_and_accelerate)
{
	CHECK_CASES(
	    {DOC(SVC(",'protocol':'sctp'")),
	     {"services[0].protocol", "\"sctp\" is not a protocol (tcp, udp, http)"}},
	    {DOC(SVC(",'protocol':'TCP'")),
	     {"services[0].protocol", "\"TCP\" is not a protocol (tcp, udp, http)"}},
	    {DOC(SVC(",'protocol':6")),
	     {"services[0].protocol", "expected a string, got integer 6"}},
	    {DOC(SVC(",'accelerate':'fast'")),
	     {"services[0].accelerate", "\"fast\" is not an accelerate mode (auto, on, off)"}},
	    {DOC(SVC(",'accelerate':true")),
	     {"services[0].accelerate", "expected a string, got boolean true"}},
	    {DOC(SVC(",'affinity':'ClientIP'")),
	     {"services[0].affinity",
	      "\"ClientIP\" is not an affinity (none, client, {\"header\": NAME} or "
	      "{\"cookie\": NAME})"}},
	    {DOC(SVC(",'affinity':1")),
	     {"services[0].affinity", "expected a string or an object, got integer 1"}});
}

/* affinity by header or cookie: http only, one of them, a token. */
Test(policy_service, affinity_by_header_or_cookie_errors)
{
	CHECK_CASES(
	    {DOC(SVC(",'affinity':{'header':'x-user'}")),
	     {"services[0].affinity", "only allowed when protocol is \"http\" (this service's "
				      "protocol is \"tcp\")"}},
	    {DOC(SVC(",'protocol':'http','affinity':{'header':'x-user','cookie':'s'}")),
	     {"services[0].affinity",
	      "both a header and a cookie: name one header or one cookie, as {\"header\": "
	      "\"x-user\"} or {\"cookie\": \"session\"}"}},
	    {DOC(SVC(",'protocol':'http','affinity':{}")),
	     {"services[0].affinity",
	      "nothing to hash: name one header or one cookie, as {\"header\": \"x-user\"} or "
	      "{\"cookie\": \"session\"}"}},
	    {DOC(SVC(",'protocol':'http','affinity':{'header':'x user'}")),
	     {"services[0].affinity.header",
	      "\"x user\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"}},
	    {DOC(SVC(",'protocol':'http','affinity':{'cookie':''}")),
	     {"services[0].affinity.cookie",
	      "\"\" is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)"}},
	    {DOC(SVC(",'protocol':'http','affinity':{'cookie':7}")),
	     {"services[0].affinity.cookie", "expected a string, got integer 7"}},
	    {DOC(SVC(",'protocol':'http','affinity':{'header':'x-user','ttl':5}")),
	     {"services[0].affinity.ttl", "unknown field \"ttl\" (allowed: header, cookie)"}});
}

/* affinity: absent is none; client on every protocol, kept as written. */
Test(policy_service, affinity)
{
	struct dmsc_policy p = {0};

	parse_ok(
	    DOC(SVC("") ",{'name':'dns','vip':'198.19.0.1','port':53,'protocol':'udp'," ONE_BACKEND
			",'affinity':'client'},"
			"{'name':'api','vip':'198.19.0.2','port':80,'protocol':'http'," ONE_BACKEND
			",'affinity':'none'}"),
	    &p);
	cr_assert_eq(p.n_services, 3);
	cr_expect_eq(p.services[0].affinity, DMSC_AFFINITY_NONE);
	cr_expect_eq(p.services[1].affinity, DMSC_AFFINITY_CLIENT);
	cr_expect_eq(p.services[2].affinity, DMSC_AFFINITY_NONE);
	cr_expect_null(p.services[1].affinity_name);
	dmsc_policy_free(&p);

	/* a header's name in lower case (one header, however written); a
	 * cookie's as written (cookie names are case-sensitive) */
	parse_ok(DOC("{'name':'a','vip':'198.19.0.2','port':80,'protocol':'http'," ONE_BACKEND
		     ",'affinity':{'header':'X-User'}},"
		     "{'name':'b','vip':'198.19.0.3','port':80,'protocol':'http'," ONE_BACKEND
		     ",'affinity':{'cookie':'Session'}}"),
		 &p);
	cr_assert_eq(p.n_services, 2);
	cr_expect_eq(p.services[0].affinity, DMSC_AFFINITY_HEADER);
	cr_expect_str_eq(p.services[0].affinity_name, "x-user");
	cr_expect_eq(p.services[1].affinity, DMSC_AFFINITY_COOKIE);
	cr_expect_str_eq(p.services[1].affinity_name, "Session");
	dmsc_policy_free(&p);
}

Test(policy_service, vip_port_protocol_is_unique)
{
	CHECK_CASES({DOC(SVC() ","
			       "{'name':'b'," VIP_PORT "," ONE_BACKEND "}"),
		     {"services[1]", "198.19.0.1:80/tcp is already used by services[0] \"web\""}},
		    {DOC(SVC(",'protocol':'udp'") ","
						  "{'name':'b'," VIP_PORT
						  ",'protocol':'udp'," ONE_BACKEND "}"),
		     {"services[1]", "198.19.0.1:80/udp is already used by services[0] \"web\""}},
		    /* http goes through the kernel's TCP key too. */
		    {DOC(SVC() ","
			       "{'name':'b'," VIP_PORT ",'protocol':'http'," ONE_BACKEND "}"),
		     {"services[1]", "198.19.0.1:80/http is already used by services[0] \"web\" "
				     "as tcp (tcp and http share the kernel's TCP key)"}});
	/* The first service's name is invalid: it is left out. */
	EXPECT_ERRORS(DOC("{'name':'-?'," VIP_PORT "," ONE_BACKEND "}"
			  ","
			  "{'name':'b'," VIP_PORT "," ONE_BACKEND "}"),
		      {"services[0].name", "\"-?\" " BAD_NAME},
		      {"services[1]", "198.19.0.1:80/tcp is already used by services[0]"});
}

/* ---- backends -------------------------------------------------------- */

Test(policy_backends, list)
{
	char *too_many = backends_doc(DMSC_BACKENDS_PER_SERVICE_MAX + 1);

	CHECK_CASES(
	    {WITH_BACKENDS("[]"), {"services[0].backends", "a service needs at least one backend"}},
	    {WITH_BACKENDS("{}"), {"services[0].backends", "expected an array, got an object"}},
	    {WITH_BACKENDS("['198.18.0.1:80']"),
	     {"services[0].backends[0]", "expected an object, got string \"198.18.0.1:80\""}});
	EXPECT_ERRORS(too_many, {"services[0].backends", "129 backends, at most 128 per service"});
	free(too_many);
}

Test(policy_backends, fields)
{
	CHECK_CASES(
	    {WITH_BACKENDS("[{'port':80}]"),
	     {"services[0].backends[0].address", "required field is missing"}},
	    {WITH_BACKENDS("[{'address':'198.18.0.1'}]"),
	     {"services[0].backends[0].port", "required field is missing"}},
	    {WITH_BACKENDS("[{'address':'198.18.0.256','port':80}]"),
	     {"services[0].backends[0].address", "\"198.18.0.256\" is not an IPv4 or IPv6 address"}},
	    {WITH_BACKENDS("[{'address':'0.0.0.0','port':80}]"),
	     {"services[0].backends[0].address",
	      "\"0.0.0.0\" is the unspecified address; a backend" UNICAST}},
	    {WITH_BACKENDS("[{'address':'198.18.0.1','port':70000}]"),
	     {"services[0].backends[0].port", "70000 " NOT_A_PORT}},
	    {BACKEND(",'weight':10001"),
	     {"services[0].backends[0].weight", "10001 is not a weight (0-10000)"}},
	    {BACKEND(",'weight':-1"),
	     {"services[0].backends[0].weight", "-1 is not a weight (0-10000)"}},
	    {BACKEND(",'weight':'1'"),
	     {"services[0].backends[0].weight", "expected an integer, got string \"1\""}},
	    {BACKEND(",'weight':0.5"),
	     {"services[0].backends[0].weight", "expected an integer, got number 0.5"}},
	    {BACKEND(",'hosts':'a'"),
	     {"services[0].backends[0].hosts",
	      "unknown field \"hosts\" (allowed: address, port, weight, labels, host)"}});
}

Test(policy_backends, labels)
{
	char *long_key = NULL, *long_value = NULL;

	CHECK_CASES(
	    {BACKEND(",'labels':['v1']"),
	     {"services[0].backends[0].labels", "expected an object, got an array"}},
	    {BACKEND(",'labels':{'version':1}"),
	     {"services[0].backends[0].labels.version", "expected a string, got integer 1"}},
	    {BACKEND(",'labels':{'':'x'}"),
	     {"services[0].backends[0].labels[\"\"]",
	      "a label key must be 1 to 63 bytes long, not 0"}});
	cr_assert(asprintf(&long_key, BACKEND(",'labels':{'%s':'x'}"), run('k', 64)) > 0);
	cr_assert(asprintf(&long_value, BACKEND(",'labels':{'k':'%s'}"), run('v', 64)) > 0);
	EXPECT_ERRORS(long_key, {"services[0].backends[0].labels.kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
				 "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
				 "a label key must be 1 to 63 bytes long, not 64"});
	EXPECT_ERRORS(long_value, {"services[0].backends[0].labels.k",
				   "a label value must be at most 63 bytes long, not 64"});
	free(long_key);
	free(long_value);
}

Test(policy_backends, address_and_port_are_unique_in_a_service)
{
	EXPECT_ERRORS(
	    WITH_BACKENDS("[{'address':'198.18.0.1','port':80},"
			  "{'address':'198.18.0.1','port':81},"
			  "{'address':'198.18.0.1','port':80,'weight':5}]"),
	    {"services[0].backends[2]", "198.18.0.1:80 is already listed as backends[0]"});
}

/* ---- rate_limit, allow_from ------------------------------------------ */

#define RATE(...) DOC(SVC(",'rate_limit':" __VA_ARGS__))
#define RL "services[0].rate_limit"

Test(policy_rate_limit, values)
{
	CHECK_CASES({RATE("100"), {RL, "expected an object, got integer 100"}},
		    {RATE("{'connections_per_second':0}"),
		     {RL ".connections_per_second", "0 is not a rate (1-100000000000)"}},
		    {RATE("{'bytes_per_second':-5}"),
		     {RL ".bytes_per_second", "-5 is not a rate (1-100000000000)"}},
		    {RATE("{'connections_per_second':1.5}"),
		     {RL ".connections_per_second", "expected an integer, got number 1.5"}},
		    {RATE("{'connections_per_second':1,'burst':-1}"),
		     {RL ".burst", "-1 is not a burst size (0-1000000000)"}},
		    {RATE("{'rps':1}"),
		     {RL ".rps", "unknown field \"rps\" (allowed: connections_per_second, burst, "
				 "bytes_per_second, bytes_burst, requests_per_second)"}},
		    {RATE("{'connections_per_second':100000000001}"),
		     {RL ".connections_per_second", "100000000001 is not a rate (1-100000000000)"}},
		    {RATE("{'bytes_per_second':1000000,'bytes_burst':1500}"),
		     {RL ".bytes_burst", "1500 is not a byte burst size (65536-1000000000)"}},
		    {RATE("{'connections_per_second':5,'bytes_burst':70000}"),
		     {RL ".bytes_burst", "a byte burst needs bytes_per_second"}});
}

Test(policy_rate_limit, burst_needs_a_rate)
{
	EXPECT_ERRORS(RATE("{'burst':5}"),
		      {RL ".burst", "a burst needs a rate: set connections_per_second, "
				    "bytes_per_second or requests_per_second"});
}

Test(policy_rate_limit, requests_per_second_is_http_only)
{
	EXPECT_ERRORS(RATE("{'requests_per_second':5}"),
		      {RL ".requests_per_second", "only allowed when protocol is \"http\" (this "
						  "service's protocol is \"tcp\")"});
}

/* ---- health ---------------------------------------------------------- */

#define HEALTH(...) DOC(SVC(",'health':" __VA_ARGS__))
#define HP "services[0].health"

Test(policy_health, defaults)
{
	struct dmsc_policy p;
	const struct dmsc_health *h;

	parse_ok(HEALTH("{'active':{'type':'tcp'},'passive':{}}"), &p);
	h = &p.services[0].health;
	cr_assert(p.services[0].has_health);
	cr_assert(h->has_active && h->has_passive);
	cr_expect_eq(h->active.type, DMSC_PROBE_TCP);
	cr_expect_null(h->active.path);
	cr_expect_eq(h->active.interval_ms, DMSC_HEALTH_INTERVAL_MS_DEFAULT);
	cr_expect_eq(h->active.timeout_ms, DMSC_HEALTH_TIMEOUT_MS_DEFAULT);
	cr_expect_eq(h->active.unhealthy_threshold, DMSC_HEALTH_UNHEALTHY_THRESHOLD_DEFAULT);
	cr_expect_eq(h->active.healthy_threshold, DMSC_HEALTH_HEALTHY_THRESHOLD_DEFAULT);
	cr_expect_eq(h->passive.consecutive_failures, DMSC_HEALTH_CONSECUTIVE_FAILURES_DEFAULT);
	cr_expect_eq(h->passive.base_ejection_ms, DMSC_HEALTH_BASE_EJECTION_MS_DEFAULT);
	cr_expect_eq(h->passive.max_ejection_ms, DMSC_HEALTH_MAX_EJECTION_MS_DEFAULT);
	dmsc_policy_free(&p);

	parse_ok(DOC(SVC()), &p);
	cr_expect_not(p.services[0].has_health);
	dmsc_policy_free(&p);
}

Test(policy_health, every_field)
{
	struct dmsc_policy p;
	const struct dmsc_health *h;

	parse_ok(HEALTH("{'active':{'type':'http','path':'/healthz?x=1','expected_status':204,"
			"'interval_ms':500,'timeout_ms':200,'unhealthy_threshold':2,"
			"'healthy_threshold':1},'passive':{'consecutive_failures':3,"
			"'base_ejection_ms':1000,'max_ejection_ms':4000}}"),
		 &p);
	h = &p.services[0].health;
	cr_expect_eq(h->active.type, DMSC_PROBE_HTTP);
	cr_expect_str_eq(h->active.path, "/healthz?x=1");
	cr_expect_eq(h->active.expected_status, 204);
	cr_expect_eq(h->active.interval_ms, 500);
	cr_expect_eq(h->active.timeout_ms, 200);
	cr_expect_eq(h->active.unhealthy_threshold, 2);
	cr_expect_eq(h->active.healthy_threshold, 1);
	cr_expect_eq(h->passive.consecutive_failures, 3);
	cr_expect_eq(h->passive.base_ejection_ms, 1000);
	cr_expect_eq(h->passive.max_ejection_ms, 4000);
	dmsc_policy_free(&p);

	parse_ok(HEALTH("{'passive':{'consecutive_failures':1}}"), &p);
	cr_expect_not(p.services[0].health.has_active);
	cr_expect(p.services[0].health.has_passive);
	dmsc_policy_free(&p);
}

Test(policy_health, values)
{
	CHECK_CASES(
	    {HEALTH("true"), {HP, "expected an object, got boolean true"}},
	    {HEALTH("{}"), {HP, "set active, passive or both"}},
	    {HEALTH("{'passive':{},'probe':1}"),
	     {HP ".probe", "unknown field \"probe\" (allowed: active, passive)"}},
	    {HEALTH("{'active':{}}"), {HP ".active.type", "required field is missing"}},
	    {HEALTH("{'active':{'type':'udp'}}"),
	     {HP ".active.type", "\"udp\" is not a probe type (tcp, http)"}},
	    {HEALTH("{'active':{'type':'http'}}"), {HP ".active.path", "required field is missing"}},
	    {HEALTH("{'active':{'type':'tcp','path':'/'}}"),
	     {HP ".active.path", "only allowed when type is \"http\""}},
	    {HEALTH("{'active':{'type':'tcp','expected_status':200}}"),
	     {HP ".active.expected_status", "only allowed when type is \"http\""}},
	    {HEALTH("{'active':{'type':'http','path':'health'}}"),
	     {HP ".active.path", "\"health\" must start with \"/\""}},
	    {HEALTH("{'active':{'type':'http','path':'/a b'}}"),
	     {HP ".active.path", "\"/a b\" is not a request path (printable ASCII without "
				 "spaces, at most 255)"}},
	    {HEALTH("{'active':{'type':'http','path':'/','expected_status':600}}"),
	     {HP ".active.expected_status", "600 is not an HTTP status (100-599)"}},
	    {HEALTH("{'active':{'type':'tcp','interval_ms':50}}"),
	     {HP ".active.interval_ms", "50 is not a probe interval in ms (100-3600000)"}},
	    {HEALTH("{'active':{'type':'tcp','timeout_ms':5}}"),
	     {HP ".active.timeout_ms", "5 is not a probe timeout in ms (10-3600000)"}},
	    {HEALTH("{'active':{'type':'tcp','interval_ms':1000,'timeout_ms':2000}}"),
	     {HP ".active.timeout_ms",
	      "2000 is longer than interval_ms (1000): a probe must end before the next"}},
	    {HEALTH("{'active':{'type':'tcp','healthy_threshold':0}}"),
	     {HP ".active.healthy_threshold", "0 is not a threshold (1-100)"}},
	    {HEALTH("{'active':{'type':'tcp','unhealthy_threshold':101}}"),
	     {HP ".active.unhealthy_threshold", "101 is not a threshold (1-100)"}},
	    {HEALTH("{'passive':{'consecutive_failures':0}}"),
	     {HP ".passive.consecutive_failures", "0 is not a failure count (1-1000)"}},
	    {HEALTH("{'passive':{'base_ejection_ms':10}}"),
	     {HP ".passive.base_ejection_ms", "10 is not an ejection time in ms (100-86400000)"}},
	    {HEALTH("{'passive':{'base_ejection_ms':5000,'max_ejection_ms':1000}}"),
	     {HP ".passive.max_ejection_ms", "1000 is shorter than base_ejection_ms (5000)"}},
	    {HEALTH("{'passive':{'max_ejection_ms':1000}}"),
	     {HP ".passive.max_ejection_ms", "1000 is shorter than base_ejection_ms (30000)"}},
	    {HEALTH("{'passive':{'eject':1}}"),
	     {HP ".passive.eject", "unknown field \"eject\" (allowed: consecutive_failures, "
				   "base_ejection_ms, max_ejection_ms, max_ejection_percent)"}},
	    {HEALTH("{'passive':{'max_ejection_percent':0}}"),
	     {HP ".passive.max_ejection_percent", "0 is not a percentage of the backends (1-100)"}},
	    {HEALTH("{'passive':{'max_ejection_percent':101}}"),
	     {HP ".passive.max_ejection_percent",
	      "101 is not a percentage of the backends (1-100)"}});
}

Test(policy_health, max_ejection_percent_defaults_to_every_backend)
{
	struct dmsc_policy p;

	parse_ok(HEALTH("{'passive':{}}"), &p);
	cr_expect_eq(p.services[0].health.passive.max_ejection_percent, 100);
	dmsc_policy_free(&p);
	parse_ok(HEALTH("{'passive':{'max_ejection_percent':50}}"), &p);
	cr_expect_eq(p.services[0].health.passive.max_ejection_percent, 50);
	dmsc_policy_free(&p);
}

Test(policy_health, not_for_udp)
{
	EXPECT_ERRORS(DOC(SVC(",'protocol':'udp','health':{'passive':{}}")),
		      {HP, "not for protocol \"udp\": there is no connection to probe or to see "
			   "fail"});
}

Test(policy_health, every_error_at_once)
{
	EXPECT_ERRORS(HEALTH("{'active':{'type':'http','interval_ms':1,'x':1},"
			     "'passive':{'consecutive_failures':-1}}"),
		      {HP ".active.x", "unknown field \"x\" (allowed: type, path, expected_status, "
				       "interval_ms, timeout_ms, unhealthy_threshold, "
				       "healthy_threshold)"},
		      {HP ".active.path", "required field is missing"},
		      {HP ".active.interval_ms", "1 is not a probe interval in ms (100-3600000)"},
		      {HP ".passive.consecutive_failures", "-1 is not a failure count (1-1000)"});
}

/* http services: dmsc-l7 honours health (docs/design.md decision 35), so
 * apply takes it as for tcp. */
Test(policy_health, http_is_taken_by_apply)
{
	struct dmsc_policy p;
	char buf[256];

	parse_ok(DOC(HTTP_SVC(",'health':{'passive':{}}")), &p);
	cr_expect_null(dmsc_policy_unsupported(&p, buf, sizeof(buf)));
	dmsc_policy_free(&p);
	parse_ok(HEALTH("{'passive':{}}"), &p);
	cr_expect_null(dmsc_policy_unsupported(&p, buf, sizeof(buf)));
	dmsc_policy_free(&p);
}

#define ALLOW(...) DOC(SVC(",'allow_from':" __VA_ARGS__))
#define NOT_CGROUP " is not a valid cgroup path: "

Test(policy_allow_from, paths)
{
	char *too_long = NULL;

	CHECK_CASES(
	    {ALLOW("'shop.slice'"),
	     {"services[0].allow_from", "expected an array, got string \"shop.slice\""}},
	    {ALLOW("[1]"), {"services[0].allow_from[0]", "expected a string, got integer 1"}},
	    {ALLOW("['']"), {"services[0].allow_from[0]", "\"\"" NOT_CGROUP "it is empty"}},
	    {ALLOW("['/shop.slice']"),
	     {"services[0].allow_from[0]",
	      "\"/shop.slice\"" NOT_CGROUP
	      "it must be relative to the cgroup2 root, without a leading \"/\""}},
	    {ALLOW("['a/../b']"),
	     {"services[0].allow_from[0]", "\"a/../b\"" NOT_CGROUP "it has a \"..\" component"}},
	    {ALLOW("['..']"),
	     {"services[0].allow_from[0]", "\"..\"" NOT_CGROUP "it has a \"..\" component"}},
	    {ALLOW("['./a']"),
	     {"services[0].allow_from[0]", "\"./a\"" NOT_CGROUP "it has a \".\" component"}},
	    {ALLOW("['a//b']"),
	     {"services[0].allow_from[0]", "\"a//b\"" NOT_CGROUP "it has an empty component"}},
	    {ALLOW("['a/']"),
	     {"services[0].allow_from[0]", "\"a/\"" NOT_CGROUP "it has an empty component"}});
	cr_assert(asprintf(&too_long, ALLOW("['ok.slice', '%s']"), run('c', DMSC_CGROUP_PATH_MAX)) >
		  0);
	EXPECT_ERRORS(too_long,
		      {"services[0].allow_from[1]",
		       "\"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
		       "...\"" NOT_CGROUP "it is 256 bytes long, at most 255"});
	free(too_long);
}

/* ---- routes ---------------------------------------------------------- */

#define R0 "services[0].routes[0]"

Test(policy_routes, http_only)
{
	EXPECT_ERRORS(DOC(SVC(",'routes':[{'match':{}}]")),
		      {"services[0].routes", "only allowed when protocol is \"http\" (this "
					     "service's protocol is \"tcp\")"});
	/* The protocol itself is wrong: that is the one error. */
	EXPECT_ERRORS(DOC(SVC(",'protocol':'htpp','routes':[]")),
		      {"services[0].protocol", "\"htpp\" is not a protocol (tcp, udp, http)"});
}

Test(policy_routes, match)
{
	CHECK_CASES(
	    {ROUTE("{}"), {R0 ".match", "required field is missing"}},
	    {ROUTE("'/api'"), {R0, "expected an object, got string \"/api\""}},
	    {ROUTE("{'match':{'path_prefix':'api/'}}"),
	     {R0 ".match.path_prefix", "\"api/\" must start with \"/\""}},
	    {ROUTE("{'match':{'path':''}}"), {R0 ".match.path", "\"\" must start with \"/\""}},
	    {ROUTE("{'match':{'path':'/a','path_prefix':'/'}}"),
	     {R0 ".match", "\"path\" and \"path_prefix\" cannot both be set"}},
	    {ROUTE("{'match':{'method':'get'}}"),
	     {R0 ".match.method", "\"get\" is not an HTTP method (GET, HEAD, POST, PUT, "
				  "DELETE, PATCH, OPTIONS, CONNECT, TRACE)"}},
	    {ROUTE("{'match':{'headers':{'x canary':'yes'}}}"),
	     {R0 ".match.headers[\"x canary\"]",
	      "\"x canary\" is not a valid header name (letters, digits and "
	      "!#$%&'*+-.^_`|~)"}},
	    {ROUTE("{'match':{'headers':{'x-canary':true}}}"),
	     {R0 ".match.headers.x-canary", "expected a string, got boolean true"}},
	    {ROUTE("{'match':{'host':'a'}}"),
	     {R0 ".match.host",
	      "unknown field \"host\" (allowed: path_prefix, path, method, headers)"}});
}

Test(policy_routes, target)
{
	CHECK_CASES(
	    {ROUTE("{'match':{},'timeout_ms':0}"),
	     {R0 ".timeout_ms", "0 is not a timeout in milliseconds (1-3600000)"}},
	    {ROUTE("{'match':{},'timeout_ms':3600001}"),
	     {R0 ".timeout_ms", "3600001 is not a timeout in milliseconds (1-3600000)"}},
	    {ROUTE("{'match':{},'retries':11}"), {R0 ".retries", "11 is not a retry count (0-10)"}},
	    {ROUTE("{'match':{},'backends':'v2'}"),
	     {R0 ".backends", "expected an object, got string \"v2\""}},
	    {ROUTE("{'match':{},'weight':1}"),
	     {R0 ".weight",
	      "unknown field \"weight\" (allowed: match, backends, timeout_ms, retries, idempotent)"}},
	    {ROUTE("{'match':{},'idempotent':1}"),
	     {R0 ".idempotent", "expected a boolean, got integer 1"}});
}

Test(policy_routes, selector_must_match_a_backend)
{
	EXPECT_ERRORS(DOC("{'name':'web'," VIP_PORT ",'protocol':'http','backends':["
			  "{'address':'198.18.0.1','port':80,'labels':{'version':'v1','zone':'a'}},"
			  "{'address':'198.18.0.2','port':80,'labels':{'version':'v2'}}],"
			  "'routes':[{'match':{},'backends':{'version':'v1','zone':'a'}},"
			  "{'match':{},'backends':{'version':'v2','zone':'a'}}]}"),
		      {"services[0].routes[1].backends",
		       "selector {\"version\": \"v2\", \"zone\": \"a\"} matches no backend of this "
		       "service"});
}

/* ---- many errors ----------------------------------------------------- */

Test(policy_errors, every_problem_is_collected_in_order)
{
	EXPECT_ERRORS(
	    "{'services':["
	    "{'name':'a b','vip':'10.0.0.300','port':'80','protocol':'sctp','x':1,"
	    "'backends':[{'address':'198.18.0.1','port':0,'weight':20000}]},"
	    "{'name':'ok','vip':'198.19.0.9','port':53,'protocol':'udp',"
	    "'backends':[{'address':'198.18.0.9','port':53}],"
	    "'rate_limit':{'burst':1},'allow_from':['/'],'accelerate':'yes'}],"
	    "'extra':true}",
	    {"extra", "unknown field \"extra\" (allowed: services, mtls, hosts)"},
	    {"services[0].x",
	     "unknown field \"x\" (allowed: name, vip, port, protocol, backends, rate_limit, "
	     "allow_from, accelerate, routes, health, mtls, affinity)"},
	    {"services[0].name", "\"a b\" " BAD_NAME},
	    {"services[0].vip", "\"10.0.0.300\" is not an IPv4 or IPv6 address"},
	    {"services[0].port", "expected an integer, got string \"80\""},
	    {"services[0].protocol", "\"sctp\" is not a protocol (tcp, udp, http)"},
	    {"services[0].backends[0].port", "0 " NOT_A_PORT},
	    {"services[0].backends[0].weight", "20000 is not a weight (0-10000)"},
	    {"services[1].rate_limit.burst",
	     "a burst needs a rate: set connections_per_second, bytes_per_second or "
	     "requests_per_second"},
	    {"services[1].allow_from[0]",
	     "\"/\"" NOT_CGROUP "it must be relative to the cgroup2 root, without a leading "
	     "\"/\""},
	    {"services[1].accelerate", "\"yes\" is not an accelerate mode (auto, on, off)"});
}

Test(policy_errors, list_is_capped)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p;
	char *doc = repeat("{\"services\":[", "%s%zu", DMSC_POLICY_ERRORS_MAX + 500, "]}");
	char line[1024];

	cr_assert_eq(dmsc_policy_parse(doc, strlen(doc), "big.json", &p, &errs), -EINVAL);
	cr_assert_eq(errs.count, DMSC_POLICY_ERRORS_MAX + 1);
	dmsc_policy_error_format(&errs.items[DMSC_POLICY_ERRORS_MAX - 1], line, sizeof(line));
	cr_expect_str_eq(line, "services[999]: expected an object, got integer 999");
	dmsc_policy_error_format(&errs.items[DMSC_POLICY_ERRORS_MAX], line, sizeof(line));
	cr_expect_str_eq(line, "500 more errors not shown");
	dmsc_policy_errors_free(&errs);
	free(doc);
}

Test(policy_errors, errs_can_be_reused)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p;
	char *bad = json("{'services':1}"), *good = json(DOC(SVC()));

	cr_assert_eq(dmsc_policy_parse(bad, strlen(bad), "a.json", &p, &errs), -EINVAL);
	cr_assert_eq(errs.count, 1);
	cr_assert_eq(dmsc_policy_parse(good, strlen(good), "b.json", &p, &errs), 0);
	cr_assert_eq(errs.count, 0);
	dmsc_policy_free(&p);
	dmsc_policy_free(&p); /* freeing twice is harmless */
	dmsc_policy_errors_free(&errs);
	dmsc_policy_errors_free(&errs);
	free(bad);
	free(good);
}

Test(policy_errors, format)
{
	const struct dmsc_policy_error with_path = {"services[2].port",
						    "70000 is not a port (1-65535)"};
	const struct dmsc_policy_error without = {"", "line 1, column 1: JSON syntax error: x"};
	char buf[64], tiny[8];

	dmsc_policy_error_format(&with_path, buf, sizeof(buf));
	cr_expect_str_eq(buf, "services[2].port: 70000 is not a port (1-65535)");
	dmsc_policy_error_format(&without, buf, sizeof(buf));
	cr_expect_str_eq(buf, "line 1, column 1: JSON syntax error: x");
	dmsc_policy_error_format(&with_path, tiny, sizeof(tiny));
	cr_expect_str_eq(tiny, "service");
}

/* ---- good documents --------------------------------------------------- */

/* docs/policy.md's example of every field: "protocol" is "http", since it
 * uses requests_per_second and routes, which are http only. */
static const char design_example[] =
    "{\n"
    "  'services': [\n"
    "    {\n"
    "      'name': 'reviews',\n"
    "      'vip': '198.19.0.10', 'port': 9080,\n"
    "      'protocol': '%s',\n"
    "      'backends': [\n"
    "        { 'address': '198.18.1.2', 'port': 9080, 'weight': 80, 'labels': { "
    "'version': 'v1' } },\n"
    "        { 'address': '198.18.1.3', 'port': 9080, 'weight': 20, 'labels': { "
    "'version': 'v2' } }\n"
    "      ],\n"
    "      'rate_limit': { 'connections_per_second': 100, 'burst': 20,\n"
    "                      'bytes_per_second': 1048576, 'requests_per_second': 50 },\n"
    "      'allow_from': [ 'shop.slice/frontend.service' ],\n"
    "      'accelerate': 'auto',\n"
    "      'routes': [\n"
    "        { 'match': { 'path_prefix': '/api/', 'method': 'GET', 'headers': { "
    "'x-canary': 'yes' } },\n"
    "          'backends': { 'version': 'v2' }, 'timeout_ms': 2000, 'retries': 2 }\n"
    "      ]\n"
    "    }\n"
    "  ]\n"
    "}\n";

static void expect_label(const struct dmsc_label *l, const char *key, const char *value)
{
	cr_expect_str_eq(l->key, key);
	cr_expect_str_eq(l->value, value);
}

Test(policy_good, design_example_lands_in_the_struct)
{
	const struct dmsc_policy_service *s;
	const struct dmsc_route *r;
	struct dmsc_policy p;
	char *doc = NULL;

	cr_assert(asprintf(&doc, design_example, "http") > 0);
	parse_ok(doc, &p);
	cr_assert_eq(p.n_services, 1);
	s = &p.services[0];
	cr_expect_str_eq(s->name, "reviews");
	cr_expect_eq(s->vip, ip("198.19.0.10"));
	cr_expect_eq(s->port, 9080);
	cr_expect_eq(s->protocol, DMSC_POLICY_HTTP);
	cr_assert_eq(s->n_backends, 2);
	cr_expect_eq(s->backends[0].addr, ip("198.18.1.2"));
	cr_expect_eq(s->backends[0].port, 9080);
	cr_expect_eq(s->backends[0].weight, 80);
	cr_assert_eq(s->backends[0].n_labels, 1);
	expect_label(&s->backends[0].labels[0], "version", "v1");
	cr_expect_eq(s->backends[1].addr, ip("198.18.1.3"));
	cr_expect_eq(s->backends[1].weight, 20);
	expect_label(&s->backends[1].labels[0], "version", "v2");
	cr_expect(s->has_rate_limit);
	cr_expect(s->rate_limit.has_connections_per_second && s->rate_limit.has_burst &&
		  s->rate_limit.has_bytes_per_second && s->rate_limit.has_requests_per_second);
	cr_expect_eq(s->rate_limit.connections_per_second, 100);
	cr_expect_eq(s->rate_limit.burst, 20);
	cr_expect_eq(s->rate_limit.bytes_per_second, 1048576);
	cr_expect_eq(s->rate_limit.requests_per_second, 50);
	cr_expect(s->has_allow_from);
	cr_assert_eq(s->n_allow_from, 1);
	cr_expect_str_eq(s->allow_from[0], "shop.slice/frontend.service");
	cr_expect_eq(s->accelerate, DMSC_ACCEL_AUTO);
	cr_assert_eq(s->n_routes, 1);
	r = &s->routes[0];
	cr_expect_str_eq(r->match.path_prefix, "/api/");
	cr_expect_null(r->match.path);
	cr_expect_str_eq(r->match.method, "GET");
	cr_assert_eq(r->match.n_headers, 1);
	expect_label(&r->match.headers[0], "x-canary", "yes");
	cr_assert_eq(r->n_selector, 1);
	expect_label(&r->selector[0], "version", "v2");
	cr_expect(r->has_timeout_ms && r->has_retries);
	cr_expect_eq(r->timeout_ms, 2000);
	cr_expect_eq(r->retries, 2);
	dmsc_policy_free(&p);
	free(doc);
}

Test(policy_good, design_example_as_printed_is_not_tcp)
{
	char *doc = NULL;

	cr_assert(asprintf(&doc, design_example, "tcp") > 0);
	EXPECT_ERRORS(
	    doc,
	    {"services[0].rate_limit.requests_per_second",
	     "only allowed when protocol is \"http\" (this service's protocol is \"tcp\")"},
	    {"services[0].routes",
	     "only allowed when protocol is \"http\" (this service's protocol is \"tcp\")"});
	free(doc);
}

Test(policy_good, defaults)
{
	const struct dmsc_policy_service *s;
	struct dmsc_policy p;

	parse_ok(DOC(SVC()), &p);
	cr_assert_eq(p.n_services, 1);
	s = &p.services[0];
	cr_expect_eq(s->protocol, DMSC_POLICY_TCP);
	cr_expect_eq(s->accelerate, DMSC_ACCEL_AUTO);
	cr_expect_eq(s->backends[0].weight, 1);
	cr_expect_eq(s->backends[0].n_labels, 0);
	cr_expect_not(s->has_rate_limit);
	cr_expect_not(s->has_allow_from);
	cr_expect_eq(s->n_allow_from, 0);
	cr_expect_eq(s->n_routes, 0);
	dmsc_policy_free(&p);
}

Test(policy_good, limits_are_inclusive)
{
	const struct dmsc_policy_service *s;
	struct dmsc_policy p;
	char *doc = NULL;

	cr_assert(asprintf(&doc,
			   DOC("{'name':'%s','vip':'198.19.0.1','port':65535,'protocol':'http',"
			       "'backends':[{'address':'198.18.0.1','port':1,'weight':0,"
			       "'labels':{'%s':'%s','e':''}},"
			       "{'address':'198.18.0.1','port':2,'weight':10000}],"
			       "'rate_limit':{'connections_per_second':1,'burst':0},"
			       "'allow_from':['%s','a.slice/b.scope/c'],'accelerate':'off',"
			       "'routes':[{'match':{'path':'/'},'backends':{},'timeout_ms':3600000,"
			       "'retries':0},{'match':{},'timeout_ms':1,'retries':10,'idempotent':true}]}"),
			   run('n', 63), run('k', 63), run('v', 63), run('c', 255)) > 0);
	parse_ok(doc, &p);
	s = &p.services[0];
	cr_expect_eq(strlen(s->name), 63);
	cr_expect_eq(s->port, 65535);
	cr_expect_eq(s->backends[0].weight, 0);
	cr_expect_eq(s->backends[1].weight, DMSC_WEIGHT_MAX);
	cr_expect_eq(strlen(s->backends[0].labels[0].value), 63);
	cr_expect_str_eq(s->backends[0].labels[1].value, "");
	cr_expect(s->rate_limit.has_burst);
	cr_expect_eq(s->rate_limit.burst, 0);
	cr_expect_not(s->rate_limit.has_bytes_per_second);
	cr_expect_eq(strlen(s->allow_from[0]), DMSC_CGROUP_PATH_MAX - 1);
	cr_expect_eq(s->accelerate, DMSC_ACCEL_OFF);
	cr_expect_eq(s->routes[0].timeout_ms, 3600000);
	cr_expect_str_eq(s->routes[0].match.path, "/");
	cr_expect_eq(s->routes[0].n_selector, 0);
	cr_expect(s->routes[1].has_timeout_ms);
	cr_expect_eq(s->routes[1].retries, 10);
	cr_expect_not(s->routes[0].idempotent);
	cr_expect(s->routes[1].idempotent);
	dmsc_policy_free(&p);
	free(doc);
}

Test(policy_good, most_backends_a_service_may_have)
{
	char *doc = backends_doc(DMSC_BACKENDS_PER_SERVICE_MAX);
	struct dmsc_policy p;

	parse_ok(doc, &p);
	cr_expect_eq(p.services[0].n_backends, DMSC_BACKENDS_PER_SERVICE_MAX);
	cr_expect_eq(p.services[0].backends[127].addr, ip("198.18.1.127"));
	dmsc_policy_free(&p);
	free(doc);
}

Test(policy_good, tcp_and_udp_may_share_a_vip_and_port)
{
	struct dmsc_policy p;

	parse_ok(DOC(SVC() ","
			   "{'name':'dns'," VIP_PORT ",'protocol':'udp'," ONE_BACKEND "}"),
		 &p);
	cr_assert_eq(p.n_services, 2);
	cr_expect_eq(p.services[1].protocol, DMSC_POLICY_UDP);
	dmsc_policy_free(&p);
}

Test(policy_good, empty_policy_and_duplicate_keys)
{
	struct dmsc_policy p;

	parse_ok(" {'services': []}\n\n", &p);
	cr_expect_eq(p.n_services, 0);
	dmsc_policy_free(&p);
	/* json-c keeps the last of duplicate keys. */
	parse_ok(DOC("{'name':'web','port':1," VIP_PORT "," ONE_BACKEND "}"), &p);
	cr_expect_eq(p.services[0].port, 80);
	dmsc_policy_free(&p);
}

/* ---- unsupported ------------------------------------------------------ */

static void expect_unsupported(const char *doc, const char *want)
{
	struct dmsc_policy p;
	const char *got;
	char buf[256];

	parse_ok(doc, &p);
	got = dmsc_policy_unsupported(&p, buf, sizeof(buf));
	if (want)
		cr_expect_str_eq(got, want, "%s", doc);
	else
		cr_expect_null(got, "%s: %s", doc, got);
	dmsc_policy_free(&p);
}


Test(policy_unsupported, features_this_build_does_not_enforce)
{
	expect_unsupported(DOC(SVC()), NULL);
	expect_unsupported(DOC(SVC(",'protocol':'tcp','accelerate':'off'")), NULL);
	expect_unsupported(DOC(SVC(",'accelerate':'auto'")), NULL);
	expect_unsupported(DOC(SVC(",'protocol':'udp'")), NULL);
	/* dmsc-l7 enforces http, routes and requests_per_second + burst. */
	expect_unsupported(DOC(HTTP_SVC()), NULL);
	expect_unsupported(
		DOC(HTTP_SVC(",'rate_limit':{'requests_per_second':5,'burst':2},"
			     "'routes':[{'match':{'path_prefix':'/a'},'timeout_ms':100,'retries':1}]")),
		NULL);
	expect_unsupported(DOC(HTTP_SVC(",'rate_limit':{'requests_per_second':5,"
					"'connections_per_second':5}")),
			   NULL);
	expect_unsupported(DOC(SVC(",'rate_limit':{'connections_per_second':5}")), NULL);
	expect_unsupported(DOC(SVC(",'rate_limit':{'bytes_per_second':65536,'bytes_burst':65536}")),
			   NULL);
	expect_unsupported(DOC(SVC(",'allow_from':[]")), NULL);
	expect_unsupported(DOC(SVC(",'accelerate':'on'")), NULL);
	/* IPv6: everything, http too (docs/design.md decision 48). */
	expect_unsupported(DOC(SVC() "," SVC6(",'protocol':'udp','allow_from':['a.slice'],"
					      "'rate_limit':{'connections_per_second':5}")),
			   NULL);
	expect_unsupported(DOC(SVC() "," SVC6(",'protocol':'http'")), NULL);
	expect_unsupported(DOC(SVC6(",'rate_limit':{'bytes_per_second':65536}")), NULL);
	expect_unsupported(DOC(SVC6(",'health':{'passive':{},'active':{'type':'tcp'}}")), NULL);
	/* Every field together: this build enforces them all. */
	expect_unsupported(DOC(SVC() ","
				     "{'name':'b','vip':'198.19.0.2','port':80," ONE_BACKEND
				     ",'rate_limit':{},'accelerate':'on','protocol':'http'}"),
			   NULL);
}

Test(policy_unsupported, proto_names)
{
	cr_expect_str_eq(dmsc_policy_proto_name(DMSC_POLICY_TCP), "tcp");
	cr_expect_str_eq(dmsc_policy_proto_name(DMSC_POLICY_UDP), "udp");
	cr_expect_str_eq(dmsc_policy_proto_name(DMSC_POLICY_HTTP), "http");
	cr_expect_str_eq(dmsc_policy_proto_name((enum dmsc_policy_proto)7), "unknown");
}

/* ---- files ------------------------------------------------------------ */

static char dir[64];

static void make_dir(void)
{
	tmpdir_make(dir, sizeof(dir), "dmsc-test-policy");
}

static void remove_dir(void)
{
	tmpdir_remove(dir);
}

static char *write_file(const char *name, const char *doc)
{
	char *path = NULL, *text = json(doc);
	FILE *f;

	cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	free(text);
	return path;
}

static void expect_load_error(const char *file, int want_err, const char *want)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p;

	cr_expect_eq(dmsc_policy_load_file(file, &p, &errs), want_err, "%s", file);
	cr_expect_eq(p.n_services, 0);
	cr_assert_eq(errs.count, 1);
	cr_expect_str_eq(errs.items[0].path, "");
	cr_expect_str_eq(errs.items[0].message, want);
	dmsc_policy_errors_free(&errs);
}

TestSuite(policy_file, .init = make_dir, .fini = remove_dir);

Test(policy_file, missing_file)
{
	char *path = NULL;

	cr_assert(asprintf(&path, "%s/nope.json", dir) > 0);
	expect_load_error(path, -ENOENT, "cannot open: No such file or directory");
	free(path);
}

Test(policy_file, directory)
{
	expect_load_error(dir, -EISDIR, "cannot read: Is a directory");
}

Test(policy_file, too_large)
{
	char *path = write_file("big.json", "");

	cr_assert_eq(truncate(path, DMSC_POLICY_FILE_MAX + 1), 0);
	expect_load_error(path, -EFBIG, "the file is larger than 64 MiB");
	free(path);
}

Test(policy_file, good_and_bad_files)
{
	char *good = write_file("good.json", DOC(SVC()));
	char *bad = write_file("bad.json", "{\n 'services': 7\n}\n");
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p;

	cr_assert_eq(dmsc_policy_load_file(good, &p, &errs), 0);
	cr_expect_eq(p.n_services, 1);
	dmsc_policy_free(&p);
	cr_assert_eq(dmsc_policy_load_file(bad, &p, &errs), -EINVAL);
	cr_assert_eq(errs.count, 1);
	cr_expect_str_eq(errs.items[0].message, "expected an array, got integer 7");
	dmsc_policy_errors_free(&errs);
	free(good);
	free(bad);
}

Test(policy_file, dash_reads_stdin)
{
	char *good = write_file("stdin.json", DOC(SVC() ","
							"{'name':'b'," VIP_PORT
							",'protocol':'udp'," ONE_BACKEND "}"));
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p;
	int fd = open(good, O_RDONLY);

	/* Each test runs in its own process: replacing stdin is local. */
	cr_assert_geq(fd, 0);
	cr_assert_eq(dup2(fd, STDIN_FILENO), STDIN_FILENO);
	close(fd);
	cr_assert_eq(dmsc_policy_load_file("-", &p, &errs), 0);
	cr_expect_eq(p.n_services, 2);
	dmsc_policy_free(&p);
	dmsc_policy_errors_free(&errs);
	free(good);
}

/* ---- IPv6 (docs/design.md decisions 12 and 27) ------------------------ */

static void ip6(const char *s, uint8_t out[16])
{
	cr_assert_eq(inet_pton(AF_INET6, s, out), 1);
}

Test(policy_ipv6, vip_and_backends_land_in_the_struct)
{
	const struct dmsc_policy_service *s;
	uint8_t want[16];
	struct dmsc_policy p;

	parse_ok(DOC(SVC6() "," SVC()), &p);
	cr_assert_eq(p.n_services, 2);
	s = &p.services[0];
	cr_expect_eq(s->family, AF_INET6);
	cr_expect_eq(s->vip, 0);
	ip6("2001:2::10", want);
	cr_expect_arr_eq(s->vip6, want, 16);
	ip6("2001:2:0:1::2", want);
	cr_expect_arr_eq(s->backends[0].addr6, want, 16);
	cr_expect_eq(s->backends[0].addr, 0);
	cr_expect_eq(s->backends[0].port, 8080);
	s = &p.services[1];
	cr_expect_eq(s->family, AF_INET);
	cr_expect_eq(s->vip, ip("198.19.0.1"));
	memset(want, 0, sizeof(want));
	cr_expect_arr_eq(s->vip6, want, 16);
	dmsc_policy_free(&p);
	/* Loopback is a unicast address, as 127.0.0.1 is for IPv4. */
	parse_ok(DOC("{'name':'lo','vip':'2001:2::11','port':80,"
		     "'backends':[{'address':'::1','port':80}]}"), &p);
	dmsc_policy_free(&p);
}

Test(policy_ipv6, vip)
{
	CHECK_CASES(
	    {AT_VIP6("'2001:2::g'"),
	     {"services[0].vip", "\"2001:2::g\" is not an IPv4 or IPv6 address"}},
	    {AT_VIP6("'[2001:2::1]'"),
	     {"services[0].vip", "\"[2001:2::1]\" is not an IPv4 or IPv6 address"}},
	    {AT_VIP6("'::'"),
	     {"services[0].vip", "\"::\" is the unspecified address; a service" UNICAST6}},
	    {AT_VIP6("'ff02::1'"),
	     {"services[0].vip", "\"ff02::1\" is a multicast address; a service" UNICAST6}},
	    {AT_VIP6("'fe80::1%eth0'"),
	     {"services[0].vip", "\"fe80::1%eth0\" has a zone; a service needs an address "
				 "without one (the socket hooks cannot set a zone)"}},
	    {AT_VIP6("'::ffff:198.19.0.1'"),
	     {"services[0].vip", "\"::ffff:198.19.0.1\" is an IPv4-mapped address; write the "
				 "IPv4 address 198.19.0.1, which dual-stack sockets reach as "
				 "::ffff:198.19.0.1"}});
}

Test(policy_ipv6, backends)
{
	CHECK_CASES(
	    {WITH_BACKENDS6("[{'address':'fe80::2','port':80}]"),
	     {"services[0].backends[0].address",
	      "\"fe80::2\" is a link-local address (the socket hooks cannot set its zone); "
	      "a backend" UNICAST6}},
	    {WITH_BACKENDS6("[{'address':'ff05::2','port':80}]"),
	     {"services[0].backends[0].address", "\"ff05::2\" is a multicast address; a backend"
						 UNICAST6}},
	    {WITH_BACKENDS6("[{'address':'2001:2::1','port':80},"
			    "{'address':'2001:2:0::1','port':80}]"),
	     {"services[0].backends[1]", "[2001:2::1]:80 is already listed as backends[0]"}});
}

Test(policy_ipv6, one_family_per_service)
{
	CHECK_CASES(
	    {WITH_BACKENDS6("[{'address':'2001:2::1','port':80},"
			    "{'address':'198.18.0.1','port':80}]"),
	     {"services[0].backends[1]", "address \"198.18.0.1\" is IPv4, the service's vip is "
					 "IPv6; a service's VIP and backends are of one family"}},
	    {WITH_BACKENDS("[{'address':'2001:2::1','port':80}]"),
	     {"services[0].backends[0]", "address \"2001:2::1\" is IPv6, the service's vip is "
					 "IPv4; a service's VIP and backends are of one family"}});
	/* A VIP that is wrong has no family: its backends are not blamed. */
	EXPECT_ERRORS(DOC("{'name':'web','vip':'2001:2::zz','port':80," ONE_BACKEND6 "}"),
		      {"services[0].vip", "\"2001:2::zz\" is not an IPv4 or IPv6 address"});
}

Test(policy_ipv6, vip_port_protocol_is_unique_per_address)
{
	/* Two spellings of one address are one key. */
	EXPECT_ERRORS(DOC(SVC6() ",{'name':'b','vip':'2001:2:0::10','port':80," ONE_BACKEND6 "}"),
		      {"services[1]", "[2001:2::10]:80/tcp is already used by services[0] \"web6\""});
	struct dmsc_policy p;

	parse_ok(DOC(SVC6() ",{'name':'b','vip':'2001:2::11','port':80," ONE_BACKEND6 "}"), &p);
	dmsc_policy_free(&p);
}

/* ---- mtls, hosts, a backend's host ---------------------------------- */

#define HOSTS "'hosts':{'node-b':'198.18.13.2:15008','node-c.east':'198.18.13.3:15009'}"
#define MTLS_DOC(top, services) "{" top "'services':[" services "]}"
#define ON_HOST(host) "'backends':[{'address':'198.18.0.1','port':8080,'host':" host "}]"

Test(policy_mtls, defaults_and_resolution)
{
	struct dmsc_policy p;

	parse_ok(DOC(SVC()), &p);
	cr_expect_eq(p.services[0].mtls, DMSC_MTLS_OFF);
	cr_expect_null(p.services[0].backends[0].host);
	dmsc_policy_free(&p);

	/* the document's default; a service's own; udp keeps off */
	parse_ok(MTLS_DOC("'mtls':'required'," HOSTS ",",
			  "{'name':'a','vip':'198.19.0.1','port':80," ON_HOST("'node-b'") "},"
			  "{'name':'b','vip':'198.19.0.2','port':80,'mtls':'permissive',"
			  ON_HOST("'node-c.east'") "},"
			  "{'name':'c','vip':'198.19.0.3','port':53,'protocol':'udp',"
			  ONE_BACKEND "}"),
		 &p);
	cr_expect_eq(p.services[0].mtls, DMSC_MTLS_REQUIRED);
	cr_expect_eq(p.services[1].mtls, DMSC_MTLS_PERMISSIVE);
	cr_expect_eq(p.services[2].mtls, DMSC_MTLS_OFF);
	cr_expect_str_eq(p.services[0].backends[0].host, "node-b");
	cr_expect_eq(p.services[0].backends[0].host_at.v4, inet_addr("198.18.13.2"));
	cr_expect_eq(p.services[0].backends[0].host_at.port, 15008);
	cr_expect_eq(p.services[1].backends[0].host_at.v4, inet_addr("198.18.13.3"));
	cr_expect_eq(p.services[1].backends[0].host_at.port, 15009);
	dmsc_policy_free(&p);

	/* a tunnel at an IPv6 address, an IPv6 service on another host
	 * (docs/design.md decision 64) */
	parse_ok(MTLS_DOC("'mtls':'required','hosts':{'node-b':'[2001:2:13::2]:15008'},",
			  "{'name':'a','vip':'2001:2:113::10','port':80,'backends':[{'address':"
			  "'2001:2:13::2','port':8080,'host':'node-b'}]}"),
		 &p);
	cr_expect_eq(p.services[0].backends[0].host_at.family, AF_INET6);
	cr_expect_eq(p.services[0].backends[0].host_at.v6[15], 2);
	cr_expect_eq(p.services[0].backends[0].host_at.port, 15008);
	expect_unsupported(MTLS_DOC("'mtls':'required','hosts':{'node-b':'[2001:2:13::2]:15008'},",
				    "{'name':'a','vip':'2001:2:113::10','port':80,'backends':[{"
				    "'address':'2001:2:13::2','port':8080,'host':'node-b'}]}"),
			   NULL);
	dmsc_policy_free(&p);
}

Test(policy_mtls, values)
{
	CHECK_CASES(
	    {MTLS_DOC("'mtls':'on',", SVC()),
	     {"mtls", "\"on\" is not an mtls mode (off, permissive, required)"}},
	    {DOC(SVC(",'mtls':true")), {"services[0].mtls", "expected a string, got boolean true"}},
	    {DOC(SVC(",'protocol':'udp','mtls':'required'")),
	     {"services[0].mtls", "\"required\" needs protocol \"tcp\" or \"http\": the tunnel "
				  "between hosts carries TCP streams (this service's protocol is "
				  "\"udp\")"}},
	    {MTLS_DOC("'hosts':[],", SVC()), {"hosts", "expected an object, got an array"}},
	    {MTLS_DOC("'hosts':{'Node':'198.18.13.2:15008'},", SVC()),
	     {"hosts.Node", "\"Node\" is not a host name: only a-z, 0-9, \"-\" and \".\" are "
			    "allowed (a host certificate's lowercase name)"}},
	    {MTLS_DOC("'hosts':{'a..b':'198.18.13.2:15008'},", SVC()),
	     {"hosts[\"a..b\"]", "\"a..b\" is not a host name: it has an empty label"}},
	    {MTLS_DOC("'hosts':{'-a':'198.18.13.2:15008'},", SVC()),
	     {"hosts.-a", "\"-a\" is not a host name: a label starts or ends with \"-\""}},
	    {MTLS_DOC("'hosts':{'b':'198.18.13.2'},", SVC()),
	     {"hosts.b", "\"198.18.13.2\" is not the address of a host's tunnel: write "
			 "IPv4ADDRESS:PORT or [IPv6ADDRESS]:PORT, e.g. \"198.18.13.2:15008\", "
			 "\"[2001:2::2]:15008\""}},
	    {MTLS_DOC("'hosts':{'b':'198.18.13.2:0'},", SVC()),
	     {"hosts.b", "\"198.18.13.2:0\" is not the address of a host's tunnel: write "
			 "IPv4ADDRESS:PORT or [IPv6ADDRESS]:PORT, e.g. \"198.18.13.2:15008\", "
			 "\"[2001:2::2]:15008\""}},
	    {MTLS_DOC("'hosts':{'b':'0.0.0.0:15008'},", SVC()),
	     {"hosts.b", "\"0.0.0.0:15008\": the tunnel address must be a unicast address of "
			 "the host"}},
	    {MTLS_DOC("'hosts':{'b':'2001:2::2:15008'},", SVC()),
	     {"hosts.b", "\"2001:2::2:15008\" is not the address of a host's tunnel: write "
			 "IPv4ADDRESS:PORT or [IPv6ADDRESS]:PORT, e.g. \"198.18.13.2:15008\", "
			 "\"[2001:2::2]:15008\""}},
	    {MTLS_DOC("'hosts':{'b':'[ff02::1]:15008'},", SVC()),
	     {"hosts.b", "\"[ff02::1]:15008\": the tunnel address must be a unicast address of "
			 "the host"}},
	    {MTLS_DOC("'hosts':{'b':'[::ffff:198.18.13.2]:15008'},", SVC()),
	     {"hosts.b", "\"[::ffff:198.18.13.2]:15008\": the tunnel address must be a unicast "
			 "address of the host (an IPv4 one written as IPv4)"}},
	    {MTLS_DOC("'hosts':{'b':7},", SVC()), {"hosts.b", "expected a string, got integer 7"}},
	    {MTLS_DOC(HOSTS ",", "{'name':'a','vip':'198.19.0.1','port':80," ON_HOST("'node-x'") "}"),
	     {"services[0].backends[0].host",
	      "\"node-x\" is not in the top-level \"hosts\" (the address of each host's "
	      "tunnel)"}},
	    {DOC("{'name':'a','vip':'198.19.0.1','port':80," ON_HOST("'node-b'") "}"),
	     {"services[0].backends[0].host",
	      "\"node-b\" is not in the top-level \"hosts\" (the address of each host's "
	      "tunnel)"}},
	    {DOC("{'name':'a','vip':'198.19.0.1','port':80," ON_HOST("'B'") "}"),
	     {"services[0].backends[0].host",
	      "\"B\" is not a host name: only a-z, 0-9, \"-\" and \".\" are allowed (a host "
	      "certificate's lowercase name)"}});
}

Test(policy_mtls, broken_hosts_reported_once)
{
	/* the backend names the broken entry: only the entry is reported */
	EXPECT_ERRORS(MTLS_DOC("'hosts':{'node-b':'x'},",
			       "{'name':'a','vip':'198.19.0.1','port':80," ON_HOST("'node-b'") "}"),
		      {"hosts.node-b", "\"x\" is not the address of a host's tunnel: write "
				       "IPv4ADDRESS:PORT or [IPv6ADDRESS]:PORT, e.g. \"198.18.13.2:15008\", "
			 "\"[2001:2::2]:15008\""});
}

Test(policy_mtls, http_across_hosts_supported)
{
	/* dmsc-l7 goes through the tunnel (docs/design.md decision 75): an
	 * http service with mtls and a backend on another host is applied,
	 * required or permissive, and by the document's default */
	expect_unsupported(MTLS_DOC(HOSTS ",", "{'name':'a','vip':'198.19.0.1','port':80,"
					       "'protocol':'http','mtls':'required',"
					       ON_HOST("'node-b'") "}"),
			   NULL);
	expect_unsupported(MTLS_DOC(HOSTS ",", "{'name':'a','vip':'198.19.0.1','port':80,"
					       "'protocol':'http','mtls':'permissive',"
					       ON_HOST("'node-b'") "}"),
			   NULL);
	expect_unsupported(MTLS_DOC(HOSTS ",'mtls':'required',",
				    "{'name':'a','vip':'198.19.0.1','port':80,'protocol':'http',"
				    ON_HOST("'node-b'") "}"),
			   NULL);
	expect_unsupported(DOC(HTTP_SVC(",'mtls':'required'")), NULL);
}

/* The one rule for what crosses hosts through the tunnel, the kernel's
 * and dmsc-l7's (dmsc_policy_backend_tunneled). */
Test(policy_mtls, backend_tunneled)
{
	struct dmsc_policy_backend on_b = {.host = "node-b"}, local = {0};
	struct dmsc_policy_service s = {.mtls = DMSC_MTLS_REQUIRED};

	cr_expect(dmsc_policy_backend_tunneled(&s, &on_b, "node-a"));
	cr_expect_not(dmsc_policy_backend_tunneled(&s, &on_b, "node-b"), "its own host");
	cr_expect_not(dmsc_policy_backend_tunneled(&s, &local, "node-a"), "no host named");
	cr_expect_not(dmsc_policy_backend_tunneled(&s, &on_b, NULL), "no name of its own");
	cr_expect_not(dmsc_policy_backend_tunneled(&s, &on_b, ""), "no name of its own");
	s.mtls = DMSC_MTLS_PERMISSIVE;
	cr_expect(dmsc_policy_backend_tunneled(&s, &on_b, "node-a"));
	s.mtls = DMSC_MTLS_OFF;
	cr_expect_not(dmsc_policy_backend_tunneled(&s, &on_b, "node-a"), "mtls off");
}
