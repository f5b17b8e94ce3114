/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The etcd options dmscd and dmscctl's publish, get and watch share:
 * --etcd URL[,URL...], --prefix P, --namespace NS (dmscd takes several,
 * dmscctl one), --etcd-cacert/--etcd-cert/--etcd-key.
 */
#ifndef DMSC_ETCD_OPTS_H
#define DMSC_ETCD_OPTS_H

#include <stddef.h>

#include "etcd.h"
#include "etcd_store.h"
#include "parse.h"

/* dmscd --namespace NS, how many */
#define DMSC_ETCD_NAMESPACES_MAX 16

struct dmsc_etcd_opts {
	const char *urls;   /* NULL: no --etcd */
	const char *prefix; /* DMSC_ETCD_DEFAULT_PREFIX unless --prefix */
	const char *ns[DMSC_ETCD_NAMESPACES_MAX];
	size_t n_ns;
	struct dmsc_etcd_tls tls;
};

void dmsc_etcd_opts_init(struct dmsc_etcd_opts *o);

/* The etcd options as rows of a command's dmsc_opt table (parse.h), into
 * *eo; max_ns: how many --namespace the command takes (at most
 * DMSC_ETCD_NAMESPACES_MAX). */
#define DMSC_ETCD_OPTS(eo, max_ns)                                                                 \
	DMSC_OPT_STR("etcd", &(eo)->urls),                                                         \
	    DMSC_OPT_STR("prefix", &(eo)->prefix),                                                 \
	    DMSC_OPT_LIST("namespace", (eo)->ns, &(eo)->n_ns, max_ns),                             \
	    DMSC_OPT_STR("etcd-cacert", &(eo)->tls.cacert),                                        \
	    DMSC_OPT_STR("etcd-cert", &(eo)->tls.cert),                                            \
	    DMSC_OPT_STR("etcd-key", &(eo)->tls.key)

#endif /* DMSC_ETCD_OPTS_H */
