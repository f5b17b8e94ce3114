/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * IPv6 addresses as four network-order u32 words (the layout of
 * bpf_sock_addr.user_ip6 and of every IPv6 key in dmsc/shared.h), and the
 * extension headers the packet programs walk to reach TCP or UDP.
 */
#ifndef DMSC_IPV6_BPF_H
#define DMSC_IPV6_BPF_H

/* IPv6 extension headers that may come before TCP or UDP, walked up to
 * this many (the kernel accepts any number; more than a few is unusual). */
#define IPV6_EXT_MAX 4
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60

static __always_inline bool ip6_eq(const __u32 a[4], const __u32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline void ip6_copy(__u32 to[4], const __u32 from[4])
{
	to[0] = from[0];
	to[1] = from[1];
	to[2] = from[2];
	to[3] = from[3];
}

#endif /* DMSC_IPV6_BPF_H */
