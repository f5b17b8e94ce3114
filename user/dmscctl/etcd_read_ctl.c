// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl get / watch: policy in etcd read back, a namespace's services and
 * the hosts' tunnel addresses (docs/design.md decisions 55, 63), once or as
 * a stream of events. The options and publish: etcd_ctl.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "etcd.h"
#include "etcd_ctl_int.h"
#include "etcd_store.h"
#include "log.h"

int dmsc_etcd_ctl_get(struct ctl *c, const char *only)
{
	struct dmsc_etcd_kvs kvs = {0}, hkvs = {0};
	struct dmsc_etcd etcd;
	struct json_object *svcs = json_object_new_array(), *bad = json_object_new_array();
	struct json_object *hosts = json_object_new_object();
	char *nsp = dmsc_etcd_ns_prefix(c->prefix, c->ns), *hp = dmsc_etcd_hosts_prefix(c->prefix);
	size_t i;
	int rc = 1;

	if (dmsc_etcd_init(&etcd, c->etcd, &c->tls)) {
		fprintf(stderr, "%s\n", etcd.err);
		goto out;
	}
	if (c->timeout_s)
		etcd.timeout_ms = (c->timeout_s > 86400 ? 86400 : c->timeout_s) * 1000;
	if (dmsc_etcd_range_prefix(&etcd, nsp, 0, &kvs)) {
		fprintf(stderr, "cannot read %s from etcd: %s\n", nsp, etcd.err);
		goto out_etcd;
	}
	for (i = 0; i < kvs.n; i++) {
		const char *name = dmsc_etcd_key_name(kvs.kv[i].key, nsp);
		struct dmsc_policy_errors errs = {0};
		struct dmsc_policy p;
		char line[2048];
		int e;

		if (!name || (only && strcmp(name, only)))
			continue;
		e = dmsc_etcd_parse_service(kvs.kv[i].value, kvs.kv[i].value_len, name, &p, &errs);
		if (e) {
			struct json_object *b = json_object_new_object();

			dmsc_etcd_format_errors(kvs.kv[i].key, &errs, e, line, sizeof(line));
			json_object_object_add(b, "key", json_object_new_string(kvs.kv[i].key));
			json_object_object_add(b, "error", json_object_new_string(line));
			json_object_array_add(bad, b);
			if (!c->json)
				fprintf(stderr, "%s\n", line);
		} else {
			dmsc_policy_free(&p);
			json_object_array_add(svcs, json_tokener_parse(kvs.kv[i].value));
			if (!c->json)
				printf("%s (revision %" PRId64 ")\n  %s\n", kvs.kv[i].key,
				       kvs.kv[i].mod_rev, kvs.kv[i].value);
		}
		dmsc_policy_errors_free(&errs);
	}
	/* the hosts' tunnel addresses, which backends' "host" names (mesh-wide:
	 * every namespace's), at the same revision */
	if (!only && dmsc_etcd_range_prefix(&etcd, hp, kvs.revision, &hkvs)) {
		fprintf(stderr, "cannot read %s from etcd: %s\n", hp, etcd.err);
		goto out_etcd;
	}
	for (i = 0; i < hkvs.n; i++) {
		const char *name = dmsc_etcd_key_name(hkvs.kv[i].key, hp);

		if (!name)
			continue;
		json_object_object_add(
		    hosts, name,
		    json_object_new_string_len(hkvs.kv[i].value, (int)hkvs.kv[i].value_len));
		if (!c->json)
			printf("%s (revision %" PRId64 ")\n  %.*s\n", hkvs.kv[i].key,
			       hkvs.kv[i].mod_rev, (int)hkvs.kv[i].value_len, hkvs.kv[i].value);
	}
	if (c->json) {
		struct json_object *top = json_object_new_object();

		json_object_object_add(top, "namespace", json_object_new_string(c->ns));
		json_object_object_add(top, "revision", json_object_new_int64(kvs.revision));
		json_object_object_add(top, "services", json_object_get(svcs));
		json_object_object_add(top, "hosts", json_object_get(hosts));
		json_object_object_add(top, "invalid", json_object_get(bad));
		dmsc_etcd_ctl_print_json(top);
		json_object_put(top);
	}
	rc = only && !json_object_array_length(svcs) && !json_object_array_length(bad) ? 1 : 0;
	if (rc)
		fprintf(stderr, "no service \"%s\" in namespace %s\n", only, c->ns);
out_etcd:
	dmsc_etcd_free(&etcd);
out:
	free(nsp);
	free(hp);
	json_object_put(svcs);
	json_object_put(bad);
	json_object_put(hosts);
	dmsc_etcd_kvs_free(&kvs);
	dmsc_etcd_kvs_free(&hkvs);
	return rc;
}

