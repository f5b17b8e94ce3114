/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Every pinned map of the datapath, once, for both sides. The BPF objects'
 * map definitions (bpf/common/maps.bpf.h), the enum of map ids, the table of
 * names, the sizing at install and the test fixture are generated from this
 * list.
 *
 * A row X(ID, NAME, SIZE, TYPE, MAX, KEY, VALUE):
 * - ID: DMSC_MAP_ID (dmsc/shared.h) is the map's name as a string, its pin
 *   under maps/; DMSC_M_ID its index in userspace tables.
 * - NAME: the identifier of its definition in every BPF object (the same
 *   name: install finds a map by it).
 * - SIZE: what its capacity follows at install: SVC (one entry per service
 *   id: --max-services), BE (per backend id: --max-backends) or FIXED.
 * - TYPE: BPF_MAP_TYPE_<TYPE>. Hash maps and socket storage allocate on
 *   demand (BPF_F_NO_PREALLOC; socket storage requires it).
 * - MAX: max_entries of a FIXED map in the object. 0 for SVC and BE maps
 *   (the objects hold DMSC_DEFAULT_MAX_SERVICES / _BACKENDS, which install
 *   replaces) and for socket storage (one value per socket, no limit).
 * - KEY, VALUE: the types (layouts in dmsc/shared.h; dmsc_fp_socks is keyed
 *   by socket cookie). The IPv6 maps are their IPv4 twins' types and sizes
 *   with IPv6 keys and values.
 */
#ifndef DMSC_MAPS_H
#define DMSC_MAPS_H

#define DMSC_DEFAULT_MAX_ALLOW 16384

