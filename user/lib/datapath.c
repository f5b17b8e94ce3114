// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "datapath.h"
#include "dmsc_sock.skel.h"
#include "log.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

const char *const dmsc_map_names[DMSC_M_COUNT] = {
	[DMSC_M_SERVICES] = DMSC_MAP_SERVICES,	 [DMSC_M_BACKENDS] = DMSC_MAP_BACKENDS,
	[DMSC_M_SVC_META] = DMSC_MAP_SVC_META,	 [DMSC_M_SVC_STATS] = DMSC_MAP_SVC_STATS,
	[DMSC_M_BE_STATS] = DMSC_MAP_BE_STATS,	 [DMSC_M_REASONS] = DMSC_MAP_REASONS,
	[DMSC_M_SOCK_VIP] = DMSC_MAP_SOCK_VIP,	 [DMSC_M_INSTALL] = DMSC_MAP_INSTALL,
	[DMSC_M_FP_SOCKS] = DMSC_MAP_FP_SOCKS,	 [DMSC_M_FP_PENDING] = DMSC_MAP_FP_PENDING,
	[DMSC_M_FP_SOCK] = DMSC_MAP_FP_SOCK,	 [DMSC_M_FP_STATS] = DMSC_MAP_FP_STATS,
	[DMSC_M_FP_SVC] = DMSC_MAP_FP_SVC,
};

const struct dmsc_hook dmsc_hooks[] = {
	{ "sock4_connect", "cgroup/connect4", "4.17", DMSC_ATTACH_CGROUP, false },
	{ "sock4_getpeername", "cgroup/getpeername4", "5.8", DMSC_ATTACH_CGROUP, false },
	/* The fast path: sockops on the cgroup, sk_msg on the sockhash. */
	{ "sock4_fp_sockops", "cgroup/sockops", "4.13", DMSC_ATTACH_CGROUP, true },
	{ "sock4_fp_msg", "sk_msg", "5.8", DMSC_ATTACH_SOCKHASH, true },
};
const size_t dmsc_n_hooks = sizeof(dmsc_hooks) / sizeof(dmsc_hooks[0]);

const char *dmsc_pin_dir(void)
{
	const char *env = getenv("DMSC_PIN_DIR");

	if (env && *env)
		return env;
	return DMSC_PIN_ROOT "/v" DMSC_LAYOUT_VERSION;
}

int dmsc_require_root(const char *what)
{
	if (geteuid() == 0)
		return 0;
	pr_warn("%s needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo\n",
		what);
	return -EPERM;
}

int dmsc_cgroup2_mount(char *buf, size_t len)
{
	char dev[256], dir[PATH_MAX], type[64];
	int err = -ENOENT;
	FILE *f;

	f = fopen("/proc/mounts", "r");
	if (!f) {
		err = -errno;
		pr_warn("cannot read /proc/mounts: %s\n", strerror(-err));
		return err;
	}
	while (fscanf(f, "%255s %4095s %63s %*[^\n]", dev, dir, type) == 3) {
		if (strcmp(type, "cgroup2") == 0 && strlen(dir) < len) {
			snprintf(buf, len, "%s", dir);
			err = 0;
			break;
		}
	}
	fclose(f);
	if (err)
		pr_warn("no cgroup2 filesystem is mounted: dmsc attaches to cgroup v2 only\n");
	return err;
}

int dmsc_cgroup_resolve(const char *arg, char *abs, size_t abs_len, char *rel, size_t rel_len)
{
	char mnt[PATH_MAX], joined[PATH_MAX * 2], real[PATH_MAX];
	size_t mlen;
	int err;

	err = dmsc_cgroup2_mount(mnt, sizeof(mnt));
	if (err)
		return err;
	if (arg[0] == '/')
		snprintf(joined, sizeof(joined), "%s", arg);
	else
		snprintf(joined, sizeof(joined), "%s/%s", mnt, arg);
	if (!realpath(joined, real)) {
		err = -errno;
		pr_warn("cgroup %s: %s\n", arg, strerror(-err));
		return err;
	}
	mlen = strlen(mnt);
	if (strncmp(real, mnt, mlen) != 0 || (real[mlen] != '/' && real[mlen] != '\0')) {
		pr_warn("cgroup %s: %s is not under the cgroup2 mount %s\n", arg, real, mnt);
		return -EINVAL;
	}
	snprintf(abs, abs_len, "%s", real);
	snprintf(rel, rel_len, "%s", real[mlen] == '/' ? real + mlen + 1 : "");
	return 0;
}

