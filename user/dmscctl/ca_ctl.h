/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* dmscctl ca init / issue / show: the mesh CA and the hosts' certificates. */
#ifndef DMSC_CA_CTL_H
#define DMSC_CA_CTL_H

#include <stdbool.h>

bool dmsc_ca_ctl_command(const char *cmd);
/* argv as dmscctl got it; returns the exit code. */
int dmsc_ca_ctl_main(int argc, char **argv);

#endif /* DMSC_CA_CTL_H */
