// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
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

#include "dmsc/slots.h"
#include "addr.h"
#include "allow_resolve.h"
#include "log.h"
#include "apply.h"
#include "apply_steps.h"

void dmsc_format_svc_key(const struct dmsc_svc_key *k, int family, const __u32 *vip6, char *buf,
			  size_t len)
{
	char ap[DMSC_ADDR_PORT_LEN];

	dmsc_format_ip_port(family, k->vip, vip6, ntohs(k->port), ap, sizeof(ap));
	snprintf(buf, len, "%s/%s", ap, k->proto == DMSC_PROTO_UDP ? "udp" : "tcp");
}

void dmsc_format_backend(const struct dmsc_backend *be, const __u32 *be6, int family, char *buf,
			 size_t len)
{
	dmsc_format_ip_port(family, be->addr, be6, ntohs(be->port), buf, len);
}

int dmsc_svc_key_cmp(const struct dmsc_svc_key *a, const __u32 *a6, const struct dmsc_svc_key *b,
		     const __u32 *b6)
{
	int r = memcmp(a, b, sizeof(*a));

	return r ? r : memcmp(a6, b6, 4 * sizeof(__u32));
}

void dmsc_svc6_key(const struct dmsc_svc_key *k, const __u32 *vip6, struct dmsc_svc6_key *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->vip, vip6, sizeof(out->vip));
	out->port = k->port;
	out->proto = k->proto;
}

void dmsc_format_service(const struct dmsc_state_svc *s, char *buf, size_t len)
{
	char ap[DMSC_ADDR_PORT_LEN];

	/* http services share the kernel's TCP key: the flag tells them apart. */
	if (!(s->svc.flags & DMSC_SVC_F_L7)) {
		dmsc_format_svc_key(&s->key, s->family, s->vip6, buf, len);
		return;
	}
	dmsc_format_ip_port(s->family, s->key.vip, s->vip6, ntohs(s->key.port), ap, sizeof(ap));
	snprintf(buf, len, "%s/http", ap);
}

const char *dmsc_change_op_name(enum dmsc_change_op op)
{
	switch (op) {
	case DMSC_CHANGE_ADD:
		return "add";
	case DMSC_CHANGE_UPDATE:
		return "update";
	case DMSC_CHANGE_REMOVE:
		return "remove";
	}
	return "?";
}

static int svc_by_name(const void *a, const void *b)
{
	const struct dmsc_state_svc *x = a, *y = b;

	return strncmp(x->meta.name, y->meta.name, sizeof(x->meta.name));
}

static int allow_cmp(const void *a, const void *b)
{
	const struct dmsc_allow_key *x = a, *y = b;

	if (x->svc_id != y->svc_id)
		return x->svc_id < y->svc_id ? -1 : 1;
	if (x->cgroup_id != y->cgroup_id)
		return x->cgroup_id < y->cgroup_id ? -1 : 1;
	return 0;
}

static int be_index_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct dmsc_svc_key));
}

/* Every element of a hash map, as an array of entries of entry_size bytes:
 * the key at offset 0, the value right after it (both sides lay their
 * entries out so). */
static int read_entries(int fd, size_t key_size, size_t entry_size,
			void **out, size_t *n)
{
	char key[64], next[64];
	size_t cap = 0;
	char *arr = NULL, *grown;
	void *prev = NULL;

	*out = NULL;
	*n = 0;
	while (bpf_map_get_next_key(fd, prev, next) == 0) {
		memcpy(key, next, key_size);
		prev = key;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			grown = realloc(arr, cap * entry_size);
			if (!grown) {
				free(arr);
				return -ENOMEM;
			}
			arr = grown;
		}
		memset(arr + *n * entry_size, 0, entry_size);
		memcpy(arr + *n * entry_size, key, key_size);
		if (bpf_map_lookup_elem(fd, key, arr + *n * entry_size + key_size) == 0)
			(*n)++;
	}
	*out = arr;
	return 0;
}

int dmsc_read_allow(const struct dmsc_datapath *dp, struct dmsc_allow_entry **out, size_t *n)
{
	int err;

	err = read_entries(dp->fd[DMSC_M_ALLOW], sizeof(struct dmsc_allow_key),
			   sizeof(struct dmsc_allow_entry), (void **)out, n);
	if (!err && *n)
		qsort(*out, *n, sizeof(**out), allow_cmp);
	return err;
}

int dmsc_read_be_index(const struct dmsc_datapath *dp, struct dmsc_be_index_entry **out,
		       size_t *n)
{
	int err;

	err = read_entries(dp->fd[DMSC_M_BE_INDEX], sizeof(struct dmsc_svc_key),
			   sizeof(struct dmsc_be_index_entry), (void **)out, n);
	if (!err && *n)
		qsort(*out, *n, sizeof(**out), be_index_cmp);
	return err;
}

