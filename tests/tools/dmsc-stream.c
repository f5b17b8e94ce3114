// SPDX-License-Identifier: GPL-2.0
/*
 * dmsc-stream: byte-exact data integrity over TCP, for the fast path tests.
 *
 *   dmsc-stream server --listen ADDR:PORT [--close-after N] [--stall-ms N] [--rcvbuf N]
 *               [--read-mode poll|block|waitall|lowat|epoll] [--max-seconds S]
 *   dmsc-stream client --connect ADDR:PORT [--conns N] [--count M]
 *               [--bytes B] [--back-bytes B] [--seed S] [--max-write W]
 *               [--rst-after N] [--no-read] [--await-ready] [--max-seconds S]
 *
 * ADDR:PORT is A.B.C.D:PORT or [IPV6]:PORT ([::ffff:A.B.C.D]:PORT: an IPv6
 * socket's IPv4 connection, as dual-stack runtimes make).
 *
 * Each connection carries two streams of patterned bytes: client to server
 * (--bytes) and server to client (--back-bytes, announced in a header). Byte
 * i of a stream is a function of the seed, the connection and i, so a lost,
 * duplicated, reordered or corrupted byte shows as a mismatch at the
 * receiver, which checks every byte and the exact length at EOF. Writes
 * have mixed sizes from 1 B to --max-write (default 1 MiB), drawn
 * log-uniformly, both directions at once; each side half-closes
 * (shutdown(SHUT_WR)) when its stream is written.
 *
 * The server prints "ready", then one JSON line per connection:
 *   {"conn":C,"expected":E,"got":G,"first_bad":-1,"eof":true,"sent":S,"error":""}
 * The client runs --conns connections at once, --count times in a row, and
 * prints one JSON summary: {"conns":N,"ok":K,"sent":..,"got":..,"errors":{..}}.
 * A connection is ok when every byte it received matched, it saw EOF after
 * exactly the announced length, and it wrote all its own bytes.
 *
 * Edge cases: --rst-after N (client) resets the connection (SO_LINGER 0)
 * after writing N bytes; --no-read (client) closes right after writing,
 * without reading, while its bytes may still be in flight; --close-after N
 * (server) closes after reading N bytes; --stall-ms N (server) reads
 * nothing for N ms after the header, a slow reader (with --stall-after M:
 * after the first M bytes, a reader that keeps up, then stops); --rcvbuf N
 * (server) sets SO_RCVBUF N on each accepted connection, after the
 * handshake advertised a window for the default buffer, then writes one
 * byte, 'R', before the stream (with --await-ready, client: it reads that
 * byte before its first write, so that it writes only once the server has
 * set the buffer: a signal, not a guess of how long that takes); --fastopen (client)
 * sends the header with TCP Fast Open (in the SYN, given a cookie); --corrupt-at N (client) flips
 * one bit of byte N it sends, to show that the checker sees it. --read-mode (server,
 * for connections with nothing to send back) reads in one of the ways a reader
 * can wait in the kernel: poll (default: poll() then a non-blocking recv()),
 * block (blocking recv()), waitall (blocking recv() with MSG_WAITALL), lowat
 * (SO_RCVLOWAT 256 KiB, poll() then recv()), epoll (epoll_wait() then recv()
 * until EAGAIN); blocking waits end after 1 s (SO_RCVTIMEO) to check the
 * deadline. Every wait is bounded by
 * --max-seconds (default 60): a hang is reported, never waited out.
 * Plain libc and pthreads.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "tool_args.h"

#define HDR_MAGIC 0x646d7363u /* "dmsc" */
#define MAX_WRITE_DEFAULT (1u << 20)
#define READ_CHUNK (256 * 1024)
#define MAX_CONNS 256

struct hdr {
	uint32_t magic;
	uint32_t conn;
	uint64_t seed;
	uint64_t c2s; /* bytes client to server */
	uint64_t s2c; /* bytes server to client */
};

