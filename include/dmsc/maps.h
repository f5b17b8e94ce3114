/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Every pinned map of the datapath, once, for userspace: its id, and what
 * its capacity follows at install. The enum of map ids, the table of names,
 * the sizing at install and the test fixture are generated from this list.
 *
 * A row X(ID, SIZE): DMSC_MAP_ID (dmsc/shared.h) is the map's name, which
 * is the identifier of its definition in bpf/common/maps.bpf.h and its pin
 * under maps/; DMSC_M_ID its index in userspace tables. SIZE: SVC (one
 * entry per service id: --max-services), BE (per backend id:
 * --max-backends) or FIXED (the max_entries of its definition).
 */
#ifndef DMSC_MAPS_H
#define DMSC_MAPS_H

#define DMSC_MAPS(X)            \
	X(SERVICES, SVC)        \
	X(BACKENDS, BE)         \
	X(SVC_META, SVC)        \
	X(SVC_STATS, SVC)       \
	X(BE_STATS, BE)         \
	X(REASONS, FIXED)       \
	X(SOCK_VIP, FIXED)      \
	X(INSTALL, FIXED)       \
	X(LIMITS, SVC)          \
	X(ALLOW, FIXED)         \
	X(BE_INDEX, BE)         \
	X(L7_CONF, FIXED)       \
	X(L7_HANDOFF, FIXED)    \
	X(L7_OWN, FIXED)        \
	X(L7_NETNS, FIXED)      \
	X(FP_SOCKS, FIXED)      \
	X(FP_PENDING, FIXED)    \
	X(FP_SOCK, FIXED)       \
	X(FP_STATS, SVC)        \
	X(FP_SVC, SVC)          \
	X(FP_HOST, FIXED)       \
	X(BE_HEALTH, BE)        \
	X(SERVICES6, SVC)       \
	X(BACKENDS6, BE)        \
	X(SOCK_VIP6, FIXED)     \
	X(FP_PENDING6, FIXED)   \
	X(FP_SOCK6, FIXED)      \
	X(BE_INDEX6, BE)        \
	X(TUNNEL_CONF, FIXED)   \
	X(SOCK_CGROUP, FIXED)   \
	X(BE_MTLS, BE)

enum dmsc_map_size {
	DMSC_MAP_SIZE_FIXED,
	DMSC_MAP_SIZE_SVC,
	DMSC_MAP_SIZE_BE,
};

#endif /* DMSC_MAPS_H */
