/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
#ifndef DMSC_LOG_H
#define DMSC_LOG_H

enum dmsc_log_level {
	DMSC_LOG_WARN,
	DMSC_LOG_INFO,
	DMSC_LOG_DEBUG,
};

/* Messages go to stderr prefixed with the program's name; libbpf's own
 * messages are routed through the same filter (its warnings are shown,
 * its debug output only at DMSC_LOG_DEBUG). */
void dmsc_log_init(const char *prog, enum dmsc_log_level level);
void dmsc_log(enum dmsc_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define pr_warn(...) dmsc_log(DMSC_LOG_WARN, __VA_ARGS__)
#define pr_info(...) dmsc_log(DMSC_LOG_INFO, __VA_ARGS__)
#define pr_debug(...) dmsc_log(DMSC_LOG_DEBUG, __VA_ARGS__)

#endif /* DMSC_LOG_H */
