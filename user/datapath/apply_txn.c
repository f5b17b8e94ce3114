// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl's apply, its writes: every map update recorded with its undo,
 * rollback, the sweep of what no service owns any more, the backend index
 * ownership and id allocation.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "array.h"
#include "dmsc/slots.h"
#include "allow_resolve.h"
#include "log.h"
#include "apply.h"
#include "apply_steps.h"
#include "health.h"

/* ---- apply ---------------------------------------------------------- */


/* dmsc_limits elements hold a spin lock: userspace reads and writes them
 * under it, so the kernel never sees half a bucket. */
static __u64 elem_flags(enum dmsc_map_id m)
{
	return m == DMSC_M_LIMITS ? BPF_F_LOCK : BPF_ANY;
}

static int undo_push(struct apply_ctx *c, enum dmsc_map_id m, const void *key)
{
	struct undo *u, *grown;
	size_t vs = dmsc_map_value_sizes[m];

	grown = dmsc_array_room(c->undo, c->n_undo, &c->cap_undo, sizeof(*c->undo), 64);
	if (!grown)
		return -ENOMEM;
	c->undo = grown;
	u = &c->undo[c->n_undo];
	memset(u, 0, sizeof(*u));
	u->map = m;
	memcpy(&u->key, key, dmsc_map_key_sizes[m]);
	u->old = calloc(1, vs);
	if (!u->old)
		return -ENOMEM;
	u->existed = bpf_map_lookup_elem_flags(c->dp->fd[m], key, u->old, elem_flags(m)) == 0;
	c->n_undo++;
	return 0;
}

int dmsc_apply_begin(struct apply_ctx *c)
{
	const char *kill = getenv("DMSC_TEST_KILL_AFTER_WRITES");
	bool interrupted = false;
	int err;

	if (c->dry_run || c->begun)
		return 0;
	c->kill_after = kill ? strtoul(kill, NULL, 10) : 0;
	err = dmsc_datapath_write_begin(c->dp, &interrupted);
	if (err)
		return err;
	c->begun = true;
	dmsc_apply_written(c);
	return 0;
}

void dmsc_apply_written(struct apply_ctx *c)
{
	if (c->kill_after && ++c->n_writes >= c->kill_after)
		raise(SIGKILL);
}

int dmsc_apply_finish(struct apply_ctx *c)
{
	int err;

	if (!c->begun)
		return 0;
	err = dmsc_datapath_write_end(c->dp);
	if (!err)
		c->begun = false;
	return err;
}

/* One entry about to be written or deleted: counted and, unless this is a
 * dry run, the transaction begun and the entry's old value kept for the
 * undo. 1: a dry run, nothing to write. */
static int write_begin(struct apply_ctx *c, enum dmsc_map_id m, const void *key)
{
	int err;

	c->res->entries_written++;
	if (c->dry_run)
		return 1;
	err = dmsc_apply_begin(c);
	return err ? err : undo_push(c, m, key);
}

int dmsc_apply_put(struct apply_ctx *c, enum dmsc_map_id m, const void *key, const void *val)
{
	int err = write_begin(c, m, key);

	if (err)
		return err > 0 ? 0 : err;
	if (bpf_map_update_elem(c->dp->fd[m], key, val, elem_flags(m))) {
		err = -errno;
		pr_warn("cannot write %s: %s\n", dmsc_map_names[m], strerror(-err));
		return err;
	}
	dmsc_apply_written(c);
	return 0;
}

int dmsc_apply_drop(struct apply_ctx *c, enum dmsc_map_id m, const void *key)
{
	static const char zeros[sizeof(struct dmsc_svc_meta)];
	int err;

	if (!dmsc_map_is_hash[m])
		return dmsc_apply_put(c, m, key, zeros);
	err = write_begin(c, m, key);
	if (err)
		return err > 0 ? 0 : err;
	if (bpf_map_delete_elem(c->dp->fd[m], key) && errno != ENOENT) {
		err = -errno;
		pr_warn("cannot delete from %s: %s\n", dmsc_map_names[m], strerror(-err));
		return err;
	}
	dmsc_apply_written(c);
	return 0;
}

void dmsc_apply_rollback(struct apply_ctx *c)
{
	size_t i;

	for (i = c->n_undo; i-- > 0;) {
		struct undo *u = &c->undo[i];
		int fd = c->dp->fd[u->map];

		if (u->existed) {
			bpf_map_update_elem(fd, &u->key, u->old, elem_flags(u->map));
		} else if (dmsc_map_is_hash[u->map]) {
			bpf_map_delete_elem(fd, &u->key);
		} else {
			memset(u->old, 0, dmsc_map_value_sizes[u->map]);
			bpf_map_update_elem(fd, &u->key, u->old, elem_flags(u->map));
		}
	}
	c->res->rolled_back = true;
}

