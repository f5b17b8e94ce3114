// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The etcd client's pure parts (base64, the gateway's JSON bodies and
 * answers, the watch stream's splitting) and the parse of one service
 * value stored in etcd.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "etcd.h"
#include "etcd_store.h"
#include "mapmem.h"

Test(etcd_b64, round_trips_every_tail_length)
{
	const char *in[] = {"", "a", "ab", "abc", "abcd", "/dmsc/ns/a/services/x"};
	const char *want[] = {
	    "", "YQ==", "YWI=", "YWJj", "YWJjZA==", "L2Rtc2MvbnMvYS9zZXJ2aWNlcy94"};
	size_t i;

	for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char *enc = dmsc_b64_encode(in[i], strlen(in[i])), *dec;
		size_t len;

		cr_assert_str_eq(enc, want[i]);
		cr_assert_eq(dmsc_b64_decode(enc, &dec, &len), 0);
		cr_assert_eq(len, strlen(in[i]));
		cr_assert_str_eq(dec, in[i]);
		free(enc);
		free(dec);
	}
}

Test(etcd_b64, refuses_what_is_not_base64)
{
	const char *bad[] = {"Y", "YQ=", "Y===", "YQ==YQ==", "Y!==", "=QQQ"};
	size_t i, len;
	char *out;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(dmsc_b64_decode(bad[i], &out, &len), -EINVAL, "%s", bad[i]);
}

Test(etcd_body, prefix_end_increments_the_last_byte)
{
	char *e = dmsc_etcd_prefix_end("/dmsc/ns/a/services/");

	cr_assert_str_eq(e, "/dmsc/ns/a/services0");
	free(e);
	e = dmsc_etcd_prefix_end("a\xff");
	cr_assert_str_eq(e, "b");
	free(e);
}

Test(etcd_body, range_txn_and_watch_bodies)
{
	struct dmsc_etcd_cmp cmp[] = {
	    {.key = "/k", .result = DMSC_ETCD_EQUAL, .mod_rev = 7},
	    {.key = "/a/", .range_end = "/a0", .result = DMSC_ETCD_LESS, .mod_rev = 12},
	};
	struct dmsc_etcd_op ops[] = {
	    {.type = DMSC_ETCD_PUT, .key = "/k", .value = "{}"},
	    {.type = DMSC_ETCD_DELETE, .key = "/d"},
	};
	char *b = dmsc_etcd_range_body("/a/", "/a0", 0, 0);

	cr_assert_str_eq(b, "{\"key\":\"L2Ev\",\"range_end\":\"L2Ew\"}");
	free(b);
	b = dmsc_etcd_range_body("/a/", "/a0", 42, 0);
	cr_assert_str_eq(b, "{\"key\":\"L2Ev\",\"range_end\":\"L2Ew\",\"revision\":\"42\"}");
	free(b);
	b = dmsc_etcd_range_body("/a/", "/a0", 42, 3);
	cr_assert_str_eq(b, "{\"key\":\"L2Ev\",\"range_end\":\"L2Ew\",\"revision\":\"42\","
			    "\"limit\":\"3\"}");
	free(b);
	b = dmsc_etcd_txn_body(cmp, 2, ops, 2);
	cr_assert_str_eq(
	    b, "{\"compare\":[{\"target\":\"MOD\",\"result\":\"EQUAL\",\"key\":\"L2s=\","
	       "\"mod_revision\":\"7\"},{\"target\":\"MOD\",\"result\":\"LESS\",\"key\":\"L2Ev\","
	       "\"range_end\":\"L2Ew\",\"mod_revision\":\"12\"}],\"success\":[{\"request_put\":"
	       "{\"key\":\"L2s=\",\"value\":\"e30=\"}},{\"request_delete_range\":{\"key\":"
	       "\"L2Q=\"}}]}");
	free(b);
	b = dmsc_etcd_watch_body("/a/", "/a0", 9);
	cr_assert_str_eq(b, "{\"create_request\":{\"key\":\"L2Ev\",\"range_end\":\"L2Ew\","
			    "\"start_revision\":\"9\",\"progress_notify\":true}}");
	free(b);
}

