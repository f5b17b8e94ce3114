// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The IPv6 twins of the socket load balancing hooks (docs/design.md
 * decisions 12 and 27): cgroup/connect6 turns an IPv6 VIP into a backend
 * picked by weight, sendmsg6 does so per datagram of an unconnected UDP
 * socket, recvmsg6 and getpeername6 answer with the VIP again.
 *
 * An IPv4-mapped destination (::ffff:VIP, a dual-stack socket's IPv4
 * connection) is translated by the IPv4 maps exactly as connect4 would
 * (sock_addr.bpf.h), so the IPv4 service of VIP answers it, and its record
 * is the IPv4 one (dmsc_sock_vip), which cgroup_skb and sockops read as for
 * any IPv4 socket. An unconnected dual-stack UDP socket sending to
 * ::ffff:VIP runs sendmsg4, not sendmsg6: the kernel hands such a datagram
 * to its IPv4 code (udpv6_sendmsg), hooks included.
 *
 * Fails open like its IPv4 twin: a missing entry means "no translation",
 * counted in dmsc_reasons. Linked into the dmsc_sock object.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sock_addr.bpf.h"
#include "ipv6.bpf.h"

/* user_ip6 into a[]: four u32 loads, the access the verifier allows on
 * every kernel. */
static __always_inline void ctx_ip6(struct bpf_sock_addr *ctx, __u32 a[4])
{
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
}

static __always_inline void ctx_set_ip6(struct bpf_sock_addr *ctx, const __u32 a[4])
{
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
}

/* ::ffff:a.b.c.d */
static __always_inline bool ip6_v4mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/*
 * What the two handoffs to a listener on [::1] share: conf is the
 * listener's entry (none, or no port6: false, counted no_helper, the caller
 * goes on at L4). The socket's record names the listener as the peer
 * (getpeername6 answers the VIP) and carries backend_id, flags and netns as
 * the caller says; the caller's cgroup goes in dmsc_sock_cgroup, the
 * identity the tunnel vouches for (a tunnel's handoff, DMSC_SOCK_F_TUNNEL:
 * no storage, false, counted) or dmsc-l7 does through the tunnel
 * (docs/design.md decision 75: without it, 0, which the tunnel refuses).
 */
