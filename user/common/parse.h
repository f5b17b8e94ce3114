/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Parsers of command-line and environment values, for every program.
 */
#ifndef DMSC_PARSE_H
#define DMSC_PARSE_H

#include <linux/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Parses a byte count for an option: digits with an optional K, M or G
 * (KiB, MiB, GiB), at most 4 GiB - 1. 0 or -EINVAL (message printed, naming
 * FLAG). */
int dmsc_parse_bytes(const char *flag, const char *arg, __u32 *out);

/* A decimal number from min to max (digits only: no sign, no blank).
 * Returns 0 or -EINVAL; dmsc_parse_u32 also says what is wrong, naming
 * flag. */
int dmsc_parse_u32_quiet(const char *arg, __u32 min, __u32 max, __u32 *out);
int dmsc_parse_u32(const char *flag, const char *arg, __u32 min, __u32 max, __u32 *out);

/* An option a command only stores: --NAME ARG into a string, --NAME ARG
 * again and again appended to a list, --NAME N (a number from min to max)
 * into a __u32, or --NAME alone setting a flag. A command lists them in one
 * table of DMSC_OPT_STR, _LIST, _NUM and _FLAG rows, ended by DMSC_OPT_END,
 * beside the getopt rows of the options it handles itself; getopt_long
 * returns DMSC_OPT_BASE + k for the k-th. */
struct dmsc_opt {
	const char *name;
	const char **str;
	const char **list; /* list[*n], at most n_max */
	size_t *n, n_max;
	__u32 *num;
	__u32 min, max;
	bool *flag;
};
#define DMSC_OPT_STR(name_, p) {.name = (name_), .str = (p)}
#define DMSC_OPT_LIST(name_, l, pn, most) {.name = (name_), .list = (l), .n = (pn), .n_max = (most)}
#define DMSC_OPT_NUM(name_, p, lo, hi) {.name = (name_), .num = (p), .min = (lo), .max = (hi)}
#define DMSC_OPT_FLAG(name_, p) {.name = (name_), .flag = (p)}
#define DMSC_OPT_END {.name = NULL}

/* getopt values of a command's stored options: above every single-character
 * option and the install ones (datapath.h). */
#define DMSC_OPT_BASE 0x300

struct option;
/* A command's getopt_long table into rows: one row per option of opts, then
 * own[] up to and with its end row (DMSC_LONGOPTS_END). rows has room for
 * DMSC_OPT_ROWS(opts, own), both arrays of the command. */
void dmsc_opt_rows(const struct dmsc_opt *opts, const struct option *own, struct option *rows);
#define DMSC_OPT_ROWS(opts, own) (sizeof(opts) / sizeof((opts)[0]) + sizeof(own) / sizeof((own)[0]))
/* Takes one getopt result, as dmsc_install_opt does: 1 when it was one of
 * opts (its value stored), 0 when it was not, -EINVAL when its argument is
 * refused (the reason printed). */
int dmsc_opt_take(const struct dmsc_opt *opts, int c, const char *arg);

/* The default case of a command's getopt switch: one of its stored options
 * (dmsc_opt_take), -v, -h or a usage error (dmsc_opt_common). -1 when
 * parsing goes on; else the exit code: 2 after a refused value (its message
 * printed) or a usage error, 0 after -h. */
int dmsc_opt_other(const struct dmsc_opt *opts, int c, const char *arg, const char *prog,
		   void (*usage)(FILE *f));

/* -o text|json: 0 with *json set, or -EINVAL (message printed). */
int dmsc_parse_output(const char *arg, bool *json);

/* The end of every command's getopt_long table: --verbose, --help. */
#define DMSC_LONGOPTS_END                                                                          \
	{"verbose", no_argument, NULL, 'v'}, {"help", no_argument, NULL, 'h'},                     \
	{                                                                                          \
		NULL, 0, NULL, 0                                                                   \
	}

/* -v, -h and what getopt refused, alike in every command: -v logs at the
 * debug level as prog and returns -1 (parsing goes on); -h prints usage to
 * standard output and returns 0; anything else prints usage to standard
 * error and returns 2 (the usage exit code). usage(f) prints the command's
 * usage text to f. */
int dmsc_opt_common(int opt, const char *prog, void (*usage)(FILE *f));

#endif /* DMSC_PARSE_H */