/* Answers as etcd 3.4.23's gateway writes them. */
Test(etcd_parse, range_answer)
{
	const char *j =
	    "{\"header\":{\"cluster_id\":\"1\",\"revision\":\"2\",\"raft_term\":\"2\"},"
	    "\"kvs\":[{\"key\":\"L2Rtc2MvbnMvYS9zZXJ2aWNlcy94\",\"create_revision\":\"2\","
	    "\"mod_revision\":\"2\",\"version\":\"1\",\"value\":\"eyJhIjoxfQ==\"}],"
	    "\"count\":\"1\"}";
	struct dmsc_etcd_kvs kvs;
	char err[256];

	cr_assert_eq(dmsc_etcd_parse_range(j, strlen(j), &kvs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(kvs.revision, 2);
	cr_assert_eq(kvs.n, 1);
	cr_assert_str_eq(kvs.kv[0].key, "/dmsc/ns/a/services/x");
	cr_assert_str_eq(kvs.kv[0].value, "{\"a\":1}");
	cr_assert_eq(kvs.kv[0].mod_rev, 2);
	cr_assert(!kvs.more);
	dmsc_etcd_kvs_free(&kvs);

	/* a page of a limited range: keys remain */
	j = "{\"header\":{\"revision\":\"7\"},\"kvs\":[{\"key\":\"L2E=\","
	    "\"mod_revision\":\"3\",\"value\":\"e30=\"}],\"more\":true,\"count\":\"4\"}";
	cr_assert_eq(dmsc_etcd_parse_range(j, strlen(j), &kvs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(kvs.n, 1);
	cr_assert(kvs.more);
	dmsc_etcd_kvs_free(&kvs);

	j = "{\"header\":{\"revision\":\"5\"}}";
	cr_assert_eq(dmsc_etcd_parse_range(j, strlen(j), &kvs, err, sizeof(err)), 0);
	cr_assert_eq(kvs.n, 0);
	cr_assert_eq(kvs.revision, 5);

	j = "{\"error\":\"etcdserver: mvcc: required revision has been compacted\",\"code\":11}";
	cr_assert_eq(dmsc_etcd_parse_range(j, strlen(j), &kvs, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "compacted"), "%s", err);
}

Test(etcd_parse, txn_answer)
{
	const char *ok = "{\"header\":{\"revision\":\"3\"},\"succeeded\":true,\"responses\":[]}";
	const char *no = "{\"header\":{\"revision\":\"4\"}}";
	bool s;
	int64_t rev;
	char err[256];

	cr_assert_eq(dmsc_etcd_parse_txn(ok, strlen(ok), &s, &rev, err, sizeof(err)), 0);
	cr_assert(s);
	cr_assert_eq(rev, 3);
	cr_assert_eq(dmsc_etcd_parse_txn(no, strlen(no), &s, &rev, err, sizeof(err)), 0);
	cr_assert_not(s);
	cr_assert_eq(rev, 4);
}

Test(etcd_parse, watch_events_progress_and_compaction)
{
	const char *ev =
	    "{\"result\":{\"header\":{\"revision\":\"3\"},\"events\":[{\"kv\":{\"key\":"
	    "\"L2s=\",\"create_revision\":\"2\",\"mod_revision\":\"2\",\"value\":"
	    "\"e30=\"}},{\"type\":\"DELETE\",\"kv\":{\"key\":\"L2s=\",\"mod_revision\":"
	    "\"3\"}}]}}";
	const char *cmp = "{\"result\":{\"header\":{\"raft_term\":\"2\"},\"canceled\":true,"
			  "\"compact_revision\":\"5\"}}";
	const char *created = "{\"result\":{\"header\":{\"revision\":\"3\"},\"created\":true}}";
	struct dmsc_etcd_watch_msg m;
	char err[256];

	cr_assert_eq(dmsc_etcd_parse_watch(ev, strlen(ev), &m, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(m.n_events, 2);
	cr_assert_not(m.events[0].deleted);
	cr_assert_str_eq(m.events[0].kv.value, "{}");
	cr_assert(m.events[1].deleted);
	cr_assert_eq(m.events[1].kv.mod_rev, 3);
	cr_assert_eq(m.revision, 3);
	dmsc_etcd_watch_msg_free(&m);

	cr_assert_eq(dmsc_etcd_parse_watch(cmp, strlen(cmp), &m, err, sizeof(err)), 0, "%s", err);
	cr_assert(m.canceled);
	cr_assert_eq(m.compact_revision, 5);
	dmsc_etcd_watch_msg_free(&m);

	cr_assert_eq(dmsc_etcd_parse_watch(created, strlen(created), &m, err, sizeof(err)), 0);
	cr_assert(m.created);
	cr_assert_eq(m.n_events, 0);
}

static int count_obj(const char *obj, size_t len, void *arg)
{
	int *n = arg;

	cr_assert_eq(obj[0], '{');
	cr_assert_eq(obj[len - 1], '}');
	(*n)++;
	return 0;
}

Test(etcd_split, objects_split_anywhere_even_inside_strings)
{
	const char *s = "{\"a\":\"}{\\\"\"}\n{\"b\":{\"c\":[1,{}]}}\n{\"d\":";
	struct dmsc_etcd_splitter sp = {.max = 1024};
	size_t i;
	int n = 0;

	for (i = 0; s[i]; i++)
		cr_assert_eq(dmsc_etcd_split(&sp, s + i, 1, count_obj, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_eq(dmsc_etcd_split(&sp, "1}", 2, count_obj, &n), 0);
	cr_assert_eq(n, 3);
	dmsc_etcd_splitter_free(&sp);
}

Test(etcd_split, an_oversized_message_is_an_error)
{
	struct dmsc_etcd_splitter sp = {.max = 8};
	int n = 0;

	cr_assert_eq(dmsc_etcd_split(&sp, "{\"aaaaaaaaaaaa", 14, count_obj, &n), -E2BIG);
	dmsc_etcd_splitter_free(&sp);
}

/* ---- one service value ---------------------------------------------- */

#define SVC(name)                                                                                  \
	"{\"name\":\"" name "\",\"vip\":\"198.19.0.10\",\"port\":80,\"backends\":"                 \
	"[{\"address\":\"198.18.1.2\",\"port\":8080}]}"

Test(etcd_value, keys_and_names)
{
	char *p = dmsc_etcd_ns_prefix("/dmsc", "shop");

	cr_assert_str_eq(p, "/dmsc/ns/shop/services/");
	cr_assert_str_eq(dmsc_etcd_key_name("/dmsc/ns/shop/services/web", p), "web");
	cr_assert_null(dmsc_etcd_key_name("/dmsc/ns/shop/services/a/b", p));
	cr_assert_null(dmsc_etcd_key_name("/dmsc/ns/shopx/services/web", p));
	free(p);
	cr_assert(dmsc_etcd_ns_valid("team-a.prod_1"));
	cr_assert_not(dmsc_etcd_ns_valid("a/b"));
	cr_assert_not(dmsc_etcd_ns_valid(""));
	cr_assert_not(dmsc_etcd_ns_valid(".."));
}

Test(etcd_value, one_valid_service)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p;

	cr_assert_eq(dmsc_etcd_parse_service(SVC("web"), strlen(SVC("web")), "web", &p, &errs), 0);
	cr_assert_eq(p.n_services, 1);
	cr_assert_str_eq(p.services[0].name, "web");
	dmsc_policy_free(&p);
	dmsc_policy_errors_free(&errs);
}

static void expect_refused(const char *value, size_t len, const char *name, const char *want)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p;
	char line[4096];

	cr_assert_eq(dmsc_etcd_parse_service(value, len, name, &p, &errs), -EINVAL, "%s", value);
	cr_assert_eq(p.n_services, 0);
	dmsc_etcd_format_errors("/dmsc/ns/a/services/web", &errs, -EINVAL, line, sizeof(line));
	cr_assert(strstr(line, "etcd key /dmsc/ns/a/services/web: "), "%s", line);
	cr_assert(strstr(line, want), "%s lacks %s", line, want);
	dmsc_policy_errors_free(&errs);
}

Test(etcd_value, hostile_values_are_refused_with_the_problem)
{
	static char huge[DMSC_ETCD_VALUE_MAX + 2];
	const char *bad_port = "{\"name\":\"web\",\"vip\":\"198.19.0.10\",\"port\":70000,"
			       "\"backends\":[]}";

	expect_refused("{\"name\":", 8, "web", "not JSON");
	expect_refused("[1,2]", 5, "web", "not a JSON object");
	expect_refused(SVC("other"), strlen(SVC("other")), "web", "name: must be \"web\"");
	/* a value that would smuggle a second service into the document */
	expect_refused(SVC("web") "]},{\"x\":[", strlen(SVC("web") "]},{\"x\":["), "web",
		       "more than one JSON value");
	expect_refused(SVC("web") "," SVC("web"), strlen(SVC("web") "," SVC("web")), "web",
		       "more than one JSON value");
	expect_refused(bad_port, strlen(bad_port), "web", "port: ");
	memset(huge, ' ', sizeof(huge) - 1);
	expect_refused(huge, sizeof(huge) - 1, "web", "more than the 131072");
}

Test(etcd_store, revisions_apply_once_and_refused_values_keep_the_last_good_one)
{
	struct dmsc_etcd_store s = {0};
	struct dmsc_policy view;
	char *msgs[4];
	size_t n;

	cr_assert_eq(dmsc_etcd_store_put(&s, "/p/web", "web", SVC("web"), strlen(SVC("web")), 5),
		     1);
	cr_assert_eq(dmsc_etcd_store_put(&s, "/p/web", "web", SVC("web"), strlen(SVC("web")), 5),
		     0);
	cr_assert_eq(dmsc_etcd_store_put(&s, "/p/web", "web", "{", 1, 6), 0);
	cr_assert_eq(s.refused, 1);
	cr_assert(dmsc_etcd_store_find(&s, "/p/web")->valid);
	cr_assert_eq(dmsc_etcd_store_delete(&s, "/p/web", 4), 0);
	cr_assert_eq(dmsc_etcd_store_delete(&s, "/p/web", 7), 1);
	cr_assert_null(dmsc_etcd_store_find(&s, "/p/web"));

	/* same VIP under two keys: the first key wins */
	cr_assert_eq(dmsc_etcd_store_put(&s, "/b/web", "web", SVC("web"), strlen(SVC("web")), 8),
		     1);
	cr_assert_eq(dmsc_etcd_store_put(&s, "/a/api", "api", SVC("api"), strlen(SVC("api")), 9),
		     1);
	cr_assert_eq(dmsc_etcd_store_view(&s, &view, NULL, msgs, 4, &n), 0);
	cr_assert_eq(view.n_services, 1);
	cr_assert_str_eq(view.services[0].name, "api");
	cr_assert_eq(n, 1);
	cr_assert(strstr(msgs[0], "etcd key /b/web: its vip:port is used by /a/api"), "%s",
		  msgs[0]);
	free(msgs[0]);
	dmsc_etcd_store_view_free(&view, NULL);
	dmsc_etcd_store_free(&s);
}

/* A backend's host is resolved through PREFIX/hosts/NAME at the view
 * (docs/design.md decision 55): a value names it without a "hosts" table. */
Test(etcd_store, backend_hosts_resolve_through_the_hosts_keys)
{
	static const char v[] = "{\"name\":\"web\",\"vip\":\"198.19.0.1\",\"port\":80,"
				"\"mtls\":\"required\",\"backends\":[{\"address\":\"198.18.1.2\","
				"\"port\":8080,\"host\":\"node-b\"}]}";
	struct dmsc_etcd_store s = {0};
	struct dmsc_policy view;
	char *msgs[4];
	size_t n, i;

	cr_assert_eq(dmsc_etcd_store_put(&s, "/d/ns/a/services/web", "web", v, strlen(v), 3), 1);
	cr_assert_eq(dmsc_etcd_store_view(&s, &view, NULL, msgs, 4, &n), 0);
	cr_assert_str_eq(view.services[0].backends[0].host, "node-b");
	cr_assert_eq(view.services[0].backends[0].host_at.family, 0);
	cr_assert_eq(n, 1);
	cr_assert(strstr(msgs[0], "backends[0].host \"node-b\" has no hosts/node-b key"), "%s",
		  msgs[0]);
	free(msgs[0]);
	dmsc_etcd_store_view_free(&view, NULL);

	/* not IPv4:PORT: refused, nothing changes */
	cr_assert_eq(dmsc_etcd_store_host_put(&s, "/d/hosts/node-b", "node-b", "x", 1, 4), 0);
	cr_assert_eq(s.refused, 1);
	cr_assert_eq(
	    dmsc_etcd_store_host_put(&s, "/d/hosts/node-b", "node-b", "198.18.13.2:15008", 17, 5),
	    1);
	cr_assert_eq(
	    dmsc_etcd_store_host_put(&s, "/d/hosts/node-b", "node-b", "198.18.13.2:15008", 17, 5),
	    0);
	cr_assert_eq(dmsc_etcd_store_view(&s, &view, NULL, msgs, 4, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_eq(view.services[0].backends[0].host_at.v4, inet_addr("198.18.13.2"));
	cr_assert_eq(view.services[0].backends[0].host_at.port, 15008);
	dmsc_etcd_store_view_free(&view, NULL);

	/* deleted: unresolved again, and said */
	cr_assert_eq(dmsc_etcd_store_host_delete(&s, "/d/hosts/node-b", 6), 1);
	cr_assert_eq(dmsc_etcd_store_view(&s, &view, NULL, msgs, 4, &n), 0);
	cr_assert_eq(view.services[0].backends[0].host_at.family, 0);
	cr_assert_eq(n, 1);
	for (i = 0; i < n; i++)
		free(msgs[i]);
	dmsc_etcd_store_view_free(&view, NULL);
	dmsc_etcd_store_free(&s);
}

static uint64_t fake_fp(const struct dmsc_policy_service *svc)
{
	return 1000 + svc->n_backends + svc->port;
}

/* Once applied, a plain service is kept as its identity and fingerprint
 * (its keys packed together), an http one stays parsed; a refill parses
 * the slim ones again at the revision held. */
Test(etcd_store, slim_entries_keep_identity_and_fingerprint)
{
	struct dmsc_etcd_store s = {.fp_of = fake_fp};
	const struct dmsc_etcd_entry *en;
	struct dmsc_policy view;
	uint64_t *fps;
	char *msgs[4], key[64], name[32], val[256];
	size_t n, i, total = 1100;

	for (i = 0; i < total; i++) {
		snprintf(name, sizeof(name), "s%04zu", i);
		snprintf(key, sizeof(key), "/p/%s", name);
		snprintf(val, sizeof(val),
			 "{\"name\":\"%s\",\"vip\":\"198.19.%zu.%zu\",\"port\":80,%s\"backends\":"
			 "[{\"address\":\"198.18.1.2\",\"port\":8080}]}",
			 name, i >> 8, i & 255, i == 7 ? "\"protocol\":\"http\"," : "");
		cr_assert_eq(dmsc_etcd_store_put(&s, key, name, val, strlen(val), 10 + (int64_t)i),
			     1);
	}
	dmsc_etcd_store_slim(&s);
	cr_assert_eq(s.n_slim, total - 1);
	cr_assert_not_null(s.keys, "the keys are packed");
	en = dmsc_etcd_store_find(&s, "/p/s0007");
	cr_assert(en && en->svc, "the http service stays parsed");
	en = dmsc_etcd_store_find(&s, "/p/s0300");
	cr_assert(en && !en->svc && en->valid && en->fp == 1081);
	cr_assert_eq(dmsc_etcd_store_view(&s, &view, &fps, msgs, 4, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_eq(view.n_services, total);
	cr_assert_str_eq(view.services[300].name, "s0300");
	cr_assert_eq(view.services[300].vip, htonl(0xc6130000 | (1 << 8) | 44));
	cr_assert_eq(view.services[300].port, 80);
	cr_assert_eq(view.services[300].n_backends, 0);
	cr_assert_eq(view.services[7].n_backends, 1);
	cr_assert_eq(fps[300], 1081);
	dmsc_etcd_store_view_free(&view, fps);
	/* the same revision again: ignored, unless a refill asks for it */
	snprintf(val, sizeof(val), "%s", SVC("s0300"));
	cr_assert_eq(dmsc_etcd_store_put(&s, "/p/s0300", "s0300", val, strlen(val), 310), 0);
	cr_assert_null(dmsc_etcd_store_find(&s, "/p/s0300")->svc);
	s.refill = true;
	cr_assert_eq(dmsc_etcd_store_put(&s, "/p/s0300", "s0300", val, strlen(val), 310), 0);
	cr_assert_not_null(dmsc_etcd_store_find(&s, "/p/s0300")->svc);
	cr_assert_eq(s.n_slim, total - 2);
	/* a new revision of a slim one, a delete: kept right */
	cr_assert_eq(
	    dmsc_etcd_store_put(&s, "/p/s0301", "s0301", SVC("s0301"), strlen(SVC("s0301")), 2000),
	    1);
	cr_assert_eq(dmsc_etcd_store_delete(&s, "/p/s0302", 2001), 1);
	cr_assert_eq(s.n_slim, total - 4);
	dmsc_etcd_store_free(&s);
}

/* plain service NAME at VIP 198.19.0.I, port 80, one backend of weight W */
static void put_plain(struct dmsc_etcd_store *s, const char *name, int i, int w, int64_t rev,
		      int want)
{
	char key[64], val[256];

	snprintf(key, sizeof(key), "/p/%s", name);
	snprintf(val, sizeof(val),
		 "{\"name\":\"%s\",\"vip\":\"198.19.0.%d\",\"port\":80,\"backends\":"
		 "[{\"address\":\"198.18.1.2\",\"port\":8080,\"weight\":%d}]}",
		 name, i, w);
	cr_assert_eq(dmsc_etcd_store_put(s, key, name, val, strlen(val), rev), want, "%s", key);
}

static uint64_t weight_fp(const struct dmsc_policy_service *svc)
{
	return 1000 + svc->backends[0].weight;
}

/* After an apply (a whole view, then slimmed), the view of the changed
 * keys holds the services whose value changed since, in key order, with
 * their fingerprints; a key that came, went or moved asks for the whole
 * view (-EAGAIN); a change of a service the whole view keeps parsed (http)
 * brings every service kept parsed, and says so. */
Test(etcd_store, view_of_the_changed_keys)
{
	static const char http[] = "{\"name\":\"h\",\"vip\":\"198.19.0.20\",\"port\":80,"
				   "\"protocol\":\"http\",\"backends\":[{\"address\":"
				   "\"198.18.1.2\",\"port\":8080}]}";
	static const char http2[] = "{\"name\":\"h\",\"vip\":\"198.19.0.20\",\"port\":80,"
				    "\"protocol\":\"http\",\"backends\":[{\"address\":"
				    "\"198.18.1.3\",\"port\":8080}]}";
	struct dmsc_etcd_store s = {.fp_of = weight_fp};
	struct dmsc_policy view;
	uint64_t *fps;
	char *msgs[4];
	bool parsed;
	size_t n;

	put_plain(&s, "a", 1, 1, 10, 1);
	put_plain(&s, "b", 2, 1, 11, 1);
	put_plain(&s, "c", 3, 1, 12, 1);
	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), -EAGAIN, "keys came");
	cr_assert_eq(dmsc_etcd_store_view(&s, &view, &fps, msgs, 4, &n), 0);
	cr_assert_eq(view.n_services, 3);
	dmsc_etcd_store_view_free(&view, fps);
	dmsc_etcd_store_slim(&s); /* applied */

	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), 0);
	cr_assert_eq(view.n_services, 0, "nothing changed since");
	dmsc_etcd_store_view_free(&view, fps);

	put_plain(&s, "c", 3, 7, 13, 1);
	put_plain(&s, "a", 1, 5, 14, 1);
	put_plain(&s, "b", 2, 1, 11, 0); /* a revision held: not a change */
	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), 0);
	cr_assert_eq(view.n_services, 2);
	cr_assert_str_eq(view.services[0].name, "a");
	cr_assert_eq(view.services[0].backends[0].weight, 5);
	cr_assert_eq(fps[0], 1005);
	cr_assert_str_eq(view.services[1].name, "c");
	cr_assert_eq(fps[1], 1007);
	dmsc_etcd_store_view_free(&view, fps);
	dmsc_etcd_store_slim(&s);

	put_plain(&s, "b", 9, 1, 15, 1); /* moved to another VIP */
	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), -EAGAIN, "a key moved");
	cr_assert_eq(dmsc_etcd_store_view(&s, &view, &fps, msgs, 4, &n), 0);
	dmsc_etcd_store_view_free(&view, fps);
	dmsc_etcd_store_slim(&s);
	cr_assert_eq(dmsc_etcd_store_delete(&s, "/p/c", 16), 1);
	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), -EAGAIN, "a key went");
	cr_assert_eq(dmsc_etcd_store_view(&s, &view, &fps, msgs, 4, &n), 0);
	dmsc_etcd_store_view_free(&view, fps);
	dmsc_etcd_store_slim(&s);
	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), 0);
	dmsc_etcd_store_view_free(&view, fps);

	/* an http service stays parsed for the whole view */
	cr_assert_eq(dmsc_etcd_store_put(&s, "/p/h", "h", http, strlen(http), 17), 1);
	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), -EAGAIN, "a key came");
	cr_assert_eq(dmsc_etcd_store_view(&s, &view, &fps, msgs, 4, &n), 0);
	dmsc_etcd_store_view_free(&view, fps);
	dmsc_etcd_store_slim(&s);
	cr_assert_not_null(dmsc_etcd_store_find(&s, "/p/h")->svc);
	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), 0);
	cr_assert_eq(view.n_services, 0, "nothing changed since, http kept parsed or not");
	cr_assert(!parsed);
	dmsc_etcd_store_view_free(&view, fps);
	/* a plain service changed beside it: that one only */
	put_plain(&s, "a", 1, 6, 18, 1);
	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), 0);
	cr_assert_eq(view.n_services, 1);
	cr_assert_str_eq(view.services[0].name, "a");
	cr_assert(!parsed, "dmsc-l7's view is as it was");
	dmsc_etcd_store_view_free(&view, fps);
	dmsc_etcd_store_slim(&s);
	/* the http service changed: every service kept parsed */
	cr_assert_eq(dmsc_etcd_store_put(&s, "/p/h", "h", http2, strlen(http2), 19), 1);
	put_plain(&s, "b", 9, 3, 20, 1);
	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), 0);
	cr_assert(parsed);
	cr_assert_eq(view.n_services, 2, "b (changed) and h (changed, kept parsed)");
	cr_assert_str_eq(view.services[0].name, "b");
	cr_assert_str_eq(view.services[1].name, "h");
	dmsc_etcd_store_view_free(&view, fps);
	dmsc_etcd_store_slim(&s);
	/* the tunnel keeps every service parsed: its view is the whole one */
	s.keep_all = true;
	put_plain(&s, "a", 1, 7, 21, 1);
	cr_assert_eq(dmsc_etcd_store_view_changed(&s, &view, &fps, &parsed), -EAGAIN);
	dmsc_etcd_store_free(&s);
}

