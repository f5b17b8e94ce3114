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
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <net/if.h>

#include "datapath.h"
#include "dmsc_sock.skel.h"
#include "dmsc_tc.skel.h"
#include "feature.h"
#include "log.h"
#include "migrate.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

#define DMSC_M_NAME(id, size) [DMSC_M_##id] = DMSC_MAP_##id,
const char *const dmsc_map_names[DMSC_M_COUNT] = { DMSC_MAPS(DMSC_M_NAME) };
#undef DMSC_M_NAME
#define DMSC_M_SIZE(id, size) [DMSC_M_##id] = DMSC_MAP_SIZE_##size,
const enum dmsc_map_size dmsc_map_sizes[DMSC_M_COUNT] = { DMSC_MAPS(DMSC_M_SIZE) };
#undef DMSC_M_SIZE

/* The BPF objects, embedded in the programs by their skeletons. Each
 * defines every map (bpf/common/maps.bpf.h); pinning makes them one set. */
const struct dmsc_bpf_object dmsc_objects[] = {
	[DMSC_OBJ_SOCK] = { "dmsc_sock", dmsc_sock__elf_bytes },
	[DMSC_OBJ_TC] = { "dmsc_tc", dmsc_tc__elf_bytes },
};
#define N_OBJECTS (sizeof(dmsc_objects) / sizeof(dmsc_objects[0]))
const size_t dmsc_n_objects = N_OBJECTS;

const struct dmsc_hook dmsc_hooks[] = {
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_connect4", "cgroup/connect4", "4.17", false },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_getpeername4", "cgroup/getpeername4", "5.8", false },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_sendmsg4", "cgroup/sendmsg4", "4.18", false },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_recvmsg4", "cgroup/recvmsg4", "5.2", false },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_connect6", "cgroup/connect6", "4.17", false },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_getpeername6", "cgroup/getpeername6", "5.8", false },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_sendmsg6", "cgroup/sendmsg6", "4.18", false },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_recvmsg6", "cgroup/recvmsg6", "5.2", false },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_skb_egress", "cgroup_skb/egress", "4.10", false },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_skb_ingress", "cgroup_skb/ingress", "4.10", false },
	{ DMSC_OBJ_TC, DMSC_ATTACH_TC_INGRESS, "dmsc_tc_ingress", "tc", "4.1", false },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_l7_sockops", "sockops", "5.10", false },
	/* The same-host fast path: sockops on the cgroup, sk_msg on the
	 * sockhash. Optional (feature.c has their fallback rows). */
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_fp_sockops", "sockops", "4.13", true },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_SOCKHASH, "dmsc_fp_msg", "sk_msg", "5.8", true },
};
const size_t dmsc_n_hooks = sizeof(dmsc_hooks) / sizeof(dmsc_hooks[0]);

/* Legacy TC attachment (clsact + cls_bpf, works on every supported
 * kernel); these are not links, so uninstall removes them by handle. */
#define DMSC_TC_HANDLE 0xd75c
#define DMSC_TC_PRIORITY 0xd75c

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

/* Programs renamed since an earlier layout (the dmsc_ prefix; 8fb0649 and
 * before had none). A link is pinned under its program's name, so install
 * moves an old pin to the new name before it adopts the link: the link then
 * gets the new program in place (the hook is never empty) and no pin of the
 * old name is left. */
static const struct {
	const char *former, *prog;
} renamed_progs[] = {
	{ "sock4_connect", "dmsc_connect4" },
	{ "sock4_getpeername", "dmsc_getpeername4" },
	{ "sock4_sendmsg", "dmsc_sendmsg4" },
	{ "sock4_recvmsg", "dmsc_recvmsg4" },
	{ "skb_egress", "dmsc_skb_egress" },
	{ "skb_ingress", "dmsc_skb_ingress" },
	{ "sock4_l7_established", "dmsc_l7_sockops" },
	{ "sock4_fp_sockops", "dmsc_fp_sockops" },
	{ "sock4_fp_msg", "dmsc_fp_msg" },
};

