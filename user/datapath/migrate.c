// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Upgrading the pinned maps in place, map by map.
 *
 * The kernel (and libbpf before it) reuses a pinned map only if its type,
 * key size, value size, max_entries, flags and map_extra are those of the
 * new definition. When a build changes one of them (a value that grew new
 * counters, a changed key), the install of that build over an older one
 * used to fail. Instead, for each map of the new objects that is pinned
 * already with another definition:
 *
 *   1. the first object's load creates a new map (unpinned); later objects
 *      of the same install reuse that one (bpf_map__reuse_fd), so the
 *      objects still share one set of maps;
 *   2. what can be carried over is copied from the old map into the new one
 *      (dmsc_migrate_loaded): every entry of an array or hash map whose key
 *      is unchanged and whose value is the same or grew at its end (the old
 *      bytes first, zeros after; for per-CPU maps each CPU's value alike).
 *      The policy maps (services, backends, meta, limits, allow, the
 *      install record...) keep the policy that way;
 *   3. the new programs, loaded against the new maps, replace the old ones
 *      under the pinned links (datapath.c, bpf_link_update: the hook is
 *      never empty);
 *   4. only then the pin is switched to the new map (dmsc_migrate_commit):
 *      a process that opens the map by its path from then on gets the new
 *      one; the old map goes away with the last program or fd holding it.
 *   5. pins that the new build does not make (a map or program an earlier
 *      build had) are removed (dmsc_migrate_sweep): the host ends with the
 *      pins of a fresh install.
 *
 * Entries that cannot be carried:
 *  - socket storage (SK_STORAGE): the kernel lists no entries of it to
 *    userspace. The new map starts empty, and every program treats a socket
 *    without an entry as one it has not seen: connect4 and the fast path's
 *    sockops create the entry for new connections; for an established one,
 *    getpeername/recvmsg find no translation record and report the address
 *    as the kernel has it (the backend's, as before dmsc), and the fast
 *    path's sk_msg passes its messages to the TCP stack (counted as "miss")
 *    instead of redirecting them, which is plain TCP: nothing fails, and
 *    the bytes redirected earlier stay queued in front of them;
 *  - sockhash / sockmap: their entries are sockets, which userspace can only
 *    insert by fd. A new sockhash starts empty: sockets already in the old
 *    one keep the old sk_msg program (attached to the old map) until they
 *    close, new connections go into the new one;
 *  - a value of a known earlier layout is converted (conversions[]): an
 *    entry of dmsc_be_health of the layout before docs/design.md decision
 *    53 gives its counter's fields to the new dmsc_be_health and dmscd's
 *    to dmsc_be_verdict (a new map, made by the same load), so an ejected
 *    backend stays ejected and dmscd's verdicts stay;
 *  - a map whose type or key changed, or whose value shrank: there is no
 *    safe reading of the old entries. It starts empty and the log says so;
 *    for a policy map the next `dmscctl apply` (or dmscd) writes the
 *    policy again, since an apply compares the policy with what the maps
 *    hold.
 * Counters that the old programs add between the copy and the switch of
 * the links are lost (a handful at most); policy writers are excluded by the
 * pin directory's lock, which the install holds throughout.
 *
 * A change of DMSC_LAYOUT_VERSION (a new pin directory) is therefore no
 * longer needed for a changed map: it is kept for a change this cannot
 * carry, where a key or value keeps its size but changes its meaning.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "datapath.h"
#include "dmsc/shared.h"
#include "log.h"
#include "migrate.h"

/* More than the maps of every object (dmsc_map_names). */
#define MIGRATE_MAX 64
/* The largest value of a conversion's other map. */
#define ASIDE_VALUE_MAX 256

struct migrate_map;

/* A value of a known earlier layout, converted entry by entry into the new
 * map's and, when `aside` names one, a value of that other (new) map. */
struct conversion {
	const char *map;
	__u32 old_size;
	const char *aside;
	/* old -> cur (and aside's value); returns whether aside's is to be
	 * written. */
	bool (*convert)(const void *old, void *cur, void *aside);
};

struct migrate_map {
	char name[BPF_OBJ_NAME_LEN];
	const struct conversion *conv;
	int aside_fd;
	char path[PATH_MAX];
	int old_fd, new_fd;
	enum dmsc_migrate_how how;
	struct dmsc_map_shape old, cur;
	char why[160];
};

struct dmsc_migrate {
	size_t n;
	struct migrate_map maps[MIGRATE_MAX];
};

bool dmsc_map_type_percpu(__u32 type)
{
	return type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_PERCPU_HASH ||
	       type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

/* Map types whose entries userspace can list and write back. */
static bool type_copyable(__u32 type)
{
	switch (type) {
	case BPF_MAP_TYPE_ARRAY:
	case BPF_MAP_TYPE_PERCPU_ARRAY:
	case BPF_MAP_TYPE_HASH:
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_LRU_HASH:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH:
		return true;
	default:
		return false;
	}
}

/* dmsc_be_health before decision 53: the counter's fields as now, then
 * dmscd's, which went to dmsc_be_verdict. */
struct be_health_v0 {
	struct bpf_spin_lock lock;
	__u32 consecutive;
	__u64 failures, ejected_at_ns, ejected_until_ns;
	__u32 ejections;
	__u32 out;
	__u64 out_since_ns;
	__u32 probe_ok, probe_failed;
	__s32 probe_detail;
	__u32 probes;
};
_Static_assert(sizeof(struct be_health_v0) == DMSC_BE_HEALTH_V0_SIZE,
	       "the layout dmsc_be_health had before docs/design.md decision 53");

bool dmsc_migrate_split_be_health(const void *old, struct dmsc_be_health *h,
				  struct dmsc_be_verdict *v)
{
	struct be_health_v0 o;

	memcpy(&o, old, sizeof(o));
	memset(h, 0, sizeof(*h));
	memset(v, 0, sizeof(*v));
	h->consecutive = o.consecutive;
	h->failures = o.failures;
	h->ejected_at_ns = o.ejected_at_ns;
	h->ejected_until_ns = o.ejected_until_ns;
	h->ejections = o.ejections;
	v->out = o.out;
	v->out_since_ns = o.out_since_ns;
	v->probe_ok = o.probe_ok;
	v->probe_failed = o.probe_failed;
	v->probe_detail = o.probe_detail;
	v->probes = o.probes;
	return o.out || o.out_since_ns || o.probe_ok || o.probe_failed || o.probe_detail ||
	       o.probes;
}

static bool convert_be_health(const void *old, void *cur, void *aside)
{
	return dmsc_migrate_split_be_health(old, cur, aside);
}

static const struct conversion conversions[] = {
    {DMSC_MAP_BE_HEALTH, DMSC_BE_HEALTH_V0_SIZE, DMSC_MAP_BE_VERDICT, convert_be_health},
};

static const struct conversion *find_conversion(const char *name,
						const struct dmsc_map_shape *old,
						const struct dmsc_map_shape *cur)
{
	size_t i;

	if (old->type != cur->type || old->key_size != cur->key_size)
		return NULL;
	for (i = 0; i < sizeof(conversions) / sizeof(conversions[0]); i++)
		if (!strcmp(conversions[i].map, name) && conversions[i].old_size == old->value_size)
			return &conversions[i];
	return NULL;
}

static void append(char *why, size_t len, const char *fmt, unsigned long long a,
		   unsigned long long b)
{
	size_t used;

	if (!why || !len)
		return;
	used = strlen(why);
	if (used + 2 >= len)
		return;
	if (used)
		used += (size_t)snprintf(why + used, len - used, ", ");
	if (used < len)
		snprintf(why + used, len - used, fmt, a, b);
}

/* Whether a field changed from a to b; if so, said in why (fmt). */
static bool changed(char *why, size_t len, const char *fmt, unsigned long long a,
		    unsigned long long b)
{
	if (a == b)
		return false;
	append(why, len, fmt, a, b);
	return true;
}

enum dmsc_migrate_how dmsc_migrate_decide(const struct dmsc_map_shape *old,
					  const struct dmsc_map_shape *cur, char *why, size_t len)
{
	bool any = false;

	if (why && len)
		why[0] = '\0';
	any |= changed(why, len, "type %llu -> %llu", old->type, cur->type);
	any |= changed(why, len, "key %llu -> %llu bytes", old->key_size, cur->key_size);
	any |= changed(why, len, "value %llu -> %llu bytes", old->value_size, cur->value_size);
	any |= changed(why, len, "max_entries %llu -> %llu", old->max_entries, cur->max_entries);
	any |= changed(why, len, "flags %#llx -> %#llx", old->flags, cur->flags);
	any |= changed(why, len, "map_extra %#llx -> %#llx", old->extra, cur->extra);
	if (!any)
		return DMSC_MIGRATE_REUSE;
	if (old->type != cur->type || old->key_size != cur->key_size ||
	    old->value_size > cur->value_size || !type_copyable(cur->type))
		return DMSC_MIGRATE_EMPTY;
	return DMSC_MIGRATE_COPY;
}

void dmsc_migrate_value(const void *old, __u32 old_size, void *cur, __u32 new_size, int ncpus)
{
	size_t ostride = old_size, nstride = new_size;
	int cpu, n = ncpus > 0 ? ncpus : 1;

	if (ncpus > 0) {
		ostride = ((size_t)old_size + 7) & ~(size_t)7;
		nstride = ((size_t)new_size + 7) & ~(size_t)7;
	}
	for (cpu = 0; cpu < n; cpu++) {
		const char *o = (const char *)old + (size_t)cpu * ostride;
		char *c = (char *)cur + (size_t)cpu * nstride;

		memcpy(c, o, old_size);
		memset(c + old_size, 0, nstride - old_size);
	}
}

struct dmsc_migrate *dmsc_migrate_new(const char *pin_dir)
{
	(void)pin_dir; /* the paths come with each map (dmsc_migrate_prepare) */
	return calloc(1, sizeof(struct dmsc_migrate));
}

void dmsc_migrate_free(struct dmsc_migrate *m)
{
	size_t i;

	if (!m)
		return;
	for (i = 0; i < m->n; i++) {
		if (m->maps[i].old_fd >= 0)
			close(m->maps[i].old_fd);
		if (m->maps[i].new_fd >= 0)
			close(m->maps[i].new_fd);
		if (m->maps[i].aside_fd >= 0)
			close(m->maps[i].aside_fd);
	}
	free(m);
}

static struct migrate_map *find(const struct dmsc_migrate *m, const char *name)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		if (strcmp(m->maps[i].name, name) == 0)
			return (struct migrate_map *)&m->maps[i];
	return NULL;
}

bool dmsc_migrate_replaced(const struct dmsc_migrate *m, const char *name)
{
	return m && find(m, name) != NULL;
}

int dmsc_migrate_prepare(struct dmsc_migrate *m, struct bpf_map *map, const char *path)
{
	const char *name = bpf_map__name(map);
	struct dmsc_map_shape old, cur;
	struct bpf_map_info info;
	__u32 len = sizeof(info);
	struct migrate_map *e;
	char why[sizeof(e->why)];
	enum dmsc_migrate_how how;
	int fd, err;

	e = find(m, name);
	if (e) {
		/* An earlier object of this install made the new map. */
		if (e->new_fd < 0)
			return 0;
		err = bpf_map__reuse_fd(map, e->new_fd);
		if (err)
			pr_warn("map %s: cannot share the new map with this object: %s\n", name,
				strerror(-err));
		return err;
	}
	fd = bpf_obj_get(path);
	if (fd < 0) {
		if (errno == ENOENT) /* a new map: created and pinned by the load */
			return bpf_map__set_pin_path(map, path);
		err = -errno;
		pr_warn("cannot open the pinned map %s: %s\n", path, strerror(-err));
		return err;
	}
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
		err = -errno;
		pr_warn("cannot read the definition of the pinned map %s: %s\n", path,
			strerror(-err));
		close(fd);
		return err;
	}
	old = (struct dmsc_map_shape){info.type,	info.key_size,	info.value_size,
				      info.max_entries, info.map_flags, info.map_extra};
	cur = (struct dmsc_map_shape){bpf_map__type(map),	bpf_map__key_size(map),
				      bpf_map__value_size(map), bpf_map__max_entries(map),
				      bpf_map__map_flags(map),	bpf_map__map_extra(map)};
	how = dmsc_migrate_decide(&old, &cur, why, sizeof(why));
	if (how == DMSC_MIGRATE_REUSE) {
		close(fd);
		return bpf_map__set_pin_path(map, path);
	}
	if (m->n == MIGRATE_MAX) {
		close(fd);
		pr_warn("map %s: more than %d maps to migrate\n", name, MIGRATE_MAX);
		return -E2BIG;
	}
	e = &m->maps[m->n++];
	snprintf(e->name, sizeof(e->name), "%s", name);
	snprintf(e->path, sizeof(e->path), "%s", path);
	snprintf(e->why, sizeof(e->why), "%s", why);
	e->old_fd = fd;
	e->new_fd = -1;
	e->aside_fd = -1;
	e->conv = find_conversion(name, &old, &cur);
	e->how = e->conv ? DMSC_MIGRATE_CONVERT : how;
	e->old = old;
	e->cur = cur;
	/* No pin path: the load creates the map, dmsc_migrate_commit pins it. */
	return 0;
}

/* Copies every entry of e's old map into its new one; *copied and *dropped
 * (the new map had no room: fewer max_entries) count them. */
static int copy_entries(const struct migrate_map *e, unsigned long long *copied,
			unsigned long long *dropped)
{
	bool percpu = dmsc_map_type_percpu(e->cur.type);
	int ncpus = percpu ? libbpf_num_possible_cpus() : 0;
	size_t ostride = e->old.value_size, nstride = e->cur.value_size, n = 1;
	char *key = NULL, *next = NULL, *oval = NULL, *nval = NULL, *aval = NULL;
	unsigned long long i;
	int err = 0;
	void *prev = NULL;

	*copied = *dropped = 0;
	if (ncpus < 0)
		return ncpus;
	if (percpu) {
		ostride = ((size_t)e->old.value_size + 7) & ~(size_t)7;
		nstride = ((size_t)e->cur.value_size + 7) & ~(size_t)7;
		n = (size_t)ncpus;
	}
	key = malloc(e->old.key_size);
	next = malloc(e->old.key_size);
	oval = calloc(n, ostride);
	nval = calloc(n, nstride);
	aval = calloc(1, ASIDE_VALUE_MAX);
	if (!key || !next || !oval || !nval || !aval) {
		err = -ENOMEM;
		goto out;
	}
	/* At most max_entries keys: bounded even if entries come and go. */
	for (i = 0; i <= e->old.max_entries; i++) {
		if (bpf_map_get_next_key(e->old_fd, prev, next)) {
			if (errno != ENOENT)
				err = -errno;
			break;
		}
		memcpy(key, next, e->old.key_size);
		prev = key;
		if (bpf_map_lookup_elem(e->old_fd, key, oval)) {
			if (errno == ENOENT) /* gone since (an LRU eviction) */
				continue;
			err = -errno;
			break;
		}
		if (!e->conv) {
			dmsc_migrate_value(oval, e->old.value_size, nval, e->cur.value_size, ncpus);
		} else if (e->conv->convert(oval, nval, aval) &&
			   bpf_map_update_elem(e->aside_fd, key, aval, BPF_ANY) &&
			   errno != E2BIG && errno != ENOSPC) {
			err = -errno;
			pr_warn("map %s: cannot write an entry converted from %s: %s\n",
				e->conv->aside, e->name, strerror(-err));
			break;
		}
		if (bpf_map_update_elem(e->new_fd, key, nval, BPF_ANY) == 0) {
			(*copied)++;
			continue;
		}
		if (errno == E2BIG || errno == ENOSPC) {
			(*dropped)++;
			continue;
		}
		err = -errno;
		break;
	}
	if (err)
		pr_warn("map %s: cannot copy its entries into the new map: %s\n", e->name,
			strerror(-err));
out:
	free(key);
	free(next);
	free(oval);
	free(nval);
	free(aval);
	return err;
}

int dmsc_migrate_loaded(struct dmsc_migrate *m, struct bpf_object *obj)
{
	unsigned long long copied, dropped;
	struct bpf_map *map;
	size_t i;
	int err;

	for (i = 0; i < m->n; i++) {
		struct migrate_map *e = &m->maps[i];

		if (e->new_fd >= 0)
			continue;
		map = bpf_object__find_map_by_name(obj, e->name);
		if (!map || bpf_map__fd(map) < 0)
			continue;
		e->new_fd = fcntl(bpf_map__fd(map), F_DUPFD_CLOEXEC, 0);
		if (e->new_fd < 0) {
			err = -errno;
			pr_warn("map %s: %s\n", e->name, strerror(-err));
			return err;
		}
		if (e->how == DMSC_MIGRATE_EMPTY) {
			pr_info("map %s migrated (%s): a new map, which starts empty (%s)\n",
				e->name, e->why,
				type_copyable(e->cur.type)
				    ? "its old entries have no reading in the new layout; a "
				      "policy map gets the policy at the next apply"
				    : "the kernel hands no entries of this map type to "
				      "userspace");
			continue;
		}
		if (e->conv) {
			map = bpf_object__find_map_by_name(obj, e->conv->aside);
			if (!map || bpf_map__fd(map) < 0 ||
			    bpf_map__value_size(map) > ASIDE_VALUE_MAX) {
				pr_warn("map %s: its conversion needs the map %s of the same "
					"object\n",
					e->name, e->conv->aside);
				return -ENOENT;
			}
			e->aside_fd = fcntl(bpf_map__fd(map), F_DUPFD_CLOEXEC, 0);
			if (e->aside_fd < 0) {
				err = -errno;
				pr_warn("map %s: %s\n", e->conv->aside, strerror(-err));
				return err;
			}
		}
		err = copy_entries(e, &copied, &dropped);
		if (err)
			return err;
		if (dropped)
			pr_warn("map %s migrated (%s): %llu entries carried, %llu did not fit\n",
				e->name, e->why, copied, dropped);
		else
			pr_info("map %s migrated (%s): %llu entries carried%s%s\n", e->name,
				e->why, copied, e->conv ? ", converted, dmscd's part into " : "",
				e->conv ? e->conv->aside : "");
	}
	return 0;
}

int dmsc_migrate_commit(struct dmsc_migrate *m)
{
	char tmp[PATH_MAX + 16];
	int err = 0;
	size_t i;

	for (i = 0; m && i < m->n; i++) {
		struct migrate_map *e = &m->maps[i];

		if (e->new_fd < 0)
			continue;
		/* Pinned aside, then renamed over the old pin (bpffs renames
		 * atomically): the path never names nothing. bpffs refuses
		 * names with a dot. */
		snprintf(tmp, sizeof(tmp), "%s_migrating", e->path);
		unlink(tmp);
		if (bpf_obj_pin(e->new_fd, tmp) == 0 && rename(tmp, e->path) == 0)
			goto pinned;
		unlink(tmp);
		if (unlink(e->path) && errno != ENOENT) {
			err = -errno;
			pr_warn("cannot remove the old pin %s: %s\n", e->path, strerror(-err));
			continue;
		}
		if (bpf_obj_pin(e->new_fd, e->path)) {
			err = -errno;
			pr_warn("cannot pin the new map %s: %s\n", e->path, strerror(-err));
			continue;
		}
	pinned:
		pr_debug("map %s: the pin now names the new map\n", e->name);
		close(e->new_fd);
		e->new_fd = -1;
		if (e->old_fd >= 0)
			close(e->old_fd);
		e->old_fd = -1;
	}
	return err;
}

static bool known_pin(const char *kind, const char *name)
{
	char prog_pin[128];
	size_t i;

	if (strcmp(kind, "maps") == 0) {
		for (i = 0; i < DMSC_M_COUNT; i++)
			if (strcmp(name, dmsc_map_names[i]) == 0)
				return true;
		return false;
	}
	for (i = 0; i < dmsc_n_hooks; i++) {
		if (strcmp(name, dmsc_hooks[i].prog) == 0)
			return true;
		/* sk_msg attached to the map: its program pinned as <prog>_prog */
		snprintf(prog_pin, sizeof(prog_pin), "%s_prog", dmsc_hooks[i].prog);
		if (dmsc_hooks[i].attach == DMSC_ATTACH_SOCKHASH && strcmp(name, prog_pin) == 0)
			return true;
	}
	return false;
}

int dmsc_migrate_sweep(const char *pin_dir)
{
	static const char *const kinds[] = {"links", "maps"};
	char dir[PATH_MAX], path[PATH_MAX + 256];
	struct dirent *d;
	int err = 0;
	size_t k;
	DIR *dp;

	for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		snprintf(dir, sizeof(dir), "%s/%s", pin_dir, kinds[k]);
		dp = opendir(dir);
		if (!dp)
			continue;
		while ((d = readdir(dp))) {
			if (d->d_name[0] == '.' || known_pin(kinds[k], d->d_name))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
			if (unlink(path)) {
				err = -errno;
				pr_warn("cannot remove %s, a pin this build does not use: %s\n",
					path, strerror(-err));
				continue;
			}
			pr_info(
			    "removed %s: a pin of an earlier build that this one does not use\n",
			    path);
		}
		closedir(dp);
	}
	return err;
}
