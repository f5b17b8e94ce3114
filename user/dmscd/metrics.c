// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "counters.h"
#include "metrics.h"
#include "health_watch.h"
#include "apply.h"

static const double apply_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
				      0.025,  0.05,    0.1,    0.25,  1,      2.5,   10};

void dmsc_agent_stats_init(struct dmsc_agent_stats *a)
{
	memset(a, 0, sizeof(*a));
	dmsc_histogram_init(&a->apply_seconds, apply_bounds,
			    sizeof(apply_bounds) / sizeof(apply_bounds[0]));
}

/* ---- from the maps -------------------------------------------------- */

/* PER_FASTPATH: per service from dmsc_fp_stats, plus one sample with
 * service="" and vip="" for connections between mesh sockets without a VIP. */
enum row_scope { PER_SERVICE, PER_BACKEND, PER_FASTPATH };

/* One counter read from a per-CPU statistics map: adding a counter to the
 * datapath's stats structs and a row here is all it takes to export it.
 * Rows of one metric name must be adjacent (one HELP/TYPE per family). */
struct counter_row {
	const char *name;
	const char *help;
	enum row_scope scope;
	size_t offset;	   /* of the __u64 in dmsc_svc_stats / dmsc_be_stats / dmsc_fp_stats */
	const char *label; /* one more label, or NULL */
	const char *value;
};

#define SVC_ROW(name, help, field, label, value)                                                   \
	{                                                                                          \
		name, help, PER_SERVICE, offsetof(struct dmsc_svc_stats, field), label, value      \
	}
#define FP_ROW(name, help, field, label, value)                                                    \
	{                                                                                          \
		name, help, PER_FASTPATH, offsetof(struct dmsc_fp_stats, field), label, value      \
	}

static const struct counter_row counter_rows[] = {
    SVC_ROW("dmsc_service_connections_total",
	    "Connections to the service VIP translated to a backend.", connections, NULL, NULL),
    SVC_ROW("dmsc_service_refused_total", "Connections to the service VIP refused, by reason.",
	    refused_no_backend, "reason", "no_backend"),
    SVC_ROW("dmsc_service_refused_total", NULL, refused_rate, "reason", "rate"),
    SVC_ROW("dmsc_service_refused_total", NULL, refused_access, "reason", "access"),
    SVC_ROW("dmsc_service_bytes_total",
	    "Bytes of mesh clients' connections to the service, by direction (to: sent "
	    "to the service, from: received from it): packets, plus the payload the "
	    "same-host fast path carried.",
	    bytes_to, "direction", "to"),
    SVC_ROW("dmsc_service_bytes_total", NULL, bytes_from, "direction", "from"),
    SVC_ROW("dmsc_service_policed_packets_total",
	    "Packets dropped over the service's bytes_per_second, by where (to, from: "
	    "mesh clients' sockets; interface: TC on --interface).",
	    policed_to, "where", "to"),
    SVC_ROW("dmsc_service_policed_packets_total", NULL, policed_from, "where", "from"),
    SVC_ROW("dmsc_service_policed_packets_total", NULL, tc_policed, "where", "interface"),
    SVC_ROW("dmsc_service_mtls_plain_connections_total",
	    "New TCP connections (SYNs) from other hosts straight to a backend of this host, "
	    "around the tunnel, by verdict (refused: mtls required; admitted: permissive).",
	    mtls_plain_refused, "verdict", "refused"),
    SVC_ROW("dmsc_service_mtls_plain_connections_total", NULL, mtls_plain_admitted, "verdict",
	    "admitted"),
    SVC_ROW("dmsc_service_interface_bytes_total",
	    "Bytes arriving on an --interface for a local backend of the service.", tc_bytes, NULL,
	    NULL),
    {"dmsc_backend_connections_total", "Connections translated to the backend.", PER_BACKEND,
     offsetof(struct dmsc_be_stats, connections), NULL, NULL},
    FP_ROW("dmsc_fastpath_sockets_registered_total",
	   "Sockets put in the same-host fast path's sockhash.", registered, NULL, NULL),
    FP_ROW("dmsc_fastpath_connections_paired_total",
	   "Connections whose both ends registered in the fast path.", paired, NULL, NULL),
    FP_ROW("dmsc_fastpath_messages_total",
	   "Messages of registered sockets, by path (redirected: handed to the peer "
	   "socket, the fast path's hits; stack: sent the normal way).",
	   redirected_msgs, "path", "redirected"),
    FP_ROW("dmsc_fastpath_messages_total", NULL, stack_msgs, "path", "stack"),
    FP_ROW("dmsc_fastpath_bytes_total", "Bytes of registered sockets, by path.", redirected_bytes,
	   "path", "redirected"),
    FP_ROW("dmsc_fastpath_bytes_total", NULL, stack_bytes, "path", "stack"),
    FP_ROW("dmsc_fastpath_misses_total",
	   "Fast path misses, by reason (peer_gone: the redirect target had closed; "
	   "no_peer: a socket's first message found no local peer).",
	   miss, "reason", "peer_gone"),
    FP_ROW("dmsc_fastpath_misses_total", NULL, no_peer, "reason", "no_peer"),
    FP_ROW("dmsc_fastpath_fallbacks_total",
	   "Writers that left the fast path for the normal stack, by reason (backlog: "
	   "the reader fell behind; bulk: a large write where the backlog cannot be read; "
	   "policy: the service became accelerate off or byte-limited; budget: the host "
	   "budget of unread redirected bytes was spent; pressure: TCP memory was short).",
	   backlog_fallback, "reason", "backlog"),
    FP_ROW("dmsc_fastpath_fallbacks_total", NULL, bulk_fallback, "reason", "bulk"),
    FP_ROW("dmsc_fastpath_fallbacks_total", NULL, policy_fallback, "reason", "policy"),
    FP_ROW("dmsc_fastpath_fallbacks_total", NULL, budget_fallback, "reason", "budget"),
    FP_ROW("dmsc_fastpath_fallbacks_total", NULL, pressure_fallback, "reason", "pressure"),
    FP_ROW("dmsc_fastpath_released_total",
	   "Sockets that left the fast path and were given the kernel's own TCP path back "
	   "(out of the sockhash once their queue of redirected bytes was empty).",
	   released, NULL, NULL),
    FP_ROW("dmsc_fastpath_skipped_total",
	   "Connections or sockets kept off the fast path, by reason (accelerate_off, "
	   "bulk_seen: auto after a recent bulk fallback, early_data: data before the "
	   "first message, register_failed: a map was full).",
	   accel_off, "reason", "accelerate_off"),
    FP_ROW("dmsc_fastpath_skipped_total", NULL, bulk_skip, "reason", "bulk_seen"),
    FP_ROW("dmsc_fastpath_skipped_total", NULL, early_data, "reason", "early_data"),
    FP_ROW("dmsc_fastpath_skipped_total", NULL, register_failed, "reason", "register_failed"),
};

