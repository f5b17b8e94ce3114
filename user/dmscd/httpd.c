// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd.h"
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

static void send_all(int fd, const char *p, size_t len, int64_t deadline)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EAGAIN) {
			if (wait_fd(fd, POLLOUT, deadline))
				return;
			continue;
		}
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

static const char *status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	default:
		return "Internal Server Error";
	}
}

void dmsc_httpd_serve(int listen_fd, dmsc_httpd_handler handler, void *ctx)
{
	char req[DMSC_HTTPD_REQUEST_MAX], path[1024], head[256];
	int64_t deadline = dmsc_now_ms() + DMSC_HTTPD_TIMEOUT_MS;
	struct dmsc_buf body = {0};
	size_t len = 0;
	int fd, status, head_only = 0;

	fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
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
		dmsc_buf_printf(&body, "%d %s\n", status, status_text(status));
	}
	snprintf(head, sizeof(head),
		 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		 "Connection: close\r\n\r\n",
		 status, status_text(status),
		 status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain",
		 body.len);
	send_all(fd, head, strlen(head), deadline);
	if (!head_only)
		send_all(fd, body.p ? body.p : "", body.len, deadline);
out:
	dmsc_buf_free(&body);
	close(fd);
}
