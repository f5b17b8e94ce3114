// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Same-host fast path: sockops registers both ends of a connection whose
 * peer is a socket of this host in the mesh cgroup, sk_msg hands each
 * message straight to the peer socket's receive queue.
 *
 * Its own compilation unit, linked into the dmsc_sock object with the
 * socket load balancer (bpf/sock_lb/) and the cgroup_skb programs
 * (bpf/skb/): the maps are one definition (bpf/common/maps.bpf.h) in one
 * object either way.
 *
 * Rules, each for a bug other projects shipped:
 * - A miss never drops: bpf_msg_redirect_hash() answers SK_DROP when the
 *   peer is not in the sockhash, and an sk_msg SK_DROP fails the sender's
 *   write with EACCES. Every path here returns SK_PASS.
 * - Keys are built once, from values both ends read in the same byte order
 *   (the 4-tuple in network order, the sequence numbers as the kernel keeps
 *   them), with every byte of padding zeroed.
 * - The decision is sticky per socket: a socket decides at its first message
 *   and keeps that for its life, so one direction's bytes all take one path
 *   and cannot be reordered. A socket whose peer registered too late (after
 *   it had sent on the normal stack) stays on the stack.
 *
 * Kernel versions: sockops and sockhash 4.18, bpf_sk_storage_get in sockops
 * 5.3 (bpf_sock_ops.sk), in sk_msg 5.8 (sk_msg_md.sk). dmsc's minimum is
 * 5.10; on a kernel that refuses these programs, install loads the rest of
 * the datapath without them and says so.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "maps.bpf.h"

/* The most a reader may have unread before its writer leaves the fast path;
 * set at load time. 0: no bound. */
const volatile __u32 fp_backlog_max = DMSC_FP_BACKLOG_MAX;
/* The most every reader's unread redirected bytes may add up to, host-wide
 * (dmsc_fp_host); set at load time. 0: no budget. */
const volatile __u32 fp_host_budget = DMSC_FP_HOST_BUDGET_CONNS * DMSC_FP_BACKLOG_MAX;
/* Experiments only (scripts/bench-datapath.sh --variants): apply a redirect
 * verdict to this many bytes without running the program again, or cork
 * (hold messages until this many bytes are queued). 0: off, the default.
 * Cork would hold a small request for ever: never for real traffic. */
const volatile __u32 fp_apply_bytes = 0;
const volatile __u32 fp_cork_bytes = 0;
/* Experiments only (bench-datapath.sh --first-bulk): 1 keeps a connection
 * whose writer left on tcp_bpf's path (no fp_release), as before. */
const volatile __u32 fp_no_release = 0;

/* sk_msg verdicts. */
#define FP_SK_PASS 1

/* How many bytes a "stack" verdict covers before the program runs again. */
#define FP_STACK_APPLY_BYTES (1u << 30)
/* SK_USER_DATA_NOCOPY | SK_USER_DATA_BPF | SK_USER_DATA_PSOCK */
#define FP_SK_USER_DATA_FLAGS 7UL

/* Its maps are in bpf/common/maps.bpf.h, with every other map. */

static __always_inline void fp_svc_mark_bulk(__u32 svc_id)
{
	struct dmsc_fp_svc *fs;

	if (!svc_id)
		return;
	fs = bpf_map_lookup_elem(&dmsc_fp_svc, &svc_id);
	if (fs)
		fs->bulk_seen_ns = bpf_ktime_get_ns();
}

/* auto: did this service run bulk (a reader fell behind) lately? */
static __always_inline bool fp_svc_ran_bulk(__u32 svc_id, __u32 flags)
{
	struct dmsc_fp_svc *fs;
	__u64 seen;

	if (!svc_id || (flags & DMSC_SVC_F_ACCEL_ON))
		return false;
	fs = bpf_map_lookup_elem(&dmsc_fp_svc, &svc_id);
	if (!fs)
		return false;
	seen = fs->bulk_seen_ns;
	return seen && bpf_ktime_get_ns() - seen < DMSC_FP_BULK_HOLD_NS;
}

static __always_inline struct dmsc_fp_stats *fp_stats(__u32 svc_id)
{
	struct dmsc_fp_stats *st = bpf_map_lookup_elem(&dmsc_fp_stats, &svc_id);

	if (!st) {
		svc_id = 0; /* an id past the array: count it as global */
		st = bpf_map_lookup_elem(&dmsc_fp_stats, &svc_id);
	}
	return st;
}

/* Whether the service a socket connected to is still the one its record
 * names; if so, its id and flags now. If not, it went away since connect():
 * a direct connection. */
static __always_inline bool fp_service_now(const struct dmsc_svc *svc, __u32 rec_svc_id,
					   __u32 *svc_id, __u32 *flags)
{
	if (!svc || svc->id != rec_svc_id)
		return false;
	*svc_id = svc->id;
	*flags = svc->flags;
	return true;
}

static __always_inline void fp_ip6_copy(__u32 to[4], const __u32 from[4])
{
	to[0] = from[0];
	to[1] = from[1];
	to[2] = from[2];
	to[3] = from[3];
}

