// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The TC ingress program and the cgroup_skb programs run on packets the
 * test builds, through BPF_PROG_TEST_RUN on the running kernel: policed
 * traffic is dropped once its bucket is empty, and nothing else is, however
 * malformed. Needs root; skipped (not passed) without it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <criterion/criterion.h>

#include "dmsc/shared.h"
#include "dmsc_sock.skel.h"
#include "dmsc_tc.skel.h"

#define BACKEND_ADDR 0xc6120102u /* 198.18.1.2 */
#define BACKEND_PORT 5201
/* An IPv6 backend of the same service (dmsc_be_index6): 2001:2:1::2. */
static __u32 backend6[4];
#define SVC_ID 7
#define DEPTH 65536

static struct dmsc_tc *tc;

static void setup(void)
{
	struct dmsc_svc_key key = { .vip = htonl(BACKEND_ADDR), .port = htons(BACKEND_PORT),
				    .proto = IPPROTO_TCP };
	struct dmsc_limits lim = { .byte_rate = 1000, .byte_depth = DEPTH };
	struct dmsc_svc6_key key6 = { .port = htons(BACKEND_PORT), .proto = IPPROTO_TCP };
	__u32 id = SVC_ID;

	if (geteuid() != 0)
		cr_skip_test("needs root to load BPF programs");
	tc = dmsc_tc__open_and_load();
	cr_assert_not_null(tc, "load: %s", strerror(errno));
	backend6[0] = htonl(0x20010002);
	backend6[1] = htonl(0x00010000);
	backend6[3] = htonl(2);
	memcpy(key6.vip, backend6, sizeof(key6.vip));
	cr_assert_eq(bpf_map_update_elem(bpf_map__fd(tc->maps.dmsc_be_index), &key, &id, BPF_ANY), 0);
	cr_assert_eq(bpf_map_update_elem(bpf_map__fd(tc->maps.dmsc_be_index6), &key6, &id, BPF_ANY),
		     0);
	cr_assert_eq(bpf_map_update_elem(bpf_map__fd(tc->maps.dmsc_limits), &id, &lim, BPF_F_LOCK), 0);
}

static void teardown(void)
{
	dmsc_tc__destroy(tc);
	tc = NULL;
}

TestSuite(tc, .init = setup, .fini = teardown);

struct pkt {
	struct ethhdr eth;
	struct iphdr ip;
	union {
		struct tcphdr tcp;
		struct udphdr udp;
	};
	unsigned char payload[1400];
} __attribute__((packed));

static void make_pkt(struct pkt *p, __u8 proto, __u32 daddr, __u16 dport)
{
	memset(p, 0, sizeof(*p));
	p->eth.h_proto = htons(ETH_P_IP);
	p->ip.version = 4;
	p->ip.ihl = 5;
	p->ip.ttl = 64;
	p->ip.protocol = proto;
	p->ip.saddr = htonl(0xc6120202u);
	p->ip.daddr = htonl(daddr);
	p->ip.tot_len = htons(sizeof(*p) - sizeof(p->eth));
	if (proto == IPPROTO_TCP) {
		p->tcp.source = htons(40000);
		p->tcp.dest = htons(dport);
		p->tcp.doff = 5;
	} else {
		p->udp.source = htons(40000);
		p->udp.dest = htons(dport);
	}
}

static int run(int prog_fd, const void *data, size_t len)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data, .data_size_in = (__u32)len,
		    .repeat = 1);

	cr_assert_eq(bpf_prog_test_run_opts(prog_fd, &opts), 0, "test run (len %zu): %s", len,
		     strerror(errno));
	return (int)opts.retval;
}

static struct dmsc_svc_stats svc_stats(void)
{
	int ncpu = libbpf_num_possible_cpus(), i;
	struct dmsc_svc_stats per[256], sum;
	__u32 id = SVC_ID;

