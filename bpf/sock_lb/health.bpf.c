// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Passive health: the connect()s of mesh sockets that connect4 sent to a
 * backend, watched to their outcome (docs/design.md decision 28).
 *
 * At TCP_CONNECT_CB (the SYN is about to leave) a socket translated to a
 * backend of a service with passive health asks for state callbacks; the
 * transition out of SYN_SENT tells the outcome: ESTABLISHED resets the
 * backend's run of failures, CLOSE (refused: a RST; timed out; or given up
 * by the application while connecting) adds one, and the failure that
 * completes a run of consecutive_failures ejects the backend
 * (dmsc/health.h), which connect4 then passes over (health.bpf.h).
 *
 * bpf_sock_ops.sk and bpf_sk_storage_get from sockops need Linux 5.10;
 * BPF_SOCK_OPS_STATE_CB 4.16; bpf_spin_lock 5.1.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "maps.bpf.h"

/* The record connect4 left, when it names a backend of a service whose
 * passive health is on; the service's settings copied to *cfg. */
static __always_inline struct dmsc_sock_vip *watched(struct bpf_sock_ops *ops,
						     struct dmsc_svc_health *cfg)
{
	struct dmsc_svc_key key = {};
	struct dmsc_sock_vip *rec;
	struct dmsc_svc *svc;
	struct bpf_sock *sk = ops->sk;

	if (!sk || ops->family != DMSC_AF_INET)
		return NULL;
	rec = bpf_sk_storage_get(&dmsc_sock_vip, sk, 0, 0);
	if (!rec || !rec->backend_id)
		return NULL; /* not translated, or handed to dmsc-l7 */
	key.vip = rec->vip;
	key.port = rec->vport;
	key.proto = DMSC_PROTO_TCP;
	svc = bpf_map_lookup_elem(&dmsc_services, &key);
	if (!svc || svc->id != rec->svc_id || !svc->health.eject_after)
		return NULL;
	*cfg = svc->health;
	return rec;
}

static __always_inline void connect_failed(__u32 backend_id, const struct dmsc_svc_health *cfg)
{
	struct dmsc_be_health *h = bpf_map_lookup_elem(&dmsc_be_health, &backend_id);
	__u64 now = bpf_ktime_get_ns();
	int ejected;

	if (!h) {
		count_reason(DMSC_R_HEALTH_MISSING);
		return;
	}
	bpf_spin_lock(&h->lock);
	ejected = dmsc_health_failed(h, cfg, now);
	bpf_spin_unlock(&h->lock);
	if (ejected)
		count_reason(DMSC_R_HEALTH_EJECTED);
}

static __always_inline void connect_succeeded(__u32 backend_id)
{
	struct dmsc_be_health *h = bpf_map_lookup_elem(&dmsc_be_health, &backend_id);

	/* Read first: most connects find nothing to reset, and need no lock. */
	if (!h || !h->consecutive)
		return;
	bpf_spin_lock(&h->lock);
	h->consecutive = 0;
	bpf_spin_unlock(&h->lock);
}

SEC("sockops")
int dmsc_health_sockops(struct bpf_sock_ops *ops)
{
	struct dmsc_svc_health cfg = {};
	struct dmsc_sock_vip *rec;

	if (ops->op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		if (watched(ops, &cfg))
			bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags |
							   BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	/* args[0]: the old state, args[1]: the new one. The fast path may
	 * have asked for state callbacks too: only SYN_SENT's end is ours. */
	if (ops->op != BPF_SOCK_OPS_STATE_CB || ops->args[0] != BPF_TCP_SYN_SENT)
		return 1;
	rec = watched(ops, &cfg);
	if (!rec)
		return 1;
	if (ops->args[1] == BPF_TCP_ESTABLISHED)
		connect_succeeded(rec->backend_id);
	else if (ops->args[1] == BPF_TCP_CLOSE)
		connect_failed(rec->backend_id, &cfg);
	return 1;
}
