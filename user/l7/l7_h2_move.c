// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * HTTP/2 client connections spread evenly over the workers (docs/design.md
 * decision 71). The kernel's SO_REUSEPORT hash gives each worker its
 * connections at random: 4 long-lived HTTP/2 connections land 2:2 on two
 * workers only 3 times in 8, and a worker holding 3 of them serves 3/4 of
 * the streams while the other idles. So a connection found to be HTTP/2
 * (the preface read) goes to the worker with the fewest HTTP/2 client
 * connections when that one has fewer than the worker that accepted it:
 * the socket and the bytes read so far are queued for it and an eventfd
 * wakes it. Once per connection; its streams never cross workers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "l7_proxy.h"

struct h2_moved {
	struct h2_moved *next;
	int fd;
	struct dmsc_l7_client *client;
	const struct dmsc_l7_service *svc;
	uint64_t cgroup;
	size_t svc_idx, len;
	char in[]; /* the bytes read so far: the preface and what followed */
};

/* HTTP/2 client connections worker w holds or is being handed: counted
 * when placed (under place_lock), down when one closes (l7h2_conn_close)
 * or cannot start. One counter, so that no reader sees a connection
 * twice or not at all while it passes from a queue to a session (two
 * counters, one up and then the other down, let a worker look one
 * connection fuller than it was: test_l7_h2.sh saw 20 connections served
 * 9 and 11 on a loaded machine). */
static uint32_t h2_load(struct worker *w)
{
	return __atomic_load_n(&w->h2.placed, __ATOMIC_RELAXED);
}

/* One placement at a time: each counted before the next looks. */
static pthread_mutex_t place_lock = PTHREAD_MUTEX_INITIALIZER;

void h2_unplace(struct worker *w)
{
	__atomic_sub_fetch(&w->h2.placed, 1, __ATOMIC_RELAXED);
}

int h2_move_init(struct worker *w)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->move_ep};

	w->move_ep.kind = EP_H2_MOVE;
	pthread_mutex_init(&w->move_lock, NULL);
	w->move_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->move_efd < 0)
		return -errno;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->move_efd, &ev) < 0)
		return -errno;
	return 0;
}

/* The worker that should serve a new HTTP/2 connection accepted by w: w,
 * unless another holds fewer (the first of the fewest) and has room under
 * --max-conns (per worker: w checked its own at accept). */
static struct worker *h2_move_target(struct worker *w)
{
	struct worker *best = w;
	uint32_t least = h2_load(w);
	int i;

	for (i = 0; i < opt.workers; i++) {
		uint32_t n = h2_load(&workers[i]);

		if (n < least &&
		    __atomic_load_n(&workers[i].n_conns, __ATOMIC_RELAXED) + n < opt.max_conns) {
			least = n;
			best = &workers[i];
		}
	}
	return best;
}

bool h2_move(struct worker *w, int fd, struct dmsc_l7_client *client,
	     const struct dmsc_l7_service *svc, size_t svc_idx, uint64_t cgroup, const char *in,
	     size_t len)
{
	struct worker *to;
	struct h2_moved *m;
	uint64_t one = 1;

	pthread_mutex_lock(&place_lock);
	to = draining ? w : h2_move_target(w);
	__atomic_add_fetch(&to->h2.placed, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&place_lock);
	if (to == w)
		return false;
	m = malloc(sizeof(*m) + len);
	if (!m) {
		/* served here */
		h2_unplace(to);
		__atomic_add_fetch(&w->h2.placed, 1, __ATOMIC_RELAXED);
		return false;
	}
	m->fd = fd;
	m->client = client;
	m->svc = svc;
	m->svc_idx = svc_idx;
	m->cgroup = cgroup;
	m->len = len;
	memcpy(m->in, in, len);
	pthread_mutex_lock(&to->move_lock);
	m->next = to->moved;
	to->moved = m;
	pthread_mutex_unlock(&to->move_lock);
	/* the counter cannot reach its maximum: each wake-up reads it to 0 */
	if (write(to->move_efd, &one, sizeof(one)) < 0) {
		/* nothing to do: the queue is taken at the next wake-up */
	}
	ctr_add(&w->m.h2_moved, 1);
	return true;
}

/* Takes the connections other workers queued for w: served (serve) or,
 * at exit, closed. (Nothing moves once draining is set; a connection a
 * worker queued just before, for a worker that has exited since, ends
 * with the process, which the drain ends.) */
static void h2_move_take(struct worker *w, bool serve)
{
	struct h2_moved *m, *next;
	uint64_t v;

	if (read(w->move_efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: already read, the queue tells */
	}
	pthread_mutex_lock(&w->move_lock);
	m = w->moved;
	w->moved = NULL;
	pthread_mutex_unlock(&w->move_lock);
	for (; m; m = next) {
		next = m->next;
		if (!serve || dmsc_l7_h2_start(&w->h2, m->fd, m->client, m->svc, m->svc_idx,
					       m->cgroup, m->in, m->len)) {
			close(m->fd);
			client_release(m->client);
			h2_unplace(w);
		}
		free(m);
	}
}

void h2_move_event(struct worker *w)
{
	h2_move_take(w, true);
}

void h2_move_close(struct worker *w)
{
	h2_move_take(w, false);
	if (w->move_efd >= 0)
		close(w->move_efd);
	w->move_efd = -1;
}