/* What connect4 recorded for a socket that connected to a VIP: the service
 * and its flags now. Zeros for a direct connection. */
static __always_inline void fp_service_of(struct bpf_sock_ops *ops, struct dmsc_svc_key *key,
					  __u32 *svc_id, __u32 *flags)
{
	struct dmsc_sock_vip *rec;
	struct bpf_sock *sk = ops->sk;
	struct dmsc_svc *svc;

	*svc_id = 0;
	*flags = 0;
	if (!sk)
		return;
	rec = bpf_sk_storage_get(&dmsc_sock_vip, sk, 0, 0);
	if (!rec)
		return;
	key->vip = rec->vip;
	key->port = rec->vport;
	key->proto = DMSC_PROTO_TCP;
	svc = bpf_map_lookup_elem(&dmsc_services, key);
	if (!fp_service_now(svc, rec->svc_id, svc_id, flags))
		__builtin_memset(key, 0, sizeof(*key));
}

/* fp_service_of for a socket that connect6 sent to an IPv6 backend. */
static __always_inline void fp_service_of6(struct bpf_sock_ops *ops, struct dmsc_svc6_key *key,
					   __u32 *svc_id, __u32 *flags)
{
	struct dmsc_sock_vip6 *rec;
	struct bpf_sock *sk = ops->sk;
	struct dmsc_svc *svc;

	*svc_id = 0;
	*flags = 0;
	if (!sk)
		return;
	rec = bpf_sk_storage_get(&dmsc_sock_vip6, sk, 0, 0);
	if (!rec)
		return;
	fp_ip6_copy(key->vip, rec->vip);
	key->port = rec->vport;
	key->proto = DMSC_PROTO_TCP;
	svc = bpf_map_lookup_elem(&dmsc_services6, key);
	if (!fp_service_now(svc, rec->svc_id, svc_id, flags))
		__builtin_memset(key, 0, sizeof(*key));
}

/* Byte limits are policed outside sockets; a redirected flow would pass
 * them by, so such a service is never accelerated (docs/design.md decision 6). */
static __always_inline bool fp_accel_allowed(__u32 flags)
{
	return !(flags & (DMSC_SVC_F_ACCEL_OFF | DMSC_SVC_F_BYTES_LIMIT));
}

static __always_inline int fp_register_self(struct bpf_sock_ops *ops, __u64 cookie,
					    struct dmsc_fp_stats *st)
{
	/* BPF_NOEXIST: a socket is registered once. */
	if (bpf_sock_hash_update(ops, &dmsc_fp_socks, &cookie, BPF_NOEXIST)) {
		if (st)
			st->register_failed += 1;
		return -1;
	}
	if (st)
		st->registered += 1;
	return 0;
}

/* Data that moved before the connection was established (TCP Fast Open
 * carries it in the SYN) went on the stack: such a connection must never
 * start redirecting. The handshake itself acks one byte (the SYN). */
static __always_inline bool fp_data_moved(struct bpf_sock_ops *ops)
{
	return ops->bytes_received > 0 || ops->bytes_acked > 1;
}

/* Whether a connecting end may join the fast path at all (counted if not). */
static __always_inline bool fp_active_wanted(struct bpf_sock_ops *ops, __u32 svc_id, __u32 flags,
					     struct dmsc_fp_stats *st)
{
	if (!fp_accel_allowed(flags)) {
		if (st)
			st->accel_off += 1;
		return false;
	}
	if (fp_data_moved(ops)) {
		if (st)
			st->early_data += 1;
		return false;
	}
	if (fp_svc_ran_bulk(svc_id, flags)) {
		/* Plain TCP from the start: exactly the kernel's own path. */
		if (st)
			st->bulk_skip += 1;
		return false;
	}
	return true;
}

/* A socket joins the fast path: its storage, with what both families share
 * (conn: the IPv4 key, or only the two ISNs for IPv6), and its sockhash
 * entry. NULL (counted) when it cannot. */
static __always_inline struct dmsc_fp_sock *fp_join(struct bpf_sock_ops *ops,
						    const struct dmsc_fp_conn_key *conn,
						    __u32 svc_id, __u32 flags, __u32 family,
						    struct dmsc_fp_stats *st)
{
	struct bpf_sock *sk = ops->sk;
	struct dmsc_fp_sock *me;
	__u64 cookie;

	if (!sk)
		return NULL;
	me = bpf_sk_storage_get(&dmsc_fp_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!me) {
		if (st)
			st->register_failed += 1;
		return NULL;
	}
	cookie = bpf_get_socket_cookie(ops);
	/* In the sockhash before the peer can learn our cookie: the peer may
	 * redirect to us as soon as it has it. */
	if (fp_register_self(ops, cookie, st))
		return NULL;
	me->cookie = cookie;
	me->self_sk = (__u64)(unsigned long)sk;
	me->conn = *conn;
	me->svc_id = svc_id;
	me->svc_flags = flags;
	me->family = family;
	me->mode = DMSC_FP_UNDECIDED;
	me->peer_cookie = 0;
	me->peer_sk = 0;
	/* STATE: to drop the pending entry if the socket closes before it
	 * writes, and to give back its share of the host budget; RTT: to give
	 * the native path back (fp_release). */
	bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG |
					       BPF_SOCK_OPS_RTT_CB_FLAG);
	return me;
}