/* key6: an IPv6 service's key in dmsc_services6; NULL: key, IPv4. */
static int read_one(const struct dmsc_datapath *dp, const struct dmsc_svc_key *key,
		    const struct dmsc_svc6_key *key6, struct dmsc_state_svc *s)
{
	struct dmsc_backend6 be6;
	__u32 i, j, id;

	memset(s, 0, sizeof(*s));
	s->family = AF_INET;
	if (key6) {
		s->family = AF_INET6;
		s->key.port = key6->port;
		s->key.proto = key6->proto;
		memcpy(s->vip6, key6->vip, sizeof(s->vip6));
		if (bpf_map_lookup_elem(dp->fd[DMSC_M_SERVICES6], key6, &s->svc))
			return -errno;
	} else {
		s->key = *key;
		if (bpf_map_lookup_elem(dp->fd[DMSC_M_SERVICES], key, &s->svc))
			return -errno;
	}
	id = s->svc.id;
	if (id == 0 || id >= dp->max_services ||
	    bpf_map_lookup_elem(dp->fd[DMSC_M_SVC_META], &id, &s->meta))
		memset(&s->meta, 0, sizeof(s->meta));
	if (s->meta.n_backends > DMSC_BACKENDS_PER_SERVICE_MAX)
		s->meta.n_backends = 0;
	id = s->svc.id;
	if (id >= dp->max_services ||
	    bpf_map_lookup_elem_flags(dp->fd[DMSC_M_LIMITS], &id, &s->limits, BPF_F_LOCK))
		memset(&s->limits, 0, sizeof(s->limits));
	/* The lock word is not copied; keep it zero so that states compare. */
	memset(&s->limits.lock, 0, sizeof(s->limits.lock));
	for (i = 0; i < s->meta.n_backends; i++) {
		id = s->meta.backend_id[i];
		if (id == 0 || id >= dp->max_backends) {
			memset(&s->be[i], 0, sizeof(s->be[i]));
		} else if (key6) {
			memset(&be6, 0, sizeof(be6));
			bpf_map_lookup_elem(dp->fd[DMSC_M_BACKENDS6], &id, &be6);
			memcpy(s->be6[i], be6.addr, sizeof(s->be6[i]));
			s->be[i].port = be6.port;
			s->be[i].svc_id = be6.svc_id;
		} else if (bpf_map_lookup_elem(dp->fd[DMSC_M_BACKENDS], &id, &s->be[i])) {
			memset(&s->be[i], 0, sizeof(s->be[i]));
		}
		for (j = 0; j < DMSC_SLOTS; j++)
			if (s->svc.slot[j] == id)
				s->be_slots[i]++;
	}
	return 0;
}

/* Every service of one family's map (ipv6: dmsc_services6) into st. */
static int read_family(const struct dmsc_datapath *dp, bool ipv6, struct dmsc_state *st,
		       size_t *cap)
{
	union {
		struct dmsc_svc_key k4;
		struct dmsc_svc6_key k6;
	} key, next;
	int fd = dp->fd[ipv6 ? DMSC_M_SERVICES6 : DMSC_M_SERVICES];
	struct dmsc_state_svc *grown;
	void *prev = NULL;
	int err;

	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		if (st->n_svcs == *cap) {
			*cap = *cap ? *cap * 2 : 64;
			grown = realloc(st->svcs, *cap * sizeof(*st->svcs));
			if (!grown)
				return -ENOMEM;
			st->svcs = grown;
		}
		err = read_one(dp, &key.k4, ipv6 ? &key.k6 : NULL, &st->svcs[st->n_svcs]);
		if (err == -ENOENT)
			continue; /* deleted under us */
		if (err)
			return err;
		st->n_svcs++;
	}
	return errno == ENOENT ? 0 : -errno;
}

int dmsc_state_read(const struct dmsc_datapath *dp, struct dmsc_state *st)
{
	size_t cap = 0;
	int err;

	memset(st, 0, sizeof(*st));
	err = read_family(dp, false, st, &cap);
	if (!err)
		err = read_family(dp, true, st, &cap);
	if (err)
		goto fail;
	if (st->n_svcs)
		qsort(st->svcs, st->n_svcs, sizeof(*st->svcs), svc_by_name);
	err = dmsc_read_allow(dp, &st->allow, &st->n_allow);
	if (err)
		goto fail_other;
	err = dmsc_read_be_index(dp, &st->be_index, &st->n_be_index);
	if (err)
		goto fail_other;
	return 0;
fail:
	pr_warn("cannot read %s and %s: %s\n", DMSC_MAP_SERVICES, DMSC_MAP_SERVICES6,
		strerror(-err));
	dmsc_state_free(st);
	return err;
fail_other:
	pr_warn("cannot read the access and backend index maps: %s\n", strerror(-err));
	dmsc_state_free(st);
	return err;
}

void dmsc_state_free(struct dmsc_state *st)
{
	free(st->svcs);
	free(st->allow);
	free(st->be_index);
	memset(st, 0, sizeof(*st));
}

