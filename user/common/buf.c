// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* A growable text buffer (buf.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "buf.h"

/* Room for len more bytes and a NUL; false (and the buffer marked failed)
 * when memory ran out. */
static bool buf_reserve(struct dmsc_buf *b, size_t len)
{
	char *grown;

	if (b->failed)
		return false;
	grown = dmsc_bytes_room(b->p, &b->cap, b->len + len + 1, 4096);
	if (!grown) {
		b->failed = true;
		return false;
	}
	b->p = grown;
	return true;
}

void dmsc_buf_printf(struct dmsc_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		size_t room = b->cap - b->len;

		if (b->failed)
			return;
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = true;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		buf_reserve(b, (size_t)n);
	}
}

void dmsc_buf_append(struct dmsc_buf *b, const char *s, size_t len)
{
	if (!buf_reserve(b, len))
		return;
	memcpy(b->p + b->len, s, len);
	b->len += len;
	b->p[b->len] = '\0';
}

void dmsc_buf_free(struct dmsc_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}
