// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The policy parser's internals shared by its files: limits, the field
 * lists and value rules, the walk's context (errors with JSON paths) and
 * the readers the files call in each other.
 */
#ifndef DMSC_POLICY_PARSE_H
#define DMSC_POLICY_PARSE_H

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "addr.h"
#include "dmsc/slots.h"
#include "policy.h"

#define PATH_LEN sizeof(((struct dmsc_policy_error *)0)->path)
#define NAME_LEN_MAX (DMSC_NAME_MAX - 1)
#define LABEL_LEN_MAX 63
#define TIMEOUT_MS_MAX 3600000
#define RETRIES_MAX 10
/* A value quoted in a message is cut after this many bytes, so that a huge
 * value cannot push the rest of the message out. */
#define QUOTE_MAX 64
#define QUOTED_LEN (QUOTE_MAX * 6 + 8)
#define READ_CHUNK (64 * 1024)

#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
/* RFC 9110 tchar: what an HTTP field name is made of. */
#define TOKEN_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"

static const char *const policy_fields[] = {"services", "mtls", "hosts", NULL};
static const char *const service_fields[] = {
    "name",	  "vip",    "port",   "protocol", "backends", "rate_limit", "allow_from",
    "accelerate", "routes", "health", "mtls",	  "affinity", NULL};
static const char *const backend_fields[] = {"address", "port", "weight", "labels", "host", NULL};
static const char *const rate_limit_fields[] = {"connections_per_second", "burst",
						"bytes_per_second",	  "bytes_burst",
						"requests_per_second",	  NULL};
static const char *const route_fields[] = {"match",   "backends",   "timeout_ms",
					   "retries", "idempotent", NULL};
static const char *const match_fields[] = {"path_prefix", "path", "method", "headers", NULL};

static const char *const proto_names[] = {
    [DMSC_POLICY_TCP] = "tcp",
    [DMSC_POLICY_UDP] = "udp",
    [DMSC_POLICY_HTTP] = "http",
    NULL,
};
static const char *const accelerate_names[] = {
    [DMSC_ACCEL_AUTO] = "auto",
    [DMSC_ACCEL_ON] = "on",
    [DMSC_ACCEL_OFF] = "off",
    NULL,
};
static const char *const affinity_names[] = {
    [DMSC_AFFINITY_NONE] = "none",
    [DMSC_AFFINITY_CLIENT] = "client",
    NULL,
};
/* the object form of "affinity", in enum dmsc_affinity's order after client */
static const char *const affinity_fields[] = {"header", "cookie", NULL};
static const char *const mtls_names[] = {
    [DMSC_MTLS_OFF] = "off",
    [DMSC_MTLS_PERMISSIVE] = "permissive",
    [DMSC_MTLS_REQUIRED] = "required",
    NULL,
};
static const char *const http_methods[] = {"GET",   "HEAD",    "POST",	  "PUT",   "DELETE",
					   "PATCH", "OPTIONS", "CONNECT", "TRACE", NULL};

struct int_rule {
	int64_t min, max; /* max INT64_MAX: no upper bound */
	const char *what; /* "70000 is not <what> (1-65535)" */
};

static const struct int_rule port_rule = {1, 65535, "a port"};
static const struct int_rule weight_rule = {0, DMSC_WEIGHT_MAX, "a weight"};
/* Bounds that keep the kernel's token arithmetic inside 64 bits
 * (include/dmsc/bucket.h). */
static const struct int_rule rate_rule = {1, DMSC_TB_RATE_MAX, "a rate"};
static const struct int_rule burst_rule = {0, DMSC_TB_DEPTH_MAX, "a burst size"};
/* A byte bucket shallower than the largest (GSO) packet would never pass
 * it. */
static const struct int_rule bytes_burst_rule = {DMSC_BYTES_BURST_MIN, DMSC_TB_DEPTH_MAX,
						 "a byte burst size"};
static const struct int_rule timeout_rule = {1, TIMEOUT_MS_MAX, "a timeout in milliseconds"};
static const struct int_rule retries_rule = {0, RETRIES_MAX, "a retry count"};

/* Keys and values of a string-to-string object. */
struct map_rule {
	const char *key_what;	/* "label key" */
	const char *value_what; /* "label value" */
	size_t key_max;		/* 0: any length, but keys must be HTTP tokens */
	size_t value_max;	/* 0: any length */
};

static const struct map_rule label_rule = {"label key", "label value", LABEL_LEN_MAX,
					   LABEL_LEN_MAX};
static const struct map_rule header_rule = {"header name", "header value", 0, 0};

