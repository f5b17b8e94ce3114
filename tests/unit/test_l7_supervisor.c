// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The dmsc-l7 supervisor, with a shell standing in for the helper: it is
 * given --ready-fd N like the real one. Every wait is bounded. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "l7_supervisor.h"

static uint64_t ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Polls until state is reached or max_ms pass. */
static enum dmsc_l7_sup_state poll_until(struct dmsc_l7_supervisor *s, enum dmsc_l7_sup_state want,
					 unsigned max_ms)
{
	uint64_t end = ms() + max_ms;
	enum dmsc_l7_sup_state st;

	do {
		st = dmsc_l7_sup_poll(s, ms());
		if (st == want)
			break;
		usleep(5000);
	} while (ms() < end);
	return st;
}

/* Starts a supervisor of argv and polls until it reaches state want
 * (3 s at most). */
static void start_until(struct dmsc_l7_supervisor *s, const char **argv,
			enum dmsc_l7_sup_state want)
{
	cr_assert_eq(dmsc_l7_sup_init(s, argv), 0);
	cr_assert_eq(dmsc_l7_sup_start(s, ms()), 0);
	cr_assert_eq(poll_until(s, want, 3000), want);
}

Test(l7_supervisor, ready_then_drained_by_sigterm)
{
	/* bash: dash cannot redirect to fds above 9. "$2" is the ready fd; TERM makes it exit 0
	 * like a drained helper */
	const char *argv[] = {"/bin/bash", "-c",
			      "trap 'exit 0' TERM; eval \"echo ready >&$2\"; "
			      "i=0; while [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; exit 1",
			      "sh", NULL};
	struct dmsc_l7_supervisor s;

	cr_assert_eq(dmsc_l7_sup_init(&s, argv), 0);
	cr_assert_eq(dmsc_l7_sup_start(&s, ms()), 0);
	cr_expect_geq(dmsc_l7_sup_fd(&s), 0);
	cr_expect_eq(poll_until(&s, DMSC_L7_SUP_READY, 3000), DMSC_L7_SUP_READY);
	cr_expect_eq(dmsc_l7_sup_stop(&s, 3000), 0);
	cr_expect_eq(s.state, DMSC_L7_SUP_STOPPED);
	cr_expect_eq(s.restarts, 0);
}

Test(l7_supervisor, replace_drains_the_old_one_once_the_new_one_is_ready)
{
	const char *argv[] = {"/bin/bash", "-c",
			      "trap 'exit 0' TERM; eval \"echo ready >&$2\"; "
			      "i=0; while [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; exit 1",
			      "sh", NULL};
	struct dmsc_l7_supervisor s;
	pid_t first;
	int status = 0;

	start_until(&s, argv, DMSC_L7_SUP_READY);
	first = s.pid;
	cr_assert_eq(dmsc_l7_sup_replace(&s, argv, ms()), 0);
	cr_expect_eq(s.old_pid, first);
	cr_expect_neq(s.pid, first);
	cr_expect_eq(poll_until(&s, DMSC_L7_SUP_READY, 3000), DMSC_L7_SUP_READY);
	/* the old one got SIGTERM and exits 0; poll reaps it */
	cr_expect_eq(s.old_pid, -1, "told to drain");
	for (int i = 0; i < 300 && s.n_draining; i++) {
		dmsc_l7_sup_poll(&s, ms());
		usleep(10000);
	}
	cr_expect_eq(s.n_draining, 0u, "the old helper was reaped");
	cr_expect_eq(waitpid(first, &status, WNOHANG), -1, "no zombie left");
	cr_expect_eq(dmsc_l7_sup_stop(&s, 3000), 0);
}

