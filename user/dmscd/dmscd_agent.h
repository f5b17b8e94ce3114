// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's state and what its files share: main and the options
 * (dmscd.c), the policy applied and followed (dmscd_apply.c), the L7
 * helper started and the metrics scrape (dmscd_serve.c).
 */
#ifndef DMSC_DMSCD_AGENT_H
#define DMSC_DMSCD_AGENT_H

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "debounce.h"
#include "policy_set.h"
#include "allow_resolve.h"
#include "datapath.h"
#include "etcd_sync.h"
#include "health_watch.h"
#include "httpd.h"
#include "l7_auto.h"
#include "l7_snapshot.h"
#include "l7_supervisor.h"
#include "log.h"
#include "metrics.h"
#include "apply_mirror.h"
#include "policy.h"
#include "policy_watch.h"
#include "apply.h"

#define EXIT_USAGE 2
#define DEFAULT_METRICS "127.0.0.1:9464"
#define DEFAULT_DEBOUNCE_MS 200
#define DEFAULT_DEBOUNCE_MAX_MS 2000
#define DEFAULT_DROP_DELAY_MS 100

struct agent {
	const char *pin_dir;
	const char *policy;
	bool policy_is_dir;
	struct dmsc_policy_watch watch;
	struct dmsc_etcd_sync *etcd; /* --etcd: the policy comes from etcd */
	bool etcd_read;              /* its first read arrived */
	struct dmsc_mirror mirror;
	/* The pinned maps, kept open between writes (dmsc_datapath_hold);
	 * write_lock/write_unlock around each write. */
	struct dmsc_datapath dp;
	struct dmsc_agent_stats stats;
	struct dmsc_debounce debounce;
	int signal_fd, http_fd;
	/* dmsc-l7 for protocol http services, unless --l7 off (l7_auto.h). */
	bool l7;
	enum dmsc_l7_mode l7_mode;
	struct dmsc_l7_served l7_served;
	struct dmsc_l7_supervisor l7_sup;
	const char *l7_argv[16];
	char l7_metrics[PATH_MAX];
	/* The L7 view (l7_snapshot.h) of the last policy applied, which the
	 * helper runs; NULL until one was applied (no helper before). */
	char *l7_view;
	size_t l7_view_len;
	/* dmsc-l7 tunnel, the mutual TLS tunnel between hosts, when --mtls-dir
	 * is given (docs/mtls.md); it runs the tunnel's view of the policy
	 * applied (its allow_from checks), handed over like dmsc-l7's. */
	bool tunnel;
	struct dmsc_l7_supervisor tunnel_sup;
	const char *tunnel_argv[16];
	char tunnel_metrics[PATH_MAX];
	char *tunnel_view;
	size_t tunnel_view_len;
	/* The mesh cgroup (relative to the cgroup2 mount), and the cgroups
	 * under it that the tunnel and dmsc-l7 run in, so that their sockets
	 * meet the workloads' on the fast path (docs/design.md decision 76):
	 * made here, removed at exit; "" when none. The tunnel's only with
	 * --tunnel-fastpath on; dmsc-l7's with --l7-fastpath on, or auto
	 * where the mesh cgroup is not a systemd unit's own (decision 99). */
	char mesh_cgroup[DMSC_CGROUP_PATH_MAX];
	bool tunnel_fastpath, l7_fastpath, l7_fastpath_auto;
	char tunnel_cgroup[PATH_MAX], l7_cgroup[PATH_MAX];
	/* allow_from paths with no cgroup yet: applied again until they
	 * resolve (dmsc_apply_result.unresolved). */
	int64_t retry_at_ms; /* 0: none */
	size_t unresolved;
	/* allow_from rules resolved again when cgroups appear and go, and
	 * every CGROUP_RECHECK_MS besides (allow_resolve.h). */
	struct dmsc_cgroup_watch cg_watch;
	int64_t reresolve_at_ms; /* 0: none due */
	int64_t recheck_at_ms;
	struct dmsc_httpd httpd;
	enum dmsc_metrics_backends metrics_backends;
	/* Backend health: probes, passive ejections seen, services to apply
	 * again (docs/design.md decision 28). */
	struct dmsc_health_watch health;
};

/* A restarted container is an rmdir and a mkdir: wait this long after an
 * event so that one pass sees both. */
#define CGROUP_SETTLE_MS 20
#define CGROUP_RECHECK_MS 10000

#define UNRESOLVED_RETRY_MS 2000

#define L7_POLL_MS 1000
#define L7_STOP_MS 12000 /* the helper's own drain bound is 10 s */

/* dmscd_apply.c */
void l7_follow(struct agent *ag, const struct dmsc_policy *policy);
void tunnel_follow(struct agent *ag, const struct dmsc_policy *policy);
void apply_policy(struct agent *ag, const char *why);
void reresolve(struct agent *ag);
void flush_drops(struct agent *ag, bool force);
/* The held datapath, locked for one write (0, or -errno when it cannot be
 * opened: not installed, ...), and released. */
int write_lock(struct agent *ag);
void write_unlock(struct agent *ag);

/* dmscd_serve.c */
int l7_start(struct agent *ag, const char *bin, const char *listen);
int tunnel_host(const char *dir);
int tunnel_start(struct agent *ag, const char *bin, const char *dir, const char *listen);
void helper_cgroup_remove(struct dmsc_l7_supervisor *sup, char *cg);
void l7_default_binary(char *buf, size_t len);
void *scrape_job_make(void *ctx);
void scrape_job_free(void *job);
int metrics_handler(const char *path, struct dmsc_buf *body, void *job);

#endif
