// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Passive health: the connect()s of mesh sockets that connect4 or connect6
 * sent to a backend, watched to their outcome (docs/design.md decisions 28
 * and 40).
 *
 * At TCP_CONNECT_CB (the SYN is about to leave) a socket translated to a
 * backend of a service with passive health asks for state callbacks; the
 * transition out of SYN_SENT tells the outcome: ESTABLISHED resets the
 * backend's run of failures, CLOSE (refused: a RST; timed out; or given up
 * by the application while connecting) adds one, and the failure that
 * completes a run of consecutive_failures ejects the backend
 * (dmsc/health.h), which connect4 then passes over (health.bpf.h). This
 * program is the only writer of a tcp service's dmsc_be_health elements
 * but for backends on other hosts that the tunnel carries connections to
 * (it counts those, decision 78); dmscd's verdicts are in dmsc_be_verdict,
 * read here (decision 53).
 *
 * bpf_sock_ops.sk and bpf_sk_storage_get from sockops need Linux 5.10;
 * BPF_SOCK_OPS_STATE_CB 4.16; bpf_spin_lock 5.1.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "health.bpf.h"
#include "maps.bpf.h"

/* A watched connect: the service and the backend connect4 or connect6 picked. */
struct watch {
	__u32 svc_id;
	__u32 backend_id;
};

/* The service of a record, when it is still the one that the record's
 * translation used and its passive health is on: its settings to *cfg. */
static __always_inline bool health_on(const struct dmsc_svc *svc, __u32 svc_id,
				      struct dmsc_svc_health *cfg)
{
	if (!svc || svc->id != svc_id || !svc->health.eject_after)
		return false;
	*cfg = svc->health;
	return true;
}

/* The record connect4 or connect6 left, when it names a backend of a
 * service whose passive health is on. An IPv4 record first, whatever the
 * socket's family: a dual-stack socket's connect to ::ffff:VIP was
 * translated and recorded as IPv4 (docs/design.md decision 27). */
static __always_inline bool watched(struct bpf_sock_ops *ops, struct dmsc_svc_health *cfg,
				    struct watch *w)
{
	struct dmsc_svc6_key key6 = {};
	struct dmsc_svc_key key = {};
	struct dmsc_sock_vip6 *rec6;
	struct dmsc_sock_vip *rec;
	struct bpf_sock *sk = ops->sk;

	if (!sk || (ops->family != DMSC_AF_INET && ops->family != DMSC_AF_INET6))
		return false;
	rec = bpf_sk_storage_get(&dmsc_sock_vip, sk, 0, 0);
	if (rec) {
		/* handed to dmsc-l7, or to the tunnel (which counts its
		 * backends' connects itself: decision 78) */
		if (!rec->backend_id || (rec->flags & DMSC_SOCK_F_TUNNEL))
			return false;
		key.vip = rec->vip;
		key.port = rec->vport;
		key.proto = DMSC_PROTO_TCP;
		w->svc_id = rec->svc_id;
		w->backend_id = rec->backend_id;
		return health_on(bpf_map_lookup_elem(&dmsc_services, &key), w->svc_id, cfg);
	}
	if (ops->family != DMSC_AF_INET6)
		return false;
	rec6 = bpf_sk_storage_get(&dmsc_sock_vip6, sk, 0, 0);
	if (!rec6 || !rec6->backend_id || (rec6->flags & DMSC_SOCK_F_TUNNEL))
		return false; /* not translated, or handed over as above */
	__builtin_memcpy(key6.vip, rec6->vip, sizeof(key6.vip));
	key6.port = rec6->vport;
	key6.proto = DMSC_PROTO_TCP;
	w->svc_id = rec6->svc_id;
	w->backend_id = rec6->backend_id;
	return health_on(bpf_map_lookup_elem(&dmsc_services6, &key6), w->svc_id, cfg);
}

/* max_ejection_percent: how many of the service's *n backends (meta m)
 * are ejected at now, by their counter or in dmscd's verdict (read
 * without their locks: connect_failed's gate keeps two CPUs from both
 * finding room). */
