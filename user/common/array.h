/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Growable arrays and byte buffers: one doubling step for every list and
 * every buffer that is appended to.
 */
#ifndef DMSC_ARRAY_H
#define DMSC_ARRAY_H

#include <stddef.h>

/* Room for one more element in arr (n used, *cap allocated, elem bytes
 * each): arr itself when it has room, else arr grown to twice *cap (first
 * when empty) with *cap updated; NULL when out of memory (arr and *cap
 * unchanged: arr is still the caller's to free). */
void *dmsc_array_room(void *arr, size_t n, size_t *cap, size_t elem, size_t first);

/* Room for need bytes in p (*cap allocated): p itself when it has room,
 * else p grown by doubling (from first) until need fits, with *cap
 * updated; NULL when out of memory (p and *cap unchanged). */
void *dmsc_bytes_room(void *p, size_t *cap, size_t need, size_t first);

#endif /* DMSC_ARRAY_H */
