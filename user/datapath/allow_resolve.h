/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * allow_from paths and the cgroup ids the kernel compares. An id is the
 * cgroup's inode number on cgroup2, and a cgroup removed and made again (a
 * restarted container) gets a new one: a rule keeps its path beside its id
 * (struct dmsc_allow_rule), so that dmscd can resolve every rule in
 * dmsc_allow again when cgroups appear and disappear, whoever wrote it
 * (dmscd or `dmscctl apply`).
 *
 * dmscd watches, with inotify, every directory from the cgroup2 mount down
 * to the parent of each rule's path (IN_CREATE and IN_DELETE of a cgroup
 * are seen there), and re-checks every rule periodically besides, for what
 * inotify cannot say (a watch limit reached, an overflow).
 */
#ifndef DMSC_ALLOW_RESOLVE_H
#define DMSC_ALLOW_RESOLVE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "datapath.h"
#include "apply.h"

/* The id of the cgroup at cg_root/path now; a path with no cgroup gets
 * DMSC_ALLOW_UNRESOLVED and bits of a hash of the path: an id that no
 * cgroup has, the same for the same path whoever resolves it. */
__u64 dmsc_allow_resolve(const char *cg_root, const char *path);

/*
 * Resolves every rule of dmsc_allow again and writes only the rules whose
 * id changed: the rule under its new id first, then the stale id deleted
 * (the stale id names a cgroup that no longer exists, or no cgroup, so the
 * swap never opens a service to anyone the policy does not name). Each
 * change is logged. dp must be opened with the lock; rules/n_rules, when
 * not NULL, receive the rules as they are afterwards (to free). Returns the
 * number of rules changed, or a negative errno.
 */
int dmsc_allow_reresolve(const struct dmsc_datapath *dp, const char *cg_root,
			 struct dmsc_allow_entry **rules, size_t *n_rules);

/* Every rule of dmsc_allow, sorted by key (to free). */
int dmsc_allow_rules(const struct dmsc_datapath *dp, struct dmsc_allow_entry **rules, size_t *n);

/* Directories watched at most; past it, the periodic check alone. */
#define DMSC_CGROUP_WATCH_MAX 4096

struct dmsc_cgroup_watch {
	int fd; /* inotify; -1 when nothing is watched */
	char root[PATH_MAX];
	size_t n_dirs;
	bool full_said;
};

/* Watches the directories from root down to each rule's parent afresh.
 * 0 or a negative errno. */
int dmsc_cgroup_watch_set(struct dmsc_cgroup_watch *w, const struct dmsc_allow_entry *rules,
			  size_t n);
/* Reads the pending events; true when a cgroup appeared or went (or the
 * queue overflowed): the rules are to be resolved again. */
bool dmsc_cgroup_watch_read(struct dmsc_cgroup_watch *w);
void dmsc_cgroup_watch_close(struct dmsc_cgroup_watch *w);

/* The directories a rule's path needs watched (root, root/a, root/a/b for
 * "a/b/c"), each passed to fn; pure, for the unit tests. Returns the count. */
size_t dmsc_cgroup_watch_dirs(const char *root, const char *path,
			      void (*fn)(const char *dir, void *ctx), void *ctx);

#endif /* DMSC_ALLOW_RESOLVE_H */
