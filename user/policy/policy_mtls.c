// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The policy parser's mutual TLS fields (docs/design.md decision 24): the
 * document's "mtls" default and "hosts" table, a service's "mtls", a
 * backend's "host". A backend's host is resolved here into its host's
 * tunnel address, so the services of a policy directory carry what they
 * need without the table of the file they came from.
 */
#define _GNU_SOURCE
#include "policy_parse.h"

/* A lowercase DNS name: labels of a-z 0-9 '-', 1 to 63 each, no '-' at
 * either end; NULL when it is one, else why not. */
static const char *host_name_why(const char *s, size_t len)
{
	size_t i, label = 0;

	if (!len)
		return "it is empty";
	if (len > DMSC_POLICY_HOST_MAX)
		return "it is longer than 253 characters";
	for (i = 0; i <= len; i++) {
		char ch = i < len ? s[i] : '.';

		if (ch == '.') {
			if (!label)
				return "it has an empty label";
			if (s[i - 1] == '-' || s[i - label] == '-')
				return "a label starts or ends with \"-\"";
			label = 0;
			continue;
		}
		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
			return "only a-z, 0-9, \"-\" and \".\" are allowed (a host certificate's "
			       "lowercase name)";
		if (++label > 63)
			return "a label is longer than 63 characters";
	}
	return NULL;
}

/* "198.18.13.2:15008" or "[2001:2::2]:15008": an address and a port,
 * both required (docs/design.md decision 64: IPv6 too). */
static int parse_host_addr(struct ctx *c, const char *path, const char *s, size_t len,
			   struct dmsc_host_addr *at)
{
	char buf[64], q[QUOTED_LEN], *colon, *end, *host;
	struct in6_addr a6 = IN6ADDR_ANY_INIT;
	struct in_addr a = {0};
	unsigned long p;

	quote(q, sizeof(q), s, len);
	if (len >= sizeof(buf))
		goto bad;
	memcpy(buf, s, len);
	buf[len] = '\0';
	colon = strrchr(buf, ':');
	if (!colon)
		goto bad;
	*colon = '\0';
	host = buf;
	memset(at, 0, sizeof(*at));
	if (buf[0] == '[') {
		if (colon == buf + 1 || colon[-1] != ']')
			goto bad;
		colon[-1] = '\0';
		host = buf + 1;
		if (inet_pton(AF_INET6, host, &a6) != 1)
			goto bad;
		at->family = AF_INET6;
		memcpy(at->v6, &a6, 16);
	} else if (inet_pton(AF_INET, host, &a) == 1) {
		at->family = AF_INET;
		at->v4 = a.s_addr;
	} else {
		goto bad;
	}
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end || errno || p < 1 || p > 65535)
		goto bad;
	if (at->family == AF_INET
		? a.s_addr == htonl(INADDR_ANY) || (ntohl(a.s_addr) >> 28) == 14
		: IN6_IS_ADDR_UNSPECIFIED(&a6) || IN6_IS_ADDR_MULTICAST(&a6) ||
		      IN6_IS_ADDR_V4MAPPED(&a6)) {
		report(c, path, "%s: the tunnel address must be a unicast address of the host%s", q,
		       at->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a6)
			   ? " (an IPv4 one written as IPv4)"
			   : "");
		memset(at, 0, sizeof(*at));
		return -EINVAL;
	}
	at->port = (uint16_t)p;
	return 0;
bad:
	memset(at, 0, sizeof(*at));
	report(c, path,
	       "%s is not the address of a host's tunnel: write IPv4ADDRESS:PORT or "
	       "[IPv6ADDRESS]:PORT, e.g. \"198.18.13.2:15008\", \"[2001:2::2]:15008\"",
	       q);
	return -EINVAL;
}

void dmsc_host_addr_format(const struct dmsc_host_addr *at, char *buf, size_t len)
{
	if (!at->family) {
		if (len)
			buf[0] = '\0';
		return;
	}
	dmsc_format_ip_port(at->family, at->v4, at->v6, at->port, buf, len);
}

bool dmsc_host_addr_eq(const struct dmsc_host_addr *a, const struct dmsc_host_addr *b)
{
	return a->family == b->family && a->port == b->port &&
	       (a->family == AF_INET6 ? !memcmp(a->v6, b->v6, 16) : a->v4 == b->v4);
}