static bool in_list(const char *key, void *arg)
{
	const char *const *l;

	for (l = arg; *l; l++)
		if (!strcmp(*l, key))
			return true;
	return false;
}

/* A read a page at a time (docs/design.md decision 61): the view of the
 * dirty keys holds what changed since the last apply; a page's range
 * drops the keys it covers and does not hold, and no other; a key that
 * takes an earlier key's name or vip:port stays out of every view; the
 * view of the parsed keys holds the dirty ones and those kept parsed. */
Test(etcd_store, pages_of_a_read)
{
	static const char *page1[] = {"/p/a", "/p/c", NULL}, *page2[] = {"/p/e", NULL};
	struct dmsc_etcd_store s = {.fp_of = weight_fp};
	struct dmsc_policy view;
	uint64_t *fps;
	char *msgs[4];
	size_t n;

	put_plain(&s, "a", 1, 1, 10, 1);
	put_plain(&s, "b", 2, 1, 11, 1);
	put_plain(&s, "c", 3, 1, 12, 1);
	put_plain(&s, "d", 4, 1, 13, 1);
	cr_assert_eq(s.n_dirty, 4);
	cr_assert_eq(dmsc_etcd_store_view_some(&s, false, &view, &fps, msgs, 4, &n), 0);
	cr_assert_eq(view.n_services, 4);
	cr_assert_eq(n, 0);
	dmsc_etcd_store_view_free(&view, fps);
	dmsc_etcd_store_slim(&s); /* applied */
	cr_assert_eq(s.n_dirty, 0);
	cr_assert_eq(s.n_slim, 4);
	cr_assert_eq(dmsc_etcd_store_view_some(&s, false, &view, &fps, msgs, 4, &n), 0);
	cr_assert_eq(view.n_services, 0, "nothing changed since");
	dmsc_etcd_store_view_free(&view, fps);

	/* read again: page 1 holds a (as it was) and c (changed): b went */
	put_plain(&s, "a", 1, 1, 10, 0);
	put_plain(&s, "c", 3, 5, 20, 1);
	cr_assert_eq(dmsc_etcd_store_retain_range(&s, "/p/", NULL, "/p/c", in_list, page1), 1);
	cr_assert_null(dmsc_etcd_store_find(&s, "/p/b"));
	cr_assert_not_null(dmsc_etcd_store_find(&s, "/p/d"), "past the page: not its to drop");
	/* e comes with a's VIP: left out, named */
	put_plain(&s, "e", 1, 1, 21, 1);
	cr_assert_eq(dmsc_etcd_store_view_some(&s, false, &view, &fps, msgs, 4, &n), 0);
	cr_assert_eq(view.n_services, 1);
	cr_assert_str_eq(view.services[0].name, "c");
	cr_assert_eq(fps[0], 1005);
	cr_assert_eq(n, 1);
	cr_assert(strstr(msgs[0], "etcd key /p/e: its vip:port is used by /p/a"), "%s", msgs[0]);
	free(msgs[0]);
	dmsc_etcd_store_view_free(&view, fps);
	/* the last page (to the prefix's end): d went */
	cr_assert_eq(dmsc_etcd_store_retain_range(&s, "/p/", "/p/c", NULL, in_list, page2), 1);
	cr_assert_null(dmsc_etcd_store_find(&s, "/p/d"));
	cr_assert_eq(s.n, 3);
	cr_assert_eq(dmsc_etcd_store_view_some(&s, true, &view, &fps, msgs, 4, &n), 0);
	cr_assert_eq(view.n_services, 1, "the parsed keys: c (e is left out, a slim)");
	cr_assert_str_eq(view.services[0].name, "c");
	while (n)
		free(msgs[--n]);
	dmsc_etcd_store_view_free(&view, fps);
	dmsc_etcd_store_slim(&s);
	cr_assert_eq(s.n_dirty, 0);
	dmsc_etcd_store_free(&s);
}

