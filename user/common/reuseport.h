/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A listener handed over between an old and a new process, both bound to
 * the same address with SO_REUSEPORT (dmsc-l7 replaced by dmscd, the mTLS
 * tunnel restarted). Without help, the kernel resets the connections
 * queued on a listener when it closes, even those that completed their
 * handshake before the old process's last accept(). With a reuseport
 * program of attach type SELECT_OR_MIGRATE on the group, it moves them to
 * another listener of the group instead (docs/design.md decision 60).
 */
#ifndef DMSC_REUSEPORT_H
#define DMSC_REUSEPORT_H

/* Attaches the migrating program to the SO_REUSEPORT group of fd, a
 * listening socket (after listen()). 0, or a negative errno: the kernel
 * cannot (before Linux 5.14: EINVAL), said once per process; the listener
 * works as before either way. */
int dmsc_reuseport_migrate(int fd);

#endif /* DMSC_REUSEPORT_H */
