/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * dmscd's watch on its policy (one file, or a directory of *.json files)
 * with inotify. Besides plain edits it follows the updates that never touch
 * the policy's own names:
 * - a directory swapped through a symlink, the way Kubernetes updates a
 *   mounted ConfigMap: the policy files are symlinks into `..data/`,
 *   `..data` is a symlink to a timestamped directory, and an update makes a
 *   new directory, points a new `..data_tmp` at it and renames it over
 *   `..data` (one IN_MOVED_TO of `..data`, nothing on `policy.json`);
 * - files that are symlinks elsewhere: the directories of their targets
 *   are watched too, and watched again after every change;
 * - a queue overflow (IN_Q_OVERFLOW): events were lost, so the policy is
 *   read again whole.
 */
#ifndef DMSC_POLICY_WATCH_H
#define DMSC_POLICY_WATCH_H

#include <limits.h>
#include <stdbool.h>
#include <sys/inotify.h>

/* Directories of symlink targets watched besides the policy's own. */
#define DMSC_WATCH_TARGETS_MAX 16
/* Names in the policy's directory that a policy symlink passes through
 * (`..data` of `..data/policy.json`). */
#define DMSC_WATCH_LINKS_MAX 16

struct dmsc_policy_watch {
	const char *policy;
	bool is_dir;
	char dir[PATH_MAX];
	char name[NAME_MAX + 1]; /* file mode: the file's name in dir */
	int fd, wd;
	int target_wd[DMSC_WATCH_TARGETS_MAX];
	size_t n_targets;
	char links[DMSC_WATCH_LINKS_MAX][NAME_MAX + 1];
	size_t n_links;
	bool lost; /* the policy's directory went away (said once) */
};

enum dmsc_watch_verdict {
	DMSC_WATCH_IGNORE,
	DMSC_WATCH_CHANGED,  /* the policy (may have) changed: apply it */
	DMSC_WATCH_OVERFLOW, /* events were lost: read everything again */
	DMSC_WATCH_LOST,     /* the policy's directory itself went away */
};

/* Watches policy (a file or a directory); 0 or a negative errno. */
int dmsc_policy_watch_open(struct dmsc_policy_watch *w, const char *policy);
void dmsc_policy_watch_close(struct dmsc_policy_watch *w);

/* What one event means. Pure (reads only w), for the unit tests. */
enum dmsc_watch_verdict dmsc_policy_watch_classify(const struct dmsc_policy_watch *w,
						   const struct inotify_event *ev);

/* Watches the directories of the policy's symlink targets afresh (after a
 * change, they may be others) and notes the names the symlinks pass
 * through. Returns the number of target directories watched. */
int dmsc_policy_watch_targets(struct dmsc_policy_watch *w);

/* Reads every pending event; true when the policy is to be applied again
 * (targets are watched again then, and an overflow is logged). */
bool dmsc_policy_watch_read(struct dmsc_policy_watch *w);

#endif /* DMSC_POLICY_WATCH_H */
