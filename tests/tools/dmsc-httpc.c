// SPDX-License-Identifier: GPL-2.0
/*
 * dmsc-httpc: a small HTTP/1.1 client for the dmsc-l7 tests.
 *
 *   dmsc-httpc --connect ADDR:PORT [--count N] [--conns K] [--pipeline D]
 *              [--method M] [--path P] [--header 'Name: value']...
 *              [--body-bytes N [--chunked]] [--timeout-ms N]
 *     N requests over K keep-alive connections (one after the other on each,
 *     or D at a time, pipelined). Prints JSON: "sent", "answered", per
 *     status code "status", per 2xx body (the backend's name) "bodies",
 *     "retry_after" (429s that carried Retry-After), "errors", "reconnects",
 *     and "peer_is_target" (connections whose getpeername() equals ADDR:PORT).
 *
 *   dmsc-httpc --connect ADDR:PORT --raw FILE [--slow-ms N] [--timeout-ms N]
 *     Sends FILE's bytes as they are (one byte every N ms with --slow-ms),
 *     then reads until the server closes or the timeout. Prints JSON: the
 *     status codes of the responses received, "closed" (the server closed),
 *     "send_error" (the server closed while we were still sending).
 *
 * Every wait is bounded (--timeout-ms, default 5000, per read). Exit 0 when
 * it ran (whatever the answers), 1 on a local error, 2 on usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 32
#define BUF_SIZE (256 * 1024)
#define MAX_BODIES 32

static struct sockaddr_in target;
static const char *method = "GET", *path = "/", *raw_file;
static const char *headers[MAX_HEADERS];
static int n_headers;
static unsigned long count = 1, conns = 1, pipeline = 1, body_bytes, timeout_ms = 5000, slow_ms;
static bool chunked;

static unsigned long status_n[600], retry_after, errors, reconnects, answered, sent, peer_is_target;
static struct {
	char name[64];
	unsigned long n;
} bodies[MAX_BODIES];
static int n_bodies;

static int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(s, &end, 10);
	return errno || *end || end == s || *out > max || s[0] == '-' ? -1 : 0;
}

static int dial(void)
{
	struct timeval tv = {(time_t)(timeout_ms / 1000), (long)(timeout_ms % 1000) * 1000};
	struct sockaddr_in peer;
	socklen_t len = sizeof(peer);
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&target, sizeof(target)) < 0) {
		close(fd);
		return -1;
	}
	if (getpeername(fd, (struct sockaddr *)&peer, &len) == 0 &&
	    peer.sin_addr.s_addr == target.sin_addr.s_addr && peer.sin_port == target.sin_port)
		peer_is_target++;
	return fd;
}

static int send_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_request(int fd)
{
	static char body[64 * 1024];
	char head[8192];
	unsigned long left = body_bytes;
	int n, i;

	memset(body, 'x', sizeof(body));
	n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: dmsc-test\r\n", method, path);
	for (i = 0; i < n_headers; i++)
		n += snprintf(head + n, sizeof(head) - (size_t)n, "%s\r\n", headers[i]);
	if (body_bytes && chunked)
		n += snprintf(head + n, sizeof(head) - (size_t)n, "Transfer-Encoding: chunked\r\n");
	else if (body_bytes || !strcmp(method, "POST") || !strcmp(method, "PUT"))
		n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %lu\r\n",
			      body_bytes);
	n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
	if (send_all(fd, head, (size_t)n))
		return -1;
	while (left) {
		size_t piece = left < sizeof(body) ? left : sizeof(body);
		char sz[32];

		if (chunked) {
			n = snprintf(sz, sizeof(sz), "%zx\r\n", piece);
			if (send_all(fd, sz, (size_t)n))
				return -1;
		}
		if (send_all(fd, body, piece) || (chunked && send_all(fd, "\r\n", 2)))
			return -1;
		left -= piece;
	}
	if (body_bytes && chunked && send_all(fd, "0\r\n\r\n", 5))
		return -1;
	sent++;
	return 0;
}

/* A connection's input: bytes read but not consumed yet. */
struct in {
	char buf[BUF_SIZE];
	size_t len;
};

static int fill(int fd, struct in *in)
{
	ssize_t n;

	if (in->len == sizeof(in->buf))
		return -1;
	n = recv(fd, in->buf + in->len, sizeof(in->buf) - in->len, 0);
	if (n <= 0)
		return -1;
	in->len += (size_t)n;
	return 0;
}

static void consume(struct in *in, size_t n)
{
	memmove(in->buf, in->buf + n, in->len - n);
	in->len -= n;
}

static const char *find_header(const char *head, size_t len, const char *name)
{
	size_t nlen = strlen(name);
	const char *p = head, *end = head + len;

	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);

		if (!eol)
			break;
		if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':')
			return p + nlen + 1;
		p = eol + 2;
	}
	return NULL;
}

