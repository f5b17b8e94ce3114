// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * etcd v3 over its JSON gateway: body builders, parsers, and the unary
 * requests (range, txn) with endpoint failover. See etcd.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "etcd.h"

#define DEFAULT_TIMEOUT_MS 5000

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *dmsc_b64_encode(const void *data, size_t len)
{
	const unsigned char *in = data;
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		*o++ = b64_alphabet[v >> 18 & 63];
		*o++ = b64_alphabet[v >> 12 & 63];
		*o++ = b64_alphabet[v >> 6 & 63];
		*o++ = b64_alphabet[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);

		*o++ = b64_alphabet[v >> 18 & 63];
		*o++ = b64_alphabet[v >> 12 & 63];
		*o++ = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
		*o++ = '=';
	}
	*o = '\0';
	return out;
}

static int b64_value(char c)
{
	const char *p = c ? strchr(b64_alphabet, c) : NULL;

	return p ? (int)(p - b64_alphabet) : -1;
}

int dmsc_b64_decode(const char *text, char **out, size_t *out_len)
{
	size_t len = strlen(text), i, n = 0;
	unsigned char *buf;

	*out = NULL;
	*out_len = 0;
	if (len % 4)
		return -EINVAL;
	buf = malloc(len / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < len; i += 4) {
		int a = b64_value(text[i]), b = b64_value(text[i + 1]);
		int c = text[i + 2] == '=' ? 0 : b64_value(text[i + 2]);
		int d = text[i + 3] == '=' ? 0 : b64_value(text[i + 3]);
		bool last = i + 4 == len;

		if (a < 0 || b < 0 || c < 0 || d < 0 ||
		    (!last && (text[i + 2] == '=' || text[i + 3] == '=')) ||
		    (text[i + 2] == '=' && text[i + 3] != '=')) {
			free(buf);
			return -EINVAL;
		}
		buf[n++] = (unsigned char)(a << 2 | b >> 4);
		if (text[i + 2] != '=')
			buf[n++] = (unsigned char)((b & 15) << 4 | c >> 2);
		if (text[i + 3] != '=')
			buf[n++] = (unsigned char)((c & 3) << 6 | d);
	}
	buf[n] = '\0';
	*out = (char *)buf;
	*out_len = n;
	return 0;
}

char *dmsc_etcd_prefix_end(const char *prefix)
{
	size_t len = strlen(prefix);
	char *end = strdup(prefix);

	if (!end)
		return NULL;
	while (len && (unsigned char)end[len - 1] == 0xff)
		end[--len] = '\0';
	if (!len) {
		/* every key: etcd's "\0" range end */
		free(end);
		return strdup("");
	}
	end[len - 1] = (char)((unsigned char)end[len - 1] + 1);
	return end;
}

static void add_b64(struct json_object *o, const char *field, const char *s)
{
	char *b = dmsc_b64_encode(s, strlen(s));

	json_object_object_add(o, field, json_object_new_string(b ? b : ""));
	free(b);
}

static void add_int64(struct json_object *o, const char *field, int64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%" PRId64, v);
	json_object_object_add(o, field, json_object_new_string(buf));
}

static char *finish(struct json_object *o)
{
	char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							       JSON_C_TO_STRING_NOSLASHESCAPE));

	json_object_put(o);
	return s;
}

/* A range_end of "" means "every key >= key" to etcd only when it is "\0";
 * dmsc_etcd_prefix_end never returns "" for a non-empty prefix. */
static void add_range_end(struct json_object *o, const char *range_end)
{
	if (!range_end)
		return;
	if (!range_end[0])
		json_object_object_add(o, "range_end", json_object_new_string("AA=="));
	else
		add_b64(o, "range_end", range_end);
}

char *dmsc_etcd_range_body(const char *key, const char *range_end, int64_t revision)
{
	struct json_object *o = json_object_new_object();

	add_b64(o, "key", key);
	add_range_end(o, range_end);
	if (revision > 0)
		add_int64(o, "revision", revision);
	return finish(o);
}

