// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* A helper's hand-over to its successor (baton.h, docs/design.md decision 80). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "baton.h"
#include "clock.h"
#include "dmsc/shared.h"
#include "fd_pass.h"
#include "log.h"

/* The abstract name (sun_path[0] 0, of this network namespace) "KIND
 * ROLE PIN_DIR[ LISTEN]"; a long one is named by its hash. */
static socklen_t name_of(struct sockaddr_un *sa, const char *kind, const char *role,
			 const char *pin_dir, const char *listen)
{
	char name[256];
	uint32_t h = 2166136261u;
	size_t i, n;

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	n = (size_t)snprintf(name, sizeof(name), "%s %s%s%s", role, pin_dir, listen ? " " : "",
			     listen ? listen : "");
	if (n >= sizeof(name))
		n = sizeof(name) - 1;
	if (n + 1 + strlen(kind) > sizeof(sa->sun_path)) {
		for (i = 0; i < n; i++) {
			h ^= (uint8_t)name[i];
			h *= 16777619u;
		}
		n = (size_t)snprintf(name, sizeof(name), "%s %08x", role, h);
	}
	n = (size_t)snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "%s %s", kind, name);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

void dmsc_baton_init(struct dmsc_baton *b, const char *role, const char *pin_dir,
		     const char *listen)
{
	memset(b, 0, sizeof(*b));
	b->fd = -1;
	b->len = name_of(&b->sa, "dmsc-baton", role, pin_dir, listen);
}

/* Listens on the name: false while another holds it. */
static bool hold(struct dmsc_baton *b)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return false;
	if (bind(fd, (struct sockaddr *)&b->sa, b->len) || listen(fd, 4)) {
		close(fd);
		return false;
	}
	b->fd = fd;
	return true;
}

/* Tells the holder to drain: a connection to it is the message. */
static void ask(struct dmsc_baton *b)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return;
	if (!connect(fd, (struct sockaddr *)&b->sa, b->len))
		b->asked = true;
	close(fd);
}

void dmsc_baton_take(struct dmsc_baton *b)
{
	if (b->gone || b->fd >= 0 || hold(b))
		return;
	ask(b);
}

bool dmsc_baton_passed(struct dmsc_baton *b)
{
	int fd;

	if (b->gone)
		return false;
	if (b->fd < 0) {
		/* the predecessor lets go when it starts to drain; one that
		 * did not hear us (it was not accepting yet) is asked again */
		if (!hold(b))
			ask(b);
		return false;
	}
	fd = accept4(b->fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return false;
	close(fd);
	dmsc_baton_close(b);
	return true;
}

void dmsc_baton_close(struct dmsc_baton *b)
{
	b->gone = true;
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
}

bool dmsc_helper_orphan_over(int64_t since_ms, unsigned int orphan_ms, const char *pin_dir)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, DMSC_MAP_INSTALL);
	if (stat(path, &st) && errno == ENOENT) {
		pr_info("the datapath is uninstalled (no %s): draining\n", path);
		return true;
	}
	if (dmsc_now_ms() - since_ms >= (int64_t)orphan_ms) {
		pr_info("no helper of a new dmscd took over within %u ms: draining\n", orphan_ms);
		return true;
	}
	return false;
}

void dmsc_adopt_init(struct dmsc_adopt *a, const char *role, const char *pin_dir)
{
	a->fd = -1;
	a->len = name_of(&a->sa, "dmsc-adopt", role, pin_dir, NULL);
}

void dmsc_adopt_offer(struct dmsc_adopt *a)
{
	int fd;

	if (a->fd >= 0)
		return;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	/* another orphan of the role offers itself already: this one
	 * drains once the next dmscd's helper serves (the baton) */
	if (bind(fd, (struct sockaddr *)&a->sa, a->len) || listen(fd, 4)) {
		close(fd);
		return;
	}
	a->fd = fd;
}

int dmsc_adopt_taken(struct dmsc_adopt *a, char *metrics, size_t len, pid_t *by)
{
	struct pollfd p = {.events = POLLIN};
	char msg[PATH_MAX + 16], reply[32];
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	int upd = -1;
	ssize_t n;

	if (a->fd < 0) {
		dmsc_adopt_offer(a);
		return -1;
	}
	p.fd = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC);
	if (p.fd < 0)
		return -1;
	/* only a dmscd of our own user (or root) adopts; its message
	 * follows its connect at once */
	if (getsockopt(p.fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) ||
	    (cr.uid != 0 && cr.uid != geteuid()) || poll(&p, 1, 500) != 1)
		goto out;
	n = dmsc_fd_recv(p.fd, msg, sizeof(msg), &upd);
	if (n <= 6 || strncmp(msg, "adopt ", 6) || upd < 0 || !msg[6])
		goto out;
	snprintf(reply, sizeof(reply), "adopted %d", (int)getpid());
	if (dmsc_fd_send(p.fd, reply, strlen(reply), -1))
		goto out;
	snprintf(metrics, len, "%s", msg + 6);
	*by = cr.pid;
	close(p.fd);
	dmsc_adopt_close(a);
	return upd;
out:
	if (upd >= 0)
		close(upd);
	close(p.fd);
	return -1;
}

void dmsc_adopt_close(struct dmsc_adopt *a)
{
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
}
