// SPDX-License-Identifier: GPL-2.0
/*
 * dmsc-grpcsrv: a gRPC backend for the HTTP/2 benchmark (scripts/bench-h2.sh),
 * fast enough that the proxies in front of it, not it, bound the rate.
 *
 *   dmsc-grpcsrv --listen ADDR:PORT --name NAME [--max-seconds N]
 *
 * h2c with prior knowledge (libnghttp2), one thread, one epoll. Every call is
 * unary, whatever its method: the request's one message (gRPC framing: a
 * flag byte 0, uncompressed, then a 4-byte length) is answered with one
 * message "NAME:" + the request's message, `content-type: application/grpc`,
 * and the trailers `grpc-status: 0`. A request that is not one well-framed
 * uncompressed message gets a trailers-only answer with grpc-status 13
 * (INTERNAL), or 12 (UNIMPLEMENTED) for a compressed one; one that is not
 * `application/grpc` gets HTTP 415. Messages up to 4 MiB (gRPC's default).
 *
 * Prints "ready" on stdout once listening. Exits 0 on SIGTERM, SIGINT or when
 * --max-seconds (default 600) have passed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
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
#include <unistd.h>

#include "array.h"
#include "clock.h"
#include "tool_args.h"

#define MAX_NAME_LEN 200
#define GRPC_PREFIX 5		     /* flag byte + 4-byte big-endian length */
#define MAX_MESSAGE (4u << 20)	     /* gRPC's default largest message */
#define OUT_HIGH_WATER (256 * 1024)  /* stop asking nghttp2 for frames past it */
#define IO_CHUNK (64 * 1024)
#define MAX_STREAMS 1024	     /* SETTINGS_MAX_CONCURRENT_STREAMS */
#define MAX_EVENTS 256
#define LISTEN_BACKLOG 4096
#define DEFAULT_MAX_SECONDS 600
#define MAX_MAX_SECONDS (7 * 24 * 3600)

#define GRPC_STATUS_UNIMPLEMENTED "12"
#define GRPC_STATUS_INTERNAL "13"

enum tag { TAG_LISTENER, TAG_SIGNAL, TAG_CONN };

struct conn {
	enum tag tag; /* first member: epoll data points at any of the tagged structs */
	int fd;
	nghttp2_session *h2;
	uint8_t *out; /* frames nghttp2 made, not yet sent */
	size_t out_len, out_off, out_cap;
	bool watching_out;
};

/* One call: the request's body as it arrives, then the framed answer. */
struct call {
	uint8_t *body;
	size_t len, cap;
	bool grpc;	    /* content-type application/grpc[+...] */
	bool too_large;	    /* body past GRPC_PREFIX + MAX_MESSAGE: not kept */
	uint8_t *answer;    /* GRPC_PREFIX + "NAME:" + message */
	size_t answer_len, answer_off;
};

static struct {
	int epfd;
	char name[MAX_NAME_LEN + 2]; /* NAME + ':' */
	size_t name_len;
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
} srv;

#define NV(n, v)                                                                       \
	{                                                                              \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1,          \
			NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE \
	}

static void usage(FILE *f)
{
	fprintf(f, "usage: dmsc-grpcsrv --listen ADDR:PORT --name NAME [--max-seconds N]\n");
}

static void call_free(struct call *c)
{
	if (!c)
		return;
	free(c->body);
	free(c->answer);
	free(c);
}

