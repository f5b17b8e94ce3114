// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include "install_steps.h"


#define DMSC_M_NAME(id, ...) [DMSC_M_##id] = DMSC_MAP_##id,
const char *const dmsc_map_names[DMSC_M_COUNT] = { DMSC_MAPS(DMSC_M_NAME) };
#undef DMSC_M_NAME
#define DMSC_M_SIZE(id, name, size, ...) [DMSC_M_##id] = DMSC_MAP_SIZE_##size,
const enum dmsc_map_size dmsc_map_sizes[DMSC_M_COUNT] = { DMSC_MAPS(DMSC_M_SIZE) };
#undef DMSC_M_SIZE
#define DMSC_M_KEY(id, name, size, type, max, key, value) [DMSC_M_##id] = sizeof(key),
const size_t dmsc_map_key_sizes[DMSC_M_COUNT] = { DMSC_MAPS(DMSC_M_KEY) };
#undef DMSC_M_KEY
#define DMSC_M_VALUE(id, name, size, type, max, key, value) [DMSC_M_##id] = sizeof(value),
const size_t dmsc_map_value_sizes[DMSC_M_COUNT] = { DMSC_MAPS(DMSC_M_VALUE) };
#undef DMSC_M_VALUE
#define DMSC_M_HASH(id, name, size, type, ...) [DMSC_M_##id] = BPF_MAP_TYPE_##type == BPF_MAP_TYPE_HASH,
const bool dmsc_map_is_hash[DMSC_M_COUNT] = { DMSC_MAPS(DMSC_M_HASH) };
#undef DMSC_M_HASH

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
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_health_sockops", "sockops", "5.10", false },
	/* The same-host fast path: sockops on the cgroup, sk_msg on the
	 * sockhash. Optional (feature.c has their fallback rows). */
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_CGROUP, "dmsc_fp_sockops", "sockops", "4.13", true },
	{ DMSC_OBJ_SOCK, DMSC_ATTACH_SOCKHASH, "dmsc_fp_msg", "sk_msg", "5.8", true },
};
const size_t dmsc_n_hooks = sizeof(dmsc_hooks) / sizeof(dmsc_hooks[0]);

int dmsc_require_root(const char *what)
{
	if (geteuid() == 0)
		return 0;
	pr_warn("%s needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo\n",
		what);
	return -EPERM;
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
