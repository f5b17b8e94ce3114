// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's OPEN payload and its ALPN id (tunnel_frame.h). */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "tunnel_frame.h"

static size_t open_encode(uint8_t *p, const void *addr, size_t alen, uint16_t dest_port,
			  const char *identity)
{
	size_t n = strlen(identity);

	if (n == 0 || n > DMSC_TF_ID_MAX)
		return 0;
	memcpy(p, addr, alen);
	memcpy(p + alen, &dest_port, 2);
	memcpy(p + alen + 2, identity, n);
	return alen + 2 + n;
}

size_t dmsc_tf_open_encode(uint8_t *p, uint32_t dest_addr, uint16_t dest_port, const char *identity)
{
	return open_encode(p, &dest_addr, 4, dest_port, identity);
}

size_t dmsc_tf_open_encode6(uint8_t *p, const uint8_t dest_addr6[16], uint16_t dest_port,
			    const char *identity)
{
	return open_encode(p, dest_addr6, 16, dest_port, identity);
}

bool dmsc_tf_open_decode(const uint8_t *p, size_t len, uint8_t flags, struct dmsc_tf_open *o)
{
	size_t alen = flags & DMSC_TF_OPEN_F_IPV6 ? 16 : 4, n;

	if (len < alen + 3 || len - alen - 2 > DMSC_TF_ID_MAX)
		return false;
	n = len - alen - 2;
	if (memchr(p + alen + 2, '\0', n))
		return false;
	memset(o, 0, offsetof(struct dmsc_tf_open, identity));
	o->ipv6 = alen == 16;
	if (o->ipv6)
		memcpy(o->dest_addr6, p, 16);
	else
		memcpy(&o->dest_addr, p, 4);
	memcpy(&o->dest_port, p + alen, 2);
	memcpy(o->identity, p + alen + 2, n);
	o->identity[n] = '\0';
	o->id_len = (uint16_t)n;
	return true;
}

bool dmsc_tf_alpn_offered(const uint8_t *ext, size_t len, char *offered, size_t offered_len)
{
	size_t off = 2, w = 0, list, i;
	bool ours = false;

	if (offered_len)
		offered[0] = '\0';
	if (len < 2)
		return false;
	list = (size_t)ext[0] << 8 | ext[1];
	if (list != len - 2)
		return false;
	while (off < len) {
		size_t n = ext[off++];

		if (!n || n > len - off)
			return false;
		if (n == sizeof(DMSC_TF_ALPN) - 1 && !memcmp(ext + off, DMSC_TF_ALPN, n))
			ours = true;
		for (i = 0; i < n + 2 && w + 1 < offered_len; i++) {
			char ch = i < 2 ? ", "[i] : (char)ext[off + i - 2];

			if (i < 2 && off == 3)
				continue; /* no separator before the first */
			offered[w++] = ch >= 0x20 && ch < 0x7f ? ch : '?';
		}
		if (offered_len)
			offered[w] = '\0';
		off += n;
	}
	return ours;
}