/* Room for need bytes in *p (capacity *cap, doubled from first): 0 or -1. */
/* ---- nghttp2 callbacks ---- */

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
		       void *user)
{
	struct conn *c = user;
	uint8_t *out;

	(void)s;
	(void)flags;
	if (c->out_len - c->out_off >= OUT_HIGH_WATER)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (c->out_off && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	out = dmsc_bytes_room(c->out, &c->out_cap, c->out_len + len, IO_CHUNK);
	if (!out)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	c->out = out;
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return (ssize_t)len;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct call *call;

	(void)user;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	call = calloc(1, sizeof(*call));
	if (!call)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return nghttp2_session_set_stream_user_data(s, f->hd.stream_id, call) ?
		       (call_free(call), NGHTTP2_ERR_CALLBACK_FAILURE) :
		       0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user)
{
	static const char ct[] = "application/grpc";
	struct call *call;

	(void)flags;
	(void)user;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	call = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (call && namelen == 12 && !memcmp(name, "content-type", 12) &&
	    valuelen >= sizeof(ct) - 1 && !strncasecmp((const char *)value, ct, sizeof(ct) - 1) &&
	    (valuelen == sizeof(ct) - 1 || value[sizeof(ct) - 1] == '+' ||
	     value[sizeof(ct) - 1] == ';'))
		call->grpc = true;
	return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
		   size_t len, void *user)
{
	struct call *call = nghttp2_session_get_stream_user_data(s, id);
	uint8_t *body;

	(void)flags;
	(void)user;
	if (!call || call->too_large)
		return 0;
	if (call->len + len > GRPC_PREFIX + MAX_MESSAGE) {
		call->too_large = true;
		return 0;
	}
	body = dmsc_bytes_room(call->body, &call->cap, call->len + len, 256);
	if (!body)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	call->body = body;
	memcpy(call->body + call->len, data, len);
	call->len += len;
	return 0;
}

static ssize_t answer_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
			   uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct call *call = src->ptr;
	size_t n = call->answer_len - call->answer_off;
	nghttp2_nv trailer[] = { NV("grpc-status", "0") };

	(void)user;
	if (n > len)
		n = len;
	memcpy(buf, call->answer + call->answer_off, n);
	call->answer_off += n;
	if (call->answer_off == call->answer_len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (nghttp2_submit_trailer(s, id, trailer, 1))
			return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	return (ssize_t)n;
}

/* A trailers-only answer: HEADERS with the status and END_STREAM. */
static int answer_status(nghttp2_session *s, int32_t id, const char *status, const char *msg)
{
	nghttp2_nv nv[] = {
		NV(":status", "200"),
		NV("content-type", "application/grpc"),
		NV("grpc-status", ""),
		NV("grpc-message", ""),
	};

	nv[2].value = (uint8_t *)status;
	nv[2].valuelen = strlen(status);
	nv[3].value = (uint8_t *)msg;
	nv[3].valuelen = strlen(msg);
	return nghttp2_submit_response(s, id, nv, 4, NULL);
}

static int answer_call(nghttp2_session *s, int32_t id, struct call *call)
{
	nghttp2_nv nv[] = { NV(":status", "200"), NV("content-type", "application/grpc") };
	nghttp2_nv not_grpc[] = { NV(":status", "415") };
	nghttp2_data_provider dp = { .source.ptr = call, .read_callback = answer_read };
	uint32_t msg_len, out_len;

	if (!call->grpc)
		return nghttp2_submit_response(s, id, not_grpc, 1, NULL);
	if (call->too_large)
		return answer_status(s, id, GRPC_STATUS_INTERNAL, "message too large");
	if (call->len < GRPC_PREFIX)
		return answer_status(s, id, GRPC_STATUS_INTERNAL, "no message");
	msg_len = (uint32_t)call->body[1] << 24 | (uint32_t)call->body[2] << 16 |
		  (uint32_t)call->body[3] << 8 | call->body[4];
	if (call->body[0] & 1)
		return answer_status(s, id, GRPC_STATUS_UNIMPLEMENTED, "compressed message");
	if (call->body[0] || msg_len != call->len - GRPC_PREFIX)
		return answer_status(s, id, GRPC_STATUS_INTERNAL, "not one message");
	out_len = (uint32_t)srv.name_len + msg_len;
	call->answer_len = GRPC_PREFIX + out_len;
	call->answer = malloc(call->answer_len);
	if (!call->answer)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	call->answer[0] = 0;
	call->answer[1] = (uint8_t)(out_len >> 24);
	call->answer[2] = (uint8_t)(out_len >> 16);
	call->answer[3] = (uint8_t)(out_len >> 8);
	call->answer[4] = (uint8_t)out_len;
	memcpy(call->answer + GRPC_PREFIX, srv.name, srv.name_len);
	memcpy(call->answer + GRPC_PREFIX + srv.name_len, call->body + GRPC_PREFIX, msg_len);
	return nghttp2_submit_response(s, id, nv, 2, &dp);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct call *call;

	(void)user;
	if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
	    !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	call = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (!call)
		return 0;
	return answer_call(s, f->hd.stream_id, call) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t err, void *user)
{
	(void)err;
	(void)user;
	call_free(nghttp2_session_get_stream_user_data(s, id));
	nghttp2_session_set_stream_user_data(s, id, NULL);
	return 0;
}

/* ---- connections ---- */

static void conn_close(struct conn *c)
{
	close(c->fd); /* leaves the epoll set with it */
	nghttp2_session_del(c->h2);
	free(c->out);
	free(c);
}

/* Frames from nghttp2 into c->out, then out to the socket; watches EPOLLOUT
 * while bytes are left. 0, or -1: close the connection. */
static int conn_flush(struct conn *c)
{
	for (;;) {
		ssize_t n;

		if (nghttp2_session_send(c->h2))
			return -1;
		if (c->out_off == c->out_len)
			break;
		n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -1;
		}
		c->out_off += (size_t)n;
		if (c->out_off == c->out_len)
			c->out_off = c->out_len = 0;
		if (!nghttp2_session_want_write(c->h2) && !c->out_len)
			break;
	}
	if ((c->out_len > c->out_off) != c->watching_out) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

		c->watching_out = !c->watching_out;
		if (c->watching_out)
			ev.events |= EPOLLOUT;
		if (epoll_ctl(srv.epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
			return -1;
	}
	if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) &&
	    c->out_off == c->out_len)
		return -1;
	return 0;
}

