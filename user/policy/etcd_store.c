// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#define _GNU_SOURCE
/*
 * Policy in etcd: key layout, the parse of one service value, and the
 * store a host keeps of its namespaces. See etcd_store.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <json-c/json.h>

#include "array.h"
#include "etcd_store.h"
#include "hash.h"
#include "log.h"
#include "mapmem.h"
#include "policy_parse.h" /* errors_add */

bool dmsc_etcd_ns_valid(const char *ns)
{
	size_t i, len = strlen(ns);

	if (!len || len > DMSC_ETCD_NS_MAX || !strcmp(ns, ".") || !strcmp(ns, ".."))
		return false;
	for (i = 0; i < len; i++) {
		char c = ns[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
		      c == '_'))
			return false;
	}
	return true;
}

char *dmsc_etcd_ns_prefix(const char *prefix, const char *ns)
{
	char *s = NULL;

	if (asprintf(&s, "%s/ns/%s/services/", prefix, ns) < 0)
		return NULL;
	return s;
}

char *dmsc_etcd_service_key(const char *prefix, const char *ns, const char *name)
{
	char *s = NULL;

	if (asprintf(&s, "%s/ns/%s/services/%s", prefix, ns, name) < 0)
		return NULL;
	return s;
}

char *dmsc_etcd_hosts_prefix(const char *prefix)
{
	char *p;

	return asprintf(&p, "%s/hosts/", prefix) < 0 ? NULL : p;
}

char *dmsc_etcd_host_key(const char *prefix, const char *name)
{
	char *p;

	return asprintf(&p, "%s/hosts/%s", prefix, name) < 0 ? NULL : p;
}

const char *dmsc_etcd_key_name(const char *key, const char *ns_prefix)
{
	size_t n = strlen(ns_prefix);

	if (strncmp(key, ns_prefix, n) || !key[n] || strchr(key + n, '/'))
		return NULL;
	return key + n;
}

int dmsc_etcd_parse_service(const char *value, size_t len, const char *name,
			    struct dmsc_policy *out, struct dmsc_policy_errors *errs)
{
	static const char head[] = "{\"services\":[", tail[] = "]}";
	struct json_tokener *tok = NULL;
	struct json_object *o = NULL, *n;
	char *doc = NULL;
	size_t i;
	int e = -EINVAL;

	memset(out, 0, sizeof(*out));
	errs->count = 0;
	if (len > DMSC_ETCD_VALUE_MAX) {
		errors_add(errs, "", "the value is %zu bytes, more than the %u a service may take",
			  len, DMSC_ETCD_VALUE_MAX);
		return -EINVAL;
	}
	/* One object and nothing else: the value is wrapped into a document
	 * below, and must not be able to add services or close it early. */
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	o = json_tokener_parse_ex(tok, value, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success) {
		errors_add(
		    errs, "", "not JSON: %s",
		    json_tokener_error_desc(json_tokener_get_error(tok) == json_tokener_continue
						? json_tokener_error_parse_eof
						: json_tokener_get_error(tok)));
		goto out;
	}
	for (i = json_tokener_get_parse_end(tok); i < len; i++) {
		if (value[i] != ' ' && value[i] != '\n' && value[i] != '\t' && value[i] != '\r') {
			errors_add(errs, "", "more than one JSON value (trailing text at byte %zu)",
				  i);
			goto out;
		}
	}
	if (!json_object_is_type(o, json_type_object)) {
		errors_add(errs, "", "not a JSON object (one service of policy v1)");
		goto out;
	}
	if (!json_object_object_get_ex(o, "name", &n) ||
	    !json_object_is_type(n, json_type_string) || strcmp(json_object_get_string(n), name)) {
		errors_add(errs, "name", "must be \"%s\", the name in the key", name);
		goto out;
	}
	doc = malloc(sizeof(head) + len + sizeof(tail));
	if (!doc) {
		e = -ENOMEM;
		goto out;
	}
	memcpy(doc, head, sizeof(head) - 1);
	memcpy(doc + sizeof(head) - 1, value, len);
	memcpy(doc + sizeof(head) - 1 + len, tail, sizeof(tail));
	/* a backend's host is resolved at the view, from PREFIX/hosts/ */
	e = dmsc_policy_parse_flags(doc, sizeof(head) - 1 + len + sizeof(tail) - 1, "",
				    DMSC_POLICY_HOSTS_ELSEWHERE, out, errs);
	if (e == -EINVAL) {
		/* paths relative to the service */
		for (i = 0; i < errs->count; i++) {
			char *p = errs->items[i].path;

			if (!strncmp(p, "services[0].", 12))
				memmove(p, p + 12, strlen(p + 12) + 1);
			else if (!strcmp(p, "services[0]"))
				p[0] = '\0';
		}
	} else if (!e && out->n_services != 1) {
		dmsc_policy_free(out);
		errors_add(errs, "", "not one service");
		e = -EINVAL;
	}
out:
	free(doc);
	json_object_put(o);
	json_tokener_free(tok);
	return e;
}

