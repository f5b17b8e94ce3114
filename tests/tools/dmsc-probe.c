// SPDX-License-Identifier: GPL-2.0
/*
 * dmsc-probe: the client side of the kernel tests.
 *
 * Count mode:
 *   dmsc-probe --connect ADDR:PORT --count N [--parallel P] [--timeout-ms T]
 *              [--max-seconds S] [--hold-ms H] [--rst] [--json]
 * opens N connections, P at a time. For each one it records whether
 * getpeername() reports exactly ADDR:PORT (a transparent load balancer must
 * answer with the VIP, not the backend) and reads the first line the server
 * sends (dmsc-testsrv --mode id sends its name), counting connections per name
 * and failures per reason (an errno name such as ECONNREFUSED, or one of the
 * probe's own reasons listed in usage()).
 *
 * Hold mode:
 *   dmsc-probe --connect ADDR:PORT --hold-seconds S [--interval-ms I]
 *              [--stop-file F] [--timeout-ms T] [--max-seconds S] [--json]
 * keeps ONE connection for S seconds and every I ms sends "ping K\n" and
 * expects it echoed back, to show that an established connection survives a
 * change of weights. Exits 1 when the connection broke. With --stop-file the
 * hold ends early, as held, once F exists (looked for between exchanges): a
 * test ends it when what it waited for has happened.
 *
 * Exit codes: 0 ran (count mode: even if connects failed), 1 hold failed or an
 * internal error, 2 usage error. Plain libc, no dependencies.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "tool_args.h"

#define NAME_LINE_MAX 256 /* a first line longer than this is an error */
#define MAX_DISTINCT 256  /* distinct backend names / error reasons kept */
#define OTHER_KEY "(other)"
#define MAX_COUNT 10000000UL
#define MAX_PARALLEL 10000UL
#define MAX_TIMEOUT_MS 600000UL
#define MAX_SECONDS_LIMIT 86400UL
#define MAX_HOLD_MS 3600000UL
#define DEFAULT_TIMEOUT_MS 2000UL
#define DEFAULT_MAX_SECONDS 60UL
#define DEFAULT_INTERVAL_MS 100UL
#define HOLD_GRACE_SECONDS 30UL /* hold mode: default --max-seconds is hold + this */

/* Reasons that are not errnos. */
#define REASON_EOF "EOF" /* server closed before sending a full line */
#define REASON_LINE_TOO_LONG "LINE_TOO_LONG"
#define REASON_READ_TIMEOUT "READ_TIMEOUT" /* connected, no line within --timeout-ms */
#define REASON_MAX_SECONDS "MAX_SECONDS"   /* still in progress when --max-seconds ran out */
#define REASON_ECHO_MISMATCH "ECHO_MISMATCH"

struct counter {
	char key[NAME_LINE_MAX];
	unsigned long n;
};

struct tally {
	struct counter items[MAX_DISTINCT + 1]; /* the last one is OTHER_KEY */
	int len;
};

enum slot_state { SLOT_IDLE, SLOT_CONNECTING, SLOT_READING, SLOT_HOLDING };

struct slot {
	enum slot_state state;
	int fd;
	int64_t deadline_ms;
	size_t line_len;
	char line[NAME_LINE_MAX];
};

struct opts {
	struct sockaddr_in target;
	unsigned long count, parallel, timeout_ms, max_seconds, hold_ms;
	unsigned long hold_seconds, interval_ms;
	const char *stop_file;
	bool hold, max_seconds_set, json, rst;
};

struct results {
	unsigned long connections, ok, failed, peer_is_target;
	struct tally backends, errors;
	bool time_limit_hit;
	int64_t elapsed_ms;
};

