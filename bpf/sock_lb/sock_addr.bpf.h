/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What connect4 (sock_lb.bpf.c) and connect6 (sock6.bpf.c) decide alike,
 * once a VIP's service is found: who may connect, whether the service
 * takes one more connection, which backend id a slot names. The callers
 * look the service up and rewrite the address of their own family.
 */
#ifndef DMSC_SOCK_ADDR_BPF_H
#define DMSC_SOCK_ADDR_BPF_H

#include "maps.bpf.h"
#include "health.bpf.h"

/* Return codes of cgroup sock_addr programs. */
#define SOCK_ADDR_REFUSE 0 /* connect() fails with EPERM */
#define SOCK_ADDR_PASS 1

/* Is the calling task's cgroup, or one of its ancestors, on the service's
 * allow list? bpf_get_current_ancestor_cgroup_id needs Linux 5.7. */
static __always_inline int caller_allowed(__u32 svc_id)
{
	struct dmsc_allow_key k = {.svc_id = svc_id};
	int level;

	for (level = 0; level < DMSC_CGROUP_LEVELS_MAX; level++) {
		k.cgroup_id = bpf_get_current_ancestor_cgroup_id(level);
		if (!k.cgroup_id)
			break; /* past the caller's own cgroup */
		if (bpf_map_lookup_elem(&dmsc_allow, &k))
			return 1;
	}
	return 0;
}

/* One token of the service's connection bucket; a missing entry fails
 * open (counted). */
static __always_inline int conn_token(__u32 svc_id)
{
	struct dmsc_limits *l = bpf_map_lookup_elem(&dmsc_limits, &svc_id);
	__u64 now;
	int ok;

	if (!l) {
		count_reason(DMSC_R_LIMITS_MISSING);
		return 1;
	}
	if (!l->conn_rate)
		return 1;
	now = bpf_ktime_get_ns();
	bpf_spin_lock(&l->lock);
	ok = dmsc_tb_take(&l->conn, now, l->conn_rate, l->conn_depth, 1);
	bpf_spin_unlock(&l->lock);
	return ok;
}

/* A socket dmsc-l7 opened to a backend? */
static __always_inline bool helper_socket(struct bpf_sock_addr *ctx)
{
	struct dmsc_l7_own *own = bpf_sk_storage_get(&dmsc_l7_own, ctx->sk, 0, 0);

	return own && own->magic == DMSC_L7_OWN_MAGIC;
}

/* The service protocol of a socket: stream sockets are TCP services,
 * datagram sockets UDP services; anything else (raw) is never a VIP. */
static __always_inline __u8 sock_proto(struct bpf_sock_addr *ctx)
{
	if (ctx->type == SOCK_STREAM)
		return DMSC_PROTO_TCP;
	if (ctx->type == SOCK_DGRAM)
		return DMSC_PROTO_UDP;
	return 0;
}

enum svc_admit_verdict {
	SVC_REFUSE,  /* counted on the service: connect() fails */
	SVC_BACKEND, /* pick a backend */
	SVC_L7,	     /* hand to dmsc-l7 (the caller falls back to a backend) */
};

/* A caller refused by a service's allow_from, counted in its stats. */
static __always_inline void count_refused_access(__u32 svc_id)
{
	struct dmsc_svc_stats *ss = svc_stats(svc_id);

	if (ss)
		ss->refused_access += 1;
}

/* A caller the service's allow list leaves out is refused: counted in
 * the service's stats (looked up only then). */
static __always_inline bool caller_refused(const struct dmsc_svc *svc, __u32 svc_id)
{
	if (!(svc->flags & DMSC_SVC_F_ALLOW_LIST) || caller_allowed(svc_id))
		return false;
	count_refused_access(svc_id);
	return true;
}

/* A service whose every backend is gone or weighted 0 refuses a
 * connection: counted. */
static __always_inline bool svc_empty(const struct dmsc_svc *svc, struct dmsc_svc_stats *ss)
{
	if (!(svc->flags & DMSC_SVC_F_NO_BACKEND))
		return false;
	if (ss)
		ss->refused_no_backend += 1;
	return true;
}

/* svc, if it is still the service and the slot table a UDP socket's
 * record (svc_id, table_hash) picked its backend from; else NULL. */
static __always_inline struct dmsc_svc *svc_table_unchanged(struct dmsc_svc *svc, __u32 svc_id,
							    __u32 table_hash)
{
	if (!svc || svc->id != svc_id || svc->table_hash != table_hash)
		return NULL;
	return svc;
}