/* Renames links/FORMER (and the sk_msg program pin links/FORMER_prog) to
 * the current names. Both present (an interrupted upgrade): the old one
 * is removed, its program detaches, the current one stays. */
static int rename_former_pins(const char *pin_dir)
{
	static const char *const suffixes[] = { "", "_prog" };
	char from[PATH_MAX], to[PATH_MAX], name[128];
	size_t i, k;

	for (i = 0; i < sizeof(renamed_progs) / sizeof(renamed_progs[0]); i++) {
		for (k = 0; k < 2; k++) {
			snprintf(name, sizeof(name), "%s%s", renamed_progs[i].former, suffixes[k]);
			pin_path(from, sizeof(from), pin_dir, "links", name);
			snprintf(name, sizeof(name), "%s%s", renamed_progs[i].prog, suffixes[k]);
			pin_path(to, sizeof(to), pin_dir, "links", name);
			if (access(from, F_OK) != 0)
				continue;
			if (access(to, F_OK) == 0 ? unlink(from) : rename(from, to)) {
				int err = -errno;

				pr_warn("cannot move pin %s to %s: %s\n", from, to, strerror(-err));
				return err;
			}
			pr_debug("pin %s is now %s\n", from, to);
		}
	}
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

static int size_maps(struct bpf_object *obj, const char *pin_dir,
		     const struct dmsc_install_opts *opts, struct dmsc_install *rec)
{
	size_t i;
	int err;

	for (i = 0; i < DMSC_M_COUNT; i++) {
		const char *name = dmsc_map_names[i];
		struct bpf_map *map = bpf_object__find_map_by_name(obj, name);
		bool by_backend = dmsc_map_sizes[i] == DMSC_MAP_SIZE_BE;
		unsigned int want = by_backend ? opts->max_backends : opts->max_services;
		unsigned int pinned, size;

		if (dmsc_map_sizes[i] == DMSC_MAP_SIZE_FIXED)
			continue;
		pinned = pinned_max_entries(pin_dir, name);
		if (!map)
			return -ENOENT;
		size = want ? want : bpf_map__max_entries(map);
		/* A map this build added to a pinned datapath (dmsc_services6
		 * on an earlier install) is sized like the pinned maps of its
		 * kind, so that every id of the pinned ones fits it. */
		if (!pinned && !want) {
			pinned = pinned_max_entries(pin_dir, by_backend ? DMSC_MAP_BACKENDS
									: DMSC_MAP_SERVICES);
			if (pinned)
				size = pinned;
			pinned = 0;
		}
		if (pinned && want && want != pinned) {
			pr_warn("map %s is pinned with %u entries; changing its capacity to %u needs "
				"`dmscctl uninstall` first\n",
				name, pinned, want);
			return -EEXIST;
		}
		if (pinned)
			size = pinned;
		if (size < 2) {
			pr_warn("capacity of %s must be at least 2 (id 0 is reserved)\n", name);
			return -EINVAL;
		}
		err = bpf_map__set_max_entries(map, size);
		if (err)
			return err;
		if (i == DMSC_M_SERVICES)
			rec->max_services = size;
		if (i == DMSC_M_BACKENDS)
			rec->max_backends = size;
	}
	return 0;
}

/* The install record that is pinned: this build's layout, or an earlier
 * one that only grew at its end since (the fields it lacks read as zero,
 * as migrate.c carries the record over). */
static bool pinned_install(const char *pin_dir, struct dmsc_install *rec)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info), zero = 0;
	char path[PATH_MAX];
	bool ok = false;
	int fd;

	pin_path(path, sizeof(path), pin_dir, "maps", DMSC_MAP_INSTALL);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return false;
	memset(&info, 0, sizeof(info));
	memset(rec, 0, sizeof(*rec));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.value_size > 0 &&
	    info.value_size <= sizeof(*rec))
		ok = bpf_map_lookup_elem(fd, &zero, rec) == 0;
	close(fd);
	return ok;
}