/* The errors a connect() through dmsc can plausibly give, and a few more. */
/* clang-format off */
#define ERRNO_NAME(e) { e, #e }
/* clang-format on */
static const struct {
	int err;
	const char *name;
} errno_names[] = {
    ERRNO_NAME(ECONNREFUSED), ERRNO_NAME(ECONNRESET),	 ERRNO_NAME(ECONNABORTED),
    ERRNO_NAME(ETIMEDOUT),    ERRNO_NAME(ENETUNREACH),	 ERRNO_NAME(EHOSTUNREACH),
    ERRNO_NAME(ENETDOWN),     ERRNO_NAME(EHOSTDOWN),	 ERRNO_NAME(EPERM),
    ERRNO_NAME(EACCES),	      ERRNO_NAME(EADDRNOTAVAIL), ERRNO_NAME(EADDRINUSE),
    ERRNO_NAME(EAFNOSUPPORT), ERRNO_NAME(EINVAL),	 ERRNO_NAME(EMFILE),
    ERRNO_NAME(ENFILE),	      ERRNO_NAME(ENOBUFS),	 ERRNO_NAME(ENOMEM),
    ERRNO_NAME(EPIPE),	      ERRNO_NAME(EAGAIN),	 ERRNO_NAME(EINTR),
    ERRNO_NAME(ENOTCONN),     ERRNO_NAME(EPROTO),	 ERRNO_NAME(ENOPROTOOPT),
    ERRNO_NAME(EOPNOTSUPP),   ERRNO_NAME(ENOENT),	 ERRNO_NAME(ENOSPC),
    ERRNO_NAME(E2BIG),
};

static const char *errno_name(int e)
{
	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
		if (errno_names[i].err == e)
			return errno_names[i].name;
	}
	return NULL;
}

static const char *reason_of_errno(int e, char *buf, size_t len)
{
	const char *n = errno_name(e);

	if (n)
		return n;
	snprintf(buf, len, "ERRNO_%d", e);
	return buf;
}

static void tally_add(struct tally *t, const char *key)
{
	int i;

	for (i = 0; i < t->len; i++) {
		if (!strcmp(t->items[i].key, key)) {
			t->items[i].n++;
			return;
		}
	}
	if (t->len < MAX_DISTINCT) {
		snprintf(t->items[t->len].key, sizeof(t->items[t->len].key), "%s", key);
		t->items[t->len].n = 1;
		t->len++;
		return;
	}
	/* slot MAX_DISTINCT collects everything past the table */
	snprintf(t->items[MAX_DISTINCT].key, sizeof(t->items[MAX_DISTINCT].key), OTHER_KEY);
	t->items[MAX_DISTINCT].n++;
}

static int tally_cmp(const void *a, const void *b)
{
	return strcmp(((const struct counter *)a)->key, ((const struct counter *)b)->key);
}

/* Sorted by key; "(other)", if used, comes last. */
static int tally_finish(struct tally *t)
{
	qsort(t->items, (size_t)t->len, sizeof(t->items[0]), tally_cmp);
	return t->items[MAX_DISTINCT].n ? t->len + 1 : t->len;
}

