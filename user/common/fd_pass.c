// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fd_pass.h"
#include "log.h"

int dmsc_fd_send(int sock, const void *msg, size_t len, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *cm;
	ssize_t n;

	if (fd >= 0) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	do
		n = sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EMSGSIZE;
}

ssize_t dmsc_fd_recv(int sock, char *buf, size_t len, int *fd)
{
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = buf, .iov_len = len - 1};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *cm;
	size_t i, nfd;
	ssize_t n;
	int got;

	*fd = -1;
	do
		n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < nfd; i++) {
			memcpy(&got, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (*fd < 0 && !(mh.msg_flags & MSG_TRUNC))
				*fd = got;
			else
				close(got);
		}
	}
	if (mh.msg_flags & MSG_TRUNC) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return -EMSGSIZE;
	}
	return n;
}

void dmsc_policy_updates_serve(int *sock, dmsc_policy_take_fn take, void *ctx, const char *who)
{
	char msg[64], answer[320], why[256];
	ssize_t n;
	int fd;

	while (*sock >= 0) {
		n = dmsc_fd_recv(*sock, msg, sizeof(msg), &fd);
		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			close(*sock);
			*sock = -1;
			if (fd >= 0)
				close(fd);
			return;
		}
		if (strncmp(msg, "policy ", 7) || fd < 0) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		why[0] = '\0';
		if (take(ctx, fd, msg, why, sizeof(why)) == 0)
			snprintf(answer, sizeof(answer), "ok %s", msg + 7);
		else
			snprintf(answer, sizeof(answer), "fail %s: %s", msg + 7, why);
		close(fd);
		if (dmsc_fd_send(*sock, answer, strlen(answer), -1))
			pr_warn("%s: cannot answer dmscd about %s\n", who, msg);
	}
}
