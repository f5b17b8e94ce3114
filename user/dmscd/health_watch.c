// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's part of backend health: see health_watch.h.
 *
 * One thread owns the probes and the decisions (made every
 * DMSC_HEALTH_TICK_MS: a probe's result counts within one tick, whatever
 * the number of backends); the main loop hands it the backends of each
 * policy applied and takes back the services to apply again. Only this thread writes
 * dmsc_be_verdict; it reads the kernel's (or dmsc-l7's) dmsc_be_health and never writes it, so a
 * failure they count is never overwritten (docs/design.md decision 53). A restarted backend's
 * ejection is ended by naming it in the verdict (ejection_ended), which every reader honours and
 * the counter's writer applies to its own element.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "addr.h"
#include "health_watch.h"
#include "log.h"
#include "apply.h"
#include "pin_dir.h"

enum probe_phase {
	PROBE_IDLE,
	PROBE_CONNECTING,
	PROBE_READING, /* http: request sent, waiting for the status line */
	PROBE_OPENING, /* tcp through the tunnel: waiting for the stream's end */
};

struct dmsc_health_target {
	struct dmsc_health_svc key;
	char svc[DMSC_NAME_MAX];
	char addr_text[DMSC_ADDR_PORT_LEN];
	struct dmsc_health cfg; /* cfg.active.path points at path */
	char path[DMSC_HEALTH_PATH_MAX + 1];
	__u32 id, weight;
	int family; /* of the backend (and its service): AF_INET or AF_INET6 */
	__u32 addr; /* network order; 0 for IPv6 */
	__u32 addr6[4];
	__u16 port; /* network order */
	bool first; /* the service's first target: holds its panic state */
	bool l7;    /* an http service: dmsc-l7 counts its failures */
	/* on another host, of an mtls service: probed through this host's
	 * tunnel (docs/design.md decision 77) */
	bool tunneled;
	bool via_tunnel; /* the probe in flight went through it */
	bool detail_via; /* and the one detail speaks of */
	bool panic;
	/* The probe in flight. */
	enum probe_phase phase;
	int fd;
	int64_t next_ms, deadline_ms;
	char buf[128];
	size_t len;
	/* What the probes say. */
	bool unhealthy;
	/* A probe failed during the kernel's current ejection (of
	 * ejected_at): when the probes then pass healthy_threshold times in a
	 * row, the backend was restarted, and comes back before the ejection
	 * ends. (Probes that never failed say nothing of what the mesh's
	 * connects saw: the ejection then runs its time.) */
	__u64 ejected_at;
	bool down_in_ejection;
	__u32 ok_run, fail_run, probes;
	__s32 detail;
	__u32 out; /* enum dmsc_health_out, as last written */
};

static struct timespec mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts;
}

static __u64 mono_ns(void)
{
	struct timespec ts = mono();

	return (__u64)ts.tv_sec * 1000000000ull + (__u64)ts.tv_nsec;
}

static void probe_close(struct dmsc_health_target *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	t->phase = PROBE_IDLE;
	t->len = 0;
}

static void probe_done(struct dmsc_health_watch *w, struct dmsc_health_target *t, bool ok,
		       __s32 detail)
{
	const struct dmsc_health_active *a = &t->cfg.active;

	probe_close(t);
	t->probes++;
	pthread_mutex_lock(&w->lock);
	if (ok)
		w->stats.probes_ok++;
	else
		w->stats.probes_failed++;
	pthread_mutex_unlock(&w->lock);
	if (ok) {
		t->ok_run++;
		t->fail_run = 0;
		if (t->unhealthy && t->ok_run >= a->healthy_threshold)
			t->unhealthy = false;
		return;
	}
	t->detail = detail;
	t->detail_via = t->via_tunnel;
	t->down_in_ejection = t->ejected_at != 0;
	t->fail_run++;
	t->ok_run = 0;
	if (!t->unhealthy && t->fail_run >= a->unhealthy_threshold)
		t->unhealthy = true;
}

/* The tunnel's maps, opened at the first probe (after a failure, which
 * is warned, again once a policy is applied: a datapath reinstalled). */
