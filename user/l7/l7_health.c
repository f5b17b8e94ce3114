// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7's passive health: see l7_health.h and docs/design.md decision 35.
 *
 * Per http service with health, the helper knows each backend's id (from
 * the service's entries in dmsc_services / dmsc_svc_meta / dmsc_backends,
 * looked up again every second: an apply may give a backend a new id) and
 * a mask of the backends that are out, read from dmsc_be_health and
 * dmscd's dmsc_be_verdict at most every HEALTH_READ_MS and at once after
 * its own ejection. Writes to a dmsc_be_health entry (a failure counted, a
 * run ended) are read-modify-writes under the service's lock, so the
 * workers never lose one another's counts; the helper is that entry's only
 * writer (the kernel does not count these backends, dmscd writes its
 * verdicts in their own map: decision 53).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "addr.h"
#include "apply.h"
#include "clock.h"
#include "dmsc/shared.h"
#include "health.h"
#include "l7_health.h"
#include "log.h"

#define HEALTH_READ_MS 20      /* the out mask is at most this old */
#define HEALTH_RESOLVE_MS 1000 /* backend ids are at most this old */

extern struct dmsc_l7_config cfg;

struct be {
	__u32 id;	   /* 0: not (yet) in the maps */
	bool dirty;	   /* a failure counted since the last success */
	uint64_t fail_5xx; /* failures counted, by kind */
	uint64_t fail_connect;
	uint64_t fail_timeout;
	uint64_t ejections; /* by the helper */
};

struct svc {
	pthread_mutex_t lock;
	bool on; /* the service has health */
	struct dmsc_svc_health passive;
	struct be *be; /* [src->n_backends] */
	uint64_t resolved_ns, read_ns;
	uint64_t out;	  /* bit i: backend i is out (i < 64) */
	uint32_t ejected; /* backends ejected (passive), for max_ejection_percent */
	bool panic;	  /* the last pick found every backend out */
	uint64_t panic_picks;
	uint64_t capped; /* runs completed with no room under max_ejection_percent */
};

static struct svc *svcs; /* parallel to cfg.svcs */
static int fd_health = -1, fd_verdict = -1, fd_services = -1, fd_meta = -1, fd_backends = -1;
static int fd_services6 = -1, fd_backends6 = -1;

/* The datapath maps the checks read and write. The IPv6 services' and
 * backends' (v6): opened when one of those has health. */
static const struct {
	const char *name;
	int *fd;
	bool v6;
} maps[] = {
    {DMSC_MAP_BE_HEALTH, &fd_health, false},
    {DMSC_MAP_BE_VERDICT, &fd_verdict, false},
    {DMSC_MAP_SERVICES, &fd_services, false},
    {DMSC_MAP_SVC_META, &fd_meta, false},
    {DMSC_MAP_BACKENDS, &fd_backends, false},
    {DMSC_MAP_SERVICES6, &fd_services6, true},
    {DMSC_MAP_BACKENDS6, &fd_backends6, true},
};

static int open_map(const char *pin_dir, const char *name, int *fd)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, name);
	*fd = bpf_obj_get(path);
	if (*fd < 0) {
		int err = -errno;

		pr_warn("cannot open %s: %s (health of http services needs it)\n", path,
			strerror(-err));
		return err;
	}
	return 0;
}

int dmsc_l7_health_open(const char *pin_dir)
{
	bool any = false, any6 = false;
	size_t i;
	int err;

	svcs = calloc(cfg.n_svcs + 1, sizeof(*svcs));
	if (!svcs)
		return -ENOMEM;
	for (i = 0; i < cfg.n_svcs; i++) {
		const struct dmsc_policy_service *ps = cfg.svcs[i].src;

		pthread_mutex_init(&svcs[i].lock, NULL);
		if (!ps->has_health)
			continue;
		svcs[i].be = calloc(ps->n_backends + 1, sizeof(*svcs[i].be));
		if (!svcs[i].be)
			return -ENOMEM;
		svcs[i].on = any = true;
		any6 |= ps->family == AF_INET6;
		dmsc_health_svc_config(ps, &svcs[i].passive);
	}
	if (!any)
		return 0;
	for (i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		if (maps[i].v6 && !any6)
			continue;
		err = open_map(pin_dir, maps[i].name, maps[i].fd);
		if (err)
			return err;
	}
	return 0;
}

