// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <stdarg.h>
#include <stdio.h>

#include <bpf/libbpf.h>

#include "log.h"

static const char *log_prog = "dmsc";
static enum dmsc_log_level log_level = DMSC_LOG_INFO;

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	enum dmsc_log_level ours = level == LIBBPF_WARN   ? DMSC_LOG_WARN
				   : level == LIBBPF_INFO ? DMSC_LOG_DEBUG
							  : DMSC_LOG_DEBUG;

	if (ours > log_level)
		return 0;
	fprintf(stderr, "%s: libbpf: ", log_prog);
	return vfprintf(stderr, fmt, args);
}

void dmsc_log_init(const char *prog, enum dmsc_log_level level)
{
	log_prog = prog;
	log_level = level;
	libbpf_set_print(libbpf_print);
}

void dmsc_log(enum dmsc_log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level > log_level)
		return;
	fprintf(stderr, "%s: ", log_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}