static bool via_ready(struct dmsc_health_watch *w)
{
	if (w->via.conf_fd >= 0)
		return true;
	if (w->via_failed)
		return false;
	w->via_failed = dmsc_tunnel_via_open(&w->via, w->pin_dir) != 0;
	if (!w->via_failed && w->own_fd < 0)
		w->own_fd = dmsc_pinned_map_try(w->pin_dir, DMSC_MAP_L7_OWN);
	return !w->via_failed;
}

/* connect() through this host's tunnel as a probe (tunnel_via.h); the
 * tunnel's absence sends it directly, as connect4 does a workload's. */
static int probe_connect_via(struct dmsc_health_watch *w, struct dmsc_health_target *t,
			     const struct sockaddr_storage *to, socklen_t to_len)
{
	struct dmsc_tunnel_via_svc vs = {.vip = t->key.key.vip, .vport = t->key.key.port};
	enum dmsc_tunnel_via_way way;
	int rc;

	memcpy(vs.vip6, t->key.vip6, sizeof(vs.vip6));
	rc = dmsc_tunnel_via_connect(&w->via, t->fd, to, to_len, &vs,
				     t->cfg.active.type == DMSC_PROBE_TCP
					 ? DMSC_CGROUP_ID_PROBE_TCP
					 : DMSC_CGROUP_ID_PROBE_HTTP,
				     &way);
	t->via_tunnel = way == DMSC_VIA_TUNNELED;
	return rc;
}

static void probe_start(struct dmsc_health_watch *w, struct dmsc_health_target *t, int64_t now)
{
	struct sockaddr_storage to = {0};
	socklen_t to_len = sizeof(struct sockaddr_in);
	int rc;

	t->next_ms = now + t->cfg.active.interval_ms;
	t->deadline_ms = now + t->cfg.active.timeout_ms;
	t->via_tunnel = false;
	t->fd = socket(t->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->fd < 0) {
		probe_done(w, t, false, -errno);
		return;
	}
	if (t->family == AF_INET6) {
		struct sockaddr_in6 *sa6 = (struct sockaddr_in6 *)&to;

		sa6->sin6_family = AF_INET6;
		memcpy(&sa6->sin6_addr, t->addr6, sizeof(sa6->sin6_addr));
		sa6->sin6_port = t->port;
		to_len = sizeof(*sa6);
	} else {
		struct sockaddr_in *sa = (struct sockaddr_in *)&to;

		sa->sin_family = AF_INET;
		sa->sin_addr.s_addr = t->addr;
		sa->sin_port = t->port;
	}
	/* A dmscd that runs in the mesh cgroup probes as a helper does: the
	 * kernel's checks of workloads (allow_from around the VIP, decision
	 * 44) are not for it. */
	if (via_ready(w) && w->own_fd >= 0)
		dmsc_l7_own_mark(w->own_fd, t->fd);
	t->phase = PROBE_CONNECTING;
	if (t->tunneled && w->via.conf_fd >= 0)
		rc = probe_connect_via(w, t, &to, to_len);
	else
		rc = connect(t->fd, (struct sockaddr *)&to, to_len);
	if (rc && errno != EINPROGRESS)
		probe_done(w, t, false, -errno);
}

/* The connect finished: tcp is done; http sends its request. */
static void probe_connected(struct dmsc_health_watch *w, struct dmsc_health_target *t)
{
	char req[DMSC_HEALTH_PATH_MAX + 160];
	socklen_t len = sizeof(int);
	int err = 0, n;

	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
		probe_done(w, t, false, err ? -err : -errno);
		return;
	}
	if (t->cfg.active.type == DMSC_PROBE_TCP && t->via_tunnel) {
		/* connected to this host's tunnel: the backend's host says
		 * whether the backend took it (an orderly end, or a reset) */
		t->phase = PROBE_OPENING;
		return;
	}
	if (t->cfg.active.type == DMSC_PROBE_TCP) {
		probe_done(w, t, true, 0);
		return;
	}
	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: dmscd-health\r\n"
		     "Connection: close\r\n\r\n",
		     t->path, t->addr_text);
	/* A request this small fits the empty send buffer of a new socket. */
	if (send(t->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		probe_done(w, t, false, -(errno ? errno : EIO));
		return;
	}
	t->phase = PROBE_READING;
}

/* A tcp probe through the tunnel: the tunnel ends the connection in
 * order once the stream to the backend is open, with a reset when the
 * backend's host could not open it or refused it. */