static __always_inline __u32 count_ejected(struct dmsc_svc_meta *m, __u64 now, __u32 *n)
{
	struct dmsc_be_verdict *v;
	struct dmsc_be_health *h;
	__u64 k = 0, until, out, ended;
	__u32 i, id;

	*n = 0;
	if (!m)
		return 0;
	*n = m->n_backends;
	for (i = 0; i < DMSC_BACKENDS_PER_SERVICE_MAX; i++) {
		if (i >= m->n_backends)
			break;
		id = m->backend_id[i];
		h = bpf_map_lookup_elem(&dmsc_be_health, &id);
		v = bpf_map_lookup_elem(&dmsc_be_verdict, &id);
		if (!h || !v)
			continue;
		/* Without a branch on what was found: a branch per backend
		 * doubles the paths the verifier walks at each step. Both
		 * times are below 2^63; the top bit of a u64 difference is
		 * 1 when it went below zero; x | -x has it when x != 0. */
		until = h->ejected_until_ns;
		ended = h->ejected_at_ns ^ v->ejection_ended;
		out = v->out ^ DMSC_HEALTH_OUT_EJECTED;
		k += (((now - until) & (ended | (0 - ended))) >> 63) | ((out - 1) >> 63);
	}
	return (__u32)k;
}

static __always_inline void connect_failed(const struct watch *w,
					   const struct dmsc_svc_health *cfg)
{
	__u32 backend_id = w->backend_id, svc_id = w->svc_id, n = 0, k, gen = 0, gate_id;
	struct dmsc_be_health *h = bpf_map_lookup_elem(&dmsc_be_health, &backend_id);
	struct dmsc_be_health *gate = NULL;
	struct dmsc_svc_meta *m;
	__u64 now = bpf_ktime_get_ns(), ended;
	int ejected, room = 1, held = 0;

	if (!h) {
		count_reason(DMSC_R_HEALTH_MISSING);
		return;
	}
	/* Looked up before the lock (no lookups under a spin lock): dmscd's
	 * end of an ejection, and max_ejection_percent's count, only when
	 * this failure may complete a run. */
	ended = health_ejection_ended(backend_id);
	if (cfg->max_eject_pct && cfg->max_eject_pct < 100 &&
	    dmsc_health_would_eject(h, ended, cfg, now)) {
		/* The count and the ejection as one step per service: the
		 * gate (in the first backend's element) is read under its
		 * lock before the count, so the count sees every ejection
		 * that closed the gate before; the gate is taken only if no
		 * CPU took it since (then it may have ejected unseen: no
		 * room now, the next failure asks again) and handed back
		 * after the ejection is written. */
		m = bpf_map_lookup_elem(&dmsc_svc_meta, &svc_id);
		gate_id = m ? m->backend_id[0] : 0;
		gate = m ? bpf_map_lookup_elem(&dmsc_be_health, &gate_id) : NULL;
		if (gate) {
			bpf_spin_lock(&gate->lock);
			gen = gate->eject_gate;
			bpf_spin_unlock(&gate->lock);
		}
		k = count_ejected(m, now, &n);
		room = !(gen & 1) && dmsc_health_may_eject(cfg, k, n);
		if (room && gate) {
			bpf_spin_lock(&gate->lock);
			held = gate->eject_gate == gen;
			if (held)
				gate->eject_gate = gen + 1;
			bpf_spin_unlock(&gate->lock);
			room = held;
		}
	}
	bpf_spin_lock(&h->lock);
	dmsc_health_take_end(h, ended);
	ejected = dmsc_health_failed_room(h, cfg, now, room);
	bpf_spin_unlock(&h->lock);
	if (held && gate) {
		bpf_spin_lock(&gate->lock);
		gate->eject_gate = gen + 2;
		bpf_spin_unlock(&gate->lock);
	}
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
	struct watch w = {};

	if (ops->op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		if (watched(ops, &cfg, &w))
			bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags |
							   BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	/* args[0]: the old state, args[1]: the new one. The fast path may
	 * have asked for state callbacks too: only SYN_SENT's end is ours. */
	if (ops->op != BPF_SOCK_OPS_STATE_CB || ops->args[0] != BPF_TCP_SYN_SENT)
		return 1;
	if (!watched(ops, &cfg, &w))
		return 1;
	if (ops->args[1] == BPF_TCP_ESTABLISHED)
		connect_succeeded(w.backend_id);
	else if (ops->args[1] == BPF_TCP_CLOSE)
		connect_failed(&w, &cfg);
	return 1;
}