/* A TLS failure names its cause and the option to look at; with an alert
 * in libcurl's detail no second connection is made. CURLcodes: 60 peer
 * verification, 77 CA file, 58 client certificate, 56 receive error. */
Test(etcd_tls, refusals_name_the_cause_and_the_option)
{
	struct dmsc_etcd c;
	struct dmsc_etcd_tls tls = {.cacert = "/x/ca.crt"};
	char out[512];

	cr_assert_eq(dmsc_etcd_init(&c, "https://127.0.0.1:1", &tls), 0);
	dmsc_etcd_describe(&c, 60,
			   "SSL certificate problem: unable to get local issuer certificate", out,
			   sizeof(out));
	cr_expect(strstr(out, "etcd's certificate is not trusted") && strstr(out, "/x/ca.crt"),
		  "%s", out);
	dmsc_etcd_describe(&c, 77, "error setting certificate file", out, sizeof(out));
	cr_expect(strstr(out, "--etcd-cacert /x/ca.crt cannot be used"), "%s", out);
	dmsc_etcd_describe(&c, 56,
			   "OpenSSL SSL_read: error:0A000412:SSL routines::sslv3 alert bad "
			   "certificate, errno 0",
			   out, sizeof(out));
	cr_expect(strstr(out, "etcd refused the connection's client certificate") &&
		      strstr(out, "give --etcd-cert FILE and --etcd-key FILE"),
		  "%s", out);
	c.tls.cert = "/x/host.crt";
	c.tls.key = "/x/host.key";
	dmsc_etcd_describe(&c, 58, "could not load PEM client certificate", out, sizeof(out));
	cr_expect(strstr(out, "--etcd-cert /x/host.crt (key /x/host.key) cannot be used"), "%s",
		  out);
	dmsc_etcd_describe(&c, 56, "alert certificate required", out, sizeof(out));
	cr_expect(strstr(out, "is --etcd-cert signed by a CA etcd trusts"), "%s", out);
	dmsc_etcd_describe(&c, 7, "Failed to connect to 127.0.0.1 port 1", out, sizeof(out));
	cr_expect_str_eq(out, "Failed to connect to 127.0.0.1 port 1");
	dmsc_etcd_free(&c);
}