void dmsc_l7_health_close(void)
{
	size_t i;

	for (i = 0; svcs && i < cfg.n_svcs; i++) {
		free(svcs[i].be);
		pthread_mutex_destroy(&svcs[i].lock);
	}
	free(svcs);
	svcs = NULL;
	for (i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		if (*maps[i].fd >= 0)
			close(*maps[i].fd);
		*maps[i].fd = -1;
	}
}

/* The service's id, from the entry of its family's services map; -1:
 * none (not applied yet, or by another policy). */
static int svc_id(const struct dmsc_policy_service *ps, __u32 *id)
{
	struct dmsc_svc_key key;
	struct dmsc_svc6_key key6;
	__u32 vip6[4];
	struct dmsc_svc v;

	dmsc_policy_svc_key(ps, &key);
	if (ps->family == AF_INET6) {
		memcpy(vip6, ps->vip6, sizeof(vip6));
		dmsc_svc6_key(&key, vip6, &key6);
		if (bpf_map_lookup_elem(fd_services6, &key6, &v))
			return -1;
	} else if (bpf_map_lookup_elem(fd_services, &key, &v)) {
		return -1;
	}
	*id = v.id;
	return 0;
}

/* Whether backend id is policy backend pb (address and port, its family's
 * map: dmsc_backends or dmsc_backends6). */
static bool backend_is(const struct dmsc_policy_service *ps, const struct dmsc_policy_backend *pb,
		       __u32 id)
{
	struct dmsc_backend6 b6;
	struct dmsc_backend b;

	if (ps->family == AF_INET6)
		return bpf_map_lookup_elem(fd_backends6, &id, &b6) == 0 &&
		       !memcmp(b6.addr, pb->addr6, sizeof(b6.addr)) && htons(pb->port) == b6.port;
	return bpf_map_lookup_elem(fd_backends, &id, &b) == 0 && pb->addr == b.addr &&
	       htons(pb->port) == b.port;
}

/* The ids of the service's backends, as the last apply wrote them. Under
 * s->lock. A backend not found keeps id 0: never out, never counted. */
static void resolve(const struct dmsc_l7_service *ls, struct svc *s)
{
	const struct dmsc_policy_service *ps = ls->src;
	struct dmsc_svc_meta *meta;
	__u32 id;
	size_t i, j;

	for (i = 0; i < ps->n_backends; i++)
		s->be[i].id = 0;
	meta = malloc(sizeof(*meta));
	if (!meta)
		return;
	if (svc_id(ps, &id) || bpf_map_lookup_elem(fd_meta, &id, meta))
		goto out;
	for (j = 0; j < meta->n_backends && j < DMSC_BACKENDS_PER_SERVICE_MAX; j++)
		for (i = 0; i < ps->n_backends; i++)
			if (!s->be[i].id && backend_is(ps, &ps->backends[i], meta->backend_id[j]))
				s->be[i].id = meta->backend_id[j];
out:
	free(meta);
}

/* Reads which backends are out, when the mask is older than
 * HEALTH_READ_MS (or force). Under s->lock. */
static void refresh(const struct dmsc_l7_service *ls, struct svc *s, uint64_t now, bool force)
{
	struct dmsc_be_verdict v;
	struct dmsc_be_health h;
	size_t i, n = ls->src->n_backends < 64 ? ls->src->n_backends : 64;
	uint64_t out = 0;
	uint32_t ejected = 0;

	if (!force && now - s->read_ns < HEALTH_READ_MS * DMSC_NS_PER_MS && s->read_ns)
		return;
	if (!s->resolved_ns || now - s->resolved_ns >= HEALTH_RESOLVE_MS * DMSC_NS_PER_MS) {
		resolve(ls, s);
		s->resolved_ns = now;
	}
	for (i = 0; i < n; i++) {
		if (!s->be[i].id ||
		    bpf_map_lookup_elem_flags(fd_health, &s->be[i].id, &h, BPF_F_LOCK) ||
		    bpf_map_lookup_elem_flags(fd_verdict, &s->be[i].id, &v, BPF_F_LOCK))
			continue;
		if (v.out != DMSC_HEALTH_IN || dmsc_health_ejected(&h, v.ejection_ended, now))
			out |= 1ull << i;
		ejected += dmsc_health_counts_ejected(&h, &v, now);
	}
	s->ejected = ejected;
	if (out != s->out)
		s->panic = false; /* a new episode is logged again */
	s->out = out;
	s->read_ns = now;
}

