/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The L7 view of a policy: its protocol "http" services with exactly the
 * fields dmsc-l7 uses (name, vip, port, backends with weights and labels,
 * requests_per_second and burst, routes), as a policy document. dmscd
 * writes the view of the policy it applied and hands it to the helper, so
 * that the helper runs the very version dmscd applied (never the user's
 * file, which may have changed since); comparing two views says whether
 * the helper must be replaced, whatever the kernel maps saw. The same
 * policy always gives the same bytes.
 */
#ifndef DMSC_L7_SNAPSHOT_H
#define DMSC_L7_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>

#include "policy.h"

/* *out: a NUL-terminated JSON document (free()), *len its length without
 * the NUL. 0 or -ENOMEM. */
int dmsc_l7_view_json(const struct dmsc_policy *p, char **out, size_t *len);

/* The tunnel's view (docs/mtls.md): every service with its protocol, its
 * backends and its allow_from, which the destination host's tunnel checks
 * a vouched identity against. Same contract as dmsc_l7_view_json. */
int dmsc_mtls_view_json(const struct dmsc_policy *p, char **out, size_t *len);

/* Do two L7 views (NUL-terminated) differ only in values the running
 * helper takes in place (docs/design.md decision 85): backends' weights,
 * routes' timeout_ms and retries, services' rate_limit (or not at all)?
 * Any other change replaces it. False too when either does not parse. */
bool dmsc_l7_view_values_only(const char *cur, const char *next);

#endif /* DMSC_L7_SNAPSHOT_H */
