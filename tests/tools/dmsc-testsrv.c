// SPDX-License-Identifier: GPL-2.0
/*
 * dmsc-testsrv: a small epoll backend for the kernel tests and the demo.
 *
 *   dmsc-testsrv --listen ADDR:PORT [--listen ADDR:PORT ...] --name NAME
 *                [--mode http|echo|id|sink] [--max-seconds N] [--verbose]
 *                [--status CODE] [--delay-ms N] [--log-requests] [--truncate]
 *                [--response-bytes N]
 *
 * Modes:
 *   http  answers every HTTP/1.x request with "200 OK" and the body "NAME\n";
 *         --status CODE answers CODE instead (the body stays "NAME\n"),
 *         --delay-ms N waits N ms before each answer (blocking the whole
 *         server: a slow backend, for timeout tests), --log-requests prints
 *         "request METHOD TARGET" on stdout for each request, --truncate
 *         announces 100 bytes more than it sends and closes (a backend that
 *         dies mid-response), --response-bytes N adds N bytes of 'x' after
 *         "NAME\n" (a large response, generated as the peer reads it);
 *         keep-alive by default for HTTP/1.1, close for HTTP/1.0 or when the
 *         request says "Connection: close".
 *   id    sends "NAME\n" on accept, then echoes until the peer closes, so that
 *         a client can tell which backend a load balancer picked.
 *   echo  echoes every byte.
 *   sink  reads and discards.
 *
 * Prints "ready" on stdout once every listener is bound. Exits 0 on SIGTERM,
 * SIGINT or when --max-seconds (default 600) have passed, so that a test that
 * forgets it cannot leave it running for ever. Plain libc, no dependencies.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "http_list.h"
#include "tool_args.h"

#define MAX_LISTENERS 16
#define MAX_NAME_LEN 200
#define HTTP_HEAD_MAX (16 * 1024) /* a request head larger than this gets 431 */
#define OUT_BUF_SIZE (64 * 1024)  /* echo: stop reading while this much is unsent */
#define IO_CHUNK (16 * 1024)
#define ACCEPT_BATCH 256 /* accepts per readiness event, for fairness */
#define MAX_EVENTS 256
#define LISTEN_BACKLOG 4096
#define DEFAULT_MAX_SECONDS 600
#define MAX_MAX_SECONDS (7 * 24 * 3600)

enum mode { MODE_HTTP, MODE_ECHO, MODE_ID, MODE_SINK };
static const char *const mode_names[] = { /* --mode's words */
    [MODE_HTTP] = "http", [MODE_ECHO] = "echo", [MODE_ID] = "id", [MODE_SINK] = "sink",
};

enum tag { TAG_LISTENER, TAG_SIGNAL, TAG_CONN };

struct listener {
	enum tag tag; /* first member: epoll data points at any of the tagged structs */
	int fd;
	struct sockaddr_in addr;
};

struct conn {
	enum tag tag;
	int fd;
	bool peer_eof;	  /* no more input will come */
	bool close_after; /* close once the output is flushed */
	uint32_t events;  /* what epoll currently watches */
	size_t in_len;	  /* http: bytes of the request head(s) buffered */
	size_t body_left; /* http: request body bytes still to discard */
	size_t gen_left;  /* http: --response-bytes still to generate */
	bool chunked_body; /* http: discarding a chunked body */
	bool chunk_trailers; /* past the last chunk: lines until an empty one */
	size_t out_off, out_len;
	char *in; /* http only, HTTP_HEAD_MAX bytes */
	char out[OUT_BUF_SIZE];
};

static struct {
	enum mode mode;
	const char *name;
	size_t name_len;
	bool verbose;
	bool log_requests;
	bool truncate;
	unsigned long response_bytes;
	unsigned long status;
	unsigned long delay_ms;
	int epfd;
	int spare_fd; /* released on EMFILE so a pending connection can be refused */
	unsigned long active;
} srv = {
    .mode = MODE_ID,
    .epfd = -1,
    .spare_fd = -1,
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: dmsc-testsrv --listen ADDR:PORT [--listen ADDR:PORT ...] --name NAME\n"
		"                    [--mode http|echo|id|sink] [--max-seconds N] [--verbose]\n"
		"  default mode: id; default --max-seconds: %d; at most %d listeners\n",
		DEFAULT_MAX_SECONDS, MAX_LISTENERS);
}

