// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The policy parser's JSON readers: errors recorded with their JSON path,
 * values quoted in messages, and one reader per kind of value (string,
 * integer in a range, enum, IPv4 address, name, string-to-string map).
 */
#define _GNU_SOURCE
#include "array.h"
#include "policy_parse.h"


static int errors_vadd(struct dmsc_policy_errors *errs, const char *path, const char *fmt,
		       va_list ap)
{
	struct dmsc_policy_error *e;

	e = dmsc_array_room(errs->items, errs->count, &errs->cap, sizeof(*e), 16);
	if (!e)
		return -ENOMEM;
	errs->items = e;
	e = &errs->items[errs->count++];
	snprintf(e->path, sizeof(e->path), "%s", path);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	return 0;
}

__attribute__((format(printf, 3, 4))) int errors_add(struct dmsc_policy_errors *errs,
							    const char *path, const char *fmt, ...)
{
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = errors_vadd(errs, path, fmt, ap);
	va_end(ap);
	return err;
}

__attribute__((format(printf, 3, 4))) void report(struct ctx *c, const char *path,
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

void *alloc_array(struct ctx *c, size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p && !c->err)
		c->err = -ENOMEM;
	return p;
}

int alloc_json_array(struct ctx *c, const char *path, struct json_object *v, size_t size,
		     void **out, size_t *n)
{
	*n = 0;
	if (expect(c, path, v, json_type_array))
		return -EINVAL;
	*out = alloc_array(c, json_object_array_length(v), size);
	if (!*out)
		return -ENOMEM;
	*n = json_object_array_length(v);
	return 0;
}

char *dup_str(struct ctx *c, const char *s)
{
	char *d = strdup(s);

	if (!d && !c->err)
		c->err = -ENOMEM;
	return d;
}

/* Writes s as a JSON string literal, cut at a character boundary after
 * QUOTE_MAX bytes and marked with "...". */
void quote(char *dst, size_t size, const char *s, size_t len)
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

void quote_str(char *dst, size_t size, const char *s)
{
	quote(dst, size, s, strlen(s));
}

/* Names a JSON value for "expected X, got Y". */
void describe(char *dst, size_t size, struct json_object *v)
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
	case json_type_boolean:
		return "a boolean";
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
void path_key(char *dst, const char *parent, const char *key)
{
	char q[QUOTED_LEN];

	if (plain_key(key)) {
		path_fmt(dst, "%s%s%s", parent, *parent ? "." : "", key);
		return;
	}
	quote_str(q, sizeof(q), key);
	path_fmt(dst, "%s[%s]", parent, q);
}

void path_index(char *dst, const char *parent, size_t i)
{
	path_fmt(dst, "%s[%zu]", parent, i);
}

int expect(struct ctx *c, const char *path, struct json_object *v, enum json_type t)
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
int check_fields(struct ctx *c, struct json_object *obj, const char *path,
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
int member(struct ctx *c, struct json_object *obj, const char *parent, const char *key,
		  bool required, char *path, struct json_object **v)
{
	path_key(path, parent, key);
	if (json_object_object_get_ex(obj, key, v))
		return 0;
	if (required)
		report(c, path, "required field is missing");
	return -ENOENT;
}

int parse_string(struct ctx *c, const char *path, struct json_object *v, const char **s,
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

int parse_int(struct ctx *c, const char *path, struct json_object *v,
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
int int_member(struct ctx *c, struct json_object *obj, const char *parent, const char *key,
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

int object_fields(struct ctx *c, const char *path, struct json_object *v,
		  const char *const *allowed, int *err)
{
	if (expect(c, path, v, json_type_object))
		return -EINVAL;
	if (check_fields(c, v, path, allowed))
		*err = -EINVAL;
	return 0;
}

int u64_member(struct ctx *c, struct json_object *obj, const char *parent, const char *key,
	       const struct int_rule *r, uint64_t def, uint64_t *out, bool *present)
{
	int64_t i = 0;
	bool here;
	int err = int_member(c, obj, parent, key, r, &i, &here);

	*out = here ? (uint64_t)i : def;
	if (present)
		*present = here;
	return err;
}

int u32_member(struct ctx *c, struct json_object *obj, const char *parent, const char *key,
	       const struct int_rule *r, uint32_t def, uint32_t *out, bool *present)
{
	uint64_t v;
	int err = u64_member(c, obj, parent, key, r, def, &v, present);

	*out = (uint32_t)v; /* the rule's range fits 32 bits */
	return err;
}

int parse_enum(struct ctx *c, const char *path, struct json_object *v,
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
int parse_ip(struct ctx *c, const char *path, struct json_object *v, const char *role,
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

int parse_name(struct ctx *c, const char *path, struct json_object *v, char **out)
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

int check_token(struct ctx *c, const char *path, const char *s, size_t len, const char *what)
{
	char q[QUOTED_LEN];

	if (len && strspn(s, TOKEN_CHARS) == len)
		return 0;
	quote(q, sizeof(q), s, len);
	report(c, path, "%s is not a valid %s (letters, digits and !#$%%&'*+-.^_`|~)", q, what);
	return -EINVAL;
}

static int check_map_key(struct ctx *c, const char *path, const char *key, const struct map_rule *r)
{
	size_t len = strlen(key);

	if (!r->key_max)
		return check_token(c, path, key, len, r->key_what);
	if (len >= 1 && len <= r->key_max)
		return 0;
	report(c, path, "a %s must be 1 to %zu bytes long, not %zu", r->key_what, r->key_max, len);
	return -EINVAL;
}

/* A JSON object of strings: labels, a label selector, HTTP headers. */
int parse_string_map(struct ctx *c, const char *path, struct json_object *v,
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
