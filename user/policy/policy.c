// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Policy version 1: parsing and whole-document validation.
 *
 * The validator walks the whole document and records every problem with
 * its JSON path instead of stopping at the first, so that one run of
 * `dmscctl check` lists everything to fix. The output is built during the
 * same walk and thrown away if anything was wrong.
 *
 * Duplicate keys in one JSON object are not reported: json-c keeps the last
 * value and so does this parser, as most JSON readers do.
 */
#include <arpa/inet.h>
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

static const char *const policy_fields[] = {"services", NULL};
static const char *const service_fields[] = {"name",	 "vip",	       "port",	     "protocol",
					     "backends", "rate_limit", "allow_from", "accelerate",
					     "routes",	 NULL};
static const char *const backend_fields[] = {"address", "port", "weight", "labels", NULL};
static const char *const rate_limit_fields[] = {"connections_per_second", "burst",
						"bytes_per_second", "bytes_burst",
						"requests_per_second", NULL};
static const char *const route_fields[] = {"match", "backends", "timeout_ms", "retries", NULL};
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
	size_t dropped; /* errors found past DMSC_POLICY_ERRORS_MAX */
	int err;	/* first failure that is not the document's fault */
};

static int errors_vadd(struct dmsc_policy_errors *errs, const char *path, const char *fmt,
		       va_list ap)
{
	struct dmsc_policy_error *e;

	if (errs->count == errs->cap) {
		size_t cap = errs->cap ? errs->cap * 2 : 16;
		struct dmsc_policy_error *items;

		items = reallocarray(errs->items, cap, sizeof(*items));
		if (!items)
			return -ENOMEM;
		errs->items = items;
		errs->cap = cap;
	}
	e = &errs->items[errs->count++];
	snprintf(e->path, sizeof(e->path), "%s", path);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	return 0;
}

__attribute__((format(printf, 3, 4))) static int errors_add(struct dmsc_policy_errors *errs,
							    const char *path, const char *fmt, ...)
{
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = errors_vadd(errs, path, fmt, ap);
	va_end(ap);
	return err;
}

__attribute__((format(printf, 3, 4))) static void report(struct ctx *c, const char *path,
							 const char *fmt, ...)
{
	va_list ap;
	int err;

	if (c->errs->count >= DMSC_POLICY_ERRORS_MAX) {
		c->dropped++;
		return;
	}
	va_start(ap, fmt);
	err = errors_vadd(c->errs, path, fmt, ap);
	va_end(ap);
	if (err && !c->err)
		c->err = err;
}

static void *alloc_array(struct ctx *c, size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p && !c->err)
		c->err = -ENOMEM;
	return p;
}

static char *dup_str(struct ctx *c, const char *s)
{
	char *d = strdup(s);

	if (!d && !c->err)
		c->err = -ENOMEM;
	return d;
}

/* Writes s as a JSON string literal, cut at a character boundary after
 * QUOTE_MAX bytes and marked with "...". */
static void quote(char *dst, size_t size, const char *s, size_t len)
{
	bool cut = len > QUOTE_MAX;
	size_t o = 0, i;

	if (cut) {
		len = QUOTE_MAX;
		while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
	}
	dst[o++] = '"';
	for (i = 0; i < len && o + 8 < size; i++) {
		unsigned char ch = s[i];

		if (ch == '"' || ch == '\\')
			o += snprintf(dst + o, size - o, "\\%c", ch);
		else if (ch == '\n')
			o += snprintf(dst + o, size - o, "\\n");
		else if (ch == '\t')
			o += snprintf(dst + o, size - o, "\\t");
		else if (ch < 0x20 || ch == 0x7f)
			o += snprintf(dst + o, size - o, "\\u%04x", ch);
		else
			dst[o++] = ch;
	}
	snprintf(dst + o, size - o, "%s\"", cut ? "..." : "");
}

static void quote_str(char *dst, size_t size, const char *s)
{
	quote(dst, size, s, strlen(s));
}

/* Names a JSON value for "expected X, got Y". */
static void describe(char *dst, size_t size, struct json_object *v)
{
	char q[QUOTED_LEN];

	switch (json_object_get_type(v)) {
	case json_type_null:
		snprintf(dst, size, "null");
		break;
	case json_type_boolean:
		snprintf(dst, size, "boolean %s", json_object_get_boolean(v) ? "true" : "false");
		break;
	case json_type_int:
		snprintf(dst, size, "integer %s", json_object_to_json_string(v));
		break;
	case json_type_double:
		/* json-c keeps the number as written: "80.0", "8e1". */
		snprintf(dst, size, "number %.32s", json_object_to_json_string(v));
		break;
	case json_type_string:
		quote(q, sizeof(q), json_object_get_string(v), json_object_get_string_len(v));
		snprintf(dst, size, "string %s", q);
		break;
	case json_type_object:
		snprintf(dst, size, "an object");
		break;
	case json_type_array:
		snprintf(dst, size, "an array");
		break;
	}
}

static const char *type_name(enum json_type t)
{
	switch (t) {
	case json_type_object:
		return "an object";
	case json_type_array:
		return "an array";
	case json_type_string:
		return "a string";
	case json_type_int:
		return "an integer";
	default:
		return json_type_to_name(t);
	}
}

static void join(char *dst, size_t size, const char *const *names)
{
	size_t o = 0, i;

	dst[0] = '\0';
	for (i = 0; names[i] && o < size; i++)
		o += snprintf(dst + o, size - o, "%s%s", i ? ", " : "", names[i]);
}

static bool plain_key(const char *key)
{
	size_t len = strlen(key);

	return len && strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				  "0123456789_-") == len;
}

/* Paths longer than PATH_LEN are cut short on purpose: the message after
 * them still says what is wrong. */
