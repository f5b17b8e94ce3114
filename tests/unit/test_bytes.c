// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* dmsc_parse_bytes: the byte counts of install options (--fastpath-backlog). */
#include <criterion/criterion.h>
#include <errno.h>

#include "parse.h"

Test(bytes, plain_and_suffixed)
{
	static const struct {
		const char *arg;
		__u32 want;
	} ok[] = {
	    {"0", 0},	      {"1", 1},		  {"65536", 65536}, {"8K", 8u << 10},
	    {"8k", 8u << 10}, {"64M", 64u << 20}, {"3G", 3u << 30}, {"4294967295", 4294967295u},
	};
	size_t i;
	__u32 v;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		v = 12345;
		cr_assert_eq(dmsc_parse_bytes("--x", ok[i].arg, &v), 0, "%s refused", ok[i].arg);
		cr_expect_eq(v, ok[i].want, "%s: got %u, want %u", ok[i].arg, v, ok[i].want);
	}
}

Test(bytes, refused_and_untouched)
{
	static const char *const bad[] = {
	    "",	    "-1", "M", "12Q", "8MB", "8 M", "4G", "4294967296", "99999999999999999999",
	    "0x10", " 8",
	};
	size_t i;
	__u32 v;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 777;
		cr_expect_eq(dmsc_parse_bytes("--x", bad[i], &v), -EINVAL, "\"%s\" accepted",
			     bad[i]);
		cr_expect_eq(v, 777, "\"%s\" changed the output", bad[i]);
	}
}
