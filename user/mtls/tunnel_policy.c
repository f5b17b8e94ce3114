// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A new policy taken in place (docs/design.md decision 83). dmscd sends
 * each policy it applies as a sealed memfd on a unix socket (the message
 * "policy N"); the tunnel reads it as it read its first one, and from then
 * on new streams meet it: the destination's allow_from, the hosts a
 * handoff goes to, the repick. Nothing else changes: the connections to
 * peers, their TLS sessions and every open stream go on. A stream this
 * host delivers whose identity the new policy no longer allows for its
 * backend is reset both ways, as one refused at its OPEN would have been;
 * one whose backend left the policy goes on (as a connection the kernel
 * balanced goes on after its backend is removed). Each policy is
 * answered, "ok N" or "fail N: why": dmscd replaces a tunnel that could
 * not take one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "addr.h"
#include "fd_pass.h"
#include "log.h"
#include "tunnel_int.h"

void tn_policy_free(struct tunnel *t)
{
	if (t->own_policy) {
		dmsc_policy_free(t->own_policy);
		free(t->own_policy);
	}
	t->own_policy = NULL;
	if (t->updates.fd >= 0)
		close(t->updates.fd);
	t->updates.fd = -1;
}

/* The streams delivered here that the policy p no longer allows: reset.
 * Returns how many. */
static unsigned int revoke_denied(struct tunnel *t, const struct dmsc_policy *p)
{
	static const char why[] = "the policy no longer allows its identity";
	char addr[DMSC_ADDR_PORT_LEN];
	struct stream *s, *next;
	unsigned int n = 0;
	struct conn *c;
	size_t b;

	for (c = t->conns; c; c = c->next) {
		if (!c->server || c->dead)
			continue;
		for (b = 0; b < STREAM_BUCKETS; b++)
			for (s = c->bucket[b]; s; s = next) {
				next = s->hnext;
				if (s->dead || !s->identity ||
				    tn_authorize(p, &s->dest, s->identity) != DMSC_TV_DENIED)
					continue;
				dmsc_tunnel_sa_format(&s->dest, addr, sizeof(addr));
				pr_info("tunnel: reset the stream to %s from host %s for %s: %s\n",
					addr, c->peer_host, s->identity, why);
				tn_metric_count(t, "dest", c->peer_host, s->identity, "revoked");
				tn_conn_reset(c, s->id, DMSC_TF_R_DENIED, why);
				tn_conn_flush_later(c);
				tn_stream_close(s, true);
				n++;
			}
	}
	return n;
}

/* One policy from fd: taken, or why not into why (dmsc_policy_take_fn). */
static int take(void *ctx, int fd, const char *msg, char *why, size_t len)
{
	struct tunnel *t = ctx;
	struct dmsc_policy *p = calloc(1, sizeof(*p));
	unsigned int revoked;
	int err;

	err = p ? dmsc_policy_load_fd(fd, 0, p, why, len) : -ENOMEM;
	if (err) {
		if (!p)
			snprintf(why, len, "out of memory");
		free(p);
		t->policy_updates[1]++;
		pr_warn("tunnel: cannot take %s: %s; serving the last one\n", msg, why);
		return err;
	}
	revoked = revoke_denied(t, p);
	if (t->own_policy) {
		dmsc_policy_free(t->own_policy);
		free(t->own_policy);
	}
	t->own_policy = p;
	t->policy = p;
	t->policy_updates[0]++;
	pr_info("tunnel: %s taken in place (%zu services); open streams kept, %u reset as no "
		"longer allowed\n",
		msg, p->n_services, revoked);
	return 0;
}

void tn_policy_updates(struct tunnel *t)
{
	/* (closed once dmscd is gone, the orphan's signal saying what to
	 * do, or once it replaced this tunnel: no more policies) */
	dmsc_policy_updates_serve(&t->updates.fd, take, t, "tunnel");
}