Test(l7_supervisor, a_replace_while_one_starts_is_queued_none_waits_for_a_drain)
{
	/* a helper is ready after 300 ms and takes 2 s to drain */
	const char *argv[] = {"/bin/bash", "-c",
			      "trap 'sleep 2; exit 0' TERM; sleep 0.3; eval \"echo ready >&$2\"; "
			      "i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; exit 1",
			      "sh", NULL};
	struct dmsc_l7_supervisor s;
	pid_t first, second;
	int i;

	start_until(&s, argv, DMSC_L7_SUP_READY);
	first = s.pid;
	cr_assert_eq(dmsc_l7_sup_replace(&s, argv, ms()), 0);
	second = s.pid;
	cr_expect_eq(s.old_pid, first, "the first one serves until the second is ready");
	cr_expect_eq(dmsc_l7_sup_replace(&s, argv, ms()), 0, "queued, not refused");
	cr_expect(s.replace_queued);
	cr_expect_eq(s.pid, second, "nothing else started while the second starts");
	for (i = 0; i < 300 && (s.replace_queued || s.pid == second); i++) {
		dmsc_l7_sup_poll(&s, ms());
		usleep(10000);
	}
	cr_expect_not(s.replace_queued);
	cr_expect_neq(s.pid, second, "the queued replace followed once the second was ready");
	cr_expect_eq(s.old_pid, second);
	cr_expect_eq(s.n_draining, 1u, "... without waiting for the first one's drain");
	cr_expect_eq(s.draining[0].pid, first);
	cr_expect_eq(poll_until(&s, DMSC_L7_SUP_READY, 3000), DMSC_L7_SUP_READY);
	cr_expect_eq(s.n_draining, 2u, "both replaced ones drain side by side");
	for (i = 0; i < 600 && s.n_draining; i++) {
		dmsc_l7_sup_poll(&s, ms());
		usleep(10000);
	}
	cr_expect_eq(s.n_draining, 0u, "reaped as they end");
	cr_expect_eq(waitpid(first, NULL, WNOHANG), -1, "no zombie left");
	cr_expect_eq(dmsc_l7_sup_stop(&s, 3000), 0);
}

Test(l7_supervisor, at_most_so_many_drain_the_longest_is_stopped)
{
	/* helpers that never end on their own while the test runs */
	const char *argv[] = {"/bin/bash", "-c",
			      "trap '' TERM; eval \"echo ready >&$2\"; "
			      "i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; exit 1",
			      "sh", NULL};
	struct dmsc_l7_supervisor s;
	pid_t first;
	int i;

	start_until(&s, argv, DMSC_L7_SUP_READY);
	first = s.pid;
	for (i = 0; i <= DMSC_L7_SUP_DRAINING_MAX; i++) {
		cr_assert_eq(dmsc_l7_sup_replace(&s, argv, ms()), 0);
		cr_assert_eq(poll_until(&s, DMSC_L7_SUP_READY, 3000), DMSC_L7_SUP_READY);
	}
	cr_expect_eq(s.n_draining, (unsigned)DMSC_L7_SUP_DRAINING_MAX);
	cr_expect_neq(s.draining[0].pid, first, "the one that drained longest went");
	cr_expect_neq(kill(first, 0), 0, "stopped and reaped");
	dmsc_l7_sup_stop(&s, 200);
	cr_expect_eq(s.n_draining, 0u);
}

Test(l7_supervisor, the_helper_reads_the_policy_it_was_given)
{
	/* "$4" is the --policy path: the helper echoes its first line back */
	const char *argv[] = {"/bin/bash", "-c",
			      "trap 'exit 0' TERM; [ \"$3\" = --policy ] || exit 1; "
			      "eval \"head -n 1 \\\"\\$4\\\" >&$2\"; "
			      "i=0; while [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; exit 1",
			      "sh", NULL};
	struct dmsc_l7_supervisor s;
	char buf[64] = "";
	ssize_t n = 0;
	int i;

	cr_assert_eq(dmsc_l7_sup_init(&s, argv), 0);
	cr_assert_eq(dmsc_l7_sup_set_policy(&s, "ready applied-v1\n", 17), 0);
	cr_assert_eq(dmsc_l7_sup_start(&s, ms()), 0);
	for (i = 0; i < 300 && n <= 0; i++) {
		n = read(dmsc_l7_sup_fd(&s), buf, sizeof(buf) - 1);
		usleep(10000);
	}
	cr_assert_gt(n, 0);
	buf[n] = '\0';
	cr_expect_str_eq(buf, "ready applied-v1\n");
	dmsc_l7_sup_stop(&s, 3000);
}