static struct {
	struct sockaddr_storage addr; /* IPv4, or IPv6 written [ADDR]:PORT */
	socklen_t addr_len;
	unsigned conns, count, max_seconds;
	uint64_t bytes, back_bytes, seed, rst_after, close_after, corrupt_at, stall_ms, stall_after;
	uint64_t rcvbuf;
	uint32_t max_write;
	bool no_read, fastopen, await_ready;
	const char *read_mode;
	pthread_mutex_t lock;
} cfg = {.conns = 1,
	 .count = 1,
	 .max_seconds = 60,
	 .seed = 1,
	 .max_write = MAX_WRITE_DEFAULT,
	 .lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Byte i of a stream; dir 0 client to server, 1 back. */
struct pattern {
	uint64_t base;
	uint64_t word_idx;
	uint64_t word;
};

static void pattern_init(struct pattern *p, uint64_t seed, uint32_t conn, int dir)
{
	p->base = splitmix(seed ^ ((uint64_t)conn << 32) ^ (uint64_t)dir << 63);
	p->word_idx = UINT64_MAX;
}

static inline uint8_t pattern_byte(struct pattern *p, uint64_t i)
{
	uint64_t w = i >> 3;

	if (w != p->word_idx) {
		p->word_idx = w;
		p->word = splitmix(p->base + w);
	}
	return (uint8_t)(p->word >> (8 * (i & 7)));
}

static void pattern_fill(struct pattern *p, uint64_t off, uint8_t *buf, size_t n)
{
	size_t j;

	for (j = 0; j < n; j++)
		buf[j] = pattern_byte(p, off + j);
}

/* Index of the first mismatch in buf, or -1. */
static long long pattern_check(struct pattern *p, uint64_t off, const uint8_t *buf, size_t n)
{
	size_t j;

	for (j = 0; j < n; j++)
		if (buf[j] != pattern_byte(p, off + j))
			return (long long)(off + j);
	return -1;
}

/* Write sizes spread evenly over the powers of two up to max: as many
 * 1-3 byte writes as 512 KiB-1 MiB ones. */
static uint32_t write_size(uint64_t *rng, uint32_t max)
{
	unsigned bits = 0, k;
	uint64_t lo, n;

	while (bits < 31 && (1u << (bits + 1)) <= max)
		bits++;
	*rng = splitmix(*rng);
	k = (unsigned)(*rng % (bits + 1)); /* 1 << k <= max */
	lo = 1ull << k;
	n = lo + ((*rng >> 32) % lo); /* [2^k, 2^(k+1)) */
	return n > max ? max : (uint32_t)n;
}

struct stream_state {
	struct pattern tx, rx;
	uint64_t tx_total, rx_total; /* to send; expected */
	uint64_t sent, got;
	long long first_bad;
	bool eof, tx_done, reset;
	const char *error;
	uint64_t rng;
	uint8_t *wbuf, *rbuf;
	uint32_t wlen, woff; /* the current write: length, bytes of it sent */
};

static const char *errname(int e)
{
	switch (e) {
	case ECONNRESET:
		return "ECONNRESET";
	case EPIPE:
		return "EPIPE";
	case ETIMEDOUT:
		return "ETIMEDOUT";
	case ECONNREFUSED:
		return "ECONNREFUSED";
	case ENETUNREACH:
		return "ENETUNREACH";
	case EACCES:
		return "EACCES";
	default:
		return strerror(e);
	}
}

/* Moves both streams until both are done, the peer fails us, a stop
 * condition of the edge-case options hits, or the deadline passes. */
static void pump(int fd, struct stream_state *s, double deadline, uint64_t stop_tx_at,
		 uint64_t stop_rx_at, bool read_side)
{
	struct pollfd pfd = {.fd = fd};
	ssize_t n;

	for (;;) {
		bool want_tx = !s->tx_done && s->sent < stop_tx_at;
		bool want_rx = read_side && !s->eof && s->got < stop_rx_at;
		double left = deadline - dmsc_now_seconds();

		if (!want_tx && !want_rx)
			return;
		if (left <= 0) {
			s->error = "TIMEOUT";
			return;
		}
		pfd.events = (short)((want_tx ? POLLOUT : 0) | (want_rx ? POLLIN : 0));
		if (poll(&pfd, 1, left > 1 ? 1000 : (int)(left * 1000) + 1) < 0 && errno != EINTR) {
			s->error = errname(errno);
			return;
		}
		if (want_rx && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
			size_t cap = READ_CHUNK;

			if (stop_rx_at - s->got < cap)
				cap = (size_t)(stop_rx_at - s->got);
			n = recv(fd, s->rbuf, cap, 0);
			if (n == 0) {
				s->eof = true;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				s->error = errname(errno);
				s->reset = true;
				return;
			} else if (n > 0) {
				if (s->first_bad < 0 && s->got + (uint64_t)n > s->rx_total)
					s->first_bad = (long long)s->rx_total; /* more than sent */
				if (s->first_bad < 0)
					s->first_bad =
					    pattern_check(&s->rx, s->got, s->rbuf, (size_t)n);
				s->got += (uint64_t)n;
			}
		}
		if (want_tx && (pfd.revents & (POLLOUT | POLLERR | POLLHUP))) {
			if (s->woff == s->wlen) {
				uint64_t left_tx = s->tx_total - s->sent;

				s->wlen = write_size(&s->rng, cfg.max_write);
				if (s->wlen > left_tx)
					s->wlen = (uint32_t)left_tx;
				if (stop_tx_at - s->sent < s->wlen)
					s->wlen = (uint32_t)(stop_tx_at - s->sent);
				s->woff = 0;
				pattern_fill(&s->tx, s->sent, s->wbuf, s->wlen);
				/* Self-test of the checker: one wrong byte. */
				if (cfg.corrupt_at && cfg.corrupt_at - 1 >= s->sent &&
				    cfg.corrupt_at - 1 < s->sent + s->wlen)
					s->wbuf[cfg.corrupt_at - 1 - s->sent] ^= 0x01;
			}
			n = send(fd, s->wbuf + s->woff, s->wlen - s->woff, MSG_NOSIGNAL);
			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				s->error = errname(errno);
				s->reset = true;
				return;
			}
			if (n > 0) {
				s->woff += (uint32_t)n;
				s->sent += (uint64_t)n;
			}
			if (s->sent == s->tx_total) {
				s->tx_done = true;
				shutdown(fd, SHUT_WR);
			}
		}
	}
}