/* The connecting end's half of a pending entry (after its storage is set). */
static __always_inline void fp_pending_fill(struct dmsc_fp_pending *pend,
					    const struct dmsc_fp_sock *me)
{
	pend->client_cookie = me->cookie;
	pend->client_sk = me->self_sk;
	pend->svc_id = me->svc_id;
	pend->svc_flags = me->svc_flags;
}

/* The connecting end, at ACTIVE_ESTABLISHED (before connect() returns, so
 * before the application can write). */
static __always_inline void sock4_fp_active(struct bpf_sock_ops *ops)
{
	struct dmsc_fp_pending pend = {};
	struct dmsc_fp_conn_key conn = {};
	struct dmsc_svc_key svc_key = {};
	struct dmsc_fp_stats *st;
	struct dmsc_fp_sock *me;
	__u32 svc_id, flags;

	fp_service_of(ops, &svc_key, &svc_id, &flags);
	st = fp_stats(svc_id);
	if (!fp_active_wanted(ops, svc_id, flags, st))
		return;
	conn.client_ip = ops->local_ip4;
	conn.client_port = bpf_htons((__u16)ops->local_port); /* host order in ctx */
	conn.server_ip = ops->remote_ip4;
	conn.server_port = sockops_remote_port(ops->remote_port);
	conn.client_seq = ops->snd_nxt;
	conn.server_seq = ops->rcv_nxt;
	me = fp_join(ops, &conn, svc_id, flags, 0, st);
	if (!me)
		return;
	me->svc_key = svc_key;
	me->active = 1;
	fp_pending_fill(&pend, me);
	pend.svc_key = svc_key;
	bpf_map_update_elem(&dmsc_fp_pending, &conn, &pend, BPF_ANY);
}

/* The accepted end joins when its connecting end is pending (a registered
 * socket of this host); the rest of its storage is the caller's. */
static __always_inline struct dmsc_fp_sock *fp_passive_join(struct bpf_sock_ops *ops,
							    struct dmsc_fp_pending *pend,
							    const struct dmsc_fp_conn_key *conn,
							    __u32 family)
{
	struct dmsc_fp_stats *st = fp_stats(pend->svc_id);
	struct dmsc_fp_sock *me;

	if (fp_data_moved(ops)) {
		if (st)
			st->early_data += 1;
		return NULL;
	}
	me = fp_join(ops, conn, pend->svc_id, pend->svc_flags, family, st);
	if (!me)
		return NULL;
	me->active = 0;
	me->svc_key = pend->svc_key;
	me->peer_cookie = pend->client_cookie;
	me->peer_sk = pend->client_sk;
	pend->server_sk = me->self_sk;
	/* Published last: the client may redirect to us from now on. */
	pend->server_cookie = me->cookie;
	if (st)
		st->paired += 1;
	return me;
}

/* The accepted end, at PASSIVE_ESTABLISHED: registers only when the
 * connecting end is a registered socket of this host. */
static __always_inline void sock4_fp_passive(struct bpf_sock_ops *ops)
{
	struct dmsc_fp_conn_key conn = {};
	struct dmsc_fp_pending *pend;

	conn.client_ip = ops->remote_ip4;
	conn.client_port = sockops_remote_port(ops->remote_port);
	conn.server_ip = ops->local_ip4;
	conn.server_port = bpf_htons((__u16)ops->local_port);
	conn.client_seq = ops->rcv_nxt;
	conn.server_seq = ops->snd_nxt;

	pend = bpf_map_lookup_elem(&dmsc_fp_pending, &conn);
	if (!pend)
		return; /* the peer is not a local mesh socket: plain TCP */
	fp_passive_join(ops, pend, &conn, 0);
}

/* IPv6 (docs/design.md decision 34): the same steps with the 128-bit
 * 4-tuple, paired through dmsc_fp_pending6; the socket's IPv6 keys go to
 * dmsc_fp_sock6, made before it joins so that a joined IPv6 socket always
 * has them. */
