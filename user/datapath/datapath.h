/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The pinned datapath: maps and links under one versioned directory of the
 * BPF filesystem. They are the single source of truth; every program reads
 * and writes them through this interface.
 */
#ifndef DMSC_DATAPATH_H
#define DMSC_DATAPATH_H

#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "cgroup.h"
#include "dmsc/maps.h"
#include "dmsc/shared.h"
#include "parse.h"
#include "pin_dir.h"

#define DMSC_M_ENUM(id, ...) DMSC_M_##id,
enum dmsc_map_id {
	DMSC_MAPS(DMSC_M_ENUM) DMSC_M_COUNT,
};
#undef DMSC_M_ENUM

enum dmsc_object_id {
	DMSC_OBJ_SOCK, /* bpf/sock_lb/sock_lb.bpf.c */
	DMSC_OBJ_TC,   /* bpf/tc/tc.bpf.c */
};

struct dmsc_bpf_object {
	const char *name;
	const void *(*elf)(size_t *size); /* the skeleton's embedded ELF */
};
extern const struct dmsc_bpf_object dmsc_objects[];
extern const size_t dmsc_n_objects;

enum dmsc_attach {
	DMSC_ATTACH_CGROUP,     /* a link on the install cgroup, pinned */
	DMSC_ATTACH_TC_INGRESS, /* a filter on each --interface */
	DMSC_ATTACH_SOCKHASH,   /* sk_msg on dmsc_fp_socks: a link (6.10+) or a pinned program */
};

extern const char *const dmsc_map_names[DMSC_M_COUNT];
/* What each map's capacity follows at install (dmsc/maps.h). */
extern const enum dmsc_map_size dmsc_map_sizes[DMSC_M_COUNT];
/* Each map's key and value sizes, and whether it is a plain hash (an
 * element is deleted, not zeroed), from its row of DMSC_MAPS. */
extern const size_t dmsc_map_key_sizes[DMSC_M_COUNT];
extern const size_t dmsc_map_value_sizes[DMSC_M_COUNT];
extern const bool dmsc_map_is_hash[DMSC_M_COUNT];

/* One attached program: the skeleton's program name is the link's pin
 * name. */
struct dmsc_hook {
	enum dmsc_object_id object;
	enum dmsc_attach attach;
	const char *prog;
	const char *hook;     /* as a user reads it: "cgroup/connect4" */
	const char *min_linux; /* first kernel that has the hook */
	bool fastpath; /* the same-host fast path: both its hooks, or neither */
};

extern const struct dmsc_hook dmsc_hooks[];
extern const size_t dmsc_n_hooks;

struct dmsc_datapath {
	char pin_dir[PATH_MAX];
	int dir_fd; /* flock()ed while the datapath is written */
	int fd[DMSC_M_COUNT];
	struct dmsc_install install;
	unsigned int max_services; /* capacity: ids 1..max_services - 1 */
	unsigned int max_backends;
	int nr_cpus;
	/* Held between writes (dmsc_datapath_hold): the maps directory,
	 * open, and its modification time when the maps were opened. */
	int maps_fd; /* -1: not held */
	struct timespec maps_mtime;
	bool maps_settled; /* maps_mtime is older than the open */
};

struct dmsc_install_opts {
	const char *cgroup; /* absolute, or relative to the cgroup2 mount */
	unsigned int max_services; /* 0: default, or what is pinned */
	unsigned int max_backends;
	const char *const *ifaces; /* TC ingress on these, in this netns */
	size_t n_ifaces;
	/* The fast path's bound on a reader's unread bytes (0: none). Not
	 * set: $DMSC_FP_BACKLOG_MAX, else what an earlier install set, else
	 * the default (DMSC_FP_BACKLOG_MAX, at most tcp_mem[1] / 8).
	 * fp_backlog_default: go back to the default. */
	bool fp_backlog_set;
	bool fp_backlog_default;
	__u32 fp_backlog_max;
};

struct dmsc_install_result {
	char cgroup_path[DMSC_CGROUP_PATH_MAX];
	bool adopted;      /* pins existed: programs replaced in place */
	unsigned int n_links;
	unsigned int n_ifaces;
	bool fastpath;     /* the same-host fast path is attached */
	char fastpath_note[160]; /* why not, or how sk_msg is attached */
};

/* The install options dmscctl install and dmscd both take: --cgroup,
 * --interface (repeated), --max-services, --max-backends (0: the default),
 * --fastpath-backlog BYTES|default, --pin-dir. getopt values: above every
 * single-character option, below a command's stored ones (parse.h). */
enum dmsc_install_opt {
	DMSC_INSTALL_OPT_CGROUP = 0x180,
	DMSC_INSTALL_OPT_IFACE,
	DMSC_INSTALL_OPT_MAX_SVC,
	DMSC_INSTALL_OPT_MAX_BE,
	DMSC_INSTALL_OPT_FP_BACKLOG,
	DMSC_INSTALL_OPT_PIN_DIR,
};