static const char *fmt_addr(const struct sockaddr_in *sa, char *buf, size_t len)
{
	char ip[INET_ADDRSTRLEN];

	if (!inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof(ip)))
		snprintf(ip, sizeof(ip), "?");
	snprintf(buf, len, "%s:%u", ip, ntohs(sa->sin_port));
	return buf;
}

/* Thousands of concurrent connections need more than the usual 1024 descriptors. */
static void raise_nofile_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int open_listener(struct listener *l)
{
	char buf[64];
	int one = 1;
	int fd, err;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		fprintf(stderr, "dmsc-testsrv: socket: %s\n", strerror(-err));
		return err;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&l->addr, sizeof(l->addr)) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		err = -errno;
		fprintf(stderr, "dmsc-testsrv: listen on %s: %s\n",
			fmt_addr(&l->addr, buf, sizeof(buf)), strerror(-err));
		close(fd);
		return err;
	}
	l->fd = fd;
	return 0;
}

static int conn_watch(struct conn *c, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};

	if (events == c->events)
		return 0;
	if (epoll_ctl(srv.epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		return -errno;
	c->events = events;
	return 0;
}

static void conn_close(struct conn *c)
{
	/* close() drops the epoll registration too */
	close(c->fd);
	free(c->in);
	free(c);
	srv.active--;
}

/* Appends to the output buffer; the caller guarantees the room. */
static void conn_queue(struct conn *c, const char *data, size_t len)
{
	if (c->out_off > 0 && c->out_off + c->out_len + len > sizeof(c->out)) {
		memmove(c->out, c->out + c->out_off, c->out_len);
		c->out_off = 0;
	}
	memcpy(c->out + c->out_off + c->out_len, data, len);
	c->out_len += len;
}

static size_t conn_out_room(const struct conn *c)
{
	return sizeof(c->out) - c->out_len;
}

/* After a send() or recv() that failed (errno): 1 to try again (EINTR), 0
 * when it would block, else -errno: the connection is dead. */
static int io_failed(void)
{
	if (errno == EINTR)
		return 1;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return 0;
	return -errno;
}

/* Returns 0, or a negative errno when the connection is dead. */
static int conn_flush(struct conn *c)
{
	while (c->out_len > 0) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len, MSG_NOSIGNAL);

		if (n < 0) {
			int e = io_failed();

			if (e > 0)
				continue;
			return e;
		}
		c->out_off += (size_t)n;
		c->out_len -= (size_t)n;
	}
	c->out_off = 0;
	return 0;
}

static void http_respond(struct conn *c, int status, const char *reason, bool keep_alive)
{
	char head[512];
	const char *body = status == 200 ? srv.name : reason;
	size_t body_len = status == 200 ? srv.name_len : strlen(reason);
	int n;

	if (status == 200 && srv.status) {
		status = (int)srv.status;
		reason = "Test";
	}
	if (srv.delay_ms) {
		struct timespec ts = { (time_t)(srv.delay_ms / 1000),
				       (long)(srv.delay_ms % 1000) * 1000000 };

		nanosleep(&ts, NULL);
	}

	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\n"
		     "Content-Type: text/plain\r\n"
		     "Content-Length: %zu\r\n"
		     "Connection: %s\r\n"
		     "\r\n",
		     status, reason,
		     body_len + 1 + (srv.truncate ? 100 : 0) + srv.response_bytes,
		     keep_alive ? "keep-alive" : "close");
	/* head + body fit: name is at most MAX_NAME_LEN, the buffer holds 64 KiB */
	conn_queue(c, head, (size_t)n);
	conn_queue(c, body, body_len);
	conn_queue(c, "\n", 1);
	c->gen_left = srv.response_bytes;
	if (!keep_alive || srv.truncate)
		c->close_after = true;
}

