// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Socket-level load balancing: cgroup/connect4 turns a service VIP into a
 * backend picked by weight, cgroup/getpeername4 answers with the VIP again.
 *
 * Everything here fails open: a missing entry means "no translation", and
 * the reason is counted in dmsc_reasons. The only refusal is deliberate: a
 * service whose every weight is 0.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "dmsc/shared.h"

/* Return codes of cgroup sock_addr programs. */
#define SOCK_ADDR_REFUSE 0 /* connect() fails with EPERM */
#define SOCK_ADDR_PASS 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
	__type(key, struct dmsc_svc_key);
	__type(value, struct dmsc_svc);
} dmsc_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct dmsc_backend);
} dmsc_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct dmsc_svc_meta);
} dmsc_svc_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct dmsc_svc_stats);
} dmsc_svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DMSC_DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct dmsc_be_stats);
} dmsc_be_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DMSC_R_MAX);
	__type(key, __u32);
	__type(value, __u64);
} dmsc_reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct dmsc_sock_vip);
} dmsc_sock_vip SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dmsc_install);
} dmsc_install SEC(".maps");

static __always_inline void count_reason(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&dmsc_reasons, &reason);

	if (n)
		*n += 1;
}

/* Rewrites ctx to the backend; returns the SOCK_ADDR_* verdict. */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx, __u8 proto)
{
	struct dmsc_svc_key key = {};
	struct dmsc_backend *be;
	struct dmsc_svc_stats *ss;
	struct dmsc_be_stats *bs;
	struct dmsc_sock_vip *rec;
	struct dmsc_svc *svc;
	__u32 backend_id, svc_id;

	key.vip = ctx->user_ip4;
	/* user_port is network order in the low 16 bits of a u32. */
	key.port = (__u16)ctx->user_port;
	key.proto = proto;

	svc = bpf_map_lookup_elem(&dmsc_services, &key);
	if (!svc)
		return SOCK_ADDR_PASS; /* not a VIP: untouched */
	svc_id = svc->id;

	if (svc->flags & DMSC_SVC_F_NO_BACKEND) {
		ss = bpf_map_lookup_elem(&dmsc_svc_stats, &svc_id);
		if (ss)
			ss->refused_no_backend += 1;
		return SOCK_ADDR_REFUSE;
	}

	backend_id = svc->slot[dmsc_slot_index(bpf_get_prandom_u32())];
	if (!backend_id) {
		count_reason(DMSC_R_SLOT_EMPTY);
		return SOCK_ADDR_PASS;
	}
	be = bpf_map_lookup_elem(&dmsc_backends, &backend_id);
	if (!be || !be->addr || be->svc_id != svc_id) {
		count_reason(DMSC_R_BACKEND_MISSING);
		return SOCK_ADDR_PASS;
	}

	/* Record before rewriting, so that the VIP is known for the socket's
	 * whole life; a failure here still translates (the connection works)
	 * but getpeername() would show the backend, so it is counted. */
	rec = bpf_sk_storage_get(&dmsc_sock_vip, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (rec) {
		rec->vip = key.vip;
		rec->vport = key.port;
		rec->backend = be->addr;
		rec->bport = be->port;
		rec->svc_id = svc_id;
		rec->backend_id = backend_id;
	} else {
		count_reason(DMSC_R_SOCK_STORAGE_FULL);
	}

	ctx->user_ip4 = be->addr;
	ctx->user_port = be->port;

	ss = bpf_map_lookup_elem(&dmsc_svc_stats, &svc_id);
	if (ss)
		ss->connections += 1;
	bs = bpf_map_lookup_elem(&dmsc_be_stats, &backend_id);
	if (bs)
		bs->connections += 1;
	return SOCK_ADDR_PASS;
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return SOCK_ADDR_PASS;
	return sock4_xlate_fwd(ctx, DMSC_PROTO_TCP);
}

/* getpeername4 needs Linux 5.8. */
SEC("cgroup/getpeername4")
int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	struct dmsc_sock_vip *rec;

	rec = bpf_sk_storage_get(&dmsc_sock_vip, ctx->sk, 0, 0);
	if (!rec)
		return SOCK_ADDR_PASS;
	/* Only the peer connect() chose is the one to hide. */
	if (rec->backend != ctx->user_ip4 || rec->bport != (__u16)ctx->user_port)
		return SOCK_ADDR_PASS;
	ctx->user_ip4 = rec->vip;
	ctx->user_port = rec->vport;
	count_reason(DMSC_R_PEER_REWRITTEN);
	return SOCK_ADDR_PASS;
}

/* The same-host fast path (sockops + sk_msg) lives in its own file. */
#include "dmsc_fastpath.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
