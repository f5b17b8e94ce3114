// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "array.h"
#include "allow_resolve.h"
#include "log.h"
#include "apply_steps.h"

__u64 dmsc_allow_resolve(const char *cg_root, const char *path)
{
	char full[PATH_MAX + DMSC_CGROUP_PATH_MAX + 2];
	__u64 h = 1469598103934665603ull; /* FNV-1a */
	const char *p;
	struct stat st;

	if (snprintf(full, sizeof(full), "%s/%s", cg_root, path) < (int)sizeof(full) &&
	    stat(full, &st) == 0 && S_ISDIR(st.st_mode))
		return st.st_ino; /* the cgroup id on cgroup2 */
	for (p = path; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return DMSC_ALLOW_UNRESOLVED | (h & ~DMSC_ALLOW_UNRESOLVED);
}

int dmsc_allow_rules(const struct dmsc_datapath *dp, struct dmsc_allow_entry **rules, size_t *n)
{
	return dmsc_read_allow(dp, rules, n);
}

static const char *id_text(__u64 id, char *buf, size_t len)
{
	if (id & DMSC_ALLOW_UNRESOLVED)
		snprintf(buf, len, "none");
	else
		snprintf(buf, len, "%llu", (unsigned long long)id);
	return buf;
}

int dmsc_allow_reresolve(const struct dmsc_datapath *dp, const char *cg_root,
			 struct dmsc_allow_entry **rules, size_t *n_rules)
{
	struct dmsc_allow_entry *all = NULL;
	char was[24], now[24];
	size_t i, n = 0;
	int changed = 0, err;

	err = dmsc_read_allow(dp, &all, &n);
	if (err) {
		pr_warn("cannot read %s: %s\n", DMSC_MAP_ALLOW, strerror(-err));
		return err;
	}
	for (i = 0; i < n; i++) {
		struct dmsc_allow_entry *e = &all[i];
		struct dmsc_allow_key nk = {.svc_id = e->key.svc_id};
		char path[DMSC_CGROUP_PATH_MAX + 1];

		memcpy(path, e->rule.path, DMSC_CGROUP_PATH_MAX);
		path[DMSC_CGROUP_PATH_MAX] = '\0';
		nk.cgroup_id = dmsc_allow_resolve(cg_root, path);
		if (nk.cgroup_id == e->key.cgroup_id)
			continue;
		/* The new id first: between the two writes both are listed,
		 * and the stale one names a cgroup that is gone (ids are not
		 * reused) or none at all. */
		if (bpf_map_update_elem(dp->fd[DMSC_M_ALLOW], &nk, &e->rule, BPF_ANY)) {
			err = -errno;
			pr_warn("allow_from \"%s\" (service id %u): cannot write cgroup id %s to "
				"%s: %s; the rule keeps cgroup id %s\n",
				path, nk.svc_id, id_text(nk.cgroup_id, now, sizeof(now)),
				DMSC_MAP_ALLOW, strerror(-err),
				id_text(e->key.cgroup_id, was, sizeof(was)));
			continue;
		}
		if (bpf_map_delete_elem(dp->fd[DMSC_M_ALLOW], &e->key) && errno != ENOENT) {
			err = -errno;
			pr_warn("allow_from \"%s\" (service id %u): cannot delete the stale cgroup "
				"id %s from %s: %s\n",
				path, nk.svc_id, id_text(e->key.cgroup_id, was, sizeof(was)),
				DMSC_MAP_ALLOW, strerror(-err));
		}
		pr_info("allow_from \"%s\" (service id %u) re-resolved: cgroup id %s -> %s\n", path,
			nk.svc_id, id_text(e->key.cgroup_id, was, sizeof(was)),
			id_text(nk.cgroup_id, now, sizeof(now)));
		e->key = nk;
		changed++;
	}
	if (changed)
		qsort(all, n, sizeof(*all), allow_cmp); /* the order dmsc_read_allow gives */
	if (rules) {
		*rules = all;
		*n_rules = n;
	} else {
		free(all);
	}
	return err && !changed ? err : changed;
}

size_t dmsc_cgroup_watch_dirs(const char *root, const char *path,
			      void (*fn)(const char *dir, void *ctx), void *ctx)
{
	char dir[PATH_MAX];
	size_t n = 0, len;
	const char *p = path, *slash;

	len = (size_t)snprintf(dir, sizeof(dir), "%s", root);
	if (len >= sizeof(dir))
		return 0;
	fn(dir, ctx);
	n++;
	/* Each ancestor of the rule's cgroup below root: "a", then "a/b". */
	while ((slash = strchr(p, '/'))) {
		size_t part = (size_t)(slash - p);

		if (part && !(part == 1 && p[0] == '.')) {
			if (len + 1 + part >= sizeof(dir))
				break;
			dir[len++] = '/';
			memcpy(dir + len, p, part);
			len += part;
			dir[len] = '\0';
			fn(dir, ctx);
			n++;
		}
		p = slash + 1;
	}
	return n;
}

struct dir_set {
	char **v;
	size_t n, cap;
	bool oom;
};

static void dir_add(const char *dir, void *ctx)
{
	struct dir_set *s = ctx;
	char **grown;

	if (s->oom)
		return;
	grown = dmsc_array_room(s->v, s->n, &s->cap, sizeof(*s->v), 64);
	if (!grown) {
		s->oom = true;
		return;
	}
	s->v = grown;
	s->v[s->n] = strdup(dir);
	if (!s->v[s->n])
		s->oom = true;
	else
		s->n++;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int dmsc_cgroup_watch_set(struct dmsc_cgroup_watch *w, const struct dmsc_allow_entry *rules,
			  size_t n)
{
	struct dir_set s = {0};
	size_t i, watched = 0;
	int err = 0;

	dmsc_cgroup_watch_close(w);
	if (!w->root[0] && dmsc_cgroup2_mount(w->root, sizeof(w->root)))
		return -ENOENT;
	for (i = 0; i < n; i++) {
		char path[DMSC_CGROUP_PATH_MAX + 1];

		memcpy(path, rules[i].rule.path, DMSC_CGROUP_PATH_MAX);
		path[DMSC_CGROUP_PATH_MAX] = '\0';
		dmsc_cgroup_watch_dirs(w->root, path, dir_add, &s);
	}
	if (s.oom) {
		err = -ENOMEM;
		goto out;
	}
	if (!s.n)
		goto out;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		err = -errno;
		pr_warn("inotify_init1 for the cgroup watch: %s\n", strerror(-err));
		goto out;
	}
	qsort(s.v, s.n, sizeof(*s.v), str_cmp);
	for (i = 0; i < s.n; i++) {
		if (i && strcmp(s.v[i], s.v[i - 1]) == 0)
			continue;
		if (watched == DMSC_CGROUP_WATCH_MAX) {
			if (!w->full_said)
				pr_warn("allow_from: more than %d cgroup directories to watch; the "
					"others are checked periodically only\n",
					DMSC_CGROUP_WATCH_MAX);
			w->full_said = true;
			break;
		}
		/* A directory missing now: its parent's IN_CREATE says when
		 * it comes, and the watches are set again then. */
		if (inotify_add_watch(w->fd, s.v[i],
				      IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM |
					  IN_DELETE_SELF | IN_ONLYDIR) >= 0)
			watched++;
		else if (errno != ENOENT && errno != ENOTDIR)
			pr_debug("cannot watch %s: %s\n", s.v[i], strerror(errno));
	}
	w->n_dirs = watched;
out:
	for (i = 0; i < s.n; i++)
		free(s.v[i]);
	free(s.v);
	return err;
}

bool dmsc_cgroup_watch_read(struct dmsc_cgroup_watch *w)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool any = false;
	ssize_t n;

	if (w->fd < 0)
		return false;
	/* Only cgroup directories are created or deleted in a cgroup
	 * directory (its files come with it), and an overflow means events
	 * were lost: every event is a reason to resolve again. */
	while ((n = read(w->fd, buf, sizeof(buf))) > 0)
		any = true;
	return any;
}

void dmsc_cgroup_watch_close(struct dmsc_cgroup_watch *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	w->n_dirs = 0;
}
