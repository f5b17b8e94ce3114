// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