/* "198.18.1.2:8080" or "[2001:2::2]:8080", as dmscd's health lines. */
static void backend_name(const struct dmsc_policy_service *ps, size_t idx, char *buf, size_t len)
{
	const struct dmsc_policy_backend *b = &ps->backends[idx];

	dmsc_format_ip_port(ps->family, b->addr, b->addr6, b->port, buf, len);
}

int dmsc_l7_attempt_pick(const struct dmsc_l7_service *svc, int route, uint32_t r, uint64_t *tried)
{
	const struct dmsc_l7_pick *pick = route >= 0 ? &svc->routes[route].pick : &svc->pick;
	int idx = dmsc_l7_health_pick(svc, pick, r, *tried);

	if (idx >= 0 && idx < 64)
		*tried |= 1ull << idx;
	return idx;
}

int dmsc_l7_health_pick(const struct dmsc_l7_service *ls, const struct dmsc_l7_pick *pick,
			uint32_t r, uint64_t tried)
{
	struct svc *s = svcs ? &svcs[ls - cfg.svcs] : NULL;
	uint64_t out;
	int idx;

	if (!s || !s->on)
		return dmsc_l7_pick_backend(pick, r, tried);
	pthread_mutex_lock(&s->lock);
	refresh(ls, s, dmsc_now_ns(), false);
	out = s->out;
	pthread_mutex_unlock(&s->lock);
	idx = dmsc_l7_pick_backend(pick, r, tried | out);
	if (idx < 0 || idx >= 64 || !(out & (1ull << idx)))
		return idx;
	/* Every backend is tried or out: round again among those in. */
	idx = dmsc_l7_pick_backend(pick, r, out);
	if (idx >= 64 || !(out & (1ull << idx)))
		return idx;
	/* Every backend of the pick is out: panic mode, all stay in. */
	pthread_mutex_lock(&s->lock);
	s->panic_picks++;
	if (!s->panic)
		pr_warn("health: %s: every backend is out: all are kept (panic mode)\n",
			ls->src->name);
	s->panic = true;
	pthread_mutex_unlock(&s->lock);
	return dmsc_l7_pick_backend(pick, r, tried);
}

void dmsc_l7_health_result(const struct dmsc_l7_service *ls, int idx, int status)
{
	struct svc *s = svcs ? &svcs[ls - cfg.svcs] : NULL;
	bool failed = status <= 0 || status >= 500;
	int room = 1;
	struct dmsc_be_verdict v;
	struct dmsc_be_health h;
	struct be *be;
	uint64_t now;
	char ap[DMSC_ADDR_PORT_LEN];

	if (!s || !s->on || idx < 0 || (size_t)idx >= ls->src->n_backends)
		return;
	be = &s->be[idx];
	pthread_mutex_lock(&s->lock);
	if (!failed && !be->dirty)
		goto out; /* the common case: no map access */
	now = dmsc_now_ns();
	if (!s->resolved_ns)
		refresh(ls, s, now, true);
	if (!be->id || bpf_map_lookup_elem_flags(fd_health, &be->id, &h, BPF_F_LOCK))
		goto out;
	if (!failed) {
		be->dirty = false;
		if (!h.consecutive)
			goto out;
		h.consecutive = 0;
	} else {
		/* dmscd's end of an ejection (a restarted backend) */
		if (bpf_map_lookup_elem_flags(fd_verdict, &be->id, &v, BPF_F_LOCK))
			v.ejection_ended = 0;
		dmsc_health_take_end(&h, v.ejection_ended);
		be->dirty = true;
		if (status == DMSC_L7_HEALTH_TIMEOUT)
			be->fail_timeout++;
		else if (status)
			be->fail_5xx++;
		else
			be->fail_connect++;
		if (dmsc_health_would_eject(&h, 0, &s->passive, now) && s->passive.max_eject_pct &&
		    s->passive.max_eject_pct < 100) {
			refresh(ls, s, now, true); /* a fresh count of the ejected */
			room = dmsc_health_may_eject(&s->passive, s->ejected,
						     (uint32_t)ls->src->n_backends);
			if (!room)
				s->capped++;
		}
		if (dmsc_health_failed_room(&h, &s->passive, now, room)) {
			be->ejections++;
			be->dirty = false;
			backend_name(ls->src, idx, ap, sizeof(ap));
			pr_info("health: %s %s ejected after %u failures in a row (last: %s), "
				"for %.1f s (ejection %u in a row)\n",
				ls->src->name, ap, s->passive.eject_after,
				status == DMSC_L7_HEALTH_TIMEOUT ? "no response within timeout_ms"
				: status			 ? "a 5xx response"
								 : "a failed connect",
				(double)(h.ejected_until_ns - now) / 1e9, h.ejections);
		}
	}
	if (bpf_map_update_elem(fd_health, &be->id, &h, BPF_F_LOCK))
		pr_warn("health: cannot write backend %u in %s: %s\n", be->id, DMSC_MAP_BE_HEALTH,
			strerror(errno));
	else if (dmsc_health_ejected(&h, 0, now))
		refresh(ls, s, now, true); /* this worker passes over it at once */
out:
	pthread_mutex_unlock(&s->lock);
}