char *dmsc_etcd_txn_body(const struct dmsc_etcd_cmp *cmps, size_t n_cmps,
			 const struct dmsc_etcd_op *ops, size_t n_ops)
{
	struct json_object *o = json_object_new_object();
	struct json_object *ca = json_object_new_array(), *sa = json_object_new_array();
	size_t i;

	for (i = 0; i < n_cmps; i++) {
		struct json_object *c = json_object_new_object();

		json_object_object_add(c, "target", json_object_new_string("MOD"));
		json_object_object_add(c, "result", json_object_new_string(
							cmps[i].result == DMSC_ETCD_LESS ? "LESS"
											 : "EQUAL"));
		add_b64(c, "key", cmps[i].key);
		add_range_end(c, cmps[i].range_end);
		add_int64(c, "mod_revision", cmps[i].mod_rev);
		json_object_array_add(ca, c);
	}
	for (i = 0; i < n_ops; i++) {
		struct json_object *r = json_object_new_object(), *w = json_object_new_object();

		add_b64(r, "key", ops[i].key);
		if (ops[i].type == DMSC_ETCD_PUT) {
			add_b64(r, "value", ops[i].value ? ops[i].value : "");
			json_object_object_add(w, "request_put", r);
		} else {
			json_object_object_add(w, "request_delete_range", r);
		}
		json_object_array_add(sa, w);
	}
	json_object_object_add(o, "compare", ca);
	json_object_object_add(o, "success", sa);
	return finish(o);
}

char *dmsc_etcd_watch_body(const char *key, const char *range_end, int64_t start_revision)
{
	struct json_object *o = json_object_new_object(), *c = json_object_new_object();

	add_b64(c, "key", key);
	add_range_end(c, range_end);
	if (start_revision > 0)
		add_int64(c, "start_revision", start_revision);
	/* etcd sends a progress message now and then on an idle watch: the
	 * revision moves on even when this prefix does not change. */
	json_object_object_add(c, "progress_notify", json_object_new_boolean(true));
	json_object_object_add(o, "create_request", c);
	return finish(o);
}

static void seterr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

