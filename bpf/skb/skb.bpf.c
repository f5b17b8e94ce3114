// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * cgroup_skb programs on the mesh cgroup: count each translated socket's
 * bytes per service and police them against the service's byte limit;
 * egress also re-checks a connected UDP socket's access (allow_from). A
 * socket is translated when cgroup/connect4 or connect6 (bpf/sock_lb/) left
 * its record in dmsc_sock_vip or dmsc_sock_vip6. Ingress also guards this
 * host's backends of mtls services against plain connections from other
 * hosts (docs/design.md decisions 24, 33 and 70).
 *
 * Linked into the dmsc_sock object with bpf/sock_lb/ and bpf/fastpath/.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.bpf.h"
#include "ipv6.bpf.h"

/* Return codes of cgroup_skb programs. On egress, bit 1 asks for congestion
 * notification (Linux 5.3): TCP then shrinks its window as it would for
 * ECN, without a loss, so a policed flow settles at the rate instead of
 * oscillating through drops and retransmissions. Ingress has no such bit:
 * a packet over the limit there can only be dropped. */
#define SKB_DROP 0
#define SKB_PASS 1
#define SKB_DROP_CN 2
#define SKB_PASS_CN 3

/* The packet's full socket, or NULL. */
static __always_inline struct bpf_sock *skb_sock(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	return sk ? bpf_sk_fullsock(sk) : NULL;
}

/* The service of a packet's socket, from the record connect() left. */
static __always_inline struct dmsc_sock_vip *skb_record(struct bpf_sock *sk)
{
	return sk ? bpf_sk_storage_get(&dmsc_sock_vip, sk, 0, 0) : NULL;
}

/* An IPv6 socket's record (connect6, bpf/sock_lb/sock6.bpf.c). A
 * dual-stack socket's IPv4 connection has the IPv4 record. */
static __always_inline struct dmsc_sock_vip6 *skb_record6(struct bpf_sock *sk)
{
	return sk ? bpf_sk_storage_get(&dmsc_sock_vip6, sk, 0, 0) : NULL;
}

/* The service of a packet's socket, either family; 0: none. */
static __always_inline __u32 skb_svc_id(struct bpf_sock *sk, const struct dmsc_sock_vip *rec)
{
	struct dmsc_sock_vip6 *rec6;

	if (rec)
		return rec->svc_id;
	rec6 = skb_record6(sk);
	return rec6 ? rec6->svc_id : 0;
}

/* Returns an enum dmsc_tb_verdict; svc_id 0: not a translated socket. */
static __always_inline int skb_account(struct __sk_buff *skb, __u32 svc_id, int towards)
{
	struct dmsc_svc_stats *ss;
	int verdict, ok;

	if (!svc_id)
		return DMSC_TB_PASS;
	verdict = police_bytes(svc_id, skb->len, towards ? DMSC_BUCKET_TO : DMSC_BUCKET_FROM);
	ok = verdict != DMSC_TB_DROP;
	ss = svc_stats(svc_id);
	if (ss) {
		if (towards) {
			ss->bytes_to += ok ? skb->len : 0;
			ss->policed_to += !ok;
		} else {
			ss->bytes_from += ok ? skb->len : 0;
			ss->policed_from += !ok;
		}
	}
	return verdict;
}

/*
 * A connected UDP socket passed connect()'s access check once, and its
 * send()s run no sock_addr hook (sendmsg4/6 run only for a datagram that
 * names an address). So that revoking access stops its next datagram as it
 * does for an unconnected socket, egress checks it again, against the
 * cgroup the socket was made in (the task's is not known here). Only
 * connected UDP sockets of a service with an allow list pay the lookups;
 * TCP keeps its established connections, as a weight-0 drain does.
 * bpf_skb_ancestor_cgroup_id in cgroup_skb needs Linux 5.8, below the
 * 5.10 that install already requires (bpf_sk_storage_get in connect4).
 */
static __always_inline bool skb_svc_revoked(struct __sk_buff *skb, const struct dmsc_svc *svc,
					    __u32 svc_id)
{
	struct dmsc_allow_key ak = {};
	struct dmsc_svc_stats *ss;
	int level;

	if (!svc || svc->id != svc_id || !(svc->flags & DMSC_SVC_F_ALLOW_LIST))
		return false;
	ak.svc_id = svc->id;
	for (level = 0; level < DMSC_CGROUP_LEVELS_MAX; level++) {
		ak.cgroup_id = bpf_skb_ancestor_cgroup_id(skb, level);
		if (!ak.cgroup_id)
			break;
		if (bpf_map_lookup_elem(&dmsc_allow, &ak))
			return false;
	}
	ss = svc_stats(svc->id);
	if (ss)
		ss->refused_access += 1;
	return true;
}