__attribute__((format(printf, 2, 3))) static void path_fmt(char *dst, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, PATH_LEN, fmt, ap);
	va_end(ap);
}

/* parent.key, or parent["key"] for a key that would not read as one word. */
static void path_key(char *dst, const char *parent, const char *key)
{
	char q[QUOTED_LEN];

	if (plain_key(key)) {
		path_fmt(dst, "%s%s%s", parent, *parent ? "." : "", key);
		return;
	}
	quote_str(q, sizeof(q), key);
	path_fmt(dst, "%s[%s]", parent, q);
}

static void path_index(char *dst, const char *parent, size_t i)
{
	path_fmt(dst, "%s[%zu]", parent, i);
}

static int expect(struct ctx *c, const char *path, struct json_object *v, enum json_type t)
{
	char got[QUOTED_LEN + 16];

	if (json_object_is_type(v, t))
		return 0;
	describe(got, sizeof(got), v);
	report(c, path, "expected %s, got %s", type_name(t), got);
	return -EINVAL;
}

static bool in_list(const char *s, const char *const *list)
{
	size_t i;

	for (i = 0; list[i]; i++)
		if (!strcmp(s, list[i]))
			return true;
	return false;
}

/* Reports every member of obj that is not in allowed. */
static int check_fields(struct ctx *c, struct json_object *obj, const char *path,
			const char *const *allowed)
{
	struct json_object_iterator it = json_object_iter_begin(obj);
	struct json_object_iterator end = json_object_iter_end(obj);
	char p[PATH_LEN], q[QUOTED_LEN], list[256];
	int err = 0;

	for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
		const char *key = json_object_iter_peek_name(&it);

		if (in_list(key, allowed))
			continue;
		path_key(p, path, key);
		quote_str(q, sizeof(q), key);
		join(list, sizeof(list), allowed);
		report(c, p, "unknown field %s (allowed: %s)", q, list);
		err = -EINVAL;
	}
	return err;
}

/* Looks key up in obj and fills path with its path. Returns 0 with *v set,
 * or -ENOENT when it is absent (an error only when required). */
static int member(struct ctx *c, struct json_object *obj, const char *parent, const char *key,
		  bool required, char *path, struct json_object **v)
{
	path_key(path, parent, key);
	if (json_object_object_get_ex(obj, key, v))
		return 0;
	if (required)
		report(c, path, "required field is missing");
	return -ENOENT;
}

static int parse_string(struct ctx *c, const char *path, struct json_object *v, const char **s,
			size_t *len)
{
	char q[QUOTED_LEN];

	if (expect(c, path, v, json_type_string))
		return -EINVAL;
	*s = json_object_get_string(v);
	*len = json_object_get_string_len(v);
	if (strlen(*s) != *len) {
		quote(q, sizeof(q), *s, *len);
		report(c, path, "%s contains a NUL character", q);
		return -EINVAL;
	}
	return 0;
}

static int parse_int(struct ctx *c, const char *path, struct json_object *v,
		     const struct int_rule *r, int64_t *out)
{
	char val[32], range[48];
	int64_t i;

	if (expect(c, path, v, json_type_int))
		return -EINVAL;
	i = json_object_get_int64(v);
	/* json-c clamps integers beyond 64 bits to the int64 limits. */
	if (i == INT64_MAX || i == INT64_MIN)
		snprintf(val, sizeof(val), "a number this %s", i < 0 ? "small" : "large");
	else if (i >= r->min && i <= r->max) {
		*out = i;
		return 0;
	} else
		snprintf(val, sizeof(val), "%" PRId64, i);
	if (r->max == INT64_MAX)
		snprintf(range, sizeof(range), "%" PRId64 " or more", r->min);
	else
		snprintf(range, sizeof(range), "%" PRId64 "-%" PRId64, r->min, r->max);
	report(c, path, "%s is not %s (%s)", val, r->what, range);
	return -EINVAL;
}

/* An optional integer member: 0 when valid (*present set) or absent. */
static int int_member(struct ctx *c, struct json_object *obj, const char *parent, const char *key,
		      const struct int_rule *r, int64_t *out, bool *present)
{
	struct json_object *v;
	char p[PATH_LEN];

	*present = false;
	if (member(c, obj, parent, key, false, p, &v))
		return 0;
	if (parse_int(c, p, v, r, out))
		return -EINVAL;
	*present = true;
	return 0;
}

static int parse_enum(struct ctx *c, const char *path, struct json_object *v,
		      const char *const *names, const char *what, int *out)
{
	char q[QUOTED_LEN], list[128];
	const char *s;
	size_t len;
	int i;

	if (parse_string(c, path, v, &s, &len))
		return -EINVAL;
	for (i = 0; names[i]; i++) {
		if (!strcmp(s, names[i])) {
			*out = i;
			return 0;
		}
	}
	quote(q, sizeof(q), s, len);
	join(list, sizeof(list), names);
	report(c, path, "%s is not %s (%s)", q, what, list);
	return -EINVAL;
}

/* What an IPv6 address cannot be as a VIP or a backend; NULL if fine. */
static const char *ipv6_kind(const struct in6_addr *a)
{
	if (IN6_IS_ADDR_UNSPECIFIED(a))
		return "the unspecified address";
	if (IN6_IS_ADDR_MULTICAST(a))
		return "a multicast address";
	/* The socket hooks rewrite an address and a port, never the scope
	 * id: a link-local peer would be reached on whichever interface
	 * the caller's socket named, if any (docs/design.md decision 27). */
	if (IN6_IS_ADDR_LINKLOCAL(a))
		return "a link-local address (the socket hooks cannot set its zone)";
	return NULL;
}

