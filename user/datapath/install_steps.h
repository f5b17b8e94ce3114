// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The datapath's install, what its files share: the pin directory
 * helpers, loading and attaching the objects (datapath_pins.c,
 * datapath_load.c, called by dmsc_install in datapath.c).
 */
#ifndef DMSC_INSTALL_STEPS_H
#define DMSC_INSTALL_STEPS_H

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

/* Legacy TC attachment (clsact + cls_bpf, works on every supported
 * kernel); these are not links, so uninstall removes them by handle. */
#define DMSC_TC_HANDLE 0xd75c
#define DMSC_TC_PRIORITY 0xd75c

/* The objects, opened through their skeletons: the embedded ELF, and typed
 * access to load-time settings (skel->rodata) between open and load. */
struct dmsc_skels {
	struct dmsc_sock *sock;
	struct dmsc_tc *tc;
};

/* datapath_pins.c */
int ensure_dir(const char *path);
int ensure_bpffs(const char *pin_dir);
void pin_path(char *buf, size_t len, const char *pin_dir, const char *kind, const char *name);
int lock_dir(const char *pin_dir, int *fd_out);
/* Takes the writer lock on the open pin directory fd. */
int lock_fd(int fd, const char *pin_dir);
int rename_former_pins(const char *pin_dir);
int link_get(const char *pin_dir, const struct dmsc_hook *h);
int link_cgroup_id(int link_fd, unsigned long long *id);
unsigned int pinned_max_entries(const char *pin_dir, const char *map);
int remove_pins(const char *dir, bool *removed);

/* datapath_load.c */
bool pinned_install(const char *pin_dir, struct dmsc_install *rec);
int fastpath_backlog(const struct dmsc_install_opts *opts, const struct dmsc_install *old,
		     struct dmsc_install *rec);
void skels_destroy(struct dmsc_skels *skels);
int load_object(size_t idx, const char *pin_dir, const struct dmsc_install_opts *opts,
		const struct dmsc_features *features, struct dmsc_install *rec,
		struct dmsc_skels *skels, struct dmsc_migrate *mig, struct bpf_object **out);
int tc_attach(int prog_fd, unsigned int ifindex, const char *ifname);
void tc_detach(unsigned int ifindex);
void pin_prog_path(char *buf, size_t len, const char *pin_dir, const struct dmsc_hook *h);
void sockhash_prog_info(const char *pin_dir, const struct dmsc_hook *h, struct dmsc_link_info *out);
int attach_sockhash(const char *pin_dir, const struct dmsc_hook *h, struct bpf_program *prog,
		    int map_fd, struct dmsc_install_result *res);
int record_ifaces(const struct dmsc_install_opts *opts, const struct dmsc_install *old,
		  struct dmsc_install *rec);

#endif
