/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Addresses of either family as people read them: "198.19.0.10:80" and
 * "[2001:2::10]:80" (RFC 3986's bracketed form), in messages, `dmscctl
 * show` and the metrics alike.
 */
#ifndef DMSC_ADDR_H
#define DMSC_ADDR_H

#include <stddef.h>
#include <stdint.h>

/* Room for "[" IPv6 "]:" port and the terminator. */
#define DMSC_ADDR_PORT_LEN 56

/* family AF_INET: v4 (network order) is the address; AF_INET6: the 16
 * bytes at v6. port in host order. */
void dmsc_format_ip_port(int family, uint32_t v4, const void *v6, uint16_t port, char *buf,
			 size_t len);
/* The address alone, unbracketed ("2001:2::10"). */
void dmsc_format_ip(int family, uint32_t v4, const void *v6, char *buf, size_t len);

#endif /* DMSC_ADDR_H */
