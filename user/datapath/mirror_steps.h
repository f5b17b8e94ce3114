// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's mirror, what its files share: the key index and the service
 * records materialized (apply_mirror_load.c), used by the apply
 * (apply_mirror.c).
 */
#ifndef DMSC_MIRROR_STEPS_H
#define DMSC_MIRROR_STEPS_H

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bpf/bpf.h>

#include "addr.h"
#include "dmsc/slots.h"
#include "log.h"
#include "apply_mirror.h"
#include "apply_steps.h"
#include "health.h"



/* apply_mirror_load.c */
bool key_eq(const struct dmsc_svc_digest *a, const struct dmsc_svc_key *b, const __u32 *b6);
void index_insert(struct dmsc_mirror *m, size_t idx);
int index_rebuild(struct dmsc_mirror *m, size_t want);
long index_find(const struct dmsc_mirror *m, const struct dmsc_svc_key *k, const __u32 *vip6);
int grow_svcs(struct dmsc_mirror *m, size_t want);
void materialize(const struct dmsc_mirror_svc *ms, const struct dmsc_mirror_hot *hot,
		 struct dmsc_state_svc *s);
void limits_config_only(struct dmsc_limits *l);
bool has_unresolved(const struct dmsc_allow_entry *a, size_t n);
void mark(unsigned char *used, __u32 max, __u32 id, unsigned char v);
int repair(struct dmsc_mirror *m, struct apply_ctx *c, bool interrupted);
void free_svcs(struct dmsc_mirror *m);

#endif
