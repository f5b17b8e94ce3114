/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Starting, watching and restarting dmsc-l7, for dmscd. Nothing here blocks
 * except dmsc_l7_sup_stop (bounded): the agent calls dmsc_l7_sup_poll from
 * its event loop (on SIGCHLD, on the ready fd becoming readable, or on a
 * timer) and the supervisor restarts a helper that died, with exponential
 * back-off, so a helper that cannot start does not spin.
 *
 * The helper is told to write "ready\n" to an inherited pipe (--ready-fd);
 * until it has, it is "starting". Given a policy (dmsc_l7_sup_set_policy),
 * it reads that one, from an inherited sealed memfd (--policy
 * /proc/self/fd/N), never a file that may have changed since. It gets
 * DMSC_HELPER_ORPHAN_SIGNAL when the process that started it dies, and
 * serves on until the next dmscd's helper takes over (baton.h). A helper
 * that takes updates (updates) gets a unix socket too (--policy-updates
 * N): dmsc_l7_sup_update hands it each new policy there, in place of a
 * replacement (docs/design.md decision 83). Its exit codes: 0 drained (asked to stop),
 * 1 failed, 2 usage (a configuration error: restarting cannot fix it, so the
 * back-off goes straight to its maximum).
 */
#ifndef DMSC_L7_SUPERVISOR_H
#define DMSC_L7_SUPERVISOR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define DMSC_L7_SUP_ARGS_MAX 32
#define DMSC_L7_SUP_BACKOFF_MIN_MS 100
#define DMSC_L7_SUP_BACKOFF_MAX_MS 30000
/* A helper that ran this long resets the back-off. */
#define DMSC_L7_SUP_STABLE_MS 60000
/* Replaced helpers that may drain at once (docs/design.md decision 87):
 * one more, and the one that has drained longest is stopped. */
#define DMSC_L7_SUP_DRAINING_MAX 4

enum dmsc_l7_sup_state {
	DMSC_L7_SUP_STOPPED,  /* not started, or stopped on purpose */
	DMSC_L7_SUP_STARTING, /* running, "ready" not seen yet */
	DMSC_L7_SUP_READY,
	DMSC_L7_SUP_BACKOFF, /* died; restarts at next_start_ms */
};

struct dmsc_l7_supervisor {
	/* + --ready-fd N --policy P --policy-updates N --baton + NULL */
	const char *argv[DMSC_L7_SUP_ARGS_MAX + 8];
	int argc;
	char ready_arg[16];
	char policy_arg[40];
	char updates_arg[16];
	/* the helper takes new policies in place (set before the first
	 * start): each helper started gets a socket for them */
	bool updates;
	/* which changes of the policy it takes so (NULL: every one): the
	 * others replace it (dmscd_apply.c helper_follow) */
	bool (*takes)(const char *cur, const char *next);
	int update_fd;		 /* our end of the running helper's; -1: none */
	/* the replaced helper's, closed once it is told to drain: until
	 * then it must not think dmscd gone (decision 86) */
	int old_update_fd;
	unsigned int update_seq; /* the last policy sent on it */
	int policy_fd;	     /* sealed memfd with the policy; -1: none */
	/* A cgroup directory the helper joins before exec (the tunnel's
	 * under the mesh cgroup, docs/design.md decision 76); -1: none,
	 * it stays in its supervisor's. */
	int cgroup_fd;
	bool replace_queued; /* a replace asked for during a hand-over */
	/* What a helper of the dmscd before this one is found by, to adopt
	 * it (dmsc_l7_sup_adopt): its role ("l7", "tunnel"), datapath and
	 * the metrics file it should write now; NULL: none is adopted. */
	const char *role, *pin_dir, *metrics_file;
	enum dmsc_l7_sup_state state;
	pid_t pid;
	pid_t old_pid; /* replaced helper, told to drain once pid is ready */
	/* an adopted helper is not our child: watched by its pidfd
	 * (-1: a child, reaped with waitpid) */
	int pidfd, old_pidfd;
	/* replaced helpers told to drain, oldest first, until they end: what
	 * they carry (a WebSocket, a stream) may last, and the next replace
	 * does not wait for them */
	struct {
		pid_t pid;
		int pidfd;
	} draining[DMSC_L7_SUP_DRAINING_MAX];
	unsigned int n_draining;
	int ready_fd;  /* read end; -1 when none */
	unsigned int restarts;
	unsigned int backoff_ms;
	int last_status; /* wait status of the last exit, -1: none */
	uint64_t started_ms;
	uint64_t next_start_ms;
};

