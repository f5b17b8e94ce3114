// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The destination's authorization of a tunnel stream (tunnel_authz.h). */
#include <string.h>

#include "tunnel_authz.h"

static void trim(const char **s, size_t *n)
{
	while (**s == '/')
		(*s)++;
	*n = strlen(*s);
	while (*n && (*s)[*n - 1] == '/')
		(*n)--;
}

bool dmsc_tunnel_path_covers(const char *rule, const char *identity)
{
	size_t nr, ni;

	trim(&rule, &nr);
	trim(&identity, &ni);
	if (nr == 0)
		return true; /* the cgroup2 root: every workload */
	if (ni < nr || strncmp(rule, identity, nr))
		return false;
	return ni == nr || identity[nr] == '/';
}

enum dmsc_tunnel_verdict dmsc_tunnel_authorize(const struct dmsc_policy *p, uint32_t addr,
					       uint16_t port, const char *identity)
{
	bool backend = false;
	size_t s, b, r;

	for (s = 0; s < p->n_services; s++) {
		const struct dmsc_policy_service *svc = &p->services[s];

		for (b = 0; b < svc->n_backends; b++)
			if (svc->backends[b].addr == addr && svc->backends[b].port == port)
				break;
		if (b == svc->n_backends)
			continue;
		backend = true;
		if (!svc->has_allow_from)
			return DMSC_TV_ALLOWED;
		for (r = 0; r < svc->n_allow_from; r++)
			if (dmsc_tunnel_path_covers(svc->allow_from[r], identity))
				return DMSC_TV_ALLOWED;
	}
	return backend ? DMSC_TV_DENIED : DMSC_TV_NOT_A_BACKEND;
}
