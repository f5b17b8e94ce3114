/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Unit tests that need real maps: the datapath's BPF object loaded into the
 * running kernel (programs loaded, nothing attached, nothing pinned), its
 * maps opened as a struct dmsc_datapath. Needs root: without it the test
 * is reported as skipped, never as passed.
 */
#ifndef DMSC_TEST_FIXTURE_H
#define DMSC_TEST_FIXTURE_H

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/libbpf.h>
#include <criterion/criterion.h>

#include "apply.h"
#include "datapath.h"
#include "dmsc_sock.skel.h"
#include "policy.h"

static inline void fixture_load(struct dmsc_sock **skel, struct dmsc_datapath *dp,
				unsigned int max_services, unsigned int max_backends)
{
	struct dmsc_sock *s;
	size_t i;

	if (geteuid() != 0)
		cr_skip_test("needs root to load BPF maps");
	s = dmsc_sock__open();
	cr_assert_not_null(s);
	/* sized as install sizes them (dmsc/maps.h) */
	for (i = 0; i < DMSC_M_COUNT; i++) {
		struct bpf_map *m = bpf_object__find_map_by_name(s->obj, dmsc_map_names[i]);

		if (dmsc_map_sizes[i] == DMSC_MAP_SIZE_SVC)
			bpf_map__set_max_entries(m, max_services);
		else if (dmsc_map_sizes[i] == DMSC_MAP_SIZE_BE)
			bpf_map__set_max_entries(m, max_backends);
	}
	cr_assert_eq(dmsc_sock__load(s), 0, "load: %s", strerror(errno));
	memset(dp, 0, sizeof(*dp));
	dp->dir_fd = -1;
	for (i = 0; i < DMSC_M_COUNT; i++) {
		dp->fd[i] = bpf_map__fd(bpf_object__find_map_by_name(s->obj, dmsc_map_names[i]));
		cr_assert_gt(dp->fd[i], 2, "map %s has an fd", dmsc_map_names[i]);
	}
	dp->max_services = max_services;
	dp->max_backends = max_backends;
	dp->nr_cpus = libbpf_num_possible_cpus();
	*skel = s;
}

/* Swaps dp's fd of the meta map for a read-only one, so that the next
 * apply's first write to it fails; returns the writable fd for
 * fixture_meta_writable. */
static inline int fixture_meta_read_only(struct dmsc_datapath *dp)
{
	LIBBPF_OPTS(bpf_get_fd_by_id_opts, ro, .open_flags = BPF_F_RDONLY);
	struct bpf_map_info info;
	__u32 len = sizeof(info);
	int rw_fd = dp->fd[DMSC_M_SVC_META];

	memset(&info, 0, sizeof(info));
	cr_assert_eq(bpf_obj_get_info_by_fd(rw_fd, &info, &len), 0);
	dp->fd[DMSC_M_SVC_META] = bpf_map_get_fd_by_id_opts(info.id, &ro);
	cr_assert_geq(dp->fd[DMSC_M_SVC_META], 0);
	return rw_fd;
}

static inline void fixture_meta_writable(struct dmsc_datapath *dp, int rw_fd)
{
	close(dp->fd[DMSC_M_SVC_META]);
	dp->fd[DMSC_M_SVC_META] = rw_fd;
}

/* An empty install record: what a finished install leaves (test_crash and
 * test_mirror start from it). */
static inline void fixture_install_clear(const struct dmsc_datapath *dp)
{
	struct dmsc_install rec = { 0 };
	__u32 zero = 0;

	cr_assert_eq(bpf_map_update_elem(dp->fd[DMSC_M_INSTALL], &zero, &rec, BPF_ANY), 0);
}

/* How many services two reads of the maps hold differently. */
static inline size_t fixture_svcs_differ(const struct dmsc_state *a, const struct dmsc_state *b)
{
	size_t i, n = 0;

	for (i = 0; i < b->n_svcs; i++)
		if (memcmp(&a->svcs[i], &b->svcs[i], sizeof(b->svcs[i])))
			n++;
	return n;
}

/* Sets a service's rate limit; a rate or burst of 0 is left out. */
static inline void fixture_limits(struct dmsc_policy_service *s, __u64 conns, __u64 burst,
				  __u64 bytes)
{
	s->has_rate_limit = true;
	s->rate_limit.has_connections_per_second = conns != 0;
	s->rate_limit.connections_per_second = conns;
	s->rate_limit.has_burst = burst != 0;
	s->rate_limit.burst = burst;
	s->rate_limit.has_bytes_per_second = bytes != 0;
	s->rate_limit.bytes_per_second = bytes;
}

/* A policy of n services "s<i>" on 198.19.0.0+i:80, each with nb backends
 * 198.18.0.0+8i+b:8080 weighted weights[b] (all 1 when weights is NULL). */
static inline void fixture_policy(struct dmsc_policy *p, size_t n, size_t nb,
				  const __u32 *weights)
{
	size_t i, b;
	char name[32];

	p->n_services = n;
	p->services = calloc(n + 1, sizeof(*p->services));
	cr_assert_not_null(p->services);
	for (i = 0; i < n; i++) {
		struct dmsc_policy_service *s = &p->services[i];

		snprintf(name, sizeof(name), "s%zu", i);
		s->name = strdup(name);
		s->vip = htonl(0xc6130000u + (__u32)i);
		s->port = 80;
		s->protocol = DMSC_POLICY_TCP;
		s->n_backends = nb;
		s->backends = calloc(nb, sizeof(*s->backends));
		cr_assert_not_null(s->backends);
		for (b = 0; b < nb; b++) {
			s->backends[b].addr = htonl(0xc6120000u + (__u32)(i * 8 + b));
			s->backends[b].port = 8080;
			s->backends[b].weight = weights ? weights[b] : 1;
		}
	}
}

/* Makes service i of a fixture_policy IPv6: VIP 2001:2:61::(i + 1), w0 as
 * its VIP's first word after the /48 (two VIPs of equal words in another
 * order fold alike), backends 2001:2:60::(i * 8 + b + 1). */
static inline void fixture_ipv6(struct dmsc_policy *p, size_t i, __u16 w0)
{
	struct dmsc_policy_service *s = &p->services[i];
	size_t b;

	s->family = AF_INET6;
	s->vip = 0;
	memset(s->vip6, 0, sizeof(s->vip6));
	s->vip6[0] = 0x20, s->vip6[1] = 0x01, s->vip6[3] = 0x02;
	s->vip6[4] = (__u8)(w0 >> 8), s->vip6[5] = (__u8)w0;
	s->vip6[15] = (__u8)(i + 1);
	for (b = 0; b < s->n_backends; b++) {
		struct dmsc_policy_backend *be = &s->backends[b];

		be->addr = 0;
		memset(be->addr6, 0, sizeof(be->addr6));
		be->addr6[0] = 0x20, be->addr6[1] = 0x01, be->addr6[3] = 0x02, be->addr6[5] = 0x60;
		be->addr6[15] = (__u8)(i * 8 + b + 1);
	}
}

#endif /* DMSC_TEST_FIXTURE_H */
