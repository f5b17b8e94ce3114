/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Growable arrays: one doubling step for every list that is appended to.
 */
#ifndef DMSC_ARRAY_H
#define DMSC_ARRAY_H

#include <stddef.h>

/* Room for one more element in arr (n used, *cap allocated, elem bytes
 * each): arr itself when it has room, else arr grown to twice *cap (first
 * when empty) with *cap updated; NULL when out of memory (arr and *cap
 * unchanged: arr is still the caller's to free). */
void *dmsc_array_room(void *arr, size_t n, size_t *cap, size_t elem, size_t first);

#endif /* DMSC_ARRAY_H */
