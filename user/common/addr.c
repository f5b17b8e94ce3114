// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/socket.h>

#include "addr.h"

void dmsc_format_ip(int family, uint32_t v4, const void *v6, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	if (family == AF_INET6)
		inet_ntop(AF_INET6, v6, a, sizeof(a));
	else
		inet_ntop(AF_INET, &v4, a, sizeof(a));
	snprintf(buf, len, "%s", a);
}

void dmsc_format_ip_port(int family, uint32_t v4, const void *v6, uint16_t port, char *buf,
			 size_t len)
{
	char a[INET6_ADDRSTRLEN];

	dmsc_format_ip(family, v4, v6, a, sizeof(a));
	snprintf(buf, len, family == AF_INET6 ? "[%s]:%u" : "%s:%u", a, port);
}
