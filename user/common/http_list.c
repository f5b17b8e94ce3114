// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <strings.h>

#include "http_list.h"

/* Is name (nlen bytes) one of the comma-separated tokens of val (RFC 9110
 * 5.6.1: optional whitespace around each, empty elements allowed)? ASCII
 * case-insensitive. */
bool dmsc_http_list_has(const char *val, size_t vlen, const char *name, size_t nlen)
{
	size_t i = 0, start, end;

	while (i < vlen) {
		while (i < vlen && (val[i] == ' ' || val[i] == '\t' || val[i] == ','))
			i++;
		start = i;
		while (i < vlen && val[i] != ',')
			i++;
		end = i;
		while (end > start && (val[end - 1] == ' ' || val[end - 1] == '\t'))
			end--;
		if (end - start == nlen && nlen && strncasecmp(val + start, name, nlen) == 0)
			return true;
	}
	return false;
}
