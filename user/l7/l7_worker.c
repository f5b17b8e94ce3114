// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7's workers: the listener, accept (handoff lookup, limits), the
 * timer sweep and the per-worker epoll loop.
 */
#define _GNU_SOURCE
#include "l7_proxy.h"
#include "reuseport.h"

/* ---- accept --------------------------------------------------------------- */
/* A client past --max-conns-per-client: a 503 at once, then the close. What
 * it sent already is read first, so that the close does not turn into a
 * reset that destroys the answer (bytes that arrive later still may). */
static void refuse_busy(int fd)
{
#define BUSY_BODY "too many connections from client\n"
	static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
				   "Content-Type: text/plain\r\nContent-Length: 33\r\n"
				   "Retry-After: 1\r\nConnection: close\r\n\r\n" BUSY_BODY;
	_Static_assert(sizeof(BUSY_BODY) - 1 == 33, "Content-Length is the body's");
	char sink[4096];
	int i;

	for (i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
		;
	if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* nothing more to tell it */
	}
	shutdown(fd, SHUT_WR);
	close(fd);
}

/*
 * The service of a connection accepted on a namespace's [::1] listener
 * (docs/design.md decision 48): its dmsc_l7_handoff6 record, keyed by the
 * peer, the listener's port and the namespace's cookie; false if there is
 * none. netns: the listener's namespace's cookie, the accepted socket's
 * too (learned without SO_NETNS_COOKIE before Linux 5.14: decision 62);
 * 0, not a namespace listener's: the accepted socket's SO_NETNS_COOKIE.
 * *svc: NULL for a VIP the policy lacks. *who: the client's address in
 * the namespace's cookie's scope (--max-conns-per-client, struct
 * dmsc_l7_client_key). *cgroup: the client's (0: unknown).
 */
static bool handoff6(int fd, uint64_t netns, const struct sockaddr_in6 *peer,
		     const struct sockaddr_in6 *local, const struct dmsc_l7_service **svc,
		     struct dmsc_l7_client_key *who, uint64_t *cgroup)
{
	struct dmsc_l7_handoff6_key key;
	struct dmsc_l7_handoff6 val;
	socklen_t len = sizeof(key.netns);

	memset(&key, 0, sizeof(key));
	key.netns = netns;
	if (handoff6_fd < 0 ||
	    (!key.netns && getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &key.netns, &len) < 0))
		return false;
	memcpy(key.client_addr, &peer->sin6_addr, sizeof(key.client_addr));
	key.client_port = peer->sin6_port;
	key.helper_port = local->sin6_port;
	if (bpf_map_lookup_and_delete_elem(handoff6_fd, &key, &val) != 0 &&
	    (bpf_map_lookup_elem(handoff6_fd, &key, &val) != 0 ||
	     (bpf_map_delete_elem(handoff6_fd, &key), false)))
		return false;
	who->scope = key.netns;
	memcpy(who->addr, &peer->sin6_addr, sizeof(who->addr));
	*svc = dmsc_l7_service_find6(&cfg, (const uint8_t *)val.vip, val.vport);
	*cgroup = val.cgroup_id;
	return true;
}

/* A connection accepted on a listener of the namespace whose cookie is
 * netns (0: --listen, or unknown). */