static void parse_hosts(struct ctx *c, const char *path, struct json_object *v)
{
	struct json_object_iterator it, end;
	char p[PATH_LEN], q[QUOTED_LEN];
	const char *why, *s;
	size_t n, i = 0, len;
	bool ok = true;

	if (expect(c, path, v, json_type_object))
		return;
	n = (size_t)json_object_object_length(v);
	c->hosts = json_object_new_object();
	c->host_at = alloc_array(c, n ? n : 1, sizeof(*c->host_at));
	if (!c->hosts || !c->host_at) {
		c->err = -ENOMEM;
		return;
	}
	it = json_object_iter_begin(v);
	end = json_object_iter_end(v);
	for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it), i++) {
		const char *name = json_object_iter_peek_name(&it);

		path_key(p, path, name);
		why = host_name_why(name, strlen(name));
		if (why) {
			quote_str(q, sizeof(q), name);
			report(c, p, "%s is not a host name: %s", q, why);
			ok = false;
			continue;
		}
		if (parse_string(c, p, json_object_iter_peek_value(&it), &s, &len) ||
		    parse_host_addr(c, p, s, len, &c->host_at[i])) {
			ok = false;
			continue;
		}
		if (json_object_object_add(c->hosts, name, json_object_new_int64((int64_t)i))) {
			c->err = -ENOMEM;
			return;
		}
	}
	c->hosts_ok = ok;
}

int dmsc_policy_host_entry(const char *name, const char *value, size_t len,
			   struct dmsc_host_addr *at, char *why, size_t why_len)
{
	struct dmsc_policy_errors errs = {0};
	struct ctx c = {.errs = &errs};
	char q[QUOTED_LEN];
	const char *bad = host_name_why(name, strlen(name));
	int e = 0;

	if (bad) {
		quote(q, sizeof(q), name, strlen(name));
		snprintf(why, why_len, "%s is not a host name: %s", q, bad);
		return -EINVAL;
	}
	if (parse_host_addr(&c, "", value, len, at)) {
		e = c.err ? c.err : -EINVAL;
		snprintf(why, why_len, "%s", errs.count ? errs.items[0].message : strerror(-e));
	}
	dmsc_policy_errors_free(&errs);
	return e;
}

void parse_mtls_top(struct ctx *c, struct json_object *root)
{
	struct json_object *f;
	char p[PATH_LEN];
	int e;

	c->mtls = DMSC_MTLS_OFF;
	c->hosts_ok = true;
	if (!member(c, root, "", "mtls", false, p, &f) &&
	    !parse_enum(c, p, f, mtls_names, "an mtls mode", &e))
		c->mtls = e;
	if (!member(c, root, "", "hosts", false, p, &f))
		parse_hosts(c, p, f);
}

void ctx_mtls_free(struct ctx *c)
{
	json_object_put(c->hosts);
	free(c->host_at);
	c->hosts = NULL;
	c->host_at = NULL;
}

int parse_backend_host(struct ctx *c, const char *path, struct json_object *v,
		       struct dmsc_policy_backend *be)
{
	struct json_object *idx;
	char q[QUOTED_LEN];
	const char *s, *why;
	size_t len;
	int64_t i;

	if (parse_string(c, path, v, &s, &len))
		return -EINVAL;
	quote(q, sizeof(q), s, len);
	why = host_name_why(s, len);
	if (why) {
		report(c, path, "%s is not a host name: %s", q, why);
		return -EINVAL;
	}
	/* A broken "hosts" was reported already: a name missing from it
	 * might be one of its broken entries. */
	if (!c->hosts && c->hosts_elsewhere) {
		be->host = dup_str(c, s);
		return be->host ? 0 : -ENOMEM;
	}
	if (!c->hosts || !json_object_object_get_ex(c->hosts, s, &idx)) {
		if (c->hosts_ok)
			report(c, path,
			       "%s is not in the top-level \"hosts\" (the address of each "
			       "host's tunnel)",
			       q);
		return -EINVAL;
	}
	i = json_object_get_int64(idx);
	be->host_at = c->host_at[i];
	be->host = dup_str(c, s);
	return be->host ? 0 : -ENOMEM;
}

/* The tunnel carries TCP streams: a udp service cannot ask for it. The
 * document's default applies to the services it can apply to. */
void parse_service_mtls(struct ctx *c, const char *path, struct json_object *v,
			struct dmsc_policy_service *svc, bool proto_ok)
{
	struct json_object *f;
	char p[PATH_LEN];
	int e;

	svc->mtls = svc->protocol == DMSC_POLICY_UDP ? DMSC_MTLS_OFF : c->mtls;
	if (member(c, v, path, "mtls", false, p, &f) ||
	    parse_enum(c, p, f, mtls_names, "an mtls mode", &e))
		return;
	svc->mtls = e;
	if (proto_ok && e != DMSC_MTLS_OFF && svc->protocol == DMSC_POLICY_UDP) {
		report(c, p,
		       "\"%s\" needs protocol \"tcp\" or \"http\": the tunnel between "
		       "hosts carries TCP streams (this service's protocol is \"udp\")",
		       mtls_names[e]);
		svc->mtls = DMSC_MTLS_OFF;
	}
}

const char *dmsc_mtls_mode_name(enum dmsc_mtls_mode m)
{
	if ((size_t)m >= sizeof(mtls_names) / sizeof(mtls_names[0]) - 1)
		return "unknown";
	return mtls_names[m];
}
