/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The destination's authorization of a tunnel stream (docs/mtls.md): the
 * identity the source host vouched for against allow_from of the services
 * whose backend the stream asks for, in this host's policy.
 */
#ifndef DMSC_TUNNEL_AUTHZ_H
#define DMSC_TUNNEL_AUTHZ_H

#include <stdbool.h>
#include <stdint.h>

#include "policy.h"

enum dmsc_tunnel_verdict {
	DMSC_TV_ALLOWED,
	DMSC_TV_NOT_A_BACKEND, /* no service of the policy has this backend */
	DMSC_TV_DENIED,	       /* no service with this backend allows the identity */
};

/* An allow_from path covers identity when it names it or one of its
 * ancestors ("a/b" covers "a/b" and "a/b/c", not "a/bc"); leading and
 * trailing slashes are ignored on both. */
bool dmsc_tunnel_path_covers(const char *rule, const char *identity);

/* addr network order, port host order. A backend shared by several
 * services is reachable by an identity any of them allows; a service
 * without allow_from allows every identity; a probe's identity
 * (DMSC_TF_ID_PROBE_*) reaches every backend (docs/design.md decision 77). */
enum dmsc_tunnel_verdict dmsc_tunnel_authorize(const struct dmsc_policy *p, uint32_t addr,
					       uint16_t port, const char *identity);
/* The same for an IPv6 backend (docs/design.md decision 64) */
enum dmsc_tunnel_verdict dmsc_tunnel_authorize6(const struct dmsc_policy *p,
						const uint8_t addr6[16], uint16_t port,
						const char *identity);

#endif /* DMSC_TUNNEL_AUTHZ_H */
