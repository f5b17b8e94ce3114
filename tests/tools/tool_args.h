/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* What the test tools (tests/tools/dmsc-*.c) share: their argument parsers
 * and the steps of their option loops. A header of static functions: each
 * tool is one file, built alone. */
#ifndef DMSC_TOOL_ARGS_H
#define DMSC_TOOL_ARGS_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A decimal in [min, max], no sign; 0 or -EINVAL. */
static inline int parse_ulong(const char *s, unsigned long min, unsigned long max,
			      unsigned long *out)
{
	char *end;
	unsigned long v;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* "A.B.C.D:PORT", IPv4 only: every dmsc test address is IPv4. */
static inline int parse_addr_port(const char *s, struct sockaddr_in *sa)
{
	char host[INET_ADDRSTRLEN];
	const char *colon = strrchr(s, ':');
	unsigned long port;
	size_t hlen;

	if (!colon)
		return -EINVAL;
	hlen = (size_t)(colon - s);
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return -EINVAL;
	if (parse_ulong(colon + 1, 1, 65535, &port))
		return -EINVAL;
	sa->sin_port = htons((uint16_t)port);
	return 0;
}

/* --help or -h: the usage on stdout, and the tool ends (0). */
static inline void tool_help(const char *arg, void (*usage)(FILE *))
{
	if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
		usage(stdout);
		exit(0);
	}
}

/* The value of the option argv[*i], *i moved onto it; NULL when the option
 * is the last argument, said on stderr with TOOL's name. */
static inline const char *tool_value(const char *tool, int argc, char **argv, int *i)
{
	if (*i + 1 >= argc) {
		fprintf(stderr, "%s: %s: unknown option or missing value\n", tool, argv[*i]);
		return NULL;
	}
	return argv[++*i];
}

/* The index of WORD among the N WORDS, or -1: an option's named values.
 * TOOL_WORD: the same over an array. */
static inline int tool_word(const char *word, const char *const *words, int n)
{
	for (int k = 0; k < n; k++)
		if (words[k] && !strcmp(word, words[k]))
			return k;
	return -1;
}
#define TOOL_WORD(word, words) tool_word((word), (words), (int)(sizeof(words) / sizeof((words)[0])))

#endif /* DMSC_TOOL_ARGS_H */
