// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <stdlib.h>

#include "array.h"

void *dmsc_array_room(void *arr, size_t n, size_t *cap, size_t elem, size_t first)
{
	size_t want;
	void *grown;

	if (n < *cap)
		return arr;
	want = *cap ? *cap * 2 : first;
	grown = reallocarray(arr, want, elem);
	if (grown)
		*cap = want;
	return grown;
}
