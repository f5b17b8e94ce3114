// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The destination's authorization of a tunnel stream (tunnel_authz.h). */
#include <string.h>
#include <sys/socket.h>

#include "tunnel_authz.h"
#include "tunnel_frame.h"

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

/* family AF_INET: addr is 4 bytes (network order); AF_INET6: 16 */
static enum dmsc_tunnel_verdict authorize(const struct dmsc_policy *p, int family,
					  const void *addr, uint16_t port, const char *identity)
{
	bool backend = false;
	size_t s, b, r;

	for (s = 0; s < p->n_services; s++) {
		const struct dmsc_policy_service *svc = &p->services[s];

		if (svc->family != family)
			continue;
		for (b = 0; b < svc->n_backends; b++)
			if (svc->backends[b].port == port &&
			    (family == AF_INET6 ? !memcmp(svc->backends[b].addr6, addr, 16)
						: !memcmp(&svc->backends[b].addr, addr, 4)))
				break;
		if (b == svc->n_backends)
			continue;
		backend = true;
		/* The peer host's dmscd probing a backend's health: any
		 * backend of the policy, whatever its allow_from, which names
		 * workloads (the host is trusted to vouch for those already:
		 * docs/design.md decision 77) */
		if (!svc->has_allow_from || dmsc_tf_id_probe(identity))
			return DMSC_TV_ALLOWED;
		for (r = 0; r < svc->n_allow_from; r++)
			if (dmsc_tunnel_path_covers(svc->allow_from[r], identity))
				return DMSC_TV_ALLOWED;
	}
	return backend ? DMSC_TV_DENIED : DMSC_TV_NOT_A_BACKEND;
}

enum dmsc_tunnel_verdict dmsc_tunnel_authorize(const struct dmsc_policy *p, uint32_t addr,
					       uint16_t port, const char *identity)
{
	return authorize(p, AF_INET, &addr, port, identity);
}

enum dmsc_tunnel_verdict dmsc_tunnel_authorize6(const struct dmsc_policy *p,
						const uint8_t addr6[16], uint16_t port,
						const char *identity)
{
	return authorize(p, AF_INET6, addr6, port, identity);
}
