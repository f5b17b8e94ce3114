// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The same-host fast path's sk_msg program: each message of a registered
 * socket (fastpath.bpf.c) decides, at the first message for the socket's
 * whole life, between the peer's receive queue and the normal stack, and a
 * redirecting writer leaves for the stack for good when its reader falls
 * behind. The rules are fastpath.bpf.c's. Linked into the dmsc_sock object.
 */
#include "fastpath.bpf.h"

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
		fp_pending_take(sk, me, FP_PEND_FIRST);
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

/* Set once a reader was seen holding redirected bytes (sk_psock.msg_tot_len)
 * with nothing charged to its receive memory: this kernel does not charge
 * them (5.10 to 6.12 before late 2026), so there an empty receive memory
 * says nothing of the reader's queue. Host-wide, for the life of this load;
 * never cleared (a kernel does not start charging). Not static: clang
 * shrinks a static flag to a byte, whose .bss the kernel's BTF check
 * refuses. */
__u32 fp_rmem_uncharged = 0;

/* What the reader's TCP has promised its peer and not yet received: the
 * right edge of the window it advertised last (rcv_wup + rcv_wnd; TCP never
 * moves it left) less rcv_nxt, tcp_receive_window() in the kernel. The peer
 * is the writer's own socket: once the writer leaves, its TCP may send that
 * much at once, whatever the reader's queue holds by then. Read through the
 * reader's address like fp_peer_backlog() (CO-RE; every field since 2.6); a
 * read that fails answers 0, no window: the half-buffer bound still holds. */
static __always_inline __u32 fp_peer_wnd_left(struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u32 wnd = 0, wup = 0, nxt = 0;
	__s32 left;

	if (bpf_core_read(&wnd, sizeof(wnd), &tp->rcv_wnd) ||
	    bpf_core_read(&wup, sizeof(wup), &tp->rcv_wup) ||
	    bpf_core_read(&nxt, sizeof(nxt), &tp->rcv_nxt))
		return 0;
	left = (__s32)(wup + wnd - nxt);
	return left > 0 ? (__u32)left : 0;
}

/* Why a redirect of SIZE more bytes finds no room at its reader. */
enum fp_room {
	FP_ROOM_OK,     /* room: redirect */
	FP_ROOM_HALF,   /* past half the reader's receive buffer */
	FP_ROOM_WINDOW, /* within half, but what is left would not hold the
			 * window the reader's TCP advertised */
};

/* Whether the reader's receive buffer has room for SIZE more redirected
 * bytes (docs/design.md decisions 37, 49 and 73). Linux 6.18 charges
 * redirected bytes to the reader's sk_rmem_alloc (5.10 to 6.12 do not), and
 * TCP drops every packet that arrives while the reader's own recv() holds
 * the socket once receive memory and backlog pass 2 * sk_rcvbuf +
 * sk_sndbuf / 2 + 64 KiB (tcp_add_backlog(), net/ipv4/tcp_ipv4.c), a RST
 * too, which nobody sends again: a reader whose writer reset the connection
 * then waits for ever. Plain TCP's window keeps receive memory within the
 * buffer; this keeps the fast path there too, by two rules:
 * - half: the reader's receive memory stays within half its buffer, so TCP
 *   takes over with its window open (decision 49);
 * - window: what the buffer has left after this message still holds the
 *   window the reader's TCP advertised before (fp_peer_wnd_left), so the
 *   segments the writer's TCP sends once it left find room, and the reader
 *   prunes nothing (decision 73). TCP advertises at most what the buffer it
 *   saw could take, but that was before the redirected bytes were charged.
 * Read like fp_peer_backlog(): a freed peer reads as "room".
 *
 * A message into an empty queue counts too (docs/design.md decision 72): a
 * first message larger than half the buffer (a 128 KiB bulk write into a
 * 128 KiB buffer) would fill it on its own, and the writer leaves before it
 * instead of one message later with the reader's queue over its buffer.
 * That needs to know the kernel charges: where the reader's queue can be
 * read (sk_psock.msg_tot_len, the kernels whose writers get the native TCP
 * path back) an empty receive memory means an empty queue until a reader
 * is seen with redirected bytes and nothing charged (fp_rmem_uncharged);
 * where it cannot (5.10, 6.1), auto sends such writes to the stack anyway
 * (fp_must_leave) and this keeps to the receive memory it sees. The window
 * rule waits for charged bytes: the message after the first is checked. */
static __always_inline enum fp_room fp_peer_room(__u64 peer_sk, __u32 size)
{
	struct sock *sk = (struct sock *)peer_sk;
	int rmem = 0, rcvbuf = 0;
	bool known = false;
	__u32 backlog;

	if (!fp_has_psock(peer_sk) ||
	    bpf_core_read(&rmem, sizeof(rmem), &sk->sk_backlog.rmem_alloc.counter) ||
	    bpf_core_read(&rcvbuf, sizeof(rcvbuf), &sk->sk_rcvbuf) || rcvbuf <= 0)
		return FP_ROOM_OK;
	if (rmem <= 0) {
		backlog = fp_peer_backlog(peer_sk, &known);
		if (!known)
			return FP_ROOM_OK;
		/* More queued than the whole buffer with nothing charged: a
		 * charging kernel never gets there (this bound keeps the queue
		 * within half the buffer), and a reader's recv() that uncharges
		 * before it shortens the queue (read before it here) is off by
		 * one read, not by a buffer. */
		if (backlog > (__u32)rcvbuf) {
			fp_rmem_uncharged = 1;
			return FP_ROOM_OK;
		}
		if (fp_whole_first || fp_rmem_uncharged || backlog)
			return FP_ROOM_OK;
		/* Only the half rule here: an empty receive memory does not
		 * prove a charging kernel, and where nothing is charged the
		 * window does not matter; the next message, once this one
		 * shows charged, is checked against it. */
		return size > (__u32)rcvbuf / DMSC_FP_RMEM_SHARE ? FP_ROOM_HALF : FP_ROOM_OK;
	}
	if ((__s64)rmem + size > (__u32)rcvbuf / DMSC_FP_RMEM_SHARE)
		return FP_ROOM_HALF;
	if (!fp_no_window && (__s64)rcvbuf - rmem - size < (__s64)fp_peer_wnd_left(sk))
		return FP_ROOM_WINDOW;
	return FP_ROOM_OK;
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
	enum fp_room room;
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
	room = fp_peer_room(me->peer_sk, size);
	if (room != FP_ROOM_OK) {
		/* A reader behind by its receive buffer: as a slow reader. */
		fp_svc_mark_bulk(me->svc_id);
		if (st) {
			st->backlog_fallback += 1;
			if (room == FP_ROOM_WINDOW)
				st->window_fallback += 1;
		}
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