/* Generates as much of a --response-bytes body as the buffer holds. */
static void conn_fill(struct conn *c)
{
	static char xs[4096];

	if (!xs[0])
		memset(xs, 'x', sizeof(xs));
	while (c->gen_left > 0 && conn_out_room(c) > 0) {
		size_t n = conn_out_room(c);

		if (n > sizeof(xs))
			n = sizeof(xs);
		if (n > c->gen_left)
			n = c->gen_left;
		conn_queue(c, xs, n);
		c->gen_left -= n;
	}
}

/*
 * Parses one request head of HEAD_LEN bytes (ending in the blank line) and
 * queues the answer. Bodies (Content-Length or chunked) are discarded.
 */
static void http_handle_head(struct conn *c, const char *head, size_t head_len)
{
	const char *line_end = memmem(head, head_len, "\r\n", 2);
	const char *p, *sp1, *sp2;
	bool http10, keep_alive, bad = false, chunked = false;
	unsigned long long content_length = 0;

	if (!line_end) {
		http_respond(c, 400, "Bad Request", false);
		return;
	}
	sp1 = memchr(head, ' ', (size_t)(line_end - head));
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
	if (!sp1 || !sp2 || line_end - sp2 - 1 != 8 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
		http_respond(c, 400, "Bad Request", false);
		return;
	}
	http10 = sp2[8] == '0';
	if (srv.log_requests) {
		printf("request %.*s %.*s\n", (int)(sp1 - head), head, (int)(sp2 - sp1 - 1), sp1 + 1);
		fflush(stdout);
	}
	keep_alive = !http10;

	for (p = line_end + 2; p < head + head_len;) {
		const char *eol = memmem(p, (size_t)(head + head_len - p), "\r\n", 2);
		const char *colon, *v;
		size_t vlen;

		if (!eol || eol == p)
			break;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (!colon) {
			bad = true;
			break;
		}
		v = colon + 1;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		vlen = (size_t)(eol - v);
		if (colon - p == 10 && strncasecmp(p, "Connection", 10) == 0) {
			if (dmsc_http_list_has(v, vlen, "close", strlen("close")))
				keep_alive = false;
			else if (http10 && dmsc_http_list_has(v, vlen, "keep-alive", strlen("keep-alive")))
				keep_alive = true;
		} else if (colon - p == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
			char num[24];
			char *end;

			if (vlen == 0 || vlen >= sizeof(num)) {
				bad = true;
				break;
			}
			memcpy(num, v, vlen);
			num[vlen] = '\0';
			errno = 0;
			content_length = strtoull(num, &end, 10);
			if (errno || *end || num[0] == '-')
				bad = true;
		} else if (colon - p == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
			chunked = true;
		}
		p = eol + 2;
	}
	if (bad) {
		http_respond(c, 400, "Bad Request", false);
		return;
	}
	c->body_left = (size_t)content_length;
	c->chunked_body = chunked;
	c->chunk_trailers = false;
	http_respond(c, 200, "OK", keep_alive);
}

