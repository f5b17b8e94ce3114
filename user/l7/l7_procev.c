// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The kernel's process events for dmsc-l7: l7_procev.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdalign.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>

#include "l7_procev.h"
#include "log.h"

/* Room for a burst of execs before the socket overruns (-ENOBUFS). */
#define PROCEV_RCVBUF (1 << 20)
/* recv() calls per dmsc_l7_procev_read */
#define PROCEV_READS 64

/* The socket, made in the initial network namespace (the connector's). */
static int socket_in_init_net(int own_netns_fd)
{
	struct stat own, init;
	int init_fd, fd, err;

	/* init's, else kthreadd's (a kernel thread's is always the initial
	 * one; init's may be closed to us, as in some sandboxes) */
	init_fd = open("/proc/1/ns/net", O_RDONLY | O_CLOEXEC);
	if (init_fd < 0)
		init_fd = open("/proc/2/ns/net", O_RDONLY | O_CLOEXEC);
	if (init_fd < 0)
		return -errno;
	if (fstat(init_fd, &init) < 0 || fstat(own_netns_fd, &own) < 0) {
		err = -errno;
		close(init_fd);
		return err;
	}
	if (own.st_ino != init.st_ino && setns(init_fd, CLONE_NEWNET) < 0) {
		err = -errno;
		close(init_fd);
		return err;
	}
	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_CONNECTOR);
	err = fd < 0 ? -errno : 0;
	close(init_fd);
	if (own.st_ino != init.st_ino && setns(own_netns_fd, CLONE_NEWNET) < 0) {
		pr_warn("cannot return to the helper's own network namespace: %s\n",
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return -EIO;
	}
	return err ? err : fd;
}

/* A request to the connector: LISTEN alone, or (Linux 6.6 and later) LISTEN
 * with the events wanted, the kernel's struct proc_input; a kernel before
 * 6.6 ignores a request of the second size. */
static int subscribe(int fd, bool exec_only)
{
	struct {
		alignas(NLMSG_ALIGNTO) struct nlmsghdr nl;
		struct cn_msg cn;
		__u32 op;
		__u32 events;
	} __attribute__((packed)) req = {0};
	size_t len = exec_only ? 8 : 4;

	req.nl.nlmsg_len = (__u32)(sizeof(req.nl) + sizeof(req.cn) + len);
	req.nl.nlmsg_type = NLMSG_DONE;
	req.cn.id.idx = CN_IDX_PROC;
	req.cn.id.val = CN_VAL_PROC;
	req.cn.len = (__u16)len;
	req.op = PROC_CN_MCAST_LISTEN;
	req.events = PROC_EVENT_EXEC;
	return send(fd, &req, req.nl.nlmsg_len, 0) == (ssize_t)req.nl.nlmsg_len ? 0 : -errno;
}

int dmsc_l7_procev_open(int own_netns_fd)
{
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC};
	int fd, size = PROCEV_RCVBUF, err;

	fd = socket_in_init_net(own_netns_fd);
	if (fd < 0)
		return fd;
	/* best effort: the default buffer overruns sooner, and is told */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	/* every event (any kernel), then execs only where the kernel can
	 * filter (6.6: forks and exits no longer wake the helper) */
	err = subscribe(fd, false);
	if (!err)
		err = subscribe(fd, true);
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

int dmsc_l7_procev_read(int fd, void (*exec)(int tgid, void *arg), void *arg)
{
	alignas(struct nlmsghdr) char buf[8192];
	int lost = 0, n, reads;

	/* bounded: a host that execs faster than this reads is read again
	 * at the caller's next poll, its other work done meanwhile */
	for (reads = 0; reads < PROCEV_READS; reads++) {
		struct nlmsghdr *nh;

		n = (int)recv(fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOBUFS) {
				lost = -ENOBUFS; /* and read on: the socket has more */
				continue;
			}
			return errno == EAGAIN ? lost : -errno;
		}
		if (n == 0)
			return lost;
		for (nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, (unsigned int)n);
		     nh = NLMSG_NEXT(nh, n)) {
			const struct cn_msg *cn = NLMSG_DATA(nh);
			const struct proc_event *ev;

			if (nh->nlmsg_type == NLMSG_ERROR || nh->nlmsg_type == NLMSG_NOOP)
				continue;
			if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(*cn) + sizeof(*ev)) ||
			    cn->id.idx != CN_IDX_PROC || cn->id.val != CN_VAL_PROC)
				continue;
			ev = (const struct proc_event *)cn->data;
			if (ev->what == PROC_EVENT_EXEC)
				exec((int)ev->event_data.exec.process_tgid, arg);
		}
	}
	return lost;
}