static int stream_alloc(struct stream_state *s)
{
	memset(s, 0, sizeof(*s));
	s->first_bad = -1;
	s->error = "";
	s->wbuf = malloc(cfg.max_write);
	s->rbuf = malloc(READ_CHUNK);
	return s->wbuf && s->rbuf ? 0 : -ENOMEM;
}

static void stream_free(struct stream_state *s)
{
	free(s->wbuf);
	free(s->rbuf);
}

static bool read_full(int fd, void *buf, size_t len, double deadline)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		double left = deadline - dmsc_now_seconds();

		if (left <= 0 || poll(&pfd, 1, (int)(left * 1000) + 1) <= 0)
			return false;
		n = recv(fd, (char *)buf + got, len - got, 0);
		if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR)))
			return false;
		if (n > 0)
			got += (size_t)n;
	}
	return true;
}

/* ---- server ---------------------------------------------------------- */

/* Reads the client's stream to EOF the --read-mode way (see the top). */
static void read_only(int fd, struct stream_state *s, double deadline)
{
	const char *mode = cfg.read_mode;
	struct timeval tv = {.tv_sec = 1};
	struct epoll_event ev = {.events = EPOLLIN};
	int lowat = 256 * 1024, flags = 0, efd = -1;
	bool blocking = !strcmp(mode, "block") || !strcmp(mode, "waitall");
	ssize_t n;

	if (blocking) {
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (!strcmp(mode, "waitall"))
			flags = MSG_WAITALL;
	} else if (!strcmp(mode, "lowat")) {
		setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
	} else {
		efd = epoll_create1(EPOLL_CLOEXEC);
		ev.data.fd = fd;
		if (efd < 0 || epoll_ctl(efd, EPOLL_CTL_ADD, fd, &ev)) {
			s->error = errname(errno);
			goto out;
		}
	}
	while (!s->eof) {
		size_t cap = READ_CHUNK;

		if (dmsc_now_seconds() > deadline) {
			s->error = "TIMEOUT";
			break;
		}
		if (s->rx_total > s->got && s->rx_total - s->got < cap)
			cap = (size_t)(s->rx_total - s->got);
		if (!blocking) {
			struct pollfd pfd = {.fd = fd, .events = POLLIN};

			if (efd >= 0 ? epoll_wait(efd, &ev, 1, 1000) <= 0 : poll(&pfd, 1, 1000) <= 0)
				continue;
			flags = MSG_DONTWAIT;
		}
		n = recv(fd, s->rbuf, cap, flags);
		if (n == 0) {
			s->eof = true;
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			s->error = errname(errno);
			break;
		} else if (n > 0) {
			if (s->first_bad < 0 && s->got + (uint64_t)n > s->rx_total)
				s->first_bad = (long long)s->rx_total;
			if (s->first_bad < 0)
				s->first_bad = pattern_check(&s->rx, s->got, s->rbuf, (size_t)n);
			s->got += (uint64_t)n;
		}
	}
out:
	if (efd >= 0)
		close(efd);
}