static void probe_opened(struct dmsc_health_watch *w, struct dmsc_health_target *t)
{
	char c;
	ssize_t n = recv(t->fd, &c, 1, 0);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	probe_done(w, t, n >= 0, n < 0 ? -errno : 0);
}

/* "HTTP/1.1 200 ..." once the status line is in. */
static void probe_readable(struct dmsc_health_watch *w, struct dmsc_health_target *t)
{
	ssize_t n = recv(t->fd, t->buf + t->len, sizeof(t->buf) - 1 - t->len, 0);
	unsigned int status;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		probe_done(w, t, false, -errno);
		return;
	}
	t->len += (size_t)n;
	t->buf[t->len] = '\0';
	if (n > 0 && !strstr(t->buf, "\r\n") && t->len < sizeof(t->buf) - 1)
		return;
	if (sscanf(t->buf, "HTTP/1.%*1[01] %3u", &status) != 1) {
		probe_done(w, t, false, -EBADMSG); /* no status line */
		return;
	}
	probe_done(w, t, status == t->cfg.active.expected_status, (__s32)status);
}

static void describe_probe(const struct dmsc_health_target *t, char *buf, size_t len)
{
	const char *via = t->detail_via ? " through the tunnel" : "";

	if (t->detail < 0)
		snprintf(buf, len, "%s%s", strerror(-t->detail), via);
	else
		snprintf(buf, len, "HTTP status %d%s", t->detail, via);
}

