/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
#ifndef DMSC_CMP_H
#define DMSC_CMP_H

/* -1, 0 or 1 as a is below, equal to or above b: one key of a qsort or
 * bsearch comparator, without the overflow of a subtraction. */
#define DMSC_CMP(a, b) (((a) > (b)) - ((a) < (b)))

#endif /* DMSC_CMP_H */
