// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The installed datapath opened: its maps by pin, its links, per-CPU sums,
 * the generation and write-in-progress flags, a map's id by fd.
 */
#include "install_steps.h"

void dmsc_datapath_init(struct dmsc_datapath *dp)
{
	int i;

	memset(dp, 0, sizeof(*dp));
	dp->dir_fd = -1;
	dp->maps_fd = -1;
	for (i = 0; i < DMSC_M_COUNT; i++)
		dp->fd[i] = -1;
}

int dmsc_datapath_open(struct dmsc_datapath *dp, const char *pin_dir, bool lock)
{
	struct bpf_map_info info;
	char path[PATH_MAX];
	__u32 len, zero = 0;
	int i, err;

	dmsc_datapath_init(dp);
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
	if (dp->maps_fd >= 0)
		close(dp->maps_fd);
	dp->maps_fd = -1;
}

/* Whether the held maps are still the pinned ones; called under the lock,
 * which every writer of pins (install, its migration, uninstall) holds. A
 * removed directory has no links left. A time equal to the one at the
 * open would not show a pin changed within the same clock tick before
 * it (the kernel stamps with a coarse clock): such a stamp is trusted
 * only once older than the open (maps_settled). */
static bool held_current(const struct dmsc_datapath *dp)
{
	struct stat st;

	if (!dp->maps_settled || fstat(dp->maps_fd, &st) || st.st_nlink == 0)
		return false;
	return st.st_mtim.tv_sec == dp->maps_mtime.tv_sec &&
	       st.st_mtim.tv_nsec == dp->maps_mtime.tv_nsec;
}

int dmsc_datapath_hold(struct dmsc_datapath *dp, const char *pin_dir, bool *reopened)
{
	struct timespec now;
	char path[PATH_MAX];
	struct stat st;
	int err;

	*reopened = false;
	if (dp->maps_fd >= 0 && dp->dir_fd >= 0) {
		err = lock_fd(dp->dir_fd, pin_dir);
		if (!err && held_current(dp))
			return 0;
		pr_debug("the maps pinned at %s changed since they were opened: opening them "
			 "again\n",
			 pin_dir);
	}
	dmsc_datapath_close(dp); /* drops the lock too */
	*reopened = true;
	err = dmsc_datapath_open(dp, pin_dir, true);
	if (err)
		return err;
	/* Under the lock: no pin changes between the maps opened above and
	 * the time read here. Not held (closed at _release) if it fails. */
	snprintf(path, sizeof(path), "%s/maps", pin_dir);
	dp->maps_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dp->maps_fd >= 0 && fstat(dp->maps_fd, &st) == 0 &&
	    clock_gettime(CLOCK_REALTIME_COARSE, &now) == 0) {
		dp->maps_mtime = st.st_mtim;
		dp->maps_settled = st.st_mtim.tv_sec < now.tv_sec ||
				   (st.st_mtim.tv_sec == now.tv_sec && st.st_mtim.tv_nsec < now.tv_nsec);
	} else if (dp->maps_fd >= 0) {
		close(dp->maps_fd);
		dp->maps_fd = -1;
	}
	return 0;
}

void dmsc_datapath_release(struct dmsc_datapath *dp)
{
	if (dp->maps_fd < 0) {
		dmsc_datapath_close(dp);
		return;
	}
	flock(dp->dir_fd, LOCK_UN);
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

/* The install record, the one element of dmsc_install: 0 or -errno. */
static int install_get(const struct dmsc_datapath *dp, struct dmsc_install *rec)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(dp->fd[DMSC_M_INSTALL], &zero, rec) ? -errno : 0;
}

static int install_put(const struct dmsc_datapath *dp, const struct dmsc_install *rec)
{
	__u32 zero = 0;

	return bpf_map_update_elem(dp->fd[DMSC_M_INSTALL], &zero, rec, BPF_ANY) ? -errno : 0;
}

int dmsc_datapath_generation(const struct dmsc_datapath *dp, __u64 *gen)
{
	struct dmsc_install rec;
	int err = install_get(dp, &rec);

	if (!err)
		*gen = rec.generation;
	return err;
}

int dmsc_datapath_bump_generation(const struct dmsc_datapath *dp)
{
	struct dmsc_install rec;
	int err;

	/* Writers hold the lock, so read-modify-write is safe. */
	err = install_get(dp, &rec);
	if (err)
		return err;
	rec.generation++;
	return install_put(dp, &rec);
}

static int set_in_progress(const struct dmsc_datapath *dp, __u32 on, bool *was)
{
	struct dmsc_install rec;
	int err;

	err = install_get(dp, &rec);
	if (err)
		goto fail;
	if (was)
		*was = rec.apply_in_progress != 0;
	rec.apply_in_progress = on;
	rec.generation++;
	err = install_put(dp, &rec);
	if (!err)
		return 0;
fail:
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
	int err = install_get(dp, &rec);

	if (!err)
		*interrupted = rec.apply_in_progress != 0;
	return err;
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
