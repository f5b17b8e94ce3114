/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * One short message with one descriptor beside it, over a unix socket
 * (SCM_RIGHTS): how dmscd hands a running helper the sealed memfd of a new
 * policy (docs/design.md decision 83).
 */
#ifndef DMSC_FD_PASS_H
#define DMSC_FD_PASS_H

#include <stddef.h>
#include <sys/types.h>

/* Sends msg (len bytes, at least one) and a copy of fd (-1: none) without
 * blocking. 0 or a negative errno (-EAGAIN: the socket is full). */
int dmsc_fd_send(int sock, const void *msg, size_t len, int fd);

/* Takes one message into buf (at most len - 1 bytes, NUL-terminated) and
 * the descriptor that came with it into *fd (-1: none; O_CLOEXEC), without
 * blocking. Returns the message's length, 0 at the peer's end, or a
 * negative errno (-EAGAIN: nothing waits). A descriptor beyond the first,
 * or one with a truncated message, is closed. */
ssize_t dmsc_fd_recv(int sock, char *buf, size_t len, int *fd);

/* One policy handed to a helper (its descriptor, and the message "policy
 * N"): 0 once taken, or a negative errno with why it was not into why. */
typedef int (*dmsc_policy_take_fn)(void *ctx, int fd, const char *msg, char *why, size_t len);

/* A helper's end of dmscd's update socket (docs/design.md decisions 83
 * and 85): each "policy N" message with its descriptor goes to take and
 * is answered "ok N" or "fail N: why" (who names the helper in a warning
 * when the answer cannot go). Returns once nothing waits; *sock is closed
 * and -1 once dmscd's end is gone (dmscd died, or replaced the helper). */
void dmsc_policy_updates_serve(int *sock, dmsc_policy_take_fn take, void *ctx, const char *who);

#endif /* DMSC_FD_PASS_H */