struct watch_ctx {
	struct ctl *c;
	long events;
	bool done;
	int rc;
};

/* One watch stream: the namespace's services, or the hosts' tunnel
 * addresses (docs/design.md decision 55) */
struct watch_stream {
	struct watch_ctx *w;
	const char *kind; /* "service", "host" */
	struct dmsc_etcd_splitter sp;
	char *body, url[512], cerr[DMSC_ETCD_CURL_ERR_SIZE];
	CURL *curl;
};

static int watch_msg(const char *obj, size_t len, void *arg)
{
	struct watch_stream *ws = arg;
	struct watch_ctx *w = ws->w;
	struct dmsc_etcd_watch_msg m;
	char err[256];
	size_t i;

	if (w->done)
		return -ECANCELED;
	if (dmsc_etcd_parse_watch(obj, len, &m, err, sizeof(err))) {
		fprintf(stderr, "watch: %s\n", err);
		w->rc = 1;
		return -EINVAL;
	}
	if (m.canceled) {
		fprintf(stderr, "watch canceled by etcd%s%s%s\n", m.error[0] ? ": " : "", m.error,
			m.compact_revision ? " (the revision asked for was compacted)" : "");
		dmsc_etcd_watch_msg_free(&m);
		w->rc = 1;
		return -ECANCELED;
	}
	for (i = 0; i < m.n_events; i++) {
		const struct dmsc_etcd_event *ev = &m.events[i];

		if (w->c->json) {
			struct json_object *o = json_object_new_object();

			json_object_object_add(o, "revision",
					       json_object_new_int64(ev->kv.mod_rev));
			json_object_object_add(
			    o, "type", json_object_new_string(ev->deleted ? "delete" : "put"));
			json_object_object_add(o, "kind", json_object_new_string(ws->kind));
			json_object_object_add(o, "key", json_object_new_string(ev->kv.key));
			if (!ev->deleted)
				json_object_object_add(o, "value",
						       json_object_new_string(ev->kv.value));
			printf("%s\n",
			       json_object_to_json_string_ext(
				   o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
			json_object_put(o);
		} else {
			printf("%" PRId64 " %s %s%s%s\n", ev->kv.mod_rev,
			       ev->deleted ? "delete" : "put", ev->kv.key, ev->deleted ? "" : " ",
			       ev->deleted ? "" : ev->kv.value);
		}
		fflush(stdout);
		if (w->c->count && ++w->events >= w->c->count) {
			w->done = true;
			break;
		}
	}
	dmsc_etcd_watch_msg_free(&m);
	return w->done ? -ECANCELED : 0;
}

static size_t watch_data(char *data, size_t size, size_t nmemb, void *arg)
{
	struct watch_stream *ws = arg;

	return dmsc_etcd_split(&ws->sp, data, size * nmemb, watch_msg, ws) ? 0 : size * nmemb;
}

/* Watches the namespace's services and the hosts' keys, one stream each
 * on one endpoint (each stream's events in revision order; the two
 * streams' interleaved as they arrive). */
int dmsc_etcd_ctl_watch(struct ctl *c)
{
	struct watch_ctx w = {.c = c};
	struct watch_stream ws[2] = {{.w = &w, .kind = "service", .sp = {.max = 4u << 20}},
				     {.w = &w, .kind = "host", .sp = {.max = 4u << 20}}};
	char *pfx[2] = {dmsc_etcd_ns_prefix(c->prefix, c->ns), dmsc_etcd_hosts_prefix(c->prefix)};
	struct dmsc_etcd etcd;
	CURLM *multi = NULL;
	CURLcode cc[2] = {CURLE_OK, CURLE_OK};
	size_t i, k;

	if (dmsc_etcd_init(&etcd, c->etcd, &c->tls)) {
		fprintf(stderr, "%s\n", etcd.err);
		free(pfx[0]);
		free(pfx[1]);
		return 1;
	}
	multi = curl_multi_init();
	for (k = 0; k < 2; k++) {
		char *end = pfx[k] ? dmsc_etcd_prefix_end(pfx[k]) : NULL;

		ws[k].body = end ? dmsc_etcd_watch_body(pfx[k], end, c->revision) : NULL;
		ws[k].curl = curl_easy_init();
		free(end);
		if (!ws[k].body || !ws[k].curl || !multi) {
			w.rc = 1;
			goto out;
		}
	}
	/* the first endpoint that connects serves the whole watch */
	for (i = 0; i < etcd.n_endpoints; i++) {
		int running = 1, res;
		struct watch_stream *s;

		for (k = 0; k < 2; k++) {
			curl_easy_reset(ws[k].curl);
			dmsc_etcd_setup_curl(&etcd, ws[k].curl, "/watch", ws[k].url,
					     sizeof(ws[k].url), ws[k].cerr);
			curl_easy_setopt(ws[k].curl, CURLOPT_POSTFIELDS, ws[k].body);
			curl_easy_setopt(ws[k].curl, CURLOPT_WRITEFUNCTION, watch_data);
			curl_easy_setopt(ws[k].curl, CURLOPT_WRITEDATA, &ws[k]);
			curl_easy_setopt(ws[k].curl, CURLOPT_PRIVATE, &ws[k]);
			if (c->timeout_s)
				curl_easy_setopt(ws[k].curl, CURLOPT_TIMEOUT, c->timeout_s);
			curl_multi_add_handle(multi, ws[k].curl);
		}
		/* until both streams end, or one fails or has had its count */
		while (running && !w.done && !w.rc) {
			curl_multi_perform(multi, &running);
			while ((s = dmsc_etcd_next_done(multi, &res))) {
				cc[s - ws] = res;
				if (res != CURLE_OK && res != CURLE_COULDNT_CONNECT)
					running = 0;
			}
			if (running && !w.done && !w.rc)
				curl_multi_poll(multi, NULL, 0, 1000, NULL);
		}
		for (k = 0; k < 2; k++)
			curl_multi_remove_handle(multi, ws[k].curl);
		if (cc[0] != CURLE_COULDNT_CONNECT || cc[1] != CURLE_COULDNT_CONNECT)
			break;
		cc[0] = cc[1] = CURLE_OK;
		etcd.cur = (etcd.cur + 1) % etcd.n_endpoints;
	}
	for (k = 0; k < 2 && !w.done && !w.rc; k++) {
		char why[512];

		if (cc[k] == CURLE_OK || (cc[k] == CURLE_OPERATION_TIMEDOUT && c->timeout_s))
			continue;
		dmsc_etcd_describe(&etcd, cc[k], ws[k].cerr, why, sizeof(why));
		fprintf(stderr, "watch %s: %s\n", ws[k].url, why);
		w.rc = 1;
	}
out:
	for (k = 0; k < 2; k++) {
		if (ws[k].curl)
			curl_easy_cleanup(ws[k].curl);
		dmsc_etcd_splitter_free(&ws[k].sp);
		free(ws[k].body);
		free(pfx[k]);
	}
	if (multi)
		curl_multi_cleanup(multi);
	dmsc_etcd_free(&etcd);
	return w.rc;
}
