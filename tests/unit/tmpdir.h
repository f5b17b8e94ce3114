/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* A temporary directory for a suite's files: made by its .init, removed
 * with all it holds by its .fini. */
#ifndef DMSC_TEST_TMPDIR_H
#define DMSC_TEST_TMPDIR_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include <criterion/criterion.h>

/* dir: at least 32 bytes more than name; becomes /tmp/<name>.XXXXXX */
static inline void tmpdir_make(char *dir, size_t len, const char *name)
{
	snprintf(dir, len, "/tmp/%s.XXXXXX", name);
	cr_assert_not_null(mkdtemp(dir));
}

static inline void tmpdir_remove(const char *dir)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}

#endif /* DMSC_TEST_TMPDIR_H */
