/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A policy made of one file or of every *.json file of a directory (dmscd,
 * dmscctl publish). Nothing here touches the kernel.
 */
#ifndef DMSC_POLICY_SET_H
#define DMSC_POLICY_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* Formatted problems, one line each: "FILE: PATH: message". */
struct dmsc_msgs {
	char **lines;
	size_t n, cap;
};

void dmsc_msgs_add(struct dmsc_msgs *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dmsc_msgs_free(struct dmsc_msgs *m);

/* A policy and where each of its services came from. */
struct dmsc_policy_set {
	struct dmsc_policy policy;
	char **files; /* the files read, in the order merged */
	size_t n_files;
	size_t *svc_file; /* per service: index into files */
};

/*
 * A directory's policy is the services of every file in it whose name ends
 * in ".json" and does not start with "." (editors' temporary files), read in
 * the byte order of their names and concatenated. A name or a
 * vip:port:protocol defined in two files is an error that names both
 * files; a directory without such a file is an error too (an empty policy
 * would remove every service: write `{ "services": [] }` to mean that).
 * Returns 0, -EINVAL with msgs filled (nothing is applied), or another
 * negative errno.
 */
int dmsc_policy_set_load(const char *path, struct dmsc_policy_set *out, struct dmsc_msgs *msgs);

/* Moves the services of parts[0..n) (parsed from names[i]) into out and
 * checks them for duplicates across parts; parts are left empty. */
int dmsc_policy_set_merge(struct dmsc_policy *parts, const char *const *names, size_t n,
			  struct dmsc_policy_set *out, struct dmsc_msgs *msgs);
void dmsc_policy_set_free(struct dmsc_policy_set *s);

/* Whether a file name in a policy directory is part of the policy. */
bool dmsc_policy_dir_entry(const char *name);

#endif /* DMSC_POLICY_SET_H */