static const struct counter *tally_at(const struct tally *t, int i)
{
	return i < t->len ? &t->items[i] : &t->items[MAX_DISTINCT];
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* Text output keeps one record per line with space-separated fields. */
static void text_word(FILE *f, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		fputc(*p <= ' ' || *p >= 0x7f ? '?' : *p, f);
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: dmsc-probe --connect ADDR:PORT --count N [--parallel P] [--timeout-ms T]\n"
	    "                  [--max-seconds S] [--hold-ms H] [--rst] [--json]\n"
	    "       dmsc-probe --connect ADDR:PORT [--hold] --hold-seconds S [--interval-ms I]\n"
	    "                  [--stop-file F] [--timeout-ms T] [--max-seconds S] [--json]\n"
	    "  --count N        connections to make (1..%lu)\n"
	    "  --parallel P     connections in flight at once (1..%lu, default 1)\n"
	    "  --timeout-ms T   limit for connect, and again for each read (default %lu)\n"
	    "  --max-seconds S  limit for the whole run (default %lu; hold: hold + %lu)\n"
	    "  --hold-ms H      keep each connection open H ms after its first line\n"
	    "  --rst            close with RST (SO_LINGER 0): no TIME_WAIT, for huge counts\n"
	    "  --hold-seconds S one connection, ping/echo every --interval-ms (default %lu)\n"
	    "  --stop-file F    hold: end as held once file F exists (between exchanges)\n"
	    "  --json           one JSON object instead of text\n"
	    "failure reasons: errno names (ECONNREFUSED, EPERM, ENETUNREACH, ETIMEDOUT...),\n"
	    "  EOF, LINE_TOO_LONG, READ_TIMEOUT, MAX_SECONDS, ECHO_MISMATCH\n"
	    "exit: 0 ran, 1 hold broke or internal error, 2 usage\n",
	    MAX_COUNT, MAX_PARALLEL, DEFAULT_TIMEOUT_MS, DEFAULT_MAX_SECONDS, HOLD_GRACE_SECONDS,
	    DEFAULT_INTERVAL_MS);
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	bool have_target = false, have_count = false, have_hold_seconds = false;
	bool have_interval = false, have_hold_ms = false, have_parallel = false;

	memset(o, 0, sizeof(*o));
	o->parallel = 1;
	o->timeout_ms = DEFAULT_TIMEOUT_MS;
	o->max_seconds = DEFAULT_MAX_SECONDS;
	o->interval_ms = DEFAULT_INTERVAL_MS;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		int err = 0;

		tool_help(a, usage);
		if (!strcmp(a, "--json")) {
			o->json = true;
			continue;
		} else if (!strcmp(a, "--hold")) {
			o->hold = true;
			continue;
		} else if (!strcmp(a, "--rst")) {
			o->rst = true;
			continue;
		}
		v = tool_value("dmsc-probe", argc, argv, &i);
		if (!v)
			return -EINVAL;
		if (!strcmp(a, "--connect")) {
			err = parse_addr_port(v, &o->target);
			have_target = !err;
		} else if (!strcmp(a, "--count")) {
			err = parse_ulong(v, 1, MAX_COUNT, &o->count);
			have_count = true;
		} else if (!strcmp(a, "--parallel")) {
			err = parse_ulong(v, 1, MAX_PARALLEL, &o->parallel);
			have_parallel = true;
		} else if (!strcmp(a, "--timeout-ms")) {
			err = parse_ulong(v, 1, MAX_TIMEOUT_MS, &o->timeout_ms);
		} else if (!strcmp(a, "--max-seconds")) {
			err = parse_ulong(v, 1, MAX_SECONDS_LIMIT, &o->max_seconds);
			o->max_seconds_set = true;
		} else if (!strcmp(a, "--hold-ms")) {
			err = parse_ulong(v, 0, MAX_HOLD_MS, &o->hold_ms);
			have_hold_ms = true;
		} else if (!strcmp(a, "--hold-seconds")) {
			err = parse_ulong(v, 1, MAX_HOLD_MS / 1000, &o->hold_seconds);
			have_hold_seconds = true;
		} else if (!strcmp(a, "--interval-ms")) {
			err = parse_ulong(v, 1, MAX_HOLD_MS, &o->interval_ms);
			have_interval = true;
		} else if (!strcmp(a, "--stop-file")) {
			o->stop_file = v;
		} else {
			fprintf(stderr, "dmsc-probe: unknown option %s\n", a);
			return -EINVAL;
		}
		if (err) {
			fprintf(stderr, "dmsc-probe: %s \"%s\": invalid value\n", a, v);
			return -EINVAL;
		}
	}
	if (!have_target) {
		fprintf(stderr, "dmsc-probe: --connect ADDR:PORT is required\n");
		return -EINVAL;
	}
	if (have_hold_seconds)
		o->hold = true;
	if (o->hold) {
		if (!have_hold_seconds || have_count || have_parallel || have_hold_ms || o->rst) {
			fprintf(stderr, "dmsc-probe: hold mode takes --hold-seconds and not "
					"--count, --parallel, --hold-ms or --rst\n");
			return -EINVAL;
		}
		if (!o->max_seconds_set)
			o->max_seconds = o->hold_seconds + HOLD_GRACE_SECONDS;
		if (o->max_seconds < o->hold_seconds) {
			fprintf(stderr, "dmsc-probe: --max-seconds is less than --hold-seconds\n");
			return -EINVAL;
		}
		return 0;
	}
	if (!have_count || have_interval || o->stop_file) {
		fprintf(stderr, "dmsc-probe: count mode takes --count and not --interval-ms or "
				"--stop-file\n");
		return -EINVAL;
	}
	return 0;
}