static __always_inline void sock6_fp_active(struct bpf_sock_ops *ops)
{
	struct dmsc_fp_conn_key seqs = {};
	struct dmsc_fp_pending6 pend = {};
	struct dmsc_svc6_key svc_key = {};
	struct dmsc_fp_stats *st;
	struct dmsc_fp_sock6 *me6;
	struct dmsc_fp_sock *me;
	struct bpf_sock *sk;
	__u32 svc_id, flags;

	fp_service_of6(ops, &svc_key, &svc_id, &flags);
	st = fp_stats(svc_id);
	sk = ops->sk;
	if (!sk || !fp_active_wanted(ops, svc_id, flags, st))
		return;
	me6 = bpf_sk_storage_get(&dmsc_fp_sock6, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!me6) {
		if (st)
			st->register_failed += 1;
		return;
	}
	me6->conn.client_ip[0] = ops->local_ip6[0];
	me6->conn.client_ip[1] = ops->local_ip6[1];
	me6->conn.client_ip[2] = ops->local_ip6[2];
	me6->conn.client_ip[3] = ops->local_ip6[3];
	me6->conn.server_ip[0] = ops->remote_ip6[0];
	me6->conn.server_ip[1] = ops->remote_ip6[1];
	me6->conn.server_ip[2] = ops->remote_ip6[2];
	me6->conn.server_ip[3] = ops->remote_ip6[3];
	me6->conn.client_port = bpf_htons((__u16)ops->local_port);
	me6->conn.server_port = sockops_remote_port(ops->remote_port);
	me6->conn.client_seq = seqs.client_seq = ops->snd_nxt;
	me6->conn.server_seq = seqs.server_seq = ops->rcv_nxt;
	me6->svc_key = svc_key;
	me = fp_join(ops, &seqs, svc_id, flags, DMSC_FP_IPV6, st);
	if (!me)
		return;
	me->active = 1;
	fp_pending_fill(&pend.p, me);
	pend.svc_key = svc_key;
	bpf_map_update_elem(&dmsc_fp_pending6, &me6->conn, &pend, BPF_ANY);
}

static __always_inline void sock6_fp_passive(struct bpf_sock_ops *ops)
{
	struct dmsc_fp_conn_key seqs = {};
	struct dmsc_fp_conn6_key conn = {};
	struct dmsc_fp_pending6 *pend;
	struct dmsc_fp_sock6 *me6;
	struct bpf_sock *sk;

	conn.client_ip[0] = ops->remote_ip6[0];
	conn.client_ip[1] = ops->remote_ip6[1];
	conn.client_ip[2] = ops->remote_ip6[2];
	conn.client_ip[3] = ops->remote_ip6[3];
	conn.server_ip[0] = ops->local_ip6[0];
	conn.server_ip[1] = ops->local_ip6[1];
	conn.server_ip[2] = ops->local_ip6[2];
	conn.server_ip[3] = ops->local_ip6[3];
	conn.client_port = sockops_remote_port(ops->remote_port);
	conn.server_port = bpf_htons((__u16)ops->local_port);
	conn.client_seq = seqs.client_seq = ops->rcv_nxt;
	conn.server_seq = seqs.server_seq = ops->snd_nxt;

	pend = bpf_map_lookup_elem(&dmsc_fp_pending6, &conn);
	sk = ops->sk;
	if (!pend || !sk)
		return; /* the peer is not a local mesh socket: plain TCP */
	me6 = bpf_sk_storage_get(&dmsc_fp_sock6, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!me6) {
		struct dmsc_fp_stats *st = fp_stats(pend->p.svc_id);

		if (st)
			st->register_failed += 1;
		return;
	}
	me6->conn = conn;
	me6->svc_key = pend->svc_key;
	fp_passive_join(ops, &pend->p, &seqs, DMSC_FP_IPV6);
}

/* Moves this writer's share of dmsc_fp_host.inflight to now_held. Racy
 * against other writers by design (one atomic add, no lock): the sum is a
 * budget, off by at most a message per writer running at the same time. */
static __always_inline void fp_host_hold(struct dmsc_fp_sock *me, __u32 now_held)
{
	struct dmsc_fp_host *h;
	__u32 zero = 0;

	if (now_held == me->held)
		return;
	h = bpf_map_lookup_elem(&dmsc_fp_host, &zero);
	if (!h)
		return;
	/* An add of the two's complement subtracts; the result is not used,
	 * so this is BPF_XADD, which Linux 5.10 has. */
	__sync_fetch_and_add(&h->inflight, (__u64)now_held - (__u64)me->held);
	me->held = now_held;
}

/* IPv4, or IPv4 on an IPv6 socket (a server listening on [::] accepts
 * IPv4 clients as ::ffff:a.b.c.d): local_ip4 and remote_ip4 hold the IPv4
 * addresses in both cases. */
static __always_inline bool fp_is_ipv4(struct bpf_sock_ops *ops)
{
	if (ops->family == DMSC_AF_INET)
		return true;
	return ops->family == DMSC_AF_INET6 && ops->remote_ip6[0] == 0 && ops->remote_ip6[1] == 0 &&
	       ops->remote_ip6[2] == bpf_htonl(0xffff) && ops->local_ip6[0] == 0 &&
	       ops->local_ip6[1] == 0 && ops->local_ip6[2] == bpf_htonl(0xffff);
}


