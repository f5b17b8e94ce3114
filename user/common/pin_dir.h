/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Where the datapath is pinned. Apart from the datapath layer so that a
 * program that only opens pinned maps (dmsc-l7) does not link the loader
 * and its embedded BPF objects.
 */
#ifndef DMSC_PIN_DIR_H
#define DMSC_PIN_DIR_H

/* $DMSC_PIN_DIR, else DMSC_PIN_ROOT/vDMSC_LAYOUT_VERSION. */
const char *dmsc_pin_dir(void);

/* The hint for a map this build's datapath has */
#define DMSC_PIN_HINT_BUILD "install the datapath with this build"

/* Opens the map pinned as pin_dir/maps/name: its fd, or a negative errno
 * with a message naming the path (and hint, when not NULL: what a missing
 * map means). */
int dmsc_pinned_map_open(const char *pin_dir, const char *name, const char *hint);
/* The same without a message: for a map an older datapath may lack. */
int dmsc_pinned_map_try(const char *pin_dir, const char *name);

/* Marks fd, before its connect(), as a helper's own in dmsc_l7_own
 * (own_fd), which connect4 and connect6 leave alone (docs/design.md
 * decision 44): 0, or a negative errno for the caller to say. */
int dmsc_l7_own_mark(int own_fd, int fd);

/* For a helper stopped for good (not restarted): clears its address from
 * the datapath's dmsc_l7_conf, so connect4 balances http services at L4
 * again instead of sending them to a closed port. A helper that exits
 * leaves its registration on purpose: the next one (restarted by the
 * supervisor, on the same address) takes over without a window in which
 * requests bypass routes and limits. 0 or a negative errno. */
int dmsc_l7_unregister(const char *pin_dir);

#endif /* DMSC_PIN_DIR_H */