static void raise_nofile_limit(unsigned long need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need + 64) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static bool peer_is_target(int fd, const struct sockaddr_in *target)
{
	struct sockaddr_in peer;
	socklen_t len = sizeof(peer);

	if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0 || len != sizeof(peer))
		return false;
	return peer.sin_family == AF_INET && peer.sin_addr.s_addr == target->sin_addr.s_addr &&
	       peer.sin_port == target->sin_port;
}

static void close_socket(int fd, bool rst)
{
	if (rst) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};

		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(fd);
}

/* ---- count mode ------------------------------------------------------- */

static void slot_fail(struct slot *s, struct results *r, const char *reason, bool rst)
{
	tally_add(&r->errors, reason);
	r->failed++;
	close_socket(s->fd, rst);
	s->state = SLOT_IDLE;
}

static void slot_fail_errno(struct slot *s, struct results *r, int e, bool rst)
{
	char buf[32];

	slot_fail(s, r, reason_of_errno(e, buf, sizeof(buf)), rst);
}

static void slot_start(struct slot *s, const struct opts *o, struct results *r)
{
	char buf[32];
	int fd;

	r->connections++;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		tally_add(&r->errors, reason_of_errno(errno, buf, sizeof(buf)));
		r->failed++;
		return;
	}
	s->fd = fd;
	s->line_len = 0;
	s->deadline_ms = dmsc_now_ms() + (int64_t)o->timeout_ms;
	if (connect(fd, (struct sockaddr *)&o->target, sizeof(o->target)) == 0) {
		s->state = SLOT_READING;
		if (peer_is_target(fd, &o->target))
			r->peer_is_target++;
		s->deadline_ms = dmsc_now_ms() + (int64_t)o->timeout_ms;
		return;
	}
	if (errno != EINPROGRESS) {
		slot_fail_errno(s, r, errno, o->rst);
		return;
	}
	s->state = SLOT_CONNECTING;
}

static void slot_connected(struct slot *s, const struct opts *o, struct results *r)
{
	socklen_t len = sizeof(int);
	int soerr = 0;

	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		soerr = errno;
	if (soerr) {
		slot_fail_errno(s, r, soerr, o->rst);
		return;
	}
	if (peer_is_target(s->fd, &o->target))
		r->peer_is_target++;
	s->state = SLOT_READING;
	s->deadline_ms = dmsc_now_ms() + (int64_t)o->timeout_ms;
}

static void slot_done(struct slot *s, const struct opts *o, struct results *r)
{
	r->ok++;
	tally_add(&r->backends, s->line);
	if (o->hold_ms > 0) {
		s->state = SLOT_HOLDING;
		s->deadline_ms = dmsc_now_ms() + (int64_t)o->hold_ms;
		return;
	}
	close_socket(s->fd, o->rst);
	s->state = SLOT_IDLE;
}

static void slot_read(struct slot *s, const struct opts *o, struct results *r)
{
	for (;;) {
		size_t room = sizeof(s->line) - 1 - s->line_len;
		char *nl;
		ssize_t n;

		if (room == 0) {
			slot_fail(s, r, REASON_LINE_TOO_LONG, o->rst);
			return;
		}
		n = recv(s->fd, s->line + s->line_len, room, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				slot_fail_errno(s, r, errno, o->rst);
			return;
		}
		if (n == 0) {
			slot_fail(s, r, REASON_EOF, o->rst);
			return;
		}
		s->line_len += (size_t)n;
		s->line[s->line_len] = '\0';
		nl = memchr(s->line, '\n', s->line_len);
		if (nl) {
			*nl = '\0';
			if (nl > s->line && nl[-1] == '\r')
				nl[-1] = '\0';
			slot_done(s, o, r);
			return;
		}
	}
}