/* The gateway writes int64 as a string; an absent field is 0. */
static int get_int64(struct json_object *o, const char *field, int64_t *out)
{
	struct json_object *v;
	const char *s;
	char *end;

	*out = 0;
	if (!json_object_object_get_ex(o, field, &v))
		return 0;
	if (json_object_is_type(v, json_type_int)) {
		*out = json_object_get_int64(v);
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return -EINVAL;
	s = json_object_get_string(v);
	errno = 0;
	*out = strtoll(s, &end, 10);
	return errno || *end || end == s ? -EINVAL : 0;
}

static struct json_object *parse_object(const char *json, size_t len, char *err, size_t err_len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o;

	if (!tok)
		return NULL;
	o = json_tokener_parse_ex(tok, json, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(o, json_type_object)) {
		seterr(err, err_len, "etcd answered with something that is not a JSON object");
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

/* {"error": "...", "message": "...", "code": N}: the gateway's gRPC error. */
static bool gateway_error(struct json_object *o, char *err, size_t err_len)
{
	struct json_object *m;

	if (!json_object_object_get_ex(o, "error", &m) &&
	    !json_object_object_get_ex(o, "message", &m))
		return false;
	if (json_object_is_type(m, json_type_object)) {
		struct json_object *mm;

		if (json_object_object_get_ex(m, "message", &mm))
			m = mm;
	}
	seterr(err, err_len, "etcd: %s", json_object_get_string(m));
	return true;
}

static int parse_kv(struct json_object *o, struct dmsc_etcd_kv *kv, char *err, size_t err_len)
{
	struct json_object *k, *v;
	size_t klen;
	int e;

	memset(kv, 0, sizeof(*kv));
	if (!json_object_object_get_ex(o, "key", &k) || !json_object_is_type(k, json_type_string)) {
		seterr(err, err_len, "a key-value without a key");
		return -EINVAL;
	}
	e = dmsc_b64_decode(json_object_get_string(k), &kv->key, &klen);
	if (!e && strlen(kv->key) != klen)
		e = -EINVAL; /* a NUL inside a key: not one of ours */
	if (!e && json_object_object_get_ex(o, "value", &v)) {
		if (!json_object_is_type(v, json_type_string))
			e = -EINVAL;
		else
			e = dmsc_b64_decode(json_object_get_string(v), &kv->value, &kv->value_len);
	} else if (!e) {
		kv->value = strdup("");
		e = kv->value ? 0 : -ENOMEM;
	}
	if (!e)
		e = get_int64(o, "create_revision", &kv->create_rev);
	if (!e)
		e = get_int64(o, "mod_revision", &kv->mod_rev);
	if (e) {
		seterr(err, err_len, "a key-value that is not base64 or has a bad revision");
		dmsc_etcd_kv_free(kv);
	}
	return e;
}

static int header_revision(struct json_object *o, int64_t *rev, char *err, size_t err_len)
{
	struct json_object *h;

	if (!json_object_object_get_ex(o, "header", &h) ||
	    get_int64(h, "revision", rev)) {
		seterr(err, err_len, "etcd's answer has no header.revision");
		return -EINVAL;
	}
	return 0;
}

int dmsc_etcd_parse_range(const char *json, size_t len, struct dmsc_etcd_kvs *out, char *err,
			  size_t err_len)
{
	struct json_object *o = parse_object(json, len, err, err_len), *kvs;
	size_t i, n;
	int e = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!o)
		return -EINVAL;
	if (gateway_error(o, err, err_len))
		goto out;
	if (header_revision(o, &out->revision, err, err_len))
		goto out;
	if (!json_object_object_get_ex(o, "kvs", &kvs)) {
		e = 0;
		goto out;
	}
	if (!json_object_is_type(kvs, json_type_array)) {
		seterr(err, err_len, "etcd's kvs is not an array");
		goto out;
	}
	n = json_object_array_length(kvs);
	out->kv = calloc(n ? n : 1, sizeof(*out->kv));
	if (!out->kv) {
		e = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		e = parse_kv(json_object_array_get_idx(kvs, i), &out->kv[i], err, err_len);
		if (e)
			goto out;
		out->n++;
	}
	e = 0;
out:
	if (e)
		dmsc_etcd_kvs_free(out);
	json_object_put(o);
	return e;
}

int dmsc_etcd_parse_txn(const char *json, size_t len, bool *succeeded, int64_t *revision,
			char *err, size_t err_len)
{
	struct json_object *o = parse_object(json, len, err, err_len), *s;
	int e = -EINVAL;

	*succeeded = false;
	if (!o)
		return -EINVAL;
	if (gateway_error(o, err, err_len))
		goto out;
	if (header_revision(o, revision, err, err_len))
		goto out;
	/* false is the default: the gateway leaves it out */
	*succeeded = json_object_object_get_ex(o, "succeeded", &s) && json_object_get_boolean(s);
	e = 0;
out:
	json_object_put(o);
	return e;
}

int dmsc_etcd_parse_watch(const char *json, size_t len, struct dmsc_etcd_watch_msg *msg, char *err,
			  size_t err_len)
{
	struct json_object *o = parse_object(json, len, err, err_len), *r, *v, *evs;
	size_t i, n;
	int e = -EINVAL;

	memset(msg, 0, sizeof(*msg));
	if (!o)
		return -EINVAL;
	if (!json_object_object_get_ex(o, "result", &r)) {
		if (gateway_error(o, msg->error, sizeof(msg->error))) {
			msg->canceled = true;
			e = 0;
		} else {
			seterr(err, err_len, "a watch message without a result");
		}
		goto out;
	}
	if (header_revision(r, &msg->revision, err, err_len))
		goto out;
	msg->created = json_object_object_get_ex(r, "created", &v) && json_object_get_boolean(v);
	msg->canceled = json_object_object_get_ex(r, "canceled", &v) && json_object_get_boolean(v);
	if (get_int64(r, "compact_revision", &msg->compact_revision)) {
		seterr(err, err_len, "a watch message with a bad compact_revision");
		goto out;
	}
	if (json_object_object_get_ex(r, "cancel_reason", &v))
		snprintf(msg->error, sizeof(msg->error), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(r, "events", &evs)) {
		if (!json_object_is_type(evs, json_type_array)) {
			seterr(err, err_len, "a watch message whose events are not an array");
			goto out;
		}
		n = json_object_array_length(evs);
		msg->events = calloc(n ? n : 1, sizeof(*msg->events));
		if (!msg->events) {
			e = -ENOMEM;
			goto out;
		}
		for (i = 0; i < n; i++) {
			struct json_object *ev = json_object_array_get_idx(evs, i), *kv, *t;

			if (!json_object_object_get_ex(ev, "kv", &kv)) {
				seterr(err, err_len, "a watch event without kv");
				goto out;
			}
			/* PUT is type 0, which the gateway leaves out */
			msg->events[i].deleted = json_object_object_get_ex(ev, "type", &t) &&
						 !strcmp(json_object_get_string(t), "DELETE");
			e = parse_kv(kv, &msg->events[i].kv, err, err_len);
			if (e)
				goto out;
			msg->n_events++;
		}
	}
	e = 0;
out:
	if (e)
		dmsc_etcd_watch_msg_free(msg);
	json_object_put(o);
	return e;
}

void dmsc_etcd_kv_free(struct dmsc_etcd_kv *kv)
{
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

void dmsc_etcd_kvs_free(struct dmsc_etcd_kvs *kvs)
{
	size_t i;

	for (i = 0; i < kvs->n; i++)
		dmsc_etcd_kv_free(&kvs->kv[i]);
	free(kvs->kv);
	memset(kvs, 0, sizeof(*kvs));
}

void dmsc_etcd_watch_msg_free(struct dmsc_etcd_watch_msg *msg)
{
	size_t i;

	for (i = 0; i < msg->n_events; i++)
		dmsc_etcd_kv_free(&msg->events[i].kv);
	free(msg->events);
	msg->events = NULL;
	msg->n_events = 0;
}

int dmsc_etcd_split(struct dmsc_etcd_splitter *s, const char *data, size_t len,
		    int (*fn)(const char *obj, size_t len, void *arg), void *arg)
{
	size_t start = 0, i;
	int e;

	if (s->len + len > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		char *b;

		while (cap < s->len + len)
			cap *= 2;
		b = realloc(s->buf, cap);
		if (!b)
			return -ENOMEM;
		s->buf = b;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, data, len);
	s->len += len;
	for (i = s->scanned; i < s->len; i++) {
		char c = s->buf[i];

		if (s->in_string) {
			if (s->escaped)
				s->escaped = false;
			else if (c == '\\')
				s->escaped = true;
			else if (c == '"')
				s->in_string = false;
			continue;
		}
		if (c == '"') {
			s->in_string = true;
		} else if (c == '{' || c == '[') {
			if (!s->depth) {
				/* whitespace and newlines between objects */
				start = i;
			}
			s->depth++;
		} else if (c == '}' || c == ']') {
			if (s->depth && --s->depth == 0) {
				e = fn(s->buf + start, i + 1 - start, arg);
				if (e) {
					s->len = s->scanned = 0;
					return e;
				}
				start = i + 1;
			}
		} else if (!s->depth) {
			start = i + 1;
		}
	}
	memmove(s->buf, s->buf + start, s->len - start);
	s->len -= start;
	s->scanned = s->len;
	if (s->max && s->len > s->max)
		return -E2BIG;
	return 0;
}

void dmsc_etcd_splitter_free(struct dmsc_etcd_splitter *s)
{
	free(s->buf);
	memset(s, 0, sizeof(*s));
}

/* ---- requests ---- */

int dmsc_etcd_init(struct dmsc_etcd *c, const char *urls, const struct dmsc_etcd_tls *tls)
{
	char *copy = strdup(urls), *save = NULL, *u;
	int e = 0;

	memset(c, 0, sizeof(*c));
	if (!copy)
		return -ENOMEM;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	for (u = strtok_r(copy, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
		size_t len = strlen(u);

		if (strncmp(u, "http://", 7) && strncmp(u, "https://", 8)) {
			seterr(c->err, sizeof(c->err),
			       "--etcd: \"%s\" is not an http:// or https:// URL", u);
			e = -EINVAL;
			break;
		}
		if (c->n_endpoints == DMSC_ETCD_ENDPOINTS_MAX) {
			seterr(c->err, sizeof(c->err), "--etcd: at most %d endpoints",
			       DMSC_ETCD_ENDPOINTS_MAX);
			e = -EINVAL;
			break;
		}
		while (len && u[len - 1] == '/')
			u[--len] = '\0';
		c->endpoints[c->n_endpoints] = strdup(u);
		if (!c->endpoints[c->n_endpoints]) {
			e = -ENOMEM;
			break;
		}
		c->n_endpoints++;
	}
	if (!e && !c->n_endpoints) {
		seterr(c->err, sizeof(c->err), "--etcd: no endpoint given");
		e = -EINVAL;
	}
	free(copy);
	if (tls)
		c->tls = *tls;
	c->timeout_ms = DEFAULT_TIMEOUT_MS;
	if (e)
		dmsc_etcd_free(c);
	return e;
}

void dmsc_etcd_free(struct dmsc_etcd *c)
{
	size_t i;

	for (i = 0; i < c->n_endpoints; i++)
		free(c->endpoints[i]);
	c->n_endpoints = 0;
}

void dmsc_etcd_setup_curl(const struct dmsc_etcd *c, void *curl, const char *path, char *url,
			  size_t url_len, char *errbuf)
{
	if (errbuf) {
		errbuf[0] = '\0';
		curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
	}
	snprintf(url, url_len, "%s%s%s", c->endpoints[c->cur], DMSC_ETCD_API, path);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPIDLE, 5L);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPINTVL, 2L);
	/* no proxy from the environment: etcd is reached directly */
	curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	if (c->tls.cacert)
		curl_easy_setopt(curl, CURLOPT_CAINFO, c->tls.cacert);
	if (c->tls.cert)
		curl_easy_setopt(curl, CURLOPT_SSLCERT, c->tls.cert);
	if (c->tls.key)
		curl_easy_setopt(curl, CURLOPT_SSLKEY, c->tls.key);
}

static bool tls_alert(const char *detail)
{
	return strstr(detail, "certificate required") || strstr(detail, "bad certificate") ||
	       strstr(detail, "unknown ca") || strstr(detail, "certificate unknown") ||
	       strstr(detail, "handshake failure");
}

/*
 * With TLS 1.3 etcd checks the client certificate after the handshake and
 * closes the connection: the client meets an alert, a reset, a closed
 * socket or (HTTP/2) a broken framing layer, whichever comes first. Over TLS 1.2 the check is inside the
 * handshake, so one more connection (to /health, TLS 1.2 at most) tells
 * whether the certificate is the cause. Returns the alert's detail in
 * probe, or "" when that connection succeeds or fails otherwise.
 */
static void tls12_probe(const struct dmsc_etcd *c, char *probe)
{
	CURL *h = curl_easy_init();
	char url[512];

	probe[0] = '\0';
	if (!h)
		return;
	dmsc_etcd_setup_curl(c, h, "", url, sizeof(url), probe);
	snprintf(url, sizeof(url), "%s/health", c->endpoints[c->cur]);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
	curl_easy_setopt(h, CURLOPT_SSLVERSION,
			 (long)(CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2));
	if (curl_easy_perform(h) == CURLE_OK || !tls_alert(probe))
		probe[0] = '\0';
	curl_easy_cleanup(h);
}

/* Which side of a TLS connection failed, from libcurl's code and the
 * OpenSSL detail in its error buffer. */
void dmsc_etcd_describe(const struct dmsc_etcd *c, int curl_code, const char *errbuf, char *out,
			size_t len)
{
	const char *detail = errbuf && errbuf[0] ? errbuf : curl_easy_strerror(curl_code);
	CURLcode cc = (CURLcode)curl_code;
	char probe[DMSC_ETCD_CURL_ERR_SIZE] = "";

	if (cc == CURLE_PEER_FAILED_VERIFICATION) {
		seterr(out, len,
		       "etcd's certificate is not trusted (%s): %s names the CA that must have "
		       "signed it",
		       detail, c->tls.cacert ? c->tls.cacert : "--etcd-cacert FILE");
		return;
	}
	if (cc == CURLE_SSL_CACERT_BADFILE) {
		seterr(out, len, "--etcd-cacert %s cannot be used: %s",
		       c->tls.cacert ? c->tls.cacert : "(the system's)", detail);
		return;
	}
	if (cc == CURLE_SSL_CERTPROBLEM) {
		seterr(out, len, "the client certificate --etcd-cert %s (key %s) cannot be used: %s",
		       c->tls.cert ? c->tls.cert : "-", c->tls.key ? c->tls.key : "in the certificate",
		       detail);
		return;
	}
	if (!strncmp(c->endpoints[c->cur], "https://", 8) &&
	    (cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_RECV_ERROR || cc == CURLE_SEND_ERROR ||
	     cc == CURLE_GOT_NOTHING || cc == CURLE_HTTP2 || cc == CURLE_HTTP2_STREAM)) {
		if (tls_alert(detail))
			snprintf(probe, sizeof(probe), "%s", detail);
		else
			tls12_probe(c, probe);
	}
	if (probe[0])
		seterr(out, len, "etcd refused the connection's client certificate (%s): %s", probe,
		       c->tls.cert ? "is --etcd-cert signed by a CA etcd trusts (its "
				     "--trusted-ca-file)?"
				   : "etcd asks for one: give --etcd-cert FILE and --etcd-key FILE");
	else
		seterr(out, len, "%s", detail);
}

struct response {
	char *buf;
	size_t len, cap;
	bool too_big;
};

static size_t collect(char *data, size_t size, size_t nmemb, void *arg)
{
	struct response *r = arg;
	size_t n = size * nmemb;

	if (r->len + n + 1 > DMSC_ETCD_RESPONSE_MAX) {
		r->too_big = true;
		return 0;
	}
	if (r->len + n + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;
		char *b;

		while (cap < r->len + n + 1)
			cap *= 2;
		b = realloc(r->buf, cap);
		if (!b)
			return 0;
		r->buf = b;
		r->cap = cap;
	}
	memcpy(r->buf + r->len, data, n);
	r->len += n;
	r->buf[r->len] = '\0';
	return n;
}

/* POSTs body to every endpoint in turn from the current one until one
 * answers; the one that answered stays current. */
static int post(struct dmsc_etcd *c, const char *path, const char *body, struct response *r)
{
	CURL *curl = curl_easy_init();
	char url[512], cerr[DMSC_ETCD_CURL_ERR_SIZE], why[512];
	size_t tries;
	int e = -ECONNREFUSED;

	if (!curl)
		return -ENOMEM;
	for (tries = 0; tries < c->n_endpoints; tries++) {
		CURLcode cc;
		long code = 0;

		curl_easy_reset(curl);
		dmsc_etcd_setup_curl(c, curl, path, url, sizeof(url), cerr);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
		curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
		curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
		r->len = 0;
		cc = curl_easy_perform(curl);
		c->bytes_rx += r->len;
		if (cc == CURLE_OK) {
			curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
			if (code < 500 && r->len) {
				e = 0;
				break;
			}
			seterr(c->err, sizeof(c->err), "%s: HTTP %ld", url, code);
			e = -EIO;
		} else if (r->too_big) {
			seterr(c->err, sizeof(c->err), "%s: answer larger than %u bytes", url,
			       DMSC_ETCD_RESPONSE_MAX);
			e = -E2BIG;
			break;
		} else {
			dmsc_etcd_describe(c, cc, cerr, why, sizeof(why));
			seterr(c->err, sizeof(c->err), "%s: %s", url, why);
			e = -ECONNREFUSED;
		}
		c->cur = (c->cur + 1) % c->n_endpoints;
	}
	curl_easy_cleanup(curl);
	return e;
}

int dmsc_etcd_range_prefix(struct dmsc_etcd *c, const char *prefix, int64_t revision,
			   struct dmsc_etcd_kvs *out)
{
	char *end = dmsc_etcd_prefix_end(prefix), *body = NULL;
	struct response r = {0};
	int e = -ENOMEM;

	memset(out, 0, sizeof(*out));
	if (!end)
		goto out;
	body = dmsc_etcd_range_body(prefix, end, revision);
	if (!body)
		goto out;
	e = post(c, "/kv/range", body, &r);
	if (!e)
		e = dmsc_etcd_parse_range(r.buf, r.len, out, c->err, sizeof(c->err));
out:
	free(end);
	free(body);
	free(r.buf);
	return e;
}

int dmsc_etcd_txn(struct dmsc_etcd *c, const struct dmsc_etcd_cmp *cmps, size_t n_cmps,
		  const struct dmsc_etcd_op *ops, size_t n_ops, bool *succeeded,
		  int64_t *revision)
{
	char *body = dmsc_etcd_txn_body(cmps, n_cmps, ops, n_ops);
	struct response r = {0};
	int e = -ENOMEM;

	*succeeded = false;
	if (!body)
		return e;
	e = post(c, "/kv/txn", body, &r);
	if (!e)
		e = dmsc_etcd_parse_txn(r.buf, r.len, succeeded, revision, c->err, sizeof(c->err));
	free(body);
	free(r.buf);
	return e;
}