static int ensure_dir(const char *path)
{
	if (mkdir(path, 0700) == 0 || errno == EEXIST)
		return 0;
	return -errno;
}

/* The pin directory must be on a BPF filesystem. The default place is
 * mounted if nothing is there yet (as systemd does at boot). */
static int ensure_bpffs(const char *pin_dir)
{
	char parent[PATH_MAX], *slash;
	struct statfs st;
	int err;

	snprintf(parent, sizeof(parent), "%s", pin_dir);
	/* Walk up to the first existing directory. */
	while (statfs(parent, &st) != 0) {
		slash = strrchr(parent, '/');
		if (!slash || slash == parent)
			break;
		*slash = '\0';
	}
	if (statfs(parent, &st) == 0 && st.f_type == BPF_FS_MAGIC)
		goto make;
	if (strcmp(parent, "/sys/fs/bpf") != 0) {
		pr_warn("pin directory %s is not on a BPF filesystem (%s is not bpffs): mount one "
			"with `mount -t bpf bpf DIR` or pick another DMSC_PIN_DIR\n",
			pin_dir, parent);
		return -EINVAL;
	}
	if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0) {
		err = -errno;
		pr_warn("cannot mount the BPF filesystem at /sys/fs/bpf: %s\n", strerror(-err));
		return err;
	}
	pr_info("mounted the BPF filesystem at /sys/fs/bpf\n");
make:
	/* mkdir -p, one component at a time. */
	snprintf(parent, sizeof(parent), "%s", pin_dir);
	for (slash = parent + 1; (slash = strchr(slash, '/')); slash++) {
		*slash = '\0';
		err = ensure_dir(parent);
		*slash = '/';
		if (err)
			goto fail;
	}
	err = ensure_dir(parent);
	if (err)
		goto fail;
	return 0;
fail:
	pr_warn("cannot create pin directory %s: %s\n", pin_dir, strerror(-err));
	return err;
}

static void pin_path(char *buf, size_t len, const char *pin_dir, const char *kind,
		     const char *name)
{
	snprintf(buf, len, "%s/%s/%s", pin_dir, kind, name);
}

static int lock_dir(const char *pin_dir, int *fd_out)
{
	int fd, err;

	fd = open(pin_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		pr_info("waiting for another dmsc writer to finish with %s\n", pin_dir);
		if (flock(fd, LOCK_EX) != 0) {
			err = -errno;
			close(fd);
			return err;
		}
	}
	*fd_out = fd;
	return 0;
}

/* The link pinned for a hook, or -ENOENT. */
static int link_get(const char *pin_dir, const struct dmsc_hook *h)
{
	char path[PATH_MAX];
	int fd;

	pin_path(path, sizeof(path), pin_dir, "links", h->prog);
	fd = bpf_obj_get(path);
	return fd < 0 ? -errno : fd;
}

static int link_cgroup_id(int link_fd, unsigned long long *id)
{
	struct bpf_link_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(link_fd, &info, &len) != 0)
		return -errno;
	*id = info.cgroup.cgroup_id;
	return 0;
}

/* Pinned maps keep their size; a reinstall adopts it. */
static unsigned int pinned_max_entries(const char *pin_dir, const char *map)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);
	char path[PATH_MAX];
	unsigned int max = 0;
	int fd;

	pin_path(path, sizeof(path), pin_dir, "maps", map);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return 0;
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
		max = info.max_entries;
	close(fd);
	return max;
}