static int run_count(const struct opts *o, struct results *r)
{
	int64_t start = dmsc_now_ms();
	int64_t end = start + (int64_t)o->max_seconds * 1000;
	unsigned long started = 0, nslots = o->parallel < o->count ? o->parallel : o->count;
	struct slot *slots = calloc(nslots, sizeof(*slots));
	struct pollfd *pfds = calloc(nslots, sizeof(*pfds));
	unsigned long *pidx = calloc(nslots, sizeof(*pidx));
	int ret = 0;

	if (!slots || !pfds || !pidx) {
		fprintf(stderr, "dmsc-probe: out of memory for %lu slots\n", nslots);
		ret = -ENOMEM;
		goto out;
	}
	raise_nofile_limit(nslots);

	for (;;) {
		int64_t now = dmsc_now_ms(), wake = end;
		unsigned long busy = 0;
		nfds_t nfds = 0;
		int n;

		if (now >= end) {
			r->time_limit_hit = started < o->count;
			for (unsigned long i = 0; i < nslots; i++) {
				if (slots[i].state == SLOT_HOLDING) {
					/* its line was read: it counted as ok already */
					close_socket(slots[i].fd, o->rst);
					slots[i].state = SLOT_IDLE;
				} else if (slots[i].state != SLOT_IDLE) {
					r->time_limit_hit = true;
					slot_fail(&slots[i], r, REASON_MAX_SECONDS, o->rst);
				}
			}
			break;
		}
		for (unsigned long i = 0; i < nslots; i++) {
			struct slot *s = &slots[i];

			if (s->state == SLOT_IDLE && started < o->count) {
				started++;
				slot_start(s, o, r);
				/* a connect that failed on the spot leaves the slot idle:
				 * the next round of the loop reuses it */
			}
			if (s->state != SLOT_IDLE && dmsc_now_ms() >= s->deadline_ms) {
				if (s->state == SLOT_CONNECTING)
					slot_fail_errno(s, r, ETIMEDOUT, o->rst);
				else if (s->state == SLOT_READING)
					slot_fail(s, r, REASON_READ_TIMEOUT, o->rst);
				else {
					close_socket(s->fd, o->rst);
					s->state = SLOT_IDLE;
				}
			}
			if (s->state == SLOT_IDLE)
				continue;
			busy++;
			if (s->deadline_ms < wake)
				wake = s->deadline_ms;
			/* a held connection waits for its deadline only: polling it
			 * would spin on a hangup that does not matter */
			if (s->state == SLOT_HOLDING)
				continue;
			pfds[nfds].fd = s->fd;
			pfds[nfds].events = s->state == SLOT_CONNECTING ? POLLOUT : POLLIN;
			pfds[nfds].revents = 0;
			pidx[nfds] = i;
			nfds++;
		}
		if (busy == 0) {
			if (started >= o->count)
				break;
			continue; /* every start failed on the spot: start the next ones */
		}
		now = dmsc_now_ms();
		n = poll(pfds, nfds, wake > now ? (int)(wake - now) : 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			fprintf(stderr, "dmsc-probe: poll: %s\n", strerror(errno));
			goto out;
		}
		for (nfds_t k = 0; k < nfds; k++) {
			struct slot *s = &slots[pidx[k]];

			if (!pfds[k].revents)
				continue;
			if (s->state == SLOT_CONNECTING)
				slot_connected(s, o, r);
			if (s->state == SLOT_READING)
				slot_read(s, o, r);
		}
	}
	r->elapsed_ms = dmsc_now_ms() - start;
out:
	if (slots) {
		for (unsigned long i = 0; i < nslots; i++) {
			if (slots[i].state != SLOT_IDLE)
				close(slots[i].fd);
		}
	}
	free(slots);
	free(pfds);
	free(pidx);
	return ret;
}

/* "name":{"key":count,...} of a finished tally of n keys. */
static void print_tally_json(const char *name, const struct tally *t, int n)
{
	printf("\"%s\":{", name);
	for (int i = 0; i < n; i++) {
		const struct counter *c = tally_at(t, i);

		printf("%s", i ? "," : "");
		json_string(stdout, c->key);
		printf(":%lu", c->n);
	}
	putchar('}');
}

