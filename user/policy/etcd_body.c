// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* etcd v3's JSON gateway: base64 and the request bodies (etcd.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "etcd_int.h"

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *dmsc_b64_encode(const void *data, size_t len)
{
	const unsigned char *in = data;
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		*o++ = b64_alphabet[v >> 18 & 63];
		*o++ = b64_alphabet[v >> 12 & 63];
		*o++ = b64_alphabet[v >> 6 & 63];
		*o++ = b64_alphabet[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);

		*o++ = b64_alphabet[v >> 18 & 63];
		*o++ = b64_alphabet[v >> 12 & 63];
		*o++ = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
		*o++ = '=';
	}
	*o = '\0';
	return out;
}

static int b64_value(char c)
{
	const char *p = c ? strchr(b64_alphabet, c) : NULL;

	return p ? (int)(p - b64_alphabet) : -1;
}

int dmsc_b64_decode(const char *text, char **out, size_t *out_len)
{
	size_t len = strlen(text), i, n = 0;
	unsigned char *buf;

	*out = NULL;
	*out_len = 0;
	if (len % 4)
		return -EINVAL;
	buf = malloc(len / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < len; i += 4) {
		int a = b64_value(text[i]), b = b64_value(text[i + 1]);
		int c = text[i + 2] == '=' ? 0 : b64_value(text[i + 2]);
		int d = text[i + 3] == '=' ? 0 : b64_value(text[i + 3]);
		bool last = i + 4 == len;

		if (a < 0 || b < 0 || c < 0 || d < 0 ||
		    (!last && (text[i + 2] == '=' || text[i + 3] == '=')) ||
		    (text[i + 2] == '=' && text[i + 3] != '=')) {
			free(buf);
			return -EINVAL;
		}
		buf[n++] = (unsigned char)(a << 2 | b >> 4);
		if (text[i + 2] != '=')
			buf[n++] = (unsigned char)((b & 15) << 4 | c >> 2);
		if (text[i + 3] != '=')
			buf[n++] = (unsigned char)((c & 3) << 6 | d);
	}
	buf[n] = '\0';
	*out = (char *)buf;
	*out_len = n;
	return 0;
}

char *dmsc_etcd_prefix_end(const char *prefix)
{
	size_t len = strlen(prefix);
	char *end = strdup(prefix);

	if (!end)
		return NULL;
	while (len && (unsigned char)end[len - 1] == 0xff)
		end[--len] = '\0';
	if (!len) {
		/* every key: etcd's "\0" range end */
		free(end);
		return strdup("");
	}
	end[len - 1] = (char)((unsigned char)end[len - 1] + 1);
	return end;
}

static void add_b64(struct json_object *o, const char *field, const char *s)
{
	char *b = dmsc_b64_encode(s, strlen(s));

	json_object_object_add(o, field, json_object_new_string(b ? b : ""));
	free(b);
}

static void add_int64(struct json_object *o, const char *field, int64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%" PRId64, v);
	json_object_object_add(o, field, json_object_new_string(buf));
}

static char *finish(struct json_object *o)
{
	char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							       JSON_C_TO_STRING_NOSLASHESCAPE));

	json_object_put(o);
	return s;
}

/* A range_end of "" means "every key >= key" to etcd only when it is "\0";
 * dmsc_etcd_prefix_end never returns "" for a non-empty prefix. */
static void add_range_end(struct json_object *o, const char *range_end)
{
	if (!range_end)
		return;
	if (!range_end[0])
		json_object_object_add(o, "range_end", json_object_new_string("AA=="));
	else
		add_b64(o, "range_end", range_end);
}

char *dmsc_etcd_range_body(const char *key, const char *range_end, int64_t revision,
			   int64_t limit)
{
	struct json_object *o = json_object_new_object();

	add_b64(o, "key", key);
	add_range_end(o, range_end);
	if (revision > 0)
		add_int64(o, "revision", revision);
	if (limit > 0)
		add_int64(o, "limit", limit);
	return finish(o);
}

char *dmsc_etcd_txn_body(const struct dmsc_etcd_cmp *cmps, size_t n_cmps,
			 const struct dmsc_etcd_op *ops, size_t n_ops)
{
	struct json_object *o = json_object_new_object();
	struct json_object *ca = json_object_new_array(), *sa = json_object_new_array();
	size_t i;

	for (i = 0; i < n_cmps; i++) {
		struct json_object *c = json_object_new_object();

		json_object_object_add(c, "target", json_object_new_string("MOD"));
		json_object_object_add(
		    c, "result",
		    json_object_new_string(cmps[i].result == DMSC_ETCD_LESS ? "LESS" : "EQUAL"));
		add_b64(c, "key", cmps[i].key);
		add_range_end(c, cmps[i].range_end);
		add_int64(c, "mod_revision", cmps[i].mod_rev);
		json_object_array_add(ca, c);
	}
	for (i = 0; i < n_ops; i++) {
		struct json_object *r = json_object_new_object(), *w = json_object_new_object();

		add_b64(r, "key", ops[i].key);
		if (ops[i].type == DMSC_ETCD_PUT) {
			add_b64(r, "value", ops[i].value ? ops[i].value : "");
			json_object_object_add(w, "request_put", r);
		} else {
			json_object_object_add(w, "request_delete_range", r);
		}
		json_object_array_add(sa, w);
	}
	json_object_object_add(o, "compare", ca);
	json_object_object_add(o, "success", sa);
	return finish(o);
}

char *dmsc_etcd_watch_body(const char *key, const char *range_end, int64_t start_revision)
{
	struct json_object *o = json_object_new_object(), *c = json_object_new_object();

	add_b64(c, "key", key);
	add_range_end(c, range_end);
	if (start_revision > 0)
		add_int64(c, "start_revision", start_revision);
	/* etcd sends a progress message now and then on an idle watch: the
	 * revision moves on even when this prefix does not change. */
	json_object_object_add(c, "progress_notify", json_object_new_boolean(true));
	json_object_object_add(o, "create_request", c);
	return finish(o);
}
