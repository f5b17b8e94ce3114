/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
#ifndef DMSC_DEBOUNCE_H
#define DMSC_DEBOUNCE_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Debounce: a burst of events (an editor writes, renames, touches) is one
 * change. The change is due once quiet_ms passed without an event, or
 * max_ms after the burst's first event, whichever comes first.
 */
struct dmsc_debounce {
	int quiet_ms, max_ms;
	bool pending;
	int64_t first_ms, last_ms;
};

void dmsc_debounce_init(struct dmsc_debounce *d, int quiet_ms, int max_ms);
void dmsc_debounce_event(struct dmsc_debounce *d, int64_t now_ms);
/* -1: nothing pending; else milliseconds until due (0: due now). */
int dmsc_debounce_wait_ms(const struct dmsc_debounce *d, int64_t now_ms);
/* True once when due; clears the pending change. */
bool dmsc_debounce_take(struct dmsc_debounce *d, int64_t now_ms);

#endif /* DMSC_DEBOUNCE_H */