/* role: "a service", "a backend". An IPv4 address (network order) in *v4,
 * an IPv6 one in v6; *family says which. */
static int parse_ip(struct ctx *c, const char *path, struct json_object *v, const char *role,
		    int *family, uint32_t *v4, uint8_t v6[16])
{
	const char *s, *kind = NULL;
	char q[QUOTED_LEN], v4s[INET_ADDRSTRLEN];
	struct in6_addr a6;
	struct in_addr a;
	uint32_t h;
	size_t len;

	if (parse_string(c, path, v, &s, &len))
		return -EINVAL;
	quote(q, sizeof(q), s, len);
	/* inet_pton takes only the dotted quad: no leading zeros, no short
	 * forms such as "10.1" that inet_aton would widen. */
	if (inet_pton(AF_INET, s, &a) == 1) {
		h = ntohl(a.s_addr);
		if (h == INADDR_ANY)
			kind = "the unspecified address";
		else if (h == INADDR_BROADCAST)
			kind = "the broadcast address";
		else if (IN_MULTICAST(h))
			kind = "a multicast address";
		if (kind) {
			report(c, path, "%s is %s; %s needs a unicast IPv4 address", q, kind, role);
			return -EINVAL;
		}
		*family = AF_INET;
		*v4 = a.s_addr;
		memset(v6, 0, 16);
		return 0;
	}
	if (memchr(s, '%', len)) {
		report(c, path, "%s has a zone; %s needs an address without one "
			  "(the socket hooks cannot set a zone)", q, role);
		return -EINVAL;
	}
	if (inet_pton(AF_INET6, s, &a6) != 1) {
		report(c, path, "%s is not an IPv4 or IPv6 address", q);
		return -EINVAL;
	}
	/* A dual-stack socket's ::ffff:a.b.c.d is an IPv4 connection, and
	 * the IPv4 service of a.b.c.d answers it (docs/design.md decision 12). */
	if (IN6_IS_ADDR_V4MAPPED(&a6)) {
		inet_ntop(AF_INET, &a6.s6_addr[12], v4s, sizeof(v4s));
		report(c, path, "%s is an IPv4-mapped address; write the IPv4 address %s, "
			  "which dual-stack sockets reach as ::ffff:%s", q, v4s, v4s);
		return -EINVAL;
	}
	kind = ipv6_kind(&a6);
	if (kind) {
		report(c, path, "%s is %s; %s needs a unicast IPv6 address", q, kind, role);
		return -EINVAL;
	}
	*family = AF_INET6;
	*v4 = 0;
	memcpy(v6, &a6, 16);
	return 0;
}

static int parse_name(struct ctx *c, const char *path, struct json_object *v, char **out)
{
	char q[QUOTED_LEN];
	const char *s;
	size_t len;

	if (parse_string(c, path, v, &s, &len))
		return -EINVAL;
	if (len < 1 || len > NAME_LEN_MAX || strspn(s, NAME_CHARS) != len) {
		quote(q, sizeof(q), s, len);
		report(c, path,
		       "%s is not a valid name: use 1 to %d characters from A-Z a-z 0-9 . _ -", q,
		       NAME_LEN_MAX);
		return -EINVAL;
	}
	*out = dup_str(c, s);
	return *out ? 0 : -ENOMEM;
}

static int check_map_key(struct ctx *c, const char *path, const char *key, const struct map_rule *r)
{
	size_t len = strlen(key);
	char q[QUOTED_LEN];

	if (!r->key_max) {
		if (len && strspn(key, TOKEN_CHARS) == len)
			return 0;
		quote(q, sizeof(q), key, len);
		report(c, path, "%s is not a valid %s (letters, digits and !#$%%&'*+-.^_`|~)", q,
		       r->key_what);
		return -EINVAL;
	}
	if (len >= 1 && len <= r->key_max)
		return 0;
	report(c, path, "a %s must be 1 to %zu bytes long, not %zu", r->key_what, r->key_max, len);
	return -EINVAL;
}

/* A JSON object of strings: labels, a label selector, HTTP headers. */
static int parse_string_map(struct ctx *c, const char *path, struct json_object *v,
			    const struct map_rule *r, struct dmsc_label **out, size_t *n)
{
	struct json_object_iterator it, end;
	char p[PATH_LEN];
	int err = 0;
	size_t i = 0;

	if (expect(c, path, v, json_type_object))
		return -EINVAL;
	*n = json_object_object_length(v);
	*out = alloc_array(c, *n, sizeof(**out));
	if (!*out) {
		*n = 0;
		return -ENOMEM;
	}
	it = json_object_iter_begin(v);
	end = json_object_iter_end(v);
	for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it), i++) {
		const char *key = json_object_iter_peek_name(&it);
		const char *s;
		size_t len;

		path_key(p, path, key);
		if (check_map_key(c, p, key, r))
			err = -EINVAL;
		if (parse_string(c, p, json_object_iter_peek_value(&it), &s, &len)) {
			err = -EINVAL;
			continue;
		}
		if (r->value_max && len > r->value_max) {
			report(c, p, "a %s must be at most %zu bytes long, not %zu", r->value_what,
			       r->value_max, len);
			err = -EINVAL;
			continue;
		}
		(*out)[i].key = dup_str(c, key);
		(*out)[i].value = dup_str(c, s);
	}
	return c->err ? c->err : err;
}