static int size_maps(struct dmsc_sock *skel, const char *pin_dir,
		     const struct dmsc_install_opts *opts, struct dmsc_install *rec)
{
	struct {
		struct bpf_map *map;
		unsigned int want;
		__u32 *out;
	} sized[] = {
		{ skel->maps.dmsc_services, opts->max_services, &rec->max_services },
		{ skel->maps.dmsc_svc_meta, opts->max_services, NULL },
		{ skel->maps.dmsc_svc_stats, opts->max_services, NULL },
		{ skel->maps.dmsc_backends, opts->max_backends, &rec->max_backends },
		{ skel->maps.dmsc_be_stats, opts->max_backends, NULL },
		{ skel->maps.dmsc_fp_stats, opts->max_services, NULL },
		{ skel->maps.dmsc_fp_svc, opts->max_services, NULL },
	};
	size_t i;
	int err;

	for (i = 0; i < sizeof(sized) / sizeof(sized[0]); i++) {
		const char *name = bpf_map__name(sized[i].map);
		unsigned int pinned = pinned_max_entries(pin_dir, name);
		unsigned int size = sized[i].want ? sized[i].want : bpf_map__max_entries(sized[i].map);

		if (pinned && sized[i].want && sized[i].want != pinned) {
			pr_warn("map %s is pinned with %u entries; changing its capacity to %u needs "
				"`dmscctl uninstall` first\n",
				name, pinned, sized[i].want);
			return -EEXIST;
		}
		if (pinned)
			size = pinned;
		if (size < 2) {
			pr_warn("capacity of %s must be at least 2 (id 0 is reserved)\n", name);
			return -EINVAL;
		}
		err = bpf_map__set_max_entries(sized[i].map, size);
		if (err)
			return err;
		if (sized[i].out)
			*sized[i].out = size;
	}
	return 0;
}

static int remove_pins(const char *dir, bool *removed);

static int env_u32(const char *name, __u32 *out, bool *set)
{
	const char *env = getenv(name);
	unsigned long long v;
	char *end;

	*set = false;
	if (!env || !*env)
		return 0;
	errno = 0;
	v = strtoull(env, &end, 10);
	if (errno || *end || v > 0xffffffffull) {
		pr_warn("%s: \"%s\" is not a byte count (0 to 4294967295)\n", name, env);
		return -EINVAL;
	}
	*out = (__u32)v;
	*set = true;
	return 0;
}

/* $DMSC_FP_BACKLOG_MAX: the unread bytes a reader may have before its writer
 * leaves the fast path (default DMSC_FP_BACKLOG_MAX; 0: unbounded, which
 * only a benchmark should want). $DMSC_FP_APPLY_BYTES, $DMSC_FP_CORK_BYTES:
 * experiments of scripts/bench-fastpath-variants.sh, off by default. */
static int fastpath_settings(struct dmsc_sock *skel)
{
	struct {
		const char *env;
		volatile __u32 *var;
	} knobs[] = {
		{ "DMSC_FP_BACKLOG_MAX", (volatile __u32 *)&skel->rodata->fp_backlog_max },
		{ "DMSC_FP_APPLY_BYTES", (volatile __u32 *)&skel->rodata->fp_apply_bytes },
		{ "DMSC_FP_CORK_BYTES", (volatile __u32 *)&skel->rodata->fp_cork_bytes },
	};
	size_t i;
	bool set;
	__u32 v;
	int err;

	for (i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
		err = env_u32(knobs[i].env, &v, &set);
		if (err)
			return err;
		if (!set)
			continue;
		*knobs[i].var = v;
		pr_info("fast path: %s=%u\n", knobs[i].env, v);
	}
	return 0;
}

/* Without sk_msg links (before 6.10) the program is attached to the map
 * itself, and pinned beside the links so that status can find it; it stays
 * attached as long as the pinned sockhash lives. */
static void pin_prog_path(char *buf, size_t len, const char *pin_dir, const struct dmsc_hook *h)
{
	/* bpffs refuses names with a dot. */
	snprintf(buf, len, "%s/links/%s_prog", pin_dir, h->prog);
}

static void sockhash_prog_info(const char *pin_dir, const struct dmsc_hook *h,
			       struct dmsc_link_info *out)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	char path[PATH_MAX];
	int fd;

	pin_prog_path(path, sizeof(path), pin_dir, h);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return;
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
		out->present = true;
		out->prog_pin = true;
		out->prog_id = info.id;
	}
	close(fd);
}

/* sk_msg on the sockhash: a pinned bpf_link where the kernel has them for
 * sockmaps (Linux 6.10), else bpf_prog_attach to the map. An existing link
 * gets the new program in place. */