void dmsc_etcd_format_errors(const char *key, const struct dmsc_policy_errors *errs, int err,
			     char *buf, size_t len)
{
	size_t i, off;
	char line[1024];

	off = (size_t)snprintf(buf, len, "etcd key %s: ", key);
	if (!errs->count && off < len)
		snprintf(buf + off, len - off, "%s", strerror(-err));
	for (i = 0; i < errs->count && off < len; i++) {
		dmsc_policy_error_format(&errs->items[i], line, sizeof(line));
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "; " : "", line);
	}
}

/* Index of key, or where it would go (with *found false). */
static size_t store_pos(const struct dmsc_etcd_store *s, const char *key, bool *found)
{
	size_t lo = 0, hi = s->n;

	*found = false;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->e[mid].key, key);

		if (!c) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

const struct dmsc_etcd_entry *dmsc_etcd_store_find(const struct dmsc_etcd_store *s, const char *key)
{
	bool found;
	size_t i = store_pos(s, key, &found);

	return found ? &s->e[i] : NULL;
}

/* The one service of a parse, moved out (its policy's array is it). */
static struct dmsc_policy_service *take_service(struct dmsc_policy *p)
{
	struct dmsc_policy_service *svc = p->services;

	p->services = NULL;
	p->n_services = 0;
	return svc;
}

static void free_service(struct dmsc_policy_service *svc)
{
	struct dmsc_policy p = {svc, svc ? 1 : 0};

	dmsc_policy_free(&p);
}

static bool same_identity(const struct dmsc_etcd_entry *en, const struct dmsc_policy_service *svc)
{
	const struct dmsc_policy_service *o = en->svc;

	if (!en->valid)
		return false;
	if (!o)
		return svc->family == AF_INET && en->vip == svc->vip && en->port == svc->port &&
		       en->protocol == svc->protocol;
	return o->family == svc->family && o->vip == svc->vip && o->port == svc->port &&
	       o->protocol == svc->protocol && !memcmp(o->vip6, svc->vip6, sizeof(o->vip6));
}

