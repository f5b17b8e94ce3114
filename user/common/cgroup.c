// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cgroup.h"
#include "log.h"

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
