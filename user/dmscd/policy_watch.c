// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "debounce.h"
#include "policy_set.h"
#include "log.h"
#include "policy_watch.h"

/* Editors replace a file by renaming a new one over it, and Kubernetes
 * renames a symlink: watch directories for names, never a file's inode. */
#define WATCH_MASK                                                                                 \
	(IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |        \
	 IN_DELETE_SELF | IN_MOVE_SELF)

/* The name Kubernetes' atomic writer swaps (kubelet's AtomicWriter). Watched
 * even before a policy symlink is seen to pass through it, so that a
 * policy that first appears by the swap is applied too. */
#define K8S_DATA_LINK "..data"

int dmsc_policy_watch_open(struct dmsc_policy_watch *w, const char *policy)
{
	char copy[PATH_MAX];
	struct stat st;
	int err;

	memset(w, 0, sizeof(*w));
	w->policy = policy;
	w->fd = w->wd = -1;
	if (stat(policy, &st) == 0 && S_ISDIR(st.st_mode)) {
		w->is_dir = true;
		snprintf(w->dir, sizeof(w->dir), "%s", policy);
	} else {
		snprintf(copy, sizeof(copy), "%s", policy);
		snprintf(w->dir, sizeof(w->dir), "%s", dirname(copy));
		snprintf(copy, sizeof(copy), "%s", policy);
		snprintf(w->name, sizeof(w->name), "%s", basename(copy));
	}
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		err = -errno;
		pr_warn("inotify_init1: %s\n", strerror(-err));
		return err;
	}
	w->wd = inotify_add_watch(w->fd, w->dir, WATCH_MASK);
	if (w->wd < 0) {
		err = -errno;
		pr_warn("cannot watch %s: %s\n", w->dir, strerror(-err));
		close(w->fd);
		w->fd = -1;
		return err;
	}
	dmsc_policy_watch_targets(w);
	return 0;
}

void dmsc_policy_watch_close(struct dmsc_policy_watch *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = w->wd = -1;
	w->n_targets = 0;
}

static bool is_link_name(const struct dmsc_policy_watch *w, const char *name)
{
	size_t i;

	if (strcmp(name, K8S_DATA_LINK) == 0)
		return true;
	for (i = 0; i < w->n_links; i++)
		if (strcmp(w->links[i], name) == 0)
			return true;
	return false;
}

enum dmsc_watch_verdict dmsc_policy_watch_classify(const struct dmsc_policy_watch *w,
						   const struct inotify_event *ev)
{
	size_t i;

	if (ev->mask & IN_Q_OVERFLOW)
		return DMSC_WATCH_OVERFLOW;
	if (ev->wd == w->wd) {
		if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
			return DMSC_WATCH_LOST;
		if (!ev->len)
			return DMSC_WATCH_IGNORE;
		if (is_link_name(w, ev->name))
			return DMSC_WATCH_CHANGED;
		if (w->is_dir)
			return dmsc_policy_dir_entry(ev->name) ? DMSC_WATCH_CHANGED
							       : DMSC_WATCH_IGNORE;
		return strcmp(ev->name, w->name) == 0 ? DMSC_WATCH_CHANGED : DMSC_WATCH_IGNORE;
	}
	for (i = 0; i < w->n_targets; i++) {
		if (ev->wd != w->target_wd[i])
			continue;
		/* Anything in a target's directory, or the directory going
		 * away (a swap removes the old one): read the policy again.
		 * IN_IGNORED follows our own inotify_rm_watch. */
		return ev->mask & IN_IGNORED ? DMSC_WATCH_IGNORE : DMSC_WATCH_CHANGED;
	}
	return DMSC_WATCH_IGNORE;
}

/* Notes what the symlink at path (in w->dir) passes through and watches
 * its target's directory. */
static void follow_link(struct dmsc_policy_watch *w, const char *path, const char *dir_real)
{
	char target[PATH_MAX], real[PATH_MAX], *slash;
	ssize_t n;
	size_t i;
	int wd;

	n = readlink(path, target, sizeof(target) - 1);
	if (n <= 0)
		return;
	target[n] = '\0';
	/* "..data/policy.json": the first name is in our directory. */
	slash = strchr(target, '/');
	if (target[0] != '/' && slash && slash != target) {
		*slash = '\0';
		if (strcmp(target, ".") && strcmp(target, "..") && !is_link_name(w, target) &&
		    strlen(target) < sizeof(w->links[0]) && w->n_links < DMSC_WATCH_LINKS_MAX)
			memcpy(w->links[w->n_links++], target, strlen(target) + 1);
	}
	if (!realpath(path, real))
		return; /* dangling now: the swap in progress is seen by the dir watch */
	slash = strrchr(real, '/');
	if (!slash)
		return;
	*slash = '\0';
	if (!real[0] || strcmp(real, dir_real) == 0 || w->n_targets == DMSC_WATCH_TARGETS_MAX)
		return;
	wd = inotify_add_watch(w->fd, real, WATCH_MASK | IN_MASK_ADD);
	if (wd < 0) {
		pr_debug("cannot watch %s (target of %s): %s\n", real, path, strerror(errno));
		return;
	}
	if (wd == w->wd)
		return;
	for (i = 0; i < w->n_targets; i++)
		if (w->target_wd[i] == wd)
			return;
	w->target_wd[w->n_targets++] = wd;
}

int dmsc_policy_watch_targets(struct dmsc_policy_watch *w)
{
	char path[PATH_MAX], dir_real[PATH_MAX];
	struct dirent *de;
	struct stat st;
	size_t i;
	DIR *d;

	if (w->fd < 0)
		return 0;
	for (i = 0; i < w->n_targets; i++)
		inotify_rm_watch(w->fd, w->target_wd[i]);
	w->n_targets = 0;
	w->n_links = 0;
	if (!realpath(w->dir, dir_real))
		return 0;
	if (!w->is_dir) {
		if (lstat(w->policy, &st) == 0 && S_ISLNK(st.st_mode))
			follow_link(w, w->policy, dir_real);
		return (int)w->n_targets;
	}
	d = opendir(w->dir);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		if (!dmsc_policy_dir_entry(de->d_name))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", w->dir, de->d_name) >= (int)sizeof(path))
			continue;
		if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
			follow_link(w, path, dir_real);
	}
	closedir(d);
	return (int)w->n_targets;
}

bool dmsc_policy_watch_read(struct dmsc_policy_watch *w)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool changed = false, overflow = false;
	ssize_t n;
	char *p;

	while ((n = read(w->fd, buf, sizeof(buf))) > 0) {
		for (p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			switch (dmsc_policy_watch_classify(w, ev)) {
			case DMSC_WATCH_CHANGED:
				changed = true;
				break;
			case DMSC_WATCH_OVERFLOW:
				overflow = changed = true;
				break;
			case DMSC_WATCH_LOST:
				if (!w->lost)
					pr_warn("%s: the watched directory went away; changes are "
						"no longer seen (restart dmscd)\n",
						w->dir);
				w->lost = true;
				break;
			case DMSC_WATCH_IGNORE:
				break;
			}
			p += sizeof(*ev) + ev->len;
		}
	}
	if (overflow)
		pr_warn("%s: the inotify queue overflowed (events were lost): reading the "
			"policy again\n",
			w->policy);
	if (changed)
		dmsc_policy_watch_targets(w);
	return changed;
}