#define N_ROWS (sizeof(counter_rows) / sizeof(counter_rows[0]))

static uint64_t field(const void *stats, size_t offset)
{
	uint64_t v;

	memcpy(&v, (const char *)stats + offset, sizeof(v));
	return v;
}

/* An IPv6 service's ext in a snapshot: its VIP, and its backends'
 * addresses when they are copied. */
static size_t snap_ext_size(const struct dmsc_mirror_svc *ms, bool backends)
{
	if (!ms->ext || ms->family != AF_INET6)
		return 0;
	return sizeof(*ms->ext) + (backends ? ms->ext->n_be6 * sizeof(ms->ext->be6[0]) : 0);
}

int dmsc_metrics_snapshot(const struct dmsc_mirror *m, bool backends, struct dmsc_mirror *out)
{
	size_t i, n_be = 0, n_ext = 0, n_names = 0, n_svcs = m->n ? m->n : 1;
	struct dmsc_mirror_be *be;
	char *ext, *name;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < m->n; i++) {
		n_be += backends ? m->svcs[i].n_be : 0;
		n_ext += snap_ext_size(&m->svcs[i], backends);
		n_names += strlen(m->svcs[i].name) + 1;
	}
	/* One block: the services, their backends, the exts of IPv6 services
	 * (VIP and backends' addresses; sizes multiples of 8), the names. */
	out->svcs = malloc(n_svcs * sizeof(*out->svcs) + n_be * sizeof(*be) + n_ext + n_names);
	if (!out->svcs)
		return -ENOMEM;
	be = (struct dmsc_mirror_be *)(out->svcs + n_svcs);
	ext = (char *)(be + n_be);
	name = ext + n_ext;
	for (i = 0; i < m->n; i++) {
		const struct dmsc_mirror_svc *from = &m->svcs[i];
		struct dmsc_mirror_svc *to = &out->svcs[i];
		size_t len = strlen(from->name) + 1, x = snap_ext_size(from, backends);

		memset(to, 0, sizeof(*to));
		to->key = from->key;
		to->family = from->family;
		to->id = from->id;
		to->flags = from->flags;
		to->name = memcpy(name, from->name, len);
		name += len;
		if (x) {
			to->ext = memcpy(ext, from->ext, x);
			to->ext->allow = NULL;
			to->ext->n_allow = 0;
			if (!backends)
				to->ext->n_be6 = 0;
			ext += x;
		}
		if (backends) {
			to->n_be = from->n_be;
			to->be = memcpy(be, from->be, from->n_be * sizeof(*be));
			be += from->n_be;
		}
	}
	out->n = out->cap = m->n;
	out->n_backends = m->n_backends;
	out->generation = m->generation;
	out->services_map_id = m->services_map_id;
	out->max_services = m->max_services;
	out->max_backends = m->max_backends;
	out->loaded = m->loaded;
	return 0;
}

