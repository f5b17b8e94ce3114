/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* dmscctl publish / get / watch: what etcd_ctl.c (options, publish) and
 * etcd_read_ctl.c (get, watch) share. */
#ifndef DMSC_ETCD_CTL_INT_H
#define DMSC_ETCD_CTL_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "etcd.h"

struct ctl {
	const char *etcd, *prefix, *ns;
	struct dmsc_etcd_tls tls;
	bool json, dry_run;
	int64_t revision; /* watch: from; publish: --expect-revision */
	long count, timeout_s;
};

static inline void dmsc_etcd_ctl_print_json(struct json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* dmscctl get [NAME]: exit code (1: NAME not there) */
int dmsc_etcd_ctl_get(struct ctl *c, const char *only);
/* dmscctl watch: exit code */
int dmsc_etcd_ctl_watch(struct ctl *c);

#endif /* DMSC_ETCD_CTL_INT_H */
