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

#include "sock_addr.bpf.h"

/* The service of a UDP socket's remembered backend, if the slot table it
 * picked from is still the one in force; NULL if the service changed (a
 * backend drained, removed, reweighted): the flow then picks again. */
static __always_inline struct dmsc_svc *table_unchanged(struct bpf_sock_addr *ctx,
							const struct dmsc_sock_vip *rec)
{
	struct dmsc_svc_key key = {};

	key.vip = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	key.proto = DMSC_PROTO_UDP;
	return svc_table_unchanged(bpf_map_lookup_elem(&dmsc_services, &key), rec->svc_id,
				   rec->table_hash);
}

SEC("cgroup/connect4")
int dmsc_connect4(struct bpf_sock_addr *ctx)
{
	__u8 proto = sock_proto(ctx);

	if (!proto)
		return SOCK_ADDR_PASS;
	return sock4_xlate_fwd(ctx, proto, false);
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

	if (ctx->type != SOCK_DGRAM)
		return SOCK_ADDR_PASS;
	rec = bpf_sk_storage_get(&dmsc_sock_vip, ctx->sk, 0, 0);
	if (rec && rec->vip == ctx->user_ip4 && rec->vport == (__u16)ctx->user_port)
		svc = table_unchanged(ctx, rec);
	/* One call site: two let clang merge them into a ctx access at a
	 * computed offset, which the verifier refuses. */
	if (!svc)
		return sock4_xlate_fwd(ctx, DMSC_PROTO_UDP, false);
	if (caller_refused(svc, rec->svc_id))
		return SOCK_ADDR_REFUSE;
	ctx->user_ip4 = rec->backend;
	ctx->user_port = rec->bport;
	return SOCK_ADDR_PASS;
}

/* Replies to an unconnected UDP socket come from the backend: show the VIP
 * it sent to instead. recvmsg4 needs Linux 5.2. */
SEC("cgroup/recvmsg4")
int dmsc_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx, false);
}

/* getpeername4 needs Linux 5.8. */
SEC("cgroup/getpeername4")
int dmsc_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx, false);
}

/*
 * What the IPv6 connections handed to a listener on [::1] share: key gets
 * the client's address and port as the listener's accept() sees them
 * (client_addr, client_port) and the listener's port (helper_port), val
 * the VIP (vip), and the record goes into map; the rest of key and val is
 * the caller's. The two maps' keys and values are different structs
 * (include/dmsc/shared.h), hence the fields' addresses.
 */
static __always_inline void sockops6_publish(struct bpf_sock_ops *skops,
					     const struct dmsc_sock_vip6 *rec, void *map,
					     const void *key, __u32 client_addr[4],
					     __u16 *client_port, __u16 *helper_port,
					     const void *val, __u32 vip[4])
{
	client_addr[0] = skops->local_ip6[0];
	client_addr[1] = skops->local_ip6[1];
	client_addr[2] = skops->local_ip6[2];
	client_addr[3] = skops->local_ip6[3];
	*client_port = bpf_htons((__u16)skops->local_port);
	*helper_port = rec->bport;
	vip[0] = rec->vip[0];
	vip[1] = rec->vip[1];
	vip[2] = rec->vip[2];
	vip[3] = rec->vip[3];
	if (bpf_map_update_elem(map, key, val, BPF_ANY))
		count_reason(DMSC_R_L7_HANDOFF_FULL);
	else
		count_reason(DMSC_R_L7_HANDOFF);
}

/* An IPv6 connection connect6 handed to the tunnel's [::1] listener: its
 * dmsc_tunnel_handoff6 record, the backend picked and the caller's cgroup
 * (docs/design.md decision 64). */
static __always_inline int tunnel_sockops6(struct bpf_sock_ops *skops, struct bpf_sock *sk,
					   const struct dmsc_sock_vip6 *rec)
{
	struct dmsc_tunnel_handoff6_key key = {};
	struct dmsc_tunnel_handoff6 val = {};
	__u32 backend_id = rec->backend_id;
	struct dmsc_backend6 *be;
	__u64 *cgroup;

	/* as over IPv4: an id removed meanwhile reads as another service's */
	be = bpf_map_lookup_elem(&dmsc_backends6, &backend_id);
	if (!be || be->svc_id != rec->svc_id) {
		count_reason(DMSC_R_BACKEND_MISSING);
		return 1;
	}
	val.backend_addr[0] = be->addr[0];
	val.backend_addr[1] = be->addr[1];
	val.backend_addr[2] = be->addr[2];
	val.backend_addr[3] = be->addr[3];
	val.vport = rec->vport;
	val.backend_port = be->port;
	val.svc_id = rec->svc_id;
	val.backend_id = backend_id;
	cgroup = bpf_sk_storage_get(&dmsc_sock_cgroup, sk, 0, 0);
	val.cgroup_id = cgroup ? *cgroup : 0; /* none: the tunnel refuses cgroup 0 */
	sockops6_publish(skops, rec, &dmsc_tunnel_handoff6, &key, key.client_addr,
			 &key.client_port, &key.helper_port, &val, val.vip);
	return 1;
}