struct ctx {
	struct dmsc_policy_errors *errs;
	/* the document's "hosts" (name -> index of host_at) and
	 * "mtls": a backend's "host" and a service's default read them */
	struct json_object *hosts;
	struct dmsc_host_addr *host_at;
	bool hosts_ok;	     /* "hosts" absent or valid: names can be checked */
	/* a backend's "host" is resolved elsewhere (etcd's PREFIX/hosts/):
	 * without a document "hosts", any valid name is taken unresolved */
	bool hosts_elsewhere;
	enum dmsc_mtls_mode mtls;
	size_t dropped; /* errors found past DMSC_POLICY_ERRORS_MAX */
	int err;	/* first failure that is not the document's fault */
};

/* policy_json.c */
__attribute__((format(printf, 3, 4))) int errors_add(struct dmsc_policy_errors *errs,
						     const char *path, const char *fmt, ...);
__attribute__((format(printf, 3, 4))) void report(struct ctx *c, const char *path, const char *fmt,
						  ...);
void *alloc_array(struct ctx *c, size_t n, size_t size);
/* v, an array: *out gets room for its elements (zeroed), *n their count.
 * -EINVAL (reported) when v is not an array, -ENOMEM (*n 0 either way). */
int alloc_json_array(struct ctx *c, const char *path, struct json_object *v, size_t size,
		     void **out, size_t *n);
char *dup_str(struct ctx *c, const char *s);
void quote(char *dst, size_t size, const char *s, size_t len);
void quote_str(char *dst, size_t size, const char *s);
/* 0 if s (len bytes) is an HTTP token (RFC 9110 tchar, TOKEN_CHARS), else
 * reported at path as not a valid `what` */
int check_token(struct ctx *c, const char *path, const char *s, size_t len, const char *what);
/* v as a message names it: its type and, cut, its value ("integer 1") */
void describe(char *dst, size_t size, struct json_object *v);
void path_key(char *dst, const char *parent, const char *key);
void path_index(char *dst, const char *parent, size_t i);
int expect(struct ctx *c, const char *path, struct json_object *v, enum json_type t);
int check_fields(struct ctx *c, struct json_object *obj, const char *path,
		 const char *const *allowed);
int member(struct ctx *c, struct json_object *obj, const char *parent, const char *key,
	   bool required, char *path, struct json_object **v);
int parse_string(struct ctx *c, const char *path, struct json_object *v, const char **s,
		 size_t *len);
int parse_int(struct ctx *c, const char *path, struct json_object *v, const struct int_rule *r,
	      int64_t *out);
int int_member(struct ctx *c, struct json_object *obj, const char *parent, const char *key,
	       const struct int_rule *r, int64_t *out, bool *present);
/* The start of reading an object: -EINVAL when v is none (reported: there
 * is nothing more to read), else 0, with *err set to -EINVAL when v has a
 * field that is not in allowed (reported; the allowed ones are still read). */
int object_fields(struct ctx *c, const char *path, struct json_object *v,
		  const char *const *allowed, int *err);
/* An optional integer member of a field of that width: its value, or def
 * when absent, into *out, and whether it was there into *present (unless
 * NULL). 0 when valid or absent, else -EINVAL (reported). */
int u64_member(struct ctx *c, struct json_object *obj, const char *parent, const char *key,
	       const struct int_rule *r, uint64_t def, uint64_t *out, bool *present);
int u32_member(struct ctx *c, struct json_object *obj, const char *parent, const char *key,
	       const struct int_rule *r, uint32_t def, uint32_t *out, bool *present);
int parse_enum(struct ctx *c, const char *path, struct json_object *v, const char *const *names,
	       const char *what, int *out);
int parse_ip(struct ctx *c, const char *path, struct json_object *v, const char *role, int *family,
	     uint32_t *v4, uint8_t v6[16]);
int parse_name(struct ctx *c, const char *path, struct json_object *v, char **out);
int parse_string_map(struct ctx *c, const char *path, struct json_object *v,
		     const struct map_rule *r, struct dmsc_label **out, size_t *n);

/* policy_service.c */
void parse_policy(struct ctx *c, struct json_object *root, struct dmsc_policy *out);
int parse_url_path(struct ctx *c, const char *path, struct json_object *v, char **out);
/* policy_mtls.c */
void parse_mtls_top(struct ctx *c, struct json_object *root);
void ctx_mtls_free(struct ctx *c);
int parse_backend_host(struct ctx *c, const char *path, struct json_object *v,
		       struct dmsc_policy_backend *be);
void parse_service_mtls(struct ctx *c, const char *path, struct json_object *v,
			struct dmsc_policy_service *svc, bool proto_ok);
/* policy_health.c */
int parse_health(struct ctx *c, const char *path, struct json_object *v,
		 struct dmsc_policy_service *svc, bool proto_ok);

#endif
