/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The one definition of every map, key, value and constant that the BPF
 * programs and userspace share. Both sides include this file; nothing in it
 * may be written a second time elsewhere.
 *
 * Byte order: addresses and ports in keys and values are kept in network
 * order, the order in which bpf_sock_addr hands them to the programs, so the
 * kernel never converts on the hot path. Userspace converts once, when it
 * compiles a policy.
 */
#ifndef DMSC_SHARED_H
#define DMSC_SHARED_H

#ifndef __VMLINUX_H__
#include <linux/bpf.h> /* struct bpf_spin_lock */
#include <linux/types.h>
#endif

#include "bucket.h"
#include "health.h"

/* Pins live under DMSC_PIN_ROOT "/v" DMSC_LAYOUT_VERSION. A map whose
 * definition changed (a value that grew, another size) needs no bump: the
 * install migrates it map by map (user/datapath/migrate.c). Bump it only for a
 * change that migration cannot carry, where a key or value keeps its size
 * but changes its meaning, so that such a datapath is never adopted by
 * mistake (docs/design.md decision 1). */
#define DMSC_LAYOUT_VERSION "1"
#define DMSC_PIN_ROOT "/sys/fs/bpf/dmsc"

/* Map names: the pin file names too. */
#define DMSC_MAP_SERVICES "dmsc_services"
#define DMSC_MAP_BACKENDS "dmsc_backends"
#define DMSC_MAP_SVC_META "dmsc_svc_meta"
#define DMSC_MAP_SVC_STATS "dmsc_svc_stats"
#define DMSC_MAP_BE_STATS "dmsc_be_stats"
#define DMSC_MAP_REASONS "dmsc_reasons"
#define DMSC_MAP_SOCK_VIP "dmsc_sock_vip"

/* dmsc_sock_cgroup: SK_STORAGE, a __u64 on a socket connect4 handed to the
 * tunnel (DMSC_SOCK_F_TUNNEL): the caller's cgroup id at connect(), the
 * identity the tunnel vouches for (sockops runs in softirq, where the
 * current task is anyone's). A map of its own rather than a field of
 * dmsc_sock_vip: socket storage cannot be carried into a resized map, and
 * an upgrade must not make open connections forget their VIP. */
#define DMSC_MAP_SOCK_CGROUP "dmsc_sock_cgroup"
#define DMSC_MAP_INSTALL "dmsc_install"
#define DMSC_MAP_LIMITS "dmsc_limits"
#define DMSC_MAP_ALLOW "dmsc_allow"
#define DMSC_MAP_BE_INDEX "dmsc_be_index"
#define DMSC_MAP_L7_CONF "dmsc_l7_conf"
#define DMSC_MAP_L7_HANDOFF "dmsc_l7_handoff"
#define DMSC_MAP_L7_OWN "dmsc_l7_own"
#define DMSC_MAP_L7_NETNS "dmsc_l7_netns"

/* Default capacities; dmscctl install can change them. Id 0 is reserved in
 * both id spaces, so that an uninitialised slot is recognisable. */
#define DMSC_DEFAULT_MAX_SERVICES 16384
#define DMSC_DEFAULT_MAX_BACKENDS 65536

/* Slots per service. A power of two, so the kernel picks a slot with a mask;
 * it bounds the split's precision to 1/DMSC_SLOTS of the total weight. */
#define DMSC_SLOTS 128
#define DMSC_SLOT_MASK (DMSC_SLOTS - 1)
#define DMSC_WEIGHT_MAX 10000
#define DMSC_NAME_MAX 64
#define DMSC_CGROUP_PATH_MAX 256

enum dmsc_proto {
	DMSC_PROTO_TCP = 6,  /* IPPROTO_TCP */
	DMSC_PROTO_UDP = 17, /* IPPROTO_UDP */
};

/* dmsc_services: HASH, BPF_F_NO_PREALLOC. The whole slot table sits in the
 * value, so a service's backend set or weights change by one update of one
 * element: readers see the old value or the new one, never a mix (hash map
 * updates replace the element and free the old one after an RCU grace
 * period). */
struct dmsc_svc_key {
	__u32 vip;  /* network order */
	__u16 port; /* network order */
	__u8 proto; /* enum dmsc_proto */
	__u8 pad;   /* always zero */
};

enum dmsc_svc_flags {
	/* Every weight is 0: connect() is refused. */
	DMSC_SVC_F_NO_BACKEND = 1u << 0,
	/* accelerate: "off" / "on" (neither: "auto"). The compiler also sets
	 * ACCEL_OFF for a service with a bytes_per_second limit: the same-host
	 * fast path would carry its bytes past the programs that police them. */
	DMSC_SVC_F_ACCEL_OFF = 1u << 1,
	DMSC_SVC_F_ACCEL_ON = 1u << 2,
	/* rate_limit.connections_per_second is set. */
	DMSC_SVC_F_CONN_LIMIT = 1u << 3,
	/* rate_limit.bytes_per_second is set. */
	DMSC_SVC_F_BYTES_LIMIT = 1u << 4,
	/* allow_from is present: only the listed cgroups may connect. */
	DMSC_SVC_F_ALLOW_LIST = 1u << 5,
	/* protocol "http": connections are handed to dmsc-l7. */
	DMSC_SVC_F_L7 = 1u << 6,
	/* health: every backend with a weight is unhealthy, so the slot table
	 * holds them all (panic mode, docs/design.md decision 13). */
	DMSC_SVC_F_HEALTH_PANIC = 1u << 7,
	/* health is set: each apply reads dmsc_be_health's `out` of its
	 * backends to lay the table out. */
	DMSC_SVC_F_HEALTH = 1u << 8,
	/* A backend of it carries DMSC_BE_F_MTLS_REQUIRED or _PERMISSIVE:
	 * its entries in dmsc_be_mtls go when it goes. */
	DMSC_SVC_F_MTLS_GUARD = 1u << 9,
	/* affinity "client": a client's connections all pick the same slot,
	 * one hashed from who it is instead of a random one (docs/design.md
	 * decision 97). An older datapath ignores it: random picks. */
	DMSC_SVC_F_AFFINITY = 1u << 10,
};

