// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A service's `health` object (docs/policy.md "health"): active probes and
 * passive ejection, each field defaulted and bounded (policy.h).
 */
#include "policy_parse.h"

static const char *const health_fields[] = {"active", "passive", NULL};
static const char *const active_fields[] = {"type",
					    "path",
					    "expected_status",
					    "interval_ms",
					    "timeout_ms",
					    "unhealthy_threshold",
					    "healthy_threshold",
					    NULL};
static const char *const passive_fields[] = {"consecutive_failures", "base_ejection_ms",
					     "max_ejection_ms", "max_ejection_percent", NULL};
static const char *const probe_names[] = {
    [DMSC_PROBE_TCP] = "tcp",
    [DMSC_PROBE_HTTP] = "http",
    NULL,
};
static const struct int_rule interval_rule = {
    DMSC_HEALTH_INTERVAL_MS_MIN, DMSC_HEALTH_INTERVAL_MS_MAX, "a probe interval in ms"};
static const struct int_rule probe_timeout_rule = {
    DMSC_HEALTH_TIMEOUT_MS_MIN, DMSC_HEALTH_INTERVAL_MS_MAX, "a probe timeout in ms"};
static const struct int_rule threshold_rule = {1, DMSC_HEALTH_THRESHOLD_MAX, "a threshold"};
static const struct int_rule status_rule = {100, 599, "an HTTP status"};
static const struct int_rule failures_rule = {1, DMSC_HEALTH_FAILURES_MAX, "a failure count"};
static const struct int_rule percent_rule = {1, 100, "a percentage of the backends"};
static const struct int_rule ejection_rule = {
    DMSC_HEALTH_EJECTION_MS_MIN, DMSC_HEALTH_EJECTION_MS_MAX, "an ejection time in ms"};

/* The request target of an HTTP probe: it goes into the request line as it
 * is, so it is printable ASCII without spaces. */
static int parse_probe_path(struct ctx *c, const char *path, struct json_object *v, char **out)
{
	char q[QUOTED_LEN];
	const char *s;
	size_t len, i;

	if (parse_url_path(c, path, v, out))
		return -EINVAL;
	s = *out;
	len = strlen(s);
	for (i = 0; i < len && s[i] > ' ' && s[i] < 0x7f; i++)
		;
	if (i < len || len > DMSC_HEALTH_PATH_MAX) {
		quote(q, sizeof(q), s, len);
		report(c, path,
		       "%s is not a request path (printable ASCII without spaces, at most %d)", q,
		       DMSC_HEALTH_PATH_MAX);
		return -EINVAL;
	}
	return 0;
}

static int parse_active(struct ctx *c, const char *path, struct json_object *v,
			struct dmsc_health_active *a)
{
	struct json_object *f;
	char p[PATH_LEN];
	bool ok = true, type_ok = false, http = false;
	int e;

	if (expect(c, path, v, json_type_object))
		return -EINVAL;
	if (check_fields(c, v, path, active_fields))
		ok = false;
	if (member(c, v, path, "type", true, p, &f) ||
	    parse_enum(c, p, f, probe_names, "a probe type", &e)) {
		ok = false;
	} else {
		a->type = e;
		type_ok = true;
	}
	/* A type that is not valid was reported: its other fields are not
	 * checked against it. */
	http = type_ok && a->type == DMSC_PROBE_HTTP;
	if (!member(c, v, path, "path", false, p, &f)) {
		if (type_ok && !http) {
			report(c, p, "only allowed when type is \"http\"");
			ok = false;
		} else if (parse_probe_path(c, p, f, &a->path)) {
			ok = false;
		}
	} else if (http) {
		report(c, p, "required field is missing");
		ok = false;
	}
	if (u32_member(c, v, path, "expected_status", &status_rule,
		       DMSC_HEALTH_EXPECTED_STATUS_DEFAULT, &a->expected_status, NULL))
		ok = false;
	else if (type_ok && !http && json_object_object_get_ex(v, "expected_status", NULL)) {
		path_key(p, path, "expected_status");
		report(c, p, "only allowed when type is \"http\"");
		ok = false;
	}
	if (u32_member(c, v, path, "interval_ms", &interval_rule, DMSC_HEALTH_INTERVAL_MS_DEFAULT,
		       &a->interval_ms, NULL) ||
	    u32_member(c, v, path, "timeout_ms", &probe_timeout_rule,
		       DMSC_HEALTH_TIMEOUT_MS_DEFAULT, &a->timeout_ms, NULL) ||
	    u32_member(c, v, path, "unhealthy_threshold", &threshold_rule,
		       DMSC_HEALTH_UNHEALTHY_THRESHOLD_DEFAULT, &a->unhealthy_threshold, NULL) ||
	    u32_member(c, v, path, "healthy_threshold", &threshold_rule,
		       DMSC_HEALTH_HEALTHY_THRESHOLD_DEFAULT, &a->healthy_threshold, NULL))
		ok = false;
	else if (a->timeout_ms > a->interval_ms) {
		path_key(p, path, "timeout_ms");
		report(c, p, "%u is longer than interval_ms (%u): a probe must end before the next",
		       a->timeout_ms, a->interval_ms);
		ok = false;
	}
	return ok ? 0 : -EINVAL;
}