/* Access, drained service, connection rate; returns an enum
 * svc_admit_verdict. Access goes before anything else: a caller that may
 * not connect must not use up the tokens of those that may, nor reach the
 * helper. protocol http: the helper decides per request; its own sockets
 * (an entry in dmsc_l7_own, which only the helper writes) are never handed
 * back to it; a socket mark would not do, a workload can set one
 * (shared.h). */
static __always_inline int svc_admit(struct bpf_sock_addr *ctx, const struct dmsc_svc *svc,
				     struct dmsc_svc_stats *ss)
{
	__u32 svc_id = svc->id;
	bool l7;

	if (caller_refused(svc, svc_id))
		return SVC_REFUSE;
	l7 = (svc->flags & DMSC_SVC_F_L7) && !helper_socket(ctx);
	if (!l7 && svc_empty(svc, ss))
		return SVC_REFUSE;
	if ((svc->flags & DMSC_SVC_F_CONN_LIMIT) && !conn_token(svc_id)) {
		if (ss)
			ss->refused_rate += 1;
		return SVC_REFUSE;
	}
	return l7 ? SVC_L7 : SVC_BACKEND;
}

/* A backend id from the slot table, or 0 (counted: left untranslated).
 * affinity "client": the slot is the client's own, hashed from its network
 * namespace and its cgroup (docs/design.md decision 97) and salted with
 * the service's address (dmsc_affinity_salt), so that its connections meet
 * on one backend while the table stays the same; the network namespace
 * cookie needs Linux 5.7, the cgroup id 4.18. */
static __always_inline __u32 svc_pick(struct bpf_sock_addr *ctx, const struct dmsc_svc *svc,
				      __u32 salt)
{
	__u32 r, backend_id;

	if (svc->flags & DMSC_SVC_F_AFFINITY)
		r = dmsc_affinity_hash(bpf_get_netns_cookie(ctx), bpf_get_current_cgroup_id(),
				       salt);
	else
		r = bpf_get_prandom_u32();
	backend_id = health_pick(svc, dmsc_slot_index(r));

	if (!backend_id)
		count_reason(DMSC_R_SLOT_EMPTY);
	return backend_id;
}

/* A translated connection's counters. */
static __always_inline void count_connection(struct dmsc_svc_stats *ss, __u32 backend_id)
{
	struct dmsc_be_stats *bs;

	if (ss)
		ss->connections += 1;
	bs = bpf_map_lookup_elem(&dmsc_be_stats, &backend_id);
	if (bs)
		bs->connections += 1;
}

/*
 * IPv4 translation, for connect4 and for connect6 on a dual-stack socket
 * (AF_INET6, IPV6_V6ONLY off) that connects to ::ffff:VIP, which makes an
 * IPv4 connection (docs/design.md decision 12): `mapped` (a constant at
 * every call, so the other family's context fields are compiled out, as
 * the verifier demands) says where the address is, user_ip4 or the last
 * word of user_ip6.
 */
static __always_inline __u32 ctx_ip4(struct bpf_sock_addr *ctx, bool mapped)
{
	return mapped ? ctx->user_ip6[3] : ctx->user_ip4;
}

static __always_inline void ctx_set_ip4(struct bpf_sock_addr *ctx, __u32 addr, bool mapped)
{
	if (mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = addr;
	} else {
		ctx->user_ip4 = addr;
	}
}

/* Shows the VIP in place of the backend that connect() or sendmsg() chose,
 * for getpeername() and for recvmsg()'s source address. */
static __always_inline int sock4_xlate_rev(struct bpf_sock_addr *ctx, bool mapped)
{
	struct dmsc_sock_vip *rec;

	rec = bpf_sk_storage_get(&dmsc_sock_vip, ctx->sk, 0, 0);
	if (!rec)
		return SOCK_ADDR_PASS;
	/* Only the peer dmsc chose is the one to hide. */
	if (rec->backend != ctx_ip4(ctx, mapped) || rec->bport != (__u16)ctx->user_port)
		return SOCK_ADDR_PASS;
	ctx_set_ip4(ctx, rec->vip, mapped);
	ctx->user_port = rec->vport;
	count_reason(DMSC_R_PEER_REWRITTEN);
	return SOCK_ADDR_PASS;
}

/* A handoff's record and rewrite, shared by dmsc-l7's and the tunnel's:
 * the socket's record names the local listener as its peer (so
 * getpeername4 answers the VIP), and the connection goes there. */
static __always_inline void sock4_handoff_to(struct bpf_sock_addr *ctx, struct dmsc_sock_vip *rec,
					     const struct dmsc_svc_key *key,
					     const struct dmsc_l7_conf *conf, __u32 svc_id,
					     __u32 backend_id, bool mapped)
{
	rec->vip = key->vip;
	rec->vport = key->port;
	rec->backend = conf->addr;
	rec->bport = conf->port;
	rec->svc_id = svc_id;
	rec->backend_id = backend_id;
	rec->table_hash = 0;
	rec->flags = 0;
	ctx_set_ip4(ctx, conf->addr, mapped);
	ctx->user_port = conf->port;
}