int dmsc_etcd_store_put(struct dmsc_etcd_store *s, const char *key, const char *name,
			const char *value, size_t len, int64_t mod_rev)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy parsed;
	struct dmsc_policy_service *svc = NULL;
	struct dmsc_etcd_entry *en;
	char msg[2048];
	bool found, refill;
	size_t i = store_pos(s, key, &found);
	int e;

	/* a slim entry parsed again for a refill: the same value */
	refill = found && s->refill && s->e[i].mod_rev == mod_rev && s->e[i].valid && !s->e[i].svc;
	if (found && s->e[i].mod_rev >= mod_rev && !refill)
		return 0;
	e = dmsc_etcd_parse_service(value, len, name, &parsed, &errs);
	if (e) {
		dmsc_etcd_format_errors(key, &errs, e, msg, sizeof(msg));
		pr_warn("%s; refused (revision %lld)%s\n", msg, (long long)mod_rev,
			found && s->e[i].valid ? ", the service stays as it was" : "");
		dmsc_policy_errors_free(&errs);
		s->refused++;
		if (e != -EINVAL)
			return e;
	} else {
		svc = take_service(&parsed);
	}
	dmsc_policy_errors_free(&errs);
	if (!found) {
		struct dmsc_etcd_entry *ne = dmsc_array_room(s->e, s->n, &s->cap, sizeof(*ne), 16);

		if (!ne) {
			free_service(svc);
			return -ENOMEM;
		}
		s->e = ne;
		memmove(&s->e[i + 1], &s->e[i], (s->n - i) * sizeof(*s->e));
		s->n++;
		memset(&s->e[i], 0, sizeof(s->e[i]));
		s->e[i].key = strdup(key);
		if (!s->e[i].key) {
			memmove(&s->e[i], &s->e[i + 1], (s->n - i - 1) * sizeof(*s->e));
			s->n--;
			free_service(svc);
			return -ENOMEM;
		}
	}
	en = &s->e[i];
	en->mod_rev = mod_rev;
	if (!svc)
		return 0; /* refused: the last valid service stays */
	if (!same_identity(en, svc))
		s->ids_dirty = true;
	if (en->valid && !en->svc)
		s->n_slim--;
	free_service(en->svc);
	en->svc = svc;
	en->fp = s->fp_of ? s->fp_of(svc) : 0;
	en->valid = true;
	/* for the next apply, also when parsed again for a refill */
	if (!en->dirty)
		s->n_dirty++;
	en->dirty = true;
	return refill ? 0 : 1;
}

static bool key_packed(const struct dmsc_etcd_store *s, const char *key)
{
	return s->keys && key >= s->keys && key < s->keys + s->keys_len;
}

static void entry_remove(struct dmsc_etcd_store *s, size_t i)
{
	if (s->e[i].valid && !s->e[i].svc)
		s->n_slim--;
	if (s->e[i].valid)
		s->ids_dirty = true;
	if (s->e[i].dirty)
		s->n_dirty--;
	if (!key_packed(s, s->e[i].key))
		free(s->e[i].key);
	free_service(s->e[i].svc);
	memmove(&s->e[i], &s->e[i + 1], (s->n - i - 1) * sizeof(*s->e));
	s->n--;
}

int dmsc_etcd_store_delete(struct dmsc_etcd_store *s, const char *key, int64_t mod_rev)
{
	bool found;
	size_t i = store_pos(s, key, &found);
	bool was_valid;

	if (!found || s->e[i].mod_rev >= mod_rev)
		return 0;
	was_valid = s->e[i].valid;
	entry_remove(s, i);
	return was_valid ? 1 : 0;
}

int dmsc_etcd_store_retain(struct dmsc_etcd_store *s, const char *ns_prefix,
			   bool (*present)(const char *key, void *arg), void *arg)
{
	size_t n = strlen(ns_prefix), i;
	int changed = 0;

	for (i = 0; i < s->n;) {
		if (!strncmp(s->e[i].key, ns_prefix, n) && !present(s->e[i].key, arg)) {
			changed |= s->e[i].valid;
			entry_remove(s, i);
		} else {
			i++;
		}
	}
	return changed;
}

int dmsc_etcd_store_retain_range(struct dmsc_etcd_store *s, const char *ns_prefix,
				 const char *after, const char *last,
				 bool (*present)(const char *key, void *arg), void *arg)
{
	size_t n = strlen(ns_prefix), i;
	bool found;
	int changed = 0;

	i = store_pos(s, after ? after : ns_prefix, &found);
	if (after && found)
		i++;
	while (i < s->n && !strncmp(s->e[i].key, ns_prefix, n) &&
	       (!last || strcmp(s->e[i].key, last) <= 0)) {
		if (present(s->e[i].key, arg)) {
			i++;
			continue;
		}
		changed |= s->e[i].valid;
		entry_remove(s, i);
	}
	return changed;
}