static void count_body(const char *b, size_t len)
{
	int i;

	while (len && (b[len - 1] == '\n' || b[len - 1] == '\r'))
		len--;
	if (len >= sizeof(bodies[0].name))
		len = sizeof(bodies[0].name) - 1;
	for (i = 0; i < n_bodies; i++)
		if (strlen(bodies[i].name) == len && !memcmp(bodies[i].name, b, len)) {
			bodies[i].n++;
			return;
		}
	if (n_bodies < MAX_BODIES) {
		memcpy(bodies[n_bodies].name, b, len);
		bodies[n_bodies].name[len] = '\0';
		bodies[n_bodies++].n = 1;
	}
}

/* Reads one response; *close_after: the server said Connection: close.
 * Returns the status, or -1. */
static int read_response(int fd, struct in *in, bool is_head, bool *close_after)
{
	char *end;
	size_t head_len, body_len = 0;
	const char *v;
	int status;

	while (!(end = memmem(in->buf, in->len, "\r\n\r\n", 4)))
		if (fill(fd, in))
			return -1;
	head_len = (size_t)(end - in->buf) + 4;
	if (in->len < 12 || strncmp(in->buf, "HTTP/1.", 7) != 0)
		return -1;
	status = atoi(in->buf + 9);
	if (status < 100 || status > 599)
		return -1;
	v = find_header(in->buf, head_len, "connection");
	*close_after = v && strncasecmp(v + strspn(v, " "), "close", 5) == 0;
	if (status == 429 && find_header(in->buf, head_len, "retry-after"))
		retry_after++;
	v = find_header(in->buf, head_len, "content-length");
	if (v && !is_head)
		body_len = strtoul(v, NULL, 10);
	if (find_header(in->buf, head_len, "transfer-encoding") && !is_head) {
		/* chunked: collect the chunks' data, bounded by the buffer */
		size_t pos = head_len;
		char data[4096];
		size_t dlen = 0;

		for (;;) {
			char *eol;
			size_t sz;

			while (!(eol = memmem(in->buf + pos, in->len - pos, "\r\n", 2)))
				if (fill(fd, in))
					return -1;
			sz = strtoul(in->buf + pos, NULL, 16);
			pos = (size_t)(eol - in->buf) + 2;
			while (in->len < pos + sz + 2)
				if (fill(fd, in))
					return -1;
			if (sz && dlen + sz <= sizeof(data)) {
				memcpy(data + dlen, in->buf + pos, sz);
				dlen += sz;
			}
			pos += sz + 2;
			if (sz == 0)
				break;
		}
		if (status >= 200 && status < 300)
			count_body(data, dlen);
		consume(in, pos);
		return status;
	}
	while (in->len < head_len + body_len)
		if (fill(fd, in))
			return -1;
	if (status >= 200 && status < 300)
		count_body(in->buf + head_len, body_len);
	consume(in, head_len + body_len);
	return status;
}

static void run_requests(void)
{
	static struct in in;
	unsigned long per_conn, done_total = 0, k;
	bool is_head = !strcmp(method, "HEAD");

	per_conn = (count + conns - 1) / conns;
	for (k = 0; k < conns && done_total < count; k++) {
		unsigned long todo = count - done_total < per_conn ? count - done_total : per_conn;
		unsigned long done = 0;
		int fd = dial();

		in.len = 0;
		if (fd < 0) {
			errors += todo;
			done_total += todo;
			continue;
		}
		while (done < todo) {
			unsigned long batch = todo - done < pipeline ? todo - done : pipeline, i;
			bool closed = false, failed = false;

			for (i = 0; i < batch; i++)
				if (send_request(fd)) {
					failed = true;
					break;
				}
			for (i = 0; !failed && i < batch; i++) {
				int st = read_response(fd, &in, is_head, &closed);

				if (st < 0) {
					failed = true;
					break;
				}
				status_n[st]++;
				answered++;
				done++;
				if (closed)
					break;
			}
			if (failed) {
				errors++;
				done++;
			}
			if ((failed || closed) && done < todo) {
				/* reconnect for the rest (429 with close, etc.) */
				close(fd);
				in.len = 0;
				reconnects++;
				fd = dial();
				if (fd < 0) {
					errors += todo - done;
					done = todo;
				}
			}
		}
		if (fd >= 0)
			close(fd);
		done_total += todo;
	}
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int run_raw(void)
{
	static struct in in;
	struct stat st;
	char *data;
	FILE *f;
	size_t i;
	int fd, statuses[64], n_st = 0;
	bool closed = false, send_error = false;
	double t0 = now_ms();

	f = fopen(raw_file, "rb");
	if (!f || fstat(fileno(f), &st) < 0) {
		fprintf(stderr, "dmsc-httpc: %s: %s\n", raw_file, strerror(errno));
		return 1;
	}
	data = malloc((size_t)st.st_size + 1);
	if (!data || fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
		fprintf(stderr, "dmsc-httpc: cannot read %s\n", raw_file);
		return 1;
	}
	fclose(f);
	fd = dial();
	if (fd < 0) {
		printf("{\"connected\":false,\"statuses\":[],\"closed\":true}\n");
		return 0;
	}
	if (slow_ms) {
		struct timespec ts = {(time_t)(slow_ms / 1000), (long)(slow_ms % 1000) * 1000000};

		for (i = 0; i < (size_t)st.st_size && !send_error; i++) {
			if (send_all(fd, data + i, 1))
				send_error = true;
			else
				nanosleep(&ts, NULL);
		}
	} else if (send_all(fd, data, (size_t)st.st_size)) {
		send_error = true;
	}
	/* read every response until close or timeout */
	for (;;) {
		char *end = memmem(in.buf, in.len, "\r\n\r\n", 4);

		if (end && in.len >= 12 && !strncmp(in.buf, "HTTP/1.", 7)) {
			size_t head_len = (size_t)(end - in.buf) + 4, body_len = 0;
			const char *v = find_header(in.buf, head_len, "content-length");

			if (v)
				body_len = strtoul(v, NULL, 10);
			if (in.len >= head_len + body_len) {
				if (n_st < 64)
					statuses[n_st++] = atoi(in.buf + 9);
				consume(&in, head_len + body_len);
				continue;
			}
		}
		if (in.len == sizeof(in.buf))
			break;
		{
			ssize_t n = recv(fd, in.buf + in.len, sizeof(in.buf) - in.len, 0);

			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
				closed = true;
				break;
			}
			if (n < 0)
				break; /* timeout: the server kept the connection open */
			in.len += (size_t)n;
		}
	}
	close(fd);
	printf("{\"connected\":true,\"statuses\":[");
	for (i = 0; i < (size_t)n_st; i++)
		printf("%s%d", i ? "," : "", statuses[i]);
	printf("],\"closed\":%s,\"send_error\":%s,\"elapsed_ms\":%.0f}\n",
	       closed ? "true" : "false", send_error ? "true" : "false", now_ms() - t0);
	free(data);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(
	    f, "usage: dmsc-httpc --connect ADDR:PORT [--count N] [--conns K] [--pipeline D]\n"
	       "                  [--method M] [--path P] [--header 'N: v']... [--body-bytes N]\n"
	       "                  [--chunked] [--timeout-ms N]\n"
	       "       dmsc-httpc --connect ADDR:PORT --raw FILE [--slow-ms N] [--timeout-ms N]\n");
}

