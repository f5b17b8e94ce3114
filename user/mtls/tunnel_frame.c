// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's OPEN payload, its ALPN id and DATA frames read in place
 * (tunnel_frame.h). */
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

size_t dmsc_tf_data_iov(uint8_t *base, size_t want, struct iovec *iov, size_t max)
{
	size_t k;

	for (k = 0; k < max && want; k++) {
		size_t m = want < DMSC_TF_PAYLOAD_MAX ? want : DMSC_TF_PAYLOAD_MAX;

		iov[k].iov_base = base + k * (DMSC_TF_HDR + DMSC_TF_PAYLOAD_MAX) + DMSC_TF_HDR;
		iov[k].iov_len = m;
		want -= m;
	}
	return k;
}

size_t dmsc_tf_data_seal(uint8_t *base, size_t n, uint32_t stream)
{
	size_t k, got;

	/* readv fills its iovecs in order: every frame but the last is full */
	for (k = 0, got = 0; got < n; k++) {
		size_t m = n - got < DMSC_TF_PAYLOAD_MAX ? n - got : DMSC_TF_PAYLOAD_MAX;

		dmsc_tf_put_hdr(base + k * (DMSC_TF_HDR + DMSC_TF_PAYLOAD_MAX), DMSC_TF_DATA,
				(uint16_t)m, stream);
		got += m;
	}
	return n + k * DMSC_TF_HDR;
}
