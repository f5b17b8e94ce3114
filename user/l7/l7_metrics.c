// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7's metrics and access log: a finished request counted per route
 * and status, one access-log line, and the Prometheus text file written
 * from every worker's counters.
 */
#define _GNU_SOURCE
#include "l7_proxy.h"
#include "prom.h"

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

void fmt_peer(const struct sockaddr_storage *ss, bool port, char *buf, size_t len)
{
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)ss;

	if (ss->ss_family == AF_INET6 && port)
		dmsc_format_ip_port(AF_INET6, 0, &a6->sin6_addr, ntohs(a6->sin6_port), buf, len);
	else if (ss->ss_family == AF_INET6)
		dmsc_format_ip(AF_INET6, 0, &a6->sin6_addr, buf, len);
	else if (port)
		fmt_addr(a4->sin_addr.s_addr, a4->sin_port, buf, len);
	else
		dmsc_format_ip(AF_INET, a4->sin_addr.s_addr, NULL, buf, len);
}

static void access_log_line(const struct conn *c, uint64_t dur_ns)
{
	char line[1024], client[DMSC_ADDR_PORT_LEN], be[DMSC_ADDR_PORT_LEN] = "-", ts[40],
	    path[257];
	const struct dmsc_policy_backend *b = NULL;
	struct timespec rt;
	struct tm tm;
	size_t i, n;
	int len;

	clock_gettime(CLOCK_REALTIME, &rt);
	gmtime_r(&rt.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fmt_peer(&c->peer, true, client, sizeof(client));
	if (c->backend >= 0) {
		b = &c->svc->src->backends[c->backend];
		dmsc_format_ip_port(c->svc->src->family, b->addr, b->addr6, b->port, be,
				    sizeof(be));
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
/* A counter summed over the workers: expr names it in worker w_. */
#define SUM_WORKERS(expr)                                                                          \
	({                                                                                         \
		uint64_t sum_ = 0;                                                                 \
		for (int wi_ = 0; wi_ < opt.workers; wi_++) {                                      \
			struct worker *w_ = &workers[wi_];                                         \
			sum_ += __atomic_load_n(&(expr), __ATOMIC_RELAXED);                        \
		}                                                                                  \
		sum_;                                                                              \
	})
#define ROUTE_M(s, r) (w_->m.rm[w_->m.rm_base[s] + (r)])

void metrics_write(void)
{
	static const char *const reasons[] = {"no_handoff", "unknown_service", "over_capacity",
					      "client_limit"};
	struct dmsc_buf b = {0};
	char tmp[PATH_MAX];
	size_t s, r, k, i;
	FILE *f;

	if (!opt.metrics_file)
		return;
	dmsc_prom_family(&b, "dmsc_l7_requests_total", "counter",
			 "Requests answered by dmsc-l7, by service, route (index in the policy, "
			 "\"none\": no route matched) and status code.");
	for (s = 0; s < cfg.n_svcs; s++)
		for (r = 0; r <= cfg.svcs[s].n_routes; r++) {
			char route[16], code[16];

			snprintf(route, sizeof(route), r ? "%zu" : "none", r - 1);
			for (k = 0; k <= N_CODES; k++) {
				uint64_t sum = SUM_WORKERS(ROUTE_M(s, r).code[k]);
				struct dmsc_prom_label l[] = {
				    {"service", cfg.svcs[s].src->name}, {"route", route}, {"code", code}};

				if (!sum)
					continue;
				if (k < N_CODES)
					snprintf(code, sizeof(code), "%d", status_codes[k]);
				else
					snprintf(code, sizeof(code), "other");
				dmsc_prom_sample(&b, "dmsc_l7_requests_total", l, 3, sum);
			}
		}
	dmsc_prom_family(&b, "dmsc_l7_request_duration_seconds", "histogram",
			 "From request head parsed to response complete.");
	for (s = 0; s < cfg.n_svcs; s++)
		for (r = 0; r <= cfg.svcs[s].n_routes; r++) {
			uint64_t cum = 0;
			char route[16], le[32];
			struct dmsc_prom_label l[] = {
			    {"service", cfg.svcs[s].src->name}, {"route", route}, {"le", le}};

			snprintf(route, sizeof(route), r ? "%zu" : "none", r - 1);
			for (i = 0; i <= N_HIST; i++) {
				cum += SUM_WORKERS(ROUTE_M(s, r).hist[i]);
				if (i < N_HIST)
					snprintf(le, sizeof(le), "%g", hist_le[i]);
				else
					snprintf(le, sizeof(le), "+Inf");
				dmsc_prom_sample(&b, "dmsc_l7_request_duration_seconds_bucket", l, 3,
						 cum);
			}
			dmsc_buf_printf(&b,
					"dmsc_l7_request_duration_seconds_sum{service=\"%s\",route=\"%s\"} "
					"%.6f\n",
					cfg.svcs[s].src->name, route,
					(double)SUM_WORKERS(ROUTE_M(s, r).sum_ns) / 1e9);
			dmsc_prom_sample(&b, "dmsc_l7_request_duration_seconds_count", l, 2, cum);
			dmsc_prom_sample(&b, "dmsc_l7_retries_total", l, 2,
					 SUM_WORKERS(ROUTE_M(s, r).retries));
		}
	/* gRPC: the grpc-status each HTTP/2 stream ended with (only those seen) */
	dmsc_prom_family(&b, "dmsc_l7_grpc_responses_total", "counter",
			 "HTTP/2 streams by service, route and the grpc-status they ended with.");
	for (s = 0; s < cfg.n_svcs; s++)
		for (r = 0; r <= cfg.svcs[s].n_routes; r++)
			for (k = 0; k < DMSC_L7_GRPC_CODES; k++) {
				uint64_t sum = SUM_WORKERS(ROUTE_M(s, r).grpc[k]);
				char route[16], code[16];
				struct dmsc_prom_label l[] = {{"service", cfg.svcs[s].src->name},
							      {"route", route},
							      {"grpc_status", code}};

				if (!sum)
					continue;
				snprintf(route, sizeof(route), r ? "%zu" : "none", r - 1);
				snprintf(code, sizeof(code), "%zu", k);
				dmsc_prom_sample(&b, "dmsc_l7_grpc_responses_total", l, 3, sum);
			}
	dmsc_buf_printf(&b, "# TYPE dmsc_l7_connections_total counter\n");
	dmsc_prom_sample(&b, "dmsc_l7_connections_total", NULL, 0, SUM_WORKERS(w_->m.accepted));
	dmsc_prom_family(&b, "dmsc_l7_refused_connections_total", "counter",
			 "Closed at accept: no handoff record, a service the policy lacks, over "
			 "capacity, or a client past --max-conns-per-client (answered 503).");
	for (k = 0; k < 4; k++) {
		struct dmsc_prom_label l = {"reason", reasons[k]};

		dmsc_prom_sample(&b, "dmsc_l7_refused_connections_total", &l, 1,
				 k == 0   ? SUM_WORKERS(w_->m.no_handoff)
				 : k == 1 ? SUM_WORKERS(w_->m.unknown_service)
				 : k == 2 ? SUM_WORKERS(w_->m.over_capacity)
					  : SUM_WORKERS(w_->m.client_limit));
	}
	dmsc_prom_family(&b, "dmsc_l7_accept_pauses_total", "counter",
			 "Times a listener left epoll as accept() found no descriptor (or no "
			 "memory): the worker's --listen socket (listen) or a network namespace's "
			 "(namespace), until the next sweep.");
	for (k = 0; k < 2; k++) {
		struct dmsc_prom_label l = {"listener", k ? "namespace" : "listen"};

		dmsc_prom_sample(&b, "dmsc_l7_accept_pauses_total", &l, 1,
				 k ? SUM_WORKERS(w_->m.accept_pauses_ns)
				   : SUM_WORKERS(w_->m.accept_pauses));
	}
	l7_update_metrics(&b);
	dmsc_prom_family(&b, "dmsc_l7_h2_connections", "gauge",
			 "HTTP/2 client connections each worker serves.");
	for (i = 0; i < (size_t)opt.workers; i++) {
		char id[24];
		struct dmsc_prom_label l = {"worker", id};

		snprintf(id, sizeof(id), "%zu", i);
		dmsc_prom_sample(&b, "dmsc_l7_h2_connections", &l, 1,
				 __atomic_load_n(&workers[i].h2.n_conns, __ATOMIC_RELAXED));
	}
	dmsc_prom_family(&b, "dmsc_l7_h2_connections_moved_total", "counter",
			 "HTTP/2 client connections handed to a worker with fewer of them than "
			 "the one that accepted them.");
	dmsc_prom_sample(&b, "dmsc_l7_h2_connections_moved_total", NULL, 0,
			 SUM_WORKERS(w_->m.h2_moved));
	dmsc_prom_family(&b, "dmsc_l7_upstream_tunnel_total", "counter",
			 "Connections to backends on other hosts (of services whose mtls is not "
			 "off): through this host's tunnel, direct for want of a tunnel "
			 "(no_tunnel), or refused for want of a client identity (no_identity); "
			 "through the tunnel, ended as the backend was not reached (unreached, a "
			 "failed connect: decision 79).");
	for (k = 0; k < 4; k++) {
		static const char *const results[] = {"tunneled", "no_tunnel", "no_identity",
						      "unreached"};
		const uint64_t *c[] = {&via.tunneled, &via.no_tunnel, &via.no_identity,
				       &via.unreached};
		struct dmsc_prom_label l = {"result", results[k]};

		dmsc_prom_sample(&b, "dmsc_l7_upstream_tunnel_total", &l, 1,
				 __atomic_load_n(c[k], __ATOMIC_RELAXED));
	}
	dmsc_prom_family(&b, "dmsc_l7_namespaces", "gauge",
			 "Network namespaces the helper listens in besides its own.");
	dmsc_prom_sample(&b, "dmsc_l7_namespaces", NULL, 0, dmsc_l7_netns_count());
	snprintf(tmp, sizeof(tmp), "%s.tmp", opt.metrics_file);
	f = b.failed ? NULL : fopen(tmp, "w");
	if (f) {
		bool written = fwrite(b.p, 1, b.len, f) == b.len;

		dmsc_l7_health_metrics(f);
		if (fclose(f) == 0 && written)
			rename(tmp, opt.metrics_file);
		else
			unlink(tmp);
	}
	dmsc_buf_free(&b);
}