static int check_cgroup_path(struct ctx *c, const char *path, const char *s, size_t len)
{
	const char *why = NULL, *comp;
	char q[QUOTED_LEN];

	quote(q, sizeof(q), s, len);
	if (len > DMSC_CGROUP_PATH_MAX - 1) {
		report(c, path, "%s is not a valid cgroup path: it is %zu bytes long, at most %d",
		       q, len, DMSC_CGROUP_PATH_MAX - 1);
		return -EINVAL;
	}
	if (!len)
		why = "it is empty";
	else if (s[0] == '/')
		why = "it must be relative to the cgroup2 root, without a leading \"/\"";
	for (comp = s; !why && comp <= s + len; comp += strcspn(comp, "/") + 1) {
		size_t n = strcspn(comp, "/");

		if (n == 0)
			why = "it has an empty component";
		else if (n == 1 && comp[0] == '.')
			why = "it has a \".\" component";
		else if (n == 2 && comp[0] == '.' && comp[1] == '.')
			why = "it has a \"..\" component";
	}
	if (!why)
		return 0;
	report(c, path, "%s is not a valid cgroup path: %s", q, why);
	return -EINVAL;
}

static int parse_allow_from(struct ctx *c, const char *path, struct json_object *v,
			    struct dmsc_policy_service *svc)
{
	char p[PATH_LEN];
	const char *s;
	int err = 0;
	size_t i, len;

	if (expect(c, path, v, json_type_array))
		return -EINVAL;
	svc->n_allow_from = json_object_array_length(v);
	svc->allow_from = alloc_array(c, svc->n_allow_from, sizeof(*svc->allow_from));
	if (!svc->allow_from) {
		svc->n_allow_from = 0;
		return -ENOMEM;
	}
	svc->has_allow_from = true;
	for (i = 0; i < svc->n_allow_from; i++) {
		path_index(p, path, i);
		if (parse_string(c, p, json_object_array_get_idx(v, i), &s, &len) ||
		    check_cgroup_path(c, p, s, len)) {
			err = -EINVAL;
			continue;
		}
		svc->allow_from[i] = dup_str(c, s);
	}
	return c->err ? c->err : err;
}

static const char *proto_word(const struct dmsc_policy_service *svc)
{
	return proto_names[svc->protocol];
}

static int http_only(struct ctx *c, const char *path, const struct dmsc_policy_service *svc,
		     bool proto_ok)
{
	/* An invalid protocol was reported already; guessing would only add
	 * noise. */
	if (!proto_ok || svc->protocol == DMSC_POLICY_HTTP)
		return 0;
	report(c, path,
	       "only allowed when protocol is \"http\" (this service's protocol is \"%s\")",
	       proto_word(svc));
	return -EINVAL;
}

static int parse_rate_limit(struct ctx *c, const char *path, struct json_object *v,
			    struct dmsc_policy_service *svc, bool proto_ok)
{
	struct dmsc_rate_limit *rl = &svc->rate_limit;
	char p[PATH_LEN];
	int64_t i = 0;
	int err = 0;

	if (expect(c, path, v, json_type_object))
		return -EINVAL;
	svc->has_rate_limit = true;
	if (check_fields(c, v, path, rate_limit_fields))
		err = -EINVAL;
	if (int_member(c, v, path, "connections_per_second", &rate_rule, &i,
		       &rl->has_connections_per_second))
		err = -EINVAL;
	rl->connections_per_second = rl->has_connections_per_second ? (uint64_t)i : 0;
	if (int_member(c, v, path, "burst", &burst_rule, &i, &rl->has_burst))
		err = -EINVAL;
	rl->burst = rl->has_burst ? (uint64_t)i : 0;
	if (int_member(c, v, path, "bytes_per_second", &rate_rule, &i, &rl->has_bytes_per_second))
		err = -EINVAL;
	rl->bytes_per_second = rl->has_bytes_per_second ? (uint64_t)i : 0;
	if (int_member(c, v, path, "bytes_burst", &bytes_burst_rule, &i, &rl->has_bytes_burst))
		err = -EINVAL;
	rl->bytes_burst = rl->has_bytes_burst ? (uint64_t)i : 0;
	if (json_object_object_get_ex(v, "bytes_burst", NULL) &&
	    !json_object_object_get_ex(v, "bytes_per_second", NULL)) {
		path_key(p, path, "bytes_burst");
		report(c, p, "a byte burst needs bytes_per_second");
		err = -EINVAL;
	}
	if (int_member(c, v, path, "requests_per_second", &rate_rule, &i,
		       &rl->has_requests_per_second))
		err = -EINVAL;
	rl->requests_per_second = rl->has_requests_per_second ? (uint64_t)i : 0;

	if (json_object_object_get_ex(v, "requests_per_second", NULL)) {
		path_key(p, path, "requests_per_second");
		if (http_only(c, p, svc, proto_ok))
			err = -EINVAL;
	}
	/* Presence, not validity: an invalid rate was reported already. */
	if (json_object_object_get_ex(v, "burst", NULL) &&
	    !json_object_object_get_ex(v, "connections_per_second", NULL) &&
	    !json_object_object_get_ex(v, "bytes_per_second", NULL) &&
	    !json_object_object_get_ex(v, "requests_per_second", NULL)) {
		path_key(p, path, "burst");
		report(c, p,
		       "a burst needs a rate: set connections_per_second, bytes_per_second or "
		       "requests_per_second");
		err = -EINVAL;
	}
	return err;
}

static int parse_backend(struct ctx *c, const char *path, struct json_object *v,
			 struct dmsc_policy_backend *be, int *family)
{
	struct json_object *f;
	char p[PATH_LEN];
	bool present;
	int64_t i = 0;
	int err = 0;