/* Consumes complete requests from the input buffer. */
static void http_process(struct conn *c)
{
	size_t used = 0;

	while (!c->close_after) {
		char *start = c->in + used;
		size_t avail = c->in_len - used;
		char *end;

		if (c->chunked_body && c->body_left == 0) {
			/* a chunk-size line, or a trailer line after the last chunk */
			char *eol = memmem(start, avail, "\r\n", 2);
			unsigned long long size;

			if (!eol) {
				if (avail >= HTTP_HEAD_MAX)
					c->close_after = true;
				break;
			}
			used += (size_t)(eol + 2 - start);
			if (c->chunk_trailers) {
				if (eol == start)
					c->chunked_body = false; /* the empty line: done */
				continue;
			}
			size = strtoull(start, NULL, 16);
			if (size == 0)
				c->chunk_trailers = true;
			else
				c->body_left = (size_t)size + 2; /* data and its CRLF */
			continue;
		}
		if (c->body_left > 0) {
			size_t skip = avail < c->body_left ? avail : c->body_left;

			c->body_left -= skip;
			used += skip;
			if (c->body_left > 0)
				break;
			continue;
		}
		/* one answer at a time must fit; pipelined requests wait for room */
		if (conn_out_room(c) < 1024 + MAX_NAME_LEN || c->gen_left > 0)
			break;
		end = memmem(start, avail, "\r\n\r\n", 4);
		if (!end) {
			if (avail >= HTTP_HEAD_MAX)
				http_respond(c, 431, "Request Header Fields Too Large", false);
			break;
		}
		http_handle_head(c, start, (size_t)(end + 4 - start));
		used += (size_t)(end + 4 - start);
	}
	if (used > 0) {
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
	}
}

/* Reads what is available; returns 0 or a negative errno when the connection is dead. */
static int conn_read(struct conn *c)
{
	char chunk[IO_CHUNK];

	for (;;) {
		char *dst;
		size_t room;
		ssize_t n;

		switch (srv.mode) {
		case MODE_HTTP:
			if (c->close_after)
				return 0;
			dst = c->in + c->in_len;
			room = HTTP_HEAD_MAX - c->in_len;
			break;
		case MODE_ECHO:
		case MODE_ID:
			dst = chunk;
			room = conn_out_room(c);
			if (room > sizeof(chunk))
				room = sizeof(chunk);
			break;
		case MODE_SINK:
		default:
			dst = chunk;
			room = sizeof(chunk);
			break;
		}
		if (room == 0)
			return 0; /* back-pressure: resume once output drains */
		n = recv(c->fd, dst, room, 0);
		if (n < 0) {
			int e = io_failed();

			if (e > 0)
				continue;
			return e;
		}
		if (n == 0) {
			c->peer_eof = true;
			return 0;
		}
		switch (srv.mode) {
		case MODE_HTTP:
			c->in_len += (size_t)n;
			http_process(c);
			break;
		case MODE_ECHO:
		case MODE_ID:
			conn_queue(c, chunk, (size_t)n);
			break;
		case MODE_SINK:
			break;
		}
	}
}

/* Reading is paused while its destination is full, so that a level-triggered
 * EPOLLIN cannot spin while the peer does not read our output. */
static bool conn_can_read(const struct conn *c)
{
	if (c->peer_eof || c->close_after)
		return false;
	switch (srv.mode) {
	case MODE_HTTP:
		return c->in_len < HTTP_HEAD_MAX;
	case MODE_ECHO:
	case MODE_ID:
		return conn_out_room(c) > 0;
	case MODE_SINK:
	default:
		return true;
	}
}

/* Decides, after any event, whether to close and what to watch next. */
static void conn_step(struct conn *c)
{
	uint32_t events = 0;
	int err;

	/* bounded: each round either empties the buffer or stops on EAGAIN */
	for (;;) {
		conn_fill(c);
		err = conn_flush(c);
		if (err < 0)
			goto close;
		if (c->gen_left == 0 || c->out_len > 0)
			break;
	}
	if (srv.mode == MODE_HTTP && !c->close_after && c->in_len > 0) {
		/* output drained: pipelined requests waiting for room can go now */
		http_process(c);
		err = conn_flush(c);
		if (err < 0)
			goto close;
	}
	if (c->out_len == 0 && c->gen_left == 0 && (c->close_after || c->peer_eof))
		goto close;
	if (c->out_len > 0)
		events |= EPOLLOUT;
	if (conn_can_read(c))
		events |= EPOLLIN | EPOLLRDHUP;
	if (conn_watch(c, events) < 0)
		goto close;
	return;
close:
	conn_close(c);
}

