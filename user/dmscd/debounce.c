// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The debounce of file-system events (debounce.h). */
#include <string.h>

#include "debounce.h"

void dmsc_debounce_init(struct dmsc_debounce *d, int quiet_ms, int max_ms)
{
	memset(d, 0, sizeof(*d));
	d->quiet_ms = quiet_ms;
	d->max_ms = max_ms < quiet_ms ? quiet_ms : max_ms;
}

void dmsc_debounce_event(struct dmsc_debounce *d, int64_t now_ms)
{
	if (!d->pending) {
		d->pending = true;
		d->first_ms = now_ms;
	}
	d->last_ms = now_ms;
}

int dmsc_debounce_wait_ms(const struct dmsc_debounce *d, int64_t now_ms)
{
	int64_t due;

	if (!d->pending)
		return -1;
	due = d->last_ms + d->quiet_ms;
	if (due > d->first_ms + d->max_ms)
		due = d->first_ms + d->max_ms;
	return due <= now_ms ? 0 : (int)(due - now_ms);
}

bool dmsc_debounce_take(struct dmsc_debounce *d, int64_t now_ms)
{
	if (dmsc_debounce_wait_ms(d, now_ms) != 0)
		return false;
	d->pending = false;
	return true;
}