static void replan(struct dmsc_health_watch *w, const struct dmsc_health_svc *k)
{
	uint64_t one = 1;
	size_t i;

	pthread_mutex_lock(&w->lock);
	for (i = 0; i < w->n_replan; i++)
		if (!memcmp(&w->replan[i], k, sizeof(*k)))
			break;
	if (i == w->n_replan) {
		if (w->n_replan == w->cap_replan) {
			size_t cap = w->cap_replan ? 2 * w->cap_replan : 16;
			struct dmsc_health_svc *v = realloc(w->replan, cap * sizeof(*v));

			if (v) {
				w->replan = v;
				w->cap_replan = cap;
			}
		}
		if (w->n_replan < w->cap_replan)
			w->replan[w->n_replan++] = *k;
	}
	w->stats.changes++;
	pthread_mutex_unlock(&w->lock);
	if (write(w->event_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_warn("health: cannot wake the main loop: %s\n", strerror(errno));
}

static void maps_close(struct dmsc_health_watch *w)
{
	if (w->health_fd >= 0)
		close(w->health_fd);
	if (w->verdict_fd >= 0)
		close(w->verdict_fd);
	w->health_fd = w->verdict_fd = -1;
}

/* Opens both maps when they are not open; 0 or -1. */
static int maps_open(struct dmsc_health_watch *w)
{
	char path[sizeof(w->pin_dir) + 64];

	if (w->health_fd >= 0 && w->verdict_fd >= 0)
		return 0;
	maps_close(w);
	snprintf(path, sizeof(path), "%s/maps/%s", w->pin_dir, DMSC_MAP_BE_HEALTH);
	w->health_fd = bpf_obj_get(path);
	snprintf(path, sizeof(path), "%s/maps/%s", w->pin_dir, DMSC_MAP_BE_VERDICT);
	w->verdict_fd = bpf_obj_get(path);
	if (w->health_fd >= 0 && w->verdict_fd >= 0)
		return 0;
	maps_close(w);
	return -1;
}

/* Backend id's counter and verdict; 0, or -1 (maps closed on a failure
 * other than ENOENT: a reinstall, the new maps are opened next time). */
static int read_both(struct dmsc_health_watch *w, __u32 id, struct dmsc_be_health *h,
		     struct dmsc_be_verdict *v)
{
	if (maps_open(w))
		return -1;
	if (!bpf_map_lookup_elem_flags(w->health_fd, &id, h, BPF_F_LOCK) &&
	    !bpf_map_lookup_elem_flags(w->verdict_fd, &id, v, BPF_F_LOCK))
		return 0;
	if (errno != ENOENT)
		maps_close(w);
	return -1;
}

/* Decides whether t is out, writes its verdict when it changed, and says
 * so. Returns whether t is out. */
static bool evaluate(struct dmsc_health_watch *w, struct dmsc_health_target *t, __u64 now_ns)
{
	struct dmsc_be_verdict v;
	struct dmsc_be_health h;
	char why[160], d[64];
	bool restarted = false;
	__u32 want, was;

	if (read_both(w, t->id, &h, &v))
		return t->out != DMSC_HEALTH_IN;
	if (!dmsc_health_ejected(&h, v.ejection_ended, now_ns)) {
		t->ejected_at = 0;
		t->down_in_ejection = false;
	} else if (h.ejected_at_ns != t->ejected_at) {
		t->ejected_at = h.ejected_at_ns; /* a new ejection */
		t->down_in_ejection = false;
	}
	if (t->ejected_at && t->cfg.has_active && t->down_in_ejection &&
	    t->ok_run >= t->cfg.active.healthy_threshold) {
		/* Restarted: the kernel's ejection ends now (its counter ends
		 * it in its own element at its next failure). */
		restarted = true;
		v.ejection_ended = t->ejected_at;
		t->ejected_at = 0;
		t->down_in_ejection = false;
	}
	if (dmsc_health_ejected(&h, v.ejection_ended, now_ns))
		want = DMSC_HEALTH_OUT_EJECTED;
	else if (t->cfg.has_active && t->unhealthy)
		want = DMSC_HEALTH_OUT_PROBE;
	else
		want = DMSC_HEALTH_IN;
	if (want == v.out && v.probe_ok == t->ok_run && v.probe_failed == t->fail_run &&
	    v.probe_detail == t->detail && v.probes == t->probes && !restarted) {
		t->out = want;
		return want != DMSC_HEALTH_IN;
	}
	was = v.out;
	if (want != was)
		v.out_since_ns = now_ns;
	v.out = want;
	v.probe_ok = t->ok_run;
	v.probe_failed = t->fail_run;
	v.probe_detail = t->detail;
	v.probes = t->probes;
	if (bpf_map_update_elem(w->verdict_fd, &t->id, &v, BPF_F_LOCK)) {
		pr_warn("health: cannot write backend %u in %s: %s\n", t->id, DMSC_MAP_BE_VERDICT,
			strerror(errno));
		return t->out != DMSC_HEALTH_IN;
	}
	/* The tables follow the map's `out`: a change of it is applied. */
	if (want == t->out && want == was)
		return want != DMSC_HEALTH_IN;
	if (want == DMSC_HEALTH_OUT_EJECTED) {
		snprintf(why, sizeof(why),
			 "ejected by %s after %u %s in a row, for %.1f s (ejection %u in a row)",
			 t->l7	       ? "dmsc-l7"
			 : t->tunneled ? "the tunnel" /* decision 78 */
				       : "the kernel",
			 t->cfg.passive.consecutive_failures,
			 t->l7 ? "failures (5xx or connect)" : "connect failures",
			 (double)(h.ejected_until_ns - h.ejected_at_ns) / 1e9, h.ejections);
	} else if (want == DMSC_HEALTH_OUT_PROBE) {
		describe_probe(t, d, sizeof(d));
		snprintf(why, sizeof(why), "%u %s probes failed in a row (last: %s)", t->fail_run,
			 dmsc_probe_type_name(t->cfg.active.type), d);
	} else if (restarted) {
		snprintf(why, sizeof(why),
			 "%u probes passed in a row after one failed: restarted, its ejection "
			 "ended",
			 t->ok_run);
	} else if (t->cfg.has_active) {
		snprintf(why, sizeof(why), "%u probes passed in a row", t->ok_run);
	} else {
		snprintf(why, sizeof(why), "its ejection is over");
	}
	pr_info("health: %s %s %s: %s\n", t->svc, t->addr_text,
		want == DMSC_HEALTH_IN ? "back in" : "out", why);
	t->out = want;
	replan(w, &t->key);
	return want != DMSC_HEALTH_IN;
}

/* Panic mode is the apply's (every backend with a weight out: all stay);
 * here it is logged and counted once per episode. */
static void evaluate_all(struct dmsc_health_watch *w)
{
	__u64 now_ns = mono_ns();
	size_t i = 0, j;

	while (i < w->n) {
		bool weighted_in = false, weighted = false;

		for (j = i; j < w->n && (j == i || !w->t[j].first); j++) {
			bool out = evaluate(w, &w->t[j], now_ns);

			if (w->t[j].weight) {
				weighted = true;
				weighted_in |= !out;
			}
		}
		if (weighted && !weighted_in && !w->t[i].panic) {
			pr_warn("health: %s: every backend is unhealthy: all are kept in the slot "
				"table (panic mode)\n",
				w->t[i].svc);
			pthread_mutex_lock(&w->lock);
			w->stats.panics++;
			pthread_mutex_unlock(&w->lock);
			w->t[i].panic = true;
		} else if (w->t[i].panic && weighted_in) {
			pr_info("health: %s: out of panic mode\n", w->t[i].svc);
			w->t[i].panic = false;
		}
		i = j;
	}
}

static bool same_backend(const struct dmsc_health_target *a, const struct dmsc_health_target *b)
{
	return !memcmp(&a->key, &b->key, sizeof(a->key)) && a->id == b->id && a->addr == b->addr &&
	       !memcmp(a->addr6, b->addr6, sizeof(a->addr6)) && a->port == b->port;
}

/* A backend no longer watched (its health removed, or the backend): its
 * `out` is cleared, so that nothing keeps it out. */
static void forget(struct dmsc_health_watch *w, struct dmsc_health_target *t)
{
	struct dmsc_be_verdict v;
	struct dmsc_be_health h;

	probe_close(t);
	if (read_both(w, t->id, &h, &v) || v.out == DMSC_HEALTH_IN)
		return;
	v.out = DMSC_HEALTH_IN;
	bpf_map_update_elem(w->verdict_fd, &t->id, &v, BPF_F_LOCK);
}

/* A backend this dmscd has not watched yet starts from what the map holds
 * (a restarted dmscd adopts the verdicts of the one before, as it adopts
 * the datapath): a backend its probes took out stays out until they pass. */
static void resume(struct dmsc_health_watch *w, struct dmsc_health_target *t)
{
	struct dmsc_be_verdict v;
	struct dmsc_be_health h;

	if (read_both(w, t->id, &h, &v))
		return;
	t->out = v.out;
	t->unhealthy = v.out == DMSC_HEALTH_OUT_PROBE;
	t->ok_run = v.probe_ok;
	t->fail_run = v.probe_failed;
	t->probes = v.probes;
	t->detail = v.probe_detail;
}

/* Takes the targets of the last policy, keeping what the probes learned of
 * each backend that stays. */
static void adopt(struct dmsc_health_watch *w)
{
	struct dmsc_health_target *next;
	size_t n, i, j;

	pthread_mutex_lock(&w->lock);
	if (!w->have_next) {
		pthread_mutex_unlock(&w->lock);
		return;
	}
	next = w->next;
	n = w->n_next;
	w->next = NULL;
	w->n_next = 0;
	w->have_next = false;
	pthread_mutex_unlock(&w->lock);
	w->via_failed = false;
	for (i = 0; i < n; i++) {
		for (j = 0; j < w->n; j++) {
			struct dmsc_health_target *old = &w->t[j];

			if (old->id == 0 || !same_backend(old, &next[i]))
				continue;
			next[i].unhealthy = old->unhealthy;
			next[i].ok_run = old->ok_run;
			next[i].fail_run = old->fail_run;
			next[i].probes = old->probes;
			next[i].detail = old->detail;
			next[i].out = old->out;
			next[i].panic = old->panic && next[i].first;
			probe_close(old);
			old->id = 0; /* carried over */
			break;
		}
		if (j == w->n)
			resume(w, &next[i]);
	}
	for (j = 0; j < w->n; j++)
		if (w->t[j].id)
			forget(w, &w->t[j]);
	free(w->t);
	w->t = next;
	w->n = n;
}

static void wake_thread(struct dmsc_health_watch *w)
{
	uint64_t one = 1;

	if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_warn("health: cannot wake its thread: %s\n", strerror(errno));
}

static void *run(void *arg)
{
	struct dmsc_health_watch *w = arg;
	struct pollfd *pfd = NULL;
	size_t *which = NULL, cap = 0;
	int64_t next_tick = 0;

	while (!w->stop) {
		int64_t now = dmsc_now_ms(), wake;
		size_t i, n_pfd = 0, in_flight = 0;
		int timeout;

		adopt(w);
		if (cap < w->n + 1) {
			free(pfd);
			free(which);
			cap = w->n + 1;
			pfd = calloc(cap, sizeof(*pfd));
			which = calloc(cap, sizeof(*which));
			if (!pfd || !which) {
				pr_warn("health: out of memory: probes stopped\n");
				break;
			}
		}
		for (i = 0; i < w->n; i++)
			in_flight += w->t[i].phase != PROBE_IDLE;
		/* pfd[0]: woken by new targets or a stop */
		pfd[n_pfd].fd = w->wake_fd;
		pfd[n_pfd].events = POLLIN;
		pfd[n_pfd].revents = 0;
		which[n_pfd++] = 0;
		wake = now + DMSC_HEALTH_TICK_MS;
		for (i = 0; i < w->n; i++) {
			struct dmsc_health_target *t = &w->t[i];

			if (!t->cfg.has_active)
				continue;
			if (t->phase == PROBE_IDLE && now >= t->next_ms &&
			    in_flight < DMSC_HEALTH_PROBES_MAX) {
				probe_start(w, t, now);
				in_flight += t->phase != PROBE_IDLE;
			}
			if (t->phase != PROBE_IDLE && now >= t->deadline_ms)
				probe_done(w, t, false, -ETIMEDOUT);
			if (t->phase == PROBE_IDLE) {
				/* Due but no room: a probe in flight ends first,
				 * and wakes the poll. */
				if (t->next_ms > now && t->next_ms < wake)
					wake = t->next_ms;
				continue;
			}
			if (t->deadline_ms < wake)
				wake = t->deadline_ms;
			pfd[n_pfd].fd = t->fd;
			pfd[n_pfd].events = t->phase == PROBE_CONNECTING ? POLLOUT : POLLIN;
			pfd[n_pfd].revents = 0;
			which[n_pfd++] = i;
		}
		if (now >= next_tick) {
			evaluate_all(w);
			next_tick = now + DMSC_HEALTH_TICK_MS;
		}
		if (next_tick < wake)
			wake = next_tick;
		timeout = (int)(wake > now ? wake - now : 0);
		if (!w->n)
			timeout = -1; /* nothing to probe or look at: asleep */
		if (poll(pfd, n_pfd, timeout) < 0 && errno != EINTR) {
			pr_warn("health: poll: %s\n", strerror(errno));
			break;
		}
		if (pfd[0].revents) {
			uint64_t v;

			if (read(w->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				pr_warn("health: eventfd: %s\n", strerror(errno));
		}
		for (i = 1; i < n_pfd; i++) {
			struct dmsc_health_target *t = &w->t[which[i]];

			if (!pfd[i].revents)
				continue;
			if (t->phase == PROBE_CONNECTING)
				probe_connected(w, t);
			else if (t->phase == PROBE_READING)
				probe_readable(w, t);
			else if (t->phase == PROBE_OPENING)
				probe_opened(w, t);
		}
	}
	free(pfd);
	free(which);
	return NULL;
}

int dmsc_health_watch_start(struct dmsc_health_watch *w, const char *pin_dir)
{
	int err;

	memset(w, 0, sizeof(*w));
	w->health_fd = w->verdict_fd = -1;
	w->via.conf_fd = w->via.handoff_fd = w->via.handoff6_fd = w->own_fd = -1;
	snprintf(w->pin_dir, sizeof(w->pin_dir), "%s", pin_dir);
	w->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->event_fd < 0 || w->wake_fd < 0) {
		err = -errno;
		pr_warn("health: eventfd: %s\n", strerror(-err));
		if (w->event_fd >= 0)
			close(w->event_fd);
		if (w->wake_fd >= 0)
			close(w->wake_fd);
		return err;
	}
	pthread_mutex_init(&w->lock, NULL);
	err = -pthread_create(&w->thread, NULL, run, w);
	if (err) {
		pr_warn("health: cannot start its thread: %s\n", strerror(-err));
		close(w->event_fd);
		close(w->wake_fd);
		w->event_fd = -1;
		w->wake_fd = -1;
		return err;
	}
	w->running = true;
	return 0;
}

void dmsc_health_watch_stop(struct dmsc_health_watch *w)
{
	size_t i;

	if (!w->running)
		return;
	w->stop = true;
	wake_thread(w);
	pthread_join(w->thread, NULL);
	w->running = false;
	for (i = 0; i < w->n; i++)
		probe_close(&w->t[i]);
	free(w->t);
	free(w->next);
	free(w->replan);
	maps_close(w);
	dmsc_tunnel_via_close(&w->via);
	if (w->own_fd >= 0)
		close(w->own_fd);
	close(w->event_fd);
	close(w->wake_fd);
	pthread_mutex_destroy(&w->lock);
}

int dmsc_health_watch_fd(const struct dmsc_health_watch *w)
{
	return w->running ? w->event_fd : -1;
}

int dmsc_health_watch_set(struct dmsc_health_watch *w, const struct dmsc_policy *p,
			  const struct dmsc_mirror *m)
{
	struct dmsc_health_target *v = NULL;
	size_t n = 0, cap = 0, i, j, k;
	int64_t now = dmsc_now_ms();

	if (!w->running)
		return 0;
	for (i = 0; i < p->n_services; i++) {
		const struct dmsc_policy_service *s = &p->services[i];
		const struct dmsc_mirror_svc *ms;
		struct dmsc_svc_key key;

		if (!s->has_health)
			continue;
		dmsc_policy_svc_key(s, &key);
		ms = dmsc_mirror_find(m, &key, (const __u32 *)s->vip6);
		if (!ms)
			continue;
		for (j = 0; j < s->n_backends; j++) {
			struct dmsc_health_target *t;

			if (n == cap) {
				size_t c = cap ? 2 * cap : 16;
				struct dmsc_health_target *nv = realloc(v, c * sizeof(*nv));

				if (!nv) {
					free(v);
					return -ENOMEM;
				}
				v = nv;
				cap = c;
			}
			t = &v[n];
			memset(t, 0, sizeof(*t));
			t->key.key = key;
			memcpy(t->key.vip6, s->vip6, sizeof(t->key.vip6));
			snprintf(t->svc, sizeof(t->svc), "%s", s->name);
			t->cfg = s->health;
			t->cfg.active.path = NULL;
			if (s->health.active.path)
				snprintf(t->path, sizeof(t->path), "%s", s->health.active.path);
			t->family = s->family;
			t->addr = s->backends[j].addr;
			memcpy(t->addr6, s->backends[j].addr6, sizeof(t->addr6));
			t->port = htons(s->backends[j].port);
			t->weight = s->backends[j].weight;
			t->l7 = s->protocol == DMSC_POLICY_HTTP;
			t->tunneled =
			    dmsc_policy_backend_tunneled(s, &s->backends[j], dmsc_apply_host());
			dmsc_format_ip_port(t->family, t->addr, t->addr6, ntohs(t->port),
					    t->addr_text, sizeof(t->addr_text));
			t->fd = -1;
			t->next_ms = now;
			for (k = 0; k < ms->n_be; k++)
				if (ms->be[k].addr == t->addr && ms->be[k].port == t->port &&
				    !memcmp(dmsc_mirror_be6(ms, k), t->addr6, sizeof(t->addr6)))
					t->id = ms->be[k].id;
			if (t->id)
				n++;
		}
	}
	/* Every service's first target holds its panic state. */
	for (i = 0; i < n; i++)
		v[i].first = i == 0 || memcmp(&v[i].key, &v[i - 1].key, sizeof(v[i].key)) != 0;
	if (!n && !w->n_set) {
		free(v); /* none before, none now: the thread sleeps on */
		return 0;
	}
	pthread_mutex_lock(&w->lock);
	free(w->next);
	w->next = v;
	w->n_next = n;
	w->have_next = true;
	pthread_mutex_unlock(&w->lock);
	w->n_set = n;
	wake_thread(w);
	return 0;
}

size_t dmsc_health_watch_take(struct dmsc_health_watch *w, struct dmsc_mirror *m)
{
	uint64_t v;
	size_t i, n;

	if (read(w->event_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		pr_warn("health: eventfd: %s\n", strerror(errno));
	pthread_mutex_lock(&w->lock);
	n = w->n_replan;
	for (i = 0; i < n; i++)
		dmsc_mirror_replan(m, &w->replan[i].key, w->replan[i].vip6);
	w->n_replan = 0;
	pthread_mutex_unlock(&w->lock);
	return n;
}

void dmsc_health_watch_stats(struct dmsc_health_watch *w, struct dmsc_health_stats *out)
{
	pthread_mutex_lock(&w->lock);
	*out = w->stats;
	pthread_mutex_unlock(&w->lock);
}
