/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* `dmsc-l7 tunnel`: the helper's mutual TLS tunnel between hosts
 * (docs/mtls.md#the-tunnel). */
#ifndef DMSC_L7_TUNNEL_H
#define DMSC_L7_TUNNEL_H

#include <stdbool.h>

bool dmsc_l7_tunnel_command(int argc, char **argv);
/* argv as dmsc-l7 got it; returns the exit code (0 stopped, 1 failed, 2 usage). */
int dmsc_l7_tunnel_main(int argc, char **argv);

#endif /* DMSC_L7_TUNNEL_H */