const struct dmsc_allow_entry *dmsc_state_allow(const struct dmsc_state *st, __u32 svc_id,
						size_t *n)
{
	size_t lo = 0, hi = st->n_allow, end;

	/* st->allow is sorted by service id first: the first rule of svc_id. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (st->allow[mid].key.svc_id < svc_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (end = lo; end < st->n_allow && st->allow[end].key.svc_id == svc_id; end++)
		;
	*n = end - lo;
	return *n ? &st->allow[lo] : NULL;
}

/* ---- apply ---------------------------------------------------------- */

static void be_index_key(struct dmsc_svc_key *k, const struct dmsc_backend *be, __u8 proto);

static size_t value_size(enum dmsc_map_id m)
{
	switch (m) {
	case DMSC_M_SERVICES:
	case DMSC_M_SERVICES6:
		return sizeof(struct dmsc_svc);
	case DMSC_M_BACKENDS:
		return sizeof(struct dmsc_backend);
	case DMSC_M_BACKENDS6:
		return sizeof(struct dmsc_backend6);
	case DMSC_M_SVC_META:
		return sizeof(struct dmsc_svc_meta);
	case DMSC_M_LIMITS:
		return sizeof(struct dmsc_limits);
	case DMSC_M_ALLOW:
		return sizeof(struct dmsc_allow_rule);
	case DMSC_M_BE_INDEX:
		return sizeof(__u32);
	default:
		return 0;
	}
}

static size_t key_size(enum dmsc_map_id m)
{
	switch (m) {
	case DMSC_M_SERVICES:
	case DMSC_M_BE_INDEX:
		return sizeof(struct dmsc_svc_key);
	case DMSC_M_SERVICES6:
		return sizeof(struct dmsc_svc6_key);
	case DMSC_M_ALLOW:
		return sizeof(struct dmsc_allow_key);
	default:
		return sizeof(__u32);
	}
}

/* Hash maps lose an element on delete; arrays are "deleted" with zeros. */
static bool is_hash(enum dmsc_map_id m)
{
	return m == DMSC_M_SERVICES || m == DMSC_M_SERVICES6 || m == DMSC_M_ALLOW ||
	       m == DMSC_M_BE_INDEX;
}

/* dmsc_limits elements hold a spin lock: userspace reads and writes them
 * under it, so the kernel never sees half a bucket. */
static __u64 elem_flags(enum dmsc_map_id m)
{
	return m == DMSC_M_LIMITS ? BPF_F_LOCK : BPF_ANY;
}

static int undo_push(struct apply_ctx *c, enum dmsc_map_id m, const void *key)
{
	struct undo *u, *grown;
	size_t vs = value_size(m);

	if (c->n_undo == c->cap_undo) {
		c->cap_undo = c->cap_undo ? c->cap_undo * 2 : 64;
		grown = realloc(c->undo, c->cap_undo * sizeof(*c->undo));
		if (!grown)
			return -ENOMEM;
		c->undo = grown;
	}
	u = &c->undo[c->n_undo];
	memset(u, 0, sizeof(*u));
	u->map = m;
	memcpy(&u->key, key, key_size(m));
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

int dmsc_apply_put(struct apply_ctx *c, enum dmsc_map_id m, const void *key, const void *val)
{
	int err;

	c->res->entries_written++;
	if (c->dry_run)
		return 0;
	err = dmsc_apply_begin(c);
	if (err)
		return err;
	err = undo_push(c, m, key);
	if (err)
		return err;
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

	if (!is_hash(m))
		return dmsc_apply_put(c, m, key, zeros);
	c->res->entries_written++;
	if (c->dry_run)
		return 0;
	err = dmsc_apply_begin(c);
	if (err)
		return err;
	err = undo_push(c, m, key);
	if (err)
		return err;
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
		} else if (is_hash(u->map)) {
			bpf_map_delete_elem(fd, &u->key);
		} else {
			memset(u->old, 0, value_size(u->map));
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
			continue; /* IPv6: TC indexes IPv4 backends only */
		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 64;
			grown = realloc(*v, *cap * sizeof(**v));
			if (!grown)
				return -ENOMEM;
			*v = grown;
		}
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

static void change(struct apply_ctx *c, enum dmsc_change_op op, const char *name,
		   const char *detail)
{
	struct dmsc_change *ch = &c->res->changes[c->res->n_changes++];

	ch->op = op;
	snprintf(ch->service, sizeof(ch->service), "%s", name);
	snprintf(ch->detail, sizeof(ch->detail), "%s", detail);
}

void dmsc_policy_svc_key(const struct dmsc_policy_service *w, struct dmsc_svc_key *k)
{
	memset(k, 0, sizeof(*k));
	k->vip = w->vip;
	k->port = htons(w->port);
	k->proto = w->protocol == DMSC_POLICY_UDP ? DMSC_PROTO_UDP : DMSC_PROTO_TCP;
}

static void __attribute__((format(printf, 3, 4)))
append(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;

	if (used >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

/* The kernel-side limits of a service: rates and bucket depths, the
 * buckets themselves empty (a changed limit starts with full buckets). */
static void plan_limits(struct plan_svc *p)
{
	const struct dmsc_policy_service *w = p->want;
	const struct dmsc_rate_limit *rl = &w->rate_limit;

	memset(&p->limits, 0, sizeof(p->limits));
	if (w->accelerate == DMSC_ACCEL_OFF)
		p->svc.flags |= DMSC_SVC_F_ACCEL_OFF;
	if (w->accelerate == DMSC_ACCEL_ON)
		p->svc.flags |= DMSC_SVC_F_ACCEL_ON;
	if (w->protocol == DMSC_POLICY_HTTP)
		p->svc.flags |= DMSC_SVC_F_L7;
	if (w->has_allow_from)
		p->svc.flags |= DMSC_SVC_F_ALLOW_LIST;
	if (!w->has_rate_limit)
		return;
	if (rl->has_connections_per_second) {
		p->svc.flags |= DMSC_SVC_F_CONN_LIMIT;
		p->limits.conn_rate = rl->connections_per_second;
		/* burst: connections at once on top of the rate; absent, one
		 * second's worth, at most the deepest bucket (the validator
		 * bounds an explicit burst so; a rate may be higher); never
		 * less than one. */
		p->limits.conn_depth = rl->has_burst ? rl->burst : rl->connections_per_second;
		if (p->limits.conn_depth > DMSC_TB_DEPTH_MAX)
			p->limits.conn_depth = DMSC_TB_DEPTH_MAX;
		if (p->limits.conn_depth == 0)
			p->limits.conn_depth = 1;
	}
	if (rl->has_bytes_per_second) {
		/* Flows of a byte-limited service stay on the path that polices
		 * them: never on the same-host fast path (docs/design.md decision 6). */
		p->svc.flags |= DMSC_SVC_F_BYTES_LIMIT | DMSC_SVC_F_ACCEL_OFF;
		p->svc.flags &= ~(__u32)DMSC_SVC_F_ACCEL_ON;
		p->limits.byte_rate = rl->bytes_per_second;
		/* Absent: 100 ms worth, at least one GSO packet. */
		p->limits.byte_depth = rl->has_bytes_burst ? rl->bytes_burst
							   : rl->bytes_per_second / 10;
		if (p->limits.byte_depth < DMSC_BYTES_BURST_MIN)
			p->limits.byte_depth = DMSC_BYTES_BURST_MIN;
		if (p->limits.byte_depth > DMSC_TB_DEPTH_MAX)
			p->limits.byte_depth = DMSC_TB_DEPTH_MAX;
	}
}

static bool limits_cfg_equal(const struct dmsc_limits *a, const struct dmsc_limits *b)
{
	return a->conn_rate == b->conn_rate && a->conn_depth == b->conn_depth &&
	       a->byte_rate == b->byte_rate && a->byte_depth == b->byte_depth;
}

/* Resolves each allow_from path to its cgroup id now; a path with no
 * cgroup yet gets an id that no cgroup has (DMSC_ALLOW_UNRESOLVED), so the
 * service stays closed to everyone else until it appears. dmscd resolves
 * every rule again when cgroups appear and go (allow_resolve.h); without
 * dmscd, the ids stay those of this apply. */
static int plan_allow(struct apply_ctx *c, struct plan_svc *p)
{
	const struct dmsc_policy_service *w = p->want;
	size_t i;

	if (!w->has_allow_from || !w->n_allow_from)
		return 0;
	if (!c->cg_root[0] && dmsc_cgroup2_mount(c->cg_root, sizeof(c->cg_root)))
		return -ENOENT;
	p->allow = calloc(w->n_allow_from, sizeof(*p->allow));
	if (!p->allow)
		return -ENOMEM;
	for (i = 0; i < w->n_allow_from; i++) {
		struct dmsc_allow_entry *e = &p->allow[p->n_allow++];

		e->key.svc_id = p->svc.id;
		snprintf(e->rule.path, sizeof(e->rule.path), "%s", w->allow_from[i]);
		e->key.cgroup_id = dmsc_allow_resolve(c->cg_root, e->rule.path);
		if (e->key.cgroup_id & DMSC_ALLOW_UNRESOLVED)
			c->res->unresolved++;
	}
	/* The same cgroup listed twice is one rule. */
	qsort(p->allow, p->n_allow, sizeof(*p->allow), allow_cmp);
	for (i = 1; i < p->n_allow;) {
		if (allow_cmp(&p->allow[i - 1], &p->allow[i]) == 0) {
			memmove(&p->allow[i], &p->allow[i + 1],
				(p->n_allow - i - 1) * sizeof(*p->allow));
			p->n_allow--;
		} else {
			i++;
		}
	}
	return 0;
}

static const struct dmsc_allow_entry *find_allow(const struct dmsc_allow_entry *a, size_t n,
						 const struct dmsc_allow_key *k)
{
	return n ? bsearch(k, a, n, sizeof(*a), allow_cmp) : NULL;
}

static bool allow_changed(const struct plan_svc *p)
{
	return p->n_allow != p->n_cur_allow ||
	       (p->n_allow && memcmp(p->allow, p->cur_allow, p->n_allow * sizeof(*p->allow)));
}

/* Rules the policy wants and the maps lack (or hold with another path). */
static int allow_adds(struct apply_ctx *c, const struct plan_svc *p)
{
	size_t i;
	int err;

	for (i = 0; i < p->n_allow; i++) {
		const struct dmsc_allow_entry *have =
			find_allow(p->cur_allow, p->n_cur_allow, &p->allow[i].key);

		if (have && !memcmp(have, &p->allow[i], sizeof(*have)))
			continue;
		err = dmsc_apply_put(c, DMSC_M_ALLOW, &p->allow[i].key, &p->allow[i].rule);
		if (err)
			return err;
	}
	return 0;
}

/* Rules the maps hold and the policy no longer wants. */
static int allow_drops(struct apply_ctx *c, const struct plan_svc *p)
{
	size_t i;
	int err;

	for (i = 0; i < p->n_cur_allow; i++) {
		if (find_allow(p->allow, p->n_allow, &p->cur_allow[i].key))
			continue;
		err = dmsc_apply_drop(c, DMSC_M_ALLOW, &p->cur_allow[i].key);
		if (err)
			return err;
	}
	return 0;
}

static void be_index_key(struct dmsc_svc_key *k, const struct dmsc_backend *be, __u8 proto)
{
	memset(k, 0, sizeof(*k));
	k->vip = be->addr;
	k->port = be->port;
	k->proto = proto;
}

/* A byte-limited service indexes its backends for TC; a backend shared by
 * two such services is indexed under the one written last. */
static int be_index_adds(struct apply_ctx *c, const struct plan_svc *p)
{
	bool had = p->cur && (p->cur->svc.flags & DMSC_SVC_F_BYTES_LIMIT);
	struct dmsc_svc_key k;
	size_t i, j;
	int err;

	if (!(p->svc.flags & DMSC_SVC_F_BYTES_LIMIT) || p->want->family == AF_INET6)
		return 0;
	for (i = 0; i < p->meta.n_backends; i++) {
		for (j = 0; had && j < p->cur->meta.n_backends; j++)
			if (p->cur->be[j].addr == p->be[i].addr &&
			    p->cur->be[j].port == p->be[i].port)
				break;
		if (had && j < p->cur->meta.n_backends)
			continue; /* indexed already */
		be_index_key(&k, &p->be[i], p->key.proto);
		err = dmsc_apply_put(c, DMSC_M_BE_INDEX, &k, &p->svc.id);
		if (err)
			return err;
	}
	return 0;
}

/* Removes index entries of `cur`'s backends that `p` (NULL: the service
 * goes) no longer indexes, if they still name this service. */
static int be_index_drops(struct apply_ctx *c, const struct dmsc_state_svc *cur,
			  const struct plan_svc *p)
{
	bool keep_any = p && (p->svc.flags & DMSC_SVC_F_BYTES_LIMIT);
	struct dmsc_svc_key k;
	__u32 owner;
	size_t i, j;
	int err;

	if (!cur || !(cur->svc.flags & DMSC_SVC_F_BYTES_LIMIT) || cur->family == AF_INET6)
		return 0;
	for (i = 0; i < cur->meta.n_backends; i++) {
		for (j = 0; keep_any && j < p->meta.n_backends; j++)
			if (p->be[j].addr == cur->be[i].addr && p->be[j].port == cur->be[i].port)
				break;
		if (keep_any && j < p->meta.n_backends)
			continue;
		be_index_key(&k, &cur->be[i], cur->key.proto);
		if (bpf_map_lookup_elem(c->dp->fd[DMSC_M_BE_INDEX], &k, &owner) ||
		    owner != cur->svc.id)
			continue;
		err = dmsc_apply_drop(c, DMSC_M_BE_INDEX, &k);
		if (err)
			return err;
	}
	return 0;
}

/* Fills p from its policy service, reusing the current backend ids of the
 * same address:port. Describes the difference in detail. */
int dmsc_plan_service(struct apply_ctx *c, struct plan_svc *p, char *detail, size_t dlen)
{
	const struct dmsc_policy_service *w = p->want;
	const struct dmsc_state_svc *cur = p->cur;
	__u32 counts[DMSC_BACKENDS_PER_SERVICE_MAX], weight[DMSC_BACKENDS_PER_SERVICE_MAX];
	bool kept[DMSC_BACKENDS_PER_SERVICE_MAX] = { false };
	char ap[DMSC_ADDR_PORT_LEN];
	size_t i, j;
	int err;

	p->svc.id = cur ? cur->svc.id : dmsc_alloc_id(c->svc_used, c->dp->max_services, &c->next_svc);
	if (!p->svc.id)
		return -ENOSPC;
	snprintf(p->meta.name, sizeof(p->meta.name), "%s", w->name);
	p->meta.n_backends = (__u32)w->n_backends;
	detail[0] = '\0';
	if (cur && strncmp(cur->meta.name, w->name, sizeof(cur->meta.name)) != 0)
		append(detail, dlen, "renamed from %s; ", cur->meta.name);
	for (i = 0; i < w->n_backends; i++) {
		const struct dmsc_policy_backend *b = &w->backends[i];
		__u32 id = 0;

		p->be[i].addr = b->addr;
		memcpy(p->be6[i], b->addr6, sizeof(p->be6[i]));
		p->be[i].port = htons(b->port);
		p->be[i].svc_id = p->svc.id;
		weight[i] = b->weight;
		p->meta.weight[i] = b->weight;
		dmsc_format_backend(&p->be[i], p->be6[i], w->family, ap, sizeof(ap));
		for (j = 0; cur && j < cur->meta.n_backends; j++) {
			if (!kept[j] && cur->be[j].addr == p->be[i].addr &&
			    !memcmp(cur->be6[j], p->be6[i], sizeof(p->be6[i])) &&
			    cur->be[j].port == p->be[i].port && cur->be[j].svc_id == p->svc.id) {
				kept[j] = true;
				id = cur->meta.backend_id[j];
				if (cur->meta.weight[j] != b->weight)
					append(detail, dlen, "%s weight %u -> %u; ", ap,
					       cur->meta.weight[j], b->weight);
				break;
			}
		}
		if (!id) {
			id = dmsc_alloc_id(c->be_used, c->dp->max_backends, &c->next_be);
			if (!id)
				return -ENOSPC;
			p->be_new[i] = true;
			append(detail, dlen, "+ %s weight %u; ", ap, b->weight);
		}
		p->meta.backend_id[i] = id;
	}
	for (j = 0; cur && j < cur->meta.n_backends; j++) {
		if (kept[j])
			continue;
		p->drop_be[p->n_drop++] = cur->meta.backend_id[j];
		dmsc_format_backend(&cur->be[j], cur->be6[j], cur->family, ap, sizeof(ap));
		append(detail, dlen, "- %s; ", ap);
	}
	if (dmsc_slot_counts(weight, (__u32)w->n_backends, counts) == 0)
		p->svc.flags |= DMSC_SVC_F_NO_BACKEND;
	plan_limits(p);
	if (cur && !limits_cfg_equal(&cur->limits, &p->limits))
		append(detail, dlen, "limits changed; ");
	err = plan_allow(c, p);
	if (err)
		return err;
	if (cur && allow_changed(p))
		append(detail, dlen, "allow_from changed; ");
	dmsc_slot_layout(counts, p->meta.backend_id, (__u32)w->n_backends, p->svc.slot);
	p->svc.table_hash = dmsc_table_hash(p->svc.slot);
	i = strlen(detail);
	if (i >= 2 && detail[i - 2] == ';')
		detail[i - 2] = '\0';
	return 0;
}

/* Marks every id the datapath references: ids in meta and ids in slot
 * tables (after an interrupted apply they may differ). */
static void mark_used(struct apply_ctx *c, const struct dmsc_state *st)
{
	size_t i, j;

	for (i = 0; i < st->n_svcs; i++) {
		const struct dmsc_state_svc *s = &st->svcs[i];

		if (s->svc.id < c->dp->max_services)
			c->svc_used[s->svc.id] = 1;
		for (j = 0; j < s->meta.n_backends; j++)
			if (s->meta.backend_id[j] < c->dp->max_backends)
				c->be_used[s->meta.backend_id[j]] = 1;
		for (j = 0; j < DMSC_SLOTS; j++)
			if (s->svc.slot[j] < c->dp->max_backends)
				c->be_used[s->svc.slot[j]] = 1;
	}
}

/* A new service's id may have had an owner whose limits were never
 * cleared (an apply killed half-way, or a datapath written before writers
 * marked their applies): whatever the id holds is overwritten with what
 * the new service wants before its element is published. */
static bool new_owner_limits_differ(struct apply_ctx *c, const struct plan_svc *p)
{
	struct dmsc_limits have;

	if (c->dry_run)
		return p->limits.conn_rate || p->limits.byte_rate;
	if (bpf_map_lookup_elem_flags(c->dp->fd[DMSC_M_LIMITS], &p->svc.id, &have, BPF_F_LOCK))
		return true;
	return !limits_cfg_equal(&have, &p->limits) || have.conn.last_ns || have.to.last_ns ||
	       have.from.last_ns || have.iface.last_ns;
}

int dmsc_plan_write(struct apply_ctx *c, const struct plan_svc *p)
{
	bool ipv6 = p->want->family == AF_INET6;
	struct dmsc_svc6_key key6;
	size_t i;
	int err;

	/* A new service: its meta first, so that an apply interrupted from
	 * here on leaves a trace of the id (a non-zero meta without a
	 * service entry) that the next one clears. */
	if (!p->cur) {
		err = dmsc_apply_put(c, DMSC_M_SVC_META, &p->svc.id, &p->meta);
		if (err)
			return err;
	}
	for (i = 0; i < p->meta.n_backends; i++) {
		if (!p->be_new[i])
			continue;
		if (ipv6) {
			struct dmsc_backend6 be6 = { .port = p->be[i].port,
						     .svc_id = p->be[i].svc_id };

			memcpy(be6.addr, p->be6[i], sizeof(be6.addr));
			err = dmsc_apply_put(c, DMSC_M_BACKENDS6, &p->meta.backend_id[i], &be6);
		} else {
			err = dmsc_apply_put(c, DMSC_M_BACKENDS, &p->meta.backend_id[i],
					     &p->be[i]);
		}
		if (err)
			return err;
	}
	/* Rules and index entries go in before the service element that
	 * uses them, and come out after it. */
	err = allow_adds(c, p);
	if (!err)
		err = be_index_adds(c, p);
	if (err)
		return err;
	if (p->cur ? !limits_cfg_equal(&p->cur->limits, &p->limits)
		   : new_owner_limits_differ(c, p)) {
		err = dmsc_apply_put(c, DMSC_M_LIMITS, &p->svc.id, &p->limits);
		if (err)
			return err;
	}
	if (p->cur && memcmp(&p->cur->meta, &p->meta, sizeof(p->meta)) != 0) {
		err = dmsc_apply_put(c, DMSC_M_SVC_META, &p->svc.id, &p->meta);
		if (err)
			return err;
	}
	if (!p->cur || memcmp(&p->cur->svc, &p->svc, sizeof(p->svc)) != 0) {
		dmsc_svc6_key(&p->key, (const __u32 *)p->want->vip6, &key6);
		err = ipv6 ? dmsc_apply_put(c, DMSC_M_SERVICES6, &key6, &p->svc)
			   : dmsc_apply_put(c, DMSC_M_SERVICES, &p->key, &p->svc);
		if (err)
			return err;
	}
	for (i = 0; i < p->n_drop; i++) {
		err = dmsc_apply_drop(c, ipv6 ? DMSC_M_BACKENDS6 : DMSC_M_BACKENDS, &p->drop_be[i]);
		if (err)
			return err;
		dmsc_apply_zero_stats(c, DMSC_M_BE_STATS, p->drop_be[i], sizeof(struct dmsc_be_stats));
	}
	err = allow_drops(c, p);
	if (!err)
		err = be_index_drops(c, p->cur, p);
	return err;
}

int dmsc_plan_remove(struct apply_ctx *c, const struct dmsc_state_svc *s,
		      const struct dmsc_allow_entry *rules, size_t n_rules)
{
	bool ipv6 = s->family == AF_INET6;
	struct dmsc_svc6_key key6;
	__u32 id = s->svc.id;
	size_t i;
	int err;

	/* The service first: no connect() can reach a backend after it, and
	 * nothing of the id is used any more. Its meta goes last: until then
	 * it marks the id as one with state to clear (dmsc_apply_sweep). */
	dmsc_svc6_key(&s->key, s->vip6, &key6);
	err = ipv6 ? dmsc_apply_drop(c, DMSC_M_SERVICES6, &key6)
		   : dmsc_apply_drop(c, DMSC_M_SERVICES, &s->key);
	if (err)
		return err;
	dmsc_apply_zero_stats(c, DMSC_M_SVC_STATS, id, sizeof(struct dmsc_svc_stats));
	dmsc_apply_zero_stats(c, DMSC_M_FP_STATS, id, sizeof(struct dmsc_fp_stats));
	if (!c->dry_run && !dmsc_apply_begin(c)) { /* a plain array: one value */
		bpf_map_update_elem(c->dp->fd[DMSC_M_FP_SVC], &id, &(struct dmsc_fp_svc){ 0 },
				    BPF_ANY);
		dmsc_apply_written(c);
	}
	if (s->limits.conn_rate || s->limits.byte_rate) {
		struct dmsc_limits none;

		memset(&none, 0, sizeof(none));
		err = dmsc_apply_put(c, DMSC_M_LIMITS, &id, &none);
	}
	for (i = 0; !err && i < n_rules; i++)
		err = dmsc_apply_drop(c, DMSC_M_ALLOW, &rules[i].key);
	if (!err)
		err = be_index_drops(c, s, NULL);
	for (i = 0; !err && i < s->meta.n_backends; i++) {
		err = dmsc_apply_drop(c, ipv6 ? DMSC_M_BACKENDS6 : DMSC_M_BACKENDS,
				      &s->meta.backend_id[i]);
		dmsc_apply_zero_stats(c, DMSC_M_BE_STATS, s->meta.backend_id[i], sizeof(struct dmsc_be_stats));
	}
	if (!err)
		err = dmsc_apply_drop(c, DMSC_M_SVC_META, &id);
	return err;
}

/* The services the maps hold, ordered by key, for find_cur. */
static int by_key(const void *a, const void *b)
{
	const struct dmsc_state_svc *const *x = a, *const *y = b;

	return dmsc_svc_key_cmp(&(*x)->key, (*x)->vip6, &(*y)->key, (*y)->vip6);
}

static const struct dmsc_state_svc **key_index(const struct dmsc_state *st)
{
	const struct dmsc_state_svc **idx = calloc(st->n_svcs + 1, sizeof(*idx));
	size_t i;

	if (!idx)
		return NULL;
	for (i = 0; i < st->n_svcs; i++)
		idx[i] = &st->svcs[i];
	if (st->n_svcs)
		qsort(idx, st->n_svcs, sizeof(*idx), by_key);
	return idx;
}

static const struct dmsc_state_svc *find_cur(const struct dmsc_state *st,
					     const struct dmsc_state_svc **idx,
					     const struct dmsc_svc_key *k, const uint8_t *vip6,
					     unsigned char *matched)
{
	struct dmsc_state_svc probe;
	const struct dmsc_state_svc *pp = &probe, **hit;
	size_t i;

	if (!st->n_svcs)
		return NULL;
	probe.key = *k;
	memcpy(probe.vip6, vip6, sizeof(probe.vip6));
	hit = bsearch(&pp, idx, st->n_svcs, sizeof(*idx), by_key);
	if (!hit)
		return NULL;
	i = (size_t)(*hit - st->svcs);
	if (matched[i])
		return NULL; /* keys are unique: the policy validator sees to it */
	matched[i] = 1;
	return *hit;
}

static size_t count_new_backends(const struct dmsc_policy *p)
{
	size_t i, n = 0;

	for (i = 0; i < p->n_services; i++)
		n += p->services[i].n_backends;
	return n;
}

static bool dmsc_allow_capacity_exceeded(const struct dmsc_datapath *dp, size_t n)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(dp->fd[DMSC_M_ALLOW], &info, &len) || n <= info.max_entries)
		return false;
	pr_warn("the policy has %zu allow_from rules; this datapath holds at most %u\n", n,
		info.max_entries);
	return true;
}

static dmsc_progress_fn progress_fn;
static void *progress_arg;
#define PROGRESS_EVERY 4096

void dmsc_apply_set_progress(dmsc_progress_fn fn, void *arg)
{
	progress_fn = fn;
	progress_arg = arg;
}

static void progress(const char *phase, size_t done, size_t total)
{
	if (progress_fn && total >= PROGRESS_EVERY && (done % PROGRESS_EVERY == 0 || done == total))
		progress_fn(phase, done, total, progress_arg);
}

int dmsc_apply(const struct dmsc_datapath *dp, const struct dmsc_policy *p, bool dry_run,
	       struct dmsc_apply_result *res)
{
	struct apply_ctx c = { .dp = dp, .res = res, .dry_run = dry_run, .next_svc = 1, .next_be = 1 };
	struct dmsc_state st = { 0 };
	unsigned char *matched = NULL, *live = NULL;
	struct dmsc_be_index_entry *keep = NULL;
	size_t n_keep = 0, cap_keep = 0;
	struct plan_svc *plan = NULL;
	const struct dmsc_state_svc **idx = NULL;
	const struct dmsc_allow_entry *rules;
	char detail[512], keybuf[DMSC_ADDR_PORT_LEN + 8];
	size_t i, n, n_backends, n_rules;
	int err;

	memset(res, 0, sizeof(*res));
	res->n_services = p->n_services;
	n_backends = count_new_backends(p);
	if (p->n_services >= dp->max_services || n_backends >= dp->max_backends) {
		pr_warn("the policy has %zu services and %zu backends; this datapath holds at "
			"most %u and %u (set with `dmscctl install --max-services N "
			"--max-backends N`)\n",
			p->n_services, n_backends, dp->max_services - 1, dp->max_backends - 1);
		return -ENOSPC;
	}
	err = dmsc_state_read(dp, &st);
	if (err)
		return err;
	c.svc_used = calloc(dp->max_services, 1);
	c.be_used = calloc(dp->max_backends, 1);
	matched = calloc(st.n_svcs + 1, 1);
	plan = calloc(p->n_services + 1, sizeof(*plan));
	res->changes = calloc(p->n_services + st.n_svcs + 1, sizeof(*res->changes));
	idx = key_index(&st);
	if (!c.svc_used || !c.be_used || !matched || !plan || !res->changes || !idx) {
		err = -ENOMEM;
		goto out;
	}
	mark_used(&c, &st);

	/* Plan everything before the first write: running out of ids is found
	 * here, with the datapath untouched. */
	for (i = 0; i < p->n_services; i++) {
		plan[i].want = &p->services[i];
		dmsc_policy_svc_key(plan[i].want, &plan[i].key);
		plan[i].cur = find_cur(&st, idx, &plan[i].key, plan[i].want->vip6, matched);
		if (plan[i].cur)
			plan[i].cur_allow =
				dmsc_state_allow(&st, plan[i].cur->svc.id, &plan[i].n_cur_allow);
		err = dmsc_plan_service(&c, &plan[i], detail, sizeof(detail));
		progress("planning", i + 1, p->n_services);
		if (err == -ENOSPC)
			pr_warn("not enough room in the datapath for services[%zu] (%s): every "
				"service or backend id is taken (capacity %u services, %u "
				"backends)\n",
				i, p->services[i].name, dp->max_services - 1, dp->max_backends - 1);
		if (err)
			goto out;
		if (!plan[i].cur) {
			dmsc_format_svc_key(&plan[i].key, plan[i].want->family,
					     (const __u32 *)plan[i].want->vip6, keybuf, sizeof(keybuf));
			snprintf(detail, sizeof(detail), "%s, %zu backend%s", keybuf,
				 plan[i].want->n_backends, plan[i].want->n_backends == 1 ? "" : "s");
			change(&c, DMSC_CHANGE_ADD, plan[i].want->name, detail);
		} else if (memcmp(&plan[i].cur->svc, &plan[i].svc, sizeof(plan[i].svc)) ||
			   memcmp(&plan[i].cur->meta, &plan[i].meta, sizeof(plan[i].meta)) ||
			   !limits_cfg_equal(&plan[i].cur->limits, &plan[i].limits) || detail[0]) {
			change(&c, DMSC_CHANGE_UPDATE, plan[i].want->name,
			       detail[0] ? detail : "slot table rebuilt");
		}
	}

	for (i = 0, n_rules = 0; i < p->n_services; i++)
		n_rules += plan[i].n_allow;
	if (dmsc_allow_capacity_exceeded(dp, n_rules)) {
		err = -ENOSPC;
		goto out;
	}

	/* What an interrupted apply left goes first, before any id can get a
	 * new owner: rules and index entries of ids without a service entry
	 * always (they are in st already), the arrays when the install record
	 * says an apply was interrupted. */
	if (!dry_run) {
		bool interrupted = false;

		err = dmsc_datapath_interrupted(dp, &interrupted);
		live = calloc(dp->max_services, 1);
		if (!err && !live)
			err = -ENOMEM;
		for (i = 0; !err && i < st.n_svcs; i++) {
			if (st.svcs[i].svc.id < dp->max_services)
				live[st.svcs[i].svc.id] = 1;
			err = dmsc_be_index_own(&keep, &n_keep, &cap_keep, &st.svcs[i].key,
						st.svcs[i].svc.id, st.svcs[i].svc.flags,
						st.svcs[i].be, st.svcs[i].meta.n_backends);
		}
		dmsc_be_index_sort(keep, n_keep);
		if (!err)
			err = dmsc_apply_sweep(&c, live, st.allow, st.n_allow, st.be_index,
					       st.n_be_index, keep, n_keep, interrupted,
					       &res->repaired);
		if (err)
			goto out;
	}
	for (i = 0; i < p->n_services; i++) {
		err = dmsc_plan_write(&c, &plan[i]);
		if (err)
			goto fail;
		if (!dry_run)
			progress("writing", i + 1, p->n_services);
	}
	for (i = 0; i < st.n_svcs; i++) {
		if (matched[i])
			continue;
		dmsc_format_svc_key(&st.svcs[i].key, st.svcs[i].family, st.svcs[i].vip6, keybuf,
				     sizeof(keybuf));
		change(&c, DMSC_CHANGE_REMOVE, st.svcs[i].meta.name, keybuf);
		rules = dmsc_state_allow(&st, st.svcs[i].svc.id, &n);
		err = dmsc_plan_remove(&c, &st.svcs[i], rules, n);
		if (err)
			goto fail;
	}
	goto out;
fail:
	pr_warn("apply failed after %zu writes: rolling back\n", c.n_undo);
	dmsc_apply_rollback(&c);
out:
	/* Success, or rolled back: the maps hold a whole policy again. A
	 * failure to clear the mark leaves it for the next apply, which
	 * then checks everything. */
	dmsc_apply_finish(&c);
	dmsc_apply_ctx_release(&c);
	free(live);
	free(keep);
	free(c.svc_used);
	free(c.be_used);
	for (i = 0; plan && i < p->n_services; i++)
		free(plan[i].allow);
	free(idx);
	free(matched);
	free(plan);
	dmsc_state_free(&st);
	return err;
}

int dmsc_plan_be_index_drops(struct apply_ctx *c, const struct dmsc_state_svc *s)
{
	return be_index_drops(c, s, NULL);
}

void dmsc_apply_ctx_release(struct apply_ctx *c)
{
	size_t i;

	for (i = 0; i < c->n_undo; i++)
		free(c->undo[i].old);
	free(c->undo);
	c->undo = NULL;
	c->n_undo = c->cap_undo = 0;
}

void dmsc_apply_result_free(struct dmsc_apply_result *res)
{
	free(res->changes);
	memset(res, 0, sizeof(*res));
}