	memset(&sum, 0, sizeof(sum));
	cr_assert_leq(ncpu, 256);
	cr_assert_eq(bpf_map_lookup_elem(bpf_map__fd(tc->maps.dmsc_svc_stats), &id, per), 0);
	for (i = 0; i < ncpu; i++) {
		sum.tc_bytes += per[i].tc_bytes;
		sum.tc_policed += per[i].tc_policed;
	}
	return sum;
}

Test(tc, polices_a_limited_backend_once_its_bucket_is_empty)
{
	int fd = bpf_program__fd(tc->progs.dmsc_tc_ingress), i, passed = 0, dropped = 0;
	struct dmsc_svc_stats st;
	struct pkt p;

	make_pkt(&p, IPPROTO_TCP, BACKEND_ADDR, BACKEND_PORT);
	/* 300 packets of ~1.4 KB against a 64 KiB bucket refilled at
	 * 1000 B/s: the first ~135 pass (64 KiB, and the debt dmsc_tb_police
	 * allows), the rest are dropped. */
	for (i = 0; i < 300; i++) {
		int rc = run(fd, &p, sizeof(p));

		cr_assert(rc == TC_ACT_OK || rc == TC_ACT_SHOT, "verdict %d", rc);
		passed += rc == TC_ACT_OK;
		dropped += rc == TC_ACT_SHOT;
	}
	cr_assert_geq(passed * (int)sizeof(p), (1 + DMSC_TB_DEBT_DEPTHS) * DEPTH - 2 * (int)sizeof(p));
	cr_assert_leq(passed * (int)sizeof(p), (1 + DMSC_TB_DEBT_DEPTHS) * DEPTH + 2 * (int)sizeof(p));
	cr_assert_gt(dropped, 0);
	st = svc_stats();
	cr_assert_eq(st.tc_policed, (unsigned long long)dropped);
	cr_assert_eq(st.tc_bytes, (unsigned long long)passed * sizeof(p));
}

/* Drains the bucket, then checks that a packet passes anyway. */
static void expect_untouched(const void *data, size_t len, const char *what)
{
	int fd = bpf_program__fd(tc->progs.dmsc_tc_ingress), i;
	struct pkt p;

	make_pkt(&p, IPPROTO_TCP, BACKEND_ADDR, BACKEND_PORT);
	for (i = 0; i < 300; i++)
		run(fd, &p, sizeof(p));
	cr_assert_eq(run(fd, &p, sizeof(p)), TC_ACT_SHOT, "the bucket is empty");
	cr_assert_eq(run(fd, data, len), TC_ACT_OK, "%s must pass untouched", what);
}

Test(tc, other_destinations_pass)
{
	struct pkt p;

	make_pkt(&p, IPPROTO_TCP, BACKEND_ADDR + 1, BACKEND_PORT);
	expect_untouched(&p, sizeof(p), "another address");
	make_pkt(&p, IPPROTO_TCP, BACKEND_ADDR, BACKEND_PORT + 1);
	expect_untouched(&p, sizeof(p), "another port");
	make_pkt(&p, IPPROTO_UDP, BACKEND_ADDR, BACKEND_PORT);
	expect_untouched(&p, sizeof(p), "UDP to a TCP backend");
}