static int attach_sockhash(const char *pin_dir, const struct dmsc_hook *h,
			   struct bpf_program *prog, int map_fd, struct dmsc_install_result *res)
{
	char path[PATH_MAX];
	int fd, err;

	fd = link_get(pin_dir, h);
	if (fd >= 0) {
		err = bpf_link_update(fd, bpf_program__fd(prog), NULL) ? -errno : 0;
		close(fd);
		if (err)
			pr_warn("cannot replace program %s in place: %s\n", h->prog, strerror(-err));
		else
			snprintf(res->fastpath_note, sizeof(res->fastpath_note),
				 "sk_msg attached by a bpf_link");
		res->adopted = true;
		return err;
	}
	fd = bpf_link_create(bpf_program__fd(prog), map_fd, BPF_SK_MSG_VERDICT, NULL);
	if (fd >= 0) {
		pin_path(path, sizeof(path), pin_dir, "links", h->prog);
		err = bpf_obj_pin(fd, path) ? -errno : 0;
		close(fd);
		if (err) {
			pr_warn("cannot pin link %s: %s\n", path, strerror(-err));
			return err;
		}
		snprintf(res->fastpath_note, sizeof(res->fastpath_note),
			 "sk_msg attached by a bpf_link");
		return 0;
	}
	pr_debug("no sk_msg link (%s; Linux 6.10+): attaching to the map\n", strerror(errno));
	/* Replaces a program attached before, if any. */
	if (bpf_prog_attach(bpf_program__fd(prog), map_fd, BPF_SK_MSG_VERDICT, 0)) {
		err = -errno;
		pr_warn("cannot attach %s to %s: %s (the hook needs Linux %s)\n", h->hook,
			DMSC_MAP_FP_SOCKS, strerror(-err), h->min_linux);
		return err;
	}
	pin_prog_path(path, sizeof(path), pin_dir, h);
	unlink(path);
	if (bpf_program__pin(prog, path)) {
		err = -errno;
		pr_warn("cannot pin program %s: %s\n", path, strerror(-err));
		return err;
	}
	snprintf(res->fastpath_note, sizeof(res->fastpath_note),
		 "sk_msg attached to the sockhash (no sk_msg links before Linux 6.10)");
	return 0;
}

int dmsc_install(const char *pin_dir, const struct dmsc_install_opts *opts,
		 struct dmsc_install_result *res)
{
	char cg_abs[PATH_MAX], path[PATH_MAX];
	struct dmsc_sock *skel = NULL;
	struct dmsc_install rec;
	struct stat cg_st;
	struct bpf_map *map;
	int cg_fd = -1, lock_fd = -1, err;
	bool fresh = false, with_fp = true;
	__u32 zero = 0;
	size_t i;

	memset(res, 0, sizeof(*res));
	memset(&rec, 0, sizeof(rec));
	err = dmsc_cgroup_resolve(opts->cgroup, cg_abs, sizeof(cg_abs), rec.cgroup_path,
				  sizeof(rec.cgroup_path));
	if (err)
		return err;
	if (rec.cgroup_path[0] == '\0') {
		pr_warn("refusing to attach to the cgroup2 root %s: dmsc would capture every "
			"process on the host; name the cgroup (a slice, a service) whose "
			"processes are in the mesh\n",
			cg_abs);
		return -EINVAL;
	}
	snprintf(res->cgroup_path, sizeof(res->cgroup_path), "%s", rec.cgroup_path);
	cg_fd = open(cg_abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg_fd < 0 || fstat(cg_fd, &cg_st) != 0) {
		err = -errno;
		pr_warn("cannot open cgroup %s: %s\n", cg_abs, strerror(-err));
		goto out;
	}
	/* On cgroup2 the inode number is the cgroup id that links report. */
	rec.cgroup_id = cg_st.st_ino;

