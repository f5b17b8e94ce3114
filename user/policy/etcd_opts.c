// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The etcd options dmscd and dmscctl share (etcd_opts.h). */
#include <errno.h>
#include <string.h>

#include "etcd_opts.h"
#include "log.h"

void dmsc_etcd_opts_init(struct dmsc_etcd_opts *o, size_t max_ns)
{
	memset(o, 0, sizeof(*o));
	o->prefix = DMSC_ETCD_DEFAULT_PREFIX;
	o->max_ns = max_ns < DMSC_ETCD_NAMESPACES_MAX ? max_ns : DMSC_ETCD_NAMESPACES_MAX;
}

int dmsc_etcd_opt(struct dmsc_etcd_opts *o, int opt, const char *arg)
{
	switch (opt) {
	case DMSC_ETCD_OPT_URLS:
		o->urls = arg;
		return 1;
	case DMSC_ETCD_OPT_PREFIX:
		o->prefix = arg;
		return 1;
	case DMSC_ETCD_OPT_NS:
		if (o->n_ns == o->max_ns) {
			pr_warn("--namespace: at most %zu\n", o->max_ns);
			return -EINVAL;
		}
		o->ns[o->n_ns++] = arg;
		return 1;
	case DMSC_ETCD_OPT_CA:
		o->tls.cacert = arg;
		return 1;
	case DMSC_ETCD_OPT_CERT:
		o->tls.cert = arg;
		return 1;
	case DMSC_ETCD_OPT_KEY:
		o->tls.key = arg;
		return 1;
	}
	return 0;
}