/* The default bound: DMSC_FP_BACKLOG_MAX, but never more than
 * tcp_mem[1] / DMSC_FP_BACKLOG_TCP_MEM_SHARE (tcp_mem[1]: the TCP memory at
 * which the kernel starts to economise).
 * Redirected bytes are charged to TCP's memory; past tcp_mem[2] the kernel
 * aborts connections ("TCP: out of memory"), which two slow readers of
 * 64 MiB each did in a 2 GiB test guest (tcp_mem[1] 110 MiB there). */
static __u32 fastpath_backlog_default(void)
{
	unsigned long long lo, pressure, hi, cap;
	long page = sysconf(_SC_PAGESIZE);
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_mem", "r");
	int n = 0;

	if (f) {
		n = fscanf(f, "%llu %llu %llu", &lo, &pressure, &hi);
		fclose(f);
	}
	if (n != 3 || page <= 0)
		return DMSC_FP_BACKLOG_MAX;
	cap = pressure * (unsigned long long)page / DMSC_FP_BACKLOG_TCP_MEM_SHARE;
	return cap < DMSC_FP_BACKLOG_MAX ? (__u32)cap : DMSC_FP_BACKLOG_MAX;
}

/* The host budget of unread redirected bytes (dmsc_fp_host): $DMSC_FP_HOST_BUDGET
 * (bytes, K/M/G; 0: none), else DMSC_FP_HOST_BUDGET_CONNS connections at the
 * per-connection bound, at most tcp_mem[1] / DMSC_FP_HOST_BUDGET_TCP_MEM_SHARE,
 * never under the bound itself (one connection may always reach it). */
static int fastpath_host_budget(__u32 backlog_max, __u32 *budget)
{
	unsigned long long lo, pressure, hi, want, cap;
	const char *env = getenv("DMSC_FP_HOST_BUDGET");
	long page = sysconf(_SC_PAGESIZE);
	FILE *f;
	int n = 0;

	if (env && *env)
		return dmsc_parse_bytes("DMSC_FP_HOST_BUDGET", env, budget);
	want = (unsigned long long)(backlog_max ? backlog_max : DMSC_FP_BACKLOG_MAX) *
	       DMSC_FP_HOST_BUDGET_CONNS;
	f = fopen("/proc/sys/net/ipv4/tcp_mem", "r");
	if (f) {
		n = fscanf(f, "%llu %llu %llu", &lo, &pressure, &hi);
		fclose(f);
	}
	if (n == 3 && page > 0) {
		cap = pressure * (unsigned long long)page / DMSC_FP_HOST_BUDGET_TCP_MEM_SHARE;
		if (want > cap)
			want = cap;
	}
	if (want < backlog_max)
		want = backlog_max;
	*budget = want > 0xffffffffull ? 0xffffffffu : (__u32)want;
	return 0;
}

/* The bound on a reader's unread redirected bytes: --fastpath-backlog, else
 * $DMSC_FP_BACKLOG_MAX, else what an earlier install (old, NULL if none) set
 * explicitly, else the default, worked out again at each install. Recorded
 * in *rec; fp_backlog_set says whether it was chosen. */
static int fastpath_backlog(const struct dmsc_install_opts *opts, const struct dmsc_install *old,
			    struct dmsc_install *rec)
{
	const char *env = getenv("DMSC_FP_BACKLOG_MAX");

	rec->fp_backlog_set = 1;
	if (opts->fp_backlog_set && !opts->fp_backlog_default) {
		rec->fp_backlog_max = opts->fp_backlog_max;
		return 0;
	}
	if (!opts->fp_backlog_default && env && *env)
		return dmsc_parse_bytes("DMSC_FP_BACKLOG_MAX", env, &rec->fp_backlog_max);
	if (!opts->fp_backlog_default && old && old->fp_backlog_set) {
		rec->fp_backlog_max = old->fp_backlog_max;
		return 0;
	}
	rec->fp_backlog_set = 0;
	rec->fp_backlog_max = fastpath_backlog_default();
	return 0;
}

/* Load-time settings of the fast path: the backlog bound chosen above, the
 * host budget, and $DMSC_FP_APPLY_BYTES, $DMSC_FP_CORK_BYTES,
 * $DMSC_FP_NO_RELEASE: experiments of scripts/bench-datapath.sh --variants
 * and --first-bulk, off by default. */