static void print_count(const struct opts *o, struct results *r)
{
	int nb = tally_finish(&r->backends), ne = tally_finish(&r->errors);

	if (o->json) {
		printf("{\"connections\":%lu,\"ok\":%lu,\"failed\":%lu,\"peer_is_target\":%lu,",
		       r->connections, r->ok, r->failed, r->peer_is_target);
		print_tally_json("backends", &r->backends, nb);
		putchar(',');
		print_tally_json("errors", &r->errors, ne);
		printf(",\"time_limit_hit\":%s,\"elapsed_ms\":%lld}\n",
		       r->time_limit_hit ? "true" : "false", (long long)r->elapsed_ms);
		return;
	}
	printf("connections=%lu ok=%lu failed=%lu peer_is_target=%lu\n", r->connections, r->ok,
	       r->failed, r->peer_is_target);
	for (int i = 0; i < nb; i++) {
		const struct counter *c = tally_at(&r->backends, i);

		/* the share is of the successful connections: the split the LB made */
		printf("backend ");
		text_word(stdout, c->key[0] ? c->key : "(empty)");
		printf(" %lu %.2f%%\n", c->n, r->ok ? 100.0 * (double)c->n / (double)r->ok : 0.0);
	}
	for (int i = 0; i < ne; i++) {
		const struct counter *c = tally_at(&r->errors, i);

		printf("error ");
		text_word(stdout, c->key);
		printf(" %lu\n", c->n);
	}
	if (r->time_limit_hit)
		printf("time_limit_hit elapsed_ms=%lld\n", (long long)r->elapsed_ms);
}

/* ---- hold mode -------------------------------------------------------- */

struct hold_result {
	bool held, peer_is_target;
	unsigned long exchanges, errors;
	char name[NAME_LINE_MAX];
	char error[64];
};

/* Waits for EVENTS on FD until DEADLINE (ms, CLOCK_MONOTONIC). 0, or -ETIMEDOUT / -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int64_t left = deadline - dmsc_now_ms();
		int n;

		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n > 0)
			return 0;
	}
}

/*
 * Reads one line into BUF (without the newline). Bytes past the newline would
 * belong to the next line; the server only answers what we send, one line at
 * a time, so a read past it means the stream is wrong anyway.
 */
static int read_line(int fd, char *buf, size_t len, int64_t deadline, const char **reason)
{
	size_t have = 0;

	*reason = NULL;
	for (;;) {
		char *nl;
		ssize_t n;
		int err;

		if (have + 1 >= len) {
			*reason = REASON_LINE_TOO_LONG;
			return -E2BIG;
		}
		err = wait_fd(fd, POLLIN, deadline);
		if (err == -ETIMEDOUT) {
			*reason = REASON_READ_TIMEOUT;
			return err;
		}
		if (err < 0)
			return err;
		n = recv(fd, buf + have, len - 1 - have, 0);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			return -errno;
		}
		if (n == 0) {
			*reason = REASON_EOF;
			return -ECONNRESET;
		}
		have += (size_t)n;
		buf[have] = '\0';
		nl = memchr(buf, '\n', have);
		if (nl) {
			if (nl + 1 != buf + have) {
				*reason = REASON_ECHO_MISMATCH;
				return -EPROTO;
			}
			*nl = '\0';
			if (nl > buf && nl[-1] == '\r')
				nl[-1] = '\0';
			return 0;
		}
	}
}

static void hold_fail(struct hold_result *h, int err, const char *reason)
{
	char buf[32];

	h->errors++;
	snprintf(h->error, sizeof(h->error), "%s",
		 reason ? reason : reason_of_errno(-err, buf, sizeof(buf)));
}