/* argv: the helper and its arguments (copied as pointers: they must live as
 * long as the supervisor), without --ready-fd. 0 or -E2BIG. */
int dmsc_l7_sup_init(struct dmsc_l7_supervisor *s, const char *const *argv);

/*
 * The helper of the dmscd before this one, serving on as an orphan
 * (baton.h), made this one's (docs/design.md decision 86): if it runs the
 * binary this supervisor would start, with the same options, it gets a
 * new update socket and the metrics file to write, and is ready at once,
 * every connection kept; then hand it the policy (dmsc_l7_sup_update),
 * which replaces it if it cannot take that in place. 0 once adopted; a
 * negative errno when there is none to adopt (-ENOENT) or it differs
 * (-ESTALE, said in the log): start one, which takes over from it.
 */
int dmsc_l7_sup_adopt(struct dmsc_l7_supervisor *s, uint64_t now_ms);

/* Starts the helper now. 0 or a negative errno (fork, pipe). */
int dmsc_l7_sup_start(struct dmsc_l7_supervisor *s, uint64_t now_ms);

/* Reaps an exit, notices "ready", restarts after the back-off. Returns the
 * state after the call. now_ms: a monotonic clock in milliseconds. */
enum dmsc_l7_sup_state dmsc_l7_sup_poll(struct dmsc_l7_supervisor *s, uint64_t now_ms);

/*
 * The policy the next helper started gets (--policy /proc/self/fd/N): text
 * is copied into a sealed memfd, which replaces the previous one. A helper
 * running keeps what it read; call dmsc_l7_sup_replace to hand over.
 * 0 or a negative errno.
 */
int dmsc_l7_sup_set_policy(struct dmsc_l7_supervisor *s, const char *text, size_t len);

/*
 * The policy set last (dmsc_l7_sup_set_policy), handed to the running
 * helper in place: no second helper, no drain, no connection of the
 * running one touched. The helper answers on the socket; one that could
 * not take it is replaced (dmsc_l7_sup_poll reads the answers). 0, or a
 * negative errno when it cannot be sent (no helper that takes updates
 * runs, or a replace is queued): then replace it.
 */
int dmsc_l7_sup_update(struct dmsc_l7_supervisor *s);

/*
 * A new policy (or binary): starts a second helper beside the running one
 * (both listen on the same address with SO_REUSEPORT) and, once the new one
 * is ready, sends the old one SIGTERM so that it drains (draining[]);
 * dmsc_l7_sup_poll does the hand-over and reaps the old ones as they end.
 * No connection is refused and none is cut. argv may change. One start at
 * a time: asked for while the replacement starts, the replace is queued
 * (replace_queued) and dmsc_l7_sup_poll starts it once that one is ready,
 * with the policy and argv set last, so the last change always reaches a
 * helper. 0 or a negative errno.
 */
int dmsc_l7_sup_replace(struct dmsc_l7_supervisor *s, const char *const *argv, uint64_t now_ms);

/* The fd to watch for readiness (-1 when none), for the agent's epoll. */
int dmsc_l7_sup_fd(const struct dmsc_l7_supervisor *s);
/* The fd the helper answers updates on (-1 when none), the same. */
int dmsc_l7_sup_update_fd(const struct dmsc_l7_supervisor *s);

/* SIGTERM (the helper drains), waits up to timeout_ms, then SIGKILL.
 * Returns the helper's exit code (0: drained), or a negative errno. */
int dmsc_l7_sup_stop(struct dmsc_l7_supervisor *s, unsigned int timeout_ms);
/* dmscd goes, its helper stays: it gets DMSC_HELPER_ORPHAN_SIGNAL when
 * dmscd's process ends and serves on until the next dmscd's helper takes
 * over (baton.h, docs/design.md decision 80). Returns its pid, 0 if none
 * runs. */
pid_t dmsc_l7_sup_leave(struct dmsc_l7_supervisor *s);

/* Copies the helper's Prometheus text (its --metrics-file) into out, so the
 * agent's own metrics output includes it. A missing file is not an error
 * (the helper writes its first one a second after start). */
int dmsc_l7_metrics_append(const char *metrics_file, FILE *out);

const char *dmsc_l7_sup_state_name(enum dmsc_l7_sup_state st);


#endif /* DMSC_L7_SUPERVISOR_H */