static int fastpath_settings(struct dmsc_sock *skel, const struct dmsc_install *rec)
{
	const struct {
		const char *env;
		volatile __u32 *var;
	} knobs[] = {
		{ "DMSC_FP_APPLY_BYTES", &skel->rodata->fp_apply_bytes },
		{ "DMSC_FP_CORK_BYTES", &skel->rodata->fp_cork_bytes },
		{ "DMSC_FP_NO_RELEASE", &skel->rodata->fp_no_release },
	};
	const char *env;
	size_t i;
	__u32 v;
	int err;

	skel->rodata->fp_backlog_max = rec->fp_backlog_max;
	err = fastpath_host_budget(rec->fp_backlog_max, &v);
	if (err)
		return err;
	skel->rodata->fp_host_budget = v;
	pr_debug("fast path: host budget %u bytes\n", v);
	for (i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
		env = getenv(knobs[i].env);
		if (!env || !*env)
			continue;
		err = dmsc_parse_bytes(knobs[i].env, env, &v);
		if (err)
			return err;
		*knobs[i].var = v;
		pr_info("fast path: %s=%u\n", knobs[i].env, v);
	}
	return 0;
}

/* The fast path is both its programs or neither: sockops without sk_msg
 * would put sockets in the sockhash for nothing. */
static void fastpath_all_or_none(struct bpf_object *obj)
{
	struct bpf_program *prog;
	bool off = false;
	size_t i;

	for (i = 0; i < dmsc_n_hooks; i++) {
		if (!dmsc_hooks[i].fastpath)
			continue;
		prog = bpf_object__find_program_by_name(obj, dmsc_hooks[i].prog);
		if (prog && !bpf_program__autoload(prog))
			off = true;
	}
	for (i = 0; off && i < dmsc_n_hooks; i++) {
		if (!dmsc_hooks[i].fastpath)
			continue;
		prog = bpf_object__find_program_by_name(obj, dmsc_hooks[i].prog);
		if (prog)
			bpf_program__set_autoload(prog, false);
	}
}

/* The objects, opened through their skeletons: the embedded ELF, and typed
 * access to load-time settings (skel->rodata) between open and load. */
struct dmsc_skels {
	struct dmsc_sock *sock;
	struct dmsc_tc *tc;
};

static void skels_destroy(struct dmsc_skels *skels)
{
	dmsc_sock__destroy(skels->sock);
	dmsc_tc__destroy(skels->tc);
}

/* Opens, sizes, pins and loads one object; maps already pinned are reused,
 * or migrated if their definition changed (migrate.c). skels_destroy()
 * closes it, also on failure. */
static int load_object(size_t idx, const char *pin_dir, const struct dmsc_install_opts *opts,
		       const struct dmsc_features *features, struct dmsc_install *rec,
		       struct dmsc_skels *skels, struct dmsc_migrate *mig,
		       struct bpf_object **out)
{
	char path[PATH_MAX];
	struct bpf_object *obj = NULL;
	struct bpf_map *map;
	int err;

	errno = 0;
	if (idx == DMSC_OBJ_SOCK && (skels->sock = dmsc_sock__open()))
		obj = skels->sock->obj;
	else if (idx == DMSC_OBJ_TC && (skels->tc = dmsc_tc__open()))
		obj = skels->tc->obj;
	if (!obj) {
		err = errno ? -errno : -ENOENT;
		pr_warn("cannot open BPF object %s: %s\n", dmsc_objects[idx].name, strerror(-err));
		return err;
	}
	/* Programs whose hook this kernel lacks are not loaded (their
	 * feature has a fallback; a missing required one stopped install). */
	dmsc_features_disable(obj, features);
	fastpath_all_or_none(obj);
	err = size_maps(obj, pin_dir, opts, rec);
	if (!err && idx == DMSC_OBJ_SOCK)
		err = fastpath_settings(skels->sock, rec);
	if (err)
		return err;
	bpf_object__for_each_map(map, obj)
	{
		/* .rodata holds load-time settings: not state, and bpffs
		 * refuses its dotted name. */
		if (bpf_map__is_internal(map))
			continue;
		pin_path(path, sizeof(path), pin_dir, "maps", bpf_map__name(map));
		err = dmsc_migrate_prepare(mig, map, path);
		if (err)
			return err;
	}
	err = bpf_object__load(obj);
	if (err) {
		pr_warn("cannot load BPF object %s: %s\n", dmsc_objects[idx].name, strerror(-err));
		return err;
	}
	err = dmsc_migrate_loaded(mig, obj);
	if (err)
		return err;
	*out = obj;
	return 0;
}