/* rows of a struct option table */
#define DMSC_INSTALL_LONGOPTS                                                                      \
	{"cgroup", required_argument, NULL, DMSC_INSTALL_OPT_CGROUP},                              \
	    {"interface", required_argument, NULL, DMSC_INSTALL_OPT_IFACE},                        \
	    {"max-services", required_argument, NULL, DMSC_INSTALL_OPT_MAX_SVC},                   \
	    {"max-backends", required_argument, NULL, DMSC_INSTALL_OPT_MAX_BE},                    \
	    {"fastpath-backlog", required_argument, NULL, DMSC_INSTALL_OPT_FP_BACKLOG},            \
	    {"pin-dir", required_argument, NULL, DMSC_INSTALL_OPT_PIN_DIR}

struct dmsc_install_args {
	struct dmsc_install_opts io; /* io.ifaces points at ifaces */
	const char *ifaces[DMSC_IFACES_MAX];
	const char *pin_dir;         /* NULL: no --pin-dir */
};

/* Takes one getopt result: 1 when it was an install option, 0 when it was
 * not, -EINVAL when its value is refused (the reason printed). Called from
 * a getopt switch's default case. */
int dmsc_install_opt(struct dmsc_install_args *a, int opt, const char *arg);

/* 0 when running with the privileges to change the datapath, else prints
 * a message naming `what` and returns -EPERM. */
int dmsc_require_root(const char *what);


/* Turns a cgroup argument into its absolute path and its path relative to
 * the cgroup2 mount; the cgroup must exist. */
int dmsc_cgroup_resolve(const char *arg, char *abs, size_t abs_len, char *rel, size_t rel_len);

int dmsc_install(const char *pin_dir, const struct dmsc_install_opts *opts,
		 struct dmsc_install_result *res);

/* Removes every pin; the programs detach when their last link goes.
 * *was_installed tells whether there was anything to remove. */
int dmsc_uninstall(const char *pin_dir, bool *was_installed);

/* Opens the pinned maps. lock: take the datapath's writer lock (serialises
 * apply against apply, install and uninstall). -ENOENT: not installed. */
int dmsc_datapath_open(struct dmsc_datapath *dp, const char *pin_dir, bool lock);
void dmsc_datapath_close(struct dmsc_datapath *dp);

/*
 * A long-running writer's datapath, kept open between its writes (dmscd:
 * no 32 opens and closes per change). _hold takes the writer lock and
 * then keeps the maps dp holds if they are still the pinned ones, else
 * (first call, a map re-created by an install, an uninstall, a
 * reinstall) closes them and opens the pinned ones afresh; *reopened
 * says which. Every pin made, replaced (renamed over) or removed changes
 * the maps directory's modification time under the lock, so one fstat()
 * tells. _release drops the lock and keeps the maps; dmsc_datapath_close
 * closes them (and may be called again). dp starts as dmsc_datapath_init
 * leaves it: nothing open.
 */
void dmsc_datapath_init(struct dmsc_datapath *dp);
int dmsc_datapath_hold(struct dmsc_datapath *dp, const char *pin_dir, bool *reopened);
void dmsc_datapath_release(struct dmsc_datapath *dp);

/* Link ids and program ids of the attached hooks, for status. */
struct dmsc_link_info {
	const struct dmsc_hook *hook;
	bool present;
	unsigned int link_id;
	unsigned int prog_id;
	unsigned long long cgroup_id;
	bool prog_pin; /* sockhash hook attached without a link (kernel < 6.10) */
};
int dmsc_datapath_links(const char *pin_dir, struct dmsc_link_info *out, size_t n);

/* Sums a per-CPU array element into out (value_size bytes of __u64s). */
int dmsc_percpu_sum(const struct dmsc_datapath *dp, enum dmsc_map_id m, __u32 key, void *out,
		    size_t value_size);

/* The install record's generation, bumped by every writer after a change
 * (callers hold the lock for the bump). */
int dmsc_datapath_generation(const struct dmsc_datapath *dp, __u64 *gen);
int dmsc_datapath_bump_generation(const struct dmsc_datapath *dp);
/* A writer marks the install record before its first map write (sets
 * apply_in_progress, bumps the generation) and clears the mark after its
 * last (bumps it again). *interrupted: the mark was found set, so the last
 * writer died half-way. Callers hold the lock. */
int dmsc_datapath_write_begin(const struct dmsc_datapath *dp, bool *interrupted);
int dmsc_datapath_write_end(const struct dmsc_datapath *dp);
/* Whether the install record carries the mark of an unfinished apply. */
int dmsc_datapath_interrupted(const struct dmsc_datapath *dp, bool *interrupted);

/* The kernel's id of a map (0 on error): a reinstall gives new ids. */
unsigned int dmsc_map_id(int fd);

#endif /* DMSC_DATAPATH_H */
