// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * bench-cp: the control plane's cost, on the real maps of the real BPF
 * object loaded into the running kernel (programs loaded, not attached: no
 * traffic is involved).
 *
 * For policies of 1,000, 10,000 and 100,000 services of 4 backends each it
 * measures, with dmscd's apply (dmsc_mirror_apply): (a) the first apply,
 * (b) one backend's weight changed, (c) one service added, and (d) for
 * comparison a full rewrite of every entry, as a control plane that pushes
 * everything would do. Parsing and compiling the JSON is timed apart; so is
 * dmscctl's apply (dmsc_apply, which reads the maps back first) for (b).
 *
 *   bench-cp [--sizes N,N,...] [--json FILE]
 *   bench-cp --write-policy N FILE [--weight W]   (a policy file for dmscd;
 *            service N/2's second backend gets weight W)
 *
 * Prints figures; never passes or fails on them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "dmsc/slots.h"
#include "dmsc_sock.skel.h"
#include "log.h"
#include "metrics.h"
#include "apply_mirror.h"
#include "policy.h"
#include "apply.h"

#define BACKENDS_PER_SERVICE 4
#define REPEATS 5
#define MAX_SIZES 8

/* --cold: before each timed change, walk this much memory, as dmscd's
 * JSON parse does, so the change is timed with cold caches. */
static size_t cold_bytes;
static char *cold_buf;

static void make_cold(void)
{
	size_t i;

	if (!cold_bytes)
		return;
	if (!cold_buf)
		cold_buf = malloc(cold_bytes);
	for (i = 0; cold_buf && i < cold_bytes; i += 64)
		cold_buf[i] = (char)i;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Service i: VIP 198.19.(i/256%256).(i%256), port 80 + i/65536; backend
 * k: 198.18.(i/256%256).(i%256), port 8080 + 4 * (i/65536) + k. Every
 * address stays in 198.18.0.0/15. */
static void policy_text(struct dmsc_buf *b, size_t n, size_t weight_of, unsigned weight)
{
	size_t i, k;

	dmsc_buf_printf(b, "{ \"services\": [\n");
	for (i = 0; i < n; i++) {
		unsigned hi = (unsigned)(i / 256 % 256), lo = (unsigned)(i % 256);
		unsigned page = (unsigned)(i / 65536);

		dmsc_buf_printf(
		    b,
		    "%s{ \"name\": \"svc-%zu\", \"vip\": \"198.19.%u.%u\", \"port\": %u, "
		    "\"backends\": [",
		    i ? ",\n" : "", i, hi, lo, 80 + page);
		for (k = 0; k < BACKENDS_PER_SERVICE; k++)
			dmsc_buf_printf(b,
					"%s{ \"address\": \"198.18.%u.%u\", \"port\": %zu, "
					"\"weight\": %u }",
					k ? ", " : " ", hi, lo, 8080 + 4 * page + k,
					(i == weight_of && k == 1) ? weight : 1);
		dmsc_buf_printf(b, " ] }");
	}
	dmsc_buf_printf(b, "\n] }\n");
}

struct rig {
	struct dmsc_sock *skel;
	struct dmsc_datapath dp;
};

static int rig_open(struct rig *r, unsigned max_svc, unsigned max_be)
{
	struct dmsc_install rec = {0};
	__u32 zero = 0;
	int err;

	memset(r, 0, sizeof(*r));
	r->skel = dmsc_sock__open();
	if (!r->skel)
		return -errno;
	bpf_map__set_max_entries(r->skel->maps.dmsc_services, max_svc);
	bpf_map__set_max_entries(r->skel->maps.dmsc_svc_meta, max_svc);
	bpf_map__set_max_entries(r->skel->maps.dmsc_svc_stats, max_svc);
	bpf_map__set_max_entries(r->skel->maps.dmsc_backends, max_be);
	bpf_map__set_max_entries(r->skel->maps.dmsc_be_stats, max_be);
	bpf_map__set_max_entries(r->skel->maps.dmsc_limits, max_svc);
	bpf_map__set_max_entries(r->skel->maps.dmsc_be_index, max_be);
	err = dmsc_sock__load(r->skel);
	if (err)
		return err;
	r->dp.dir_fd = -1;
	r->dp.fd[DMSC_M_SERVICES] = bpf_map__fd(r->skel->maps.dmsc_services);
	r->dp.fd[DMSC_M_BACKENDS] = bpf_map__fd(r->skel->maps.dmsc_backends);
	r->dp.fd[DMSC_M_SVC_META] = bpf_map__fd(r->skel->maps.dmsc_svc_meta);
	r->dp.fd[DMSC_M_SVC_STATS] = bpf_map__fd(r->skel->maps.dmsc_svc_stats);
	r->dp.fd[DMSC_M_BE_STATS] = bpf_map__fd(r->skel->maps.dmsc_be_stats);
	r->dp.fd[DMSC_M_REASONS] = bpf_map__fd(r->skel->maps.dmsc_reasons);
	r->dp.fd[DMSC_M_SOCK_VIP] = bpf_map__fd(r->skel->maps.dmsc_sock_vip);
	r->dp.fd[DMSC_M_INSTALL] = bpf_map__fd(r->skel->maps.dmsc_install);
	r->dp.fd[DMSC_M_LIMITS] = bpf_map__fd(r->skel->maps.dmsc_limits);
	r->dp.fd[DMSC_M_ALLOW] = bpf_map__fd(r->skel->maps.dmsc_allow);
	r->dp.fd[DMSC_M_BE_INDEX] = bpf_map__fd(r->skel->maps.dmsc_be_index);
	r->dp.max_services = max_svc;
	r->dp.max_backends = max_be;
	r->dp.nr_cpus = libbpf_num_possible_cpus();
	if (bpf_map_update_elem(r->dp.fd[DMSC_M_INSTALL], &zero, &rec, BPF_ANY))
		return -errno;
	return 0;
}

struct step {
	const char *name;
	double ms; /* median over the runs */
	double ms_max;
	size_t entries; /* of the median run */
	double prep_ms; /* compile (fingerprints) for this step */
	int runs;
};

struct size_result {
	size_t services;
	double gen_ms, parse_ms, fp_ms;
	struct step steps[5];
	size_t n_steps;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void fingerprints(const struct dmsc_policy *p, struct dmsc_svc_digest *d)
{
	dmsc_policy_digests(p, d);
}

/* One mirror apply, timed (diff + writes only). */
static int timed_apply(struct rig *r, struct dmsc_mirror *m, const struct dmsc_policy *p,
		       const struct dmsc_svc_digest *fp, double *ms, size_t *entries)
{
	struct dmsc_apply_result res;
	double t0 = now_ms();
	int err = dmsc_mirror_apply(m, &r->dp, p, fp, false, &res);

	*ms = now_ms() - t0;
	*entries = res.entries_written;
	dmsc_apply_result_free(&res);
	return err;
}

/* (d): what a control plane that pushes everything costs: compile every
 * service and write its backends, its meta and its service element. */
static int full_rewrite(struct rig *r, const struct dmsc_mirror *m, double *ms, size_t *entries)
{
	struct dmsc_svc_meta meta;
	struct dmsc_svc svc;
	struct dmsc_backend be;
	__u32 ids[DMSC_BACKENDS_PER_SERVICE_MAX], w[DMSC_BACKENDS_PER_SERVICE_MAX],
	    counts[DMSC_BACKENDS_PER_SERVICE_MAX];
	double t0 = now_ms();
	size_t i, j, n = 0;

	for (i = 0; i < m->n; i++) {
		const struct dmsc_mirror_svc *ms = &m->svcs[i];

		memset(&meta, 0, sizeof(meta));
		memset(&svc, 0, sizeof(svc));
		snprintf(meta.name, sizeof(meta.name), "%s", ms->name);
		meta.n_backends = ms->n_be;
		for (j = 0; j < ms->n_be; j++) {
			ids[j] = meta.backend_id[j] = ms->be[j].id;
			w[j] = meta.weight[j] = ms->be[j].weight;
			be = (struct dmsc_backend){
			    .addr = ms->be[j].addr, .port = ms->be[j].port, .svc_id = ms->id};
			if (bpf_map_update_elem(r->dp.fd[DMSC_M_BACKENDS], &ids[j], &be, BPF_ANY))
				return -errno;
			n++;
		}
		svc.id = ms->id;
		svc.flags = ms->flags;
		dmsc_slot_counts(w, ms->n_be, counts);
		dmsc_slot_layout(counts, ids, ms->n_be, svc.slot);
		svc.table_hash = dmsc_table_hash(svc.slot);
		if (bpf_map_update_elem(r->dp.fd[DMSC_M_SVC_META], &svc.id, &meta, BPF_ANY) ||
		    bpf_map_update_elem(r->dp.fd[DMSC_M_SERVICES], &ms->key, &svc, BPF_ANY))
			return -errno;
		n += 2;
	}
	*ms = now_ms() - t0;
	*entries = n;
	return 0;
}

static void finish_step(struct step *s, double *ms, size_t *entries, int runs)
{
	double sorted[REPEATS];
	int i, mid;

	memcpy(sorted, ms, (size_t)runs * sizeof(double));
	qsort(sorted, (size_t)runs, sizeof(double), cmp_double);
	mid = runs / 2;
	s->ms = sorted[mid];
	s->ms_max = sorted[runs - 1];
	s->runs = runs;
	for (i = 0; i < runs; i++)
		if (ms[i] == s->ms)
			s->entries = entries[i];
}

static int bench_size(size_t n, struct size_result *out)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p = {0};
	struct dmsc_mirror m = {0};
	struct dmsc_buf text = {0};
	struct rig r;
	double t0, ms[REPEATS];
	size_t entries[REPEATS], i;
	struct dmsc_svc_digest *fp = NULL;
	unsigned max_svc = 1, max_be = 1;
	int err;

	memset(out, 0, sizeof(*out));
	out->services = n;
	while (max_svc < n + REPEATS + 2)
		max_svc *= 2;
	while (max_be < (n + REPEATS + 2) * BACKENDS_PER_SERVICE)
		max_be *= 2;
	err = rig_open(&r, max_svc, max_be);
	if (err) {
		fprintf(stderr,
			"bench-cp: cannot load the BPF object (%u services, %u backends): "
			"%s\n",
			max_svc, max_be, strerror(-err));
		goto out;
	}
	t0 = now_ms();
	policy_text(&text, n, (size_t)-1, 1);
	out->gen_ms = now_ms() - t0;
	t0 = now_ms();
	err = dmsc_policy_parse(text.p, text.len, "bench", &p, &errs);
	out->parse_ms = now_ms() - t0;
	dmsc_buf_free(&text);
	if (err) {
		fprintf(stderr, "bench-cp: generated policy does not parse: %s\n",
			errs.count ? errs.items[0].message : strerror(-err));
		goto out;
	}
	/* Room for the services (c) adds. */
	p.services = realloc(p.services, (n + REPEATS) * sizeof(*p.services));
	fp = calloc(n + REPEATS, sizeof(*fp));
	if (!p.services || !fp) {
		err = -ENOMEM;
		goto out;
	}
	t0 = now_ms();
	fingerprints(&p, fp);
	out->fp_ms = now_ms() - t0;

	/* (a) the first apply, into empty maps. */
	out->steps[0].name = "first apply";
	err = timed_apply(&r, &m, &p, fp, &ms[0], &entries[0]);
	if (err)
		goto out;
	finish_step(&out->steps[0], ms, entries, 1);

	/* (b) one backend's weight, REPEATS times (a different service each). */
	out->steps[1].name = "one weight changed";
	for (i = 0; i < REPEATS; i++) {
		struct dmsc_policy_service *s = &p.services[n / 2 + i * 7 % n];

		s->backends[1].weight = 2 + (uint32_t)i;
		t0 = now_ms();
		fingerprints(&p, fp);
		out->steps[1].prep_ms += (now_ms() - t0) / REPEATS;
		make_cold();
		err = timed_apply(&r, &m, &p, fp, &ms[i], &entries[i]);
		if (err)
			goto out;
	}
	finish_step(&out->steps[1], ms, entries, REPEATS);

	/* (c) one service added at the end, REPEATS times. */
	out->steps[2].name = "one service added";
	for (i = 0; i < REPEATS; i++) {
		struct dmsc_policy_service *s = &p.services[p.n_services];
		size_t k;

		memset(s, 0, sizeof(*s));
		if (asprintf(&s->name, "added-%zu", i) < 0) {
			err = -ENOMEM;
			goto out;
		}
		s->vip = htonl(0xc613ff00u + (uint32_t)i); /* 198.19.255.0 + i */
		s->port = 9999;
		s->protocol = DMSC_POLICY_TCP;
		s->n_backends = BACKENDS_PER_SERVICE;
		s->backends = calloc(BACKENDS_PER_SERVICE, sizeof(*s->backends));
		if (!s->backends) {
			err = -ENOMEM;
			goto out;
		}
		for (k = 0; k < BACKENDS_PER_SERVICE; k++) {
			s->backends[k].addr = htonl(0xc612ff00u + (uint32_t)i);
			s->backends[k].port = (uint16_t)(9000 + k);
			s->backends[k].weight = 1;
		}
		p.n_services++;
		t0 = now_ms();
		fingerprints(&p, fp);
		out->steps[2].prep_ms += (now_ms() - t0) / REPEATS;
		err = timed_apply(&r, &m, &p, fp, &ms[i], &entries[i]);
		if (err)
			goto out;
	}
	finish_step(&out->steps[2], ms, entries, REPEATS);

	/* (d) everything written again, for comparison. */
	out->steps[3].name = "full rewrite (for comparison)";
	err = full_rewrite(&r, &m, &ms[0], &entries[0]);
	if (err)
		goto out;
	finish_step(&out->steps[3], ms, entries, 1);
	out->n_steps = 4;

	/* dmscctl's apply for (b): it reads every service back first. Its
	 * linear matching is quadratic: not run at 100,000. */
	if (n <= 10000) {
		struct dmsc_apply_result res;

		p.services[n / 3].backends[0].weight = 5;
		t0 = now_ms();
		err = dmsc_apply(&r.dp, &p, false, &res);
		ms[0] = now_ms() - t0;
		entries[0] = res.entries_written;
		dmsc_apply_result_free(&res);
		if (err)
			goto out;
		out->steps[4].name = "one weight, dmscctl apply";
		finish_step(&out->steps[4], ms, entries, 1);
		out->n_steps = 5;
	}
out:
	free(fp);
	dmsc_mirror_free(&m);
	dmsc_policy_free(&p);
	dmsc_policy_errors_free(&errs);
	dmsc_sock__destroy(r.skel);
	return err;
}

static int write_policy(size_t n, const char *file, unsigned weight)
{
	struct dmsc_buf text = {0};
	FILE *f;
	int err = 0;

	policy_text(&text, n, n / 2, weight);
	f = fopen(file, "w");
	if (!f || fwrite(text.p, 1, text.len, f) != text.len)
		err = -errno;
	if (f && fclose(f))
		err = -errno;
	dmsc_buf_free(&text);
	if (err)
		fprintf(stderr, "bench-cp: %s: %s\n", file, strerror(-err));
	return err ? 1 : 0;
}

int main(int argc, char **argv)
{
	size_t sizes[MAX_SIZES] = {1000, 10000, 100000}, n_sizes = 3, i, j;
	struct size_result res[MAX_SIZES];
	const char *json = NULL;
	FILE *f;
	int a, rc = 0;

	dmsc_log_init("bench-cp", DMSC_LOG_WARN);
	for (a = 1; a < argc; a++) {
		if (!strcmp(argv[a], "--write-policy") && a + 2 < argc) {
			unsigned w = 1;

			if (a + 4 < argc && !strcmp(argv[a + 3], "--weight"))
				w = (unsigned)strtoul(argv[a + 4], NULL, 10);
			return write_policy(strtoul(argv[a + 1], NULL, 10), argv[a + 2], w);
		} else if (!strcmp(argv[a], "--cold")) {
			cold_bytes = (size_t)512 << 20;
		} else if (!strcmp(argv[a], "--json") && a + 1 < argc) {
			json = argv[++a];
		} else if (!strcmp(argv[a], "--sizes") && a + 1 < argc) {
			char *s = argv[++a], *tok;

			for (n_sizes = 0; (tok = strsep(&s, ",")) && n_sizes < MAX_SIZES;)
				sizes[n_sizes++] = strtoul(tok, NULL, 10);
		} else {
			fprintf(stderr, "usage: bench-cp [--sizes N,N,...] [--cold] [--json FILE]\n"
					"       bench-cp --write-policy N FILE [--weight W]\n");
			return 2;
		}
	}
	if (geteuid() != 0) {
		fprintf(stderr, "bench-cp: needs root to load BPF maps\n");
		return 1;
	}
	printf("control plane, %d backends per service; apply = diff + map writes (median of "
	       "%d runs for one change)\n",
	       BACKENDS_PER_SERVICE, REPEATS);
	printf("%9s  %-30s %12s %12s %10s %16s\n", "services", "step", "apply ms", "max ms",
	       "entries", "fingerprint ms");
	for (i = 0; i < n_sizes; i++) {
		if (bench_size(sizes[i], &res[i])) {
			rc = 1;
			n_sizes = i;
			break;
		}
		for (j = 0; j < res[i].n_steps; j++) {
			const struct step *s = &res[i].steps[j];

			printf("%9zu  %-30s %12.3f %12.3f %10zu %16.1f\n", res[i].services, s->name,
			       s->ms, s->ms_max, s->entries, s->prep_ms);
		}
		printf("%9zu  %-30s parse %.0f ms, fingerprints %.1f ms (JSON text made in %.0f "
		       "ms)\n",
		       res[i].services, "(policy)", res[i].parse_ms, res[i].fp_ms, res[i].gen_ms);
		fflush(stdout);
	}
	if (json) {
		f = fopen(json, "w");
		if (!f) {
			fprintf(stderr, "bench-cp: %s: %s\n", json, strerror(errno));
			return 1;
		}
		fprintf(f, "{ \"backends_per_service\": %d, \"sizes\": [", BACKENDS_PER_SERVICE);
		for (i = 0; i < n_sizes; i++) {
			fprintf(
			    f,
			    "%s\n  { \"services\": %zu, \"parse_ms\": %.3f, \"fingerprint_ms\": "
			    "%.3f, \"steps\": [",
			    i ? "," : "", res[i].services, res[i].parse_ms, res[i].fp_ms);
			for (j = 0; j < res[i].n_steps; j++) {
				const struct step *s = &res[i].steps[j];

				fprintf(
				    f,
				    "%s\n    { \"step\": \"%s\", \"apply_ms\": %.4f, "
				    "\"apply_ms_max\": %.4f, \"runs\": %d, \"entries_written\": "
				    "%zu, \"fingerprint_ms\": %.3f }",
				    j ? "," : "", s->name, s->ms, s->ms_max, s->runs, s->entries,
				    s->prep_ms);
			}
			fprintf(f, " ] }");
		}
		fprintf(f, "\n] }\n");
		fclose(f);
	}
	return rc;
}
