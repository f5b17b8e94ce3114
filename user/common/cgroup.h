/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Where the cgroup2 filesystem is mounted. Apart from the datapath layer,
 * as pin_dir.h is: dmsc-l7 and the tunnel read it without linking the
 * loader and its embedded BPF objects.
 */
#ifndef DMSC_CGROUP_H
#define DMSC_CGROUP_H

#include <stdbool.h>
#include <stddef.h>

/* The cgroup2 mount point, read from /proc/mounts (hybrid hosts mount it
 * at /sys/fs/cgroup/unified): 0, or a negative errno (said). */
int dmsc_cgroup2_mount(char *buf, size_t len);

/* The cgroup v2 of process pid (0: the caller) as /proc/PID/cgroup names
 * it, from the mount: "/" or "/a/b". 0, -ENOENT (no v2 line), or the
 * negative errno of the read (the process gone: -ENOENT). */
int dmsc_cgroup2_of(int pid, char *buf, size_t len);

/* Whether cgroup path is top or one under it (both as the same kind of
 * path, no trailing '/'). */
bool dmsc_cgroup_within(const char *path, const char *top);

/* Whether path's last component is a systemd unit's own cgroup, which
 * systemd empties (kills every process in it and under it) when the unit
 * stops: a ".service" or ".scope", not a ".slice". */
bool dmsc_cgroup_is_unit(const char *path);

#endif /* DMSC_CGROUP_H */