static void accept_refuse_one(int lfd)
{
	int fd;

	/* Out of descriptors: free the spare, take the connection and close it,
	 * so the backlog does not stay readable and spin the loop. */
	if (srv.spare_fd >= 0) {
		close(srv.spare_fd);
		srv.spare_fd = -1;
	}
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd >= 0)
		close(fd);
	srv.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void accept_batch(struct listener *l)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_in peer;
		socklen_t plen = sizeof(peer);
		struct epoll_event ev;
		struct conn *c;
		int fd;

		fd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				fprintf(stderr, "dmsc-testsrv: accept: %s, refusing a connection\n",
					strerror(errno));
				accept_refuse_one(l->fd);
			}
			return; /* EAGAIN, or a transient error: wait for the next event */
		}
		if (srv.verbose) {
			char a[64], b[64];

			fprintf(stderr, "dmsc-testsrv: accept %s on %s\n",
				fmt_addr(&peer, a, sizeof(a)), fmt_addr(&l->addr, b, sizeof(b)));
		}
		c = calloc(1, sizeof(*c));
		if (c && srv.mode == MODE_HTTP) {
			c->in = malloc(HTTP_HEAD_MAX);
			if (!c->in) {
				free(c);
				c = NULL;
			}
		}
		if (!c) {
			fprintf(stderr, "dmsc-testsrv: out of memory, dropping a connection\n");
			close(fd);
			continue;
		}
		c->tag = TAG_CONN;
		c->fd = fd;
		c->events = EPOLLIN | EPOLLRDHUP;
		ev.events = c->events;
		ev.data.ptr = c;
		if (epoll_ctl(srv.epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			fprintf(stderr, "dmsc-testsrv: epoll_ctl: %s\n", strerror(errno));
			close(fd);
			free(c->in);
			free(c);
			continue;
		}
		srv.active++;
		if (srv.mode == MODE_ID) {
			conn_queue(c, srv.name, srv.name_len);
			conn_queue(c, "\n", 1);
		}
		conn_step(c);
	}
}

