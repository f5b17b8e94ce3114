// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <stdlib.h>

#include "dmsc/shared.h"
#include "pin_dir.h"

const char *dmsc_pin_dir(void)
{
	const char *env = getenv("DMSC_PIN_DIR");

	if (env && *env)
		return env;
	return DMSC_PIN_ROOT "/v" DMSC_LAYOUT_VERSION;
}