/* Bytes redirected to the peer that it has not read yet. The kernel does
 * not bound a socket's ingress_msg queue: without this a writer runs ahead
 * of a slow reader by hundreds of MiB, all charged to the host's TCP memory
 * (a plain TCP connection stops at the receive window).
 *
 * The count is the peer's psock->msg_tot_len (Linux 6.x; where the kernel
 * has no such field the guard is off, counted in backlog_unknown). sk_msg
 * cannot hold a reference to the peer (no bpf_sk_release there), so the peer
 * is known by its address, recorded at registration, and read with
 * bpf_probe_read_kernel: a freed peer reads as a fault or as memory whose
 * psock does not point back at it, and either means "no backlog known".
 * The answer only ever moves a writer off the fast path, which is safe at
 * any time; it never decides ordering. */
static __always_inline __u32 fp_peer_backlog(__u64 peer_sk, bool *known)
{
	struct sk_psock *psock;
	struct sock *sk = (struct sock *)peer_sk;
	struct sock *back = NULL;
	void *ud = NULL;
	__u32 len = 0;

	*known = bpf_core_field_exists(struct sk_psock, msg_tot_len);
	if (!*known)
		return 0;
	if (!sk || bpf_core_read(&ud, sizeof(ud), &sk->sk_user_data))
		return 0;
	/* The low bits of sk_user_data are flags (SK_USER_DATA_*). */
	psock = (struct sk_psock *)((unsigned long)ud & ~FP_SK_USER_DATA_FLAGS);
	if (!psock || bpf_core_read(&back, sizeof(back), &psock->sk) || back != sk)
		return 0;
	if (bpf_core_read(&len, sizeof(len), &psock->msg_tot_len))
		return 0;
	return len;
}

/* Whether the socket at this kernel address still has its psock (its
 * sk_user_data points to a psock that points back at it). The kernel drops
 * a psock when its last user is gone: the sockhash, and every send or
 * receive call in progress on the socket. */
static __always_inline bool fp_has_psock(__u64 sk_addr)
{
	struct sock *sk = (struct sock *)sk_addr;
	struct sk_psock *psock;
	struct sock *back = NULL;
	void *ud = NULL;

	if (!sk || bpf_core_read(&ud, sizeof(ud), &sk->sk_user_data))
		return false;
	psock = (struct sk_psock *)((unsigned long)ud & ~FP_SK_USER_DATA_FLAGS);
	return psock && !bpf_core_read(&back, sizeof(back), &psock->sk) && back == sk;
}

/* Gives a connection that left the fast path the kernel's own TCP path
 * back. While a socket is in the sockhash its send and receive calls are
 * tcp_bpf's, which cost bulk 0.55-0.62x of direct TCP for the rest of the
 * connection; out of it, the kernel restores tcp_prot once the calls in
 * progress return. Taking a socket out drops whatever redirected bytes it
 * has not read (the kernel purges its psock's queue), so, run by a socket
 * on the stack for good at each RTT sample (an ACK of its data):
 *  1. its peer goes first, once the peer's queue is empty: this socket is
 *     its only writer and redirects no more, so nothing can join it;
 *  2. this socket goes at a later sample, once the peer's psock is gone
 *     (no send call of the peer can still be redirecting to us: such a
 *     call holds the psock) and our own queue is empty.
 * Readers: one in tcp_bpf_recvmsg() holds its psock until it returns, and
 * waits for both queues there; one that entered tcp_recvmsg() (MSG_WAITALL,
 * SO_RCVLOWAT) did so with the redirected queue empty and waits on the TCP
 * queue, where every byte goes now. (What is not safe is coming back to the
 * fast path: such a reader would not see bytes redirected again.) The one
 * race left: two threads writing one socket at once, one redirect still
 * queueing while the other thread's write went to the stack and this runs;
 * the queue check makes it unlikely, not impossible.
 * Only where the queues can be read (sk_psock.msg_tot_len, Linux 6.x): on
 * older kernels a socket that left stays in the sockhash, on tcp_bpf's
 * path. sockops may delete from a sockhash; sk_msg may not (Linux 6.x). */
static __always_inline void fp_release(struct bpf_sock_ops *ops, struct dmsc_fp_sock *me)
{
	struct dmsc_fp_stats *st;
	bool known = false;
	__u64 key;

	if (me->mode == DMSC_FP_UNDECIDED)
		return; /* no data sent yet */
	if (me->mode == DMSC_FP_REDIRECT) {
		/* A redirecting socket that its peer took out of the
		 * sockhash sends on the stack now, natively: nothing left
		 * to do here. Else it has yet to leave. */
		if (!fp_has_psock(me->self_sk))
			goto done;
		return;
	}
	if (fp_no_release || !me->peer_cookie || !bpf_core_field_exists(struct sk_psock, msg_tot_len) ||
	    me->released == (DMSC_FP_RELEASED_PEER | DMSC_FP_RELEASED_SELF))
		goto done;
	st = fp_stats(me->svc_id);
	if (!(me->released & DMSC_FP_RELEASED_PEER)) {
		if (fp_peer_backlog(me->peer_sk, &known) || !known)
			return;
		key = me->peer_cookie;
		/* -ENOENT: the peer closed, or was taken out already. */
		if (!bpf_map_delete_elem(&dmsc_fp_socks, &key) && st)
			st->released += 1;
		me->released |= DMSC_FP_RELEASED_PEER;
		fp_host_hold(me, 0); /* its queue is empty */
		return;
	}
	if (fp_has_psock(me->peer_sk) || fp_peer_backlog(me->self_sk, &known) || !known)
		return;
	key = me->cookie;
	if (!bpf_map_delete_elem(&dmsc_fp_socks, &key) && st)
		st->released += 1;
	me->released |= DMSC_FP_RELEASED_SELF;
done:
	/* Nothing more to do here: no more RTT callbacks for this socket. */
	bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RTT_CB_FLAG);
}

