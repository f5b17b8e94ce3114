// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Large arrays mapped on their own (mapmem.h). */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "mapmem.h"

/* Before each block: its mapped length (0: from malloc); 16 bytes keep
 * the block aligned as malloc's. */
#define HEAD 16

void *dmsc_mapmem_calloc(size_t n, size_t size)
{
	size_t len;
	char *p;

	if (size && n > (SIZE_MAX - HEAD) / size)
		return NULL;
	len = n * size + HEAD;
	if (len < DMSC_MAPMEM_MIN) {
		p = calloc(1, len);
		if (!p)
			return NULL;
		*(size_t *)p = 0;
		return p + HEAD;
	}
	/* populated at once: one fault instead of one per page */
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		 -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	*(size_t *)p = len;
	return p + HEAD;
}

void dmsc_mapmem_free(void *p)
{
	char *base;
	size_t len;

	if (!p)
		return;
	base = (char *)p - HEAD;
	len = *(size_t *)base;
	if (len)
		munmap(base, len);
	else
		free(base);
}