/* A UDP socket's state is TCP_ESTABLISHED once connected. */
static __always_inline bool skb_udp_connected(struct bpf_sock *sk)
{
	return sk && sk->protocol == IPPROTO_UDP && sk->state == BPF_TCP_ESTABLISHED;
}

static __always_inline bool skb_udp_access_revoked(struct __sk_buff *skb, struct bpf_sock *sk,
						   const struct dmsc_sock_vip *rec)
{
	struct dmsc_svc_key key = {};
	struct dmsc_sock_vip6 *rec6;
	struct dmsc_svc6_key key6 = {};

	if (!skb_udp_connected(sk))
		return false;
	/* It must be connected to the backend connect() chose, not elsewhere
	 * since. (A dual-stack socket's IPv4 peer is in dst_ip4 too.) */
	if (rec) {
		if (sk->dst_ip4 != rec->backend)
			return false;
		key.vip = rec->vip;
		key.port = rec->vport;
		key.proto = DMSC_PROTO_UDP;
		return skb_svc_revoked(skb, bpf_map_lookup_elem(&dmsc_services, &key),
				       rec->svc_id);
	}
	rec6 = skb_record6(sk);
	if (!rec6 || sk->dst_ip6[0] != rec6->backend[0] || sk->dst_ip6[1] != rec6->backend[1] ||
	    sk->dst_ip6[2] != rec6->backend[2] || sk->dst_ip6[3] != rec6->backend[3])
		return false;
	key6.vip[0] = rec6->vip[0];
	key6.vip[1] = rec6->vip[1];
	key6.vip[2] = rec6->vip[2];
	key6.vip[3] = rec6->vip[3];
	key6.port = rec6->vport;
	key6.proto = DMSC_PROTO_UDP;
	return skb_svc_revoked(skb, bpf_map_lookup_elem(&dmsc_services6, &key6), rec6->svc_id);
}

/* Packets a mesh client sends towards a service. */
SEC("cgroup_skb/egress")
int dmsc_skb_egress(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb_sock(skb);
	struct dmsc_sock_vip *rec = skb_record(sk);

	/* SKB_DROP without the congestion bit: send() fails with EPERM, as
	 * a refused sendto() does (with it, UDP would report success). */
	if (skb_udp_access_revoked(skb, sk, rec))
		return SKB_DROP;
	switch (skb_account(skb, skb_svc_id(sk, rec), 1)) {
	case DMSC_TB_PASS:
		return SKB_PASS;
	case DMSC_TB_PASS_OVER:
		return SKB_PASS_CN;
	default:
		return SKB_DROP_CN;
	}
}

/* The loopback device is ifindex 1 in every network namespace (Linux's
 * LOOPBACK_IFINDEX): a packet received on it was sent by this host, such as
 * the tunnel delivering a connection to a backend of its own host. */
#define SKB_LOOPBACK_IFINDEX 1

/* An IPv4 fragment's bits: the kernel reassembles before TCP, so only a
 * packet it did not (none is known) would have them. */
#define SKB_IP_FRAGMENT 0x3fff /* IP_MF | IP_OFFSET */

/* A guarded backend of this host (DMSC_BE_F_MTLS_GUARD) that a packet to
 * a listener names, and where the packet's TCP header is. */
struct skb_guard {
	__u32 svc_id;
	__u32 tcp_off; /* 0: not found (see skb_mtls_refused) */
	__u16 be_flags;
};

/* Fills g with a guarded backend's facts; true. */
static __always_inline bool skb_guard_found(struct skb_guard *g, __u32 svc_id, __u16 be_flags,
					    __u32 tcp_off)
{
	g->svc_id = svc_id;
	g->be_flags = be_flags;
	g->tcp_off = tcp_off;
	return true;
}

/* The backend at an IPv4 packet's destination and the listener's port
 * (network order), if guarded. */
static __always_inline bool skb_guard4(const struct iphdr *ip, __u16 port, struct skb_guard *g)
{
	struct dmsc_svc_key key = {.vip = ip->daddr, .port = port, .proto = DMSC_PROTO_TCP};
	struct dmsc_backend *be = mtls_backend(&dmsc_be_mtls, &dmsc_backends, &key, ip->protocol);

	if (!be || be->addr != ip->daddr || be->port != port)
		return false;
	return skb_guard_found(g, be->svc_id, be->flags,
			       (ip->frag_off & bpf_htons(SKB_IP_FRAGMENT)) ? 0 : ip->ihl * 4);
}

/* Where TCP starts after an IPv6 header whose next header is `nexthdr`:
 * past at most IPV6_EXT_MAX extension headers; 0 past more of them, or
 * past any other header. */
