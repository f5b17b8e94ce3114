// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Socket-level load balancing: cgroup/connect4 turns a service VIP into a
 * backend picked by weight, cgroup/getpeername4 answers with the VIP again.
 *
 * Everything here fails open: a missing entry means "no translation", and
 * the reason is counted in dmsc_reasons. Refusals are deliberate and
 * counted per service: a caller outside allow_from, a service over its
 * connection rate, a service whose every weight is 0.
 *
 * The cgroup_skb programs that count and police a translated socket's
 * bytes are bpf/skb/skb.bpf.c, the same-host fast path
 * bpf/fastpath/fastpath.bpf.c: all three are linked into one object.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.bpf.h"
#include "health.bpf.h"

/* Return codes of cgroup sock_addr programs. */
#define SOCK_ADDR_REFUSE 0 /* connect() fails with EPERM */
#define SOCK_ADDR_PASS 1

/* Is the calling task's cgroup, or one of its ancestors, on the service's
 * allow list? bpf_get_current_ancestor_cgroup_id needs Linux 5.7. */
static __always_inline int caller_allowed(__u32 svc_id)
{
	struct dmsc_allow_key k = { .svc_id = svc_id };
	int level;

	for (level = 0; level < DMSC_CGROUP_LEVELS_MAX; level++) {
		k.cgroup_id = bpf_get_current_ancestor_cgroup_id(level);
		if (!k.cgroup_id)
			break; /* past the caller's own cgroup */
		if (bpf_map_lookup_elem(&dmsc_allow, &k))
			return 1;
	}
	return 0;
}

/* One token of the service's connection bucket; a missing entry fails
 * open (counted). */
static __always_inline int conn_token(__u32 svc_id)
{
	struct dmsc_limits *l = bpf_map_lookup_elem(&dmsc_limits, &svc_id);
	__u64 now;
	int ok;

	if (!l) {
		count_reason(DMSC_R_LIMITS_MISSING);
		return 1;
	}
	if (!l->conn_rate)
		return 1;
	now = bpf_ktime_get_ns();
	bpf_spin_lock(&l->lock);
	ok = dmsc_tb_take(&l->conn, now, l->conn_rate, l->conn_depth, 1);
	bpf_spin_unlock(&l->lock);
	return ok;
}

/* The service of a UDP socket's remembered backend, if the slot table it
 * picked from is still the one in force; NULL if the service changed (a
 * backend drained, removed, reweighted): the flow then picks again. */
static __always_inline struct dmsc_svc *table_unchanged(struct bpf_sock_addr *ctx,
							const struct dmsc_sock_vip *rec)
{
	struct dmsc_svc_key key = {};
	struct dmsc_svc *svc;

	key.vip = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	key.proto = DMSC_PROTO_UDP;
	svc = bpf_map_lookup_elem(&dmsc_services, &key);
	if (!svc || svc->id != rec->svc_id || svc->table_hash != rec->table_hash)
		return NULL;
	return svc;
}

/* Shows the VIP in place of the backend that connect() or sendmsg() chose,
 * for getpeername() and for recvmsg()'s source address. */
static __always_inline int sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct dmsc_sock_vip *rec;

	rec = bpf_sk_storage_get(&dmsc_sock_vip, ctx->sk, 0, 0);
	if (!rec)
		return SOCK_ADDR_PASS;
	/* Only the peer dmsc chose is the one to hide. */
	if (rec->backend != ctx->user_ip4 || rec->bport != (__u16)ctx->user_port)
		return SOCK_ADDR_PASS;
	ctx->user_ip4 = rec->vip;
	ctx->user_port = rec->vport;
	count_reason(DMSC_R_PEER_REWRITTEN);
	return SOCK_ADDR_PASS;
}

/*
 * Sends the connection to dmsc-l7 instead of a backend. The socket-storage
 * record names the helper as the "backend", so getpeername4 answers with the
 * VIP, and sockops (dmsc_l7_sockops) finds the record to publish the
 * handoff. Returns false when no helper is registered: the caller balances
 * at L4 instead (fail open).
 */