static void *serve_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	double deadline = dmsc_now_seconds() + cfg.max_seconds;
	struct stream_state s;
	struct hdr h;

	if (stream_alloc(&s))
		goto out;
	if (cfg.rcvbuf) {
		int v = (int)cfg.rcvbuf;

		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)))
			perror("dmsc-stream: SO_RCVBUF");
		/* the buffer is set: a client with --await-ready may write */
		if (send(fd, "R", 1, MSG_NOSIGNAL) != 1)
			perror("dmsc-stream: ready byte");
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	if (!read_full(fd, &h, sizeof(h), deadline) || h.magic != HDR_MAGIC) {
		pthread_mutex_lock(&cfg.lock);
		printf("{\"conn\":-1,\"error\":\"bad or missing header\"}\n");
		fflush(stdout);
		pthread_mutex_unlock(&cfg.lock);
		goto out_free;
	}
	if (cfg.stall_ms && !cfg.stall_after) /* a slow reader: the writer fills what it may */
		usleep((useconds_t)(cfg.stall_ms * 1000));
	pattern_init(&s.rx, h.seed, h.conn, 0);
	pattern_init(&s.tx, h.seed, h.conn, 1);
	s.rx_total = h.c2s;
	s.tx_total = h.s2c;
	s.rng = splitmix(h.seed ^ h.conn ^ 0x5eed);
	s.tx_done = s.tx_total == 0;
	if (s.tx_done)
		shutdown(fd, SHUT_WR);
	if (cfg.read_mode && strcmp(cfg.read_mode, "poll") && s.tx_done && !cfg.close_after)
		read_only(fd, &s, deadline);
	else {
		if (cfg.stall_after) { /* keeps up, then stops reading a while */
			pump(fd, &s, deadline, UINT64_MAX, cfg.stall_after, true);
			usleep((useconds_t)(cfg.stall_ms * 1000));
		}
		pump(fd, &s, deadline, UINT64_MAX, cfg.close_after ? cfg.close_after : UINT64_MAX,
		     true);
	}
	pthread_mutex_lock(&cfg.lock);
	printf("{\"conn\":%u,\"expected\":%" PRIu64 ",\"got\":%" PRIu64
	       ",\"first_bad\":%lld,\"eof\":%s,\"sent\":%" PRIu64 ",\"error\":\"%s\"}\n",
	       h.conn, s.rx_total, s.got, s.first_bad, s.eof ? "true" : "false", s.sent, s.error);
	fflush(stdout);
	pthread_mutex_unlock(&cfg.lock);
out_free:
	stream_free(&s);
