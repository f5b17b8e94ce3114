/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What a worker's epoll event points at: the first member of every object
 * registered in a worker's epoll, so that the worker knows what woke it.
 */
#ifndef DMSC_L7_EP_H
#define DMSC_L7_EP_H

enum ep_kind {
	EP_LISTEN,    /* the worker's own listener (--listen) */
	EP_CLIENT,    /* a client connection */
	EP_UPSTREAM,  /* its backend connection */
	EP_POOL,      /* an idle pooled backend connection */
	EP_NS_LISTEN, /* a listener in another network namespace (l7_netns.h) */
	EP_NS_LISTEN6, /* its IPv6 twin on [::1] */
	EP_H2_CLIENT, /* an HTTP/2 client connection (l7_h2.h) */
	EP_H2_UP,     /* one of its backend connections */
	EP_H2_MOVE,   /* HTTP/2 connections another worker hands over (eventfd) */
};

struct ep {
	enum ep_kind kind;
};

#endif /* DMSC_L7_EP_H */
