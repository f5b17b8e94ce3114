// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "dmsc/shared.h"
#include "log.h"
#include "pin_dir.h"

const char *dmsc_pin_dir(void)
{
	const char *env = getenv("DMSC_PIN_DIR");

	if (env && *env)
		return env;
	return DMSC_PIN_ROOT "/v" DMSC_LAYOUT_VERSION;
}

int dmsc_pinned_map_try(const char *pin_dir, const char *name)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, name);
	fd = bpf_obj_get(path);
	return fd >= 0 ? fd : -errno;
}

int dmsc_l7_own_mark(int own_fd, int fd)
{
	struct dmsc_l7_own own = {.magic = DMSC_L7_OWN_MAGIC};

	return bpf_map_update_elem(own_fd, &fd, &own, BPF_ANY) ? -errno : 0;
}

int dmsc_pinned_map_open(const char *pin_dir, const char *name, const char *hint)
{
	char path[PATH_MAX];
	int fd = dmsc_pinned_map_try(pin_dir, name);

	if (fd >= 0)
		return fd;
	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, name);
	if (hint)
		pr_warn("cannot open %s: %s (%s)\n", path, strerror(-fd), hint);
	else
		pr_warn("cannot open %s: %s\n", path, strerror(-fd));
	return fd;
}

int dmsc_l7_unregister(const char *pin_dir)
{
	struct dmsc_l7_conf none = {0};
	char path[PATH_MAX];
	__u32 zero = 0;
	int fd, err = 0, n;

	/* none: nothing to clear (an orphaned helper's datapath uninstalled) */
	fd = dmsc_pinned_map_try(pin_dir, DMSC_MAP_L7_CONF);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0) {
		pr_warn("cannot open %s/maps/%s: %s\n", pin_dir, DMSC_MAP_L7_CONF, strerror(-fd));
		return fd;
	}
	if (bpf_map_update_elem(fd, &zero, &none, BPF_ANY)) {
		err = -errno;
		pr_warn("cannot clear %s/maps/%s: %s\n", pin_dir, DMSC_MAP_L7_CONF, strerror(-err));
	}
	close(fd);
	/* and its listeners in other network namespaces (a datapath of an
	 * older build has no such map: nothing to clear) */
	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, DMSC_MAP_L7_NETNS);
	fd = bpf_obj_get(path);
	if (fd >= 0) {
		__u64 key;

		/* bounded: the map's capacity */
		for (n = 0; n < DMSC_L7_NETNS_MAX && bpf_map_get_next_key(fd, NULL, &key) == 0; n++)
			bpf_map_delete_elem(fd, &key);
		close(fd);
	}
	return err;
}