/* What an apply makes for each change from a large store leaves nothing
 * resident behind it: a large block is a mapping of its own, gone once
 * freed (mincore fails on an unmapped page), wherever the heap has room;
 * a small one comes from malloc. Both zeroed. */
Test(mapmem, large_blocks_are_unmapped_when_freed)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t n = 3 * (DMSC_MAPMEM_MIN / sizeof(uint64_t)), i;
	uint64_t *big, *small;
	unsigned char vec;
	void *heap, *pg;

	/* room in the heap: glibc would serve the large block from it */
	heap = malloc(8 * DMSC_MAPMEM_MIN);
	cr_assert_not_null(heap);
	free(heap);
	big = dmsc_mapmem_calloc(n, sizeof(*big));
	small = dmsc_mapmem_calloc(16, sizeof(*small));
	cr_assert(big && small);
	for (i = 0; i < n; i += 4096)
		cr_assert_eq(big[i], 0);
	cr_assert_eq(small[15], 0);
	big[n - 1] = 1;
	pg = (void *)((uintptr_t)&big[n / 2] & ~(uintptr_t)(page - 1));
	cr_assert_eq(mincore(pg, (size_t)page, &vec), 0);
	dmsc_mapmem_free(big);
	cr_assert_eq(mincore(pg, (size_t)page, &vec), -1, "the block is still mapped");
	cr_assert_eq(errno, ENOMEM);
	dmsc_mapmem_free(small);
	dmsc_mapmem_free(NULL);
	cr_assert_null(dmsc_mapmem_calloc(SIZE_MAX / 2, 4));
}
