// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl's apply, the state it starts from: services, allow rules and the
 * backend index read back from the pinned maps, and their text forms.
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

void dmsc_format_addr_port(__u32 addr_be, __u16 port_be, char *buf, size_t len)
{
	dmsc_format_ip_port(AF_INET, addr_be, NULL, ntohs(port_be), buf, len);
}

void dmsc_format_backend(const struct dmsc_backend *be, const __u32 *be6, int family, char *buf,
			 size_t len)
{
	dmsc_format_ip_port(family, be->addr, be6, ntohs(be->port), buf, len);
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

int allow_cmp(const void *a, const void *b)
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
		grown = dmsc_array_room(arr, *n, &cap, entry_size, 64);
		if (!grown) {
			free(arr);
			return -ENOMEM;
		}
		arr = grown;
		memset(arr + *n * entry_size, 0, entry_size);
		memcpy(arr + *n * entry_size, key, key_size);
		if (bpf_map_lookup_elem(fd, key, arr + *n * entry_size + key_size) == 0)
			(*n)++;
	}
	*out = arr;
	return 0;
}

/* read_entries() of map m, sorted by cmp */
static int read_sorted(const struct dmsc_datapath *dp, enum dmsc_map_id m, size_t entry_size,
		       int (*cmp)(const void *, const void *), void **out, size_t *n)
{
	int err = read_entries(dp->fd[m], dmsc_map_key_sizes[m], entry_size, out, n);

	if (!err && *n)
		qsort(*out, *n, entry_size, cmp);
	return err;
}

int dmsc_read_allow(const struct dmsc_datapath *dp, struct dmsc_allow_entry **out, size_t *n)
{
	return read_sorted(dp, DMSC_M_ALLOW, sizeof(**out), allow_cmp, (void **)out, n);
}

int dmsc_read_be_index(const struct dmsc_datapath *dp, struct dmsc_be_index_entry **out,
		       size_t *n)
{
	return read_sorted(dp, DMSC_M_BE_INDEX, sizeof(**out), be_index_cmp, (void **)out, n);
}

void svc_ident(const struct dmsc_svc_key *key, const struct dmsc_svc6_key *key6, int *family,
	       struct dmsc_svc_key *k, __u32 vip6[4])
{
	if (!key6) {
		*family = AF_INET;
		*k = *key;
		return;
	}
	*family = AF_INET6;
	k->port = key6->port;
	k->proto = key6->proto;
	memcpy(vip6, key6->vip, sizeof(key6->vip));
}

/* key6: an IPv6 service's key in dmsc_services6; NULL: key, IPv4. */
static int read_one(const struct dmsc_datapath *dp, const struct dmsc_svc_key *key,
		    const struct dmsc_svc6_key *key6, struct dmsc_state_svc *s)
{
	struct dmsc_backend6 be6;
	__u32 i, j, id;

	memset(s, 0, sizeof(*s));
	if (key6 ? bpf_map_lookup_elem(dp->fd[DMSC_M_SERVICES6], key6, &s->svc)
		 : bpf_map_lookup_elem(dp->fd[DMSC_M_SERVICES], key, &s->svc))
		return -errno;
	svc_ident(key, key6, &s->family, &s->key, s->vip6);
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
			s->be[i].flags = be6.flags;
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
		grown = dmsc_array_room(st->svcs, st->n_svcs, cap, sizeof(*st->svcs), 64);
		if (!grown)
			return -ENOMEM;
		st->svcs = grown;
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
