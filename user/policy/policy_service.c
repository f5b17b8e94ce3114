// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The policy parser's service walk: allow_from, rate_limit, backends,
 * routes (match, label selector), one service, and the whole document with
 * its uniqueness checks.
 */
#define _GNU_SOURCE
#include "policy_parse.h"

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

	err = alloc_json_array(c, path, v, sizeof(*svc->allow_from), (void **)&svc->allow_from,
			       &svc->n_allow_from);
	if (err)
		return err;
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

/* "affinity": "none" | "client" | {"header": NAME} | {"cookie": NAME}
 * (docs/design.md decisions 97 and 98). */
static int parse_affinity(struct ctx *c, const char *path, struct json_object *v,
			  struct dmsc_policy_service *svc, bool proto_ok)
{
	char p[PATH_LEN], q[QUOTED_LEN], got[QUOTED_LEN + 16];
	struct json_object *f;
	const char *s;
	size_t len, i, n = 0;
	int err = 0;

	if (json_object_is_type(v, json_type_string)) {
		if (parse_string(c, path, v, &s, &len))
			return -EINVAL;
		for (i = 0; affinity_names[i]; i++) {
			if (!strcmp(s, affinity_names[i])) {
				svc->affinity = (enum dmsc_affinity)i;
				return 0;
			}
		}
		quote(q, sizeof(q), s, len);
		report(c, path,
		       "%s is not an affinity (none, client, {\"header\": NAME} or "
		       "{\"cookie\": NAME})",
		       q);
		return -EINVAL;
	}
	if (!json_object_is_type(v, json_type_object)) {
		describe(got, sizeof(got), v);
		report(c, path, "expected a string or an object, got %s", got);
		return -EINVAL;
	}
	/* the kernel sees no header: only dmsc-l7 can keep such a promise */
	if (http_only(c, path, svc, proto_ok))
		return -EINVAL;
	if (check_fields(c, v, path, affinity_fields))
		err = -EINVAL;
	for (i = 0; affinity_fields[i]; i++) {
		if (member(c, v, path, affinity_fields[i], false, p, &f))
			continue;
		if (n++ || parse_string(c, p, f, &s, &len))
			continue;
		if (check_token(c, p, s, len, i ? "cookie name" : "header name")) {
			err = -EINVAL;
			continue;
		}
		svc->affinity = (enum dmsc_affinity)(DMSC_AFFINITY_HEADER + i);
		svc->affinity_name = dup_str(c, s);
		/* header names are case-insensitive (RFC 9110, 5.1): one form */
		for (len = 0; i == 0 && svc->affinity_name && svc->affinity_name[len]; len++)
			svc->affinity_name[len] =
			    (char)tolower((unsigned char)svc->affinity_name[len]);
	}
	if (n != 1) {
		report(c, path,
		       "%s: name one header or one cookie, as {\"header\": \"x-user\"} or "
		       "{\"cookie\": \"session\"}",
		       n ? "both a header and a cookie" : "nothing to hash");
		err = -EINVAL;
	}
	return err;
}

static int parse_rate_limit(struct ctx *c, const char *path, struct json_object *v,
			    struct dmsc_policy_service *svc, bool proto_ok)
{
	struct dmsc_rate_limit *rl = &svc->rate_limit;
	char p[PATH_LEN];
	int err = 0;

	if (object_fields(c, path, v, rate_limit_fields, &err))
		return -EINVAL;
	svc->has_rate_limit = true;
	if (u64_member(c, v, path, "connections_per_second", &rate_rule, 0,
		       &rl->connections_per_second, &rl->has_connections_per_second))
		err = -EINVAL;
	if (u64_member(c, v, path, "burst", &burst_rule, 0, &rl->burst, &rl->has_burst))
		err = -EINVAL;
	if (u64_member(c, v, path, "bytes_per_second", &rate_rule, 0, &rl->bytes_per_second,
		       &rl->has_bytes_per_second))
		err = -EINVAL;
	if (u64_member(c, v, path, "bytes_burst", &bytes_burst_rule, 0, &rl->bytes_burst,
		       &rl->has_bytes_burst))
		err = -EINVAL;
	if (json_object_object_get_ex(v, "bytes_burst", NULL) &&
	    !json_object_object_get_ex(v, "bytes_per_second", NULL)) {
		path_key(p, path, "bytes_burst");
		report(c, p, "a byte burst needs bytes_per_second");
		err = -EINVAL;
	}
	if (u64_member(c, v, path, "requests_per_second", &rate_rule, 0, &rl->requests_per_second,
		       &rl->has_requests_per_second))
		err = -EINVAL;

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
	if (object_fields(c, path, v, backend_fields, &err))
		return -EINVAL;
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
	if (!member(c, v, path, "host", false, p, &f) && parse_backend_host(c, p, f, be))
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

int parse_url_path(struct ctx *c, const char *path, struct json_object *v, char **out)
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

	if (object_fields(c, path, v, match_fields, &err))
		return -EINVAL;
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
	int err = 0;

	if (object_fields(c, path, v, route_fields, &err))
		return -EINVAL;
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
	if (u32_member(c, v, path, "timeout_ms", &timeout_rule, 0, &r->timeout_ms,
		       &r->has_timeout_ms))
		err = -EINVAL;
	if (u32_member(c, v, path, "retries", &retries_rule, 0, &r->retries, &r->has_retries))
		err = -EINVAL;
	if (!member(c, v, path, "idempotent", false, p, &f)) {
		if (expect(c, p, f, json_type_boolean))
			err = -EINVAL;
		else
			r->idempotent = json_object_get_boolean(f);
	}
	return err;
}

static int parse_routes(struct ctx *c, const char *path, struct json_object *v,
			struct dmsc_policy_service *svc, bool proto_ok, bool backends_ok)
{
	char p[PATH_LEN];
	int err, e;
	size_t i;

	err = http_only(c, path, svc, proto_ok);
	e = alloc_json_array(c, path, v, sizeof(*svc->routes), (void **)&svc->routes,
			     &svc->n_routes);
	if (e)
		return e;
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
	if (!member(c, v, path, "affinity", false, p, &f))
		parse_affinity(c, p, f, svc, proto_ok);
	if (!member(c, v, path, "routes", false, p, &f))
		parse_routes(c, p, f, svc, proto_ok, backends_ok);
	if (!member(c, v, path, "health", false, p, &f))
		parse_health(c, p, f, svc, proto_ok);
	parse_service_mtls(c, path, v, svc, proto_ok);
}

void parse_policy(struct ctx *c, struct json_object *root, struct dmsc_policy *out)
{
	struct seen seen = {0};
	struct json_object *v;
	char p[PATH_LEN];
	size_t i, n;

	if (expect(c, "", root, json_type_object))
		return;
	check_fields(c, root, "", policy_fields);
	parse_mtls_top(c, root);
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