	be->weight = 1;
	if (expect(c, path, v, json_type_object))
		return -EINVAL;
	if (check_fields(c, v, path, backend_fields))
		err = -EINVAL;
	if (member(c, v, path, "address", true, p, &f) ||
	    parse_ip(c, p, f, "a backend", family, &be->addr, be->addr6))
		err = -EINVAL;
	if (member(c, v, path, "port", true, p, &f) || parse_int(c, p, f, &port_rule, &i))
		err = -EINVAL;
	else
		be->port = (uint16_t)i;
	if (int_member(c, v, path, "weight", &weight_rule, &i, &present))
		err = -EINVAL;
	else if (present)
		be->weight = (uint32_t)i;
	if (!member(c, v, path, "labels", false, p, &f) &&
	    parse_string_map(c, p, f, &label_rule, &be->labels, &be->n_labels))
		err = -EINVAL;
	return err;
}

/* "IPv4" / "IPv6" */
static const char *family_word(int family)
{
	return family == AF_INET6 ? "IPv6" : "IPv4";
}

static int parse_backends(struct ctx *c, const char *path, struct json_object *v,
			  struct dmsc_policy_service *svc)
{
	bool *ok;
	char p[PATH_LEN], ap[DMSC_ADDR_PORT_LEN], ip[INET6_ADDRSTRLEN];
	size_t i, j, n;
	int err = 0, family;

	if (expect(c, path, v, json_type_array))
		return -EINVAL;
	n = json_object_array_length(v);
	if (n == 0) {
		report(c, path, "a service needs at least one backend");
		return -EINVAL;
	}
	if (n > DMSC_BACKENDS_PER_SERVICE_MAX) {
		report(c, path, "%zu backends, at most %d per service", n,
		       DMSC_BACKENDS_PER_SERVICE_MAX);
		err = -EINVAL;
	}
	svc->backends = alloc_array(c, n, sizeof(*svc->backends));
	ok = alloc_array(c, n, sizeof(*ok));
	if (!svc->backends || !ok) {
		free(ok);
		return -ENOMEM;
	}
	svc->n_backends = n;
	for (i = 0; i < n; i++) {
		const struct dmsc_policy_backend *be = &svc->backends[i];

		path_index(p, path, i);
		family = 0;
		ok[i] = !parse_backend(c, p, json_object_array_get_idx(v, i), &svc->backends[i],
				       &family);
		/* One family per service: the kernel rewrites the address of
		 * the caller's socket, which cannot change its family. svc->family
		 * is 0 when the VIP itself was wrong: nothing to compare. */
		if (ok[i] && svc->family && family != svc->family) {
			dmsc_format_ip(family, be->addr, be->addr6, ip, sizeof(ip));
			report(c, p, "address \"%s\" is %s, the service's vip is %s; a service's "
				  "VIP and backends are of one family", ip, family_word(family),
			       family_word(svc->family));
			ok[i] = false;
		}
		if (!ok[i]) {
			err = -EINVAL;
			continue;
		}
		/* At most DMSC_BACKENDS_PER_SERVICE_MAX in a valid service: the
		 * quadratic scan stays small. */
		for (j = 0; j < i; j++) {
			if (!ok[j] || svc->backends[j].addr != be->addr ||
			    memcmp(svc->backends[j].addr6, be->addr6, sizeof(be->addr6)) ||
			    svc->backends[j].port != be->port)
				continue;
			dmsc_format_ip_port(family, be->addr, be->addr6, be->port, ap, sizeof(ap));
			report(c, p, "%s is already listed as backends[%zu]", ap, j);
			err = -EINVAL;
			break;
		}
	}
	free(ok);
	return c->err ? c->err : err;
}

static bool backend_has_label(const struct dmsc_policy_backend *be, const struct dmsc_label *l)
{
	size_t i;

	for (i = 0; i < be->n_labels; i++)
		if (!strcmp(be->labels[i].key, l->key) && !strcmp(be->labels[i].value, l->value))
			return true;
	return false;
}

static bool selector_matches(const struct dmsc_policy_service *svc, const struct dmsc_route *r)
{
	size_t b, l;

	for (b = 0; b < svc->n_backends; b++) {
		for (l = 0; l < r->n_selector; l++)
			if (!backend_has_label(&svc->backends[b], &r->selector[l]))
				break;
		if (l == r->n_selector)
			return true;
	}
	return false;
}

static void selector_text(char *dst, size_t size, const struct dmsc_route *r)
{
	char k[QUOTED_LEN], v[QUOTED_LEN];
	size_t o, i;

	o = snprintf(dst, size, "{");
	for (i = 0; i < r->n_selector && o < size; i++) {
		quote_str(k, sizeof(k), r->selector[i].key);
		quote_str(v, sizeof(v), r->selector[i].value);
		o += snprintf(dst + o, size - o, "%s%s: %s", i ? ", " : "", k, v);
	}
	if (o < size)
		snprintf(dst + o, size - o, "}");
}

static int parse_url_path(struct ctx *c, const char *path, struct json_object *v, char **out)
{
	char q[QUOTED_LEN];
	const char *s;
	size_t len;

	if (parse_string(c, path, v, &s, &len))
		return -EINVAL;
	if (s[0] != '/') {
		quote(q, sizeof(q), s, len);
		report(c, path, "%s must start with \"/\"", q);
		return -EINVAL;
	}
	*out = dup_str(c, s);
	return *out ? 0 : -ENOMEM;
}

static int parse_match(struct ctx *c, const char *path, struct json_object *v,
		       struct dmsc_route_match *m)
{
	struct json_object *f;
	char p[PATH_LEN];
	int err = 0, method;

