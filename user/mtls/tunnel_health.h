/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Passive health of the backends the tunnel carries connections to
 * (docs/design.md decision 78). connect4 hands a workload's connection to
 * a backend on another host to this host's tunnel, so the kernel sees it
 * reach the tunnel, never the backend: it counts nothing for such a
 * socket. The tunnel counts instead, in the backend's dmsc_be_health
 * element, with the kernel's function and the service's `passive`
 * settings (dmsc/health.h): a stream the backend's host could not connect
 * (RESET with DMSC_TF_R_CONNECT), or one whose TLS connection to that host
 * failed before it opened, is a failed connect; OPEN_OK ends a run. The
 * tunnel is the only writer of those elements, as dmsc-l7 is of an http
 * service's (decision 53); dmscd makes an ejection durable as it does the
 * kernel's.
 */
#ifndef DMSC_TUNNEL_HEALTH_H
#define DMSC_TUNNEL_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "dmsc/shared.h"
#include "tunnel.h"

/* What a handoff record names for the count: zero ids for records the
 * kernel did not write (dmsc-l7's and dmscd's probes: they count
 * themselves, or are probes). */
struct dmsc_tunnel_hkey {
	uint32_t svc_id, backend_id;
	bool v6;
	struct dmsc_svc_key key;
	struct dmsc_svc6_key key6;
	union dmsc_tunnel_sa dest; /* the backend, for the log */
	/* a helper's own connection (no backend id; dmscd's probes aside):
	 * the key of its record, under which a failed connect is written
	 * back for the helper (DMSC_SOCK_F_CONNECT_FAILED, decision 79) */
	bool via;
	union {
		struct dmsc_l7_handoff_key v4;
		struct dmsc_tunnel_handoff6_key v6;
	} via_key;
};

#define DMSC_TUNNEL_HEALTH_CLEAN_MAX 256

struct dmsc_tunnel_health {
	bool opened;
	int health_fd, verdict_fd, services_fd, services6_fd, meta_fd;
	int handoff_fd, handoff6_fd; /* the records written back: the handoff's, borrowed */
	/* backends whose element has no run of failures, as last written or
	 * read here (the tunnel is its only writer): a stream that opens
	 * needs no map access for them */
	uint32_t clean[DMSC_TUNNEL_HEALTH_CLEAN_MAX];
	unsigned int n_clean;
	unsigned long long failures, ejections, capped;
	unsigned long long via_failed; /* records written back */
};

/* Opens the maps under pin_dir; without them (an older datapath, no
 * --pin-dir) nothing is counted, said once. */
void dmsc_tunnel_health_open(struct dmsc_tunnel_health *th, const char *pin_dir,
			     int handoff_fd, int handoff6_fd);
void dmsc_tunnel_health_close(struct dmsc_tunnel_health *th);

/* The outcome of a stream to the backend of k: opened (ok) or not. Not
 * opened, a helper's own connection gets its record written back with
 * DMSC_SOCK_F_CONNECT_FAILED: call it before the local socket's reset. */
void dmsc_tunnel_health_result(struct dmsc_tunnel_health *th, const struct dmsc_tunnel_hkey *k,
			       bool ok);

/* Is backend id kept out of its service's picks at now: ejected by its
 * counter, or out in dmscd's verdict (ejected, or failing active probes)?
 * false without the maps. */
bool dmsc_tunnel_health_out(const struct dmsc_tunnel_health *th, uint32_t id, uint64_t now);

#endif /* DMSC_TUNNEL_HEALTH_H */
