// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Same-host fast path: sockops registers both ends of a connection whose
 * peer is a socket of this host in the mesh cgroup, sk_msg hands each
 * message straight to the peer socket's receive queue.
 *
 * Two compilation units: this one (sockops, and the load-time settings),
 * msg.bpf.c (sk_msg), with what both use in fastpath.bpf.h; linked into
 * the dmsc_sock object with the
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
#include "fastpath.bpf.h"
#include "ipv6.bpf.h"

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
/* Experiments only (bench-datapath.sh --first-bulk): 1 lets a message into
 * its reader's empty queue go whole whatever its size (msg.bpf.c,
 * fp_peer_room), as before docs/design.md decision 72. */
const volatile __u32 fp_whole_first = 0;
/* Experiments only (bench-datapath.sh --first-bulk, test_fastpath.sh's
 * proof that 6b can fail): 1 turns the window rule of fp_peer_room off, as
 * before docs/design.md decision 73. */
const volatile __u32 fp_no_window = 0;

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

/* The record connect4 or connect6 (map: dmsc_sock_vip, dmsc_sock_vip6)
 * left on ops's socket; NULL for a direct connection. *svc_id and *flags
 * start as a direct connection's: zeros. */
static __always_inline void *fp_sock_record(struct bpf_sock_ops *ops, void *map, __u32 *svc_id,
					    __u32 *flags)
{
	struct bpf_sock *sk = ops->sk;

	*svc_id = 0;
	*flags = 0;
	if (!sk)
		return NULL;
	return bpf_sk_storage_get(map, sk, 0, 0);
}

/* Whether the service a socket connected to (svc, found by key) is still
 * the one its record names; if so, its id and flags now. If not, it went
 * away since connect(): a direct connection, key zeroed. */
static __always_inline void fp_service_now(const struct dmsc_svc *svc, __u32 rec_svc_id,
					   __u32 *svc_id, __u32 *flags, void *key, __u32 key_size)
{
	if (!svc || svc->id != rec_svc_id) {
		__builtin_memset(key, 0, key_size);
		return;
	}
	*svc_id = svc->id;
	*flags = svc->flags;
}

/* What connect4 recorded for a socket that connected to a VIP: the service
 * and its flags now. Zeros for a direct connection. */
static __always_inline void fp_service_of(struct bpf_sock_ops *ops, struct dmsc_svc_key *key,
					  __u32 *svc_id, __u32 *flags)
{
	struct dmsc_sock_vip *rec = fp_sock_record(ops, &dmsc_sock_vip, svc_id, flags);

	if (!rec)
		return;
	key->vip = rec->vip;
	key->port = rec->vport;
	key->proto = DMSC_PROTO_TCP;
	fp_service_now(bpf_map_lookup_elem(&dmsc_services, key), rec->svc_id, svc_id, flags, key,
		       sizeof(*key));
}

/* fp_service_of for a socket that connect6 sent to an IPv6 backend. */
static __always_inline void fp_service_of6(struct bpf_sock_ops *ops, struct dmsc_svc6_key *key,
					   __u32 *svc_id, __u32 *flags)
{
	struct dmsc_sock_vip6 *rec = fp_sock_record(ops, &dmsc_sock_vip6, svc_id, flags);

	if (!rec)
		return;
	ip6_copy(key->vip, rec->vip);
	key->port = rec->vport;
	key->proto = DMSC_PROTO_TCP;
	fp_service_now(bpf_map_lookup_elem(&dmsc_services6, key), rec->svc_id, svc_id, flags, key,
		       sizeof(*key));
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
 * path. A connecting socket that found no peer (another host, a server
 * outside the mesh) goes at its first sample on every kernel: no peer,
 * nothing redirected to it (docs/design.md decision 88). sockops may
 * delete from a sockhash; sk_msg may not (Linux 6.x). */
static __always_inline void fp_release(struct bpf_sock_ops *ops, struct bpf_sock *sk,
				       struct dmsc_fp_sock *me)
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
	if (!me->peer_cookie && me->active && !fp_no_release && sk) {
		/* No peer: a connection to another host, or to a socket
		 * outside the mesh. One that joined late is taken now;
		 * with none, nothing knows our cookie, nothing was or
		 * can be redirected to us: out at once, on every kernel. */
		fp_pending_take(sk, me, FP_PEND_LAST);
		if (!me->peer_cookie) {
			key = me->cookie;
			st = fp_stats(me->svc_id);
			if (!bpf_map_delete_elem(&dmsc_fp_socks, &key) && st)
				st->released += 1;
			me->released |= DMSC_FP_RELEASED_SELF;
			goto done;
		}
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
			fp_release(ops, sk, me);
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
		if (me->active && !me->peer_cookie)
			fp_pending_take(sk, me, FP_PEND_DROP);
		fp_host_hold(me, 0);
		break;
	default:
		break;
	}
	return 1;
}