/* Reads until a short read (epoll is level-triggered). 0, or -1: close. */
static int conn_read(struct conn *c)
{
	uint8_t buf[IO_CHUNK];

	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		if (n == 0)
			return -1;
		if (nghttp2_session_mem_recv(c->h2, buf, (size_t)n) < 0)
			return -1;
		if ((size_t)n < sizeof(buf))
			return 0;
	}
}

static void accept_batch(int lfd)
{
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS },
	};

	for (int i = 0; i < 256; i++) {
		struct epoll_event ev = { .events = EPOLLIN };
		int one = 1;
		struct conn *c;
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c || nghttp2_session_server_new2(&c->h2, srv.cbs, c, srv.opt)) {
			fprintf(stderr, "dmsc-grpcsrv: out of memory for a connection\n");
			free(c);
			close(fd);
			continue;
		}
		c->tag = TAG_CONN;
		c->fd = fd;
		ev.data.ptr = c;
		if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1) ||
		    epoll_ctl(srv.epfd, EPOLL_CTL_ADD, fd, &ev) < 0 || conn_flush(c) < 0)
			conn_close(c);
	}
}

static int open_listener(const struct sockaddr_in *sa)
{
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		int err = -errno;
		char a[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &sa->sin_addr, a, sizeof(a));
		fprintf(stderr, "dmsc-grpcsrv: listen on %s:%u: %s\n", a, ntohs(sa->sin_port),
			strerror(-err));
		if (fd >= 0)
			close(fd);
		return err;
	}
	return fd;
}