static int parse_args(int argc, char **argv, struct listener *ls, int *nls, unsigned long *max_s)
{
	/* The options that take a number, and its range. */
	const struct {
		const char *name;
		unsigned long min, max, *out;
	} nums[] = {
		{ "--status", 100, 599, &srv.status },
		{ "--response-bytes", 0, 1ul << 34, &srv.response_bytes },
		{ "--delay-ms", 0, 60000, &srv.delay_ms },
		{ "--max-seconds", 1, MAX_MAX_SECONDS, max_s },
	};
	size_t n;

	*nls = 0;
	*max_s = DEFAULT_MAX_SECONDS;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		int mode;

		tool_help(a, usage);
		if (!strcmp(a, "--verbose")) {
			srv.verbose = true;
			continue;
		} else if (!strcmp(a, "--truncate")) {
			srv.truncate = true;
			continue;
		} else if (!strcmp(a, "--log-requests")) {
			srv.log_requests = true;
			continue;
		}
		v = tool_value("dmsc-testsrv", argc, argv, &i);
		if (!v)
			return -EINVAL;
		for (n = 0; n < sizeof(nums) / sizeof(nums[0]) && strcmp(a, nums[n].name); n++)
			;
		if (n < sizeof(nums) / sizeof(nums[0])) {
			if (parse_ulong(v, nums[n].min, nums[n].max, nums[n].out)) {
				fprintf(stderr, "dmsc-testsrv: %s \"%s\": %lu to %lu\n", a, v,
					nums[n].min, nums[n].max);
				return -EINVAL;
			}
		} else if (!strcmp(a, "--listen")) {
			if (*nls >= MAX_LISTENERS) {
				fprintf(stderr, "dmsc-testsrv: at most %d --listen\n",
					MAX_LISTENERS);
				return -EINVAL;
			}
			ls[*nls].tag = TAG_LISTENER;
			ls[*nls].fd = -1;
			if (parse_addr_port(v, &ls[*nls].addr)) {
				fprintf(stderr, "dmsc-testsrv: --listen \"%s\": not IPV4:PORT\n",
					v);
				return -EINVAL;
			}
			(*nls)++;
		} else if (!strcmp(a, "--name")) {
			size_t len = strlen(v);

			if (len == 0 || len > MAX_NAME_LEN || strpbrk(v, "\r\n")) {
				fprintf(stderr,
					"dmsc-testsrv: --name: 1 to %d characters, no newline\n",
					MAX_NAME_LEN);
				return -EINVAL;
			}
			srv.name = v;
			srv.name_len = len;
		} else if (!strcmp(a, "--mode")) {
			mode = TOOL_WORD(v, mode_names);
			if (mode < 0) {
				fprintf(stderr,
					"dmsc-testsrv: --mode \"%s\": http, echo, id or sink\n", v);
				return -EINVAL;
			}
			srv.mode = (enum mode)mode;
		} else {
			fprintf(stderr, "dmsc-testsrv: unknown option %s\n", a);
			return -EINVAL;
		}
	}
	if (*nls == 0 || !srv.name) {
		fprintf(stderr, "dmsc-testsrv: --listen and --name are required\n");
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct listener ls[MAX_LISTENERS];
	struct epoll_event events[MAX_EVENTS];
	struct {
		enum tag tag;
		int fd;
	} sig = {TAG_SIGNAL, -1};
	struct epoll_event ev;
	unsigned long max_seconds;
	double deadline;
	sigset_t mask;
	int nls, ret = 1;

	if (parse_args(argc, argv, ls, &nls, &max_seconds)) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	raise_nofile_limit();

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 ||
	    (sig.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
		fprintf(stderr, "dmsc-testsrv: signalfd: %s\n", strerror(errno));
		return 1;
	}
	srv.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (srv.epfd < 0) {
		fprintf(stderr, "dmsc-testsrv: epoll_create1: %s\n", strerror(errno));
		return 1;
	}
	ev.events = EPOLLIN;
	ev.data.ptr = &sig;
	if (epoll_ctl(srv.epfd, EPOLL_CTL_ADD, sig.fd, &ev) < 0) {
		fprintf(stderr, "dmsc-testsrv: epoll_ctl: %s\n", strerror(errno));
		return 1;
	}
	for (int i = 0; i < nls; i++) {
		if (open_listener(&ls[i]) < 0)
			return 1;
		ev.events = EPOLLIN;
		ev.data.ptr = &ls[i];
		if (epoll_ctl(srv.epfd, EPOLL_CTL_ADD, ls[i].fd, &ev) < 0) {
			fprintf(stderr, "dmsc-testsrv: epoll_ctl: %s\n", strerror(errno));
			return 1;
		}
	}
	srv.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	/* stdout may be a pipe the test closed: a failed write is not fatal */
	printf("ready\n");
	fflush(stdout);

	deadline = dmsc_now_seconds() + (double)max_seconds;
	for (;;) {
		double left = deadline - dmsc_now_seconds();
		int n, timeout_ms;

		if (left <= 0) {
			if (srv.verbose)
				fprintf(stderr, "dmsc-testsrv: --max-seconds reached, exiting\n");
			ret = 0;
			break;
		}
		timeout_ms = left > 1.0 ? 1000 : (int)(left * 1000) + 1;
		n = epoll_wait(srv.epfd, events, MAX_EVENTS, timeout_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "dmsc-testsrv: epoll_wait: %s\n", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			enum tag *tag = events[i].data.ptr;
			struct conn *c;

			if (*tag == TAG_SIGNAL) {
				if (srv.verbose)
					fprintf(stderr, "dmsc-testsrv: signal, exiting\n");
				ret = 0;
				goto out;
			}
			if (*tag == TAG_LISTENER) {
				accept_batch((struct listener *)tag);
				continue;
			}
			c = (struct conn *)tag;
			if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
				if (conn_read(c) < 0) {
					conn_close(c);
					continue;
				}
			}
			conn_step(c);
		}
	}
out:
	/* Connections die with the process; nothing here needs an orderly close. */
	return ret;
}
