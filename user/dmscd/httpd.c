// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd.h"
#include "http_reason.h"
#include "log.h"
#include "apply_mirror.h"

int dmsc_httpd_listen(const char *addr_port, char *bound, size_t bound_len)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t slen = sizeof(sa);
	char host[64], *colon, *end, a[INET_ADDRSTRLEN];
	unsigned long port;
	int fd, one = 1, err;

	snprintf(host, sizeof(host), "%s", addr_port);
	colon = strrchr(host, ':');
	if (!colon) {
		pr_warn("--metrics \"%s\": expected ADDR:PORT, e.g. 127.0.0.1:9464, or off\n",
			addr_port);
		return -EINVAL;
	}
	*colon = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port > 65535 ||
	    inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		pr_warn("--metrics \"%s\": expected an IPv4 ADDR:PORT, e.g. 127.0.0.1:9464\n",
			addr_port);
		return -EINVAL;
	}
	sa.sin_port = htons((unsigned short)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 16)) {
		err = -errno;
		pr_warn("metrics: cannot listen on %s: %s\n", addr_port, strerror(-err));
		close(fd);
		return err;
	}
	getsockname(fd, (struct sockaddr *)&sa, &slen);
	inet_ntop(AF_INET, &sa.sin_addr, a, sizeof(a));
	snprintf(bound, bound_len, "%s:%u", a, ntohs(sa.sin_port));
	return fd;
}

int dmsc_httpd_parse_request(const char *req, size_t len, char *path, size_t path_len,
			     int *head_only)
{
	const char *sp1, *sp2, *end = req + len, *q;
	size_t plen;

	sp1 = memchr(req, ' ', len);
	if (!sp1)
		return 400;
	sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
	if (!sp2 || sp2 == sp1 + 1 || sp1[1] != '/')
		return 400;
	if ((size_t)(end - sp2) < 9 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
		return 400;
	if ((size_t)(sp1 - req) == 3 && !strncmp(req, "GET", 3))
		*head_only = 0;
	else if ((size_t)(sp1 - req) == 4 && !strncmp(req, "HEAD", 4))
		*head_only = 1;
	else
		return 405;
	q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
	plen = (size_t)((q ? q : sp2) - (sp1 + 1));
	if (plen >= path_len)
		return 400;
	memcpy(path, sp1 + 1, plen);
	path[plen] = '\0';
	return 0;
}

/* Waits for fd to be ready for events until deadline; 0 ready. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	int64_t left = deadline - dmsc_now_ms();

	if (left <= 0)
		return -ETIMEDOUT;
	if (poll(&p, 1, (int)left) <= 0)
		return -ETIMEDOUT;
	return 0;
}

/* Sends all of p, for as long as the client keeps reading: gives up after
 * DMSC_HTTPD_IDLE_MS without progress. 0, or -1 when the client is gone. */
static int send_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(fd, POLLOUT, dmsc_now_ms() + DMSC_HTTPD_IDLE_MS))
				return -1;
			continue;
		}
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads one request from fd (non-blocking), answers it with what handler
 * renders and closes fd. The request has DMSC_HTTPD_TIMEOUT_MS to arrive;
 * the answer may take as long as the client reads, but gives up after
 * DMSC_HTTPD_IDLE_MS without progress. */
static void serve_conn(int fd, dmsc_httpd_handler handler, void *ctx)
{
	char req[DMSC_HTTPD_REQUEST_MAX], path[1024], head[256];
	int64_t deadline = dmsc_now_ms() + DMSC_HTTPD_TIMEOUT_MS;
	struct dmsc_buf body = {0};
	size_t len = 0;
	int status, head_only = 0;

	/* Read the request head (up to the blank line). */
	for (;;) {
		ssize_t n;

		if (len >= sizeof(req) - 1) {
			status = 400;
			goto answer;
		}
		n = recv(fd, req + len, sizeof(req) - 1 - len, 0);
		if (n < 0 && errno == EAGAIN) {
			if (wait_fd(fd, POLLIN, deadline))
				goto out;
			continue;
		}
		if (n <= 0)
			goto out;
		len += (size_t)n;
		req[len] = '\0';
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			break;
	}
	status = dmsc_httpd_parse_request(req, len, path, sizeof(path), &head_only);
	if (status == 0)
		status = handler(path, &body, ctx);
answer:
	if (status != 200) {
		dmsc_buf_free(&body);
		dmsc_buf_printf(&body, "%d %s\n", status, dmsc_http_reason(status));
	}
	snprintf(head, sizeof(head),
		 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		 "Connection: close\r\n\r\n",
		 status, dmsc_http_reason(status),
		 status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain",
		 body.len);
	if (send_all(fd, head, strlen(head)) == 0 && !head_only)
		send_all(fd, body.p ? body.p : "", body.len);
out:
	dmsc_buf_free(&body);
	close(fd);
}

struct conn {
	struct dmsc_httpd *h;
	int fd;
	void *job;
};

static void *conn_thread(void *arg)
{
	struct conn *c = arg;
	struct dmsc_httpd *h = c->h;

	serve_conn(c->fd, h->handler, c->job);
	if (h->free_job)
		h->free_job(c->job);
	free(c);
	/* The page was built whole, then freed: give the memory back. */
	malloc_trim(0);
	atomic_fetch_sub(&h->active, 1);
	return NULL;
}

void dmsc_httpd_accept(struct dmsc_httpd *h)
{
	static const char busy[] =
	    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
	    "Content-Length: 36\r\nConnection: close\r\n\r\n"
	    "503 too many scrapes at once; retry\n";
	pthread_attr_t attr;
	struct conn *c;
	pthread_t t;
	int fd;

	while ((fd = accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		if (atomic_load(&h->active) >= h->max_conns) {
			/* A fresh socket takes this much without blocking. */
			if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
				pr_debug("metrics: 503 not sent: %s\n", strerror(errno));
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->h = h;
		c->fd = fd;
		c->job = h->make_job ? h->make_job(h->ctx) : h->ctx;
		atomic_fetch_add(&h->active, 1);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, conn_thread, c)) {
			pr_warn("metrics: cannot start a thread for a scrape\n");
			atomic_fetch_sub(&h->active, 1);
			if (h->free_job)
				h->free_job(c->job);
			free(c);
			close(fd);
		}
		pthread_attr_destroy(&attr);
	}
}