static int tc_attach(int prog_fd, unsigned int ifindex, const char *ifname)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = (int)ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, to, .handle = DMSC_TC_HANDLE, .priority = DMSC_TC_PRIORITY,
		    .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE);
	int err;

	err = bpf_tc_hook_create(&hook);
	if (err && err != -EEXIST) {
		pr_warn("cannot add a clsact qdisc to %s: %s\n", ifname, strerror(-err));
		return err;
	}
	err = bpf_tc_attach(&hook, &to);
	if (err)
		pr_warn("cannot attach the TC program to %s: %s\n", ifname, strerror(-err));
	return err;
}

/* Removes our filter (by handle and priority) from an interface that still
 * exists in this network namespace; the clsact qdisc stays, others may use
 * it. */
static void tc_detach(unsigned int ifindex)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = (int)ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, to, .handle = DMSC_TC_HANDLE, .priority = DMSC_TC_PRIORITY);

	bpf_tc_detach(&hook, &to);
}

static int remove_pins(const char *dir, bool *removed);

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


/* The interfaces for TC: those recorded by an earlier install (old, NULL
 * if none: adopting keeps them) plus those named now, resolved in this
 * network namespace. */
static int record_ifaces(const struct dmsc_install_opts *opts, const struct dmsc_install *old,
			 struct dmsc_install *rec)
{
	__u32 k;
	size_t i;

	if (old && old->n_ifaces <= DMSC_IFACES_MAX) {
		rec->n_ifaces = old->n_ifaces;
		memcpy(rec->ifindex, old->ifindex, sizeof(rec->ifindex));
		memcpy(rec->ifname, old->ifname, sizeof(rec->ifname));
	}
	for (i = 0; i < opts->n_ifaces; i++) {
		unsigned int idx = if_nametoindex(opts->ifaces[i]);

		if (!idx) {
			pr_warn("--interface %s: no such interface in this network namespace\n",
				opts->ifaces[i]);
			return -ENODEV;
		}
		for (k = 0; k < rec->n_ifaces; k++)
			if (rec->ifindex[k] == idx)
				break;
		if (k < rec->n_ifaces)
			continue;
		if (rec->n_ifaces == DMSC_IFACES_MAX) {
			pr_warn("--interface %s: at most %d interfaces\n", opts->ifaces[i],
				DMSC_IFACES_MAX);
			return -E2BIG;
		}
		rec->ifindex[rec->n_ifaces] = idx;
		snprintf(rec->ifname[rec->n_ifaces], sizeof(rec->ifname[0]), "%s", opts->ifaces[i]);
		rec->n_ifaces++;
	}
	return 0;
}

int dmsc_install(const char *pin_dir, const struct dmsc_install_opts *opts,
		 struct dmsc_install_result *res)
{
	char cg_abs[PATH_MAX], path[PATH_MAX];
	struct bpf_object *objs[N_OBJECTS] = { NULL };
	struct dmsc_skels skels = { NULL, NULL };
	struct dmsc_features features;
	struct dmsc_install rec, old;
	struct dmsc_migrate *mig = NULL;
	struct stat cg_st;
	struct bpf_map *map;
	int cg_fd = -1, lock_fd = -1, err;
	bool fresh = false, have_old, switched = false;
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