#define DMSC_MAPS(X)                                                                               \
	X(SERVICES,    dmsc_services,    SVC,   HASH,         0,                                   \
	  struct dmsc_svc_key, struct dmsc_svc)                                                    \
	X(BACKENDS,    dmsc_backends,    BE,    ARRAY,        0,                                   \
	  __u32, struct dmsc_backend)                                                              \
	X(SVC_META,    dmsc_svc_meta,    SVC,   ARRAY,        0,                                   \
	  __u32, struct dmsc_svc_meta)                                                             \
	X(SVC_STATS,   dmsc_svc_stats,   SVC,   PERCPU_ARRAY, 0,                                   \
	  __u32, struct dmsc_svc_stats)                                                            \
	X(BE_STATS,    dmsc_be_stats,    BE,    PERCPU_ARRAY, 0,                                   \
	  __u32, struct dmsc_be_stats)                                                             \
	X(REASONS,     dmsc_reasons,     FIXED, PERCPU_ARRAY, DMSC_R_MAX,                          \
	  __u32, __u64)                                                                            \
	X(SOCK_VIP,    dmsc_sock_vip,    FIXED, SK_STORAGE,   0,                                   \
	  int, struct dmsc_sock_vip)                                                               \
	X(INSTALL,     dmsc_install,     FIXED, ARRAY,        1,                                   \
	  __u32, struct dmsc_install)                                                              \
	X(LIMITS,      dmsc_limits,      SVC,   ARRAY,        0,                                   \
	  __u32, struct dmsc_limits)                                                               \
	X(ALLOW,       dmsc_allow,       FIXED, HASH,         DMSC_DEFAULT_MAX_ALLOW,              \
	  struct dmsc_allow_key, struct dmsc_allow_rule)                                           \
	X(BE_INDEX,    dmsc_be_index,    BE,    HASH,         0,                                   \
	  struct dmsc_svc_key, __u32)                                                              \
	X(L7_CONF,     dmsc_l7_conf,     FIXED, ARRAY,        1,                                   \
	  __u32, struct dmsc_l7_conf)                                                              \
	X(L7_HANDOFF,  dmsc_l7_handoff,  FIXED, LRU_HASH,     DMSC_L7_HANDOFF_MAX,                 \
	  struct dmsc_l7_handoff_key, struct dmsc_l7_handoff)                                      \
	X(L7_HANDOFF6, dmsc_l7_handoff6, FIXED, LRU_HASH,     DMSC_L7_HANDOFF_MAX,                 \
	  struct dmsc_l7_handoff6_key, struct dmsc_l7_handoff6)                                    \
	X(L7_OWN,      dmsc_l7_own,      FIXED, SK_STORAGE,   0,                                   \
	  int, struct dmsc_l7_own)                                                                 \
	X(L7_NETNS,    dmsc_l7_netns,    FIXED, HASH,         DMSC_L7_NETNS_MAX,                   \
	  __u64, struct dmsc_l7_conf)                                                              \
	X(FP_SOCKS,    dmsc_fp_socks,    FIXED, SOCKHASH,     DMSC_FP_SOCKS_MAX,                   \
	  __u64, __u64)                                                                            \
	X(FP_PENDING,  dmsc_fp_pending,  FIXED, LRU_HASH,     DMSC_FP_PENDING_MAX,                 \
	  struct dmsc_fp_conn_key, struct dmsc_fp_pending)                                         \
	X(FP_SOCK,     dmsc_fp_sock,     FIXED, SK_STORAGE,   0,                                   \
	  int, struct dmsc_fp_sock)                                                                \
	X(FP_STATS,    dmsc_fp_stats,    SVC,   PERCPU_ARRAY, 0,                                   \
	  __u32, struct dmsc_fp_stats)                                                             \
	X(FP_SVC,      dmsc_fp_svc,      SVC,   ARRAY,        0,                                   \
	  __u32, struct dmsc_fp_svc)                                                               \
	X(FP_HOST,     dmsc_fp_host,     FIXED, ARRAY,        1,                                   \
	  __u32, struct dmsc_fp_host)                                                              \
	X(BE_HEALTH,   dmsc_be_health,   BE,    ARRAY,        0,                                   \
	  __u32, struct dmsc_be_health)                                                            \
	X(SERVICES6,   dmsc_services6,   SVC,   HASH,         0,                                   \
	  struct dmsc_svc6_key, struct dmsc_svc)                                                   \
	X(BACKENDS6,   dmsc_backends6,   BE,    ARRAY,        0,                                   \
	  __u32, struct dmsc_backend6)                                                             \
	X(SOCK_VIP6,   dmsc_sock_vip6,   FIXED, SK_STORAGE,   0,                                   \
	  int, struct dmsc_sock_vip6)                                                              \
	X(FP_PENDING6, dmsc_fp_pending6, FIXED, LRU_HASH,     DMSC_FP_PENDING_MAX,                 \
	  struct dmsc_fp_conn6_key, struct dmsc_fp_pending6)                                       \
	X(FP_SOCK6,    dmsc_fp_sock6,    FIXED, SK_STORAGE,   0,                                   \
	  int, struct dmsc_fp_sock6)                                                               \
	X(BE_INDEX6,   dmsc_be_index6,   BE,    HASH,         0,                                   \
	  struct dmsc_svc6_key, __u32)                                                             \
	X(TUNNEL_CONF, dmsc_tunnel_conf, FIXED, ARRAY,        1,                                   \
	  __u32, struct dmsc_l7_conf)                                                              \
	X(SOCK_CGROUP, dmsc_sock_cgroup, FIXED, SK_STORAGE,   0,                                   \
	  int, __u64)                                                                              \
	X(BE_MTLS,     dmsc_be_mtls,     BE,    HASH,         0,                                   \
	  struct dmsc_svc_key, __u32)                                                              \
	X(BE_VERDICT,  dmsc_be_verdict,  BE,    ARRAY,        0,                                   \
	  __u32, struct dmsc_be_verdict)                                                           \
	X(TUNNEL_HANDOFF6, dmsc_tunnel_handoff6, FIXED, LRU_HASH, DMSC_L7_HANDOFF_MAX,             \
	  struct dmsc_tunnel_handoff6_key, struct dmsc_tunnel_handoff6)                            \
	X(BE_MTLS6,    dmsc_be_mtls6,    BE,    HASH,         0,                                   \
	  struct dmsc_svc6_key, __u32)

enum dmsc_map_size {
	DMSC_MAP_SIZE_FIXED,
	DMSC_MAP_SIZE_SVC,
	DMSC_MAP_SIZE_BE,
};

#endif /* DMSC_MAPS_H */