Test(tc, malformed_and_foreign_packets_pass)
{
	unsigned char raw[sizeof(struct pkt)];
	struct pkt p;
	size_t cut;

	make_pkt(&p, IPPROTO_TCP, BACKEND_ADDR, BACKEND_PORT);
	/* Truncated anywhere inside the ports. (BPF_PROG_TEST_RUN itself
	 * refuses an IPv4 frame shorter than its IP header, so the program
	 * cannot be shown one.) */
	for (cut = ETH_HLEN + sizeof(struct iphdr); cut < ETH_HLEN + sizeof(struct iphdr) + 4; cut++)
		expect_untouched(&p, cut, "a truncated packet");
	p.ip.ihl = 3;
	expect_untouched(&p, sizeof(p), "an IP header length below 5");
	p.ip.ihl = 15; /* options reach past a short packet */
	expect_untouched(&p, ETH_HLEN + 40, "options past the end");
	make_pkt(&p, IPPROTO_TCP, BACKEND_ADDR, BACKEND_PORT);
	p.ip.version = 6;
	expect_untouched(&p, sizeof(p), "a version 6 header in an IPv4 frame");
	make_pkt(&p, IPPROTO_TCP, BACKEND_ADDR, BACKEND_PORT);
	p.ip.frag_off = htons(100); /* a later fragment: no ports */
	expect_untouched(&p, sizeof(p), "a later fragment");
	make_pkt(&p, IPPROTO_TCP, BACKEND_ADDR, BACKEND_PORT);
	p.eth.h_proto = htons(ETH_P_IPV6);
	expect_untouched(&p, sizeof(p), "IPv6");
	p.eth.h_proto = htons(ETH_P_ARP);
	expect_untouched(&p, sizeof(p), "ARP");
	make_pkt(&p, IPPROTO_ICMP, BACKEND_ADDR, BACKEND_PORT);
	expect_untouched(&p, sizeof(p), "ICMP");
	memset(raw, 0xff, sizeof(raw));
	expect_untouched(raw, sizeof(raw), "all ones");
	memset(raw, 0, sizeof(raw));
	expect_untouched(raw, sizeof(raw), "all zeros");
}

/* IPv6 (docs/design.md decision 34): an IPv6 frame with `n_ext`
 * extension headers of 8 bytes (hop-by-hop, destination options, ...,
 * kinds[i]) before TCP to port `dport`. */
struct pkt6 {
	struct ethhdr eth;
	struct ipv6hdr ip6;
	unsigned char ext[6 * 8]; /* up to 6 headers of 8 bytes, then TCP */
	struct tcphdr tcp;        /* where it is with 6 headers; fewer move it up */
	unsigned char payload[1200];
} __attribute__((packed));

static size_t make_pkt6(struct pkt6 *p, const __u32 daddr[4], __u16 dport, const __u8 *kinds,
			size_t n_ext)
{
	unsigned char *at = p->ext;
	struct tcphdr tcp = {0};
	size_t i;

	memset(p, 0, sizeof(*p));
	p->eth.h_proto = htons(ETH_P_IPV6);
	p->ip6.version = 6;
	p->ip6.hop_limit = 64;
	p->ip6.saddr.s6_addr32[0] = htonl(0x20010002);
	p->ip6.saddr.s6_addr32[3] = htonl(9);
	memcpy(p->ip6.daddr.s6_addr32, daddr, 16);
	p->ip6.nexthdr = n_ext ? kinds[0] : IPPROTO_TCP;
	for (i = 0; i < n_ext; i++, at += 8)
		at[0] = i + 1 < n_ext ? kinds[i + 1] : IPPROTO_TCP; /* hdrlen 0: 8 bytes */
	/* at is 2 bytes past a 4-byte boundary (a packed frame after a
	 * 14-byte Ethernet header): the header is copied, never cast there */
	tcp.source = htons(40000);
	tcp.dest = htons(dport);
	tcp.doff = 5;
	memcpy(at, &tcp, sizeof(tcp));
	p->ip6.payload_len = htons((__u16)(sizeof(*p) - sizeof(p->eth) - sizeof(p->ip6)));
	return sizeof(*p);
}

/* Runs 300 packets; returns how many passed, after checking that some
 * were dropped and the passed ones are what the bucket allows. */
static int police_300(const void *data, size_t len)
{
	int fd = bpf_program__fd(tc->progs.dmsc_tc_ingress), i, passed = 0, dropped = 0;

	for (i = 0; i < 300; i++) {
		int rc = run(fd, data, len);

		cr_assert(rc == TC_ACT_OK || rc == TC_ACT_SHOT, "verdict %d", rc);
		passed += rc == TC_ACT_OK;
		dropped += rc == TC_ACT_SHOT;
	}
	cr_assert_geq(passed * (int)len, (1 + DMSC_TB_DEBT_DEPTHS) * DEPTH - 2 * (int)len);
	cr_assert_leq(passed * (int)len, (1 + DMSC_TB_DEBT_DEPTHS) * DEPTH + 2 * (int)len);
	cr_assert_gt(dropped, 0);
	return passed;
}

