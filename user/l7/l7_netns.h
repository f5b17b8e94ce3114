/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The helper reachable from every network namespace that has mesh
 * processes, with nothing configured (docs/design.md decisions 11 and 25).
 *
 * A thread scans the mesh cgroup (the install record's cgroup and its
 * descendants) every DMSC_L7_NETNS_SCAN_MS: the network namespace of each
 * process (/proc/PID/ns/net, one per inode). In each namespace other than
 * the helper's own it opens one listening socket (setns into it, bind,
 * listen, setns back: the socket stays in the namespace it was made in) on
 * an address of its own in 127.77.0.0/16 and the helper's port, and writes
 * the namespace's cookie -> that address into the pinned map dmsc_l7_netns.
 * cgroup/connect4 sends a client's http connection to the address its own
 * namespace has there; one that has none yet is balanced at L4 (the
 * address of --listen, dmsc_l7_conf, only where the helper's own namespace
 * has no entry either: docs/design.md decision 96). Besides the scan, the
 * kernel's process events (l7_procev.h) have a process looked at as it
 * execs, so that a namespace's listener is there before its first
 * connect(). Each namespace's address differs, so the 4-tuple the helper's
 * accept() sees, the handoff key, stays unique across namespaces.
 *
 * Every worker's epoll watches every such listener (EPOLLEXCLUSIVE: one
 * worker wakes). A namespace whose last mesh process left keeps its
 * listener DMSC_L7_NETNS_GRACE_MS, then its map entry goes and, one scan
 * later (so that a connect() that read the entry has connected), its
 * listener. A replacing helper takes the addresses the map holds, so a
 * hand-over changes no entry.
 *
 * Beside it, an IPv6 listener on [::1] and the same port, for connect6's
 * handoff (docs/design.md decision 48): its port is the entry's port6, 0
 * when it cannot be bound (IPv6 off in the namespace, [::1]:port taken),
 * and IPv6 connections to http services of that namespace are then
 * balanced at L4. The helper's own namespace has a [::1] listener too,
 * and an entry naming --listen for IPv4 (decision 51).
 *
 * The namespace's cookie comes from getsockopt(SO_NETNS_COOKIE), Linux
 * 5.14+, and before from a cgroup program of the helper's
 * (l7_nscookie.h, docs/design.md decision 62); where neither works the
 * listeners stay off (logged once) and clients reach the helper at
 * --listen only.
 */
#ifndef DMSC_L7_NETNS_H
#define DMSC_L7_NETNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "l7_ep.h"

#define DMSC_L7_NETNS_SCAN_MS 250
#define DMSC_L7_NETNS_GRACE_MS 10000
/* Namespaces with a listener at once; processes and cgroups read per scan. */
#define DMSC_L7_NETNS_SLOTS 1024
#define DMSC_L7_NETNS_PIDS_MAX 65536
#define DMSC_L7_NETNS_CGROUPS_MAX 4096
/* 127.77.0.0/16, host order: the namespaces' listener addresses. */
#define DMSC_L7_NETNS_NET 0x7f4d0000u
#define DMSC_L7_NETNS_MASK 0xffff0000u

struct dmsc_l7_nsl {
	struct ep ep; /* EP_NS_LISTEN; first: the worker's events point here */
	int fd;	      /* -1: free slot (slots never move: epoll points at them) */
	uint64_t ino; /* the namespace's inode */
	uint64_t cookie;
	uint32_t addr; /* network order */
	uint64_t last_seen_ms;
	bool unmapped; /* its entry was deleted; the listener closes next scan */
	struct ep ep6; /* EP_NS_LISTEN6 */
	int fd6;       /* the [::1] listener, -1: none */
	/* Under the pause lock (l7_netns.c): in the workers' epoll (not yet,
	 * or no longer: being closed), and each listener out of it for want
	 * of descriptors (dmsc_l7_netns_pause). */
	bool watched, paused, paused6;
};

/* What the workers do with a listening socket: watch it (every worker's
 * epoll, its events pointing at ep; 0, or the first failure's negative
 * errno, one already watched being none) and stop watching it. */
struct dmsc_l7_netns_ops {
	int (*watch)(int fd, struct ep *ep);
	void (*unwatch)(int fd);
};

/*
 * Opens dmsc_l7_netns and the install record under pin_dir, opens the
 * [::1] listener of the helper's own namespace with its entry (naming
 * listen, when registered: docs/design.md decision 51), does one scan
 * (the listeners exist before the helper says ready) and starts the
 * scanning thread; the port is listen's. A datapath without the map, or a
 * kernel without SO_NETNS_COOKIE: logged, 0, and no listeners. Negative
 * errno only when the thread cannot start.
 */
int dmsc_l7_netns_start(const char *pin_dir, const struct sockaddr_in *listen, bool registered,
			const struct dmsc_l7_netns_ops *ops);

/* Stops the thread (the listeners stay open and watched) and removes what
 * learning cookies made (l7_nscookie.h). */
void dmsc_l7_netns_stop_scanning(void);

/*
 * For the drain: each listener is unwatched, what its queue holds is
 * handed to accept (called with the listener's fd and its namespace's
 * cookie, in the caller's thread), then it is closed. The map entries
 * stay for the next helper.
 */
void dmsc_l7_netns_close(void (*accept)(void *arg, int fd, uint64_t netns), void *arg);

/*
 * accept() on fd, one of l's two listeners, failed for want of descriptors
 * or memory: the level-triggered listener would wake the workers at once,
 * for ever, while nothing frees one. It leaves every worker's epoll until
 * dmsc_l7_netns_resume; its queue waits meanwhile. True when this call
 * paused it; false when it was paused already, or is being closed (the
 * scanner, or the drain, unwatched it: nothing to do).
 */
bool dmsc_l7_netns_pause(struct dmsc_l7_nsl *l, int fd);
/* Every paused listener back in every worker's epoll (each worker's
 * sweep); nothing to do, the usual case, costs one atomic load. */
void dmsc_l7_netns_resume(void);
/* Whether addr (network order) is a namespace listener's address: the
 * connection's client address is then one of that namespace's loopback,
 * counted within the namespace (--max-conns-per-client). */
bool dmsc_l7_netns_addr(uint32_t addr);
/* Whether the helper's own namespace has its entry (decision 51): then a
 * namespace without one is one not found yet, and dmsc_l7_conf says so
 * (DMSC_L7_CONF_F_NETNS, docs/design.md decision 96). */
bool dmsc_l7_netns_own_entry(void);


/* Namespaces with a listener now (for the metrics). */
unsigned int dmsc_l7_netns_count(void);

#endif /* DMSC_L7_NETNS_H */
