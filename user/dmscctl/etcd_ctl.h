/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* dmscctl publish / get / watch (policy in etcd). */
#ifndef DMSC_ETCD_CTL_H
#define DMSC_ETCD_CTL_H

#include <stdbool.h>

bool dmsc_etcd_ctl_command(const char *cmd);
/* argv as dmscctl got it; returns the exit code. */
int dmsc_etcd_ctl_main(int argc, char **argv);

#endif /* DMSC_ETCD_CTL_H */