static int parse_passive(struct ctx *c, const char *path, struct json_object *v,
			 struct dmsc_health_passive *pa)
{
	char p[PATH_LEN];
	bool ok = true;

	if (expect(c, path, v, json_type_object))
		return -EINVAL;
	if (check_fields(c, v, path, passive_fields))
		ok = false;
	if (u32_member(c, v, path, "consecutive_failures", &failures_rule,
		       DMSC_HEALTH_CONSECUTIVE_FAILURES_DEFAULT, &pa->consecutive_failures, NULL))
		ok = false;
	if (u32_member(c, v, path, "max_ejection_percent", &percent_rule,
		       DMSC_HEALTH_MAX_EJECTION_PERCENT_DEFAULT, &pa->max_ejection_percent, NULL))
		ok = false;
	if (u32_member(c, v, path, "base_ejection_ms", &ejection_rule,
		       DMSC_HEALTH_BASE_EJECTION_MS_DEFAULT, &pa->base_ejection_ms, NULL) ||
	    u32_member(c, v, path, "max_ejection_ms", &ejection_rule,
		       DMSC_HEALTH_MAX_EJECTION_MS_DEFAULT, &pa->max_ejection_ms, NULL))
		ok = false;
	else if (pa->max_ejection_ms < pa->base_ejection_ms) {
		path_key(p, path, "max_ejection_ms");
		report(c, p, "%u is shorter than base_ejection_ms (%u)", pa->max_ejection_ms,
		       pa->base_ejection_ms);
		ok = false;
	}
	return ok ? 0 : -EINVAL;
}

int parse_health(struct ctx *c, const char *path, struct json_object *v,
		 struct dmsc_policy_service *svc, bool proto_ok)
{
	struct dmsc_health *h = &svc->health;
	struct json_object *f;
	char p[PATH_LEN];
	int err = 0;

	if (object_fields(c, path, v, health_fields, &err))
		return -EINVAL;
	svc->has_health = true;
	if (proto_ok && svc->protocol == DMSC_POLICY_UDP) {
		report(c, path,
		       "not for protocol \"udp\": there is no connection to probe or to see fail");
		err = -EINVAL;
	}
	if (!member(c, v, path, "active", false, p, &f)) {
		h->has_active = true;
		if (parse_active(c, p, f, &h->active))
			err = -EINVAL;
	}
	if (!member(c, v, path, "passive", false, p, &f)) {
		h->has_passive = true;
		if (parse_passive(c, p, f, &h->passive))
			err = -EINVAL;
	}
	if (!h->has_active && !h->has_passive) {
		report(c, path, "set active, passive or both");
		err = -EINVAL;
	}
	return c->err ? c->err : err;
}

const char *dmsc_probe_type_name(enum dmsc_probe_type t)
{
	if ((size_t)t >= sizeof(probe_names) / sizeof(probe_names[0]) - 1)
		return "unknown";
	return probe_names[t];
}
