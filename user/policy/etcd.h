/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A small etcd v3 client: the JSON gRPC-gateway of etcd 3.4 (POST
 * /v3/kv/range, /v3/kv/txn, /v3/watch) over libcurl, bodies built and read
 * with json-c. Keys and values travel base64-encoded; 64-bit integers are
 * JSON strings. Several endpoints: a request that cannot reach one tries
 * the next (failover); TLS and a client certificate go to libcurl as given.
 *
 * The body builders and parsers are pure (unit-tested); the requests do I/O.
 */
#ifndef DMSC_ETCD_H
#define DMSC_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The gateway's path prefix in etcd 3.4 (3.3 had /v3beta/; 3.4 serves both). */
#define DMSC_ETCD_API "/v3"
#define DMSC_ETCD_ENDPOINTS_MAX 16
/* Largest response read, in bytes (a range of a large namespace). */
#define DMSC_ETCD_RESPONSE_MAX (256u << 20)

struct dmsc_etcd_tls {
	const char *cacert, *cert, *key; /* NULL: not given */
};

struct dmsc_etcd {
	char *endpoints[DMSC_ETCD_ENDPOINTS_MAX]; /* "http://127.0.0.1:2379", no '/' at the end */
	size_t n_endpoints, cur;
	struct dmsc_etcd_tls tls;
	long timeout_ms;    /* per unary request */
	uint64_t bytes_rx;  /* response bytes read, every request */
	char err[512];      /* the last failure, a sentence */
};

struct dmsc_etcd_kv {
	char *key;
	char *value; /* NUL-terminated too; value_len excludes it */
	size_t value_len;
	int64_t create_rev, mod_rev;
};

struct dmsc_etcd_kvs {
	struct dmsc_etcd_kv *kv;
	size_t n;
	int64_t revision; /* the store's revision the range read */
	bool more;	  /* a limited range: keys past the last one remain */
};

enum dmsc_etcd_op_type { DMSC_ETCD_PUT, DMSC_ETCD_DELETE };

struct dmsc_etcd_op {
	enum dmsc_etcd_op_type type;
	const char *key;
	const char *value; /* PUT */
};

enum dmsc_etcd_cmp_result { DMSC_ETCD_EQUAL, DMSC_ETCD_LESS };

/* Compares a key's (or with range_end, every key's in [key, range_end))
 * mod_revision; mod_rev 0 with EQUAL: the key does not exist. */
struct dmsc_etcd_cmp {
	const char *key;
	const char *range_end; /* NULL: one key */
	enum dmsc_etcd_cmp_result result;
	int64_t mod_rev;
};

struct dmsc_etcd_event {
	bool deleted;
	struct dmsc_etcd_kv kv;
};

/* One message of a watch stream. */
struct dmsc_etcd_watch_msg {
	bool created, canceled;
	int64_t revision;         /* header.revision */
	int64_t compact_revision; /* > 0: the start revision was compacted away */
	struct dmsc_etcd_event *events;
	size_t n_events;
	char error[256]; /* a gateway error or cancel_reason; "" when none */
};

/* ---- pure parts ---- */
char *dmsc_b64_encode(const void *data, size_t len);
/* Returns 0 and a NUL-terminated malloc'd buffer, or -EINVAL. */
int dmsc_b64_decode(const char *text, char **out, size_t *out_len);
/* The end of the range of every key that starts with prefix: prefix with
 * its last byte incremented (a last byte 0xff is dropped first). */
char *dmsc_etcd_prefix_end(const char *prefix);

/* limit: at most that many keys, in key order (0: every key). */
char *dmsc_etcd_range_body(const char *key, const char *range_end, int64_t revision,
			   int64_t limit);
char *dmsc_etcd_txn_body(const struct dmsc_etcd_cmp *cmps, size_t n_cmps,
			 const struct dmsc_etcd_op *ops, size_t n_ops);
char *dmsc_etcd_watch_body(const char *key, const char *range_end, int64_t start_revision);

