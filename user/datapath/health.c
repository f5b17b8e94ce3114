// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Backend health as every apply sees it: see health.h.
 */
#include <bpf/bpf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "health.h"

bool dmsc_health_weights(const __u32 *weight, const unsigned char *out, __u32 n, __u32 *eff)
{
	__u64 kept = 0, all = 0;
	__u32 i;

	for (i = 0; i < n; i++) {
		eff[i] = out[i] ? 0 : weight[i];
		kept += eff[i];
		all += weight[i];
	}
	if (kept || !all)
		return false;
	memcpy(eff, weight, n * sizeof(*eff));
	return true;
}

void dmsc_health_svc_config(const struct dmsc_policy_service *w, struct dmsc_svc_health *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	if (!w->has_health || !w->health.has_passive)
		return;
	cfg->eject_after = (__u16)w->health.passive.consecutive_failures;
	cfg->base_ejection_ms = w->health.passive.base_ejection_ms;
	cfg->max_ejection_ms = w->health.passive.max_ejection_ms;
	cfg->max_eject_pct = (__u16)w->health.passive.max_ejection_percent;
}

void dmsc_health_read_out(const struct dmsc_datapath *dp, const __u32 *ids, __u32 n,
			  unsigned char *out)
{
	struct dmsc_be_verdict v;
	__u32 i;

	for (i = 0; i < n; i++) {
		out[i] = 0;
		if (!ids[i] || ids[i] >= dp->max_backends || dp->fd[DMSC_M_BE_VERDICT] < 0)
			continue;
		if (bpf_map_lookup_elem_flags(dp->fd[DMSC_M_BE_VERDICT], &ids[i], &v, BPF_F_LOCK) ==
		    0)
			out[i] = v.out != DMSC_HEALTH_IN;
	}
}

int dmsc_health_read(const struct dmsc_datapath *dp, __u32 id, struct dmsc_be_health *h,
		     struct dmsc_be_verdict *v)
{
	if (dp->fd[DMSC_M_BE_HEALTH] < 0 || dp->fd[DMSC_M_BE_VERDICT] < 0)
		return -ENOENT;
	if (bpf_map_lookup_elem_flags(dp->fd[DMSC_M_BE_HEALTH], &id, h, BPF_F_LOCK) ||
	    bpf_map_lookup_elem_flags(dp->fd[DMSC_M_BE_VERDICT], &id, v, BPF_F_LOCK))
		return -errno;
	return 0;
}

void dmsc_health_zero(const struct dmsc_datapath *dp, __u32 id)
{
	struct dmsc_be_verdict zero_v;
	struct dmsc_be_health zero;

	memset(&zero, 0, sizeof(zero));
	memset(&zero_v, 0, sizeof(zero_v));
	if (!id || id >= dp->max_backends)
		return;
	if (dp->fd[DMSC_M_BE_HEALTH] >= 0)
		bpf_map_update_elem(dp->fd[DMSC_M_BE_HEALTH], &id, &zero, BPF_F_LOCK);
	if (dp->fd[DMSC_M_BE_VERDICT] >= 0)
		bpf_map_update_elem(dp->fd[DMSC_M_BE_VERDICT], &id, &zero_v, BPF_F_LOCK);
}

const char *dmsc_health_out_name(__u32 out)
{
	switch (out) {
	case DMSC_HEALTH_IN:
		return "in";
	case DMSC_HEALTH_OUT_EJECTED:
		return "ejected";
	case DMSC_HEALTH_OUT_PROBE:
		return "probe_failed";
	default:
		return "unknown";
	}
}

const char *dmsc_health_describe(const struct dmsc_be_health *h, const struct dmsc_be_verdict *v,
				 __u32 eject_after, bool l7, __u64 now_ns, char *why, size_t len)
{
	bool ejected = dmsc_health_ejected(h, v->ejection_ended, now_ns);
	struct timespec wall;
	char until[32] = "";
	__u32 out = v->out;

	if (ejected) {
		time_t t;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &wall);
		t = wall.tv_sec + (time_t)((h->ejected_until_ns - now_ns) / 1000000000ull);
		if (gmtime_r(&t, &tm))
			strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
		out = DMSC_HEALTH_OUT_EJECTED;
	}
	switch (out) {
	case DMSC_HEALTH_OUT_EJECTED:
		if (ejected)
			snprintf(why, len,
				 "ejected after %u %s in a row until %s (ejection %u in a row)",
				 eject_after,
				 l7 ? "failures (5xx responses or failed connects, seen by dmsc-l7)"
				    : "connect failures",
				 until, h->ejections);
		else
			snprintf(why, len, "ejection over, waiting for a probe to pass");
		break;
	case DMSC_HEALTH_OUT_PROBE:
		if (v->probe_detail < 0)
			snprintf(why, len, "%u probes failed in a row (last: %s)", v->probe_failed,
				 strerror(-v->probe_detail));
		else
			snprintf(why, len, "%u probes failed in a row (last: HTTP status %d)",
				 v->probe_failed, v->probe_detail);
		break;
	default:
		snprintf(why, len, "%llu %s in all, %u probes", (unsigned long long)h->failures,
			 l7 ? "failures (5xx or connect)" : "connect failures", v->probes);
		break;
	}
	return dmsc_health_out_name(out);
}