/*
 * Sends the connection to dmsc-l7 instead of a backend. The socket-storage
 * record names the helper as the "backend", so getpeername4 answers with the
 * VIP, and sockops (dmsc_l7_sockops) finds the record to publish the
 * handoff. Returns false when no helper is registered: the caller balances
 * at L4 instead (fail open).
 */
static __always_inline bool sock4_l7_handoff(struct bpf_sock_addr *ctx,
					     const struct dmsc_svc_key *key, __u32 svc_id,
					     bool mapped)
{
	struct dmsc_l7_conf *conf;
	struct dmsc_sock_vip *rec;
	struct dmsc_svc_stats *ss;
	__u32 zero = 0;
	__u64 netns, *cgroup;

	/* The helper's listener in the client's own network namespace, if
	 * it has one (user/l7/l7_netns.h); else its --listen address, unless
	 * the helper's own namespace has an entry: then the client's is one
	 * the helper has not found yet (docs/design.md decision 96). */
	netns = bpf_get_netns_cookie(ctx);
	conf = bpf_map_lookup_elem(&dmsc_l7_netns, &netns);
	if (!conf) {
		conf = bpf_map_lookup_elem(&dmsc_l7_conf, &zero);
		if (conf && (conf->port6 & DMSC_L7_CONF_F_NETNS))
			conf = NULL;
	}
	if (!conf || !conf->addr || !conf->port) {
		count_reason(DMSC_R_L7_NO_HELPER);
		return false;
	}
	rec = bpf_sk_storage_get(&dmsc_sock_vip, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!rec) {
		/* Without the record the helper could not learn the service:
		 * better an L4 connection than one the helper must refuse. */
		count_reason(DMSC_R_SOCK_STORAGE_FULL);
		return false;
	}
	/* backend_id 0: the helper, not a backend */
	sock4_handoff_to(ctx, rec, key, conf, svc_id, 0, mapped);
	/* The caller's identity, which dmsc-l7 vouches for when it carries a
	 * request to a backend on another host through the tunnel
	 * (docs/design.md decision 75). None (storage full): the record's
	 * cgroup is 0, which the tunnel refuses. */
	cgroup = bpf_sk_storage_get(&dmsc_sock_cgroup, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (cgroup)
		*cgroup = bpf_get_current_cgroup_id();
	ss = svc_stats(svc_id);
	if (ss)
		ss->connections += 1;
	return true;
}

/*
 * Sends a connection to a backend on another host to the local tunnel
 * (docs/design.md decision 24), the way sock4_l7_handoff sends one to
 * dmsc-l7: the record names the tunnel as the peer, so getpeername4
 * answers the VIP, and carries the backend picked and the caller's cgroup,
 * which dmsc_l7_sockops publishes under the 4-tuple for the tunnel. Returns
 * false when no tunnel is registered: the caller connects to the backend
 * directly (fail open; its host's kernel decides, bpf/skb).
 */
static __always_inline bool sock4_tunnel_handoff(struct bpf_sock_addr *ctx,
						 const struct dmsc_svc_key *key, __u32 svc_id,
						 __u32 backend_id, bool mapped)
{
	struct dmsc_l7_conf *conf;
	struct dmsc_sock_vip *rec;
	__u32 zero = 0;
	__u64 *cgroup;

	conf = bpf_map_lookup_elem(&dmsc_tunnel_conf, &zero);
	if (!conf || !conf->addr || !conf->port) {
		count_reason(DMSC_R_TUNNEL_NO_HELPER);
		return false;
	}
	cgroup = bpf_sk_storage_get(&dmsc_sock_cgroup, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	rec = cgroup ? bpf_sk_storage_get(&dmsc_sock_vip, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE)
		     : NULL;
	if (!rec) {
		count_reason(DMSC_R_SOCK_STORAGE_FULL);
		return false;
	}
	sock4_handoff_to(ctx, rec, key, conf, svc_id, backend_id, mapped);
	rec->flags = DMSC_SOCK_F_TUNNEL;
	/* bpf_get_current_cgroup_id: Linux 4.18. */
	*cgroup = bpf_get_current_cgroup_id();
	count_reason(DMSC_R_TUNNEL_HANDOFF);
	return true;
}

/*
 * A connection that names no VIP, to a backend of this host (found by its
 * address and port in dmsc_be_mtls or dmsc_be_mtls6, flags and service
 * read off its entry): if it is a backend of a required service with an
 * allow_from (DMSC_BE_F_MTLS_ALLOW_LIST), the caller, a workload of this
 * host going around the VIP, must be in that allow_from as through the VIP
 * (docs/design.md decisions 44 and 70); refused and counted refused_access
 * otherwise. The tunnel's and dmsc-l7's own sockets (dmsc_l7_own) deliver
 * what their side already authorized.
 */
static __always_inline int direct_verdict(struct bpf_sock_addr *ctx, __u16 be_flags, __u32 svc_id)
{
	if ((be_flags & (DMSC_BE_F_MTLS_REQUIRED | DMSC_BE_F_MTLS_ALLOW_LIST)) !=
		    (DMSC_BE_F_MTLS_REQUIRED | DMSC_BE_F_MTLS_ALLOW_LIST) ||
	    caller_allowed(svc_id) || helper_socket(ctx))
		return SOCK_ADDR_PASS;
	count_refused_access(svc_id);
	return SOCK_ADDR_REFUSE;
}

/* direct_verdict for an IPv4 address (or a dual-stack socket's
 * ::ffff:a.b.c.d). One hash lookup per TCP connect() that names no VIP. */
static __always_inline int sock4_direct(struct bpf_sock_addr *ctx, struct dmsc_svc_key *key)
{
	struct dmsc_backend *be = mtls_backend(&dmsc_be_mtls, &dmsc_backends, key, key->proto);

	if (!be || be->addr != key->vip || be->port != key->port)
		return SOCK_ADDR_PASS;
	return direct_verdict(ctx, be->flags, be->svc_id);
}

/* Rewrites ctx to the backend; returns the SOCK_ADDR_* verdict. */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx, __u8 proto, bool mapped)
{
	struct dmsc_svc_key key = {};
	struct dmsc_backend *be;
	struct dmsc_svc_stats *ss;
	struct dmsc_sock_vip *rec;
	struct dmsc_svc *svc;
	__u32 backend_id, svc_id;
	int verdict;

	key.vip = ctx_ip4(ctx, mapped);
	/* user_port is network order in the low 16 bits of a u32. */
	key.port = (__u16)ctx->user_port;
	key.proto = proto;

	svc = bpf_map_lookup_elem(&dmsc_services, &key);
	if (!svc)
		return sock4_direct(ctx, &key); /* not a VIP: only a guarded backend's check */
	svc_id = svc->id;
	ss = svc_stats(svc_id);

	verdict = svc_admit(ctx, svc, ss);
	if (verdict == SVC_REFUSE)
		return SOCK_ADDR_REFUSE;
	if (verdict == SVC_L7 && sock4_l7_handoff(ctx, &key, svc_id, mapped))
		return SOCK_ADDR_PASS;
	/* No helper: an http service is balanced at L4 (fail open). */
	if (svc_empty(svc, ss))
		return SOCK_ADDR_REFUSE;

	backend_id = svc_pick(ctx, svc, dmsc_affinity_salt(&key.vip, 1, key.port));
	if (!backend_id)
		return SOCK_ADDR_PASS;
	be = bpf_map_lookup_elem(&dmsc_backends, &backend_id);
	if (!be || !be->addr || be->svc_id != svc_id) {
		count_reason(DMSC_R_BACKEND_MISSING);
		return SOCK_ADDR_PASS;
	}
	/* TCP only: the policy refuses mtls on a udp service. The tunnel's
	 * own sockets never reach a VIP, but are exempt all the same. */
	if ((be->flags & DMSC_BE_F_TUNNEL) && proto == DMSC_PROTO_TCP && !helper_socket(ctx) &&
	    sock4_tunnel_handoff(ctx, &key, svc_id, backend_id, mapped)) {
		count_connection(ss, backend_id);
		return SOCK_ADDR_PASS;
	}

	/* Record before rewriting, so that the VIP is known for the socket's
	 * whole life; a failure here still translates (the connection works)
	 * but getpeername() would show the backend, so it is counted. */
	rec = bpf_sk_storage_get(&dmsc_sock_vip, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (rec) {
		rec->vip = key.vip;
		rec->vport = key.port;
		rec->backend = be->addr;
		rec->bport = be->port;
		rec->svc_id = svc_id;
		rec->backend_id = backend_id;
		rec->table_hash = svc->table_hash;
		rec->flags = 0;
	} else {
		count_reason(DMSC_R_SOCK_STORAGE_FULL);
	}

	ctx_set_ip4(ctx, be->addr, mapped);
	ctx->user_port = be->port;
	count_connection(ss, backend_id);
	return SOCK_ADDR_PASS;
}

#endif /* DMSC_SOCK_ADDR_BPF_H */
