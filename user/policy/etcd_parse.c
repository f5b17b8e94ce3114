// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* etcd v3's JSON gateway: the responses read, and the watch stream split into messages (etcd.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "array.h"
#include "etcd_int.h"

void etcd_seterr(char *err, size_t len, const char *fmt, ...)
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
		etcd_seterr(err, err_len, "etcd answered with something that is not a JSON object");
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
	etcd_seterr(err, err_len, "etcd: %s", json_object_get_string(m));
	return true;
}

static int parse_kv(struct json_object *o, struct dmsc_etcd_kv *kv, char *err, size_t err_len)
{
	struct json_object *k, *v;
	size_t klen;
	int e;

	memset(kv, 0, sizeof(*kv));
	if (!json_object_object_get_ex(o, "key", &k) || !json_object_is_type(k, json_type_string)) {
		etcd_seterr(err, err_len, "a key-value without a key");
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
		etcd_seterr(err, err_len, "a key-value that is not base64 or has a bad revision");
		dmsc_etcd_kv_free(kv);
	}
	return e;
}

static int header_revision(struct json_object *o, int64_t *rev, char *err, size_t err_len)
{
	struct json_object *h;

	if (!json_object_object_get_ex(o, "header", &h) || get_int64(h, "revision", rev)) {
		etcd_seterr(err, err_len, "etcd's answer has no header.revision");
		return -EINVAL;
	}
	return 0;
}

/* A JSON array of the answer: its length into *n and zeroed room for that
 * many elements of elem bytes (one when empty) into *out. 0, -EINVAL when
 * arr is no array (said as not_array), -ENOMEM. */
static int array_room(struct json_object *arr, const char *not_array, size_t elem, void **out,
		      size_t *n, char *err, size_t err_len)
{
	if (!json_object_is_type(arr, json_type_array)) {
		etcd_seterr(err, err_len, "%s", not_array);
		return -EINVAL;
	}
	*n = json_object_array_length(arr);
	*out = calloc(*n ? *n : 1, elem);
	return *out ? 0 : -ENOMEM;
}

int dmsc_etcd_parse_range(const char *json, size_t len, struct dmsc_etcd_kvs *out, char *err,
			  size_t err_len)
{
	struct json_object *o = parse_object(json, len, err, err_len), *kvs, *more;
	size_t i, n;
	void *room;
	int e = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!o)
		return -EINVAL;
	if (gateway_error(o, err, err_len))
		goto out;
	if (header_revision(o, &out->revision, err, err_len))
		goto out;
	/* false is the default: the gateway leaves it out */
	out->more = json_object_object_get_ex(o, "more", &more) && json_object_get_boolean(more);
	if (!json_object_object_get_ex(o, "kvs", &kvs)) {
		e = 0;
		goto out;
	}
	e = array_room(kvs, "etcd's kvs is not an array", sizeof(*out->kv), &room, &n, err,
		       err_len);
	if (e)
		goto out;
	out->kv = room;
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

int dmsc_etcd_parse_txn(const char *json, size_t len, bool *succeeded, int64_t *revision, char *err,
			size_t err_len)
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
	void *room;
	int e = -EINVAL;

	memset(msg, 0, sizeof(*msg));
	if (!o)
		return -EINVAL;
	if (!json_object_object_get_ex(o, "result", &r)) {
		if (gateway_error(o, msg->error, sizeof(msg->error))) {
			msg->canceled = true;
			e = 0;
		} else {
			etcd_seterr(err, err_len, "a watch message without a result");
		}
		goto out;
	}
	if (header_revision(r, &msg->revision, err, err_len))
		goto out;
	msg->created = json_object_object_get_ex(r, "created", &v) && json_object_get_boolean(v);
	msg->canceled = json_object_object_get_ex(r, "canceled", &v) && json_object_get_boolean(v);
	if (get_int64(r, "compact_revision", &msg->compact_revision)) {
		etcd_seterr(err, err_len, "a watch message with a bad compact_revision");
		goto out;
	}
	if (json_object_object_get_ex(r, "cancel_reason", &v))
		snprintf(msg->error, sizeof(msg->error), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(r, "events", &evs)) {
		e = array_room(evs, "a watch message whose events are not an array",
			       sizeof(*msg->events), &room, &n, err, err_len);
		if (e)
			goto out;
		msg->events = room;
		for (i = 0; i < n; i++) {
			struct json_object *ev = json_object_array_get_idx(evs, i), *kv, *t;

			if (!json_object_object_get_ex(ev, "kv", &kv)) {
				etcd_seterr(err, err_len, "a watch event without kv");
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
		char *b = dmsc_bytes_room(s->buf, &s->cap, s->len + len, 4096);

		if (!b)
			return -ENOMEM;
		s->buf = b;
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