	err = ensure_bpffs(pin_dir);
	if (err)
		goto out;
	err = lock_dir(pin_dir, &lock_fd);
	if (err) {
		pr_warn("cannot lock %s: %s\n", pin_dir, strerror(-err));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/maps", pin_dir);
	err = ensure_dir(path);
	snprintf(path, sizeof(path), "%s/links", pin_dir);
	if (!err)
		err = ensure_dir(path);
	if (err) {
		pr_warn("cannot create %s: %s\n", path, strerror(-err));
		goto out;
	}

	/* An existing datapath must be on the same cgroup: moving it would
	 * silently take the mesh away from the processes it serves. */
	for (i = 0; i < dmsc_n_hooks; i++) {
		unsigned long long id = 0;
		int fd;

		if (dmsc_hooks[i].attach != DMSC_ATTACH_CGROUP)
			continue;
		fd = link_get(pin_dir, &dmsc_hooks[i]);
		if (fd < 0)
			continue;
		err = link_cgroup_id(fd, &id);
		close(fd);
		if (!err && id != rec.cgroup_id) {
			pr_warn("dmsc is already installed on another cgroup (id %llu) at %s; run "
				"`dmscctl uninstall` first\n",
				id, pin_dir);
			err = -EEXIST;
			goto out;
		}
	}

	fresh = pinned_max_entries(pin_dir, DMSC_MAP_SERVICES) == 0;
	/* First with the fast path; a kernel that refuses its programs gets
	 * the rest of the datapath without it (DESIGN.md decision 8).
	 * DMSC_NO_FASTPATH=1 takes that second way at once (and lets the
	 * tests walk it on any kernel). */
	with_fp = !getenv("DMSC_NO_FASTPATH") || strcmp(getenv("DMSC_NO_FASTPATH"), "1");
	if (!with_fp)
		snprintf(res->fastpath_note, sizeof(res->fastpath_note),
			 "disabled by DMSC_NO_FASTPATH=1");
	for (;; with_fp = false) {
		skel = dmsc_sock__open();
		if (!skel) {
			err = -errno;
			pr_warn("cannot open the BPF object: %s\n", strerror(-err));
			goto out;
		}
		err = size_maps(skel, pin_dir, opts, &rec);
		if (err)
			goto out;
		err = fastpath_settings(skel);
		if (err)
			goto out;
		bpf_object__for_each_map(map, skel->obj)
		{
			/* .rodata holds load-time settings: not state, and
			 * bpffs refuses its dotted name. */
			if (bpf_map__is_internal(map))
				continue;
			pin_path(path, sizeof(path), pin_dir, "maps", bpf_map__name(map));
			err = bpf_map__set_pin_path(map, path);
			if (err)
				goto out;
		}
		for (i = 0; !with_fp && i < dmsc_n_hooks; i++) {
			struct bpf_program *prog;

			if (!dmsc_hooks[i].fastpath)
				continue;
			prog = bpf_object__find_program_by_name(skel->obj, dmsc_hooks[i].prog);
			if (prog)
				bpf_program__set_autoload(prog, false);
		}
		err = dmsc_sock__load(skel);
		if (!err || !with_fp)
			break;
		pr_warn("cannot load the fast path programs (sockops, sk_msg): %s; loading "
			"the datapath without the same-host fast path\n",
			strerror(-err));
		snprintf(res->fastpath_note, sizeof(res->fastpath_note),
			 "disabled: the kernel refused its programs (%s)", strerror(-err));
		dmsc_sock__destroy(skel);
		skel = NULL;
	}
	if (err) {
		pr_warn("cannot load the BPF programs: %s (a pinned map from an incompatible "
			"build makes this fail: `dmscctl uninstall` removes it)\n",
			strerror(-err));
		goto out;
	}
	res->fastpath = with_fp;

	for (i = 0; i < dmsc_n_hooks; i++) {
		const struct dmsc_hook *h = &dmsc_hooks[i];
		struct bpf_program *prog = bpf_object__find_program_by_name(skel->obj, h->prog);
		struct bpf_link *link;
		int fd;

		if (!prog) {
			err = -ENOENT;
			pr_warn("program %s is missing from the BPF object\n", h->prog);
			goto out;
		}
		if (h->fastpath && !with_fp) {
			/* Not loaded: an old pin would keep an old program. */
			pin_path(path, sizeof(path), pin_dir, "links", h->prog);
			unlink(path);
			pin_prog_path(path, sizeof(path), pin_dir, h);
			unlink(path);
			continue;
		}
		if (h->attach == DMSC_ATTACH_SOCKHASH) {
			err = attach_sockhash(pin_dir, h, prog, bpf_map__fd(skel->maps.dmsc_fp_socks),
					      res);
			if (err)
				goto out;
			res->n_links++;
			continue;
		}
		fd = link_get(pin_dir, h);
		if (fd >= 0) {
			/* Adopt: swap the program under the pinned link, so
			 * the hook is never empty (Linux 5.7+). */
			err = bpf_link_update(fd, bpf_program__fd(prog), NULL);
			close(fd);
			if (err) {
				err = -errno;
				pr_warn("cannot replace program %s in place: %s\n", h->prog,
					strerror(-err));
				goto out;
			}
			res->adopted = true;
			res->n_links++;
			continue;
		}
		link = bpf_program__attach_cgroup(prog, cg_fd);
		if (!link) {
			err = -errno;
			pr_warn("cannot attach %s to %s: %s (the hook needs Linux %s)\n", h->hook,
				cg_abs, strerror(-err), h->min_linux);
			goto out;
		}
		pin_path(path, sizeof(path), pin_dir, "links", h->prog);
		err = bpf_link__pin(link, path);
		bpf_link__destroy(link); /* the pin keeps it attached */
		if (err) {
			pr_warn("cannot pin link %s: %s\n", path, strerror(-err));
			goto out;
		}
		res->n_links++;
	}

	rec.installed_at = (__u64)time(NULL);
	if (bpf_map_update_elem(bpf_map__fd(skel->maps.dmsc_install), &zero, &rec, BPF_ANY)) {
		err = -errno;
		pr_warn("cannot record the installation in %s: %s\n", DMSC_MAP_INSTALL,
			strerror(-err));
		goto out;
	}
	err = 0;
out:
	if (err && fresh) {
		/* Nothing was there before: leave no half-made pins behind. */
		bool removed;

		remove_pins(pin_dir, &removed);
	}
	dmsc_sock__destroy(skel);
	if (lock_fd >= 0)
		close(lock_fd);
	if (cg_fd >= 0)
		close(cg_fd);
	return err;
}

static int remove_pins(const char *dir, bool *removed)
{
	char path[PATH_MAX];
	int err = 0;
	size_t i;

	for (i = 0; i < dmsc_n_hooks; i++) {
		pin_path(path, sizeof(path), dir, "links", dmsc_hooks[i].prog);
		if (unlink(path) == 0)
			*removed = true;
		else if (errno != ENOENT)
			err = -errno;
		if (dmsc_hooks[i].attach != DMSC_ATTACH_SOCKHASH)
			continue;
		pin_prog_path(path, sizeof(path), dir, &dmsc_hooks[i]);
		if (unlink(path) == 0)
			*removed = true;
		else if (errno != ENOENT)
			err = -errno;
	}
	for (i = 0; i < DMSC_M_COUNT; i++) {
		pin_path(path, sizeof(path), dir, "maps", dmsc_map_names[i]);
		if (unlink(path) == 0)
			*removed = true;
		else if (errno != ENOENT)
			err = -errno;
	}
	return err;
}

int dmsc_uninstall(const char *pin_dir, bool *was_installed)
{
	char path[PATH_MAX];
	int lock_fd = -1, err;

	*was_installed = false;
	err = lock_dir(pin_dir, &lock_fd);
	if (err == -ENOENT)
		return 0;
	if (err) {
		pr_warn("cannot lock %s: %s\n", pin_dir, strerror(-err));
		return err;
	}
	/* Links first: the hooks go away before the maps they read. */
	err = remove_pins(pin_dir, was_installed);
	if (err)
		pr_warn("cannot remove every pin under %s: %s\n", pin_dir, strerror(-err));
	snprintf(path, sizeof(path), "%s/links", pin_dir);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/maps", pin_dir);
	rmdir(path);
	if (rmdir(pin_dir) == 0)
		*was_installed = true;
	/* The versioned directory's parent, if it is ours and now empty. */
	if (strcmp(pin_dir, DMSC_PIN_ROOT "/v" DMSC_LAYOUT_VERSION) == 0)
		rmdir(DMSC_PIN_ROOT);
	close(lock_fd);
	return err;
}

int dmsc_datapath_open(struct dmsc_datapath *dp, const char *pin_dir, bool lock)
{
	struct bpf_map_info info;
	char path[PATH_MAX];
	__u32 len, zero = 0;
	int i, err;

	memset(dp, 0, sizeof(*dp));
	dp->dir_fd = -1;
	for (i = 0; i < DMSC_M_COUNT; i++)
		dp->fd[i] = -1;
	snprintf(dp->pin_dir, sizeof(dp->pin_dir), "%s", pin_dir);
	if (lock) {
		err = lock_dir(pin_dir, &dp->dir_fd);
		if (err)
			goto fail;
	}
	for (i = 0; i < DMSC_M_COUNT; i++) {
		pin_path(path, sizeof(path), pin_dir, "maps", dmsc_map_names[i]);
		dp->fd[i] = bpf_obj_get(path);
		if (dp->fd[i] < 0) {
			err = -errno;
			goto fail;
		}
	}
	len = sizeof(info);
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(dp->fd[DMSC_M_SERVICES], &info, &len) ||
	    info.value_size != sizeof(struct dmsc_svc)) {
		pr_warn("the datapath pinned at %s has another layout than this build; "
			"`dmscctl uninstall` and install again\n",
			pin_dir);
		err = -EPROTO;
		goto fail;
	}
	dp->max_services = info.max_entries;
	len = sizeof(info);
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(dp->fd[DMSC_M_BACKENDS], &info, &len)) {
		err = -errno;
		goto fail;
	}
	dp->max_backends = info.max_entries;
	if (bpf_map_lookup_elem(dp->fd[DMSC_M_INSTALL], &zero, &dp->install)) {
		err = -errno;
		goto fail;
	}
	dp->nr_cpus = libbpf_num_possible_cpus();
	if (dp->nr_cpus <= 0) {
		err = dp->nr_cpus ? dp->nr_cpus : -EINVAL;
		goto fail;
	}
	return 0;