/* Statistics of an id that is given up start from zero for its next
 * owner. Not undone: counters of a removed id mean nothing. */
void dmsc_apply_zero_stats(struct apply_ctx *c, enum dmsc_map_id m, __u32 id, size_t vs)
{
	size_t stride = (vs + 7) & ~(size_t)7;
	void *zeros;

	if (c->dry_run || dmsc_apply_begin(c))
		return;
	zeros = calloc(c->dp->nr_cpus, stride);
	if (!zeros)
		return;
	bpf_map_update_elem(c->dp->fd[m], &id, zeros, BPF_ANY);
	free(zeros);
	dmsc_apply_written(c);
}

/* A write of the sweep: not undone by a rollback. */
static int sweep_put(struct apply_ctx *c, enum dmsc_map_id m, const void *key, const void *val,
		     size_t *n)
{
	int err = dmsc_apply_begin(c);

	if (err)
		return err;
	c->res->entries_written++;
	(*n)++;
	if (val ? bpf_map_update_elem(c->dp->fd[m], key, val, elem_flags(m))
		: bpf_map_delete_elem(c->dp->fd[m], key) && errno != ENOENT) {
		err = -errno;
		pr_warn("cannot clear an entry of %s left by an interrupted apply: %s\n",
			dmsc_map_names[m], strerror(-err));
		return err;
	}
	dmsc_apply_written(c);
	return 0;
}

static bool is_live(const struct apply_ctx *c, const unsigned char *live, __u32 id)
{
	return id > 0 && id < c->dp->max_services && live[id];
}

/* Clears one id that no service entry holds: counters, limits, the
 * backends its meta lists (those still naming it), and its meta last. */
static int sweep_id(struct apply_ctx *c, __u32 id, const struct dmsc_svc_meta *meta, size_t *n)
{
	static const struct dmsc_backend zero_be;
	static const struct dmsc_backend6 zero_be6;
	struct dmsc_limits none;
	struct dmsc_backend6 be6;
	struct dmsc_backend be;
	__u32 i, bid;
	int err;

	dmsc_apply_zero_stats(c, DMSC_M_SVC_STATS, id, sizeof(struct dmsc_svc_stats));
	dmsc_apply_zero_stats(c, DMSC_M_FP_STATS, id, sizeof(struct dmsc_fp_stats));
	err = sweep_put(c, DMSC_M_FP_SVC, &id, &(struct dmsc_fp_svc){ 0 }, n);
	memset(&none, 0, sizeof(none));
	if (!err)
		err = sweep_put(c, DMSC_M_LIMITS, &id, &none, n);
	for (i = 0; !err && meta && i < meta->n_backends && i < DMSC_BACKENDS_PER_SERVICE_MAX;
	     i++) {
		bid = meta->backend_id[i];
		if (bid == 0 || bid >= c->dp->max_backends)
			continue;
		if (bpf_map_lookup_elem(c->dp->fd[DMSC_M_BACKENDS6], &bid, &be6) == 0 &&
		    be6.svc_id == id) {
			err = sweep_put(c, DMSC_M_BACKENDS6, &bid, &zero_be6, n);
			if (err)
				break;
		}
		if (bpf_map_lookup_elem(c->dp->fd[DMSC_M_BACKENDS], &bid, &be) || be.svc_id != id)
			continue;
		err = sweep_put(c, DMSC_M_BACKENDS, &bid, &zero_be, n);
		dmsc_apply_zero_stats(c, DMSC_M_BE_STATS, bid, sizeof(struct dmsc_be_stats));
		if (!c->dry_run)
			dmsc_health_zero(c->dp, bid);
	}
	if (!err && meta)
		err = sweep_put(c, DMSC_M_SVC_META, &id, &(struct dmsc_svc_meta){ 0 }, n);
	return err;
}

static int be_index_entry_cmp(const void *a, const void *b)
{
	const struct dmsc_be_index_entry *x = a, *y = b;
	int k = memcmp(&x->key, &y->key, sizeof(x->key));

	return k ? k : (x->svc_id > y->svc_id) - (x->svc_id < y->svc_id);
}

int dmsc_be_index_own(struct dmsc_be_index_entry **v, size_t *n, size_t *cap,
		      const struct dmsc_svc_key *svc, __u32 id, __u32 flags,
		      const struct dmsc_backend *be, size_t n_be)
{
	struct dmsc_be_index_entry *grown;
	size_t i;

	if (!(flags & DMSC_SVC_F_BYTES_LIMIT))
		return 0;
	for (i = 0; i < n_be; i++) {
		if (!be[i].addr)
			continue; /* IPv6: dmsc_be_index6, dropped by its service's apply only */
		grown = dmsc_array_room(*v, *n, cap, sizeof(**v), 64);
		if (!grown)
			return -ENOMEM;
		*v = grown;
		memset(&(*v)[*n], 0, sizeof(**v));
		be_index_key(&(*v)[*n].key, &be[i], svc->proto);
		(*v)[*n].svc_id = id;
		(*n)++;
	}
	return 0;
}