out:
	close(fd);
	return NULL;
}

static int run_server(void)
{
	double end = dmsc_now_seconds() + cfg.max_seconds;
	int lfd, one = 1, qlen = 64;

	lfd = socket(cfg.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(lfd, IPPROTO_TCP, TCP_FASTOPEN, &qlen, sizeof(qlen)) ||
	    bind(lfd, (struct sockaddr *)&cfg.addr, cfg.addr_len) || listen(lfd, 1024)) {
		perror("dmsc-stream: listen");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (dmsc_now_seconds() < end) {
		struct pollfd pfd = {.fd = lfd, .events = POLLIN};
		pthread_t t;
		int fd;

		if (poll(&pfd, 1, 200) <= 0)
			continue;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		if (pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd)) {
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
	return 0;
}

/* ---- client ---------------------------------------------------------- */

struct result {
	bool ok;
	uint64_t sent, got;
	const char *error;
	long long first_bad;
};

static void run_one(uint32_t conn, struct result *r)
{
	double deadline = dmsc_now_seconds() + cfg.max_seconds;
	struct stream_state s;
	struct linger lg = {1, 0};
	struct hdr h = {.magic = HDR_MAGIC, .conn = conn, .seed = cfg.seed};
	char ready = 0;
	int fd;

	memset(r, 0, sizeof(*r));
	r->first_bad = -1;
	if (stream_alloc(&s)) {
		r->error = "ENOMEM";
		return;
	}
	h.c2s = cfg.bytes;
	h.s2c = cfg.back_bytes;
	fd = socket(cfg.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && cfg.addr.ss_family == AF_INET6) {
		int v6only = 0; /* dual stack, whatever the sysctl: ::ffff: is IPv4 */

		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
	}
	if (fd >= 0 && cfg.fastopen) {
		/* TCP Fast Open: the header rides in the SYN once the
		 * client has a cookie (the first connection fetches it). */
		if (sendto(fd, &h, sizeof(h), MSG_FASTOPEN | MSG_NOSIGNAL,
			   (struct sockaddr *)&cfg.addr, cfg.addr_len) != (ssize_t)sizeof(h)) {
			r->error = errname(errno);
			goto out;
		}
	} else if (fd < 0 || connect(fd, (struct sockaddr *)&cfg.addr, cfg.addr_len)) {
		r->error = errname(errno);
		goto out;
	} else if (cfg.await_ready && (!read_full(fd, &ready, 1, deadline) || ready != 'R')) {
		r->error = "no ready byte";
		goto out;
	} else if (send(fd, &h, sizeof(h), MSG_NOSIGNAL) != (ssize_t)sizeof(h)) {
		r->error = errname(errno);
		goto out;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	pattern_init(&s.tx, cfg.seed, conn, 0);
	pattern_init(&s.rx, cfg.seed, conn, 1);
	s.tx_total = cfg.bytes;
	s.rx_total = cfg.back_bytes;
	s.rng = splitmix(cfg.seed ^ conn ^ 0xc11e);
	s.tx_done = s.tx_total == 0;
	if (s.tx_done)
		shutdown(fd, SHUT_WR);
	if (cfg.rst_after) {
		pump(fd, &s, deadline, cfg.rst_after, UINT64_MAX, false);
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	} else {
		pump(fd, &s, deadline, UINT64_MAX, UINT64_MAX, !cfg.no_read);
	}
	r->sent = s.sent;
	r->got = s.got;
	r->first_bad = s.first_bad;
	r->error = s.error;
	r->ok =
	    !s.error[0] && s.first_bad < 0 &&
	    s.sent == (cfg.rst_after && cfg.rst_after < s.tx_total ? cfg.rst_after : s.tx_total) &&
	    (cfg.no_read || cfg.rst_after || (s.eof && s.got == s.rx_total));
out:
	if (fd >= 0)
		close(fd);
	stream_free(&s);
}

struct worker {
	pthread_t t;
	unsigned idx;
	unsigned ok, failed;
	uint64_t sent, got;
	char errors[512];
	long long first_bad;
};

static void *client_worker(void *arg)
{
	struct worker *w = arg;
	struct result r;
	unsigned k;

	w->first_bad = -1;
	for (k = 0; k < cfg.count; k++) {
		run_one(w->idx + k * cfg.conns, &r);
		w->sent += r.sent;
		w->got += r.got;
		if (r.ok) {
			w->ok++;
			continue;
		}
		w->failed++;
		if (r.first_bad >= 0 && w->first_bad < 0)
			w->first_bad = r.first_bad;
		if (r.error[0] && !strstr(w->errors, r.error) &&
		    strlen(w->errors) + strlen(r.error) + 2 < sizeof(w->errors)) {
			strcat(w->errors, w->errors[0] ? "," : "");
			strcat(w->errors, r.error);
		}
		if (!r.error[0] && r.first_bad >= 0 && !strstr(w->errors, "MISMATCH"))
			strcat(w->errors, w->errors[0] ? ",MISMATCH" : "MISMATCH");
		if (!r.error[0] && r.first_bad < 0 && !strstr(w->errors, "SHORT"))
			strcat(w->errors, w->errors[0] ? ",SHORT" : "SHORT");
	}
	return NULL;
}

static int run_client(void)
{
	struct worker *w = calloc(cfg.conns, sizeof(*w));
	unsigned i, ok = 0, failed = 0;
	uint64_t sent = 0, got = 0;
	long long first_bad = -1;
	char errors[1024] = "";

	if (!w)
		return 1;
	for (i = 0; i < cfg.conns; i++) {
		w[i].idx = i;
		if (pthread_create(&w[i].t, NULL, client_worker, &w[i])) {
			perror("dmsc-stream: pthread_create");
			return 1;
		}
	}
	for (i = 0; i < cfg.conns; i++) {
		pthread_join(w[i].t, NULL);
		ok += w[i].ok;
		failed += w[i].failed;
		sent += w[i].sent;
		got += w[i].got;
		if (w[i].first_bad >= 0 && first_bad < 0)
			first_bad = w[i].first_bad;
		if (w[i].errors[0] && !strstr(errors, w[i].errors) &&
		    strlen(errors) + strlen(w[i].errors) + 2 < sizeof(errors)) {
			strcat(errors, errors[0] ? "," : "");
			strcat(errors, w[i].errors);
		}
	}
	printf("{\"conns\":%u,\"ok\":%u,\"failed\":%u,\"sent\":%" PRIu64 ",\"got\":%" PRIu64
	       ",\"first_bad\":%lld,\"errors\":\"%s\"}\n",
	       cfg.conns * cfg.count, ok, failed, sent, got, first_bad, errors);
	free(w);
	return 0;
}

/* ---- options --------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f, "usage: dmsc-stream server --listen ADDR:PORT [--close-after N] [--stall-ms N [--stall-after M]] "
		   "[--rcvbuf N] "
		   "[--read-mode poll|block|waitall|lowat|epoll] [--max-seconds S]\n"
		   "       dmsc-stream client --connect ADDR:PORT [--conns N] [--count M] "
		   "[--bytes B] [--back-bytes B]\n"
		   "                   [--seed S] [--max-write W] [--rst-after N] [--no-read] "
		   "[--fastopen] [--await-ready] [--max-seconds S]\n");
}

/* A.B.C.D:PORT, or [IPV6]:PORT (an IPv6 socket; [::ffff:A.B.C.D] is a
 * dual-stack socket's IPv4). */
static bool parse_addr(const char *s, struct sockaddr_storage *a, socklen_t *len)
{
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)a;
	struct sockaddr_in *a4 = (struct sockaddr_in *)a;
	const char *colon = strrchr(s, ':'), *host_start = s;
	size_t host_len;
	char host[64];
	char *end;
	unsigned long port;

	if (!colon)
		return false;
	host_len = (size_t)(colon - s);
	if (*s == '[') {
		if (host_len < 2 || colon[-1] != ']')
			return false;
		host_start = s + 1;
		host_len -= 2;
	}
	if (host_len >= sizeof(host))
		return false;
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	port = strtoul(colon + 1, &end, 10);
	if (*end || port == 0 || port > 65535)
		return false;
	memset(a, 0, sizeof(*a));
	if (*s == '[') {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*a6);
		return inet_pton(AF_INET6, host, &a6->sin6_addr) == 1;
	}
	a4->sin_family = AF_INET;
	a4->sin_port = htons((uint16_t)port);
	*len = sizeof(*a4);
	return inet_pton(AF_INET, host, &a4->sin_addr) == 1;
}

static bool parse_u64(const char *s, uint64_t *v)
{
	char *end;
	unsigned long long x;

	errno = 0;
	x = strtoull(s, &end, 0);
	if (errno || end == s)
		return false;
	if (*end == 'K' || *end == 'k')
		x <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		x <<= 20, end++;
	if (*end)
		return false;
	*v = x;
	return true;
}

int main(int argc, char **argv)
{
	bool server, have_addr = false;
	uint64_t v;
	int i;

	if (argc < 2 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
		usage(stderr);
		return 2;
	}
	server = !strcmp(argv[1], "server");
	signal(SIGPIPE, SIG_IGN);
	for (i = 2; i < argc; i++) {
		const char *o = argv[i], *a = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(o, "--no-read")) {
			cfg.no_read = true;
			continue;
		}
		if (!strcmp(o, "--fastopen")) {
			cfg.fastopen = true;
			continue;
		}
		if (!strcmp(o, "--await-ready") && !server) {
			cfg.await_ready = true;
			continue;
		}
		if (!a) {
			usage(stderr);
			return 2;
		}
		i++;
		if (!strcmp(o, "--listen") || !strcmp(o, "--connect")) {
			if (!parse_addr(a, &cfg.addr, &cfg.addr_len))
				goto bad;
			have_addr = true;
			continue;
		}
		if (!strcmp(o, "--read-mode") && server) {
			static const char *const read_modes[] = {"poll", "block", "waitall", "lowat",
								 "epoll"};

			if (TOOL_WORD(a, read_modes) < 0)
				goto bad;
			cfg.read_mode = a;
			continue;
		}
		if (!parse_u64(a, &v))
			goto bad;
		if (!strcmp(o, "--conns") && v >= 1 && v <= MAX_CONNS)
			cfg.conns = (unsigned)v;
		else if (!strcmp(o, "--count") && v >= 1 && v <= 1000000)
			cfg.count = (unsigned)v;
		else if (!strcmp(o, "--bytes"))
			cfg.bytes = v;
		else if (!strcmp(o, "--back-bytes"))
			cfg.back_bytes = v;
		else if (!strcmp(o, "--seed"))
			cfg.seed = v;
		else if (!strcmp(o, "--max-write") && v >= 1 && v <= (64u << 20))
			cfg.max_write = (uint32_t)v;
		else if (!strcmp(o, "--rst-after"))
			cfg.rst_after = v;
		else if (!strcmp(o, "--corrupt-at") && !server)
			cfg.corrupt_at = v + 1; /* 0 stays "off" */
		else if (!strcmp(o, "--stall-ms") && server && v <= 60000)
			cfg.stall_ms = v;
		else if (!strcmp(o, "--stall-after") && server)
			cfg.stall_after = v;
		else if (!strcmp(o, "--rcvbuf") && server && v >= 1 && v <= (64u << 20))
			cfg.rcvbuf = v;
		else if (!strcmp(o, "--close-after"))
			cfg.close_after = v;
		else if (!strcmp(o, "--max-seconds") && v >= 1 && v <= 3600)
			cfg.max_seconds = (unsigned)v;
		else
			goto bad;
		continue;
	bad:
		fprintf(stderr, "dmsc-stream: bad option %s %s\n", o, a ? a : "");
		usage(stderr);
		return 2;
	}
	if (!have_addr) {
		usage(stderr);
		return 2;
	}
	return server ? run_server() : run_client();
}
