// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Loading and attaching: maps sized from the options or the pinned
 * install, the fast path's settings, each object opened through its
 * skeleton and loaded, tc and sockhash attachment, the interfaces
 * recorded.
 */
#include "install_steps.h"

/* --max-services N, --max-backends N: the maps hold N + 1, id 0 being
 * reserved (0: the default, or what is pinned) */
static int install_opt_capacity(const char *flag, const char *arg, unsigned int *out)
{
	__u32 n;

	if (dmsc_parse_u32(flag, arg, 0, 4000000, &n))
		return -EINVAL;
	*out = n ? n + 1 : 0;
	return 1;
}

int dmsc_install_opt(struct dmsc_install_args *a, int opt, const char *arg)
{
	struct dmsc_install_opts *io = &a->io;

	switch (opt) {
	case DMSC_INSTALL_OPT_CGROUP:
		io->cgroup = arg;
		return 1;
	case DMSC_INSTALL_OPT_IFACE:
		if (io->n_ifaces == DMSC_IFACES_MAX) {
			pr_warn("--interface: at most %d interfaces\n", DMSC_IFACES_MAX);
			return -EINVAL;
		}
		a->ifaces[io->n_ifaces++] = arg;
		io->ifaces = a->ifaces;
		return 1;
	case DMSC_INSTALL_OPT_MAX_SVC:
		return install_opt_capacity("--max-services", arg, &io->max_services);
	case DMSC_INSTALL_OPT_MAX_BE:
		return install_opt_capacity("--max-backends", arg, &io->max_backends);
	case DMSC_INSTALL_OPT_FP_BACKLOG:
		if (!strcmp(arg, "default"))
			io->fp_backlog_default = true;
		else if (dmsc_parse_bytes("--fastpath-backlog", arg, &io->fp_backlog_max))
			return -EINVAL;
		io->fp_backlog_set = true;
		return 1;
	case DMSC_INSTALL_OPT_PIN_DIR:
		a->pin_dir = arg;
		return 1;
	}
	return 0;
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
bool pinned_install(const char *pin_dir, struct dmsc_install *rec)
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
int fastpath_backlog(const struct dmsc_install_opts *opts, const struct dmsc_install *old,
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
 * $DMSC_FP_NO_RELEASE, $DMSC_FP_WHOLE_FIRST, $DMSC_FP_NO_WINDOW: experiments of
 * scripts/bench-datapath.sh --variants and --first-bulk, off by default. */
static int fastpath_settings(struct dmsc_sock *skel, const struct dmsc_install *rec)
{
	const struct {
		const char *env;
		volatile __u32 *var;
	} knobs[] = {
		{ "DMSC_FP_APPLY_BYTES", &skel->rodata->fp_apply_bytes },
		{ "DMSC_FP_CORK_BYTES", &skel->rodata->fp_cork_bytes },
		{ "DMSC_FP_NO_RELEASE", &skel->rodata->fp_no_release },
		{ "DMSC_FP_WHOLE_FIRST", &skel->rodata->fp_whole_first },
		{ "DMSC_FP_NO_WINDOW", &skel->rodata->fp_no_window },
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

void skels_destroy(struct dmsc_skels *skels)
{
	dmsc_sock__destroy(skels->sock);
	dmsc_tc__destroy(skels->tc);
}

/* Opens, sizes, pins and loads one object; maps already pinned are reused,
 * or migrated if their definition changed (migrate.c). skels_destroy()
 * closes it, also on failure. */
int load_object(size_t idx, const char *pin_dir, const struct dmsc_install_opts *opts,
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

int tc_attach(int prog_fd, unsigned int ifindex, const char *ifname)
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
void tc_detach(unsigned int ifindex)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = (int)ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, to, .handle = DMSC_TC_HANDLE, .priority = DMSC_TC_PRIORITY);

	bpf_tc_detach(&hook, &to);
}


/* Without sk_msg links (before 6.10) the program is attached to the map
 * itself, and pinned beside the links so that status can find it; it stays
 * attached as long as the pinned sockhash lives. */
void pin_prog_path(char *buf, size_t len, const char *pin_dir, const struct dmsc_hook *h)
{
	/* bpffs refuses names with a dot. */
	snprintf(buf, len, "%s/links/%s_prog", pin_dir, h->prog);
}

void sockhash_prog_info(const char *pin_dir, const struct dmsc_hook *h,
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
int attach_sockhash(const char *pin_dir, const struct dmsc_hook *h,
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
int record_ifaces(const struct dmsc_install_opts *opts, const struct dmsc_install *old,
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