/* The connecting end's own pending entry goes (the IPv6 one is keyed by
 * its dmsc_fp_sock6); when it takes its peer from it (at its first
 * message), the peer's cookie and address come with it. */
static __always_inline void fp_pending_take(struct bpf_sock *sk, struct dmsc_fp_sock *me,
					    bool take_peer)
{
	struct dmsc_fp_pending *pend = NULL;
	struct dmsc_fp_pending6 *pend6;
	struct dmsc_fp_sock6 *me6;

	if (me->family == DMSC_FP_IPV6) {
		me6 = bpf_sk_storage_get(&dmsc_fp_sock6, sk, 0, 0);
		if (!me6)
			return;
		pend6 = bpf_map_lookup_elem(&dmsc_fp_pending6, &me6->conn);
		if (pend6 && take_peer && pend6->p.server_cookie) {
			me->peer_cookie = pend6->p.server_cookie;
			me->peer_sk = pend6->p.server_sk;
		}
		if (pend6)
			bpf_map_delete_elem(&dmsc_fp_pending6, &me6->conn);
		return;
	}
	pend = bpf_map_lookup_elem(&dmsc_fp_pending, &me->conn);
	if (pend && take_peer && pend->server_cookie) {
		me->peer_cookie = pend->server_cookie;
		me->peer_sk = pend->server_sk;
	}
	if (pend)
		bpf_map_delete_elem(&dmsc_fp_pending, &me->conn);
}

SEC("sockops")
int dmsc_fp_sockops(struct bpf_sock_ops *ops)
{
	struct dmsc_fp_sock *me;
	struct bpf_sock *sk;
	bool ipv4 = fp_is_ipv4(ops);

	if (!ipv4 && ops->family != DMSC_AF_INET6)
		return 1;
	switch (ops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		if (ipv4)
			sock4_fp_active(ops);
		else
			sock6_fp_active(ops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (ipv4)
			sock4_fp_passive(ops);
		else
			sock6_fp_passive(ops);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		sk = ops->sk;
		me = sk ? bpf_sk_storage_get(&dmsc_fp_sock, sk, 0, 0) : NULL;
		if (me)
			fp_release(ops, me);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* args[1] is the new state. The sockhash entry goes by itself
		 * (the kernel unlinks a closing socket); the pending one is
		 * ours to remove. */
		sk = ops->sk;
		if (ops->args[1] != BPF_TCP_CLOSE || !sk)
			break;
		me = bpf_sk_storage_get(&dmsc_fp_sock, sk, 0, 0);
		if (!me)
			break;
		if (me->active && me->mode == DMSC_FP_UNDECIDED)
			fp_pending_take(sk, me, false);
		fp_host_hold(me, 0);
		break;
	default:
		break;
	}
	return 1;
}

/* Whether a socket has sent nothing yet: its write_seq is still its ISN + 1
 * (the current message is not in it yet). Bytes written before this
 * (queued before ESTABLISHED, as TCP Fast Open without a cookie does) went
 * on the stack and may not have been read: redirecting now could overtake
 * them at the reader, which drains redirected bytes first. */
static __always_inline bool fp_sent_nothing(struct bpf_sock *sk, struct dmsc_fp_sock *me)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u32 isn1 = me->active ? me->conn.client_seq : me->conn.server_seq;

	return tp && BPF_CORE_READ(tp, write_seq) == isn1;
}

/* The first message of a socket decides for its whole life. */
static __always_inline void fp_decide(struct bpf_sock *sk, struct dmsc_fp_sock *me,
				      struct dmsc_fp_stats *st)
{
	if (me->active)
		fp_pending_take(sk, me, true);
	if (me->peer_cookie && !fp_sent_nothing(sk, me)) {
		me->mode = DMSC_FP_STACK;
		if (st)
			st->early_data += 1;
	} else if (me->peer_cookie) {
		me->mode = DMSC_FP_REDIRECT;
	} else {
		me->mode = DMSC_FP_STACK;
		if (st)
			st->no_peer += 1;
	}
}

/* Whether redirecting SIZE more bytes would take the reader's receive memory
 * past its receive buffer. Linux 6.18 charges redirected bytes to the
 * reader's sk_rmem_alloc (5.10 to 6.12 do not), and TCP drops every packet
 * that arrives while the reader's own recv() holds the socket once receive
 * memory and backlog pass 2 * sk_rcvbuf + sk_sndbuf / 2 + 64 KiB
 * (tcp_add_backlog(), net/ipv4/tcp_ipv4.c), a RST too, which nobody sends
 * again: a reader whose writer reset the connection then waits for ever.
 * Plain TCP's window keeps receive memory within the buffer; this keeps the
 * fast path there too. Where redirected bytes are not charged, the reader's
 * receive memory stays empty and this never holds. Read like
 * fp_peer_backlog(): a freed peer reads as "not full". */
