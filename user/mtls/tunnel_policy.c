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

/* One policy from fd: taken, or why not into why. */
static int take(struct tunnel *t, int fd, unsigned int *revoked, char *why, size_t len)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy *p = calloc(1, sizeof(*p));
	char path[40];
	int err;

	if (!p) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	err = dmsc_policy_load_file(path, p, &errs);
	if (err) {
		if (errs.count)
			dmsc_policy_error_format(&errs.items[0], why, len);
		else
			snprintf(why, len, "cannot read it: %s", strerror(-err));
		dmsc_policy_errors_free(&errs);
		free(p);
		return err;
	}
	dmsc_policy_errors_free(&errs);
	*revoked = revoke_denied(t, p);
	if (t->own_policy) {
		dmsc_policy_free(t->own_policy);
		free(t->own_policy);
	}
	t->own_policy = p;
	t->policy = p;
	return 0;
}

void tn_policy_updates(struct tunnel *t)
{
	char msg[64], answer[320], why[256];
	unsigned int revoked;
	ssize_t n;
	int fd;

	for (;;) {
		n = dmsc_fd_recv(t->updates.fd, msg, sizeof(msg), &fd);
		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			/* dmscd is gone (the orphan's signal says what to
			 * do) or replaced this tunnel: no more policies */
			epoll_ctl(t->ep, EPOLL_CTL_DEL, t->updates.fd, NULL);
			close(t->updates.fd);
			t->updates.fd = -1;
			if (fd >= 0)
				close(fd);
			return;
		}
		if (strncmp(msg, "policy ", 7) || fd < 0) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		revoked = 0;
		if (take(t, fd, &revoked, why, sizeof(why)) == 0) {
			t->policy_updates[0]++;
			pr_info("tunnel: %s taken in place (%zu services); open streams kept, %u "
				"reset as no longer allowed\n",
				msg, t->policy->n_services, revoked);
			snprintf(answer, sizeof(answer), "ok %s", msg + 7);
		} else {
			t->policy_updates[1]++;
			pr_warn("tunnel: cannot take %s: %s; serving the last one\n", msg, why);
			snprintf(answer, sizeof(answer), "fail %s: %s", msg + 7, why);
		}
		close(fd);
		if (dmsc_fd_send(t->updates.fd, answer, strlen(answer), -1))
			pr_warn("tunnel: cannot answer dmscd about %s\n", msg);
	}
}