Test(tc, polices_an_ipv6_backend)
{
	struct dmsc_svc_stats st;
	struct pkt6 p;
	size_t len = make_pkt6(&p, backend6, BACKEND_PORT, NULL, 0);
	int passed = police_300(&p, len);

	st = svc_stats();
	cr_assert_eq(st.tc_policed, 300ull - (unsigned)passed);
	cr_assert_eq(st.tc_bytes, (unsigned long long)passed * len);
}

Test(tc, polices_ipv6_behind_extension_headers)
{
	/* hop-by-hop, routing, destination options, a first fragment */
	static const __u8 kinds[] = { 0, 43, 60, 44 };
	struct pkt6 p;
	size_t len = make_pkt6(&p, backend6, BACKEND_PORT, kinds, 4);

	police_300(&p, len);
}

Test(tc, ipv6_that_cannot_be_attributed_passes)
{
	static const __u8 five[] = { 0, 60, 60, 60, 60 }, frag[] = { 44 }, icmp[] = { 58 };
	__u32 other[4] = { backend6[0], backend6[1], backend6[2], htonl(3) };
	struct pkt6 p;
	size_t len;

	len = make_pkt6(&p, other, BACKEND_PORT, NULL, 0);
	expect_untouched(&p, len, "another IPv6 address");
	len = make_pkt6(&p, backend6, BACKEND_PORT + 1, NULL, 0);
	expect_untouched(&p, len, "another port");
	len = make_pkt6(&p, backend6, BACKEND_PORT, five, 5);
	expect_untouched(&p, len, "five extension headers (more than are walked)");
	len = make_pkt6(&p, backend6, BACKEND_PORT, frag, 1);
	p.ext[2] = 0x01; /* fragment offset 32: a later fragment, no ports */
	p.ext[3] = 0x00;
	expect_untouched(&p, len, "a later IPv6 fragment");
	len = make_pkt6(&p, backend6, BACKEND_PORT, icmp, 1);
	expect_untouched(&p, len, "ICMPv6");
	len = make_pkt6(&p, backend6, BACKEND_PORT, NULL, 0);
	expect_untouched(&p, ETH_HLEN + sizeof(struct ipv6hdr) + 2, "a truncated TCP header");
	p.ip6.version = 4;
	expect_untouched(&p, len, "a version 4 header in an IPv6 frame");
}

/* The cgroup_skb programs on packets without a socket (what test runs
 * give them): counted nowhere, passed. */
Test(tc, cgroup_skb_passes_packets_without_a_socket)
{
	struct dmsc_sock *sk = dmsc_sock__open_and_load();
	unsigned char raw[64];
	struct pkt p;

	cr_assert_not_null(sk);
	make_pkt(&p, IPPROTO_TCP, BACKEND_ADDR, BACKEND_PORT);
	memset(raw, 0xa5, sizeof(raw));
	/* cgroup_skb data starts at the network header. */
	cr_assert_eq(run(bpf_program__fd(sk->progs.dmsc_skb_egress), &p.ip, sizeof(p) - ETH_HLEN), 1);
	cr_assert_eq(run(bpf_program__fd(sk->progs.dmsc_skb_ingress), &p.ip, sizeof(p) - ETH_HLEN), 1);
	cr_assert_eq(run(bpf_program__fd(sk->progs.dmsc_skb_egress), raw, sizeof(raw)), 1);
	cr_assert_eq(run(bpf_program__fd(sk->progs.dmsc_skb_ingress), raw, sizeof(raw)), 1);
	dmsc_sock__destroy(sk);
}
