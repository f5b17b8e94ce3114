/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Where the cgroup2 filesystem is mounted. Apart from the datapath layer,
 * as pin_dir.h is: dmsc-l7 and the tunnel read it without linking the
 * loader and its embedded BPF objects.
 */
#ifndef DMSC_CGROUP_H
#define DMSC_CGROUP_H

#include <stddef.h>

/* The cgroup2 mount point, read from /proc/mounts (hybrid hosts mount it
 * at /sys/fs/cgroup/unified): 0, or a negative errno (said). */
int dmsc_cgroup2_mount(char *buf, size_t len);

#endif /* DMSC_CGROUP_H */