static void accept_one(struct worker *w, int fd, uint64_t netns)
{
	struct dmsc_l7_handoff_key key;
	struct dmsc_l7_handoff val;
	struct sockaddr_storage peer_ss, local_ss;
	struct sockaddr_in *peer = (struct sockaddr_in *)&peer_ss;
	struct sockaddr_in *local = (struct sockaddr_in *)&local_ss;
	socklen_t len = sizeof(peer_ss);
	const struct dmsc_l7_service *svc;
	struct epoll_event ev;
	const struct dmsc_l7_http_limits lim = {
	    .max_header_bytes = opt.max_header_bytes,
	    .max_headers = opt.max_headers,
	    .max_target = opt.max_target,
	};
	struct dmsc_l7_client_key who = {0};
	struct dmsc_l7_client *client;
	struct conn *c;
	uint64_t cgroup = 0; /* the client's, from its record (l7_via.h) */
	int one = 1;

	if (getpeername(fd, (struct sockaddr *)&peer_ss, &len) < 0 ||
	    (len = sizeof(local_ss), getsockname(fd, (struct sockaddr *)&local_ss, &len) < 0)) {
		close(fd);
		return;
	}
	if (peer_ss.ss_family == AF_INET6) {
		if (!handoff6(fd, netns, (struct sockaddr_in6 *)&peer_ss,
			      (struct sockaddr_in6 *)&local_ss, &svc, &who, &cgroup)) {
			ctr_add(&w->m.no_handoff, 1);
			close(fd);
			return;
		}
		goto found;
	}
	memset(&key, 0, sizeof(key));
	key.client_addr = peer->sin_addr.s_addr;
	key.client_port = peer->sin_port;
	key.helper_addr = local->sin_addr.s_addr;
	key.helper_port = local->sin_port;
	if (bpf_map_lookup_and_delete_elem(handoff_fd, &key, &val) != 0 &&
	    (bpf_map_lookup_elem(handoff_fd, &key, &val) != 0 ||
	     (bpf_map_delete_elem(handoff_fd, &key), false))) {
		/* not handed over by the kernel: no service to guess */
		ctr_add(&w->m.no_handoff, 1);
		close(fd);
		return;
	}
	svc = dmsc_l7_service_find(&cfg, val.vip, val.vport);
	cgroup = val.cgroup_id;
	/* Through a namespace's own listener the client's address is one of
	 * that namespace's loopback: scoped by the listener's address. */
	if (dmsc_l7_netns_addr(local->sin_addr.s_addr))
		who.scope = DMSC_L7_SCOPE_NS4 | ntohl(local->sin_addr.s_addr);
	who.addr[10] = who.addr[11] = 0xff;
	memcpy(&who.addr[12], &peer->sin_addr, 4);
found:
	if (!svc) {
		ctr_add(&w->m.unknown_service, 1);
		close(fd);
		return;
	}
	if (w->n_conns + w->h2.n_conns >= opt.max_conns) {
		ctr_add(&w->m.over_capacity, 1);
		close(fd);
		return;
	}
	client = client_take(&who);
	if (!client) {
		ctr_add(&w->m.client_limit, 1);
		refuse_busy(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c || dmsc_l7_http_init(&c->rq, &lim, &req_hooks, c)) {
		free(c);
		close(fd);
		client_release(client);
		return;
	}
	c->counted = true;
	c->client = client;
	c->cep.kind = EP_CLIENT;
	c->uep.kind = EP_UPSTREAM;
	c->w = w;
	c->cfd = fd;
	c->ufd = -1;
	c->svc = svc;
	c->svc_idx = (size_t)(svc - cfg.svcs);
	c->cgroup = cgroup;
	if (svc->affinity)
		c->affinity_key = client_id(client);
	c->peer = peer_ss;
	c->route = -1;
	c->backend = -1;
	c->state = S_IDLE;
	c->deadline = now_ns() + (uint64_t)opt.idle_ms * 1000000;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->cev = EPOLLIN | EPOLLRDHUP;
	ev.events = c->cev;
	ev.data.ptr = &c->cep;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		dmsc_l7_http_free(&c->rq);
		free(c);
		close(fd);
		client_release(client);
		return;
	}
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	__atomic_add_fetch(&w->n_conns, 1, __ATOMIC_RELAXED);
	ctr_add(&w->m.accepted, 1);
}

/*
 * accept() on lfd failed with err. Out of descriptors or memory, the
 * level-triggered listener would wake the workers at once, for ever, while
 * nothing frees one: it leaves epoll until the next sweep (resume_accepts),
 * and its queue waits meanwhile. nsl: the namespace listener lfd is one of
 * (it leaves every worker's epoll); NULL: the worker's own --listen socket,
 * or a namespace's at the drain (closed next: nothing to pause).
 */