	if (expect(c, path, v, json_type_object))
		return -EINVAL;
	if (check_fields(c, v, path, match_fields))
		err = -EINVAL;
	if (!member(c, v, path, "path_prefix", false, p, &f) &&
	    parse_url_path(c, p, f, &m->path_prefix))
		err = -EINVAL;
	if (!member(c, v, path, "path", false, p, &f) && parse_url_path(c, p, f, &m->path))
		err = -EINVAL;
	if (json_object_object_get_ex(v, "path_prefix", NULL) &&
	    json_object_object_get_ex(v, "path", NULL)) {
		report(c, path, "\"path\" and \"path_prefix\" cannot both be set");
		err = -EINVAL;
	}
	if (!member(c, v, path, "method", false, p, &f)) {
		if (parse_enum(c, p, f, http_methods, "an HTTP method", &method))
			err = -EINVAL;
		else
			m->method = dup_str(c, http_methods[method]);
	}
	if (!member(c, v, path, "headers", false, p, &f) &&
	    parse_string_map(c, p, f, &header_rule, &m->headers, &m->n_headers))
		err = -EINVAL;
	return err;
}

static int parse_route(struct ctx *c, const char *path, struct json_object *v,
		       const struct dmsc_policy_service *svc, bool backends_ok,
		       struct dmsc_route *r)
{
	char p[PATH_LEN], sel[512];
	struct json_object *f;
	int64_t i = 0;
	int err = 0;

	if (expect(c, path, v, json_type_object))
		return -EINVAL;
	if (check_fields(c, v, path, route_fields))
		err = -EINVAL;
	if (member(c, v, path, "match", true, p, &f) || parse_match(c, p, f, &r->match))
		err = -EINVAL;
	if (!member(c, v, path, "backends", false, p, &f)) {
		if (parse_string_map(c, p, f, &label_rule, &r->selector, &r->n_selector))
			err = -EINVAL;
		else if (backends_ok && !selector_matches(svc, r)) {
			selector_text(sel, sizeof(sel), r);
			report(c, p, "selector %s matches no backend of this service", sel);
			err = -EINVAL;
		}
	}
	if (int_member(c, v, path, "timeout_ms", &timeout_rule, &i, &r->has_timeout_ms))
		err = -EINVAL;
	r->timeout_ms = r->has_timeout_ms ? (uint32_t)i : 0;
	if (int_member(c, v, path, "retries", &retries_rule, &i, &r->has_retries))
		err = -EINVAL;
	r->retries = r->has_retries ? (uint32_t)i : 0;
	return err;
}

static int parse_routes(struct ctx *c, const char *path, struct json_object *v,
			struct dmsc_policy_service *svc, bool proto_ok, bool backends_ok)
{
	char p[PATH_LEN];
	int err;
	size_t i;

	err = http_only(c, path, svc, proto_ok);
	if (expect(c, path, v, json_type_array))
		return -EINVAL;
	svc->n_routes = json_object_array_length(v);
	svc->routes = alloc_array(c, svc->n_routes, sizeof(*svc->routes));
	if (!svc->routes) {
		svc->n_routes = 0;
		return -ENOMEM;
	}
	for (i = 0; i < svc->n_routes; i++) {
		path_index(p, path, i);
		if (parse_route(c, p, json_object_array_get_idx(v, i), svc, backends_ok,
				&svc->routes[i]))
			err = -EINVAL;
	}
	return err;
}

/*
 * Services already seen, for the checks across services. Kept in json-c
 * objects because they are hash tables: a policy may hold 100,000 services.
 */
struct seen {
	struct json_object *names; /* name -> index */
	struct json_object *keys;  /* kernel key -> index */
};

/* Returns the index recorded under key, or -1 after recording idx there. */
static int64_t seen_check(struct ctx *c, struct json_object *set, const char *key, size_t idx)
{
	struct json_object *prev, *i;

	if (json_object_object_get_ex(set, key, &prev))
		return json_object_get_int64(prev);
	i = json_object_new_int64((int64_t)idx);
	if (!i || json_object_object_add(set, key, i)) {
		json_object_put(i);
		if (!c->err)
			c->err = -ENOMEM;
	}
	return -1;
}

static void check_unique_name(struct ctx *c, const char *path, struct seen *seen,
			      const struct dmsc_policy_service *svc, size_t idx)
{
	char q[QUOTED_LEN];
	int64_t prev;

	prev = seen_check(c, seen->names, svc->name, idx);
	if (prev < 0)
		return;
	quote_str(q, sizeof(q), svc->name);
	report(c, path, "%s is already used by services[%" PRId64 "]", q, prev);
}

/* tcp and http services share one kernel key: both are TCP in the kernel. */
static void check_unique_key(struct ctx *c, const char *path, struct seen *seen,
			     const struct dmsc_policy *pol, size_t idx)
{
	const struct dmsc_policy_service *svc = &pol->services[idx], *other;
	char key[96], ip[INET6_ADDRSTRLEN], ap[DMSC_ADDR_PORT_LEN];
	char name[QUOTED_LEN + 2] = "", why[96] = "";
	int64_t prev;

	dmsc_format_ip(svc->family, svc->vip, svc->vip6, ip, sizeof(ip));
	snprintf(key, sizeof(key), "%s:%u/%s", ip, svc->port,
		 svc->protocol == DMSC_POLICY_UDP ? "udp" : "tcp");
	prev = seen_check(c, seen->keys, key, idx);
	if (prev < 0)
		return;
	other = &pol->services[prev];
	if (other->name) {
		name[0] = ' ';
		quote_str(name + 1, sizeof(name) - 1, other->name);
	}
	if (other->protocol != svc->protocol)
		snprintf(why, sizeof(why), " as %s (tcp and http share the kernel's TCP key)",
			 proto_word(other));
	dmsc_format_ip_port(svc->family, svc->vip, svc->vip6, svc->port, ap, sizeof(ap));
	report(c, path, "%s/%s is already used by services[%" PRId64 "]%s%s", ap,
	       proto_word(svc), prev, name, why);
}