static __always_inline __u32 skb_ipv6_tcp_off(struct __sk_buff *skb, __u8 nexthdr)
{
	__u32 off = sizeof(struct ipv6hdr);
	struct ipv6_opt_hdr opt;
	int i;

#pragma unroll
	for (i = 0; i < IPV6_EXT_MAX; i++) {
		if (nexthdr == IPPROTO_TCP)
			return off;
		if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING &&
		    nexthdr != NEXTHDR_DEST && nexthdr != NEXTHDR_FRAGMENT)
			return 0;
		if (bpf_skb_load_bytes(skb, off, &opt, sizeof(opt)))
			return 0;
		/* a fragment header is 8 bytes, its second byte reserved */
		off += nexthdr == NEXTHDR_FRAGMENT ? 8 : (opt.hdrlen + 1) * 8;
		nexthdr = opt.nexthdr;
	}
	return nexthdr == IPPROTO_TCP ? off : 0;
}

/* skb_guard4's twin for an IPv6 packet (docs/design.md decision 70): its
 * index is dmsc_be_mtls6. A ::ffff: destination is in no IPv6 index
 * (decision 27; the kernel does not take one from the wire anyway). */
static __always_inline bool skb_guard6(struct __sk_buff *skb, const struct ipv6hdr *ip6,
				       __u16 port, struct skb_guard *g)
{
	struct dmsc_svc6_key key = {.port = port, .proto = DMSC_PROTO_TCP};
	struct dmsc_backend6 *be;

	ip6_copy(key.vip, ip6->daddr.in6_u.u6_addr32);
	/* the next header may be an extension header: TCP is what a TCP
	 * listener receives */
	be = mtls_backend(&dmsc_be_mtls6, &dmsc_backends6, &key, DMSC_PROTO_TCP);
	if (!be || !ip6_eq(be->addr, key.vip) || be->port != port)
		return false;
	return skb_guard_found(g, be->svc_id, be->flags, skb_ipv6_tcp_off(skb, ip6->nexthdr));
}

/*
 * A new TCP connection (a SYN) from another host straight to a backend of
 * this host of a required or permissive service (DMSC_BE_F_MTLS_*, indexed
 * in dmsc_be_mtls or dmsc_be_mtls6) did not come through this host's
 * tunnel, which connects from this host: required drops it, permissive
 * counts it. The SYN reaches cgroup_skb/ingress on the listener's socket
 * (tcp_filter, the listener in the mesh cgroup), whose port is the
 * packet's; its destination address is at a fixed offset in either
 * family, so the index is looked up before any header is walked. Only a
 * SYN counts, so connections open before an apply keep running; a packet
 * whose TCP header is not found (more IPv6 extension headers than walked,
 * an IPv4 fragment) counts as one, or adding headers would pass the guard.
 * At ingress skb data starts at the IP header (__cgroup_bpf_run_filter_skb
 * pushes it back). bpf_sock.src_port: host order.
 */
static __always_inline bool skb_mtls_refused(struct __sk_buff *skb, struct bpf_sock *sk)
{
	__u16 port = bpf_htons((__u16)sk->src_port);
	struct skb_guard g = {};
	struct dmsc_svc_stats *ss;
	struct tcphdr th;
	/* 40 bytes: a TCP packet of either family has them */
	union {
		struct iphdr v4;
		struct ipv6hdr v6;
	} ip;
	bool found;

	if (skb->ifindex == SKB_LOOPBACK_IFINDEX || bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
		return false;
	if (ip.v4.version == 4)
		found = skb_guard4(&ip.v4, port, &g);
	else
		found = ip.v6.version == 6 && skb_guard6(skb, &ip.v6, port, &g);
	if (!found || !(g.be_flags & DMSC_BE_F_MTLS_GUARD))
		return false;
	if (g.tcp_off &&
	    (bpf_skb_load_bytes(skb, g.tcp_off, &th, sizeof(th)) || !th.syn || th.ack))
		return false;
	ss = svc_stats(g.svc_id);
	if (g.be_flags & DMSC_BE_F_MTLS_REQUIRED) {
		if (ss)
			ss->mtls_plain_refused += 1;
		return true;
	}
	if (ss)
		ss->mtls_plain_admitted += 1;
	return false;
}

/* Packets a service sends back to a mesh client. In debt the packet still
 * passes: the sender is not ours to notify, so only the floor drops. */
SEC("cgroup_skb/ingress")
int dmsc_skb_ingress(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb_sock(skb);

	/* A SYN arrives on its listener: packets of established sockets,
	 * nearly all of them, skip the header reads. */
	if (sk && sk->state == BPF_TCP_LISTEN && skb_mtls_refused(skb, sk))
		return SKB_DROP;
	return skb_account(skb, skb_svc_id(sk, skb_record(sk)), 0) == DMSC_TB_DROP ? SKB_DROP
										    : SKB_PASS;
}