static void accept_pause(struct worker *w, int lfd, struct dmsc_l7_nsl *nsl, int err)
{
	static uint64_t warned_ms; /* all workers': said once a minute at most */
	uint64_t now = now_ns() / 1000000, last;
	char what[96], a[INET6_ADDRSTRLEN];

	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
		return;
	if (nsl) {
		if (!dmsc_l7_netns_pause(nsl, lfd))
			return;
		ctr_add(&w->m.accept_pauses_ns, 1);
		if (lfd == nsl->fd6)
			snprintf(a, sizeof(a), "[::1]");
		else
			inet_ntop(AF_INET, &nsl->addr, a, sizeof(a));
		snprintf(what, sizeof(what), "network namespace %llu's listener %s:%u",
			 (unsigned long long)nsl->ino, a, ntohs(opt.listen.sin_port));
	} else if (lfd == w->lfd && !w->accept_paused) {
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->lfd, NULL);
		w->accept_paused = true;
		ctr_add(&w->m.accept_pauses, 1);
		inet_ntop(AF_INET, &opt.listen.sin_addr, a, sizeof(a));
		snprintf(what, sizeof(what), "--listen %s:%u", a, ntohs(opt.listen.sin_port));
	} else {
		return;
	}
	/* a helper at its limit pauses ten times a second: one line a minute */
	last = __atomic_load_n(&warned_ms, __ATOMIC_RELAXED);
	if ((last && now - last < 60000) ||
	    !__atomic_compare_exchange_n(&warned_ms, &last, now, false, __ATOMIC_RELAXED,
					 __ATOMIC_RELAXED))
		return;
	pr_warn("accept on %s: %s: new connections wait in its queue until descriptors are "
		"free (tried again every %d ms; dmsc_l7_accept_pauses_total)\n",
		what, strerror(err), SWEEP_MS);
}

/* Paused listeners (accept_pause) back in epoll: at each sweep, as
 * connections have closed meanwhile (this worker's or another's, or other
 * processes' for ENFILE). */
static void resume_accepts(struct worker *w)
{
	if (w->accept_paused && w->listening) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->lep};

		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev) == 0)
			w->accept_paused = false;
	}
	dmsc_l7_netns_resume();
}

/* Up to 64 connections from listener lfd: the worker's own (netns 0, nsl
 * NULL) or a namespace's (its cookie, and nsl its listener; NULL at the
 * drain). Returns false once the queue is empty (or cannot be taken). */
static bool accept_batch(struct worker *w, int lfd, uint64_t netns, struct dmsc_l7_nsl *nsl)
{
	int i, fd;

	for (i = 0; i < 64; i++) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			accept_pause(w, lfd, nsl, errno);
			return false;
		}
		accept_one(w, fd, netns);
	}
	return true;
}

/* A namespace listener at the drain: what its queue holds (bounded). It
 * is out of epoll already and closes next: out of descriptors, the rest
 * of its queue goes to the next helper (dmsc_reuseport_migrate), or is
 * reset. */
static void accept_queued(void *arg, int lfd, uint64_t netns)
{
	int i;

	for (i = 0; i < 64 && accept_batch(arg, lfd, netns, NULL); i++)
		;
}

/* Namespace listeners (l7_netns.h): in every worker's epoll, one woken. */
static int netns_watch(int fd, struct ep *ep)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = ep};
	int i, err = 0;

	for (i = 0; i < opt.workers; i++)
		if (epoll_ctl(workers[i].epfd, EPOLL_CTL_ADD, fd, &ev) < 0 && errno != EEXIST &&
		    !err)
			err = -errno;
	return err;
}

static void netns_unwatch(int fd)
{
	int i;

	for (i = 0; i < opt.workers; i++)
		epoll_ctl(workers[i].epfd, EPOLL_CTL_DEL, fd, NULL);
}

const struct dmsc_l7_netns_ops netns_ops = {
    .watch = netns_watch,
    .unwatch = netns_unwatch,
};

/* ---- what the HTTP/2 code borrows (l7_h2.h) --------------------------------- */
static uint32_t h2_rnd(void *w)
{
	return rnd(w);
}

static int h2_own_socket(int fd)
{
	int err = dmsc_l7_own_mark(own_fd, fd);

	if (err)
		pr_warn("cannot mark a backend socket in %s: %s\n", DMSC_MAP_L7_OWN,
			strerror(-err));
	return err;
}

