/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A helper's hand-over to its successor across a restart of dmscd
 * (docs/design.md decision 80). dmscd's helpers (dmsc-l7, its tunnel)
 * outlive it: when dmscd dies they get DMSC_HELPER_ORPHAN_SIGNAL (their
 * parent-death signal) and serve on, so that the connections the kernel
 * keeps handing them meanwhile are not refused. The next dmscd's helper
 * of the same role, datapath and address, once ready, tells the one
 * before it to drain through the baton: an abstract unix socket named
 * after them, held (listened on) by the helper that serves. An orphan
 * also drains once its datapath is uninstalled, or after its
 * --orphan-ms.
 */
#ifndef DMSC_BATON_H
#define DMSC_BATON_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

/* What dmscd's helpers get when dmscd dies (PR_SET_PDEATHSIG): serve on.
 * SIGTERM still means: drain now. */
#define DMSC_HELPER_ORPHAN_SIGNAL SIGUSR2

/* How long an orphan serves without a successor, by default */
#define DMSC_HELPER_ORPHAN_MS_DEFAULT 60000

/* How long dmscd's helpers may drain once replaced (--drain-ms): what
 * they still carry then is long-lived (a WebSocket, a stream, a session),
 * and the next helper serves everything new meanwhile (docs/design.md
 * decision 87). As text, for a command line. */
#define DMSC_HELPER_DRAIN_MS "600000"

struct dmsc_baton {
	int fd;	    /* listening once held; -1: not yet */
	bool asked; /* the predecessor was told to drain */
	bool gone;  /* passed on (or closed): never taken again */
	struct sockaddr_un sa;
	socklen_t len;
};

/* The baton of role ("l7", "tunnel") for the datapath at pin_dir and the
 * address the helper listens on (text). */
void dmsc_baton_init(struct dmsc_baton *b, const char *role, const char *pin_dir,
		     const char *listen);
/* Once ready: takes the baton, telling a helper that holds it to drain
 * (which lets go of it); until it is free, dmsc_baton_passed() tries again. */
void dmsc_baton_take(struct dmsc_baton *b);
/* Every second or so: true when a successor asked for the baton (then
 * drain: it serves); it is let go of. Also takes it once it is free. */
bool dmsc_baton_passed(struct dmsc_baton *b);
void dmsc_baton_close(struct dmsc_baton *b);

/*
 * Adoption (docs/design.md decision 86): an orphan offers itself to the
 * next dmscd on a second abstract name, of its role and datapath (not its
 * address: dmscd compares the whole command line). The dmscd that finds
 * one running its own binary with its own options sends "adopt
 * METRICS_FILE" with a new update socket; the orphan answers "adopted
 * PID" and serves on as that dmscd's helper, every connection kept. An
 * adopted helper is not that dmscd's child: the end of its update socket
 * is how it hears that dmscd went.
 */
struct dmsc_adopt {
	int fd; /* listening while offered; -1: not */
	struct sockaddr_un sa;
	socklen_t len;
};

void dmsc_adopt_init(struct dmsc_adopt *a, const char *role, const char *pin_dir);
/* An orphan: offers itself (listens; once is enough, again is a no-op). */
void dmsc_adopt_offer(struct dmsc_adopt *a);
/* At a tick of an orphan: the update socket a dmscd adopting it handed
 * over (>= 0; the metrics file it names into metrics, that dmscd's pid
 * into *by), or -1 when none did. Offers it again if it could not yet. */
int dmsc_adopt_taken(struct dmsc_adopt *a, char *metrics, size_t len, pid_t *by);
void dmsc_adopt_close(struct dmsc_adopt *a);

/* An orphan since since_ms (dmsc_now_ms): whether it should drain now,
 * its datapath at pin_dir uninstalled or orphan_ms passed (said in the
 * log). */
bool dmsc_helper_orphan_over(int64_t since_ms, unsigned int orphan_ms, const char *pin_dir);

#endif /* DMSC_BATON_H */
