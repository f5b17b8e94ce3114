// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <stddef.h>

#include "counters.h"

#define SVC(field, text) { #field, offsetof(struct dmsc_svc_stats, field), text }

const struct dmsc_counter dmsc_svc_counters[] = {
	SVC(connections, "connect() calls translated to a backend"),
	SVC(refused_no_backend, "connect() refused: every weight is 0"),
	SVC(refused_rate, "connect() refused: over connections_per_second"),
	SVC(refused_access, "connect() refused: caller's cgroup not in allow_from"),
	SVC(bytes_to, "bytes sent by mesh clients to the service"),
	SVC(bytes_from, "bytes received by mesh clients from the service"),
	SVC(policed_to, "packets to the service dropped over bytes_per_second"),
	SVC(policed_from, "packets from the service dropped over bytes_per_second"),
	SVC(tc_bytes, "bytes arriving on --interface for a local backend"),
	SVC(tc_policed, "packets arriving on --interface dropped over bytes_per_second"),
	SVC(mtls_plain_refused, "plain connections (SYNs) from other hosts to a local backend dropped: mtls required"),
	SVC(mtls_plain_admitted, "plain connections (SYNs) from other hosts to a local backend let in: mtls permissive"),
};
const size_t dmsc_n_svc_counters = sizeof(dmsc_svc_counters) / sizeof(dmsc_svc_counters[0]);

const char *const dmsc_reason_names[DMSC_R_MAX] = {
	[DMSC_R_SLOT_EMPTY] = "slot_empty",
	[DMSC_R_BACKEND_MISSING] = "backend_missing",
	[DMSC_R_SOCK_STORAGE_FULL] = "sock_storage_full",
	[DMSC_R_PEER_REWRITTEN] = "peer_rewritten",
	[DMSC_R_LIMITS_MISSING] = "limits_missing",
	[DMSC_R_TC_MALFORMED] = "tc_malformed",
	[DMSC_R_L7_NO_HELPER] = "l7_no_helper",
	[DMSC_R_L7_HANDOFF] = "l7_handoff",
	[DMSC_R_L7_HANDOFF_FULL] = "l7_handoff_full",
	[DMSC_R_HEALTH_REPICK] = "health_repick",
	[DMSC_R_HEALTH_ALL_EJECTED] = "health_all_ejected",
	[DMSC_R_HEALTH_EJECTED] = "health_ejected",
	[DMSC_R_HEALTH_MISSING] = "health_missing",
	[DMSC_R_TUNNEL_NO_HELPER] = "tunnel_no_helper",
	[DMSC_R_TUNNEL_HANDOFF] = "tunnel_handoff",
};