void dmsc_be_index_sort(struct dmsc_be_index_entry *v, size_t n)
{
	if (n)
		qsort(v, n, sizeof(*v), be_index_entry_cmp);
}

bool dmsc_be_index_owned(const struct dmsc_be_index_entry *keep, size_t n_keep,
			 const struct dmsc_be_index_entry *e)
{
	return n_keep && bsearch(e, keep, n_keep, sizeof(*keep), be_index_entry_cmp);
}

int dmsc_apply_sweep(struct apply_ctx *c, const unsigned char *live,
		     const struct dmsc_allow_entry *allow, size_t n_allow,
		     const struct dmsc_be_index_entry *be_index, size_t n_be_index,
		     const struct dmsc_be_index_entry *keep, size_t n_keep, bool arrays,
		     size_t *n)
{
	static const struct dmsc_svc_meta zero_meta;
	struct dmsc_svc_meta meta;
	struct dmsc_limits lim;
	size_t i;
	__u32 id;
	int err = 0;

	*n = 0;
	if (c->dry_run)
		return 0;
	/* After an interrupted apply, this one takes the mark over even if it
	 * finds nothing to write, so that its end clears it. */
	if (arrays) {
		err = dmsc_apply_begin(c);
		if (err)
			return err;
	}
	/* Rules first: they are what would open a service to a cgroup its
	 * policy does not name, once a new service takes the id. */
	for (i = 0; !err && i < n_allow; i++)
		if (!is_live(c, live, allow[i].key.svc_id))
			err = sweep_put(c, DMSC_M_ALLOW, &allow[i].key, NULL, n);
	for (i = 0; !err && i < n_be_index; i++)
		if (!is_live(c, live, be_index[i].svc_id) ||
		    !dmsc_be_index_owned(keep, n_keep, &be_index[i]))
			err = sweep_put(c, DMSC_M_BE_INDEX, &be_index[i].key, NULL, n);
	for (id = 1; !err && arrays && id < c->dp->max_services; id++) {
		bool has_meta, has_limits;

		if (live[id])
			continue;
		has_meta = bpf_map_lookup_elem(c->dp->fd[DMSC_M_SVC_META], &id, &meta) == 0 &&
			   memcmp(&meta, &zero_meta, sizeof(meta)) != 0;
		has_limits = bpf_map_lookup_elem_flags(c->dp->fd[DMSC_M_LIMITS], &id, &lim,
						       BPF_F_LOCK) == 0 &&
			     (lim.conn_rate || lim.conn_depth || lim.byte_rate || lim.byte_depth);
		if (has_meta || has_limits)
			err = sweep_id(c, id, has_meta ? &meta : NULL, n);
	}
	if (*n)
		pr_warn("repaired %zu map entr%s left by an interrupted apply\n", *n,
			*n == 1 ? "y" : "ies");
	return err;
}

/* ---- the guard's index (docs/design.md decision 74) ------------------- */

static int be_mtls_cmp(const void *a, const void *b)
{
	const struct dmsc_be_mtls_entry *x = a, *y = b;
	int k;

	if (x->map != y->map)
		return x->map < y->map ? -1 : 1;
	k = memcmp(x->key, y->key, sizeof(x->key));
	return k ? k : (x->id > y->id) - (x->id < y->id);
}

/* The same map and address:port, whatever the id. */
static int be_mtls_key_cmp(const void *a, const void *b)
{
	const struct dmsc_be_mtls_entry *x = a, *y = b;

	if (x->map != y->map)
		return x->map < y->map ? -1 : 1;
	return memcmp(x->key, y->key, sizeof(x->key));
}

void dmsc_be_mtls_sort(struct dmsc_be_mtls_entry *v, size_t n)
{
	if (n)
		qsort(v, n, sizeof(*v), be_mtls_cmp);
}

/* Every entry of dmsc_be_mtls and dmsc_be_mtls6, read before any is
 * deleted (a walk resumed from a deleted key starts over). */
