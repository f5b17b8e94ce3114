/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * HTTP's comma-separated field values (Connection, TE, ...), for dmsc-l7
 * and the test server alike.
 */
#ifndef DMSC_HTTP_LIST_H
#define DMSC_HTTP_LIST_H

#include <stdbool.h>
#include <stddef.h>

/* Is name (nlen bytes) one of the comma-separated tokens of val (RFC 9110
 * 5.6.1: optional whitespace around each, empty elements allowed)? ASCII
 * case-insensitive. */
bool dmsc_http_list_has(const char *val, size_t vlen, const char *name, size_t nlen);

#endif /* DMSC_HTTP_LIST_H */
