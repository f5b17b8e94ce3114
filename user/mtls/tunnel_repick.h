/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Another backend for a connection the kernel handed to the tunnel whose
 * stream never opened (docs/design.md decision 81): the backend's host
 * could not connect to it, or that host was not reached. The workload's
 * socket has not been read yet (a stream reads it only once open), so the
 * connection can go to another backend of its service, picked as the
 * kernel picks: by weight, among the backends on other hosts that neither
 * passive nor active health keeps out, at most DMSC_TUNNEL_TRIES backends
 * in all. The workload sees a connection that works, where without dmsc
 * it would have seen a refused one, and with a plain relay a reset after
 * its connect() succeeded.
 */
#ifndef DMSC_TUNNEL_REPICK_H
#define DMSC_TUNNEL_REPICK_H

#include <stdbool.h>
#include <stdint.h>

#include "policy.h"
#include "tunnel.h"
#include "tunnel_health.h"

/* backends one connection is offered to, the first pick included */
#define DMSC_TUNNEL_TRIES 3

/* What a handed-over connection keeps until its stream opens: who it
 * vouches for, and the backends tried. */
struct dmsc_tunnel_origin {
	uint32_t tried[DMSC_TUNNEL_TRIES]; /* backend ids, in order */
	unsigned int n_tried;
	char identity[DMSC_TF_ID_MAX + 1];
};

struct dmsc_tunnel_repick {
	bool opened;
	int backends_fd, backends6_fd; /* dmsc_svc_meta: the health's, borrowed */
	/* connections moved to another backend; connections reset as no
	 * other backend was left to try */
	unsigned long long moved, none_left;
};

/* Opens the maps under pin_dir; without them nothing is picked again. */
void dmsc_tunnel_repick_open(struct dmsc_tunnel_repick *r, const char *pin_dir);
void dmsc_tunnel_repick_close(struct dmsc_tunnel_repick *r);

/* Another backend of the service of failed (its kernel record's ids):
 * fills peer (its host's tunnel), dest and hk, and adds it to o->tried.
 * skip_host: a host not reached, whose backends are not picked (NULL:
 * none). 0, or -ENOENT when no backend is left (o->tried full, every
 * other one tried, out, on this host or on no host of p). */
int dmsc_tunnel_repick(struct dmsc_tunnel_repick *r, const struct dmsc_tunnel_health *th,
		       const struct dmsc_policy *p, const struct dmsc_tunnel_hkey *failed,
		       struct dmsc_tunnel_origin *o, const union dmsc_tunnel_sa *skip_host,
		       union dmsc_tunnel_sa *peer, union dmsc_tunnel_sa *dest,
		       struct dmsc_tunnel_hkey *hk);

#endif /* DMSC_TUNNEL_REPICK_H */