static struct dmsc_etcd_host *host_find(const struct dmsc_etcd_store *s, const char *key)
{
	size_t i;

	for (i = 0; i < s->n_hosts; i++)
		if (!strcmp(s->hosts[i].key, key))
			return &s->hosts[i];
	return NULL;
}

int dmsc_etcd_store_host_put(struct dmsc_etcd_store *s, const char *key, const char *name,
			     const char *value, size_t len, int64_t mod_rev)
{
	struct dmsc_etcd_host *h = host_find(s, key);
	struct dmsc_host_addr at;
	char why[256];

	if (h && h->mod_rev >= mod_rev)
		return 0;
	if (len > DMSC_ETCD_HOST_VALUE_MAX ||
	    dmsc_policy_host_entry(name, value, len, &at, why, sizeof(why))) {
		if (len > DMSC_ETCD_HOST_VALUE_MAX)
			snprintf(why, sizeof(why), "the value is %zu bytes, not ADDRESS:PORT", len);
		pr_warn("etcd key %s: %s; refused (revision %lld)%s\n", key, why,
			(long long)mod_rev, h && h->at.family ? ", the host keeps its address" : "");
		s->refused++;
		if (h)
			h->mod_rev = mod_rev;
		return 0;
	}
	if (!h) {
		struct dmsc_etcd_host *nh = realloc(s->hosts, (s->n_hosts + 1) * sizeof(*nh));
		char *k = strdup(key);

		if (!nh || !k) {
			if (nh)
				s->hosts = nh;
			free(k);
			return -ENOMEM;
		}
		s->hosts = nh;
		h = &s->hosts[s->n_hosts++];
		memset(h, 0, sizeof(*h));
		h->key = k;
		h->name = k + strlen(k) - strlen(name);
	}
	h->mod_rev = mod_rev;
	if (dmsc_host_addr_eq(&h->at, &at))
		return 0;
	h->at = at;
	s->hosts_dirty = true;
	return 1;
}

static void host_remove(struct dmsc_etcd_store *s, size_t i)
{
	free(s->hosts[i].key);
	s->hosts[i] = s->hosts[--s->n_hosts];
	s->hosts_dirty = true;
}

int dmsc_etcd_store_host_delete(struct dmsc_etcd_store *s, const char *key, int64_t mod_rev)
{
	struct dmsc_etcd_host *h = host_find(s, key);
	bool had;

	if (!h || h->mod_rev >= mod_rev)
		return 0;
	had = h->at.family != 0;
	host_remove(s, (size_t)(h - s->hosts));
	return had;
}

int dmsc_etcd_store_host_retain(struct dmsc_etcd_store *s,
				bool (*present)(const char *key, void *arg), void *arg)
{
	size_t i;
	int changed = 0;

	for (i = 0; i < s->n_hosts;) {
		if (!present(s->hosts[i].key, arg)) {
			changed |= s->hosts[i].at.family != 0;
			host_remove(s, i);
		} else {
			i++;
		}
	}
	return changed;
}

/* Each parsed service's backends get their host's tunnel address from the
 * hosts held (0: none yet); a name without one is logged once per change
 * of keys or hosts. */
static void resolve_hosts(struct dmsc_etcd_store *s, bool log, char **msgs, size_t max_msgs,
			  size_t *n_msgs)
{
	size_t i, j, k;

	for (i = 0; i < s->n; i++) {
		struct dmsc_policy_service *svc = s->e[i].svc;

		if (!svc || !s->e[i].valid || s->e[i].dropped)
			continue;
		for (j = 0; j < svc->n_backends; j++) {
			struct dmsc_policy_backend *b = &svc->backends[j];

			if (!b->host)
				continue;
			memset(&b->host_at, 0, sizeof(b->host_at));
			for (k = 0; k < s->n_hosts; k++)
				if (s->hosts[k].at.family && !strcmp(s->hosts[k].name, b->host)) {
					b->host_at = s->hosts[k].at;
					break;
				}
			if (!b->host_at.family && log && *n_msgs < max_msgs &&
			    asprintf(&msgs[*n_msgs],
				     "etcd key %s: backends[%zu].host \"%s\" has no hosts/%s key "
				     "(its tunnel's address): connections to this backend through "
				     "the tunnel fail until one is published (unless %s is this "
				     "host)",
				     s->e[i].key, j, b->host, b->host, b->host) > 0)
				(*n_msgs)++;
		}
	}
	s->hosts_dirty = false;
}