static int read_be_mtls(const struct dmsc_datapath *dp, struct dmsc_be_mtls_entry **v, size_t *n)
{
	static const enum dmsc_map_id maps[] = { DMSC_M_BE_MTLS, DMSC_M_BE_MTLS6 };
	unsigned char key[sizeof(struct dmsc_svc6_key)], next[sizeof(key)];
	struct dmsc_be_mtls_entry *grown, *e;
	size_t cap = 0, i;
	void *prev;

	*v = NULL;
	*n = 0;
	for (i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		size_t ks = dmsc_map_key_sizes[maps[i]];
		int fd = dp->fd[maps[i]];

		for (prev = NULL; bpf_map_get_next_key(fd, prev, next) == 0; prev = key) {
			memcpy(key, next, ks);
			grown = dmsc_array_room(*v, *n, &cap, sizeof(**v), 64);
			if (!grown) {
				free(*v);
				*v = NULL;
				return -ENOMEM;
			}
			*v = grown;
			e = &(*v)[*n];
			memset(e, 0, sizeof(*e));
			e->map = maps[i];
			memcpy(e->key, key, ks);
			if (bpf_map_lookup_elem(fd, key, &e->id) == 0)
				(*n)++;
		}
	}
	return 0;
}

/* What an entry of the maps needs: nothing (it names a guarded backend at
 * its address:port), a new id (*id: it names none, and one is there), or
 * to go (no guarded backend is at its address:port). */
enum be_mtls_verdict { BE_MTLS_KEEP, BE_MTLS_REPOINT, BE_MTLS_DROP };

static enum be_mtls_verdict be_mtls_judge(const struct dmsc_be_mtls_entry *keep, size_t n_keep,
					  const struct dmsc_be_mtls_entry *e, __u32 *id)
{
	const struct dmsc_be_mtls_entry *hit;

	if (!n_keep)
		return BE_MTLS_DROP;
	if (bsearch(e, keep, n_keep, sizeof(*keep), be_mtls_cmp))
		return BE_MTLS_KEEP;
	hit = bsearch(e, keep, n_keep, sizeof(*keep), be_mtls_key_cmp);
	if (!hit)
		return BE_MTLS_DROP;
	*id = hit->id;
	return BE_MTLS_REPOINT;
}

int dmsc_be_mtls_stale(const struct dmsc_datapath *dp, const struct dmsc_be_mtls_entry *keep,
		       size_t n_keep, bool *found)
{
	struct dmsc_be_mtls_entry *have;
	size_t n_have, i;
	__u32 id;
	int err = read_be_mtls(dp, &have, &n_have);

	*found = false;
	for (i = 0; !err && i < n_have && !*found; i++)
		*found = be_mtls_judge(keep, n_keep, &have[i], &id) != BE_MTLS_KEEP;
	free(have);
	return err;
}

int dmsc_be_mtls_sweep(struct apply_ctx *c, const struct dmsc_be_mtls_entry *keep, size_t n_keep,
		       size_t *n)
{
	struct dmsc_be_mtls_entry *have;
	size_t n_have, i, n_drop = 0, n_repoint = 0;
	int pass, err;
	__u32 id;

	*n = 0;
	if (c->dry_run)
		return 0;
	err = read_be_mtls(c->dp, &have, &n_have);
	if (err) {
		pr_warn("cannot read %s and %s: %s\n", dmsc_map_names[DMSC_M_BE_MTLS],
			dmsc_map_names[DMSC_M_BE_MTLS6], strerror(-err));
		return err;
	}
	/* Entries a guarded backend needs are put right before anything is
	 * deleted, so that no guarded backend is unguarded for a moment. */
	for (pass = 0; !err && pass < 2; pass++) {
		for (i = 0; !err && i < n_have; i++) {
			enum be_mtls_verdict v = be_mtls_judge(keep, n_keep, &have[i], &id);

			if (pass == 0 && v == BE_MTLS_REPOINT) {
				err = sweep_put(c, have[i].map, have[i].key, &id, n);
				n_repoint++;
			} else if (pass == 1 && v == BE_MTLS_DROP) {
				err = sweep_put(c, have[i].map, have[i].key, NULL, n);
				n_drop++;
			}
		}
	}
	if (n_drop || n_repoint)
		pr_warn("%s, %s: deleted %zu entr%s that no guarded backend needs, pointed %zu "
			"back at their guarded backend (left by an interrupted apply)\n",
			dmsc_map_names[DMSC_M_BE_MTLS], dmsc_map_names[DMSC_M_BE_MTLS6], n_drop,
			n_drop == 1 ? "y" : "ies",
			n_repoint);
	free(have);
	return err;
}

__u32 dmsc_alloc_id(unsigned char *used, __u32 max, __u32 *next)
{
	__u32 n, id;

	for (n = 0; n < max; n++) {
		id = (*next + n) % max;
		if (id == 0 || used[id])
			continue;
		used[id] = 1;
		*next = id + 1;
		return id;
	}
	return 0;
}