void dmsc_metrics_snapshot_free(struct dmsc_mirror *snap)
{
	free(snap->svcs);
	memset(snap, 0, sizeof(*snap));
}

bool dmsc_metrics_backends_on(enum dmsc_metrics_backends mode, size_t n_services)
{
	return mode == DMSC_METRICS_BACKENDS_ON ||
	       (mode == DMSC_METRICS_BACKENDS_AUTO && n_services <= DMSC_METRICS_BACKENDS_AUTO_MAX);
}

/* The counters of counter_rows, per service, backend and fast path:
 * 0 or -ENOMEM. */
static int render_counters(struct dmsc_buf *b, const struct dmsc_mirror *m,
			   const struct dmsc_datapath *dp, bool per_backend)
{
	struct dmsc_svc_stats *ss = NULL;
	struct dmsc_be_stats *bs = NULL;
	struct dmsc_fp_stats *fs = NULL, fs_direct;
	size_t i, j, r, k, n_be = 0;
	char vip[DMSC_ADDR_PORT_LEN + 8], be[DMSC_ADDR_PORT_LEN];
	int err = 0;

	for (i = 0; per_backend && i < m->n; i++)
		n_be += m->svcs[i].n_be;
	ss = calloc(m->n ? m->n : 1, sizeof(*ss));
	bs = calloc(n_be ? n_be : 1, sizeof(*bs));
	fs = calloc(m->n ? m->n : 1, sizeof(*fs));
	if (!ss || !bs || !fs) {
		err = -ENOMEM;
		goto out;
	}
	/* Id 0 of the fast path's stats: connections without a VIP. */
	dmsc_percpu_sum(dp, DMSC_M_FP_STATS, 0, &fs_direct, sizeof(fs_direct));
	for (i = 0, k = 0; i < m->n; i++) {
		dmsc_percpu_sum(dp, DMSC_M_SVC_STATS, m->svcs[i].id, &ss[i], sizeof(ss[i]));
		dmsc_percpu_sum(dp, DMSC_M_FP_STATS, m->svcs[i].id, &fs[i], sizeof(fs[i]));
		for (j = 0; per_backend && j < m->svcs[i].n_be; j++, k++)
			dmsc_percpu_sum(dp, DMSC_M_BE_STATS, m->svcs[i].be[j].id, &bs[k],
					sizeof(bs[k]));
	}

	for (r = 0; r < N_ROWS; r++) {
		const struct counter_row *row = &counter_rows[r];

		if (row->scope == PER_BACKEND && !per_backend)
			continue;
		if (r == 0 || strcmp(counter_rows[r - 1].name, row->name) != 0)
			dmsc_prom_family(b, row->name, "counter", row->help);
		for (i = 0, k = 0; i < m->n; i++) {
			const struct dmsc_mirror_svc *ms = &m->svcs[i];
			struct dmsc_prom_label l[3] = {{"service", ms->name}, {"vip", vip}};

			dmsc_format_svc_key(&ms->key, ms->family, dmsc_mirror_vip6(ms), vip, sizeof(vip));
			if (row->scope != PER_BACKEND) {
				if (row->label)
					l[2] = (struct dmsc_prom_label){row->label, row->value};
				dmsc_prom_sample(b, row->name, l, row->label ? 3 : 2,
						 row->scope == PER_SERVICE
						     ? field(&ss[i], row->offset)
						     : field(&fs[i], row->offset));
				continue;
			}
			for (j = 0; j < ms->n_be; j++, k++) {
				dmsc_format_ip_port(ms->family, ms->be[j].addr, dmsc_mirror_be6(ms, j),
						    ntohs(ms->be[j].port), be, sizeof(be));
				l[2] = (struct dmsc_prom_label){"backend", be};
				dmsc_prom_sample(b, row->name, l, 3, field(&bs[k], row->offset));
			}
		}
		if (row->scope == PER_FASTPATH) {
			struct dmsc_prom_label l[3] = {{"service", ""}, {"vip", ""}};

			if (row->label)
				l[2] = (struct dmsc_prom_label){row->label, row->value};
			dmsc_prom_sample(b, row->name, l, row->label ? 3 : 2,
					 field(&fs_direct, row->offset));
		}
	}
out:
	free(ss);
	free(bs);
	free(fs);
	return err;
}

