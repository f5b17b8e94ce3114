// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The dmsc-l7 supervisor, with a shell standing in for the helper: it is
 * given --ready-fd N like the real one. Every wait is bounded. */
#include <errno.h>
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

	cr_assert_eq(dmsc_l7_sup_init(&s, argv), 0);
	cr_assert_eq(dmsc_l7_sup_start(&s, ms()), 0);
	cr_assert_eq(poll_until(&s, DMSC_L7_SUP_READY, 3000), DMSC_L7_SUP_READY);
	first = s.pid;
	cr_assert_eq(dmsc_l7_sup_replace(&s, argv, ms()), 0);
	cr_expect_eq(s.old_pid, first);
	cr_expect_neq(s.pid, first);
	cr_expect_eq(dmsc_l7_sup_replace(&s, argv, ms()), -EBUSY, "one hand-over at a time");
	cr_expect_eq(poll_until(&s, DMSC_L7_SUP_READY, 3000), DMSC_L7_SUP_READY);
	/* the old one got SIGTERM and exits 0; poll reaps it */
	for (int i = 0; i < 300 && s.old_pid > 0; i++) {
		dmsc_l7_sup_poll(&s, ms());
		usleep(10000);
	}
	cr_expect_eq(s.old_pid, -1, "the old helper was reaped");
	cr_expect_eq(waitpid(first, &status, WNOHANG), -1, "no zombie left");
	cr_expect_eq(dmsc_l7_sup_stop(&s, 3000), 0);
}

Test(l7_supervisor, a_dying_helper_is_restarted_with_backoff)
{
	const char *argv[] = {"/bin/sh", "-c", "exit 1", "sh", NULL};
	struct dmsc_l7_supervisor s;

	cr_assert_eq(dmsc_l7_sup_init(&s, argv), 0);
	cr_assert_eq(dmsc_l7_sup_start(&s, ms()), 0);
	cr_expect_eq(poll_until(&s, DMSC_L7_SUP_BACKOFF, 3000), DMSC_L7_SUP_BACKOFF);
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

	cr_assert_eq(dmsc_l7_sup_init(&s, argv), 0);
	cr_assert_eq(dmsc_l7_sup_start(&s, ms()), 0);
	cr_expect_eq(poll_until(&s, DMSC_L7_SUP_BACKOFF, 3000), DMSC_L7_SUP_BACKOFF);
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
