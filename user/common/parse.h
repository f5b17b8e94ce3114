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

/* A numeric option --NAME N of a command: N from min to max, into *val.
 * A command keeps a table of them; getopt returns base + k for the k-th. */
struct dmsc_num_opt {
	const char *name;
	__u32 *val;
	__u32 min, max;
};
struct option;
/* The getopt_long rows of nums[0..n), values base + k, into rows[0..n). */
void dmsc_num_opt_rows(const struct dmsc_num_opt *nums, size_t n, int base, struct option *rows);
/* Takes one getopt result, as dmsc_install_opt does: 1 when it was one of
 * nums (its argument parsed into it), 0 when it was not, -EINVAL when its
 * argument is refused (dmsc_parse_u32's message). */
int dmsc_num_opt_parse(const struct dmsc_num_opt *nums, size_t n, int base, int c,
		       const char *arg);

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