static __always_inline bool sock4_l7_handoff(struct bpf_sock_addr *ctx,
					     const struct dmsc_svc_key *key, __u32 svc_id)
{
	struct dmsc_l7_conf *conf;
	struct dmsc_sock_vip *rec;
	struct dmsc_svc_stats *ss;
	__u32 zero = 0;
	__u64 netns;

	/* The helper's listener in the client's own network namespace, if
	 * it has one (user/l7/l7_netns.h); else its --listen address. */
	netns = bpf_get_netns_cookie(ctx);
	conf = bpf_map_lookup_elem(&dmsc_l7_netns, &netns);
	if (!conf)
		conf = bpf_map_lookup_elem(&dmsc_l7_conf, &zero);
	if (!conf || !conf->addr || !conf->port) {
		count_reason(DMSC_R_L7_NO_HELPER);
		return false;
	}
	rec = bpf_sk_storage_get(&dmsc_sock_vip, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!rec) {
		/* Without the record the helper could not learn the service:
		 * better an L4 connection than one the helper must refuse. */
		count_reason(DMSC_R_SOCK_STORAGE_FULL);
		return false;
	}
	rec->vip = key->vip;
	rec->vport = key->port;
	rec->backend = conf->addr;
	rec->bport = conf->port;
	rec->svc_id = svc_id;
	rec->backend_id = 0; /* 0: the helper, not a backend */
	ctx->user_ip4 = conf->addr;
	ctx->user_port = conf->port;
	ss = svc_stats(svc_id);
	if (ss)
		ss->connections += 1;
	return true;
}

/* A socket dmsc-l7 opened to a backend? */
static __always_inline bool helper_socket(struct bpf_sock_addr *ctx)
{
	struct dmsc_l7_own *own = bpf_sk_storage_get(&dmsc_l7_own, ctx->sk, 0, 0);

	return own && own->magic == DMSC_L7_OWN_MAGIC;
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
	bool l7;

	key.vip = ctx->user_ip4;
	/* user_port is network order in the low 16 bits of a u32. */
	key.port = (__u16)ctx->user_port;
	key.proto = proto;

	svc = bpf_map_lookup_elem(&dmsc_services, &key);
	if (!svc)
		return SOCK_ADDR_PASS; /* not a VIP: untouched */
	svc_id = svc->id;
	ss = svc_stats(svc_id);

	/* Access before anything else: a caller that may not connect must not
	 * use up the tokens of those that may, nor reach the helper. */
	if ((svc->flags & DMSC_SVC_F_ALLOW_LIST) && !caller_allowed(svc_id)) {
		if (ss)
			ss->refused_access += 1;
		return SOCK_ADDR_REFUSE;
	}
	/* protocol http: the helper decides per request. Its own sockets
	 * (an entry in dmsc_l7_own, which only the helper writes) are never
	 * handed back to it; a socket mark would not do, a workload can set
	 * one (shared.h). */
	l7 = (svc->flags & DMSC_SVC_F_L7) && !helper_socket(ctx);
	if (!l7 && (svc->flags & DMSC_SVC_F_NO_BACKEND)) {
		if (ss)
			ss->refused_no_backend += 1;
		return SOCK_ADDR_REFUSE;
	}
	if ((svc->flags & DMSC_SVC_F_CONN_LIMIT) && !conn_token(svc_id)) {
		if (ss)
			ss->refused_rate += 1;
		return SOCK_ADDR_REFUSE;
	}
	if (l7 && sock4_l7_handoff(ctx, &key, svc_id))
		return SOCK_ADDR_PASS;
	/* No helper: an http service is balanced at L4 (fail open). */
	if (svc->flags & DMSC_SVC_F_NO_BACKEND) {
		if (ss)
			ss->refused_no_backend += 1;
		return SOCK_ADDR_REFUSE;
	}

	backend_id = health_pick(svc, dmsc_slot_index(bpf_get_prandom_u32()));
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
		rec->table_hash = svc->table_hash;
	} else {
		count_reason(DMSC_R_SOCK_STORAGE_FULL);
	}

	ctx->user_ip4 = be->addr;
	ctx->user_port = be->port;

	if (ss)
		ss->connections += 1;
	bs = bpf_map_lookup_elem(&dmsc_be_stats, &backend_id);
	if (bs)
		bs->connections += 1;
	return SOCK_ADDR_PASS;
}

/* The service protocol of a socket: stream sockets are TCP services,
 * datagram sockets UDP services; anything else (raw) is never a VIP. */
