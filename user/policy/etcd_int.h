/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The etcd client's private helpers, shared by etcd.c (the requests),
 * etcd_body.c (base64, request bodies) and etcd_parse.c (responses, the
 * watch stream's splitter). Not for use outside user/policy's etcd files.
 */
#ifndef DMSC_ETCD_INT_H
#define DMSC_ETCD_INT_H

#include <stddef.h>

#include "etcd.h"

/* etcd_parse.c: a message into err (len bytes; err NULL: none) */
void etcd_seterr(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif /* DMSC_ETCD_INT_H */
