// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* dmsc-l7's way to backends on other hosts (l7_via.h). */
#include <string.h>
#include <sys/socket.h>

#include "l7_health.h"
#include "l7_via.h"

int dmsc_l7_via_open(struct dmsc_l7_via *v, const char *pin_dir, const char *host)
{
	memset(v, 0, sizeof(*v));
	v->t.conf_fd = v->t.handoff_fd = v->t.handoff6_fd = -1;
	v->host = host && host[0] ? host : NULL;
	return v->host ? dmsc_tunnel_via_open(&v->t, pin_dir) : 0;
}

void dmsc_l7_via_close(struct dmsc_l7_via *v)
{
	dmsc_tunnel_via_close(&v->t);
}

bool dmsc_l7_via_tunnel(const struct dmsc_l7_via *v, const struct dmsc_l7_service *svc, int backend)
{
	return v->host && backend >= 0 && (size_t)backend < svc->src->n_backends &&
	       dmsc_policy_backend_tunneled(svc->src, &svc->src->backends[backend], v->host);
}

static void count(uint64_t *c)
{
	__atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

int dmsc_l7_via_connect(struct dmsc_l7_via *v, int fd, const struct sockaddr_storage *to,
			socklen_t to_len, const struct dmsc_l7_service *svc, int backend,
			uint64_t cgroup)
{
	struct dmsc_tunnel_via_svc vs = {.vip = svc->vip, .vport = svc->vport};
	uint64_t *counters[] = {
	    [DMSC_VIA_TUNNELED] = &v->tunneled,
	    [DMSC_VIA_DIRECT] = &v->no_tunnel,
	    [DMSC_VIA_NO_IDENTITY] = &v->no_identity,
	};
	enum dmsc_tunnel_via_way way;
	int rc;

	if (!dmsc_l7_via_tunnel(v, svc, backend))
		return connect(fd, (const struct sockaddr *)to, to_len);
	memcpy(vs.vip6, svc->vip6, sizeof(vs.vip6));
	rc = dmsc_tunnel_via_connect(&v->t, fd, to, to_len, &vs, cgroup, &way);
	count(counters[way]);
	return rc;
}

bool dmsc_l7_via_unreached(struct dmsc_l7_via *v, int fd, const struct dmsc_l7_service *svc,
			   int backend)
{
	if (fd < 0 || !dmsc_l7_via_tunnel(v, svc, backend) || !dmsc_tunnel_via_unreached(&v->t, fd))
		return false;
	count(&v->unreached);
	dmsc_l7_health_result(svc, backend, 0);
	return true;
}
