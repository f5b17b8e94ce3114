/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * dmsc-l7's connections to backends on other hosts (docs/design.md
 * decision 75): a backend that the policy places on another host, of a
 * service whose "mtls" is not off, is reached through this host's tunnel
 * (dmsc-l7 tunnel --handoff-listen), vouching for the client's cgroup, the
 * way connect4 hands a tcp service's connection over: dmsc-l7 writes the
 * kernel's handoff record for its own socket, then connects to the
 * tunnel's listener (user/mtls/tunnel_via.h).
 */
#ifndef DMSC_L7_VIA_H
#define DMSC_L7_VIA_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "l7_route.h"
#include "tunnel_via.h"

struct dmsc_l7_via {
	const char *host;	  /* this host's name (--host); NULL: none, every backend direct */
	struct dmsc_tunnel_via t; /* the maps; fds -1 without a host */
	/* relaxed atomics, all workers: connections through the tunnel, sent
	 * directly for want of a tunnel, refused for want of an identity;
	 * through the tunnel, ended because the backend was not reached */
	uint64_t tunneled, no_tunnel, no_identity, unreached;
};

/* 0, or a negative errno naming the map that failed (warned). */
int dmsc_l7_via_open(struct dmsc_l7_via *v, const char *pin_dir, const char *host);
void dmsc_l7_via_close(struct dmsc_l7_via *v);

/* Whether backend `backend` of svc goes through the tunnel, by the policy. */
bool dmsc_l7_via_tunnel(const struct dmsc_l7_via *v, const struct dmsc_l7_service *svc,
			int backend);

/* The identity a connection to that backend carries, which the reuse of
 * connections keys on: cgroup through the tunnel, 0 for a direct one
 * (shared by every client). */
static inline uint64_t dmsc_l7_via_key(const struct dmsc_l7_via *v,
				       const struct dmsc_l7_service *svc, int backend,
				       uint64_t cgroup)
{
	return dmsc_l7_via_tunnel(v, svc, backend) ? cgroup : 0;
}

/*
 * connect() of fd (a fresh socket of the family of `to`, marked
 * dmsc_l7_own) for backend `backend` of svc at `to`: directly, or through
 * the tunnel vouching for cgroup (the client's cgroup id, from its
 * handoff record). No tunnel registered (dmsc_tunnel_conf addr 0, port6 0
 * for IPv6): directly, as connect4 does (DMSC_R_TUNNEL_NO_HELPER). Through
 * the tunnel with cgroup 0 (no identity known): -1, errno EACCES. Else
 * connect()'s result and errno.
 */
int dmsc_l7_via_connect(struct dmsc_l7_via *v, int fd, const struct sockaddr_storage *to,
			socklen_t to_len, const struct dmsc_l7_service *svc, int backend,
			uint64_t cgroup);

/*
 * A fresh connection fd to backend `backend` of svc that ended before any
 * byte came back: when it went through the tunnel and the tunnel says the
 * backend was not reached (decision 79), a failed connect, counted for the
 * backend's passive health, that nothing of the request got past (any
 * request may then go to another backend); true. Else false: a refusal at
 * the backend's host, or a direct connection, stays what it was.
 */
bool dmsc_l7_via_unreached(struct dmsc_l7_via *v, int fd, const struct dmsc_l7_service *svc,
			   int backend);

#endif /* DMSC_L7_VIA_H */