static void parse_service(struct ctx *c, const char *path, struct json_object *v,
			  struct dmsc_policy *pol, size_t idx, struct seen *seen)
{
	struct dmsc_policy_service *svc = &pol->services[idx];
	bool key_ok = true, proto_ok = true, backends_ok = false;
	struct json_object *f;
	char p[PATH_LEN];
	int64_t i = 0;
	int e;

	svc->protocol = DMSC_POLICY_TCP;
	svc->accelerate = DMSC_ACCEL_AUTO;
	if (expect(c, path, v, json_type_object))
		return;
	check_fields(c, v, path, service_fields);
	if (!member(c, v, path, "name", true, p, &f) && !parse_name(c, p, f, &svc->name))
		check_unique_name(c, p, seen, svc, idx);
	if (member(c, v, path, "vip", true, p, &f) ||
	    parse_ip(c, p, f, "a service", &svc->family, &svc->vip, svc->vip6))
		key_ok = false;
	if (member(c, v, path, "port", true, p, &f) || parse_int(c, p, f, &port_rule, &i))
		key_ok = false;
	else
		svc->port = (uint16_t)i;
	if (!member(c, v, path, "protocol", false, p, &f)) {
		proto_ok = !parse_enum(c, p, f, proto_names, "a protocol", &e);
		if (proto_ok)
			svc->protocol = e;
	}
	if (key_ok && proto_ok)
		check_unique_key(c, path, seen, pol, idx);
	if (!member(c, v, path, "backends", true, p, &f))
		backends_ok = !parse_backends(c, p, f, svc);
	if (!member(c, v, path, "rate_limit", false, p, &f))
		parse_rate_limit(c, p, f, svc, proto_ok);
	if (!member(c, v, path, "allow_from", false, p, &f))
		parse_allow_from(c, p, f, svc);
	if (!member(c, v, path, "accelerate", false, p, &f) &&
	    !parse_enum(c, p, f, accelerate_names, "an accelerate mode", &e))
		svc->accelerate = e;
	if (!member(c, v, path, "routes", false, p, &f))
		parse_routes(c, p, f, svc, proto_ok, backends_ok);
}

static void parse_policy(struct ctx *c, struct json_object *root, struct dmsc_policy *out)
{
	struct seen seen = {0};
	struct json_object *v;
	char p[PATH_LEN];
	size_t i, n;

	if (expect(c, "", root, json_type_object))
		return;
	check_fields(c, root, "", policy_fields);
	if (member(c, root, "", "services", true, p, &v) || expect(c, p, v, json_type_array))
		return;
	n = json_object_array_length(v);
	out->services = alloc_array(c, n, sizeof(*out->services));
	seen.names = json_object_new_object();
	seen.keys = json_object_new_object();
	if (!out->services || !seen.names || !seen.keys) {
		c->err = -ENOMEM;
		goto cleanup;
	}
	out->n_services = n;
	for (i = 0; i < n && !c->err; i++) {
		char sp[PATH_LEN];

		path_index(sp, p, i);
		parse_service(c, sp, json_object_array_get_idx(v, i), out, i, &seen);
	}
cleanup:
	json_object_put(seen.names);
	json_object_put(seen.keys);
}

static void report_syntax(struct ctx *c, const char *text, size_t pos, const char *what)
{
	unsigned long line = 1, column = 1;
	size_t i;

	/* Columns count characters, not the bytes of UTF-8 sequences. */
	for (i = 0; i < pos; i++) {
		if (text[i] == '\n') {
			line++;
			column = 1;
		} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
			column++;
		}
	}
	report(c, "", "line %lu, column %lu: JSON syntax error: %s", line, column, what);
}

static int tokenize(struct ctx *c, const char *text, size_t len, struct json_object **root)
{
	enum json_tokener_error jerr;
	struct json_tokener *tok;
	const char *nul;
	size_t pos;

	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	*root = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	pos = json_tokener_get_parse_end(tok);
	if (!*root && jerr == json_tokener_continue) {
		/* The input ended inside a value. A number at the very end
		 * is complete only once the tokener sees what follows it:
		 * a NUL says that nothing does. */
		*root = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
		pos = len;
	}
	json_tokener_free(tok);
	/* json-c stops at a NUL byte, even inside a string, and calls what it
	 * has so far a complete document. */
	nul = memchr(text, '\0', len);
	if (nul && pos >= (size_t)(nul - text)) {
		json_object_put(*root);
		*root = NULL;
		report_syntax(c, text, nul - text, "unexpected NUL byte");
		return -EINVAL;
	}
	if (jerr != json_tokener_success) {
		report_syntax(c, text, pos, json_tokener_error_desc(jerr));
		return -EINVAL;
	}
	/* Strict mode reports anything but white space after the document;
	 * should a json-c version stop early instead, say so too. */
	if (pos < len) {
		json_object_put(*root);
		*root = NULL;
		report_syntax(c, text, pos, "unexpected character");
		return -EINVAL;
	}
	return 0;
}

static void begin(struct dmsc_policy *out, struct dmsc_policy_errors *errs)
{
	memset(out, 0, sizeof(*out));
	errs->count = 0;
}

int dmsc_policy_parse(const char *text, size_t len, const char *source, struct dmsc_policy *out,
		      struct dmsc_policy_errors *errs)
{
	struct json_object *root = NULL;
	struct ctx c = {.errs = errs};
	int err;