void dmsc_l7_health_metrics(FILE *f)
{
	char ap[DMSC_ADDR_PORT_LEN];
	size_t i, j;
	int part;

	if (!svcs)
		return;
	for (part = 0; part < 5; part++) {
		if (part == 0)
			fprintf(f, "# HELP dmsc_l7_backend_failures_total Failures dmsc-l7 counted "
				   "for passive health, by kind (5xx: a response 500-599; connect: "
				   "the backend connection failed; timeout: no response head within "
				   "the route's timeout_ms).\n"
				   "# TYPE dmsc_l7_backend_failures_total counter\n");
		else if (part == 1)
			fprintf(f, "# HELP dmsc_l7_backend_ejections_total Ejections by dmsc-l7 "
				   "after passive.consecutive_failures failures in a row.\n"
				   "# TYPE dmsc_l7_backend_ejections_total counter\n");
		else if (part == 2)
			fprintf(f, "# HELP dmsc_l7_backend_out 1 when dmsc-l7 passes over the "
				   "backend (ejected, or out by dmscd's verdict).\n"
				   "# TYPE dmsc_l7_backend_out gauge\n");
		else if (part == 4)
			fprintf(f, "# HELP dmsc_l7_health_ejections_capped_total Runs of failures "
				   "that did not eject their backend: passive.max_ejection_percent "
				   "of the backends were out.\n"
				   "# TYPE dmsc_l7_health_ejections_capped_total counter\n");
		else
			fprintf(f, "# HELP dmsc_l7_health_panic_picks_total Picks that found "
				   "every backend out and kept them all (panic mode).\n"
				   "# TYPE dmsc_l7_health_panic_picks_total counter\n");
		for (i = 0; i < cfg.n_svcs; i++) {
			const struct dmsc_policy_service *ps = cfg.svcs[i].src;
			struct svc *s = &svcs[i];

			if (!s->on)
				continue;
			pthread_mutex_lock(&s->lock);
			if (part == 3)
				fprintf(f,
					"dmsc_l7_health_panic_picks_total{service=\"%s\"} %llu\n",
					ps->name, (unsigned long long)s->panic_picks);
			if (part == 4)
				fprintf(f,
					"dmsc_l7_health_ejections_capped_total{service=\"%s\"} "
					"%llu\n",
					ps->name, (unsigned long long)s->capped);
			for (j = 0; part < 3 && j < ps->n_backends; j++) {
				struct be *be = &s->be[j];

				backend_name(ps, j, ap, sizeof(ap));
				if (part == 0)
					fprintf(f,
						"dmsc_l7_backend_failures_total{service=\"%s\","
						"backend=\"%s\",kind=\"5xx\"} %llu\n"
						"dmsc_l7_backend_failures_total{service=\"%s\","
						"backend=\"%s\",kind=\"connect\"} %llu\n"
						"dmsc_l7_backend_failures_total{service=\"%s\","
						"backend=\"%s\",kind=\"timeout\"} %llu\n",
						ps->name, ap, (unsigned long long)be->fail_5xx,
						ps->name, ap, (unsigned long long)be->fail_connect,
						ps->name, ap, (unsigned long long)be->fail_timeout);
				else if (part == 1)
					fprintf(f,
						"dmsc_l7_backend_ejections_total{service=\"%s\","
						"backend=\"%s\"} %llu\n",
						ps->name, ap, (unsigned long long)be->ejections);
				else
					fprintf(
					    f,
					    "dmsc_l7_backend_out{service=\"%s\",backend=\"%s\"} "
					    "%d\n",
					    ps->name, ap, j < 64 && (s->out >> j) & 1);
			}
			pthread_mutex_unlock(&s->lock);
		}
	}
}
