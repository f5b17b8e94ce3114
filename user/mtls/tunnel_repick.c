// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Another backend for a handed-over connection whose stream never opened
 * (tunnel_repick.h, docs/design.md decision 81). The candidates are what
 * the kernel holds for the service (dmsc_svc_meta, read through the
 * health's descriptor: its backend ids and weights; dmsc_backends: where
 * each is and whether it is on another host), not the policy the tunnel
 * started with: an apply since then is what counts. The policy only says
 * which host's tunnel carries to one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "clock.h"
#include "pin_dir.h"
#include "tunnel_handoff.h"
#include "tunnel_repick.h"

void dmsc_tunnel_repick_open(struct dmsc_tunnel_repick *r, const char *pin_dir)
{
	memset(r, 0, sizeof(*r));
	r->opened = true;
	r->backends_fd = dmsc_pinned_map_try(pin_dir, DMSC_MAP_BACKENDS);
	r->backends6_fd = dmsc_pinned_map_try(pin_dir, DMSC_MAP_BACKENDS6);
}

void dmsc_tunnel_repick_close(struct dmsc_tunnel_repick *r)
{
	int *fds[] = {&r->backends_fd, &r->backends6_fd};
	size_t i;

	if (!r->opened)
		return;
	r->opened = false;
	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

static bool tried(const struct dmsc_tunnel_origin *o, uint32_t id)
{
	unsigned int i;

	for (i = 0; i < o->n_tried; i++)
		if (o->tried[i] == id)
			return true;
	return false;
}

/* A candidate: on another host, of the same service, placed by p. */
struct cand {
	uint32_t id, weight;
	union dmsc_tunnel_sa peer, dest;
};

/* Backend id as a candidate of svc_id's service, or false. */
static bool candidate(const struct dmsc_tunnel_repick *r, const struct dmsc_policy *p, bool v6,
		      uint32_t svc_id, uint32_t id, const union dmsc_tunnel_sa *skip_host,
		      struct cand *c)
{
	const struct dmsc_policy_backend *b;
	struct dmsc_backend6 b6;
	struct dmsc_backend b4;
	__u16 flags, port;

	if (v6) {
		if (r->backends6_fd < 0 || bpf_map_lookup_elem(r->backends6_fd, &id, &b6) ||
		    b6.svc_id != svc_id)
			return false;
		flags = b6.flags;
		port = b6.port;
		b = dmsc_tunnel_placed(p, AF_INET6, 0, b6.addr, ntohs(port));
		dmsc_tunnel_dest_sa(AF_INET6, 0, b6.addr, port, &c->dest);
	} else {
		if (r->backends_fd < 0 || bpf_map_lookup_elem(r->backends_fd, &id, &b4) ||
		    b4.svc_id != svc_id)
			return false;
		flags = b4.flags;
		port = b4.port;
		b = dmsc_tunnel_placed(p, AF_INET, b4.addr, NULL, ntohs(port));
		dmsc_tunnel_dest_sa(AF_INET, b4.addr, NULL, port, &c->dest);
	}
	/* on this host, the tunnel does not carry to it (the kernel does) */
	if (!(flags & DMSC_BE_F_TUNNEL) || !b)
		return false;
	dmsc_tunnel_host_sa(b, &c->peer);
	c->id = id;
	return !skip_host || !dmsc_tunnel_sa_eq(&c->peer, skip_host);
}

int dmsc_tunnel_repick(struct dmsc_tunnel_repick *r, const struct dmsc_tunnel_health *th,
		       const struct dmsc_policy *p, const struct dmsc_tunnel_hkey *failed,
		       struct dmsc_tunnel_origin *o, const union dmsc_tunnel_sa *skip_host,
		       union dmsc_tunnel_sa *peer, union dmsc_tunnel_sa *dest,
		       struct dmsc_tunnel_hkey *hk)
{
	struct dmsc_svc_meta *m;
	struct cand *c, *pick = NULL;
	uint64_t now = dmsc_now_ns(), total = 0, at;
	uint32_t i, n, k = 0, rnd;
	int err = -ENOENT;

	if (!r->opened || !th->opened || th->meta_fd < 0 || o->n_tried >= DMSC_TUNNEL_TRIES ||
	    !failed->svc_id)
		return -ENOENT;
	m = malloc(sizeof(*m));
	c = calloc(DMSC_BACKENDS_PER_SERVICE_MAX, sizeof(*c));
	if (!m || !c || bpf_map_lookup_elem(th->meta_fd, &failed->svc_id, m))
		goto out;
	n = m->n_backends < DMSC_BACKENDS_PER_SERVICE_MAX ? m->n_backends
							  : DMSC_BACKENDS_PER_SERVICE_MAX;
	for (i = 0; i < n; i++) {
		uint32_t id = m->backend_id[i];

		if (!m->weight[i] || tried(o, id) || dmsc_tunnel_health_out(th, id, now) ||
		    !candidate(r, p, failed->v6, failed->svc_id, id, skip_host, &c[k]))
			continue;
		c[k].weight = m->weight[i];
		total += c[k++].weight;
	}
	if (!k)
		goto out;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)now;
	at = rnd % total;
	for (i = 0; i < k && !pick; i++) {
		if (at < c[i].weight)
			pick = &c[i];
		else
			at -= c[i].weight;
	}
	*peer = pick->peer;
	*dest = pick->dest;
	*hk = *failed;
	hk->backend_id = pick->id;
	hk->dest = pick->dest;
	hk->via = false;
	o->tried[o->n_tried++] = pick->id;
	err = 0;
out:
	free(m);
	free(c);
	return err;
}