	err = rename_former_pins(pin_dir);
	if (err)
		goto out;

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
	/* What this kernel lacks: a fallback turns a program off, a missing
	 * required feature stops here with its name and Linux version. */
	err = dmsc_features_check(&features);
	/* What the installation being adopted recorded (read under the lock). */
	memset(&old, 0, sizeof(old));
	have_old = pinned_install(pin_dir, &old);
	if (!err)
		err = fastpath_backlog(opts, have_old ? &old : NULL, &rec);
	if (err)
		goto out;
	mig = dmsc_migrate_new(pin_dir);
	if (!mig) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < N_OBJECTS; i++) {
		err = load_object(i, pin_dir, opts, &features, &rec, &skels, mig, &objs[i]);
		if (err)
			goto out;
	}
	err = record_ifaces(opts, have_old ? &old : NULL, &rec);
	if (err)
		goto out;

	for (i = 0; i < dmsc_n_hooks; i++) {
		const struct dmsc_hook *h = &dmsc_hooks[i];
		struct bpf_program *prog = bpf_object__find_program_by_name(objs[h->object], h->prog);
		struct bpf_link *link;
		unsigned int k;
		int fd;

		if (!prog) {
			err = -ENOENT;
			pr_warn("program %s is missing from the BPF object\n", h->prog);
			goto out;
		}
		if (!bpf_program__autoload(prog)) {
			/* Its hook is missing here (dmsc_features_check). An old
			 * pin would keep an old program attached. */
			pin_path(path, sizeof(path), pin_dir, "links", h->prog);
			unlink(path);
			pin_prog_path(path, sizeof(path), pin_dir, h);
			unlink(path);
			if (h->fastpath)
				snprintf(res->fastpath_note, sizeof(res->fastpath_note),
					 "disabled: this kernel lacks a feature it needs "
					 "(`dmscctl features`)");
			continue;
		}
		switched = true;
		if (h->attach == DMSC_ATTACH_SOCKHASH) {
			/* A new sockhash gets a link of its own; the old link
			 * goes with its pin, the old map with its sockets. */
			if (dmsc_migrate_replaced(mig, DMSC_MAP_FP_SOCKS)) {
				pin_path(path, sizeof(path), pin_dir, "links", h->prog);
				unlink(path);
			}
			map = bpf_object__find_map_by_name(objs[h->object], DMSC_MAP_FP_SOCKS);
			err = map ? attach_sockhash(pin_dir, h, prog, bpf_map__fd(map), res) : -ENOENT;
			if (err)
				goto out;
			res->fastpath = true;
			res->n_links++;
			continue;
		}
		if (h->attach == DMSC_ATTACH_TC_INGRESS) {
			for (k = 0; k < rec.n_ifaces; k++) {
				err = tc_attach(bpf_program__fd(prog), rec.ifindex[k], rec.ifname[k]);
				if (err)
					goto out;
				res->n_ifaces++;
			}
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
	/* A reinstall counts as a change for whoever mirrors the maps. */
	rec.generation = old.generation + 1;
	/* An apply that was interrupted before this install is still to be
	 * repaired by the next one. */
	rec.apply_in_progress = old.apply_in_progress;
	map = bpf_object__find_map_by_name(objs[DMSC_OBJ_SOCK], DMSC_MAP_INSTALL);
	if (!map || bpf_map_update_elem(bpf_map__fd(map), &zero, &rec, BPF_ANY)) {
		err = map ? -errno : -ENOENT;
		pr_warn("cannot record the installation in %s: %s\n", DMSC_MAP_INSTALL,
			strerror(-err));
		goto out;
	}
	err = 0;
out:
	/* Once programs that use the new maps are attached, the pins must
	 * name those maps, even if a later step failed. */
	if (mig && (!err || switched)) {
		int merr = dmsc_migrate_commit(mig);

		if (!err)
			err = merr;
	}
	dmsc_migrate_free(mig);
	if (!err)
		dmsc_migrate_sweep(pin_dir); /* a pin it cannot remove is logged */
	if (err && fresh) {
		/* Nothing was there before: leave no half-made pins behind. */
		bool removed;

		remove_pins(pin_dir, &removed);
		/* and no empty directories (rmdir leaves a non-empty one) */
		snprintf(path, sizeof(path), "%s/links", pin_dir);
		rmdir(path);
		snprintf(path, sizeof(path), "%s/maps", pin_dir);
		rmdir(path);
		rmdir(pin_dir);
	}
	skels_destroy(&skels);
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
	/* and the pins of an earlier layout's program names */
	for (i = 0; i < sizeof(renamed_progs) / sizeof(renamed_progs[0]); i++) {
		char name[128];

		pin_path(path, sizeof(path), dir, "links", renamed_progs[i].former);
		if (unlink(path) == 0)
			*removed = true;
		snprintf(name, sizeof(name), "%s_prog", renamed_progs[i].former);
		pin_path(path, sizeof(path), dir, "links", name);
		if (unlink(path) == 0)
			*removed = true;
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
	int lock_fd = -1, err, fd;

	*was_installed = false;
	err = lock_dir(pin_dir, &lock_fd);
	if (err == -ENOENT)
		return 0;
	if (err) {
		pr_warn("cannot lock %s: %s\n", pin_dir, strerror(-err));
		return err;
	}
	/* TC filters first, then links: the hooks go away before the maps
	 * they read. An interface of another network namespace is not found
	 * here; its filter goes away with the interface. */
	pin_path(path, sizeof(path), pin_dir, "maps", DMSC_MAP_INSTALL);
	fd = bpf_obj_get(path);
	if (fd >= 0) {
		struct dmsc_install rec;
		__u32 zero = 0, k;
		char name[IF_NAMESIZE];

		if (bpf_map_lookup_elem(fd, &zero, &rec) == 0)
			for (k = 0; k < rec.n_ifaces && k < DMSC_IFACES_MAX; k++)
				if (if_indextoname(rec.ifindex[k], name) &&
				    strncmp(name, rec.ifname[k], sizeof(rec.ifname[k])) == 0)
					tc_detach(rec.ifindex[k]);
		close(fd);
	}
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

int dmsc_datapath_generation(const struct dmsc_datapath *dp, __u64 *gen)
{
	struct dmsc_install rec;
	__u32 zero = 0;

	if (bpf_map_lookup_elem(dp->fd[DMSC_M_INSTALL], &zero, &rec))
		return -errno;
	*gen = rec.generation;
	return 0;
}

int dmsc_datapath_bump_generation(const struct dmsc_datapath *dp)
{
	struct dmsc_install rec;
	__u32 zero = 0;

	/* Writers hold the lock, so read-modify-write is safe. */
	if (bpf_map_lookup_elem(dp->fd[DMSC_M_INSTALL], &zero, &rec))
		return -errno;
	rec.generation++;
	if (bpf_map_update_elem(dp->fd[DMSC_M_INSTALL], &zero, &rec, BPF_ANY))
		return -errno;
	return 0;
}

static int set_in_progress(const struct dmsc_datapath *dp, __u32 on, bool *was)
{
	struct dmsc_install rec;
	__u32 zero = 0;
	int err;

	if (bpf_map_lookup_elem(dp->fd[DMSC_M_INSTALL], &zero, &rec))
		goto fail;
	if (was)
		*was = rec.apply_in_progress != 0;
	rec.apply_in_progress = on;
	rec.generation++;
	if (bpf_map_update_elem(dp->fd[DMSC_M_INSTALL], &zero, &rec, BPF_ANY))
		goto fail;
	return 0;
fail:
	err = -errno;
	pr_warn("cannot %s the apply in progress in %s: %s\n", on ? "record" : "clear",
		DMSC_MAP_INSTALL, strerror(-err));
	return err;
}

int dmsc_datapath_write_begin(const struct dmsc_datapath *dp, bool *interrupted)
{
	return set_in_progress(dp, 1, interrupted);
}

int dmsc_datapath_write_end(const struct dmsc_datapath *dp)
{
	return set_in_progress(dp, 0, NULL);
}

int dmsc_datapath_interrupted(const struct dmsc_datapath *dp, bool *interrupted)
{
	struct dmsc_install rec;
	__u32 zero = 0;

	if (bpf_map_lookup_elem(dp->fd[DMSC_M_INSTALL], &zero, &rec))
		return -errno;
	*interrupted = rec.apply_in_progress != 0;
	return 0;
}

unsigned int dmsc_map_id(int fd)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return 0;
	return info.id;
}
