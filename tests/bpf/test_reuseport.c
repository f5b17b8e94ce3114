// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* A listener handed over (user/common/reuseport.h, docs/design.md decision
 * 60): two listeners of one SO_REUSEPORT group on 127.0.0.1, connections
 * queued (handshake done, not accepted) on both, the first listener
 * closed. With the migrating program every connection is accepted by the
 * second and answers; without it, those queued on the first are reset.
 * Real sockets on the running kernel; needs root (the program) and Linux
 * 5.14 (skipped, never passed, before). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "reuseport.h"

#define CLIENTS 32

static bool kernel_at_least(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	return !uname(&u) && sscanf(u.release, "%d.%d", &ma, &mi) == 2 &&
	       (ma > major || (ma == major && mi >= minor));
}

static int listener(struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	socklen_t len = sizeof(*sa);

	cr_assert(fd >= 0);
	cr_assert(!setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)));
	cr_assert(!bind(fd, (struct sockaddr *)sa, sizeof(*sa)), "bind: %s", strerror(errno));
	cr_assert(!listen(fd, CLIENTS * 2));
	cr_assert(!getsockname(fd, (struct sockaddr *)sa, &len));
	return fd;
}

/* The clients whose byte comes back through the listener that stays. */
static int handover(bool migrate)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int a, b, c[CLIENTS], i, answered = 0;

	a = listener(&sa); /* port 0: the kernel picks; b joins it */
	b = listener(&sa);
	if (migrate) {
		int err = dmsc_reuseport_migrate(a);

		if (err && !kernel_at_least(5, 14)) {
			close(a);
			close(b);
			return -1;
		}
		cr_assert_eq(err, 0, "attach on a kernel that has migration: %s", strerror(-err));
	}
	for (i = 0; i < CLIENTS; i++) {
		/* different source ports: the group's hash spreads them */
		c[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert(c[i] >= 0);
		cr_assert(!connect(c[i], (struct sockaddr *)&sa, sizeof(sa)), "connect: %s",
			  strerror(errno));
		cr_assert_eq(write(c[i], "x", 1), 1);
	}
	close(a); /* what an old helper's exit does to its queue */
	fcntl(b, F_SETFL, O_NONBLOCK);
	for (;;) {
		char ch;
		int s = accept(b, NULL, NULL);

		if (s < 0)
			break;
		if (read(s, &ch, 1) == 1 && write(s, &ch, 1) == 1)
			answered++;
		close(s);
	}
	for (i = 0; i < CLIENTS; i++)
		close(c[i]);
	close(b);
	return answered;
}

Test(reuseport, a_closed_listeners_queue_moves_to_the_one_left)
{
	int n;

	if (geteuid() != 0)
		cr_skip_test("needs root to load a BPF program");
	n = handover(true);
	if (n < 0)
		cr_skip_test("the kernel cannot migrate a closing listener's connections (Linux 5.14)");
	cr_assert_eq(n, CLIENTS, "%d of %d queued connections reached the listener left", n,
		     CLIENTS);
	/* the test can tell: without the program, those queued on a are lost */
	n = handover(false);
	cr_assert_lt(n, CLIENTS, "without the program all %d still arrived: the check is blind",
		     CLIENTS);
}
