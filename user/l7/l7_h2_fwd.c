// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* What an HTTP/2 backend learns about the client (--forwarded): l7_h2.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "l7_h2.h"

int dmsc_l7_h2_client_addr(int fd, char *out, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	const void *a;

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (ss.ss_family == AF_INET6) {
		const struct in6_addr *v6 = &((const struct sockaddr_in6 *)&ss)->sin6_addr;

		/* a dual-stack socket's IPv4 client is IPv4 */
		if (IN6_IS_ADDR_V4MAPPED(v6))
			return inet_ntop(AF_INET, &v6->s6_addr[12], out, (socklen_t)size) ? 0
											  : -ENOSPC;
		a = v6;
	} else if (ss.ss_family == AF_INET) {
		a = &((const struct sockaddr_in *)&ss)->sin_addr;
	} else {
		return -EAFNOSUPPORT;
	}
	return inet_ntop(ss.ss_family, a, out, (socklen_t)size) ? 0 : -ENOSPC;
}

int dmsc_l7_h2_forward_value(const char *const *values, const size_t *lens, size_t n,
			     const char *hop, char *out, size_t size)
{
	size_t i, used = 0;
	int w;

	for (i = 0; i < n; i++) {
		if (!lens[i])
			continue;
		w = snprintf(out + used, size - used, "%.*s, ", (int)lens[i], values[i]);
		if (w < 0 || (size_t)w >= size - used)
			return -ENOSPC;
		used += (size_t)w;
	}
	w = snprintf(out + used, size - used, "%s", hop);
	if (w < 0 || (size_t)w >= size - used)
		return -ENOSPC;
	return (int)(used + (size_t)w);
}
