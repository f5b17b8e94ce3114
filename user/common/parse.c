// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "parse.h"

int dmsc_parse_bytes(const char *flag, const char *arg, __u32 *out)
{
	unsigned long long v, mult = 1;
	char *end;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (end != arg && !errno && end[0] && !end[1]) {
		if (end[0] == 'K' || end[0] == 'k')
			mult = 1ull << 10;
		else if (end[0] == 'M' || end[0] == 'm')
			mult = 1ull << 20;
		else if (end[0] == 'G' || end[0] == 'g')
			mult = 1ull << 30;
		if (mult > 1)
			end++;
	}
	/* strtoull skips blanks and takes a sign: neither is a byte count. */
	if (end == arg || errno || *end || !isdigit((unsigned char)arg[0]) ||
	    v > 0xffffffffull / mult) {
		pr_warn("%s: \"%s\" is not a byte count (digits with an optional K, M or G; at "
			"most 4294967295 bytes)\n",
			flag, arg);
		return -EINVAL;
	}
	*out = (__u32)(v * mult);
	return 0;
}

int dmsc_parse_u32_quiet(const char *arg, __u32 min, __u32 max, __u32 *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(arg, &end, 10);
	/* strtoull skips blanks and takes a sign: neither is a number here */
	if (end == arg || errno || *end || !isdigit((unsigned char)arg[0]) || v < min || v > max)
		return -EINVAL;
	*out = (__u32)v;
	return 0;
}

int dmsc_parse_u32(const char *flag, const char *arg, __u32 min, __u32 max, __u32 *out)
{
	if (!dmsc_parse_u32_quiet(arg, min, max, out))
		return 0;
	pr_warn("%s: \"%s\" is not a number from %u to %u\n", flag, arg, min, max);
	return -EINVAL;
}

void dmsc_opt_rows(const struct dmsc_opt *opts, const struct option *own, struct option *rows)
{
	size_t n;

	for (n = 0; opts[n].name; n++) {
		rows[n].name = opts[n].name;
		rows[n].has_arg = opts[n].flag ? no_argument : required_argument;
		rows[n].flag = NULL;
		rows[n].val = DMSC_OPT_BASE + (int)n;
	}
	while (own->name)
		rows[n++] = *own++;
	rows[n] = *own;
}

int dmsc_opt_take(const struct dmsc_opt *opts, int c, const char *arg)
{
	const struct dmsc_opt *o;
	char flag[64];
	int k;

	if (c < DMSC_OPT_BASE)
		return 0;
	for (k = 0; k < c - DMSC_OPT_BASE; k++)
		if (!opts[k].name)
			return 0;
	o = &opts[k];
	if (!o->name)
		return 0;
	if (o->str) {
		*o->str = arg;
	} else if (o->list) {
		if (*o->n == o->n_max) {
			pr_warn("--%s: at most %zu\n", o->name, o->n_max);
			return -EINVAL;
		}
		o->list[(*o->n)++] = arg;
	} else if (o->flag) {
		*o->flag = true;
	} else {
		snprintf(flag, sizeof(flag), "--%s", o->name);
		if (dmsc_parse_u32(flag, arg, o->min, o->max, o->num))
			return -EINVAL;
	}
	return 1;
}

int dmsc_opt_other(const struct dmsc_opt *opts, int c, const char *arg, const char *prog,
		   void (*usage)(FILE *f))
{
	int r = dmsc_opt_take(opts, c, arg);

	if (r > 0)
		return -1;
	if (r < 0)
		return 2;
	return dmsc_opt_common(c, prog, usage);
}

int dmsc_parse_output(const char *arg, bool *json)
{
	if (strcmp(arg, "json") && strcmp(arg, "text")) {
		pr_warn("-o: \"%s\" is not an output format (text, json)\n", arg);
		return -EINVAL;
	}
	*json = strcmp(arg, "json") == 0;
	return 0;
}

int dmsc_opt_common(int opt, const char *prog, void (*usage)(FILE *f))
{
	switch (opt) {
	case 'v':
		dmsc_log_init(prog, DMSC_LOG_DEBUG);
		return -1;
	case 'h':
		usage(stdout);
		return 0;
	default:
		usage(stderr);
		return 2;
	}
}
