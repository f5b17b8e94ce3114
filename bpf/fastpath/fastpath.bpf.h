/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What both units of the same-host fast path share: fastpath.bpf.c (sockops,
 * which registers the ends of a connection) and msg.bpf.c (sk_msg, which
 * redirects their messages). Private to bpf/fastpath/.
 */
#ifndef DMSC_FASTPATH_BPF_H
#define DMSC_FASTPATH_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "maps.bpf.h"

/* Load-time settings, defined in fastpath.bpf.c and set by the loader
 * through the skeleton; both units read them. */
extern const volatile __u32 fp_backlog_max;
extern const volatile __u32 fp_host_budget;
extern const volatile __u32 fp_apply_bytes;
extern const volatile __u32 fp_cork_bytes;
extern const volatile __u32 fp_no_release;
extern const volatile __u32 fp_whole_first;
extern const volatile __u32 fp_no_window;

/* sk_msg verdicts. */
#define FP_SK_PASS 1

/* The share of its reader's receive buffer a redirecting writer may fill
 * (docs/design.md decision 49): 2, half. */
#define DMSC_FP_RMEM_SHARE 2

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

static __always_inline struct dmsc_fp_stats *fp_stats(__u32 svc_id)
{
	struct dmsc_fp_stats *st = bpf_map_lookup_elem(&dmsc_fp_stats, &svc_id);

	if (!st) {
		svc_id = 0; /* an id past the array: count it as global */
		st = bpf_map_lookup_elem(&dmsc_fp_stats, &svc_id);
	}
	return st;
}

/* Byte limits are policed outside sockets; a redirected flow would pass
 * them by, so such a service is never accelerated (docs/design.md decision 6). */
static __always_inline bool fp_accel_allowed(__u32 flags)
{
	return !(flags & (DMSC_SVC_F_ACCEL_OFF | DMSC_SVC_F_BYTES_LIMIT));
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

/* What the connecting end does with its pending entry (the IPv6 one is
 * keyed by its dmsc_fp_sock6). */
enum fp_pend_how {
	FP_PEND_DROP, /* it closes: the entry goes */
	/* At its first message: the peer's cookie and address, if the peer
	 * published them, and the entry goes; if not, the entry stays for a
	 * peer still joining (a client that writes before its SYN-ACK's ACK
	 * reached the server), until FP_PEND_LAST. */
	FP_PEND_FIRST,
	/* At its first ACK of data (fp_release): the peer's if it joined
	 * since, and the entry goes. A server acks data only once established,
	 * after its PASSIVE_ESTABLISHED joined, so no peer can join later. */
	FP_PEND_LAST,
};

static __always_inline void fp_pending_take(struct bpf_sock *sk, struct dmsc_fp_sock *me,
					    enum fp_pend_how how)
{
	struct dmsc_fp_pending6 *pend6;
	struct dmsc_fp_pending *pend;
	struct dmsc_fp_sock6 *me6 = NULL;
	__u64 cookie = 0;

	if (me->family == DMSC_FP_IPV6) {
		me6 = bpf_sk_storage_get(&dmsc_fp_sock6, sk, 0, 0);
		pend6 = me6 ? bpf_map_lookup_elem(&dmsc_fp_pending6, &me6->conn) : NULL;
		pend = pend6 ? &pend6->p : NULL;
	} else {
		pend = bpf_map_lookup_elem(&dmsc_fp_pending, &me->conn);
	}
	if (!pend)
		return;
	if (how != FP_PEND_DROP && (cookie = pend->server_cookie)) {
		me->peer_cookie = cookie;
		me->peer_sk = pend->server_sk;
	}
	if (!cookie && how == FP_PEND_FIRST)
		return; /* kept for a peer still joining */
	if (me6)
		bpf_map_delete_elem(&dmsc_fp_pending6, &me6->conn);
	else
		bpf_map_delete_elem(&dmsc_fp_pending, &me->conn);
}

#endif /* DMSC_FASTPATH_BPF_H */
