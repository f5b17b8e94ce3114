// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7's metrics and access log: a finished request counted per route
 * and status, one access-log line, and the Prometheus text file written
 * from every worker's counters.
 */
#define _GNU_SOURCE
#include "l7_proxy.h"

/* ---- metrics and the access log --------------------------------------- */
static size_t code_index(int status)
{
	size_t i;

	for (i = 0; i < N_CODES; i++)
		if (status_codes[i] == status)
			return i;
	return CODE_OTHER;
}

void fmt_addr(uint32_t addr, uint16_t port_be, char *buf, size_t len)
{
	char a[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &addr, a, sizeof(a));
	snprintf(buf, len, "%s:%u", a, ntohs(port_be));
}

static void access_log_line(const struct conn *c, uint64_t dur_ns)
{
	char line[1024], client[32], be[32] = "-", ts[40], path[257];
	const struct dmsc_policy_backend *b = NULL;
	struct timespec rt;
	struct tm tm;
	size_t i, n;
	int len;

	clock_gettime(CLOCK_REALTIME, &rt);
	gmtime_r(&rt.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fmt_addr(c->peer.sin_addr.s_addr, c->peer.sin_port, client, sizeof(client));
	if (c->backend >= 0) {
		b = &c->svc->src->backends[c->backend];
		fmt_addr(b->addr, htons(b->port), be, sizeof(be));
	}
	/* the target as sent, printable ASCII only, at most 256 bytes */
	n = c->rq.url_len < 256 ? c->rq.url_len : 256;
	for (i = 0; i < n; i++) {
		char ch = c->rq.head[c->rq.url_off + i];

		path[i] = (ch > 0x20 && ch < 0x7f && ch != '"') ? ch : '?';
	}
	path[n] = '\0';
	len = snprintf(line, sizeof(line),
		       "%s.%03ldZ client=%s service=%s route=%d \"%s %s\" status=%d backend=%s "
		       "attempts=%u ms=%.3f\n",
		       ts, rt.tv_nsec / 1000000, client, c->svc->src->name, c->route,
		       http_method_str((enum http_method)c->rq.hp.method), path, c->status, be,
		       c->attempts, (double)dur_ns / 1e6);
	if (len > 0 && write(access_fd, line, (size_t)len) < 0) {
		/* a full disk must not stop the traffic */
	}
}

/* An HTTP/2 stream answered (l7_h2.h): the same families as a request. */
void h2_finished(void *worker, const struct dmsc_l7_service *svc, size_t svc_idx, int route,
		 int status, uint64_t dur, uint32_t attempts, int grpc_status)
{
	struct worker *w = worker;
	struct route_metrics *rm = &w->m.rm[w->m.rm_base[svc_idx] + (size_t)(route + 1)];
	double secs = (double)dur / 1e9;
	size_t h;

	ctr_add(&rm->code[code_index(status)], 1);
	for (h = 0; h < N_HIST && secs > hist_le[h]; h++)
		;
	ctr_add(&rm->hist[h], 1);
	ctr_add(&rm->sum_ns, dur);
	if (attempts > 1)
		ctr_add(&rm->retries, attempts - 1);
	if (grpc_status >= 0 && grpc_status < DMSC_L7_GRPC_CODES)
		ctr_add(&rm->grpc[grpc_status], 1);
	if (access_fd >= 0) {
		char line[256];
		int n = snprintf(line, sizeof(line),
				 "service=%s route=%d proto=h2 status=%d grpc_status=%d attempts=%u "
				 "ms=%.3f\n",
				 svc->src->name, route, status, grpc_status, attempts, secs * 1e3);

		if (n > 0 && write(access_fd, line, (size_t)n) < 0) {
			/* a full disk must not stop the traffic */
		}
	}
}

void request_finished(struct conn *c)
{
	struct route_metrics *rm;
	uint64_t dur = now_ns() - c->t_req;
	double secs = (double)dur / 1e9;
	size_t h;

	if (!c->svc || !c->t_req)
		return;
	rm = &c->w->m.rm[c->w->m.rm_base[c->svc_idx] + (size_t)(c->route + 1)];
	ctr_add(&rm->code[code_index(c->status)], 1);
	for (h = 0; h < N_HIST && secs > hist_le[h]; h++)
		;
	ctr_add(&rm->hist[h], 1);
	ctr_add(&rm->sum_ns, dur);
	if (c->attempts > 1)
		ctr_add(&rm->retries, c->attempts - 1);
	if (access_fd >= 0)
		access_log_line(c, dur);
	c->t_req = 0;
}

/* ---- metrics file ------------------------------------------------------------ */
void metrics_write(void)
{
	char tmp[PATH_MAX];
	FILE *f;
	size_t s, r, k, i;
	int wi;

	if (!opt.metrics_file)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", opt.metrics_file);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "# HELP dmsc_l7_requests_total Requests answered by dmsc-l7, by service, "
		   "route (index in the policy, \"none\": no route matched) and status code.\n"
		   "# TYPE dmsc_l7_requests_total counter\n");
	for (s = 0; s < cfg.n_svcs; s++)
		for (r = 0; r <= cfg.svcs[s].n_routes; r++) {
			char route[16];

			snprintf(route, sizeof(route), r ? "%zu" : "none", r - 1);
			for (k = 0; k <= N_CODES; k++) {
				uint64_t sum = 0;

				for (wi = 0; wi < opt.workers; wi++)
					sum += __atomic_load_n(
					    &workers[wi].m.rm[workers[wi].m.rm_base[s] + r].code[k],
					    __ATOMIC_RELAXED);
				if (!sum)
					continue;
				if (k < N_CODES)
					fprintf(
					    f,
					    "dmsc_l7_requests_total{service=\"%s\",route=\"%s\","
					    "code=\"%d\"} %llu\n",
					    cfg.svcs[s].src->name, route, status_codes[k],
					    (unsigned long long)sum);
				else
					fprintf(
					    f,
					    "dmsc_l7_requests_total{service=\"%s\",route=\"%s\","
					    "code=\"other\"} %llu\n",
					    cfg.svcs[s].src->name, route, (unsigned long long)sum);
			}
		}
	fprintf(f, "# HELP dmsc_l7_request_duration_seconds From request head parsed to "
		   "response complete.\n# TYPE dmsc_l7_request_duration_seconds histogram\n");
	for (s = 0; s < cfg.n_svcs; s++)
		for (r = 0; r <= cfg.svcs[s].n_routes; r++) {
			uint64_t cum = 0, sum_ns = 0, retries = 0;
			char route[16];

			snprintf(route, sizeof(route), r ? "%zu" : "none", r - 1);
			for (i = 0; i <= N_HIST; i++) {
				for (wi = 0; wi < opt.workers; wi++)
					cum += __atomic_load_n(
					    &workers[wi].m.rm[workers[wi].m.rm_base[s] + r].hist[i],
					    __ATOMIC_RELAXED);
				if (i < N_HIST)
					fprintf(f,
						"dmsc_l7_request_duration_seconds_bucket{service="
						"\"%s\","
						"route=\"%s\",le=\"%g\"} %llu\n",
						cfg.svcs[s].src->name, route, hist_le[i],
						(unsigned long long)cum);
				else
					fprintf(f,
						"dmsc_l7_request_duration_seconds_bucket{service="
						"\"%s\","
						"route=\"%s\",le=\"+Inf\"} %llu\n",
						cfg.svcs[s].src->name, route,
						(unsigned long long)cum);
			}
			for (wi = 0; wi < opt.workers; wi++) {
				struct route_metrics *m =
				    &workers[wi].m.rm[workers[wi].m.rm_base[s] + r];

				sum_ns += __atomic_load_n(&m->sum_ns, __ATOMIC_RELAXED);
				retries += __atomic_load_n(&m->retries, __ATOMIC_RELAXED);
			}
			fprintf(f,
				"dmsc_l7_request_duration_seconds_sum{service=\"%s\",route=\"%s\"} "
				"%.6f\n",
				cfg.svcs[s].src->name, route, (double)sum_ns / 1e9);
			fprintf(f,
				"dmsc_l7_request_duration_seconds_count{service=\"%s\",route=\"%"
				"s\"} %llu\n",
				cfg.svcs[s].src->name, route, (unsigned long long)cum);
			fprintf(f, "dmsc_l7_retries_total{service=\"%s\",route=\"%s\"} %llu\n",
				cfg.svcs[s].src->name, route, (unsigned long long)retries);
		}
	/* gRPC: the grpc-status each HTTP/2 stream ended with (only those seen) */
	fprintf(f, "# HELP dmsc_l7_grpc_responses_total HTTP/2 streams by service, route and the "
		   "grpc-status they ended with.\n"
		   "# TYPE dmsc_l7_grpc_responses_total counter\n");
	for (s = 0; s < cfg.n_svcs; s++)
		for (r = 0; r <= cfg.svcs[s].n_routes; r++)
			for (k = 0; k < DMSC_L7_GRPC_CODES; k++) {
				char route[16];
				uint64_t sum = 0;

				for (wi = 0; wi < opt.workers; wi++)
					sum += __atomic_load_n(
					    &workers[wi].m.rm[workers[wi].m.rm_base[s] + r].grpc[k],
					    __ATOMIC_RELAXED);
				if (!sum)
					continue;
				snprintf(route, sizeof(route), r ? "%zu" : "none", r - 1);
				fprintf(f,
					"dmsc_l7_grpc_responses_total{service=\"%s\",route=\"%s\","
					"grpc_status=\"%zu\"} %llu\n",
					cfg.svcs[s].src->name, route, k, (unsigned long long)sum);
			}
	{
		uint64_t acc = 0, noh = 0, unk = 0, over = 0, cl = 0;

		for (wi = 0; wi < opt.workers; wi++) {
			acc += __atomic_load_n(&workers[wi].m.accepted, __ATOMIC_RELAXED);
			noh += __atomic_load_n(&workers[wi].m.no_handoff, __ATOMIC_RELAXED);
			unk += __atomic_load_n(&workers[wi].m.unknown_service, __ATOMIC_RELAXED);
			over += __atomic_load_n(&workers[wi].m.over_capacity, __ATOMIC_RELAXED);
			cl += __atomic_load_n(&workers[wi].m.client_limit, __ATOMIC_RELAXED);
		}
		fprintf(f,
			"# TYPE dmsc_l7_connections_total counter\n"
			"dmsc_l7_connections_total %llu\n"
			"# HELP dmsc_l7_refused_connections_total Closed at accept: no handoff "
			"record, a service the policy lacks, over capacity, or a client past "
			"--max-conns-per-client (answered 503).\n"
			"# TYPE dmsc_l7_refused_connections_total counter\n"
			"dmsc_l7_refused_connections_total{reason=\"no_handoff\"} %llu\n"
			"dmsc_l7_refused_connections_total{reason=\"unknown_service\"} %llu\n"
			"dmsc_l7_refused_connections_total{reason=\"over_capacity\"} %llu\n"
			"dmsc_l7_refused_connections_total{reason=\"client_limit\"} %llu\n"
			"# HELP dmsc_l7_namespaces Network namespaces the helper listens in "
			"besides its own.\n"
			"# TYPE dmsc_l7_namespaces gauge\n"
			"dmsc_l7_namespaces %u\n",
			(unsigned long long)acc, (unsigned long long)noh, (unsigned long long)unk,
			(unsigned long long)over, (unsigned long long)cl, dmsc_l7_netns_count());
	}
	dmsc_l7_health_metrics(f);
	if (fclose(f) == 0)
		rename(tmp, opt.metrics_file);
	else
		unlink(tmp);
}
