/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A helper's own connections through this host's tunnel: the way connect4
 * hands a workload's connection over, done by the process that makes the
 * connection. It writes the kernel's handoff record for its own socket
 * (bound to the loopback first, so that it knows the 4-tuple the tunnel's
 * accept() sees), then connects to the tunnel's handoff listener. Used by
 * dmsc-l7 for http services' backends on other hosts, vouching for the
 * client's cgroup (docs/design.md decision 75), and by dmscd for its
 * health probes of those backends (decision 77), vouching for no cgroup
 * but for a probe (DMSC_CGROUP_ID_PROBE_*).
 */
#ifndef DMSC_TUNNEL_VIA_H
#define DMSC_TUNNEL_VIA_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct dmsc_tunnel_via {
	int conf_fd;	 /* dmsc_tunnel_conf: where the tunnel listens */
	int handoff_fd;	 /* dmsc_l7_handoff: IPv4 records */
	int handoff6_fd; /* dmsc_tunnel_handoff6; -1: none (IPv6 backends direct) */
};

/* Opens the maps; 0, or a negative errno naming the map that failed
 * (warned). */
int dmsc_tunnel_via_open(struct dmsc_tunnel_via *v, const char *pin_dir);
void dmsc_tunnel_via_close(struct dmsc_tunnel_via *v);

/* The service a record names beside its backend (addresses in network
 * order; the tunnel reads only the backend and the cgroup). */
struct dmsc_tunnel_via_svc {
	uint32_t vip;
	uint8_t vip6[16];
	uint16_t vport;
};

/* How dmsc_tunnel_via_connect() went */
enum dmsc_tunnel_via_way {
	DMSC_VIA_TUNNELED,    /* through the tunnel */
	DMSC_VIA_DIRECT,      /* no tunnel registered: directly */
	DMSC_VIA_NO_IDENTITY, /* a tunnel, but cgroup 0: refused, EACCES */
};

/*
 * connect() of fd (a fresh socket of the family of `to`, not yet bound) to
 * the backend at `to` through the tunnel, vouching for cgroup. No tunnel
 * registered (dmsc_tunnel_conf addr 0; port6 0 or no IPv6 map for an IPv6
 * backend): directly, as connect4 does (DMSC_R_TUNNEL_NO_HELPER: the
 * backend's host decides). cgroup 0 (no identity known): -1, errno
 * EACCES, rather than have the tunnel reset the connection. Else
 * connect()'s result and errno (EINPROGRESS for a non-blocking fd), or -1
 * with errno when the record could not be written. *way says which.
 */
int dmsc_tunnel_via_connect(const struct dmsc_tunnel_via *v, int fd,
			    const struct sockaddr_storage *to, socklen_t to_len,
			    const struct dmsc_tunnel_via_svc *svc, uint64_t cgroup,
			    enum dmsc_tunnel_via_way *way);

/*
 * After fd's connection through the tunnel (DMSC_VIA_TUNNELED) was reset
 * or closed before any byte came back: whether the tunnel wrote back that
 * the backend was not reached (its host could not connect to it, or that
 * host was not reached: DMSC_SOCK_F_CONNECT_FAILED, docs/design.md
 * decision 79), which makes it a failed connect that nothing of the
 * request got past; false for a refusal or anything else. Takes the
 * record.
 */
bool dmsc_tunnel_via_unreached(const struct dmsc_tunnel_via *v, int fd);

#endif /* DMSC_TUNNEL_VIA_H */
