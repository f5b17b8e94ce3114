// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* A helper's hand-over to its successor (baton.h, docs/design.md decision 80). */
#define _GNU_SOURCE
#include <errno.h>
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
#include "log.h"

void dmsc_baton_init(struct dmsc_baton *b, const char *role, const char *pin_dir,
		     const char *listen)
{
	char name[256];
	uint32_t h = 2166136261u;
	size_t i, n;

	memset(b, 0, sizeof(*b));
	b->fd = -1;
	b->sa.sun_family = AF_UNIX;
	n = (size_t)snprintf(name, sizeof(name), "%s %s %s", role, pin_dir, listen);
	if (n >= sizeof(name))
		n = sizeof(name) - 1;
	/* abstract (sun_path[0] 0), of this network namespace; a long pin
	 * directory is named by its hash */
	if (n + 1 + 10 > sizeof(b->sa.sun_path)) {
		for (i = 0; i < n; i++) {
			h ^= (uint8_t)name[i];
			h *= 16777619u;
		}
		n = (size_t)snprintf(name, sizeof(name), "%s %08x", role, h);
	}
	n = (size_t)snprintf(b->sa.sun_path + 1, sizeof(b->sa.sun_path) - 1, "dmsc-baton %s", name);
	b->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
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
