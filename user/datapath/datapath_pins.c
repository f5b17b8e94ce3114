// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The pin directory: bpffs mounted under it, its lock, pins of a former
 * layout renamed, links and maps read back from their pins, every pin
 * removed.
 */
#include "install_steps.h"

int ensure_dir(const char *path)
{
	if (mkdir(path, 0700) == 0 || errno == EEXIST)
		return 0;
	return -errno;
}

/* The pin directory must be on a BPF filesystem. The default place is
 * mounted if nothing is there yet (as systemd does at boot). */
int ensure_bpffs(const char *pin_dir)
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

void pin_path(char *buf, size_t len, const char *pin_dir, const char *kind,
		     const char *name)
{
	snprintf(buf, len, "%s/%s/%s", pin_dir, kind, name);
}

int lock_fd(int fd, const char *pin_dir)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	pr_info("waiting for another dmsc writer to finish with %s\n", pin_dir);
	return flock(fd, LOCK_EX) ? -errno : 0;
}

int lock_dir(const char *pin_dir, int *fd_out)
{
	int fd, err;

	fd = open(pin_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	err = lock_fd(fd, pin_dir);
	if (err) {
		close(fd);
		return err;
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
int rename_former_pins(const char *pin_dir)
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
int link_get(const char *pin_dir, const struct dmsc_hook *h)
{
	char path[PATH_MAX];
	int fd;

	pin_path(path, sizeof(path), pin_dir, "links", h->prog);
	fd = bpf_obj_get(path);
	return fd < 0 ? -errno : fd;
}

int link_cgroup_id(int link_fd, unsigned long long *id)
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
unsigned int pinned_max_entries(const char *pin_dir, const char *map)
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

int remove_pins(const char *dir, bool *removed)
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