/* Keys malloc'd one by one past which the keys are packed. */
#define PACK_KEYS_AFTER 1024

/* A service that only the maps need: what a view of the whole policy
 * reads of it (dmsc-l7's and the tunnel's views, the health probes, the
 * checks of what this build enforces) is not there. */
static bool slimmable(const struct dmsc_policy_service *svc)
{
	return svc->family == AF_INET && svc->protocol != DMSC_POLICY_HTTP && !svc->has_health &&
	       !svc->has_allow_from;
}

/* Every key into one block. */
static void pack_keys(struct dmsc_etcd_store *s)
{
	size_t i, len = 0, off = 0;
	char *block;

	for (i = 0; i < s->n; i++)
		len += strlen(s->e[i].key) + 1;
	block = malloc(len ? len : 1);
	if (!block)
		return; /* they stay where they are */
	for (i = 0; i < s->n; i++) {
		size_t n = strlen(s->e[i].key) + 1;

		memcpy(block + off, s->e[i].key, n);
		if (!key_packed(s, s->e[i].key))
			free(s->e[i].key);
		s->e[i].key = block + off;
		off += n;
	}
	free(s->keys);
	s->keys = block;
	s->keys_len = len;
}

void dmsc_etcd_store_slim(struct dmsc_etcd_store *s)
{
	size_t i, freed = 0, loose = 0;

	for (i = 0; i < s->n; i++) {
		s->e[i].dirty = false;
		loose += !key_packed(s, s->e[i].key);
	}
	s->n_dirty = 0;
	if (!s->fp_of || s->keep_all)
		return;
	for (i = 0; i < s->n; i++) {
		struct dmsc_etcd_entry *en = &s->e[i];

		if (!en->svc || !en->fp || !slimmable(en->svc))
			continue;
		en->vip = en->svc->vip;
		en->port = en->svc->port;
		en->protocol = (uint8_t)en->svc->protocol;
		free_service(en->svc);
		en->svc = NULL;
		s->n_slim++;
		freed++;
	}
	/* once as many keys came one by one as are packed: a read a page at
	 * a time packs a few times (each time the keys double), not at every
	 * page */
	if (freed && loose >= PACK_KEYS_AFTER && 2 * loose >= s->n)
		pack_keys(s);
}

void dmsc_etcd_store_free(struct dmsc_etcd_store *s)
{
	while (s->n)
		entry_remove(s, s->n - 1);
	while (s->n_hosts)
		host_remove(s, s->n_hosts - 1);
	free(s->hosts);
	free(s->e);
	free(s->keys);
	memset(s, 0, sizeof(*s));
}

/* An entry's service in a view: the parsed one, or what a slim entry
 * keeps of it. */
void dmsc_etcd_entry_service(const struct dmsc_etcd_entry *en, struct dmsc_policy_service *out)
{
	const char *slash;

	if (en->svc) {
		*out = *en->svc;
		return;
	}
	memset(out, 0, sizeof(*out));
	slash = strrchr(en->key, '/');
	out->name = (char *)(slash ? slash + 1 : en->key);
	out->family = AF_INET;
	out->vip = en->vip;
	out->port = en->port;
	out->protocol = (enum dmsc_policy_proto)en->protocol;
}

/* What two keys may not share: the kernel's key of a service (tcp and
 * http share TCP's). */