fail:
	if (err == -ENOENT)
		pr_debug("no datapath at %s\n", pin_dir);
	else if (err != -EPROTO)
		pr_warn("cannot open the datapath at %s: %s\n", pin_dir, strerror(-err));
	dmsc_datapath_close(dp);
	return err;
}

void dmsc_datapath_close(struct dmsc_datapath *dp)
{
	int i;

	for (i = 0; i < DMSC_M_COUNT; i++) {
		if (dp->fd[i] >= 0)
			close(dp->fd[i]);
		dp->fd[i] = -1;
	}
	if (dp->dir_fd >= 0)
		close(dp->dir_fd);
	dp->dir_fd = -1;
}

int dmsc_datapath_links(const char *pin_dir, struct dmsc_link_info *out, size_t n)
{
	size_t i;

	for (i = 0; i < n && i < dmsc_n_hooks; i++) {
		struct bpf_link_info info;
		__u32 len = sizeof(info);
		int fd = link_get(pin_dir, &dmsc_hooks[i]);

		memset(&out[i], 0, sizeof(out[i]));
		out[i].hook = &dmsc_hooks[i];
		if (fd < 0 && dmsc_hooks[i].attach == DMSC_ATTACH_SOCKHASH) {
			sockhash_prog_info(pin_dir, &dmsc_hooks[i], &out[i]);
			continue;
		}
		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
			out[i].present = true;
			out[i].link_id = info.id;
			out[i].prog_id = info.prog_id;
			if (dmsc_hooks[i].attach == DMSC_ATTACH_CGROUP)
				out[i].cgroup_id = info.cgroup.cgroup_id;
		}
		close(fd);
	}
	return (int)i;
}

int dmsc_percpu_sum(const struct dmsc_datapath *dp, enum dmsc_map_id m, __u32 key, void *out,
		    size_t value_size)
{
	size_t stride = (value_size + 7) & ~(size_t)7, words = value_size / sizeof(__u64);
	__u64 *sum = out;
	char *all;
	int cpu, err = 0;
	size_t w;

	all = calloc(dp->nr_cpus, stride);
	if (!all)
		return -ENOMEM;
	memset(out, 0, value_size);
	if (bpf_map_lookup_elem(dp->fd[m], &key, all)) {
		err = -errno;
		goto out;
	}
	for (cpu = 0; cpu < dp->nr_cpus; cpu++) {
		const __u64 *v = (const __u64 *)(all + (size_t)cpu * stride);

		for (w = 0; w < words; w++)
			sum[w] += v[w];
	}
out:
	free(all);
	return err;
}
