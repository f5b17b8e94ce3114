/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The etcd options dmscd and dmscctl's publish, get and watch share:
 * --etcd URL[,URL...], --prefix P, --namespace NS (dmscd takes several,
 * dmscctl one), --etcd-cacert/--etcd-cert/--etcd-key.
 */
#ifndef DMSC_ETCD_OPTS_H
#define DMSC_ETCD_OPTS_H

#include <getopt.h>
#include <stddef.h>

#include "etcd.h"
#include "etcd_store.h"

/* dmscd --namespace NS, how many */
#define DMSC_ETCD_NAMESPACES_MAX 16

/* getopt values, above every single-character option */
enum dmsc_etcd_opt {
	DMSC_ETCD_OPT_URLS = 0x200,
	DMSC_ETCD_OPT_PREFIX,
	DMSC_ETCD_OPT_NS,
	DMSC_ETCD_OPT_CA,
	DMSC_ETCD_OPT_CERT,
	DMSC_ETCD_OPT_KEY,
};

/* rows of a struct option table */
#define DMSC_ETCD_LONGOPTS                                                                         \
	{"etcd", required_argument, NULL, DMSC_ETCD_OPT_URLS},                                     \
	    {"prefix", required_argument, NULL, DMSC_ETCD_OPT_PREFIX},                             \
	    {"namespace", required_argument, NULL, DMSC_ETCD_OPT_NS},                              \
	    {"etcd-cacert", required_argument, NULL, DMSC_ETCD_OPT_CA},                            \
	    {"etcd-cert", required_argument, NULL, DMSC_ETCD_OPT_CERT},                            \
	    {"etcd-key", required_argument, NULL, DMSC_ETCD_OPT_KEY}

struct dmsc_etcd_opts {
	const char *urls;   /* NULL: no --etcd */
	const char *prefix; /* DMSC_ETCD_DEFAULT_PREFIX unless --prefix */
	const char *ns[DMSC_ETCD_NAMESPACES_MAX];
	size_t n_ns, max_ns;
	struct dmsc_etcd_tls tls;
};

/* max_ns: how many --namespace the program takes (at most
 * DMSC_ETCD_NAMESPACES_MAX). */
void dmsc_etcd_opts_init(struct dmsc_etcd_opts *o, size_t max_ns);
/* Takes one getopt result: 1 when it was an etcd option, 0 when it was
 * not, -EINVAL when its value is refused (the reason printed). Called from
 * a getopt switch's default case. */
int dmsc_etcd_opt(struct dmsc_etcd_opts *o, int opt, const char *arg);

#endif /* DMSC_ETCD_OPTS_H */