Test(l7_supervisor, the_helper_goes_when_its_supervisor_dies)
{
	/* the supervisor in a child of its own, killed with SIGKILL; its
	 * helper writes its pid and waits (TERM: exit) */
	char pidfile[] = "/tmp/dmsc-sup-XXXXXX";
	int fd = mkstemp(pidfile), i;
	pid_t sup, helper = 0;
	FILE *f;

	cr_assert_geq(fd, 0);
	close(fd);
	sup = fork();
	cr_assert_geq(sup, 0);
	if (sup == 0) {
		const char *argv[] = {"/bin/bash", "-c",
				      "trap 'exit 0' TERM; echo $$ >\"$0\"; "
				      "i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done",
				      pidfile, NULL};
		struct dmsc_l7_supervisor s;

		if (dmsc_l7_sup_init(&s, argv) || dmsc_l7_sup_start(&s, ms()))
			_exit(1);
		sleep(10);
		_exit(0);
	}
	for (i = 0; i < 300 && helper <= 0; i++) {
		f = fopen(pidfile, "r");
		if (f && fscanf(f, "%d", &helper) != 1)
			helper = 0;
		if (f)
			fclose(f);
		usleep(10000);
	}
	cr_assert_gt(helper, 0, "the helper started");
	kill(sup, SIGKILL);
	waitpid(sup, NULL, 0);
	for (i = 0; i < 300 && kill(helper, 0) == 0; i++)
		usleep(10000);
	cr_expect_neq(kill(helper, 0), 0, "the helper (pid %d) exited with its supervisor", helper);
	unlink(pidfile);
}

/* A helper that takes policies in place (docs/design.md decision 83), in
 * Python (bash cannot take a descriptor from a socket): it appends each
 * policy it gets on --policy-updates to the file in argv[1] and answers
 * "ok N", or "fail N: bad" for a policy that starts with "bad". SIGTERM
 * ends it (killed: no handler, Python's would wait on its blocked read). */
static const char updates_helper[] =
    "import os, signal, socket, sys\n"
    "a = sys.argv\n"
    "os.write(int(a[a.index('--ready-fd') + 1]), b'ready\\n')\n"
    "s = socket.socket(fileno=int(a[a.index('--policy-updates') + 1]))\n"
    "for _ in range(100):\n"
    "    msg, fds, _, _ = socket.recv_fds(s, 64, 1)\n"
    "    if not msg:\n"
    "        signal.pause()  # as a helper does: its end comes with SIGTERM\n"
    "    text = open('/proc/self/fd/%d' % fds[0]).read()\n"
    "    open(a[1], 'a').write(text)\n"
    "    seq = msg.split()[1].decode()\n"
    "    s.send(('fail %s: bad' % seq if text.startswith('bad') else 'ok ' + seq).encode())\n";

/* Whether file holds want, polling for up to 3 s. */
static bool file_has(const char *file, const char *want)
{
	char buf[256];
	size_t n;
	FILE *f;
	int i;

	for (i = 0; i < 300; i++) {
		f = fopen(file, "r");
		n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		if (f)
			fclose(f);
		buf[n] = '\0';
		if (strstr(buf, want))
			return true;
		usleep(10000);
	}
	return false;
}