static int parse_args(int argc, char **argv, struct sockaddr_in *sa, unsigned long *max_s)
{
	bool have_listen = false;

	*max_s = DEFAULT_MAX_SECONDS;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;

		tool_help(a, usage);
		v = tool_value("dmsc-grpcsrv", argc, argv, &i);
		if (!v)
			return -EINVAL;
		if (!strcmp(a, "--listen")) {
			if (parse_addr_port(v, sa)) {
				fprintf(stderr, "dmsc-grpcsrv: --listen \"%s\": not A.B.C.D:PORT\n", v);
				return -EINVAL;
			}
			have_listen = true;
		} else if (!strcmp(a, "--name")) {
			srv.name_len = strlen(v);
			if (!srv.name_len || srv.name_len > MAX_NAME_LEN) {
				fprintf(stderr, "dmsc-grpcsrv: --name: 1 to %d bytes\n", MAX_NAME_LEN);
				return -EINVAL;
			}
			memcpy(srv.name, v, srv.name_len);
			srv.name[srv.name_len++] = ':';
		} else if (!strcmp(a, "--max-seconds")) {
			if (parse_ulong(v, 1, MAX_MAX_SECONDS, max_s)) {
				fprintf(stderr, "dmsc-grpcsrv: --max-seconds \"%s\": 1 to %d\n", v,
					MAX_MAX_SECONDS);
				return -EINVAL;
			}
		} else {
			fprintf(stderr, "dmsc-grpcsrv: %s: unknown option\n", a);
			return -EINVAL;
		}
	}
	if (!have_listen || !srv.name_len) {
		fprintf(stderr, "dmsc-grpcsrv: --listen and --name are required\n");
		return -EINVAL;
	}
	return 0;
}

static int setup_nghttp2(void)
{
	if (nghttp2_session_callbacks_new(&srv.cbs) || nghttp2_option_new(&srv.opt))
		return -ENOMEM;
	nghttp2_session_callbacks_set_send_callback(srv.cbs, on_send);
	nghttp2_session_callbacks_set_on_begin_headers_callback(srv.cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(srv.cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(srv.cbs, on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(srv.cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(srv.cbs, on_stream_close);
	/* h2load and the proxies open many streams per connection: do not
	 * keep closed streams for priority bookkeeping */
	nghttp2_option_set_no_closed_streams(srv.opt, 1);
	return 0;
}

int main(int argc, char **argv)
{
	struct epoll_event events[MAX_EVENTS];
	struct {
		enum tag tag;
		int fd;
	} sig = { TAG_SIGNAL, -1 }, lis = { TAG_LISTENER, -1 };
	struct epoll_event ev = { .events = EPOLLIN };
	struct sockaddr_in sa;
	struct rlimit rl;
	unsigned long max_seconds;
	double deadline;
	sigset_t mask;

	if (parse_args(argc, argv, &sa, &max_seconds)) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (setup_nghttp2()) {
		fprintf(stderr, "dmsc-grpcsrv: nghttp2: out of memory\n");
		return 1;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 ||
	    (sig.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0 ||
	    (srv.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
		fprintf(stderr, "dmsc-grpcsrv: signalfd/epoll: %s\n", strerror(errno));
		return 1;
	}
	lis.fd = open_listener(&sa);
	if (lis.fd < 0)
		return 1;
	ev.data.ptr = &sig;
	if (epoll_ctl(srv.epfd, EPOLL_CTL_ADD, sig.fd, &ev) < 0)
		goto epoll_err;
	ev.data.ptr = &lis;
	if (epoll_ctl(srv.epfd, EPOLL_CTL_ADD, lis.fd, &ev) < 0)
		goto epoll_err;
	/* stdout may be a pipe the caller closed: a failed write is not fatal */
	printf("ready\n");
	fflush(stdout);

	deadline = dmsc_now_seconds() + (double)max_seconds;
	for (;;) {
		double left = deadline - dmsc_now_seconds();
		int n;

		if (left <= 0)
			return 0;
		n = epoll_wait(srv.epfd, events, MAX_EVENTS, left > 1.0 ? 1000 : (int)(left * 1000) + 1);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "dmsc-grpcsrv: epoll_wait: %s\n", strerror(errno));
			return 1;
		}
		for (int i = 0; i < n; i++) {
			enum tag *tag = events[i].data.ptr;
			struct conn *c = (struct conn *)tag;

			if (*tag == TAG_SIGNAL)
				return 0; /* connections die with the process */
			if (*tag == TAG_LISTENER) {
				accept_batch(lis.fd);
				continue;
			}
			if ((events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && conn_read(c) < 0) {
				conn_close(c);
				continue;
			}
			if (conn_flush(c) < 0)
				conn_close(c);
		}
	}
epoll_err:
	fprintf(stderr, "dmsc-grpcsrv: epoll_ctl: %s\n", strerror(errno));
	return 1;
}