struct vip_id {
	uint32_t vip;
	uint8_t vip6[16];
	uint16_t port;
	uint8_t udp, pad;
};

static void entry_vip_id(const struct dmsc_etcd_entry *en, struct vip_id *id)
{
	memset(id, 0, sizeof(*id));
	if (en->svc) {
		id->vip = en->svc->vip;
		memcpy(id->vip6, en->svc->vip6, sizeof(id->vip6));
		id->port = en->svc->port;
		id->udp = en->svc->protocol == DMSC_POLICY_UDP;
	} else {
		id->vip = en->vip;
		id->port = en->port;
		id->udp = en->protocol == DMSC_POLICY_UDP;
	}
}

/* A service's name is its key's NAME (the parse checks it). */
static const char *entry_name(const struct dmsc_etcd_entry *en)
{
	const char *slash = strrchr(en->key, '/');

	return slash ? slash + 1 : en->key;
}

static size_t fnv1a(const void *p, size_t n)
{
	uint64_t h = dmsc_fnv1a(DMSC_FNV1A_INIT, p, n);

	return (size_t)(h ^ (h >> 29));
}

/* Looks key i up in an open-addressing table of entry indexes + 1 (name
 * or vip:port, as by_vip says); inserts it when absent. Returns the index
 * + 1 of the earlier key that has it, 0 when none. */
static uint32_t claim(const struct dmsc_etcd_store *s, uint32_t *tab, size_t mask, size_t i,
		      bool by_vip)
{
	struct vip_id id, other;
	const char *name = NULL;
	size_t h;

	if (by_vip) {
		entry_vip_id(&s->e[i], &id);
		h = fnv1a(&id, sizeof(id));
	} else {
		name = entry_name(&s->e[i]);
		h = fnv1a(name, strlen(name));
	}
	for (h &= mask; tab[h]; h = (h + 1) & mask) {
		const struct dmsc_etcd_entry *o = &s->e[tab[h] - 1];

		if (by_vip) {
			entry_vip_id(o, &other);
			if (!memcmp(&id, &other, sizeof(id)))
				return tab[h];
		} else if (!strcmp(entry_name(o), name)) {
			return tab[h];
		}
	}
	tab[h] = (uint32_t)(i + 1);
	return 0;
}

/* Two keys (two namespaces) with one name or one VIP: the first key in
 * byte order wins, the others are named and left out (dropped); a key
 * left out for its name still holds its VIP against later keys. One pass
 * in key order over two hash tables of 4 bytes a slot: a paged read looks
 * for conflicts at every page (docs/design.md decision 61). */
static int find_conflicts(struct dmsc_etcd_store *s, char **msgs, size_t max_msgs, size_t *n_msgs)
{
	size_t cap = 64, i;
	uint32_t *names, *vips;

	while (cap < 2 * (s->n + 1))
		cap *= 2;
	names = dmsc_mapmem_calloc(2 * cap, sizeof(*names));
	if (!names)
		return -ENOMEM;
	vips = names + cap;
	for (i = 0; i < s->n; i++) {
		struct dmsc_etcd_entry *en = &s->e[i];
		uint32_t by_name, by_vip;

		en->dropped = false;
		if (!en->valid)
			continue;
		by_name = claim(s, names, cap - 1, i, false);
		by_vip = claim(s, vips, cap - 1, i, true);
		if (!by_name && !by_vip)
			continue;
		en->dropped = true;
		if (*n_msgs < max_msgs &&
		    asprintf(&msgs[*n_msgs], "etcd key %s: %s is used by %s already; left out",
			     en->key, by_name ? "its name" : "its vip:port",
			     s->e[(by_name ? by_name : by_vip) - 1].key) >= 0)
			(*n_msgs)++;
	}
	dmsc_mapmem_free(names);
	s->ids_dirty = false;
	return 0;
}

