/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* dmscd's etcd sync: what etcd_sync.c (the reads, the thread, the views)
 * and etcd_watch.c (the watch streams) share. */
#ifndef DMSC_ETCD_SYNC_INT_H
#define DMSC_ETCD_SYNC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "etcd_sync.h"

/* How a watch ended */
enum { WATCH_OK, WATCH_LOST, WATCH_COMPACTED, WATCH_STOPPED, WATCH_REFILL };

/* The apply's eventfd: something waits for it */
void dmsc_etcd_sync_wake(struct dmsc_etcd_sync *s);
/* etcd answered (up) or not; logged when it changes */
void dmsc_etcd_sync_set_connected(struct dmsc_etcd_sync *s, bool up, const char *why);
/* Under the lock, after an answer of etcd at revision head */
void dmsc_etcd_sync_note_answer(struct dmsc_etcd_sync *s, int64_t head, bool changed,
				double rx_at);
/* Under the lock: key kv of namespace i into the store */
int dmsc_etcd_sync_put_kv(struct dmsc_etcd_sync *s, size_t i, const struct dmsc_etcd_kv *kv);
/* Watches every namespace from the revision after the one it read, until
 * a stream ends, fails, a stop or a refill; why names what ended it.
 * Returns a WATCH_ outcome. */
int dmsc_etcd_sync_watch_all(struct dmsc_etcd_sync *s, char *why, size_t why_len);

#endif /* DMSC_ETCD_SYNC_INT_H */
