// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl's commands, one file per family (ctl_policy.c: check, apply;
 * ctl_show.c: show, stats; ctl_datapath.c: install, uninstall, features,
 * verifier, status), and the options and printers they share with main
 * (dmscctl.c).
 */
#ifndef DMSC_CTL_CMDS_H
#define DMSC_CTL_CMDS_H

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <json-c/json.h>

#include "counters.h"
#include "etcd_ctl.h"
#include "datapath.h"
#include "feature.h"
#include "log.h"
#include "policy.h"
#include "addr.h"
#include "apply.h"

#define EXIT_USAGE 2
/* A policy this large takes a second or more to read: say so first. */
#define BIG_POLICY_BYTES (4 << 20)

struct opts {
	bool json;
	bool dry_run;
	const char *pin_dir;
	struct dmsc_install_args install; /* --cgroup, --interface, ... */
};


/* dmscctl.c */
void print_json(struct json_object *o);
void json_add(struct json_object *o, const char *k, struct json_object *v);
int print_services(const struct opts *o, int rc, struct json_object *arr);

/* ctl_policy.c */
int cmd_check(const char *file, const struct opts *o);
int cmd_apply(const char *file, const struct opts *o);

/* ctl_show.c */
int cmd_show_services(const struct opts *o);
int cmd_stats(const struct opts *o);
int cmd_show_access(const struct opts *o);

/* ctl_datapath.c */
int cmd_install(const struct opts *o);
int cmd_uninstall(const struct opts *o);
int cmd_features(const struct opts *o);
int cmd_verifier(const struct opts *o);
int cmd_status(const struct opts *o);

#endif
