/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Every map of the datapath, for every BPF object: each object defines them
 * all, and install pins them by name, so the objects share one set (libbpf
 * reuses a map that is already pinned). The definitions are generated from
 * the one list of maps, dmsc/maps.h; layouts come from dmsc/shared.h.
 *
 * Weak: an object is linked from several compilation units (one per hook
 * family, `bpftool gen object`), each including this file; the linker keeps
 * one definition of each map per object.
 */
#ifndef DMSC_MAPS_BPF_H
#define DMSC_MAPS_BPF_H

#include "dmsc/maps.h"
#include "dmsc/shared.h"

/* A row of DMSC_MAPS as a map definition: its type, the flags and
 * max_entries that type takes (dmsc/maps.h), its key and value. */
#define DMSC_BPF_MAX_SVC(n) __uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
#define DMSC_BPF_MAX_BE(n) __uint(max_entries, DMSC_DEFAULT_MAX_BACKENDS);
#define DMSC_BPF_MAX_FIXED(n) __uint(max_entries, n);
#define DMSC_BPF_ON_DEMAND __uint(map_flags, BPF_F_NO_PREALLOC);
#define DMSC_BPF_ATTRS_HASH(size, n) DMSC_BPF_ON_DEMAND DMSC_BPF_MAX_##size(n)
#define DMSC_BPF_ATTRS_SK_STORAGE(size, n) DMSC_BPF_ON_DEMAND
#define DMSC_BPF_ATTRS_ARRAY(size, n) DMSC_BPF_MAX_##size(n)
#define DMSC_BPF_ATTRS_PERCPU_ARRAY(size, n) DMSC_BPF_MAX_##size(n)
#define DMSC_BPF_ATTRS_LRU_HASH(size, n) DMSC_BPF_MAX_##size(n)
#define DMSC_BPF_ATTRS_SOCKHASH(size, n) DMSC_BPF_MAX_##size(n)
#define DMSC_BPF_MAP(id, name, size, kind, n, k, v)                                                \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_##kind);                                                 \
		DMSC_BPF_ATTRS_##kind(size, n)                                                     \
		__type(key, k);                                                                    \
		__type(value, v);                                                                  \
	} name __weak SEC(".maps");

DMSC_MAPS(DMSC_BPF_MAP)

#define DMSC_AF_INET 2
#define DMSC_AF_INET6 10

/* bpf_sock_ops.remote_port: the 16-bit network-order port, which the kernel
 * puts in the upper half of the u32 on little-endian hosts and in the lower
 * half on big-endian ones. A port is never 0, so the half that is set is the
 * port. (local_port is in host order.) */
static __always_inline __u16 sockops_remote_port(__u32 remote_port)
{
	return remote_port > 0xffff ? (__u16)(remote_port >> 16) : (__u16)remote_port;
}

static __always_inline void count_reason(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&dmsc_reasons, &reason);

	if (n)
		*n += 1;
}

/* The backend of this host that dmsc_be_mtls or dmsc_be_mtls6 (`index`)
 * names at `key`, from its family's `backends`; NULL: none, or not TCP,
 * the guard's only protocol (docs/design.md decisions 33, 44 and 70). The
 * caller compares the entry's address and port with the key: userspace
 * drops an index entry after its backend, so a stale one names another. */
static __always_inline void *mtls_backend(void *index, void *backends, const void *key, __u8 proto)
{
	__u32 *id;

	if (proto != DMSC_PROTO_TCP)
		return NULL;
	id = bpf_map_lookup_elem(index, key);
	return id ? bpf_map_lookup_elem(backends, id) : NULL;
}

static __always_inline struct dmsc_svc_stats *svc_stats(__u32 svc_id)
{
	return bpf_map_lookup_elem(&dmsc_svc_stats, &svc_id);
}

enum dmsc_bucket_id {
	DMSC_BUCKET_TO,    /* mesh clients towards the service */
	DMSC_BUCKET_FROM,  /* the service back to mesh clients */
	DMSC_BUCKET_IFACE, /* arriving on an --interface for a local backend */
};

/* Polices `bytes` against one of a service's byte buckets: returns an
 * enum dmsc_tb_verdict. No limit (or no entry: counted) passes. */
static __always_inline int police_bytes(__u32 svc_id, __u64 bytes, enum dmsc_bucket_id which)
{
	struct dmsc_limits *l = bpf_map_lookup_elem(&dmsc_limits, &svc_id);
	__u64 now;
	int verdict;

	if (!l) {
		count_reason(DMSC_R_LIMITS_MISSING);
		return DMSC_TB_PASS;
	}
	if (!l->byte_rate)
		return DMSC_TB_PASS;
	now = bpf_ktime_get_ns();
	bpf_spin_lock(&l->lock);
	if (which == DMSC_BUCKET_TO)
		verdict = dmsc_tb_police(&l->to, now, l->byte_rate, l->byte_depth, bytes);
	else if (which == DMSC_BUCKET_FROM)
		verdict = dmsc_tb_police(&l->from, now, l->byte_rate, l->byte_depth, bytes);
	else
		verdict = dmsc_tb_police(&l->iface, now, l->byte_rate, l->byte_depth, bytes);
	bpf_spin_unlock(&l->lock);
	return verdict;
}

#endif /* DMSC_MAPS_BPF_H */
