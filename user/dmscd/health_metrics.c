// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Backend health in dmscd's metrics, from dmsc_be_health, dmsc_be_verdict and the services'
 * flags: each backend's state (with why in the state label), its connect
 * failures and probes, and each service's panic mode.
 */
#include <arpa/inet.h>
#include <string.h>
#include <time.h>

#include <bpf/bpf.h>

#include "addr.h"
#include "health.h"
#include "health_watch.h"
#include "metrics.h"
#include "apply.h"

enum { FAM_HEALTH, FAM_FAILURES, FAM_PROBES };

static const struct {
	const char *name, *type, *help;
} fams[] = {
    [FAM_HEALTH] = {"dmsc_backend_health", "gauge",
		    "1 for the backend's health state: in, ejected (the kernel saw its "
		    "connects fail), probe_failed (dmscd's probes)."},
    [FAM_FAILURES] = {"dmsc_backend_connect_failures_total", "counter",
		      "Connects of mesh sockets to the backend that failed (passive health)."},
    [FAM_PROBES] = {"dmsc_backend_probes_total", "counter",
		    "Active health probes dmscd sent to the backend."},
};

/* Family f's samples of the backends of ms, when its health is on. */
static void backend_samples(struct dmsc_buf *b, const struct dmsc_mirror_svc *ms,
			    const struct dmsc_datapath *dp, size_t f, __u64 now)
{
	static const __u32 states[] = {DMSC_HEALTH_IN, DMSC_HEALTH_OUT_EJECTED,
				       DMSC_HEALTH_OUT_PROBE};
	char vip[DMSC_ADDR_PORT_LEN + 8], be[DMSC_ADDR_PORT_LEN], why[192];
	size_t j, s;

	if (!(ms->flags & DMSC_SVC_F_HEALTH))
		return;
	dmsc_format_svc_key(&ms->key, ms->family, dmsc_mirror_vip6(ms), vip, sizeof(vip));
	for (j = 0; j < ms->n_be; j++) {
		struct dmsc_prom_label l[4] = {{"service", ms->name}, {"vip", vip}, {"backend", be}};
		struct dmsc_be_verdict v;
		struct dmsc_be_health h;
		const char *state;
		__u32 id = ms->be[j].id;

		if (dmsc_health_read(dp, id, &h, &v))
			continue;
		dmsc_format_ip_port(ms->family, ms->be[j].addr, dmsc_mirror_be6(ms, j),
				    ntohs(ms->be[j].port), be, sizeof(be));
		if (f == FAM_FAILURES) {
			dmsc_prom_sample(b, fams[f].name, l, 3, h.failures);
			continue;
		}
		if (f == FAM_PROBES) {
			dmsc_prom_sample(b, fams[f].name, l, 3, v.probes);
			continue;
		}
		state = dmsc_health_describe(&h, &v, 0, false, now, why, sizeof(why));
		for (s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
			l[3] = (struct dmsc_prom_label){"state", dmsc_health_out_name(states[s])};
			dmsc_prom_sample(b, fams[f].name, l, 4,
					 !strcmp(state, dmsc_health_out_name(states[s])));
		}
	}
}

void dmsc_health_metrics(struct dmsc_buf *b, const struct dmsc_mirror *m,
			 const struct dmsc_datapath *dp, bool per_backend)
{
	struct timespec ts;
	char vip[DMSC_ADDR_PORT_LEN + 8];
	__u64 now;
	size_t i, f;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (__u64)ts.tv_sec * 1000000000ull + (__u64)ts.tv_nsec;
	dmsc_prom_family(b, "dmsc_service_health_panic", "gauge",
			 "1 while every backend of the service is unhealthy and all are kept "
			 "in its slot table (panic mode).");
	for (i = 0; i < m->n; i++) {
		struct dmsc_prom_label l[2] = {{"service", m->svcs[i].name}, {"vip", vip}};

		if (!(m->svcs[i].flags & DMSC_SVC_F_HEALTH))
			continue;
		dmsc_format_svc_key(&m->svcs[i].key, m->svcs[i].family, dmsc_mirror_vip6(&m->svcs[i]), vip,
				    sizeof(vip));
		dmsc_prom_sample(b, "dmsc_service_health_panic", l, 2,
				 !!(m->svcs[i].flags & DMSC_SVC_F_HEALTH_PANIC));
	}
	if (!per_backend)
		return;
	/* One family after the other: a family's samples must be contiguous
	 * in the text format. */
	for (f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
		dmsc_prom_family(b, fams[f].name, fams[f].type, fams[f].help);
		for (i = 0; i < m->n; i++)
			backend_samples(b, &m->svcs[i], dp, f, now);
	}
}
