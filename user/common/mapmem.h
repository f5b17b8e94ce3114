/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Large arrays used for one operation (an apply's view of a large etcd
 * store) and given back whole when freed: from DMSC_MAPMEM_MIN bytes they
 * are mapped on their own and unmapped by dmsc_mapmem_free. glibc serves a
 * large request from its heap whenever the heap's free space holds it,
 * whatever M_MMAP_THRESHOLD says, and those pages then stay resident until
 * a trim; smaller ones come from malloc.
 */
#ifndef DMSC_MAPMEM_H
#define DMSC_MAPMEM_H

#include <stddef.h>

#define DMSC_MAPMEM_MIN (1u << 20)

/* n elements of size bytes, zeroed; NULL when out of memory (or n * size
 * overflows). */
void *dmsc_mapmem_calloc(size_t n, size_t size);
/* NULL is passed over. */
void dmsc_mapmem_free(void *p);

#endif /* DMSC_MAPMEM_H */