static __always_inline __u8 sock_proto(struct bpf_sock_addr *ctx)
{
	if (ctx->type == SOCK_STREAM)
		return DMSC_PROTO_TCP;
	if (ctx->type == SOCK_DGRAM)
		return DMSC_PROTO_UDP;
	return 0;
}

SEC("cgroup/connect4")
int dmsc_connect4(struct bpf_sock_addr *ctx)
{
	__u8 proto = sock_proto(ctx);

	if (!proto)
		return SOCK_ADDR_PASS;
	return sock4_xlate_fwd(ctx, proto);
}

/*
 * Unconnected UDP: each sendto() a VIP is translated. A socket keeps the
 * backend it was given for that VIP (one VIP per socket is remembered), so
 * that its datagrams and the replies stay one flow; the backend is picked
 * again only when the socket moves to another VIP or its backend left the
 * service. sendmsg4 needs Linux 4.18.
 *
 * Access is checked on every datagram, not only when the backend is picked:
 * a datagram is a request of its own, so a cgroup dropped from allow_from
 * gets EPERM from its next sendto() even though the slot table (and so the
 * remembered backend) did not change. The allow rules are separate map
 * entries that do not touch the service value, so no generation in the
 * value could tell; the lookup costs one hash lookup per ancestor level,
 * and only services with an allow list pay it.
 */
SEC("cgroup/sendmsg4")
int dmsc_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct dmsc_svc *svc = NULL;
	struct dmsc_sock_vip *rec;
	struct dmsc_svc_stats *ss;

	if (ctx->type != SOCK_DGRAM)
		return SOCK_ADDR_PASS;
	rec = bpf_sk_storage_get(&dmsc_sock_vip, ctx->sk, 0, 0);
	if (rec && rec->vip == ctx->user_ip4 && rec->vport == (__u16)ctx->user_port)
		svc = table_unchanged(ctx, rec);
	/* One call site: two let clang merge them into a ctx access at a
	 * computed offset, which the verifier refuses. */
	if (!svc)
		return sock4_xlate_fwd(ctx, DMSC_PROTO_UDP);
	if ((svc->flags & DMSC_SVC_F_ALLOW_LIST) && !caller_allowed(rec->svc_id)) {
		ss = svc_stats(rec->svc_id);
		if (ss)
			ss->refused_access += 1;
		return SOCK_ADDR_REFUSE;
	}
	ctx->user_ip4 = rec->backend;
	ctx->user_port = rec->bport;
	return SOCK_ADDR_PASS;
}

/* Replies to an unconnected UDP socket come from the backend: show the VIP
 * it sent to instead. recvmsg4 needs Linux 5.2. */
SEC("cgroup/recvmsg4")
int dmsc_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx);
}

/* getpeername4 needs Linux 5.8. */
SEC("cgroup/getpeername4")
int dmsc_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx);
}

/*
 * sockops on the mesh cgroup: when a connection handed to dmsc-l7 is
 * established (client side), publish its service under the 4-tuple the
 * helper will see (see dmsc_l7_handoff in shared.h). bpf_sock_ops.sk and
 * bpf_sk_storage_get from sockops need Linux 5.10.
 */
SEC("sockops")
int dmsc_l7_sockops(struct bpf_sock_ops *skops)
{
	struct dmsc_l7_handoff_key key = {};
	struct dmsc_l7_handoff val = {};
	struct dmsc_sock_vip *rec;
	struct bpf_sock *sk;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB || skops->family != DMSC_AF_INET)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	rec = bpf_sk_storage_get(&dmsc_sock_vip, sk, 0, 0);
	if (!rec || rec->backend_id != 0)
		return 1; /* not translated, or translated to a backend (L4) */
	/* local_port: host order (docs/design.md, "Kernel pitfalls"). */
	key.client_addr = skops->local_ip4;
	key.client_port = bpf_htons((__u16)skops->local_port);
	key.helper_addr = skops->remote_ip4;
	key.helper_port = sockops_remote_port(skops->remote_port);
	if (key.helper_addr != rec->backend || key.helper_port != rec->bport)
		return 1;
	val.vip = rec->vip;
	val.vport = rec->vport;
	val.svc_id = rec->svc_id;
	if (bpf_map_update_elem(&dmsc_l7_handoff, &key, &val, BPF_ANY))
		count_reason(DMSC_R_L7_HANDOFF_FULL);
	else
		count_reason(DMSC_R_L7_HANDOFF);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
