/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A network namespace's cookie, the key of dmsc_l7_netns and
 * dmsc_l7_handoff6 (docs/design.md decisions 25, 48 and 62).
 *
 * getsockopt(SO_NETNS_COOKIE) on a socket made in the namespace, Linux
 * 5.14+. Before, the cookie is what a cgroup sock_create program reads
 * with bpf_get_netns_cookie() (Linux 5.7): the helper makes a cgroup of its
 * own, dmsc-l7-netns.PID, in its own cgroup or else beside the mesh cgroup
 * (never in the cgroup2 root), attaches the program there with a bpf_link,
 * and for each namespace forks a child that joins that cgroup, enters the
 * namespace and makes one socket: the program writes the cookie in a
 * one-element array, the helper reads it once the child has exited. The
 * cgroup goes at dmsc_l7_nscookie_cleanup(); one a killed helper left is
 * removed by the next helper's first probe.
 *
 * DMSC_L7_NETNS_COOKIE=probe in the environment skips SO_NETNS_COOKIE
 * (tests exercise the older kernels' path on a newer one).
 */
#ifndef DMSC_L7_NSCOOKIE_H
#define DMSC_L7_NSCOOKIE_H

#include <stdint.h>

/*
 * The cookie of the namespace nsfd (an open /proc/PID/ns/net), in which
 * sock (>= 0, or -1: none) was made. mesh_cg: the mesh cgroup's path (its
 * parent is a place for the probe's cgroup). 0, -EOPNOTSUPP when neither
 * way works on this host (said once: then callers stop trying), or another
 * negative errno for this namespace alone (not said: the caller says it).
 */
int dmsc_l7_nscookie(int sock, int nsfd, const char *mesh_cg, uint64_t *cookie);

/* Detaches the probe's program and removes its cgroup (no-op if none). */
void dmsc_l7_nscookie_cleanup(void);

#endif /* DMSC_L7_NSCOOKIE_H */
