/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The tunnel between hosts' helpers (docs/design.md decision 23,
 * docs/mtls.md#the-tunnel): workload connections multiplexed as streams
 * over a few long-lived mutual TLS 1.3 connections per pair of hosts, one
 * event loop (epoll) in one thread.
 *
 * Destination side: accepts peers on listen, verifies their certificate
 * (the mesh CA, its validity, the trust domain, a host's identity), and for
 * each stream connects to the destination it names, which must be an
 * address of this host and, given a policy, a backend of a service whose
 * allow_from covers the identity the source vouched for; then splices.
 *
 * Source side: each forward's listener takes local connections and opens a
 * stream for each to the forward's peer, vouching for the forward's
 * identity. (The kernel handoff of a workload's connection, with the
 * workload's own cgroup as identity, is the next step: docs/mtls.md.)
 */
#ifndef DMSC_TUNNEL_H
#define DMSC_TUNNEL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <stddef.h>

#include "policy.h"
#include "tunnel_frame.h"

#define DMSC_TUNNEL_PORT 15008
#define DMSC_TUNNEL_FWD_MAX 16
/* hosts the kernel's handoffs go to, each with its connection */
#define DMSC_TUNNEL_HOSTS_MAX 64

/* An address of either family (sa.sa_family says which): the tunnel's
 * listeners, its peers and its streams' destinations (docs/design.md
 * decision 64). */
union dmsc_tunnel_sa {
	struct sockaddr sa;
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
};

struct dmsc_tunnel_forward {
	union dmsc_tunnel_sa listen; /* local connections arrive here */
	union dmsc_tunnel_sa peer;   /* the destination host's helper */
	union dmsc_tunnel_sa dest;   /* where the destination host connects */
	char identity[DMSC_TF_ID_MAX + 1];
};

struct dmsc_tunnel_opts {
	const char *mtls_dir;	   /* ca.crt, host.crt, host.key; watched */
	union dmsc_tunnel_sa listen; /* peers connect here; port 0: no listener */
	struct dmsc_tunnel_forward fwd[DMSC_TUNNEL_FWD_MAX];
	size_t n_fwd;
	const char *metrics_file; /* Prometheus text, rewritten every second */
	/* this host's policy: a stream's identity must be allowed by a service
	 * whose backend it asks for (tunnel_authz.h); NULL: any address of
	 * this host */
	const struct dmsc_policy *policy;
	/* dmscd's end of a unix socket on which each new policy comes as a
	 * sealed memfd, taken in place (docs/design.md decision 83); -1: none */
	int updates_fd;
	unsigned int peer_idle_ms; /* close a connection to a peer idle this long; 0: never */
	unsigned int drain_ms;	   /* stopping: how long open streams may finish */
	int ready_fd;		   /* "ready\n" once listening, then closed; -1: none */
	/* connections connect4 hands over (tunnel_handoff.h); port 0: none.
	 * IPv4; connect6's go to [::1] on the same port (tunnel_handoff.h). */
	union dmsc_tunnel_sa handoff_listen;
	const char *pin_dir; /* NULL: dmsc_pin_dir() */
	/* set by DMSC_HELPER_ORPHAN_SIGNAL (its dmscd died): serve on until
	 * the next dmscd's tunnel takes over, the datapath goes, or
	 * orphan_ms pass (baton.h); NULL: never */
	volatile sig_atomic_t *orphaned;
	unsigned int orphan_ms;
	bool baton; /* dmscd's: hands over across dmscd's restarts */
};

#define DMSC_TUNNEL_PEER_IDLE_MS_DEFAULT 60000u
#define DMSC_TUNNEL_DRAIN_MS_DEFAULT 10000u

/* Parses "LADDR:LPORT=PEER:PPORT,DEST:DPORT,IDENTITY" into f; 0 or
 * -EINVAL with a message naming what is wrong in why. */
int dmsc_tunnel_forward_parse(const char *arg, struct dmsc_tunnel_forward *f, char *why,
			      size_t why_len);
/* "ADDR:PORT" (IPv4) or "[ADDR]:PORT" (IPv6). */
int dmsc_tunnel_addr_parse(const char *arg, union dmsc_tunnel_sa *sa);
socklen_t dmsc_tunnel_sa_len(const union dmsc_tunnel_sa *a);
uint16_t dmsc_tunnel_sa_port(const union dmsc_tunnel_sa *a); /* host order */
bool dmsc_tunnel_sa_eq(const union dmsc_tunnel_sa *a, const union dmsc_tunnel_sa *b);
/* "198.18.13.2:15008", "[2001:2::2]:15008" */
void dmsc_tunnel_sa_format(const union dmsc_tunnel_sa *a, char *buf, size_t len);
/* The address alone, unbracketed */
void dmsc_tunnel_sa_format_ip(const union dmsc_tunnel_sa *a, char *buf, size_t len);

/* Runs until *stop is set, then drains: no new connection or stream, the
 * open streams get drain_ms to finish (then they are reset).
 * Returns 0, or a negative errno when it could not start (message logged). */
int dmsc_tunnel_run(const struct dmsc_tunnel_opts *o, volatile sig_atomic_t *stop);

#endif /* DMSC_TUNNEL_H */