int main(int argc, char **argv)
{
	int i, k;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int bad = 0;

		if (!strcmp(a, "--chunked")) {
			chunked = true;
			continue;
		}
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		if (!v) {
			usage(stderr);
			return 2;
		}
		i++;
		if (!strcmp(a, "--connect")) {
			char host[64];
			const char *colon = strrchr(v, ':');
			unsigned long port;

			bad = !colon || (size_t)(colon - v) >= sizeof(host) ||
			      parse_ulong(colon + 1, 65535, &port);
			if (!bad) {
				memcpy(host, v, (size_t)(colon - v));
				host[colon - v] = '\0';
				target.sin_family = AF_INET;
				target.sin_port = htons((unsigned short)port);
				bad = inet_pton(AF_INET, host, &target.sin_addr) != 1;
			}
		} else if (!strcmp(a, "--count")) {
			bad = parse_ulong(v, 10000000, &count) || !count;
		} else if (!strcmp(a, "--conns")) {
			bad = parse_ulong(v, 100000, &conns) || !conns;
		} else if (!strcmp(a, "--pipeline")) {
			bad = parse_ulong(v, 64, &pipeline) || !pipeline;
		} else if (!strcmp(a, "--method")) {
			method = v;
		} else if (!strcmp(a, "--path")) {
			path = v;
		} else if (!strcmp(a, "--header")) {
			bad = n_headers == MAX_HEADERS;
			if (!bad)
				headers[n_headers++] = v;
		} else if (!strcmp(a, "--body-bytes")) {
			bad = parse_ulong(v, 1ul << 32, &body_bytes);
		} else if (!strcmp(a, "--timeout-ms")) {
			bad = parse_ulong(v, 600000, &timeout_ms) || !timeout_ms;
		} else if (!strcmp(a, "--raw")) {
			raw_file = v;
		} else if (!strcmp(a, "--slow-ms")) {
			bad = parse_ulong(v, 10000, &slow_ms);
		} else {
			bad = 1;
		}
		if (bad) {
			fprintf(stderr, "dmsc-httpc: %s \"%s\": bad value or unknown option\n", a,
				v);
			return 2;
		}
	}
	if (!target.sin_family) {
		usage(stderr);
		return 2;
	}
	if (raw_file)
		return run_raw();
	run_requests();
	printf("{\"sent\":%lu,\"answered\":%lu,\"errors\":%lu,\"reconnects\":%lu,"
	       "\"peer_is_target\":%lu,\"retry_after\":%lu,\"status\":{",
	       sent, answered, errors, reconnects, peer_is_target, retry_after);
	for (i = 100, k = 0; i < 600; i++)
		if (status_n[i])
			printf("%s\"%d\":%lu", k++ ? "," : "", i, status_n[i]);
	printf("},\"bodies\":{");
	for (i = 0; i < n_bodies; i++)
		printf("%s\"%s\":%lu", i ? "," : "", bodies[i].name, bodies[i].n);
	printf("}}\n");
	return 0;
}