static __always_inline bool sock6_handoff(struct bpf_sock_addr *ctx,
					  const struct dmsc_svc6_key *key,
					  const struct dmsc_l7_conf *conf, __u32 no_helper,
					  __u32 svc_id, __u32 backend_id, __u32 flags, __u64 netns)
{
	__u32 lo[4] = {0, 0, 0, bpf_htonl(1)}; /* [::1] */
	struct dmsc_sock_vip6 *rec = NULL;
	__u64 *cgroup = NULL;

	if (!conf || !conf->port6) {
		count_reason(no_helper);
		return false;
	}
	cgroup = bpf_sk_storage_get(&dmsc_sock_cgroup, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (cgroup || !(flags & DMSC_SOCK_F_TUNNEL))
		rec = bpf_sk_storage_get(&dmsc_sock_vip6, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!rec) {
		count_reason(DMSC_R_SOCK_STORAGE_FULL);
		return false;
	}
	ip6_copy(rec->vip, key->vip);
	ip6_copy(rec->backend, lo);
	rec->vport = key->port;
	rec->bport = conf->port6;
	rec->svc_id = svc_id;
	rec->backend_id = backend_id;
	rec->table_hash = 0;
	rec->flags = flags;
	rec->netns = netns;
	if (cgroup)
		*cgroup = bpf_get_current_cgroup_id();
	ctx_set_ip6(ctx, lo);
	ctx->user_port = conf->port6;
	return true;
}

/*
 * sock4_l7_handoff's twin (docs/design.md decision 48): the connection goes
 * to the helper's IPv6 listener on [::1] in the client's own namespace
 * (port6 of its dmsc_l7_netns entry), backend 0 (the helper, not a
 * backend); the record keeps the namespace's cookie, which dmsc_l7_sockops
 * puts in the dmsc_l7_handoff6 key. No such listener (no entry, an older
 * helper, the helper's own namespace): false, the caller balances at L4,
 * counted. bpf_get_netns_cookie: Linux 5.7.
 */
static __always_inline bool sock6_l7_handoff(struct bpf_sock_addr *ctx,
					     const struct dmsc_svc6_key *key, __u32 svc_id,
					     struct dmsc_svc_stats *ss)
{
	__u64 netns = bpf_get_netns_cookie(ctx);

	if (!sock6_handoff(ctx, key, bpf_map_lookup_elem(&dmsc_l7_netns, &netns),
			   DMSC_R_L7_NO_HELPER, svc_id, 0, 0, netns))
		return false;
	if (ss)
		ss->connections += 1;
	return true;
}

/*
 * sock4_tunnel_handoff's twin (docs/design.md decision 64): a connection to
 * a backend on another host goes to the tunnel's listener on [::1] (port6
 * of dmsc_tunnel_conf), the record carrying the backend picked, flagged
 * DMSC_SOCK_F_TUNNEL; sockops publishes it and the caller's cgroup in
 * dmsc_tunnel_handoff6. No listener on [::1] (none registered, an older
 * tunnel): false, the caller connects to the backend directly (fail open,
 * counted; its host decides).
 */
static __always_inline bool sock6_tunnel_handoff(struct bpf_sock_addr *ctx,
						 const struct dmsc_svc6_key *key, __u32 svc_id,
						 __u32 backend_id)
{
	__u32 zero = 0;

	if (!sock6_handoff(ctx, key, bpf_map_lookup_elem(&dmsc_tunnel_conf, &zero),
			   DMSC_R_TUNNEL_NO_HELPER, svc_id, backend_id, DMSC_SOCK_F_TUNNEL, 0))
		return false;
	count_reason(DMSC_R_TUNNEL_HANDOFF);
	return true;
}

/* sock4_direct's twin for an IPv6 address (docs/design.md decision 70). */
static __always_inline int sock6_direct(struct bpf_sock_addr *ctx, const struct dmsc_svc6_key *key)
{
	struct dmsc_backend6 *be = mtls_backend(&dmsc_be_mtls6, &dmsc_backends6, key, key->proto);

	if (!be || !ip6_eq(be->addr, key->vip) || be->port != key->port)
		return SOCK_ADDR_PASS;
	return direct_verdict(ctx, be->flags, be->svc_id);
}

/* Rewrites ctx to an IPv6 service's backend; returns the SOCK_ADDR_* verdict. */
static __always_inline int sock6_xlate_fwd(struct bpf_sock_addr *ctx, __u8 proto,
					   const __u32 vip[4])
{
	struct dmsc_svc6_key key = {};
	struct dmsc_svc_stats *ss;
	struct dmsc_sock_vip6 *rec;
	struct dmsc_backend6 *be;
	struct dmsc_svc *svc;
	__u32 backend_id, svc_id;
	int verdict;

	ip6_copy(key.vip, vip);
	key.port = (__u16)ctx->user_port; /* network order, low 16 bits */
	key.proto = proto;
	svc = bpf_map_lookup_elem(&dmsc_services6, &key);
	if (!svc)
		return sock6_direct(ctx, &key); /* not a VIP: only a guarded backend's check */
	svc_id = svc->id;
	ss = svc_stats(svc_id);
	verdict = svc_admit(ctx, svc, ss);
	if (verdict == SVC_REFUSE)
		return SOCK_ADDR_REFUSE;
	if (verdict == SVC_L7 && sock6_l7_handoff(ctx, &key, svc_id, ss))
		return SOCK_ADDR_PASS;
	/* No IPv6 listener of the helper: balanced at L4 (fail open). */
	if (svc_empty(svc, ss))
		return SOCK_ADDR_REFUSE;
	backend_id = svc_pick(ctx, svc, dmsc_affinity_salt(key.vip, 4, key.port));
	if (!backend_id)
		return SOCK_ADDR_PASS;
	be = bpf_map_lookup_elem(&dmsc_backends6, &backend_id);
	if (!be || !be->port || be->svc_id != svc_id) {
		count_reason(DMSC_R_BACKEND_MISSING);
		return SOCK_ADDR_PASS;
	}
	/* As connect4: TCP only, the tunnel's own sockets exempt. */
	if ((be->flags & DMSC_BE_F_TUNNEL) && proto == DMSC_PROTO_TCP && !helper_socket(ctx) &&
	    sock6_tunnel_handoff(ctx, &key, svc_id, backend_id)) {
		count_connection(ss, backend_id);
		return SOCK_ADDR_PASS;
	}
	/* As connect4: recorded before the rewrite, a failure counted. */
	rec = bpf_sk_storage_get(&dmsc_sock_vip6, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (rec) {
		ip6_copy(rec->vip, vip);
		ip6_copy(rec->backend, be->addr);
		rec->vport = key.port;
		rec->bport = be->port;
		rec->svc_id = svc_id;
		rec->backend_id = backend_id;
		rec->table_hash = svc->table_hash;
		rec->flags = 0;
		rec->netns = 0;
	} else {
		count_reason(DMSC_R_SOCK_STORAGE_FULL);
	}
	ctx_set_ip6(ctx, be->addr);
	ctx->user_port = be->port;
	count_connection(ss, backend_id);
	return SOCK_ADDR_PASS;
}

SEC("cgroup/connect6")
int dmsc_connect6(struct bpf_sock_addr *ctx)
{
	__u8 proto = sock_proto(ctx);
	__u32 a[4];

	if (!proto)
		return SOCK_ADDR_PASS;
	ctx_ip6(ctx, a);
	if (ip6_v4mapped(a))
		return sock4_xlate_fwd(ctx, proto, true);
	return sock6_xlate_fwd(ctx, proto, a);
}

/* The service of a UDP socket's remembered IPv6 backend, if the slot table
 * it picked from is still the one in force (as sendmsg4's). */
static __always_inline struct dmsc_svc *table_unchanged6(const __u32 vip[4], __u16 port,
							 const struct dmsc_sock_vip6 *rec)
{
	struct dmsc_svc6_key key = {};

	ip6_copy(key.vip, vip);
	key.port = port;
	key.proto = DMSC_PROTO_UDP;
	return svc_table_unchanged(bpf_map_lookup_elem(&dmsc_services6, &key), rec->svc_id,
				   rec->table_hash);
}

/* Unconnected UDP over IPv6, as sendmsg4: a socket keeps its backend per
 * VIP while the slot table stands, access is checked on every datagram.
 * sendmsg6 needs Linux 4.18. */
SEC("cgroup/sendmsg6")
int dmsc_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct dmsc_svc *svc = NULL;
	struct dmsc_sock_vip6 *rec;
	__u16 port;
	__u32 a[4];

	if (ctx->type != SOCK_DGRAM)
		return SOCK_ADDR_PASS;
	ctx_ip6(ctx, a);
	if (ip6_v4mapped(a))
		return SOCK_ADDR_PASS; /* the kernel runs sendmsg4 for these */
	port = (__u16)ctx->user_port;
	rec = bpf_sk_storage_get(&dmsc_sock_vip6, ctx->sk, 0, 0);
	if (rec && ip6_eq(rec->vip, a) && rec->vport == port)
		svc = table_unchanged6(a, port, rec);
	if (!svc)
		return sock6_xlate_fwd(ctx, DMSC_PROTO_UDP, a);
	if (caller_refused(svc, rec->svc_id))
		return SOCK_ADDR_REFUSE;
	ctx_set_ip6(ctx, rec->backend);
	ctx->user_port = rec->bport;
	return SOCK_ADDR_PASS;
}

/* The VIP in place of the backend dmsc chose: ::ffff:VIP for a dual-stack
 * socket's IPv4 peer (its IPv4 record), the IPv6 VIP otherwise. */
static __always_inline int sock6_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct dmsc_sock_vip6 *rec;
	__u32 a[4];

	ctx_ip6(ctx, a);
	if (ip6_v4mapped(a))
		return sock4_xlate_rev(ctx, true);
	rec = bpf_sk_storage_get(&dmsc_sock_vip6, ctx->sk, 0, 0);
	if (!rec || !ip6_eq(rec->backend, a) || rec->bport != (__u16)ctx->user_port)
		return SOCK_ADDR_PASS;
	ctx_set_ip6(ctx, rec->vip);
	ctx->user_port = rec->vport;
	count_reason(DMSC_R_PEER_REWRITTEN);
	return SOCK_ADDR_PASS;
}

/* recvmsg6 needs Linux 5.2. */
SEC("cgroup/recvmsg6")
int dmsc_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate_rev(ctx);
}

/* getpeername6 needs Linux 5.8. */
SEC("cgroup/getpeername6")
int dmsc_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate_rev(ctx);
}
