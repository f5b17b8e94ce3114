// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer harness for the policy parser and validator
 * (dmsc_policy_parse), and for the weight-to-slot math that a valid policy
 * feeds (include/dmsc/slots.h, the code the kernel's tables come from).
 *
 * Beyond "no crash, no sanitizer report" it checks what must hold for any
 * input, and aborts (a finding) when it does not:
 *   - a document is either valid (0, no errors) or invalid (-EINVAL, at
 *     least one error, every error formats to a terminated string);
 *   - a valid document's services have names, 1..128 backends, ports 1..65535,
 *     weights 0..10000, and their slot tables add up to DMSC_SLOTS with every
 *     backend within one slot of its exact share.
 * Build and run: `make fuzz` (long) or the bounded run in `make test`.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmsc/slots.h"
#include "policy.h"
#include "fuzz_check.h"


static void check_slots(const struct dmsc_policy_service *s)
{
	__u32 weight[DMSC_BACKENDS_PER_SERVICE_MAX], counts[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 ids[DMSC_BACKENDS_PER_SERVICE_MAX], slot[DMSC_SLOTS], seen[DMSC_BACKENDS_PER_SERVICE_MAX];
	__u32 n = (__u32)s->n_backends, i, sum = 0;
	__u64 total;

	for (i = 0; i < n; i++) {
		weight[i] = s->backends[i].weight;
		ids[i] = i + 1;
		seen[i] = 0;
	}
	total = dmsc_slot_counts(weight, n, counts);
	if (total == 0) {
		for (i = 0; i < n; i++)
			CHECK(counts[i] == 0);
		return;
	}
	for (i = 0; i < n; i++) {
		/* exact share: weight * SLOTS / total; a count is within one */
		__u64 lo = (__u64)weight[i] * DMSC_SLOTS / total;

		CHECK(counts[i] >= lo && counts[i] <= lo + 1);
		sum += counts[i];
	}
	CHECK(sum == DMSC_SLOTS);
	dmsc_slot_layout(counts, ids, n, slot);
	for (i = 0; i < DMSC_SLOTS; i++) {
		CHECK(slot[i] >= 1 && slot[i] <= n);
		seen[slot[i] - 1]++;
	}
	for (i = 0; i < n; i++)
		CHECK(seen[i] == counts[i]);
}

static void check_valid(const struct dmsc_policy *p)
{
	char buf[512];
	size_t i, j;

	for (i = 0; i < p->n_services; i++) {
		const struct dmsc_policy_service *s = &p->services[i];

		CHECK(s->name && s->name[0]);
		CHECK(s->port >= 1);
		CHECK(s->n_backends >= 1 && s->n_backends <= DMSC_BACKENDS_PER_SERVICE_MAX);
		for (j = 0; j < s->n_backends; j++) {
			CHECK(s->backends[j].port >= 1);
			CHECK(s->backends[j].weight <= 10000);
		}
		check_slots(s);
		CHECK(dmsc_policy_proto_name(s->protocol) != NULL);
	}
	dmsc_policy_unsupported(p, buf, sizeof(buf));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dmsc_policy_errors errs = { 0 };
	struct dmsc_policy p;
	char line[1024];
	size_t i;
	int err;

	memset(&p, 0, sizeof(p));
	err = dmsc_policy_parse((const char *)data, size, "fuzz", &p, &errs);
	if (err == 0) {
		CHECK(errs.count == 0);
		check_valid(&p);
	} else {
		CHECK(err == -EINVAL || err == -ENOMEM);
		CHECK(err != -EINVAL || errs.count > 0);
		CHECK(p.n_services == 0);
		for (i = 0; i < errs.count; i++) {
			CHECK(memchr(errs.items[i].path, '\0', sizeof(errs.items[i].path)));
			CHECK(memchr(errs.items[i].message, '\0', sizeof(errs.items[i].message)));
			dmsc_policy_error_format(&errs.items[i], line, sizeof(line));
			CHECK(strlen(line) < sizeof(line));
		}
		CHECK(errs.count <= DMSC_POLICY_ERRORS_MAX + 1);
	}
	dmsc_policy_free(&p);
	dmsc_policy_errors_free(&errs);
	return 0;
}