/* An IPv6 connection connect6 handed to the helper's [::1] listener (its
 * dmsc_l7_handoff6 record, keyed as the helper's accept() sees it plus the
 * namespace, docs/design.md decision 48) or to the tunnel's. */
static __always_inline int l7_sockops6(struct bpf_sock_ops *skops, struct bpf_sock *sk)
{
	struct dmsc_l7_handoff6_key key = {};
	struct dmsc_l7_handoff6 val = {};
	struct dmsc_sock_vip6 *rec;
	__u64 *cgroup;

	rec = bpf_sk_storage_get(&dmsc_sock_vip6, sk, 0, 0);
	if (!rec || (!(rec->flags & DMSC_SOCK_F_TUNNEL) && (rec->backend_id != 0 || !rec->netns)))
		return 1; /* not translated, or to a backend (L4) */
	if (skops->remote_ip6[0] != rec->backend[0] || skops->remote_ip6[1] != rec->backend[1] ||
	    skops->remote_ip6[2] != rec->backend[2] || skops->remote_ip6[3] != rec->backend[3] ||
	    sockops_remote_port(skops->remote_port) != rec->bport)
		return 1;
	if (rec->flags & DMSC_SOCK_F_TUNNEL)
		return tunnel_sockops6(skops, sk, rec);
	key.netns = rec->netns;
	val.vport = rec->vport;
	val.svc_id = rec->svc_id;
	/* the client's identity for dmsc-l7 (decision 75); none: 0 */
	cgroup = bpf_sk_storage_get(&dmsc_sock_cgroup, sk, 0, 0);
	val.cgroup_id = cgroup ? *cgroup : 0;
	sockops6_publish(skops, rec, &dmsc_l7_handoff6, &key, key.client_addr, &key.client_port,
			 &key.helper_port, &val, val.vip);
	return 1;
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
	__u64 *cgroup;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	/* A dual-stack socket connected to ::ffff:VIP is an IPv4 connection:
	 * local_ip4 and remote_ip4 hold its addresses. */
	if (skops->family != DMSC_AF_INET &&
	    !(skops->family == DMSC_AF_INET6 && skops->remote_ip6[0] == 0 &&
	      skops->remote_ip6[1] == 0 && skops->remote_ip6[2] == bpf_htonl(0xffff)))
		return skops->family == DMSC_AF_INET6 ? l7_sockops6(skops, sk) : 1;
	rec = bpf_sk_storage_get(&dmsc_sock_vip, sk, 0, 0);
	if (!rec || (rec->backend_id != 0 && !(rec->flags & DMSC_SOCK_F_TUNNEL)))
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
	if (rec->flags & DMSC_SOCK_F_TUNNEL) {
		__u32 backend_id = rec->backend_id;
		struct dmsc_backend *be = bpf_map_lookup_elem(&dmsc_backends, &backend_id);

		/* Ids are never reused in place: a removed backend reads as
		 * another service's or as zeros; the tunnel refuses those. */
		if (!be || be->svc_id != rec->svc_id) {
			count_reason(DMSC_R_BACKEND_MISSING);
			return 1;
		}
		val.backend_addr = be->addr;
		val.backend_port = be->port;
		val.backend_id = backend_id;
		val.flags = DMSC_SOCK_F_TUNNEL;
	}
	/* The caller's cgroup, for the tunnel's handoffs and dmsc-l7's alike
	 * (dmsc-l7 vouches for it through the tunnel, decision 75); none:
	 * 0, which the tunnel refuses. */
	cgroup = bpf_sk_storage_get(&dmsc_sock_cgroup, sk, 0, 0);
	val.cgroup_id = cgroup ? *cgroup : 0;
	if (bpf_map_update_elem(&dmsc_l7_handoff, &key, &val, BPF_ANY))
		count_reason(DMSC_R_L7_HANDOFF_FULL);
	else
		count_reason(DMSC_R_L7_HANDOFF);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
