/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The tunnel's source side under the kernel (docs/design.md decision 24):
 * connect4 hands a mesh workload's connection to a backend on another
 * host to the tunnel's handoff listener; the record sockops published
 * under the connection's 4-tuple names the backend picked and the
 * caller's cgroup id, which becomes the cgroup path the tunnel vouches
 * for. The policy's backend "host" gives the peer helper to carry it to.
 * connect6 hands IPv6 connections to a listener on [::1] on the same port,
 * their records in dmsc_tunnel_handoff6 (docs/design.md decision 64).
 */
#ifndef DMSC_TUNNEL_HANDOFF_H
#define DMSC_TUNNEL_HANDOFF_H

#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>

#include "policy.h"
#include "tunnel.h"
#include "tunnel_health.h"

#define DMSC_TUNNEL_HANDOFF_LISTEN_DEFAULT "127.0.0.1:15009"

struct dmsc_tunnel_handoff {
	int handoff_fd; /* the pinned dmsc_l7_handoff */
	int handoff6_fd; /* the pinned dmsc_tunnel_handoff6; -1: none (an older datapath) */
	int conf_fd;	/* the pinned dmsc_tunnel_conf */
	int own_fd;	/* the pinned dmsc_l7_own: the sockets that deliver streams */
	int cg_fd;	/* the cgroup2 mount: open_by_handle_at */
	char cg_root[PATH_MAX];
};

/* Opens the maps under pin_dir and the cgroup2 mount; 0 or a negative
 * errno, logged with the map or path. */
int dmsc_tunnel_handoff_open(struct dmsc_tunnel_handoff *h, const char *pin_dir);
/* Writes listen into dmsc_tunnel_conf: connect4 hands connections there;
 * connect6 to [::1] on port6 (network order; 0: no IPv6 listener). */
int dmsc_tunnel_handoff_register(struct dmsc_tunnel_handoff *h, const struct sockaddr_in *listen,
				 uint16_t port6);
void dmsc_tunnel_handoff_close(struct dmsc_tunnel_handoff *h);
/* Marks fd, before its connect(), as the tunnel's own in dmsc_l7_own: it
 * delivers a stream this host's tunnel authorized, which connect4 does not
 * check again against allow_from (docs/design.md decision 44). 0 when there
 * is no map (no --pin-dir) or a negative errno, logged. */
int dmsc_tunnel_handoff_own(const struct dmsc_tunnel_handoff *h, int fd);

/* For a connection accepted on the handoff listener: takes (reads and
 * deletes) its record, and fills where it goes (peer: the backend host's
 * tunnel; dest: the backend) and the identity (the caller's cgroup path,
 * relative to the cgroup2 mount). 0, or a negative errno with why set:
 * no record (the connection did not come from connect4: refused, never
 * guessed, decision 21), a backend the policy does not place on a host,
 * a cgroup gone. hk: what the tunnel's passive health counts the
 * stream's outcome under (tunnel_health.h; zero ids: not counted). */
int dmsc_tunnel_handoff_take(const struct dmsc_tunnel_handoff *h, int fd,
			     const struct dmsc_policy *p, union dmsc_tunnel_sa *peer,
			     union dmsc_tunnel_sa *dest, struct dmsc_tunnel_hkey *hk, char *identity,
			     size_t id_len, char *why, size_t why_len);

/* The backend of the policy at addr:port (addr6 for IPv6, port in host
 * order) placed on a host the policy resolves; NULL when none is. */
const struct dmsc_policy_backend *dmsc_tunnel_placed(const struct dmsc_policy *p, int family,
						     __u32 addr, const __u32 addr6[4], __u16 port);
/* The tunnel address of b's host (b from dmsc_tunnel_placed). */
void dmsc_tunnel_host_sa(const struct dmsc_policy_backend *b, union dmsc_tunnel_sa *peer);
/* A backend's address as the kernel's records hold it (network order). */
void dmsc_tunnel_dest_sa(int family, __u32 addr, const __u32 addr6[4], __u16 port,
			 union dmsc_tunnel_sa *dest);

#endif /* DMSC_TUNNEL_HANDOFF_H */