struct dmsc_svc {
	__u32 id;    /* 1..max_services; index into dmsc_svc_stats */
	__u32 flags; /* enum dmsc_svc_flags */
	/* A hash of slot[], so that a socket can tell in one comparison
	 * whether the table it picked from is still the one in force. */
	__u32 table_hash;
	__u32 slot[DMSC_SLOTS]; /* backend ids; 0 = empty (counted) */
	/* passive health (dmsc/health.h); appended, so an older datapath's
	 * elements migrate with zeros: no passive health. */
	struct dmsc_svc_health health;
};

/* FNV-1a over the slot table; never 0, which means "no table". */
static inline __u32 dmsc_table_hash(const __u32 *slot)
{
	__u32 h = 2166136261u, i;

	for (i = 0; i < DMSC_SLOTS; i++) {
		h ^= slot[i];
		h *= 16777619u;
	}
	return h ? h : 1;
}

/* dmsc_backends: ARRAY indexed by backend id. An id names one immutable
 * address:port of one service; userspace never rewrites a live id in place. */
struct dmsc_backend {
	__u32 addr;   /* network order */
	__u16 port;   /* network order */
	__u16 flags;  /* enum dmsc_be_flags; was padding (zero): no flag */
	__u32 svc_id; /* owning service */
};

/* A backend's flags are part of its immutable id: a change of flags is a
 * new id (docs/design.md decision 17). */
enum dmsc_be_flags {
	/* On another host, of a service whose "mtls" is required or
	 * permissive: connect4 hands the connection to the local tunnel
	 * (dmsc_tunnel_conf) instead (docs/design.md decision 24). */
	DMSC_BE_F_TUNNEL = 1u << 0,
	/* On this host (its "host" is this host's name), of a TCP service
	 * whose "mtls" is required: cgroup_skb/ingress drops a new
	 * connection to it that arrives from another host, as it did not
	 * come through this host's tunnel; permissive: counts it and lets
	 * it in (docs/design.md decisions 24, 33 and 70). Indexed by its
	 * address:port in dmsc_be_mtls, or dmsc_be_mtls6 for an IPv6 one. */
	DMSC_BE_F_MTLS_REQUIRED = 1u << 1,
	DMSC_BE_F_MTLS_PERMISSIVE = 1u << 2,
	/* With DMSC_BE_F_MTLS_REQUIRED: its service has an allow_from, which
	 * connect4 (connect6) checks when a workload of this host connects straight to
	 * the backend's address, around the VIP (docs/design.md decision 44). */
	DMSC_BE_F_MTLS_ALLOW_LIST = 1u << 3,
};
#define DMSC_BE_F_MTLS_GUARD (DMSC_BE_F_MTLS_REQUIRED | DMSC_BE_F_MTLS_PERMISSIVE)

/* dmsc_be_mtls: HASH, a backend's address:port:proto (the key layout of
 * dmsc_svc_key) -> the id of the backend flagged DMSC_BE_F_MTLS_GUARD
 * there, for cgroup_skb/ingress (bpf/skb/). A backend of two such services
 * is indexed under the one written last. */
#define DMSC_MAP_BE_MTLS "dmsc_be_mtls"


/* dmsc_svc_meta: ARRAY indexed by service id, read by userspace only, so
 * that `show` and the next apply know what the kernel holds: the name, and
 * every backend id the service owns with its weight (a weight-0 backend
 * has no slot, so the slot table alone cannot tell). */
