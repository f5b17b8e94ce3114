// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A service's map keys from its policy entry (apply.h). Apart from
 * apply_state.c so that dmsc-l7, which looks services up by these keys,
 * links these few functions and not the loader and its objects with them.
 */
#include <arpa/inet.h>
#include <string.h>

#include "apply.h"

void dmsc_policy_svc_key(const struct dmsc_policy_service *w, struct dmsc_svc_key *k)
{
	memset(k, 0, sizeof(*k));
	k->vip = w->vip;
	k->port = htons(w->port);
	k->proto = w->protocol == DMSC_POLICY_UDP ? DMSC_PROTO_UDP : DMSC_PROTO_TCP;
}

int dmsc_svc_key_cmp(const struct dmsc_svc_key *a, const __u32 *a6, const struct dmsc_svc_key *b,
		     const __u32 *b6)
{
	int r = memcmp(a, b, sizeof(*a));

	return r ? r : memcmp(a6, b6, 4 * sizeof(__u32));
}

void dmsc_svc6_key(const struct dmsc_svc_key *k, const __u32 *vip6, struct dmsc_svc6_key *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->vip, vip6, sizeof(out->vip));
	out->port = k->port;
	out->proto = k->proto;
}