Test(l7_supervisor, a_policy_goes_to_the_running_helper_in_place)
{
	char out[] = "/tmp/dmsc-sup-upd-XXXXXX";
	int fd = mkstemp(out), i;
	const char *argv[] = {"/usr/bin/python3", "-c", updates_helper, out, NULL};
	struct dmsc_l7_supervisor s;
	pid_t first;

	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(dmsc_l7_sup_init(&s, argv), 0);
	cr_expect_eq(dmsc_l7_sup_update(&s), -ENOTCONN, "nothing runs");
	s.updates = true;
	cr_assert_eq(dmsc_l7_sup_set_policy(&s, "v1\n", 3), 0);
	cr_assert_eq(dmsc_l7_sup_start(&s, ms()), 0);
	cr_assert_eq(poll_until(&s, DMSC_L7_SUP_READY, 5000), DMSC_L7_SUP_READY);
	first = s.pid;
	cr_assert_eq(dmsc_l7_sup_set_policy(&s, "v2\n", 3), 0);
	cr_assert_eq(dmsc_l7_sup_update(&s), 0);
	cr_expect(file_has(out, "v2\n"), "the running helper got the new policy");
	for (i = 0; i < 20; i++) { /* its "ok 1" read, nothing else done */
		dmsc_l7_sup_poll(&s, ms());
		usleep(5000);
	}
	cr_expect_eq(s.pid, first, "no second helper");
	cr_expect_eq(s.old_pid, -1);
	/* one it cannot take: replaced, the new one started with it */
	cr_assert_eq(dmsc_l7_sup_set_policy(&s, "bad\n", 4), 0);
	cr_assert_eq(dmsc_l7_sup_update(&s), 0);
	for (i = 0; i < 300 && s.pid == first; i++) {
		dmsc_l7_sup_poll(&s, ms());
		usleep(10000);
	}
	cr_expect_neq(s.pid, first, "replaced after its \"fail\"");
	cr_expect_eq(poll_until(&s, DMSC_L7_SUP_READY, 5000), DMSC_L7_SUP_READY);
	dmsc_l7_sup_stop(&s, 3000);
	cr_expect(WIFSIGNALED(s.last_status) && WTERMSIG(s.last_status) == SIGTERM,
		  "stopped by SIGTERM (wait status %#x)", s.last_status);
	unlink(out);
}

/* An orphan of a dmscd before, as far as adoption goes (baton.h): it
 * offers itself on the abstract name of role l7 and datapath argv[1],
 * says so in argv[2], takes the first "adopt METRICS" that comes with a
 * socket (a connection that says nothing is not one), answers, and then
 * takes every policy on that socket. */
static const char adopt_helper[] =
    "import os, signal, socket, sys\n"
    "a = sys.argv\n"
    "l = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
    "l.bind(b'\\0dmsc-adopt l7 ' + a[1].encode())\n"
    "l.listen(4)\n"
    "open(a[2], 'a').write('offered\\n')\n"
    "while True:\n"
    "    c, _ = l.accept()\n"
    "    msg, fds, _, _ = socket.recv_fds(c, 4096, 1)\n"
    "    if msg and fds:\n"
    "        break\n"
    "c.send(b'adopted %d' % os.getpid())\n"
    "open(a[2], 'a').write(msg.decode() + '\\n')\n"
    "u = socket.socket(fileno=fds[0])\n"
    "while True:\n"
    "    msg, fds, _, _ = socket.recv_fds(u, 64, 1)\n"
    "    if not msg:\n"
    "        signal.pause()\n"
    "    u.send(b'ok ' + msg.split()[1])\n";

/* A supervisor of argv that adopts the helper of role l7 for pin. */
static void adopter_init(struct dmsc_l7_supervisor *s, const char **argv, const char *pin)
{
	cr_assert_eq(dmsc_l7_sup_init(s, argv), 0);
	s->updates = true;
	s->role = "l7";
	s->pin_dir = pin;
	s->metrics_file = "/run/dmsc/dmsc-l7.unit.prom";
}

