// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * TC ingress on the interfaces named at install: traffic that arrives from
 * other hosts for a local backend of a service with a byte limit is
 * policed against the service's interface bucket (see struct dmsc_limits
 * for why it is not the mesh clients' bucket).
 *
 * IPv4 and IPv6 (docs/design.md decision 34; an IPv6 backend is found in
 * dmsc_be_index6). Anything this program does not fully understand passes
 * untouched: ARP, fragments after the first, truncated or malformed headers,
 * IPv6 extension headers past the first few. Only policed traffic is ever
 * dropped.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.bpf.h"
#include "ipv6.bpf.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_HLEN 14
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define IP6_OFFSET 0xfff8 /* the offset bits of a fragment header's frag_off */

/* The destination ports of a TCP or UDP packet; both headers start with
 * source and destination port. */
struct l4_ports {
	__be16 source;
	__be16 dest;
};

/* Polices a packet for the local backend of a byte-limited service, if it
 * is one; returns the TC verdict. */
static __always_inline int tc_police(struct __sk_buff *skb, __u32 *svc_id)
{
	struct dmsc_svc_stats *ss;
	int ok;

	if (!svc_id)
		return TC_ACT_OK;
	ok = police_bytes(*svc_id, skb->len, DMSC_BUCKET_IFACE) != DMSC_TB_DROP;
	ss = svc_stats(*svc_id);
	if (ss) {
		ss->tc_bytes += ok ? skb->len : 0;
		ss->tc_policed += !ok;
	}
	return ok ? TC_ACT_OK : TC_ACT_SHOT;
}

static __always_inline int tc_ipv4(struct __sk_buff *skb, struct iphdr *ip, void *end)
{
	struct dmsc_svc_key key = {};
	struct l4_ports *l4;
	__u32 ihl;

	if ((void *)(ip + 1) > end)
		goto malformed;
	ihl = ip->ihl * 4;
	if (ip->version != 4 || ihl < sizeof(*ip))
		goto malformed;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	/* A later fragment has no ports: it cannot be attributed. */
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return TC_ACT_OK;
	l4 = (void *)ip + ihl;
	if ((void *)(l4 + 1) > end)
		goto malformed;
	key.vip = ip->daddr;
	key.port = l4->dest;
	key.proto = ip->protocol;
	return tc_police(skb, bpf_map_lookup_elem(&dmsc_be_index, &key));
malformed:
	count_reason(DMSC_R_TC_MALFORMED);
	return TC_ACT_OK;
}

/* IPv6: the transport header after at most IPV6_EXT_MAX extension headers
 * (hop-by-hop, routing, destination options, a first fragment's header);
 * more, or an unknown one, passes counted as not understood. */
static __always_inline int tc_ipv6(struct __sk_buff *skb, struct ipv6hdr *ip6, void *end)
{
	struct dmsc_svc6_key key = {};
	struct ipv6_opt_hdr *opt;
	struct frag_hdr *frag;
	struct l4_ports *l4;
	void *next;
	__u8 nexthdr;
	int i;

	if ((void *)(ip6 + 1) > end)
		goto malformed;
	if (ip6->version != 6)
		goto malformed;
	nexthdr = ip6->nexthdr;
	next = ip6 + 1;
#pragma unroll
	for (i = 0; i < IPV6_EXT_MAX; i++) {
		if (nexthdr == IPPROTO_TCP || nexthdr == IPPROTO_UDP)
			break;
		if (nexthdr == NEXTHDR_FRAGMENT) {
			frag = next;
			if ((void *)(frag + 1) > end)
				goto malformed;
			/* A later fragment has no ports: it cannot be attributed. */
			if (frag->frag_off & bpf_htons(IP6_OFFSET))
				return TC_ACT_OK;
			nexthdr = frag->nexthdr;
			next = frag + 1;
			continue;
		}
		if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING && nexthdr != NEXTHDR_DEST)
			return TC_ACT_OK; /* not TCP or UDP (ICMPv6, ESP, ...) */
		opt = next;
		if ((void *)(opt + 1) > end)
			goto malformed;
		nexthdr = opt->nexthdr;
		next += (opt->hdrlen + 1) * 8;
	}
	if (nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP)
		goto malformed; /* extension headers past the ones walked */
	l4 = next;
	if ((void *)(l4 + 1) > end)
		goto malformed;
	key.vip[0] = ip6->daddr.in6_u.u6_addr32[0];
	key.vip[1] = ip6->daddr.in6_u.u6_addr32[1];
	key.vip[2] = ip6->daddr.in6_u.u6_addr32[2];
	key.vip[3] = ip6->daddr.in6_u.u6_addr32[3];
	key.port = l4->dest;
	key.proto = nexthdr;
	return tc_police(skb, bpf_map_lookup_elem(&dmsc_be_index6, &key));
malformed:
	count_reason(DMSC_R_TC_MALFORMED);
	return TC_ACT_OK;
}

SEC("tc")
int dmsc_tc_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return tc_ipv4(skb, (void *)(eth + 1), end);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return tc_ipv6(skb, (void *)(eth + 1), end);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
