/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A growable text buffer: appends and printf that never fail on the spot;
 * running out of memory marks the buffer failed (its text incomplete), for
 * the caller to check once at the end.
 */
#ifndef DMSC_BUF_H
#define DMSC_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct dmsc_buf {
	char *p;
	size_t len, cap;
	bool failed; /* out of memory: the text is incomplete */
};

void dmsc_buf_printf(struct dmsc_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void dmsc_buf_append(struct dmsc_buf *b, const char *s, size_t len);
void dmsc_buf_free(struct dmsc_buf *b);

#endif /* DMSC_BUF_H */
