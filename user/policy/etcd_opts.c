// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The etcd options dmscd and dmscctl share (etcd_opts.h). */
#include <string.h>

#include "etcd_opts.h"

void dmsc_etcd_opts_init(struct dmsc_etcd_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->prefix = DMSC_ETCD_DEFAULT_PREFIX;
}
