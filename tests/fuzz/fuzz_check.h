/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* CHECK(cond): what every fuzz harness asserts with; a failed one prints
 * where and what, and aborts (the fuzzer keeps the input). */
#ifndef DMSC_FUZZ_CHECK_H
#define DMSC_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif /* DMSC_FUZZ_CHECK_H */
