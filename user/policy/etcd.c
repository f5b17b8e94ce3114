// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * etcd v3 over its JSON gateway: the unary requests (range, txn) with
 * endpoint failover. See etcd.h; the body builders are etcd_body.c, the
 * parsers etcd_parse.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "etcd_int.h"

#define DEFAULT_TIMEOUT_MS 5000

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
			etcd_seterr(c->err, sizeof(c->err),
				    "--etcd: \"%s\" is not an http:// or https:// URL", u);
			e = -EINVAL;
			break;
		}
		if (c->n_endpoints == DMSC_ETCD_ENDPOINTS_MAX) {
			etcd_seterr(c->err, sizeof(c->err), "--etcd: at most %d endpoints",
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
		etcd_seterr(c->err, sizeof(c->err), "--etcd: no endpoint given");
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
 * socket or (HTTP/2) a broken framing layer, whichever comes first. Over TLS 1.2 the check is
 * inside the handshake, so one more connection (to /health, TLS 1.2 at most) tells whether the
 * certificate is the cause. Returns the alert's detail in probe, or "" when that connection
 * succeeds or fails otherwise.
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
		etcd_seterr(
		    out, len,
		    "etcd's certificate is not trusted (%s): %s names the CA that must have "
		    "signed it",
		    detail, c->tls.cacert ? c->tls.cacert : "--etcd-cacert FILE");
		return;
	}
	if (cc == CURLE_SSL_CACERT_BADFILE) {
		etcd_seterr(out, len, "--etcd-cacert %s cannot be used: %s",
			    c->tls.cacert ? c->tls.cacert : "(the system's)", detail);
		return;
	}
	if (cc == CURLE_SSL_CERTPROBLEM) {
		etcd_seterr(out, len,
			    "the client certificate --etcd-cert %s (key %s) cannot be used: %s",
			    c->tls.cert ? c->tls.cert : "-",
			    c->tls.key ? c->tls.key : "in the certificate", detail);
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
		etcd_seterr(
		    out, len, "etcd refused the connection's client certificate (%s): %s", probe,
		    c->tls.cert ? "is --etcd-cert signed by a CA etcd trusts (its "
				  "--trusted-ca-file)?"
				: "etcd asks for one: give --etcd-cert FILE and --etcd-key FILE");
	else
		etcd_seterr(out, len, "%s", detail);
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
			etcd_seterr(c->err, sizeof(c->err), "%s: HTTP %ld", url, code);
			e = -EIO;
		} else if (r->too_big) {
			etcd_seterr(c->err, sizeof(c->err), "%s: answer larger than %u bytes", url,
				    DMSC_ETCD_RESPONSE_MAX);
			e = -E2BIG;
			break;
		} else {
			dmsc_etcd_describe(c, cc, cerr, why, sizeof(why));
			etcd_seterr(c->err, sizeof(c->err), "%s: %s", url, why);
			e = -ECONNREFUSED;
		}
		c->cur = (c->cur + 1) % c->n_endpoints;
	}
	curl_easy_cleanup(curl);
	return e;
}

int dmsc_etcd_range(struct dmsc_etcd *c, const char *key, const char *range_end,
		    int64_t revision, int64_t limit, struct dmsc_etcd_kvs *out)
{
	char *body = dmsc_etcd_range_body(key, range_end, revision, limit);
	struct response r = {0};
	int e = -ENOMEM;

	memset(out, 0, sizeof(*out));
	if (!body)
		return e;
	e = post(c, "/kv/range", body, &r);
	if (!e)
		e = dmsc_etcd_parse_range(r.buf, r.len, out, c->err, sizeof(c->err));
	free(body);
	free(r.buf);
	return e;
}

int dmsc_etcd_range_prefix(struct dmsc_etcd *c, const char *prefix, int64_t revision,
			   struct dmsc_etcd_kvs *out)
{
	char *end = dmsc_etcd_prefix_end(prefix);
	int e;

	memset(out, 0, sizeof(*out));
	if (!end)
		return -ENOMEM;
	e = dmsc_etcd_range(c, prefix, end, revision, 0, out);
	free(end);
	return e;
}

int dmsc_etcd_txn(struct dmsc_etcd *c, const struct dmsc_etcd_cmp *cmps, size_t n_cmps,
		  const struct dmsc_etcd_op *ops, size_t n_ops, bool *succeeded, int64_t *revision)
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

void *dmsc_etcd_next_done(void *multi, int *curl_code)
{
	CURLMsg *msg;
	int left;
	char *priv = NULL;

	while ((msg = curl_multi_info_read(multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
		*curl_code = msg->data.result;
		return priv;
	}
	return NULL;
}