/* Parsers: 0, or -EINVAL with a sentence in err. */
int dmsc_etcd_parse_range(const char *json, size_t len, struct dmsc_etcd_kvs *out, char *err,
			  size_t err_len);
int dmsc_etcd_parse_txn(const char *json, size_t len, bool *succeeded, int64_t *revision,
			char *err, size_t err_len);
/* msg: one JSON object of a watch stream (already split). */
int dmsc_etcd_parse_watch(const char *json, size_t len, struct dmsc_etcd_watch_msg *msg, char *err,
			  size_t err_len);

void dmsc_etcd_kv_free(struct dmsc_etcd_kv *kv);
void dmsc_etcd_kvs_free(struct dmsc_etcd_kvs *kvs);
void dmsc_etcd_watch_msg_free(struct dmsc_etcd_watch_msg *msg);

/* Splits a byte stream into top-level JSON objects (the gateway writes one
 * per line, but a read may end anywhere). */
struct dmsc_etcd_splitter {
	char *buf;
	size_t len, cap;
	size_t max; /* a message larger than this is an error */
	size_t scanned; /* bytes of buf looked at */
	int depth;
	bool in_string, escaped;
};
/* Appends data; for every complete object calls fn(obj, len, arg) (a
 * non-zero return stops and is returned). -E2BIG on an oversized message. */
int dmsc_etcd_split(struct dmsc_etcd_splitter *s, const char *data, size_t len,
		    int (*fn)(const char *obj, size_t len, void *arg), void *arg);
void dmsc_etcd_splitter_free(struct dmsc_etcd_splitter *s);

/* ---- requests ---- */
/* urls: "http://h:p[,https://h:p...]". Returns 0 or -EINVAL (c->err). */
int dmsc_etcd_init(struct dmsc_etcd *c, const char *urls, const struct dmsc_etcd_tls *tls);
void dmsc_etcd_free(struct dmsc_etcd *c);
/* Every key with the prefix, at revision (0: the latest). */
int dmsc_etcd_range_prefix(struct dmsc_etcd *c, const char *prefix, int64_t revision,
			   struct dmsc_etcd_kvs *out);
/* The keys of [key, range_end) at revision (0: the latest), at most limit
 * of them (0: every one) in key order; out->more says whether keys remain
 * past the last one. */
int dmsc_etcd_range(struct dmsc_etcd *c, const char *key, const char *range_end,
		    int64_t revision, int64_t limit, struct dmsc_etcd_kvs *out);
int dmsc_etcd_txn(struct dmsc_etcd *c, const struct dmsc_etcd_cmp *cmps, size_t n_cmps,
		  const struct dmsc_etcd_op *ops, size_t n_ops, bool *succeeded,
		  int64_t *revision);
/* libcurl's detail of a failure (its CURL_ERROR_SIZE). */
#define DMSC_ETCD_CURL_ERR_SIZE 256
/* Applies the TLS options and the URL of the current endpoint + path to a
 * curl easy handle (used by the watch streams too); errbuf
 * (DMSC_ETCD_CURL_ERR_SIZE bytes, or NULL) receives libcurl's detail. */
void dmsc_etcd_setup_curl(const struct dmsc_etcd *c, void *curl, const char *path,
			  char *url, size_t url_len, char *errbuf);
/* A failed transfer (curl_code: a CURLcode) as a sentence naming its
 * cause: for TLS, which certificate and which option (--etcd-cacert,
 * --etcd-cert, --etcd-key). */
void dmsc_etcd_describe(const struct dmsc_etcd *c, int curl_code, const char *errbuf, char *out,
			size_t len);
/* The next transfer of a curl multi handle that has finished: its
 * CURLOPT_PRIVATE pointer, *curl_code its result (a CURLcode); NULL when
 * none has finished since the last call. For the watch streams of dmscd
 * and `dmscctl watch`. */
void *dmsc_etcd_next_done(void *multi, int *curl_code);

#endif /* DMSC_ETCD_H */