	/* Callers print the source before each error; see policy.h. */
	(void)source;
	begin(out, errs);
	if (len > DMSC_POLICY_FILE_MAX) {
		report(&c, "", "the document is larger than %u MiB", DMSC_POLICY_FILE_MAX >> 20);
		goto cleanup;
	}
	err = tokenize(&c, text ? text : "", len, &root);
	if (err == -ENOMEM)
		c.err = err;
	else if (!err)
		parse_policy(&c, root, out);
	json_object_put(root);
	if (c.dropped && !c.err)
		c.err = errors_add(errs, "", "%zu more errors not shown", c.dropped);
cleanup:
	if (c.err)
		err = c.err;
	else
		err = errs->count ? -EINVAL : 0;
	if (err)
		dmsc_policy_free(out);
	return err;
}

static int read_fd(int fd, char **out, size_t *out_len)
{
	size_t cap = 0, len = 0, want = READ_CHUNK;
	char *buf = NULL, *bigger;
	struct stat st;
	ssize_t n;
	int err = 0;

	if (!fstat(fd, &st) && S_ISREG(st.st_mode)) {
		if ((uint64_t)st.st_size > DMSC_POLICY_FILE_MAX)
			return -EFBIG;
		/* One byte more, so the read that sees the end needs no
		 * second buffer. */
		want = st.st_size + 1;
	}
	for (;;) {
		if (len == cap) {
			if (cap > DMSC_POLICY_FILE_MAX) {
				err = -EFBIG;
				goto cleanup;
			}
			cap = cap ? cap * 2 : want;
			if (cap > DMSC_POLICY_FILE_MAX + 1)
				cap = DMSC_POLICY_FILE_MAX + 1;
			bigger = realloc(buf, cap);
			if (!bigger) {
				err = -ENOMEM;
				goto cleanup;
			}
			buf = bigger;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = -errno;
			goto cleanup;
		}
		if (n == 0)
			break;
		len += n;
	}
	*out = buf;
	*out_len = len;
	buf = NULL;
cleanup:
	free(buf);
	return err;
}

int dmsc_policy_load_file(const char *file, struct dmsc_policy *out,
			  struct dmsc_policy_errors *errs)
{
	bool use_stdin = !strcmp(file, "-");
	const char *failed = "cannot read";
	char *text = NULL;
	size_t len = 0;
	int fd, err;

	begin(out, errs);
	fd = use_stdin ? STDIN_FILENO : open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		failed = "cannot open";
		goto cleanup;
	}
	err = read_fd(fd, &text, &len);
	if (err)
		goto cleanup;
	err = dmsc_policy_parse(text, len, use_stdin ? "<stdin>" : file, out, errs);
	/* The document's own errors are recorded already. */
	failed = NULL;
cleanup:
	if (err && err != -ENOMEM && failed) {
		int add_err;

		if (err == -EFBIG)
			add_err = errors_add(errs, "", "the file is larger than %u MiB",
					     DMSC_POLICY_FILE_MAX >> 20);
		else
			add_err = errors_add(errs, "", "%s: %s", failed, strerror(-err));
		if (add_err)
			err = add_err;
	}
	free(text);
	if (fd >= 0 && !use_stdin)
		close(fd);
	return err;
}

static void labels_free(struct dmsc_label *l, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(l[i].key);
		free(l[i].value);
	}
	free(l);
}

static void service_free(struct dmsc_policy_service *s)
{
	size_t i;

	free(s->name);
	for (i = 0; i < s->n_backends; i++)
		labels_free(s->backends[i].labels, s->backends[i].n_labels);
	free(s->backends);
	for (i = 0; i < s->n_allow_from; i++)
		free(s->allow_from[i]);
	free(s->allow_from);
	for (i = 0; i < s->n_routes; i++) {
		struct dmsc_route *r = &s->routes[i];

		free(r->match.path_prefix);
		free(r->match.path);
		free(r->match.method);
		labels_free(r->match.headers, r->match.n_headers);
		labels_free(r->selector, r->n_selector);
	}
	free(s->routes);
}

void dmsc_policy_free(struct dmsc_policy *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < p->n_services; i++)
		service_free(&p->services[i]);
	free(p->services);
	memset(p, 0, sizeof(*p));
}

void dmsc_policy_errors_free(struct dmsc_policy_errors *errs)
{
	if (!errs)
		return;
	free(errs->items);
	memset(errs, 0, sizeof(*errs));
}

void dmsc_policy_error_format(const struct dmsc_policy_error *e, char *buf, size_t len)
{
	if (!len)
		return;
	if (e->path[0])
		snprintf(buf, len, "%s: %s", e->path, e->message);
	else
		snprintf(buf, len, "%s", e->message);
}

const char *dmsc_policy_unsupported(const struct dmsc_policy *p, char *buf, size_t len)
{
	/* A field that a build parses but cannot enforce is named here, with
	 * its path, so that apply refuses it instead of pretending. IPv6
	 * services (docs/design.md decision 27) have everything but the
	 * byte limits (the cgroup_skb and TC programs police IPv4 packets)
	 * and http (dmsc-l7 listens on IPv4). */
	const struct dmsc_policy_service *s;
	size_t i;

	for (i = 0; i < p->n_services; i++) {
		s = &p->services[i];
		if (s->family != AF_INET6)
			continue;
		if (s->protocol == DMSC_POLICY_HTTP) {
			snprintf(buf, len, "services[%zu].protocol: http over IPv6 is not "
				 "enforced by this build (dmsc-l7 listens on IPv4)", i);
			return buf;
		}
		if (s->has_rate_limit && s->rate_limit.has_bytes_per_second) {
			snprintf(buf, len, "services[%zu].rate_limit.bytes_per_second: byte limits "
				 "over IPv6 are not enforced by this build", i);
			return buf;
		}
	}
	return NULL;
}

const char *dmsc_policy_proto_name(enum dmsc_policy_proto p)
{
	if ((size_t)p >= sizeof(proto_names) / sizeof(proto_names[0]) - 1)
		return "unknown";
	return proto_names[p];
}
