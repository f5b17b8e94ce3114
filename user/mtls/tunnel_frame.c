// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's OPEN payload and DATA frames read in place (tunnel_frame.h). */
#include <string.h>

#include "tunnel_frame.h"

size_t dmsc_tf_open_encode(uint8_t *p, uint32_t dest_addr, uint16_t dest_port, const char *identity)
{
	size_t n = strlen(identity);

	if (n == 0 || n > DMSC_TF_ID_MAX)
		return 0;
	memcpy(p, &dest_addr, 4);
	memcpy(p + 4, &dest_port, 2);
	memcpy(p + 6, identity, n);
	return 6 + n;
}

bool dmsc_tf_open_decode(const uint8_t *p, size_t len, struct dmsc_tf_open *o)
{
	size_t n;

	if (len < 7 || len - 6 > DMSC_TF_ID_MAX)
		return false;
	n = len - 6;
	if (memchr(p + 6, '\0', n))
		return false;
	memcpy(&o->dest_addr, p, 4);
	memcpy(&o->dest_port, p + 4, 2);
	memcpy(o->identity, p + 6, n);
	o->identity[n] = '\0';
	o->id_len = (uint16_t)n;
	return true;
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