/* One gauge family of the services and the backends maps. */
static void render_map_pair(struct dmsc_buf *b, const char *name, const char *help,
			    uint64_t services, uint64_t backends)
{
	struct dmsc_prom_label l = {"map", DMSC_MAP_SERVICES};

	dmsc_prom_family(b, name, "gauge", help);
	dmsc_prom_sample(b, name, &l, 1, services);
	l.value = DMSC_MAP_BACKENDS;
	dmsc_prom_sample(b, name, &l, 1, backends);
}

int dmsc_metrics_render(struct dmsc_buf *b, const struct dmsc_mirror *m,
			const struct dmsc_datapath *dp, const struct dmsc_agent_stats *a,
			bool per_backend)
{
	size_t i;
	int err;

	err = render_counters(b, m, dp, per_backend);
	if (err)
		return err;
	dmsc_prom_family(b, "dmsc_datapath_events_total", "counter",
			 "Datapath events that belong to no service: fail-open paths and "
			 "getpeername() rewrites, by reason.");
	for (i = 0; i < DMSC_R_MAX; i++) {
		struct dmsc_prom_label l = {"reason", dmsc_reason_names[i]};
		__u64 v = 0;

		dmsc_percpu_sum(dp, DMSC_M_REASONS, (__u32)i, &v, sizeof(v));
		dmsc_prom_sample(b, "dmsc_datapath_events_total", &l, 1, v);
	}

	dmsc_health_metrics(b, m, dp, per_backend);

	render_map_pair(b, "dmsc_map_entries",
			"Entries in use in a datapath map (ids in use for the array maps).", m->n,
			m->n_backends);
	render_map_pair(b, "dmsc_map_capacity", "Entries a datapath map can hold (set at install).",
			dp->max_services - 1, dp->max_backends - 1);

	dmsc_prom_single(b, "dmsc_metrics_backend_series", "gauge",
			 "1 when the per-backend series are exported, 0 when left out "
			 "(dmscd --metrics-backends; auto leaves them out above "
			 "1000 services).",
			 per_backend);

	dmsc_prom_family(b, "dmsc_apply_total", "counter",
			 "Policy applies by result: ok, failed (rolled back), invalid (the "
			 "policy did not validate; nothing written).");
	{
		static const char *const names[DMSC_APPLY_OUTCOMES] = {"ok", "failed", "invalid"};

		for (i = 0; i < DMSC_APPLY_OUTCOMES; i++) {
			struct dmsc_prom_label l = {"result", names[i]};

			dmsc_prom_sample(b, "dmsc_apply_total", &l, 1, a->applies[i]);
		}
	}
	dmsc_prom_single(b, "dmsc_apply_entries_written_total", "counter",
			 "Map entries written or deleted by applies.", a->entries_written);
	dmsc_prom_single(b, "dmsc_datapath_opens_total", "counter",
			 "Times dmscd opened the pinned maps afresh: at its start, after an "
			 "install re-created or re-pinned one, an uninstall, or SIGHUP; "
			 "between those it keeps them open.",
			 a->datapath_opens);
	dmsc_prom_histogram(b, "dmsc_apply_duration_seconds",
			    "Time to diff a compiled policy against the maps and write the "
			    "difference (parsing excluded).",
			    &a->apply_seconds);
	dmsc_prom_single(b, "dmsc_policy_services", "gauge", "Services in the policy last applied.",
			 a->policy_services);
	dmsc_prom_single(b, "dmsc_l7_http_services", "gauge",
			 "protocol http services in the policy last applied.", a->l7_http_services);
	dmsc_prom_single(b, "dmsc_l7_unserved_services", "gauge",
			 "http services that no ready dmsc-l7 serves (balanced at L4 without "
			 "their routes and limits): an error when above 0.",
			 a->l7_unserved);
	dmsc_prom_single(b, "dmsc_l7_helper_up", "gauge",
			 "1 when a dmsc-l7 started by this "
			 "dmscd is ready.",
			 a->l7_helper_up);
	dmsc_prom_single_f(b, "dmsc_apply_last_success_timestamp_seconds", "gauge",
			   "When the last successful apply ended (0: none yet).",
			   a->last_apply_time);
	dmsc_prom_single_f(b, "dmsc_agent_start_time_seconds", "gauge",
			   "When this dmscd started, in seconds since the epoch.", a->start_time);
	return b->failed ? -ENOMEM : 0;
}