static uint64_t h2_bucket_wait(size_t svc_idx, uint64_t now)
{
	struct svc_rt *rt = &svc_rt[svc_idx];
	uint64_t wait;

	pthread_mutex_lock(&rt->lock);
	wait = dmsc_tb_take(&rt->bucket, now, rt->rate, rt->depth, 1)
		       ? 0
		       : dmsc_tb_wait_ns(&rt->bucket, rt->rate, 1);
	pthread_mutex_unlock(&rt->lock);
	return wait;
}

/* A worker's HTTP/2 environment, before the worker starts. */
void worker_h2_init(struct worker *w)
{
	w->h2 = (struct dmsc_l7_h2_env){
	    .epfd = w->epfd,
	    .worker = w,
	    .rnd = h2_rnd,
	    .own_socket = h2_own_socket,
	    .via = &via,
	    .bucket_wait = h2_bucket_wait,
	    .finished = h2_finished,
	    .release_client = client_release,
	    .client_id = client_id,
	    .default_timeout_ms = opt.default_timeout_ms,
	    .default_retries = opt.default_retries,
	    .idle_ms = opt.idle_ms,
	    .xff = (opt.forwarded & FWD_XFF) != 0,
	    .forwarded = (opt.forwarded & FWD_FORWARDED) != 0,
	};
}

static void stop_listening(struct worker *w)
{
	if (!w->listening)
		return;
	/* take what is queued already, then close: nothing is reset */
	accept_batch(w, w->lfd, 0, NULL);
	/* (the main thread stopped the namespace scanner before the drain) */
	if (w->id == 0)
		dmsc_l7_netns_close(accept_queued, w);
	if (!w->accept_paused)
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->lfd, NULL);
	close(w->lfd);
	w->lfd = -1;
	w->listening = false;
}

/* ---- timers ---------------------------------------------------------------- */
void sweep(struct worker *w, uint64_t now)
{
	struct conn *c, *next;

	for (c = w->conns; c; c = next) {
		next = c->next;
		if (c->up_deadline && now >= c->up_deadline && c->ufd >= 0) {
			if (!c->resp_started) {
				/* no answer within the route's timeout_ms: a
				 * failure of the backend for passive health */
				dmsc_l7_health_result(c->svc, c->backend, DMSC_L7_HEALTH_TIMEOUT);
				upstream_close(c, false);
				respond_local(c, 504, body_left_large(c), 0);
			} else {
				/* a response that stalled mid-way: close */
				conn_close_client(c);
			}
		} else if (c->deadline && now >= c->deadline) {
			if (c->lingering)
				conn_close_client(c);
			else if (c->state == S_HEAD)
				reject(c, 408); /* slowloris: the head took too long */
			else if (c->state == S_IDLE)
				conn_close_client(c); /* idle, or a reader that stalled */
			else if (!c->rq.req_done && !c->resp_started)
				reject(c, 408); /* a body that stalled */
			else if (!c->rq.req_done || buf_pending(&c->cout))
				conn_close_client(c);
			else
				c->deadline = 0; /* waiting on the backend: up_deadline */
		}
		/* Keep-alive connections idle for DMSC_L7_DRAIN_IDLE_MS close at the
		 * drain (one in use gets "Connection: close" with its next
		 * response, decision 84); one accepted moments before that has
		 * not sent its first request yet: it is answered (and closed
		 * after) within --drain-ms. */
		if (draining && c->cfd >= 0 && c->state == S_IDLE && c->cin_len == 0 &&
		    c->spoke && !buf_pending(&c->cout) &&
		    now - c->idle_since >= DMSC_L7_DRAIN_IDLE_MS * 1000000ull)
			conn_close_client(c);
		if (!c->dead)
			conn_step(c);
	}
	pool_expire(w, now);
}

/* ---- workers ---------------------------------------------------------------- */
int open_listener(void)
{
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&opt.listen, sizeof(opt.listen)) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	dmsc_reuseport_migrate(fd); /* a replacing helper inherits our queue */
	return fd;
}

/* The batch's events on idle pooled connections go first: one the backend
 * wrote to or closed leaves the pool before any request of the batch can
 * take it (pool_take trusts what epoll said: no system call per request). */