static int send_all(int fd, const char *p, size_t len, int64_t deadline)
{
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		int err;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			err = wait_fd(fd, POLLOUT, deadline);
			if (err < 0)
				return err;
			continue;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void run_hold(const struct opts *o, struct hold_result *h)
{
	int64_t start = dmsc_now_ms();
	int64_t hard_end = start + (int64_t)o->max_seconds * 1000;
	int64_t hold_end, next;
	const char *reason = NULL;
	socklen_t len = sizeof(int);
	int fd, err, soerr = 0;
	unsigned long k;

	memset(h, 0, sizeof(*h));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		hold_fail(h, -errno, NULL);
		return;
	}
	if (connect(fd, (struct sockaddr *)&o->target, sizeof(o->target)) < 0) {
		if (errno != EINPROGRESS) {
			hold_fail(h, -errno, NULL);
			goto out;
		}
		err = wait_fd(fd, POLLOUT, start + (int64_t)o->timeout_ms);
		if (err < 0) {
			hold_fail(h, err, NULL);
			goto out;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
			soerr = errno;
		if (soerr) {
			hold_fail(h, -soerr, NULL);
			goto out;
		}
	}
	h->peer_is_target = peer_is_target(fd, &o->target);
	err = read_line(fd, h->name, sizeof(h->name), dmsc_now_ms() + (int64_t)o->timeout_ms, &reason);
	if (err < 0) {
		hold_fail(h, err, reason);
		goto out;
	}

	hold_end = dmsc_now_ms() + (int64_t)o->hold_seconds * 1000;
	if (hold_end > hard_end)
		hold_end = hard_end;
	next = dmsc_now_ms();
	for (k = 1;; k++) {
		char ping[64], echo[64];
		int64_t now = dmsc_now_ms(), deadline;

		if (next >= hold_end || (o->stop_file && access(o->stop_file, F_OK) == 0))
			break;
		if (now < next) {
			/* sleeping in poll() notices a closed connection early */
			struct pollfd p = {.fd = fd, .events = POLLIN};
			int n = poll(&p, 1, (int)(next - now));

			if (n > 0) {
				/* nothing is expected between exchanges: EOF, RST or junk */
				err = read_line(fd, echo, sizeof(echo), dmsc_now_ms() + 1, &reason);
				hold_fail(h, err < 0 ? err : -EPROTO,
					  err < 0 ? reason : REASON_ECHO_MISMATCH);
				goto out;
			}
			if (n < 0 && errno != EINTR) {
				hold_fail(h, -errno, NULL);
				goto out;
			}
			continue;
		}
		/* pace by the clock, never in bursts after a slow exchange */
		next += (int64_t)o->interval_ms;
		if (next < now)
			next = now + (int64_t)o->interval_ms;

		snprintf(ping, sizeof(ping), "ping %lu\n", k);
		deadline = now + (int64_t)o->timeout_ms;
		if (deadline > hard_end)
			deadline = hard_end;
		err = send_all(fd, ping, strlen(ping), deadline);
		if (err < 0) {
			hold_fail(h, err, NULL);
			goto out;
		}
		err = read_line(fd, echo, sizeof(echo), deadline, &reason);
		if (err < 0) {
			hold_fail(h, err, reason);
			goto out;
		}
		ping[strlen(ping) - 1] = '\0';
		if (strcmp(ping, echo) != 0) {
			hold_fail(h, -EPROTO, REASON_ECHO_MISMATCH);
			goto out;
		}
		h->exchanges++;
	}
	h->held = true;
out:
	close(fd);
}

static void print_hold(const struct opts *o, const struct hold_result *h)
{
	if (o->json) {
		printf("{\"held\":%d,\"exchanges\":%lu,\"errors\":%lu,\"name\":", h->held ? 1 : 0,
		       h->exchanges, h->errors);
		json_string(stdout, h->name);
		printf(",\"peer_is_target\":%d", h->peer_is_target ? 1 : 0);
		if (h->error[0]) {
			printf(",\"error\":");
			json_string(stdout, h->error);
		}
		printf("}\n");
		return;
	}
	printf("held=%d exchanges=%lu errors=%lu name=", h->held ? 1 : 0, h->exchanges, h->errors);
	text_word(stdout, h->name[0] ? h->name : "(none)");
	printf(" peer_is_target=%d", h->peer_is_target ? 1 : 0);
	if (h->error[0]) {
		printf(" error=");
		text_word(stdout, h->error);
	}
	printf("\n");
}

int main(int argc, char **argv)
{
	struct results *r;
	struct opts o;
	int err;

	if (parse_args(argc, argv, &o)) {
		usage(stderr);
		return 2;
	}
	if (o.hold) {
		struct hold_result h;

		run_hold(&o, &h);
		print_hold(&o, &h);
		return h.held ? 0 : 1;
	}

	r = calloc(1, sizeof(*r));
	if (!r) {
		fprintf(stderr, "dmsc-probe: out of memory\n");
		return 1;
	}
	err = run_count(&o, r);
	if (err < 0) {
		free(r);
		return 1;
	}
	print_count(&o, r);
	free(r);
	return 0;
}
