// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * TC ingress on the interfaces named at install: traffic that arrives from
 * other hosts for a local backend of a service with a byte limit is
 * policed against the service's interface bucket (see struct dmsc_limits
 * for why it is not the mesh clients' bucket).
 *
 * Anything this program does not fully understand passes untouched: IPv6,
 * ARP, fragments after the first, truncated or malformed headers. Only
 * policed traffic is ever dropped.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.bpf.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define ETH_HLEN 14
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* The destination ports of a TCP or UDP packet; both headers start with
 * source and destination port. */
struct l4_ports {
	__be16 source;
	__be16 dest;
};

SEC("tc")
int dmsc_tc_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct dmsc_svc_key key = {};
	struct dmsc_svc_stats *ss;
	struct ethhdr *eth = data;
	struct l4_ports *l4;
	struct iphdr *ip;
	__u32 *svc_id, ihl;
	int ok;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = (void *)(eth + 1);
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
	svc_id = bpf_map_lookup_elem(&dmsc_be_index, &key);
	if (!svc_id)
		return TC_ACT_OK;
	ok = police_bytes(*svc_id, skb->len, DMSC_BUCKET_IFACE) != DMSC_TB_DROP;
	ss = svc_stats(*svc_id);
	if (ss) {
		ss->tc_bytes += ok ? skb->len : 0;
		ss->tc_policed += !ok;
	}
	return ok ? TC_ACT_OK : TC_ACT_SHOT;
malformed:
	count_reason(DMSC_R_TC_MALFORMED);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
