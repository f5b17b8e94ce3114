// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* dmsc_opt_rows, dmsc_opt_take: a command's table of options that only
 * store their value, beside its own getopt rows. */
#include <criterion/criterion.h>
#include <errno.h>
#include <getopt.h>

#include "parse.h"

enum { O_OWN = 256 };

static const struct option own[] = {
    {"own", required_argument, NULL, O_OWN},
    DMSC_LONGOPTS_END,
};

struct got {
	const char *str, *list[2], *own;
	size_t n_list;
	__u32 num;
	bool flag;
};

/* argv parsed: 0, or the first refusal of dmsc_opt_take (-EINVAL) */
static int parse(char **argv, int argc, struct got *g)
{
	const struct dmsc_opt stored[] = {
	    DMSC_OPT_STR("str", &g->str),
	    DMSC_OPT_LIST("list", g->list, &g->n_list, 2),
	    DMSC_OPT_NUM("num", &g->num, 1, 10),
	    DMSC_OPT_FLAG("flag", &g->flag),
	    DMSC_OPT_END,
	};
	struct option rows[DMSC_OPT_ROWS(stored, own)];
	int c, r;

	dmsc_opt_rows(stored, own, rows);
	cr_assert_str_eq(rows[3].name, "flag");
	cr_assert_eq(rows[3].has_arg, no_argument);
	cr_assert_eq(rows[3].val, DMSC_OPT_BASE + 3);
	cr_assert_str_eq(rows[4].name, "own", "own's rows do not follow");
	cr_assert_null(rows[4 + 3].name, "the table does not end with own's end row");
	optind = 0; /* getopt_long starts afresh */
	while ((c = getopt_long(argc, argv, "vh", rows, NULL)) != -1) {
		if (c == O_OWN) {
			g->own = optarg;
			continue;
		}
		r = dmsc_opt_take(stored, c, optarg);
		if (r < 0)
			return r;
		cr_assert_eq(r, 1, "getopt value %d was not taken", c);
	}
	return 0;
}

Test(opts, each_kind_stored)
{
	char *argv[] = {"cmd",	  "--str",  "a", "--list", "b", "--num", "7",
			"--flag", "--list", "c", "--own",  "d", "--str", "e"};
	struct got g = {0};

	cr_assert_eq(parse(argv, sizeof(argv) / sizeof(argv[0]), &g), 0);
	cr_expect_str_eq(g.str, "e", "the last --str wins");
	cr_assert_eq(g.n_list, 2);
	cr_expect_str_eq(g.list[0], "b");
	cr_expect_str_eq(g.list[1], "c");
	cr_expect_eq(g.num, 7);
	cr_expect(g.flag);
	cr_expect_str_eq(g.own, "d");
}

Test(opts, refused)
{
	char *too_many[] = {"cmd", "--list", "a", "--list", "b", "--list", "c"};
	char *out_of_range[] = {"cmd", "--num", "11"};
	char *not_a_number[] = {"cmd", "--num", "7x"};
	struct got g = {0};

	cr_expect_eq(parse(too_many, 7, &g), -EINVAL, "a third --list taken");
	cr_expect_eq(g.n_list, 2);
	cr_expect_eq(parse(out_of_range, 3, &g), -EINVAL);
	cr_expect_eq(parse(not_a_number, 3, &g), -EINVAL);
	cr_expect_eq(g.num, 0, "a refused --num stored");
}

Test(opts, not_ours)
{
	const char *s = NULL;
	const struct dmsc_opt stored[] = {DMSC_OPT_STR("str", &s), DMSC_OPT_END};

	cr_expect_eq(dmsc_opt_take(stored, O_OWN, "x"), 0);
	cr_expect_eq(dmsc_opt_take(stored, DMSC_OPT_BASE + 1, "x"), 0, "past the end taken");
	cr_expect_eq(dmsc_opt_take(stored, DMSC_OPT_BASE + 5, "x"), 0, "past the end taken");
	cr_expect_eq(dmsc_opt_take(stored, 'v', NULL), 0);
	cr_expect_null(s);
	cr_expect_eq(dmsc_opt_other(stored, DMSC_OPT_BASE, "y", "cmd", NULL), -1);
	cr_expect_str_eq(s, "y");
}