static void pool_events(struct worker *w, struct epoll_event *evs, int n)
{
	int i;

	for (i = 0; i < n && w->n_pool > 0; i++) {
		struct ep *e = evs[i].data.ptr;
		struct pooled *p = (struct pooled *)e;

		if (e->kind != EP_POOL || p->lent)
			continue;
		if (p->fd >= 0 && !pool_quiet(p->fd))
			pool_drop(w, p);
		evs[i].data.ptr = NULL;
	}
}

void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	uint64_t next_sweep = now_ns() + SWEEP_MS * 1000000ull, drain_end = 0;
	int i, n;

	for (;;) {
		uint64_t now;

		/* HTTP/2 output left over from the last batch: no waiting */
		n = epoll_wait(w->epfd, evs, MAX_EVENTS,
			       w->h2.dirty || w->h2.dirty_ups ? 0 : SWEEP_MS);
		pool_events(w, evs, n);
		for (i = 0; i < n; i++) {
			struct ep *e = evs[i].data.ptr;
			uint32_t ev = evs[i].events;
			struct conn *c;

			if (!e)
				continue; /* taken by pool_events */
			if (e->kind == EP_LISTEN) {
				if (!draining)
					accept_batch(w, w->lfd, 0, NULL);
				continue;
			}
			if (e->kind == EP_H2_MOVE) {
				h2_move_event(w);
				continue;
			}
			if (e->kind == EP_H2_CLIENT || e->kind == EP_H2_UP) {
				dmsc_l7_h2_event(e, ev);
				continue;
			}
			if (e->kind == EP_NS_LISTEN || e->kind == EP_NS_LISTEN6) {
				struct dmsc_l7_nsl *l =
				    e->kind == EP_NS_LISTEN
					? (struct dmsc_l7_nsl *)e
					: (struct dmsc_l7_nsl *)((char *)e -
								 offsetof(struct dmsc_l7_nsl, ep6));
				int lfd = e->kind == EP_NS_LISTEN ? l->fd : l->fd6;

				if (!draining && lfd >= 0)
					accept_batch(w, lfd, l->cookie, l);
				continue;
			}
			if (e->kind == EP_POOL) {
				struct pooled *p = (struct pooled *)e;

				/* idle now, lent when pool_events ran: the
				 * event was its request's, read by then (a close
				 * since is the next batch's) */
				if (p->fd < 0 || !p->lent)
					continue;
				/* lent: the event is its request's */
				c = p->lent;
			} else if (e->kind == EP_CLIENT) {
				c = CONTAINER(e, cep);
				if (c->dead || c->cfd < 0)
					continue;
				if (ev & (EPOLLERR | EPOLLHUP)) {
					conn_close_client(c);
				} else {
					/* recv returning 0 says the end of input */
					if (ev & (EPOLLIN | EPOLLRDHUP))
						client_read(c);
				}
			} else {
				c = CONTAINER(e, uep);
			}
			if (e->kind != EP_CLIENT) { /* c's backend connection */
				if (c->dead || c->ufd < 0)
					continue;
				if (c->connecting && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
					upstream_on_connected(c);
				if (c->ufd >= 0 && !c->connecting &&
				    (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
					upstream_read(c);
			}
			if (!c->dead)
				conn_step(c);
		}
		dmsc_l7_h2_flush(&w->h2);
		now = now_ns();
		if (draining && w->listening) {
			stop_listening(w);
			drain_end = now + (uint64_t)opt.drain_ms * 1000000;
		}
		if (now >= next_sweep || draining) {
			resume_accepts(w);
			sweep(w, now);
			dmsc_l7_h2_sweep(&w->h2, now, draining);
			next_sweep = now + SWEEP_MS * 1000000ull;
		}
		conn_reap(w);
		dmsc_l7_h2_reap(&w->h2);
		if (draining && ((w->n_conns == 0 && w->h2.n_conns == 0) || now >= drain_end))
			break;
	}
	while (w->conns)
		conn_free(w->conns);
	conn_reap(w);
	dmsc_l7_h2_close_all(&w->h2);
	h2_move_close(w);
	pool_expire(w, now_ns());
	return NULL;
}