Test(l7_supervisor, an_orphan_running_the_same_is_adopted_and_watched)
{
	char out[] = "/tmp/dmsc-sup-adopt-XXXXXX", pin[64];
	int fd = mkstemp(out), status, i;
	const char *argv[] = {"/usr/bin/python3", "-c", adopt_helper, pin, out, NULL};
	const char *other[] = {"/usr/bin/python3", "-c", adopt_helper, pin, "/dev/null", NULL};
	struct dmsc_l7_supervisor s, s2;
	pid_t orphan;

	cr_assert_geq(fd, 0);
	close(fd);
	/* a name of this test's own (abstract names are per namespace) */
	snprintf(pin, sizeof(pin), "/sys/fs/bpf/dmsc-unit-adopt-%d", (int)getpid());
	adopter_init(&s, argv, pin);
	cr_expect_eq(dmsc_l7_sup_adopt(&s, ms()), -ENOENT, "none to adopt yet");
	orphan = fork();
	cr_assert_geq(orphan, 0);
	if (orphan == 0) {
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	cr_assert(file_has(out, "offered\n"), "the stand-in offers itself");
	/* one whose options differ is not adopted (and not told anything) */
	adopter_init(&s2, other, pin);
	cr_expect_eq(dmsc_l7_sup_adopt(&s2, ms()), -ESTALE, "another command line");
	cr_expect_eq(s2.pid, -1);
	/* the same: adopted, ready at once, told its metrics file */
	cr_assert_eq(dmsc_l7_sup_adopt(&s, ms()), 0);
	cr_expect_eq(s.pid, orphan);
	cr_expect_eq(s.state, DMSC_L7_SUP_READY);
	cr_expect(file_has(out, "adopt /run/dmsc/dmsc-l7.unit.prom\n"));
	/* policies go to it, answered; no second helper */
	cr_assert_eq(dmsc_l7_sup_set_policy(&s, "v1\n", 3), 0);
	cr_expect_eq(dmsc_l7_sup_update(&s), 0);
	for (i = 0; i < 20; i++) {
		dmsc_l7_sup_poll(&s, ms());
		usleep(5000);
	}
	cr_expect_eq(s.pid, orphan, "no second helper");
	cr_expect_eq(s.update_fd >= 0, true, "its answer read, the socket kept");
	/* not our child to reap: its end is seen by its pidfd, and it is
	 * restarted after the back-off as any helper that died */
	kill(orphan, SIGKILL);
	cr_assert_eq(waitpid(orphan, &status, 0), orphan);
	cr_expect_eq(poll_until(&s, DMSC_L7_SUP_BACKOFF, 3000), DMSC_L7_SUP_BACKOFF);
	cr_expect_eq(s.last_status, -1, "an adopted helper's status is not ours to read");
	dmsc_l7_sup_stop(&s, 1000);
	unlink(out);
}

Test(l7_supervisor, a_dying_helper_is_restarted_with_backoff)
{
	const char *argv[] = {"/bin/sh", "-c", "exit 1", "sh", NULL};
	struct dmsc_l7_supervisor s;

	start_until(&s, argv, DMSC_L7_SUP_BACKOFF);
	cr_expect_eq(s.backoff_ms, 2 * DMSC_L7_SUP_BACKOFF_MIN_MS, "doubled");
	/* after 100 ms it is started again, and dies again */
	poll_until(&s, DMSC_L7_SUP_STARTING, 3000);
	cr_expect_geq(s.restarts, 1);
	dmsc_l7_sup_stop(&s, 1000);
}

Test(l7_supervisor, usage_errors_back_off_at_the_maximum)
{
	const char *argv[] = {"/bin/sh", "-c", "exit 2", "sh", NULL};
	struct dmsc_l7_supervisor s;

	start_until(&s, argv, DMSC_L7_SUP_BACKOFF);
	cr_expect_geq(s.next_start_ms, ms() + DMSC_L7_SUP_BACKOFF_MAX_MS - 3000);
	dmsc_l7_sup_stop(&s, 1000);
}

Test(l7_supervisor, too_many_arguments)
{
	const char *argv[DMSC_L7_SUP_ARGS_MAX + 2];
	struct dmsc_l7_supervisor s;
	int i;

	for (i = 0; i < DMSC_L7_SUP_ARGS_MAX + 1; i++)
		argv[i] = "x";
	argv[i] = NULL;
	cr_expect_eq(dmsc_l7_sup_init(&s, argv), -E2BIG);
}
