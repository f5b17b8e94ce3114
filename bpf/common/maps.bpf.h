/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Every map of the datapath, for every BPF object: each object defines them
 * all, and install pins them by name, so the objects share one set (libbpf
 * reuses a map that is already pinned). Layouts come from dmsc/shared.h.
 *
 * Weak: an object is linked from several compilation units (one per hook
 * family, `bpftool gen object`), each including this file; the linker keeps
 * one definition of each map per object.
 */
#ifndef DMSC_MAPS_BPF_H
#define DMSC_MAPS_BPF_H

#include "dmsc/shared.h"

#define DMSC_DEFAULT_MAX_ALLOW 16384

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
	__type(key, struct dmsc_svc_key);
	__type(value, struct dmsc_svc);
} dmsc_services __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct dmsc_backend);
} dmsc_backends __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct dmsc_svc_meta);
} dmsc_svc_meta __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct dmsc_svc_stats);
} dmsc_svc_stats __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct dmsc_be_stats);
} dmsc_be_stats __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DMSC_R_MAX);
	__type(key, __u32);
	__type(value, __u64);
} dmsc_reasons __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct dmsc_sock_vip);
} dmsc_sock_vip __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} dmsc_sock_cgroup __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dmsc_install);
} dmsc_install __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct dmsc_limits);
} dmsc_limits __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DMSC_DEFAULT_MAX_ALLOW);
	__type(key, struct dmsc_allow_key);
	__type(value, struct dmsc_allow_rule);
} dmsc_allow __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DMSC_DEFAULT_MAX_BACKENDS);
	__type(key, struct dmsc_svc_key);
	__type(value, __u32);
} dmsc_be_index __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DMSC_DEFAULT_MAX_BACKENDS);
	__type(key, struct dmsc_svc_key);
	__type(value, __u32);
} dmsc_be_mtls __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct dmsc_be_health);
} dmsc_be_health __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dmsc_l7_conf);
} dmsc_l7_conf __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dmsc_l7_conf);
} dmsc_tunnel_conf __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DMSC_L7_HANDOFF_MAX);
	__type(key, struct dmsc_l7_handoff_key);
	__type(value, struct dmsc_l7_handoff);
} dmsc_l7_handoff __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct dmsc_l7_own);
} dmsc_l7_own __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DMSC_L7_NETNS_MAX);
	__type(key, __u64);
	__type(value, struct dmsc_l7_conf);
} dmsc_l7_netns __weak SEC(".maps");

/* IPv6 (dmsc/shared.h): the IPv4 maps' twins, sized alike. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
	__type(key, struct dmsc_svc6_key);
	__type(value, struct dmsc_svc);
} dmsc_services6 __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct dmsc_backend6);
} dmsc_backends6 __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct dmsc_sock_vip6);
} dmsc_sock_vip6 __weak SEC(".maps");

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

/* The same-host fast path (bpf/fastpath/). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, DMSC_FP_SOCKS_MAX);
	__type(key, __u64); /* socket cookie */
	__type(value, __u64);
} dmsc_fp_socks __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DMSC_FP_PENDING_MAX);
	__type(key, struct dmsc_fp_conn_key);
	__type(value, struct dmsc_fp_pending);
} dmsc_fp_pending __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct dmsc_fp_sock);
} dmsc_fp_sock __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct dmsc_fp_stats);
} dmsc_fp_stats __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct dmsc_fp_svc);
} dmsc_fp_svc __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dmsc_fp_host);
} dmsc_fp_host __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DMSC_DEFAULT_MAX_BACKENDS);
	__type(key, struct dmsc_svc6_key);
	__type(value, __u32);
} dmsc_be_index6 __weak SEC(".maps");

/* The fast path's IPv6 twins (dmsc/shared.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DMSC_FP_PENDING_MAX);
	__type(key, struct dmsc_fp_conn6_key);
	__type(value, struct dmsc_fp_pending6);
} dmsc_fp_pending6 __weak SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct dmsc_fp_sock6);
} dmsc_fp_sock6 __weak SEC(".maps");

#endif /* DMSC_MAPS_BPF_H */