static __always_inline bool fp_peer_rmem_full(__u64 peer_sk, __u32 size)
{
	struct sock *sk = (struct sock *)peer_sk;
	int rmem = 0, rcvbuf = 0;

	if (!fp_has_psock(peer_sk) ||
	    bpf_core_read(&rmem, sizeof(rmem), &sk->sk_backlog.rmem_alloc.counter) ||
	    bpf_core_read(&rcvbuf, sizeof(rcvbuf), &sk->sk_rcvbuf))
		return false;
	/* rmem 0: nothing charged (a kernel that does not charge redirected
	 * bytes, 5.10 to 6.12): a message larger than the buffer stays. */
	return rcvbuf > 0 && rmem > 0 && (__s64)rmem + size > rcvbuf;
}

/* Whether TCP memory is short host-wide: the socket's protocol under memory
 * pressure (past tcp_mem[1], until it drops below tcp_mem[0]), or its memory
 * at tcp_mem[0] already. Redirected bytes are charged to the reader's TCP
 * memory, and under pressure the kernel refuses that charge: the writer's
 * send() fails with ENOMEM, which a blocking writer on plain TCP never sees
 * (it waits). Leaving at tcp_mem[0] keeps the fast path clear of that.
 * Read through the socket's struct proto (CO-RE; every field since 4.x, so
 * 5.10 has them); a field the kernel lacks reads as "not short". */
static __always_inline bool fp_tcp_mem_short(struct bpf_sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	unsigned long pressure = 0, *pressure_p;
	long allocated = 0, low = 0, *mem_p;
	atomic_long_t *allocated_p;
	struct proto *prot;

	if (!tp || !bpf_core_field_exists(struct proto, memory_pressure) ||
	    !bpf_core_field_exists(struct proto, memory_allocated) ||
	    !bpf_core_field_exists(struct proto, sysctl_mem))
		return false;
	prot = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.__sk_common.skc_prot);
	if (!prot)
		return false;
	pressure_p = BPF_CORE_READ(prot, memory_pressure);
	if (pressure_p && !bpf_probe_read_kernel(&pressure, sizeof(pressure), pressure_p) &&
	    pressure)
		return true;
	allocated_p = BPF_CORE_READ(prot, memory_allocated);
	mem_p = BPF_CORE_READ(prot, sysctl_mem);
	if (!allocated_p || !mem_p ||
	    bpf_probe_read_kernel(&allocated, sizeof(allocated), &allocated_p->counter) ||
	    bpf_probe_read_kernel(&low, sizeof(low), mem_p))
		return false;
	return low > 0 && allocated >= low;
}

/* The service a socket of the fast path belongs to, as it is now. */
static __always_inline struct dmsc_svc *fp_sock_service(struct bpf_sock *sk,
							struct dmsc_fp_sock *me)
{
	struct dmsc_fp_sock6 *me6;

	if (me->family != DMSC_FP_IPV6)
		return bpf_map_lookup_elem(&dmsc_services, &me->svc_key);
	me6 = bpf_sk_storage_get(&dmsc_fp_sock6, sk, 0, 0);
	return me6 ? bpf_map_lookup_elem(&dmsc_services6, &me6->svc_key) : NULL;
}

/* Whether a redirecting writer must leave the fast path for good, before
 * this message. Safe to switch this way only: redirected bytes are queued
 * at the reader before the write returns, and the reader drains that queue
 * before it reads what came on the stack, so nothing is reordered. */
