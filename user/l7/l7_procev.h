/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The kernel's process events (the proc connector, CONFIG_PROC_EVENTS):
 * the helper hears of every exec on the host as it happens, so that a
 * process that starts in a network namespace the helper has no listener
 * in yet gets one before its first connect(), not at the next scan
 * (docs/design.md decision 96). The events go to netlink sockets of the
 * initial network namespace only: the socket is made there.
 */
#ifndef DMSC_L7_PROCEV_H
#define DMSC_L7_PROCEV_H

/* A non-blocking socket that receives the events, subscribed; negative
 * errno when the kernel has no proc connector or the helper cannot reach
 * the initial network namespace (then the scan alone finds namespaces).
 * own_netns_fd: the calling thread's namespace, returned to. */
int dmsc_l7_procev_open(int own_netns_fd);

/*
 * Reads what fd holds, calling exec(tgid, arg) for each exec. Returns 0,
 * or -ENOBUFS when events were lost (the socket's buffer overran: the
 * caller looks at every process another way), or another negative errno.
 */
int dmsc_l7_procev_read(int fd, void (*exec)(int tgid, void *arg), void *arg);

#endif /* DMSC_L7_PROCEV_H */
