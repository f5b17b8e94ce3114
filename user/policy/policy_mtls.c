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

/* "198.18.13.2:15008": an IPv4 address and a port, both required. */
static int parse_host_addr(struct ctx *c, const char *path, const char *s, size_t len,
			   uint32_t *addr, uint16_t *port)
{
	char buf[64], q[QUOTED_LEN], *colon, *end;
	struct in_addr a;
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
	if (inet_pton(AF_INET, buf, &a) != 1)
		goto bad;
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end || errno || p < 1 || p > 65535)
		goto bad;
	if (a.s_addr == htonl(INADDR_ANY) || (ntohl(a.s_addr) >> 28) == 14) {
		report(c, path, "%s: the tunnel address must be a unicast address of the host", q);
		return -EINVAL;
	}
	*addr = a.s_addr;
	*port = (uint16_t)p;
	return 0;
bad:
	report(c, path,
	       "%s is not the address of a host's tunnel: write IPv4ADDRESS:PORT, e.g. "
	       "\"198.18.13.2:15008\"",
	       q);
	return -EINVAL;
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
	c->host_addr = alloc_array(c, n ? n : 1, sizeof(*c->host_addr));
	c->host_port = alloc_array(c, n ? n : 1, sizeof(*c->host_port));
	if (!c->hosts || !c->host_addr || !c->host_port) {
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
		    parse_host_addr(c, p, s, len, &c->host_addr[i], &c->host_port[i])) {
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

int dmsc_policy_host_entry(const char *name, const char *value, size_t len, uint32_t *addr,
			   uint16_t *port, char *why, size_t why_len)
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
	if (parse_host_addr(&c, "", value, len, addr, port)) {
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
	free(c->host_addr);
	free(c->host_port);
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
	be->host_addr = c->host_addr[i];
	be->host_port = c->host_port[i];
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
