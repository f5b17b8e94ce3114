/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * FNV-1a, 64-bit: the hash of the userspace tables that key on bytes (the
 * etcd store's names, dmsc-l7's clients, the tunnel's metric rows). Not
 * keyed: for tables whose keys come from the policy or from authenticated
 * peers, not from whoever connects.
 */
#ifndef DMSC_HASH_H
#define DMSC_HASH_H

#include <stddef.h>
#include <stdint.h>

#define DMSC_FNV1A_INIT 1469598103934665603ull

/* h carried over the n bytes at p (h: DMSC_FNV1A_INIT, or the hash of the
 * bytes before) */
static inline uint64_t dmsc_fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

#endif /* DMSC_HASH_H */
