/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A batch's list of objects to finish once at its end (pump a session,
 * flush a connection's records): an object marked again while on it is not
 * added twice. The object embeds a struct dmsc_mark; dmsc_mark_take hands
 * the marks back one at a time, and dmsc_container_of finds the object
 * around one.
 */
#ifndef DMSC_MARK_H
#define DMSC_MARK_H

#include <stdbool.h>
#include <stddef.h>

#define dmsc_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

struct dmsc_mark {
	struct dmsc_mark *next;
	bool on; /* on a list */
};

static inline void dmsc_mark_add(struct dmsc_mark **list, struct dmsc_mark *m)
{
	if (m->on)
		return;
	m->on = true;
	m->next = *list;
	*list = m;
}

/* The last mark added, off the list (it may be added again); NULL when the
 * list is empty. */
static inline struct dmsc_mark *dmsc_mark_take(struct dmsc_mark **list)
{
	struct dmsc_mark *m = *list;

	if (m) {
		*list = m->next;
		m->on = false;
	}
	return m;
}

#endif /* DMSC_MARK_H */