#define DMSC_BACKENDS_PER_SERVICE_MAX DMSC_SLOTS
struct dmsc_svc_meta {
	char name[DMSC_NAME_MAX];
	__u32 n_backends;
	__u32 backend_id[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 weight[DMSC_BACKENDS_PER_SERVICE_MAX];
};

/* dmsc_svc_stats: PERCPU_ARRAY indexed by service id. "to" is the
 * direction from clients to the service, "from" the replies. */
struct dmsc_svc_stats {
	__u64 connections;        /* connect() translated to a backend */
	__u64 refused_no_backend; /* every weight 0: connect() refused */
	__u64 refused_rate;       /* over connections_per_second */
	__u64 refused_access;     /* caller's cgroup not in allow_from */
	/* Packets of mesh clients' sockets (cgroup_skb: IP length), plus the
	 * payload the same-host fast path redirected (sk_msg), which never
	 * becomes a packet. */
	__u64 bytes_to;
	__u64 bytes_from;
	__u64 policed_to;         /* packets dropped over bytes_per_second */
	__u64 policed_from;
	__u64 tc_bytes;           /* arriving on --interface for a backend */
	__u64 tc_policed;
	/* Appended (older datapaths migrate with zeros): new TCP connections
	 * from another host straight to a backend of this host, around the
	 * tunnel (DMSC_BE_F_MTLS_*): dropped (required), let in (permissive). */
	__u64 mtls_plain_refused;
	__u64 mtls_plain_admitted;
};

/* dmsc_limits: ARRAY indexed by service id; all zero = no limit. Userspace
 * writes the whole element with BPF_F_LOCK when a limit changes, which also
 * refills the buckets (last_ns = 0 means "start full"). */
struct dmsc_limits {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 conn_rate; /* connections per second; 0: unlimited */
	__u64 conn_depth;
	__u64 byte_rate; /* bytes per second, each direction; 0: unlimited */
	__u64 byte_depth;
	struct dmsc_tb conn;
	struct dmsc_tb to;
	struct dmsc_tb from;
	/* TC on --interface has a bucket of its own: traffic of local mesh
	 * clients that crosses it was policed once already (by "to") and must
	 * not pay twice, while remote clients' traffic is policed only here.
	 * Their sum at the interface stays within the rate. */
	struct dmsc_tb iface;
};

/* dmsc_allow: HASH, (service, cgroup id) -> the rule's path. The kernel
 * checks the caller's cgroup and each of its ancestors, so a listed cgroup
 * covers its descendants. A path that does not exist yet is kept under an
 * id with DMSC_ALLOW_UNRESOLVED set, which no cgroup has, so that an
 * unresolved rule never opens the service to anyone. */
struct dmsc_allow_key {
	__u32 svc_id;
	__u32 pad;
	__u64 cgroup_id;
};

struct dmsc_allow_rule {
	char path[DMSC_CGROUP_PATH_MAX];
};

#define DMSC_ALLOW_UNRESOLVED (1ull << 63)
/* Ancestor levels checked; cgroup trees deeper than this are not matched
 * below it (cgroup.max.depth is unlimited, but real trees are shallow). */
#define DMSC_CGROUP_LEVELS_MAX 32

/* dmsc_be_index: HASH, a backend's address:port:proto (the key layout of
 * dmsc_svc_key) -> service id, for the services with a byte limit: TC on
 * the interfaces polices traffic that arrives for a local backend. */
#define DMSC_IFACES_MAX 8

/* dmsc_be_stats: PERCPU_ARRAY indexed by backend id. */
struct dmsc_be_stats {
	__u64 connections;
};

/* dmsc_reasons: PERCPU_ARRAY indexed by enum dmsc_reason. Fail-open paths
 * and other events that belong to no service. */
enum dmsc_reason {
	DMSC_R_SLOT_EMPTY = 0,      /* slot held id 0: left untranslated */
	DMSC_R_BACKEND_MISSING,     /* slot's id not in dmsc_backends */
	DMSC_R_SOCK_STORAGE_FULL,   /* translated, VIP not recorded */
	DMSC_R_PEER_REWRITTEN,      /* getpeername answered with a VIP */
	DMSC_R_LIMITS_MISSING,      /* service id not in dmsc_limits: unlimited */
	DMSC_R_TC_MALFORMED,        /* TC saw a packet it could not parse: passed */
	DMSC_R_L7_NO_HELPER,        /* http service, no dmsc-l7 registered: L4 */
	DMSC_R_L7_HANDOFF,          /* connection handed to dmsc-l7 */
	DMSC_R_L7_HANDOFF_FULL,     /* handoff record not written (map full) */
	DMSC_R_HEALTH_REPICK,       /* connect4 passed over an ejected backend */
	DMSC_R_HEALTH_ALL_EJECTED,  /* every backend it tried was ejected: kept the first */
	DMSC_R_HEALTH_EJECTED,      /* the kernel ejected a backend */
	DMSC_R_HEALTH_MISSING,      /* backend id not in dmsc_be_health: not counted */
	DMSC_R_TUNNEL_NO_HELPER,    /* backend behind the tunnel, none registered: direct */
	DMSC_R_TUNNEL_HANDOFF,      /* connection handed to the tunnel between hosts */
	DMSC_R_MAX,
};

/* dmsc_sock_vip: SK_STORAGE. Per socket, what connect() translated, so that
 * getpeername() answers with the VIP for the socket's whole life. */
struct dmsc_sock_vip {
	__u32 vip;     /* network order */
	__u32 backend; /* network order */
	__u16 vport;   /* network order */
	__u16 bport;   /* network order */
	__u32 svc_id;
	__u32 backend_id;
	__u32 table_hash; /* of the slot table the backend was picked from */
	__u32 flags;	  /* enum dmsc_sock_flags; was padding (zero) */
};

enum dmsc_sock_flags {
	/* backend_id is the backend picked; backend:bport is the local
	 * tunnel, which carries the connection to it */
	DMSC_SOCK_F_TUNNEL = 1u << 0,
	/* Only in a record the tunnel writes back, under the key of a
	 * helper's own connection through it (user/mtls/tunnel_via.h), before
	 * it resets that connection: the backend's host could not connect to
	 * the backend, or was not reached. The helper reads it at the reset
	 * to tell a dead backend from a refusal (docs/design.md decision 79).
	 * Never taken as a handoff. */
	DMSC_SOCK_F_CONNECT_FAILED = 1u << 1,
};

/* dmsc_install: ARRAY with one element, written once by dmscctl install. */
struct dmsc_install {
	char cgroup_path[DMSC_CGROUP_PATH_MAX]; /* relative to the cgroup2 mount */
	__u64 cgroup_id;
	__u64 installed_at; /* seconds since the epoch */
	__u32 max_services;
	__u32 max_backends;
	__u32 n_ifaces; /* --interface: TC ingress programs */
	__u32 ifindex[DMSC_IFACES_MAX];
	char ifname[DMSC_IFACES_MAX][16];
	/* Non-zero from a writer's first map write to its last: found set by
	 * the next writer (which holds the lock, so the one that set it is
	 * gone), it means an apply was interrupted, and the next apply
	 * repairs what it left (apply_txn.c, dmsc_apply_sweep). Fills what was
	 * padding: the layout is unchanged. */
	__u32 apply_in_progress;
	/* Bumped by every writer when it starts changing the other maps and
	 * again when it is done, so that a process that mirrors them in
	 * memory (dmscd) knows when to read them again, also after a writer
	 * that was killed half-way. */
	__u64 generation;
	/* The fast path's bound on a reader's unread redirected bytes (0:
	 * none). fp_backlog_set 1: chosen at install (--fastpath-backlog),
	 * kept by later installs; 0: the default, worked out at each. */
	__u32 fp_backlog_max;
	__u32 fp_backlog_set;
};

/*
 * Handoff to dmsc-l7, the per-host HTTP helper.
 *
 * dmsc_l7_conf: ARRAY with one element, written by dmsc-l7 once its
 * listeners are bound: where cgroup/connect4 sends connections to services
 * flagged DMSC_SVC_F_L7. addr 0 means no helper: such services are balanced
 * at L4 like tcp ones (fail open, counted as DMSC_R_L7_NO_HELPER).
 */
struct dmsc_l7_conf {
	__u32 addr; /* network order */
	__u16 port; /* network order */
	/* dmsc_l7_netns: the port (network order) of the helper's IPv6
	 * listener on [::1] in that namespace, where connect6 hands an http
	 * service's IPv6 connections (docs/design.md decision 48); 0: none,
	 * such connections are balanced at L4 (DMSC_R_L7_NO_HELPER).
	 * dmsc_l7_conf: DMSC_L7_CONF_F_NETNS or 0. */
	__u16 port6;
};

/* dmsc_l7_conf's port6: the helper's own namespace has its entry in
 * dmsc_l7_netns, so a client whose namespace has none is in a namespace
 * the helper has not found yet, where --listen is nobody's address: its
 * connection is balanced at L4 (DMSC_R_L7_NO_HELPER), not sent to a
 * loopback where nothing listens (docs/design.md decision 96). 0 (an older
 * helper, or one that cannot learn cookies): --listen, as before. */
#define DMSC_L7_CONF_F_NETNS 1

/*
 * dmsc_l7_handoff: LRU_HASH. How the helper learns a connection's service.
 *
 * connect4 cannot know the client's source port (it is chosen after the
 * hook), so the record is written by sockops at ACTIVE_ESTABLISHED, on the
 * client's socket, from the socket-storage record connect4 left. The key is
 * the 4-tuple exactly as the helper's accept() sees it (peer = client,
 * local = helper): the helper's own TCP stack guarantees that tuple is
 * unique among its live connections, whichever network namespace each
 * client is in (no NAT sits between a client and the helper; with NAT the
 * tuple would differ and the helper would refuse the connection, never
 * misroute it). No netns cookie in the key: the two ends of the connection
 * live in different namespaces and must build the same key.
 *
 * Ordering: the client runs ACTIVE_ESTABLISHED_CB while it processes the
 * SYN-ACK, before it sends the final ACK, so the record exists before the
 * helper's accept() can return the connection. The helper deletes the
 * record at accept. LRU, because a record whose connection the helper never
 * accepted (reset, full backlog) has nobody to delete it: it ages out, and
 * a later connection with the same tuple overwrites it.
 */
struct dmsc_l7_handoff_key {
	__u32 client_addr; /* network order */
	__u32 helper_addr; /* network order */
	__u16 client_port; /* network order */
	__u16 helper_port; /* network order */
};

struct dmsc_l7_handoff {
	__u32 vip;   /* network order */
	__u16 vport; /* network order */
	__u16 pad;   /* always zero */
	__u32 svc_id;
	/* A connection handed to the tunnel (dmsc_tunnel_conf): the backend
	 * connect4 picked; zero for dmsc-l7's. Both: the caller's cgroup,
	 * which dmsc-l7 vouches for through the tunnel (docs/design.md
	 * decision 75); 0: unknown (socket storage full). */
	__u32 backend_addr; /* network order */
	__u16 backend_port; /* network order */
	__u16 flags;	    /* enum dmsc_sock_flags */
	__u32 backend_id;
	__u64 cgroup_id;
};

/* A handoff record's cgroup_id that names no cgroup (cgroup ids are kernfs
 * node ids, far below these): dmscd's own health probe of a backend behind
 * the tunnel, tcp (a connect) or http (a request), for which the tunnel
 * vouches as a probe, not as a workload (docs/design.md decision 77). Only
 * dmscd writes them; the kernel writes the caller's cgroup id. */
#define DMSC_CGROUP_ID_PROBE_TCP 0xffffffffffffffffULL
#define DMSC_CGROUP_ID_PROBE_HTTP 0xfffffffffffffffeULL
#define DMSC_CGROUP_ID_IS_PROBE(id)                                                               \
	((id) == DMSC_CGROUP_ID_PROBE_TCP || (id) == DMSC_CGROUP_ID_PROBE_HTTP)

/*
 * dmsc_l7_handoff6: LRU_HASH, dmsc_l7_handoff for a connection connect6
 * handed to the helper's IPv6 listener on [::1] (docs/design.md decision
 * 48). Every namespace's listener has the same address and port, so the
 * key carries the namespace's cookie: connect6 records it with the socket
 * (dmsc_sock_vip6.netns), sockops copies it, the helper reads it from the
 * accepted socket (SO_NETNS_COOKIE). Written and deleted as the IPv4 one.
 */
#define DMSC_MAP_L7_HANDOFF6 "dmsc_l7_handoff6"

struct dmsc_l7_handoff6_key {
	__u32 client_addr[4]; /* network order */
	__u64 netns;	      /* the namespace's cookie */
	__u16 client_port;    /* network order */
	__u16 helper_port;    /* network order */
	__u32 pad;	      /* always zero */
};

struct dmsc_l7_handoff6 {
	__u32 vip[4]; /* network order */
	__u16 vport;  /* network order */
	__u16 pad;    /* always zero */
	__u32 svc_id;
	/* The client's cgroup id, which dmsc-l7 vouches for through the
	 * tunnel (docs/design.md decision 75); 0: unknown. Appended: an
	 * install copies the entries of a map pinned with the 24-byte value
	 * into a new one (DMSC_MIGRATE_COPY, the tail zeroed). */
	__u64 cgroup_id;
};

/* dmsc_tunnel_conf: ARRAY with one element, struct dmsc_l7_conf: where
 * the tunnel between hosts (dmsc-l7 tunnel --handoff-listen) takes the
 * connections connect4 hands it, and in port6 the port of its listener on
 * [::1], where connect6 hands IPv6 ones (docs/design.md decision 64).
 * addr 0 (port6 0): no tunnel (for IPv6); a backend flagged
 * DMSC_BE_F_TUNNEL is then connected to directly (counted
 * DMSC_R_TUNNEL_NO_HELPER), and its host decides (docs/mtls.md). */
#define DMSC_MAP_TUNNEL_CONF "dmsc_tunnel_conf"

#define DMSC_L7_HANDOFF_MAX 65536

/*
 * dmsc_l7_netns: HASH, a network namespace's cookie (bpf_get_netns_cookie,
 * Linux 5.7 in cgroup/connect4) -> where dmsc-l7 listens inside that
 * namespace (user/l7/l7_netns.h). Written by the helper for every namespace
 * that has mesh processes; connect4 prefers it to dmsc_l7_conf, so a client
 * in a container reaches the helper on its own loopback, with nothing
 * configured. Each namespace has its own address (127.77.0.0/16), so the
 * handoff key stays unique across namespaces.
 */
#define DMSC_L7_NETNS_MAX 4096

/*
 * dmsc_l7_own: SK_STORAGE, value struct dmsc_l7_own. dmsc-l7 writes an
 * entry on every socket it opens to a backend, from userspace (the key of
 * an update is the socket's fd; Linux 5.2), before connect(). connect4
 * never hands a socket that carries one to the helper again, so a backend
 * address that is itself an http VIP cannot make the helper loop through
 * itself. Only a holder of the pinned map (root) can write it: unlike a
 * socket mark (SO_MARK, settable with CAP_NET_RAW since Linux 5.17), a
 * workload cannot forge it to go around the helper's routes and limits.
 * The entry goes away with the socket.
 */
struct dmsc_l7_own {
	__u32 magic; /* DMSC_L7_OWN_MAGIC */
};

#define DMSC_L7_OWN_MAGIC 0x646d7363u /* "dmsc" in ASCII */

/* ---- Same-host fast path (sockops + sk_msg), bpf/fastpath/ ----
 *
 * sockops registers both ends of a connection whose peer is a socket of this
 * host in the mesh cgroup; sk_msg hands each message to the peer socket. The
 * two ends find each other through dmsc_fp_pending, keyed by what both can
 * compute: the 4-tuple and both initial sequence numbers. That key is
 * unambiguous across network namespaces (a loopback or private 4-tuple
 * repeats per netns; 64 random bits of ISN do not) and fails safe behind
 * NAT (the ends see different tuples: never paired, never redirected). */
#define DMSC_MAP_FP_SOCKS "dmsc_fp_socks"
#define DMSC_MAP_FP_PENDING "dmsc_fp_pending"
#define DMSC_MAP_FP_SOCK "dmsc_fp_sock"
#define DMSC_MAP_FP_STATS "dmsc_fp_stats"
#define DMSC_MAP_FP_SVC "dmsc_fp_svc"
#define DMSC_MAP_FP_HOST "dmsc_fp_host"
#define DMSC_FP_SOCKS_MAX 65536
#define DMSC_FP_PENDING_MAX 16384
/* Unread redirected bytes at which a writer leaves the fast path. Nothing
 * holds a redirecting writer back, so when the scheduler runs it on the
 * reader's CPU it fills its whole time slice: on 2 CPUs a reader that keeps
 * up on average is routinely 30-50 MiB behind for a moment (measured with
 * `scripts/bench-datapath.sh --variants`: iperf3 left the fast path in 6 of
 * 6 runs at 16 MiB, 2 of 6 at 48 MiB, 0 of 6 at 64 MiB). Plain TCP lets a
 * writer run ahead by its send buffer plus the receive window: tcp_wmem[2] +
 * tcp_rmem[2], 4 + 32 MiB on Linux 6.10+ (4 + 6 MiB before). */
#define DMSC_FP_BACKLOG_MAX (64u << 20)
/* ...at most this fraction of tcp_mem[1] (the memory at which TCP starts to
 * economise): redirected bytes count as TCP memory, and past tcp_mem[2] the
 * kernel aborts connections. */
#define DMSC_FP_BACKLOG_TCP_MEM_SHARE 8
/* The host's budget for every reader's unread redirected bytes together
 * (dmsc_fp_host): a writer that would take the sum past it leaves the fast
 * path, so many slow readers cannot hold what one may. By default room for
 * this many connections at the bound, at most tcp_mem[1] / the share below,
 * never less than one connection's bound. Plain TCP holds a slow reader's
 * writer at its send buffer plus the receive window; the budget keeps the
 * fast path's extra to a few bulk flows' worth however many readers stall. */
#define DMSC_FP_HOST_BUDGET_CONNS 2
#define DMSC_FP_HOST_BUDGET_TCP_MEM_SHARE 4
/* A writer that left the fast path while its reader still had redirected
 * bytes unread runs the program again after this many bytes on the stack
 * (not the 1 GiB of a settled stack verdict), to see that queue drain and
 * give its share of the host budget back. */
#define DMSC_FP_STACK_REFRESH_BYTES (256u << 10)
/* accelerate "auto" on a kernel that cannot tell a reader's backlog: a
 * message this large is bulk, and bulk without flow control is not
 * redirected (the writer leaves the fast path). */
#define DMSC_FP_BULK_MSG (64u << 10)
/* accelerate "auto": after a writer of a service left the fast path for a
 * reader that fell behind (bulk), new connections of that service are not
 * accelerated for this long. Bulk gains nothing once it has to leave (it
 * then runs slower on the stack than a socket that never joined), and the
 * kernel cannot hold a writer back on the fast path. */
#define DMSC_FP_BULK_HOLD_NS (60ull * 1000000000ull)

/* dmsc_fp_pending: LRU_HASH. Written by the active end at ACTIVE_ESTABLISHED,
 * completed by the passive end, deleted by the active end at its first
 * message or close. Forgetting an entry only means "not redirected". */
struct dmsc_fp_conn_key {
	__u32 client_ip;   /* network order */
	__u32 server_ip;   /* network order */
	__u16 client_port; /* network order */
	__u16 server_port; /* network order */
	__u32 client_seq;  /* client ISN + 1, as the kernel holds it */
	__u32 server_seq;  /* server ISN + 1 */
};

struct dmsc_fp_pending {
	__u64 client_cookie; /* socket cookie: the sockhash key */
	__u64 server_cookie; /* 0 until the passive end registered */
	__u64 client_sk;     /* kernel addresses of both sockets, for the */
	__u64 server_sk;     /* backlog guard only (see fp_peer_backlog) */
	struct dmsc_svc_key svc_key; /* the VIP's service; all zero for a direct connection */
	__u32 svc_id;        /* 0 for a direct connection */
	__u32 svc_flags;     /* enum dmsc_svc_flags at connect time */
};

/* Per socket, sticky. A socket decides once, at its first message, and a
 * socket that has sent a byte on the normal stack never redirects: bytes of
 * one direction all take one path, so they cannot be reordered. */
enum dmsc_fp_mode {
	DMSC_FP_UNDECIDED = 0,
	DMSC_FP_REDIRECT, /* every message to the peer socket */
	DMSC_FP_STACK,    /* every message on the normal TCP/IP stack */
};

/* dmsc_fp_sock: SK_STORAGE. */
struct dmsc_fp_sock {
	struct dmsc_fp_conn_key conn;
	__u64 peer_cookie; /* 0: no peer known (yet) */
	__u64 peer_sk;     /* the peer's kernel address: backlog guard only */
	struct dmsc_svc_key svc_key; /* to see the service's flags change */
	__u32 svc_id;
	__u32 svc_flags;
	__u8 mode;   /* enum dmsc_fp_mode */
	__u8 active; /* the connecting end */
	__u16 released; /* DMSC_FP_RELEASED_*: taken out of the sockhash */
	/* What this writer adds to dmsc_fp_host.inflight: its reader's unread
	 * redirected bytes when it last looked (0 where the kernel cannot tell
	 * them). Given back as the reader drains, and at close. */
	__u32 held;
	/* 0: IPv4 (conn, svc_key above); DMSC_FP_IPV6: an IPv6 connection,
	 * whose keys are in dmsc_fp_sock6 (conn holds only the two ISNs). */
	__u32 family;
	__u64 cookie;   /* this socket's own sockhash key */
	__u64 self_sk;  /* this socket's kernel address: its own queue, read alike */
};
/* A socket on the stack for good takes its peer, then itself, out of the
 * sockhash once nothing can be redirected into either and their queues of
 * redirected bytes are empty: the kernel then gives both their own TCP
 * operations back (tcp_bpf's are slower for bulk: 0.55-0.62x direct). A
 * connecting socket that found no peer takes itself out at its first ACK
 * (docs/design.md decision 88). */
#define DMSC_FP_RELEASED_PEER 1
#define DMSC_FP_RELEASED_SELF 2

/* dmsc_fp_stats: PERCPU_ARRAY indexed by service id; index 0 counts
 * connections that did not go through a VIP. The sum over all is global. */
struct dmsc_fp_stats {
	__u64 registered;       /* sockets put in the sockhash */
	__u64 paired;           /* connections whose both ends registered */
	__u64 redirected_msgs;  /* handed to the peer socket */
	__u64 redirected_bytes;
	/* Verdicts "normal stack" for a registered socket. Such a verdict
	 * stands for the socket's next 1 GiB without the program running again,
	 * so these count mostly each socket's first write there. */
	__u64 stack_msgs;
	__u64 stack_bytes;
	__u64 miss;             /* redirect target gone: fell back to the stack */
	__u64 no_peer;        /* first message found no peer: not local, not in the mesh, or too late */
	__u64 accel_off;        /* not registered: accelerate off or a byte limit */
	__u64 register_failed;  /* sockhash or storage full: not registered */
	__u64 backlog_fallback; /* the reader fell behind: the writer left the fast path */
	__u64 backlog_unknown;  /* the kernel cannot tell the reader's backlog */
	__u64 bulk_fallback;    /* auto, backlog unknown: a bulk message left the fast path */
	__u64 policy_fallback;  /* the service became accelerate off or byte-limited */
	__u64 bulk_skip;        /* auto: not registered, the service ran bulk lately */
	__u64 early_data;       /* data moved before ESTABLISHED or before the first
				 * message (TCP Fast Open): not registered, or on the stack */
	__u64 budget_fallback;  /* the host budget of redirected bytes was spent: left */
	__u64 pressure_fallback; /* TCP memory at tcp_mem[0] or under pressure: left */
	__u64 released;         /* sockets given their native TCP path back (see above) */
	__u64 window_fallback;  /* of backlog_fallback: left to keep room for the window
				 * the reader's TCP advertised (half the buffer was not reached) */
};

/* dmsc_fp_svc: ARRAY indexed by service id: what the fast path learned. */
struct dmsc_fp_svc {
	__u64 bulk_seen_ns; /* bpf_ktime_get_ns() of the last backlog fallback; 0: never */
};

/* dmsc_fp_host: ARRAY with one element: the fast path host-wide. */
struct dmsc_fp_host {
	/* Sum of every redirecting writer's dmsc_fp_sock.held: unread
	 * redirected bytes host-wide, as last seen by their writers. */
	__u64 inflight;
};

/* ---- IPv6 (docs/design.md decisions 12 and 27) ----------------------------
 *
 * An IPv6 service has its own key and backend maps, so that the IPv4 maps
 * keep their layout (a changed key cannot be migrated). Everything indexed
 * by an id is shared: service and backend ids are one space for both
 * families, and dmsc_svc_meta, the counters, dmsc_limits and dmsc_allow
 * serve IPv6 services as they serve IPv4 ones. An id names a backend of one
 * family: its entry in the other family's backend map stays zero.
 *
 * A dual-stack socket (AF_INET6, IPV6_V6ONLY off) that connects to
 * ::ffff:a.b.c.d makes an IPv4 connection: connect6 serves it from the
 * IPv4 maps (dmsc_services, dmsc_backends, dmsc_sock_vip), exactly as
 * connect4 would, and getpeername6 answers ::ffff:VIP from that record. */
#define DMSC_MAP_SERVICES6 "dmsc_services6"
#define DMSC_MAP_BACKENDS6 "dmsc_backends6"
#define DMSC_MAP_SOCK_VIP6 "dmsc_sock_vip6"
/* dmsc_be_index6: HASH, dmsc_be_index for IPv6 backends: a backend's
 * address:port:proto (the key layout of dmsc_svc6_key) -> service id. */
#define DMSC_MAP_BE_INDEX6 "dmsc_be_index6"

/* dmsc_be_mtls6: HASH, dmsc_be_mtls's twin for IPv6 backends: a backend's
 * address:port:proto (the key layout of dmsc_svc6_key) -> the id of the
 * backend flagged DMSC_BE_F_MTLS_GUARD there (docs/design.md decision 70).
 * A map of its own: dmsc_be_mtls keeps its 8-byte key (decision 27). */
#define DMSC_MAP_BE_MTLS6 "dmsc_be_mtls6"

/* dmsc_services6: HASH, BPF_F_NO_PREALLOC, value struct dmsc_svc. */
struct dmsc_svc6_key {
	__u32 vip[4]; /* network order, as bpf_sock_addr.user_ip6 */
	__u16 port;   /* network order */
	__u8 proto;   /* enum dmsc_proto */
	__u8 pad;     /* always zero */
};

/* dmsc_backends6: ARRAY indexed by backend id, as dmsc_backends. */
struct dmsc_backend6 {
	__u32 addr[4]; /* network order */
	__u16 port;    /* network order */
	/* enum dmsc_be_flags (docs/design.md decisions 64 and 70); was
	 * padding (zero): no flag */
	__u16 flags;
	__u32 svc_id;  /* owning service */
};

/* dmsc_sock_vip6: SK_STORAGE, dmsc_sock_vip for a socket translated to an
 * IPv6 backend. */
struct dmsc_sock_vip6 {
	__u32 vip[4];     /* network order */
	__u32 backend[4]; /* network order */
	__u16 vport;      /* network order */
	__u16 bport;      /* network order */
	__u32 svc_id;
	__u32 backend_id; /* 0: handed to dmsc-l7 (backend: its [::1] listener) */
	__u32 table_hash;
	__u32 flags; /* enum dmsc_sock_flags; was padding (zero) */
	__u64 netns; /* handed to dmsc-l7: the client's namespace cookie */
};

/*
 * dmsc_tunnel_handoff6: LRU_HASH, dmsc_l7_handoff's tunnel record for IPv6
 * (docs/design.md decision 64). connect6 hands a connection to a backend
 * on another host to the tunnel's listener on [::1] (port6 of
 * dmsc_tunnel_conf), and sockops publishes the backend it picked and the
 * caller's cgroup under the connection's ports as the tunnel's accept()
 * sees them (client_addr: the client's address, [::1]). The tunnel and the
 * workloads it takes handoffs from share the host's namespace, as over
 * IPv4: no cookie in the key. Written and deleted as dmsc_l7_handoff.
 */
#define DMSC_MAP_TUNNEL_HANDOFF6 "dmsc_tunnel_handoff6"

struct dmsc_tunnel_handoff6_key {
	__u32 client_addr[4]; /* network order */
	__u16 client_port;    /* network order */
	__u16 helper_port;    /* network order */
};

struct dmsc_tunnel_handoff6 {
	__u32 vip[4];	       /* network order */
	__u32 backend_addr[4]; /* network order */
	__u16 vport;	       /* network order */
	__u16 backend_port;    /* network order */
	__u32 svc_id;
	__u32 backend_id;
	__u32 flags; /* enum dmsc_sock_flags: DMSC_SOCK_F_CONNECT_FAILED only; was padding */
	__u64 cgroup_id;
};

/* The kernel picks a slot with one random number; shared so the unit tests
 * check the same index arithmetic. */
static inline __u32 dmsc_slot_index(__u32 random)
{
	return random & DMSC_SLOT_MASK;
}

/* What stands in for the random number of a pick under affinity "client"
 * (docs/design.md decision 97): a mix of who the client is (its network
 * namespace's cookie and its cgroup id) and of the service's address, so
 * that one client's services do not all land on their first backend. The
 * address, not the service: a tcp and a udp service on one VIP and port
 * (iperf3 -u, SIP) with the same backends have the same table, and a
 * client's TCP and UDP then meet on one backend. Both halves of every
 * input reach every bit of the result (a 64-bit finalizer). */
static inline __u32 dmsc_affinity_hash(__u64 who, __u64 where, __u32 salt)
{
	__u64 h = who * 0x9e3779b97f4a7c15ULL;

	h ^= where + 0x632be59bd9b4e019ULL + (h << 6) + (h >> 2);
	h ^= (__u64)salt << 32;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return (__u32)h;
}

/* The salt of a service's address: its VIP (network order; an IPv6 VIP's
 * four words folded) and port (network order). */
static inline __u32 dmsc_affinity_salt(const __u32 *vip, int words, __u16 port)
{
	__u32 s = (__u32)port * 0x9e3779b1u;
	int i;

	for (i = 0; i < words && i < 4; i++)
		s ^= vip[i] * (0x85ebca6bu + 2 * (__u32)i);
	return s;
}

/* The fast path over IPv6 (docs/design.md decision 34). The IPv4 tables
 * above keep their layout; an IPv6 connection pairs through a table of its
 * own, keyed alike by the 4-tuple and both ISNs, and its sockets' IPv6 keys
 * live in dmsc_fp_sock6 beside their dmsc_fp_sock. A dual-stack socket's
 * IPv4 connection (::ffff:a.b.c.d at both ends) is IPv4 here too. */
#define DMSC_MAP_FP_PENDING6 "dmsc_fp_pending6"
#define DMSC_MAP_FP_SOCK6 "dmsc_fp_sock6"
#define DMSC_FP_IPV6 6 /* dmsc_fp_sock.family */

struct dmsc_fp_conn6_key {
	__u32 client_ip[4]; /* network order */
	__u32 server_ip[4]; /* network order */
	__u16 client_port;  /* network order */
	__u16 server_port;  /* network order */
	__u32 client_seq;   /* client ISN + 1, as the kernel holds it */
	__u32 server_seq;   /* server ISN + 1 */
};

/* dmsc_fp_pending6: LRU_HASH, dmsc_fp_pending for an IPv6 connection; its
 * p.svc_key stays zero, the service's key is svc_key. */
struct dmsc_fp_pending6 {
	struct dmsc_fp_pending p;
	struct dmsc_svc6_key svc_key; /* all zero for a direct connection */
};

/* dmsc_fp_sock6: SK_STORAGE, beside an IPv6 socket's dmsc_fp_sock. */
struct dmsc_fp_sock6 {
	struct dmsc_fp_conn6_key conn;
	struct dmsc_svc6_key svc_key; /* to see the service's flags change */
};

#endif /* DMSC_SHARED_H */