int dmsc_etcd_store_view(struct dmsc_etcd_store *s, struct dmsc_policy *out, uint64_t **fps,
			 char **msgs, size_t max_msgs, size_t *n_msgs)
{
	uint64_t *fp = NULL;
	bool log_hosts = s->ids_dirty || s->hosts_dirty;
	size_t i;
	int e;

	memset(out, 0, sizeof(*out));
	*n_msgs = 0;
	if (fps)
		*fps = NULL;
	if (s->ids_dirty) {
		e = find_conflicts(s, msgs, max_msgs, n_msgs);
		if (e)
			return e;
	}
	resolve_hosts(s, log_hosts, msgs, max_msgs, n_msgs);
	/* mapped on their own at 100,000 services (24 MB): a view is made
	 * for each change and must not stay in the heap after it */
	out->services = dmsc_mapmem_calloc(s->n + 1, sizeof(*out->services));
	if (fps)
		fp = dmsc_mapmem_calloc(s->n + 1, sizeof(*fp));
	if (!out->services || (fps && !fp)) {
		dmsc_mapmem_free(out->services);
		out->services = NULL;
		dmsc_mapmem_free(fp);
		return -ENOMEM;
	}
	for (i = 0; i < s->n; i++) {
		if (!s->e[i].valid || s->e[i].dropped)
			continue;
		if (fp)
			fp[out->n_services] = s->e[i].fp;
		dmsc_etcd_entry_service(&s->e[i], &out->services[out->n_services++]);
	}
	if (fps)
		*fps = fp;
	return 0;
}

int dmsc_etcd_store_view_some(struct dmsc_etcd_store *s, bool parsed, struct dmsc_policy *out,
			      uint64_t **fps, char **msgs, size_t max_msgs, size_t *n_msgs)
{
	bool log_hosts = s->ids_dirty || s->hosts_dirty;
	size_t i, n = 0;
	int e;

	memset(out, 0, sizeof(*out));
	*fps = NULL;
	*n_msgs = 0;
	if (s->ids_dirty) {
		e = find_conflicts(s, msgs, max_msgs, n_msgs);
		if (e)
			return e;
	}
	resolve_hosts(s, log_hosts, msgs, max_msgs, n_msgs);
	for (i = 0; i < s->n; i++)
		n += s->e[i].svc && (parsed || s->e[i].dirty);
	out->services = dmsc_mapmem_calloc(n + 1, sizeof(*out->services));
	*fps = dmsc_mapmem_calloc(n + 1, sizeof(**fps));
	if (!out->services || !*fps) {
		dmsc_etcd_store_view_free(out, *fps);
		*fps = NULL;
		return -ENOMEM;
	}
	for (i = 0; i < s->n; i++) {
		const struct dmsc_etcd_entry *en = &s->e[i];

		if (!en->svc || !en->valid || en->dropped || !(parsed || en->dirty))
			continue;
		(*fps)[out->n_services] = en->fp;
		out->services[out->n_services++] = *en->svc;
	}
	return 0;
}

void dmsc_etcd_store_view_free(struct dmsc_policy *view, uint64_t *fps)
{
	dmsc_mapmem_free(view->services);
	dmsc_mapmem_free(fps);
	memset(view, 0, sizeof(*view));
}

int dmsc_etcd_store_view_changed(struct dmsc_etcd_store *s, struct dmsc_policy *out,
				 uint64_t **fps, bool *parsed)
{
	size_t i, n;

	memset(out, 0, sizeof(*out));
	*fps = NULL;
	*parsed = false;
	if (s->ids_dirty || s->keep_all || !s->fp_of)
		return -EAGAIN;
	for (i = 0; i < s->n && !*parsed; i++) {
		const struct dmsc_etcd_entry *en = &s->e[i];

		*parsed = en->dirty && en->svc && en->valid && !en->dropped && !slimmable(en->svc);
	}
	/* no key came, went or moved: no conflict to find, nothing to log */
	return dmsc_etcd_store_view_some(s, *parsed, out, fps, NULL, 0, &n);
}
