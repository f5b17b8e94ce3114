// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's buffers (user/mtls/tunnel_io.c): a held buffer's bytes stay
 * where they are, unchanged, until it is released (docs/design.md
 * decision 89). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "tunnel_int.h"

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

/* a buffer of LEN bytes (as many of room), the first CONSUMED consumed */
static void setup(struct buf *b, size_t len, size_t consumed)
{
	uint8_t *p = malloc(len);

	cr_assert(p);
	fill(p, len, 1);
	memset(b, 0, sizeof(*b));
	cr_assert_eq(tn_buf_append(b, p, len), 0);
	tn_buf_consume(b, consumed);
	free(p);
}

Test(tunnel_buf, held_bytes_stay_put_across_appends)
{
	uint8_t more[3000], want[600], want2[900];
	struct buf b;
	const uint8_t *held;
	uint8_t *first, *second;
	size_t cap;

	setup(&b, 1000, 400);
	cap = b.cap;
	first = b.p;
	held = b.p + b.off;
	memcpy(want, held, sizeof(want));
	b.held = true;
	/* unheld, this append would move the 600 bytes to the front */
	fill(more, 300, 9);
	cr_assert_eq(tn_buf_append(&b, more, 300), 0);
	cr_assert_eq(b.n_retired, 1);
	cr_expect_eq(b.retired[0], first, "the held block is kept");
	cr_expect_neq(b.p, first, "the appends go to a new block");
	cr_expect_eq(b.cap, cap, "a new block of the same size when the bytes fit");
	cr_expect_eq(memcmp(held, want, sizeof(want)), 0, "the held bytes did not change");
	cr_expect_eq(b.len, 900);
	cr_expect_eq(memcmp(b.p + b.off, want, sizeof(want)), 0);
	cr_expect_eq(memcmp(b.p + b.off + 600, more, 300), 0);
	/* room runs out again while still held (a retry that wrote the first
	 * block's bytes, then stopped in the second's): both stay */
	second = b.p;
	memcpy(want2, b.p + b.off, sizeof(want2));
	fill(more, sizeof(more), 21);
	cr_assert_eq(tn_buf_append(&b, more, sizeof(more)), 0);
	cr_assert_eq(b.n_retired, 2);
	cr_expect_eq(b.retired[0], first);
	cr_expect_eq(b.retired[1], second);
	cr_expect_eq(memcmp(held, want, sizeof(want)), 0);
	cr_expect_eq(memcmp(second, want2, sizeof(want2)), 0);
	cr_expect_eq(b.len, 3900);
	cr_expect(b.cap >= 3900, "grown: the bytes did not fit");
	cr_expect_eq(memcmp(b.p + b.off, want, sizeof(want)), 0);
	cr_expect_eq(memcmp(b.p + b.off + 900, more, sizeof(more)), 0);
	/* written: let go, then consumed as before */
	tn_buf_release(&b);
	cr_expect_not(b.held);
	cr_expect_null(b.retired);
	cr_expect_eq(b.n_retired, 0);
	tn_buf_consume(&b, 600);
	cr_expect_eq(b.len, 3300);
	tn_buf_free(&b);
}

Test(tunnel_buf, unheld_appends_reuse_the_block)
{
	uint8_t more[500];
	struct buf b;
	uint8_t *first;

	setup(&b, 1000, 600);
	first = b.p;
	fill(more, sizeof(more), 3);
	cr_assert_eq(tn_buf_append(&b, more, sizeof(more)), 0);
	cr_expect_eq(b.p, first, "compacted in place");
	cr_expect_eq(b.off, 0);
	cr_expect_null(b.retired);
	cr_expect_eq(memcmp(b.p + 400, more, sizeof(more)), 0);
	tn_buf_free(&b);
}

Test(tunnel_buf, free_while_held_frees_both_blocks)
{
	uint8_t more[800] = {0};
	struct buf b;

	setup(&b, 1000, 100);
	b.held = true;
	cr_assert_eq(tn_buf_append(&b, more, sizeof(more)), 0);
	cr_expect_eq(b.n_retired, 1);
	tn_buf_free(&b); /* a connection closed mid-wait: ASan sees a leak */
	cr_expect_null(b.p);
	cr_expect_null(b.retired);
}