static __always_inline bool fp_must_leave(struct bpf_sock *sk, struct dmsc_fp_sock *me,
					  __u32 size, struct dmsc_fp_stats *st)
{
	struct dmsc_fp_host *h;
	struct dmsc_svc *svc;
	bool known = false;
	__u64 inflight;
	__u32 backlog, zero = 0;

	/* docs/design.md decision 6: a service that is now accelerate off or byte-limited
	 * takes its established flows off the fast path too. */
	if (me->svc_id) {
		svc = fp_sock_service(sk, me);
		if (svc && svc->id == me->svc_id && !fp_accel_allowed(svc->flags)) {
			if (st)
				st->policy_fallback += 1;
			return true;
		}
	}
	if (fp_tcp_mem_short(sk)) {
		fp_svc_mark_bulk(me->svc_id);
		if (st)
			st->pressure_fallback += 1;
		return true;
	}
	if (fp_peer_rmem_full(me->peer_sk, size)) {
		/* A reader behind by its receive buffer: as a slow reader. */
		fp_svc_mark_bulk(me->svc_id);
		if (st)
			st->backlog_fallback += 1;
		return true;
	}
	if (!fp_backlog_max && !fp_host_budget)
		return false;
	backlog = fp_peer_backlog(me->peer_sk, &known);
	if (known && fp_backlog_max && backlog > fp_backlog_max) {
		/* A slow reader: TCP's window holds the writer back now, and
		 * the service's next connections stay off (auto). */
		fp_svc_mark_bulk(me->svc_id);
		if (st)
			st->backlog_fallback += 1;
		return true;
	}
	if (known && fp_host_budget) {
		/* The reader's queue after this message, against what every
		 * other reader holds: over the budget, a writer whose reader
		 * is behind leaves; else this writer's share is that queue
		 * now. A reader that keeps up (less than a bulk message
		 * unread) keeps its writer: leaving is for good, and
		 * request/response flows must not pay for someone else's
		 * stalled bulk readers. Each writer can take the sum past the
		 * budget by at most that much plus one message. */
		h = bpf_map_lookup_elem(&dmsc_fp_host, &zero);
		inflight = h ? h->inflight - me->held : 0;
		if (inflight + backlog + size > fp_host_budget && backlog > DMSC_FP_BULK_MSG) {
			fp_host_hold(me, backlog);
			fp_svc_mark_bulk(me->svc_id);
			if (st)
				st->budget_fallback += 1;
			return true;
		}
		fp_host_hold(me, backlog + size);
	}
	if (!known && !(me->svc_flags & DMSC_SVC_F_ACCEL_ON) && size >= DMSC_FP_BULK_MSG) {
		/* auto without a way to bound the reader's queue: bulk is
		 * left to TCP; accelerate "on" takes that risk. */
		fp_svc_mark_bulk(me->svc_id);
		if (st) {
			st->backlog_unknown += 1;
			st->bulk_fallback += 1;
		}
		return true;
	}
	return false;
}

/* A service's byte counters (dmsc_svc_stats) are kept by cgroup_skb, which
 * never sees a redirected byte: those are counted here, by direction (the
 * connecting end writes "to" the service, the accepted end "from" it), as
 * payload (they never had headers). Only a redirect is counted: after a
 * writer leaves, its bytes are packets again and cgroup_skb counts them, so
 * no byte is counted on both paths. */
static __always_inline void fp_svc_bytes(struct dmsc_fp_sock *me, __u32 size)
{
	struct dmsc_svc_stats *ss;

	if (!me->svc_id)
		return;
	ss = svc_stats(me->svc_id);
	if (!ss)
		return;
	if (me->active)
		ss->bytes_to += size;
	else
		ss->bytes_from += size;
}

SEC("sk_msg")
int dmsc_fp_msg(struct sk_msg_md *msg)
{
	struct dmsc_fp_stats *st;
	struct dmsc_fp_sock *me;
	struct bpf_sock *sk = msg->sk;
	__u32 size = msg->size;
	__u64 peer;

	if (!sk)
		return FP_SK_PASS;
	me = bpf_sk_storage_get(&dmsc_fp_sock, sk, 0, 0);
	if (!me) {
		st = fp_stats(0);
		if (st)
			st->miss += 1;
		return FP_SK_PASS;
	}
	st = fp_stats(me->svc_id);
	if (me->mode == DMSC_FP_UNDECIDED)
		fp_decide(sk, me, st);
	if (me->mode == DMSC_FP_REDIRECT) {
		peer = me->peer_cookie;
		if (fp_must_leave(sk, me, size, st)) {
			me->mode = DMSC_FP_STACK;
			goto stack;
		}
		if (fp_cork_bytes)
			bpf_msg_cork_bytes(msg, fp_cork_bytes);
		if (fp_apply_bytes)
			bpf_msg_apply_bytes(msg, fp_apply_bytes);
		if (bpf_msg_redirect_hash(msg, &dmsc_fp_socks, &peer, BPF_F_INGRESS) ==
		    FP_SK_PASS) {
			if (st) {
				st->redirected_msgs += 1;
				st->redirected_bytes += size;
			}
			fp_svc_bytes(me, size);
			return FP_SK_PASS;
		}
		/* The peer left the sockhash: it closed. Its remaining
		 * bytes were queued before; what follows goes where TCP
		 * sends it (to a closed socket: a reset, as without dmsc). */
		me->mode = DMSC_FP_STACK;
		if (st)
			st->miss += 1;
	}
stack:
	if (st) {
		st->stack_msgs += 1;
		st->stack_bytes += size;
	}
	/* A writer that left with redirected bytes still queued at its
	 * reader: what it holds of the host budget follows the queue down. */
	if (me->held) {
		bool known = false;
		__u32 backlog = fp_peer_backlog(me->peer_sk, &known);

		fp_host_hold(me, known ? backlog : 0);
	}
	/* On the stack for good: let the verdict stand for the next bytes
	 * without running this program for each write; sooner while it holds
	 * a share of the budget. (Out of the sockhash, see fp_release, it
	 * does not run at all.) */
	bpf_msg_apply_bytes(msg, me->held ? DMSC_FP_STACK_REFRESH_BYTES : FP_STACK_APPLY_BYTES);
	return FP_SK_PASS;
}
