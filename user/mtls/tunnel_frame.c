// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's OPEN payload (tunnel_frame.h). */
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
