// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd: the per-host agent. Installs or adopts the pinned datapath,
 * applies a policy file (or a directory of them, or the services of etcd
 * namespaces), watches it and applies each change, debounced, writing only
 * what differs; serves metrics.
 *
 * The datapath does not depend on dmscd: SIGTERM (or a crash) leaves it
 * running as it is, and the next dmscd adopts it (its programs are
 * replaced in place with bpf_link_update, so an upgrade never detaches
 * them). `dmscctl uninstall` removes everything.
 */
#define _GNU_SOURCE
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

#include "agent.h"
#include "allow_resolve.h"
#include "datapath.h"
#include "etcd_sync.h"
#include "health_watch.h"
#include "httpd.h"
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
#define MAX_INTERFACES 16

struct agent {
	const char *pin_dir;
	const char *policy;
	bool policy_is_dir;
	struct dmsc_policy_watch watch;
	struct dmsc_etcd_sync *etcd; /* --etcd: the policy comes from etcd */
	bool etcd_read;              /* its first read arrived */
	struct dmsc_mirror mirror;
	struct dmsc_agent_stats stats;
	struct dmsc_debounce debounce;
	int signal_fd, http_fd;
	/* dmsc-l7 for protocol http services, when --l7-listen is given. */
	bool l7;
	struct dmsc_l7_supervisor l7_sup;
	const char *l7_argv[16];
	char l7_metrics[PATH_MAX];
	/* The L7 view (l7_snapshot.h) of the last policy applied, which the
	 * helper runs; NULL until one was applied (no helper before). */
	char *l7_view;
	size_t l7_view_len;
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

static const char usage_text[] =
    "usage: dmscd --policy FILE|DIR [--cgroup PATH] [options]\n"
    "       dmscd --etcd URL[,URL...] --namespace NS [--namespace NS...] [--prefix P]\n"
    "             [--cgroup PATH] [options]\n"
    "\n"
    "  --etcd URL[,URL...]    take the policy from etcd instead of --policy: the\n"
    "                         services of each --namespace, watched (docs/etcd.md)\n"
    "  --prefix P             etcd key prefix (default " DMSC_ETCD_DEFAULT_PREFIX ")\n"
    "  --etcd-cacert FILE, --etcd-cert FILE, --etcd-key FILE  TLS to etcd\n"
    "  --policy FILE|DIR      the policy: one JSON file, or a directory whose *.json\n"
    "                         files are merged (a service defined twice is an error)\n"
    "  --cgroup PATH          the cgroup v2 whose processes are in the mesh; may be\n"
    "                         left out when the datapath is installed already\n"
    "  --interface IF         also police byte limits on traffic arriving on IF (TC\n"
    "                         ingress; repeatable; kept by later installs)\n"
    "  --metrics ADDR:PORT    Prometheus metrics at http://ADDR:PORT/metrics\n"
    "                         (default " DEFAULT_METRICS "; port 0 picks one; off)\n"
    "  --metrics-backends auto|on|off  per-backend series; auto (default): only\n"
    "                         with at most %d services\n"
    "  --debounce-ms N        apply once the policy was quiet N ms (default %d)\n"
    "  --debounce-max-ms N    ...or N ms after the first change (default %d)\n"
    "  --drop-delay-ms N      zero a removed backend's entry N ms after no slot table\n"
    "                         names it, so that no connect() in flight misses it\n"
    "                         (default %d)\n"
    "  --max-services N       install: service capacity\n"
    "  --max-backends N       install: backend capacity\n"
    "  --fastpath-backlog BYTES|default  install: how far a same-host writer may\n"
    "                         run ahead of its reader before it leaves the fast path\n"
    "                         (K, M, G; 0: no bound; kept by later installs)\n"
    "  --pin-dir DIR          where the datapath is pinned (default $DMSC_PIN_DIR or\n"
    "                         %s)\n"
    "  -v, --verbose          debug messages\n"
    "  -h, --help             this text\n"
    "\n"
    "SIGTERM/SIGINT: exit, leaving the datapath running. SIGHUP: apply now.\n";

static void usage(FILE *f)
{
	fprintf(f, usage_text, DMSC_METRICS_BACKENDS_AUTO_MAX, DEFAULT_DEBOUNCE_MS,
		DEFAULT_DEBOUNCE_MAX_MS, DEFAULT_DROP_DELAY_MS, DMSC_PIN_ROOT "/v" DMSC_LAYOUT_VERSION);
}

static double wall_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mono_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this thread: an apply's own cost, without the time other
 * processes had the CPU meanwhile. */
static double cpu_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * The helper runs the policy just applied, as dmscd read it: its L7 view
 * goes to the helper in a sealed memfd (never the user's file, which may
 * have changed since). Any change of that view (routes, timeouts, retries,
 * labels, weights, requests_per_second: also those no kernel map holds)
 * replaces the helper without refusing or cutting a connection; one asked
 * for during a hand-over is queued (dmsc_l7_sup_replace).
 */
static void l7_follow(struct agent *ag, const struct dmsc_policy *policy)
{
	uint64_t now = (uint64_t)dmsc_now_ms();
	char *view;
	size_t len;
	int err;

	err = dmsc_l7_view_json(policy, &view, &len);
	if (err) {
		pr_warn("dmsc-l7: cannot build the policy it should run: %s; it keeps the last "
			"one\n",
			strerror(-err));
		return;
	}
	if (ag->l7_view && len == ag->l7_view_len && memcmp(view, ag->l7_view, len) == 0) {
		free(view);
		return;
	}
	err = dmsc_l7_sup_set_policy(&ag->l7_sup, view, len);
	if (!err)
		err = ag->l7_view ? dmsc_l7_sup_replace(&ag->l7_sup, ag->l7_argv, now)
				  : dmsc_l7_sup_start(&ag->l7_sup, now);
	if (err) {
		pr_warn("dmsc-l7: cannot hand it the policy applied: %s\n", strerror(-err));
		free(view);
		return;
	}
	pr_info("dmsc-l7: %s with the http services of the policy applied\n",
		ag->l7_view ? "replacing it" : "starting it");
	free(ag->l7_view);
	ag->l7_view = view;
	ag->l7_view_len = len;
}

/* Parses, validates, compiles and applies the policy; logs one line per
 * change applied and one summary line. A policy that does not validate
 * leaves the datapath as it is. */
static void apply_policy(struct agent *ag, const char *why)
{
	struct dmsc_apply_result res = {0};
	struct dmsc_policy_set set = {0};
	struct dmsc_msgs msgs = {0};
	struct dmsc_datapath dp;
	double t0, t1, t2, t3, c2, c3;
	struct rusage ru2, ru3;
	struct dmsc_svc_digest *digests = NULL;
	char buf[512];
	bool etcd_view = false;
	size_t i;
	int err;

	/* Before etcd's first read the store is empty, not the policy: a
	 * SIGHUP then must not empty the maps an earlier dmscd wrote. */
	if (ag->etcd && !ag->etcd_read) {
		pr_info("%s (%s): etcd not read yet; nothing applied, the datapath runs as it is\n",
			ag->policy, why);
		return;
	}
	ag->retry_at_ms = 0;
	t0 = mono_seconds();
	if (ag->etcd) {
		/* a view of the store, locked until _view_done */
		err = dmsc_etcd_sync_view(ag->etcd, &set.policy);
		etcd_view = !err;
	} else {
		err = dmsc_policy_set_load(ag->policy, &set, &msgs);
	}
	if (err) {
		for (i = 0; i < msgs.n; i++)
			pr_warn("%s\n", msgs.lines[i]);
		if (!msgs.n)
			pr_warn("%s: %s\n", ag->policy, strerror(-err));
		pr_warn("%s: not applied (%zu problem%s); the datapath is unchanged\n", ag->policy,
			msgs.n, msgs.n == 1 ? "" : "s");
		ag->stats.applies[DMSC_APPLY_INVALID]++;
		goto out;
	}
	if (dmsc_policy_unsupported(&set.policy, buf, sizeof(buf))) {
		pr_warn("%s: %s; not applied, the datapath is unchanged\n", ag->policy, buf);
		ag->stats.applies[DMSC_APPLY_INVALID]++;
		goto out;
	}
	digests = calloc(set.policy.n_services ? set.policy.n_services : 1, sizeof(*digests));
	if (!digests) {
		pr_warn("%s: out of memory\n", ag->policy);
		ag->stats.applies[DMSC_APPLY_FAILED]++;
		goto out;
	}
	dmsc_policy_digests(&set.policy, digests);
	t1 = mono_seconds();

	err = dmsc_datapath_open(&dp, ag->pin_dir, true);
	if (err) {
		pr_warn("%s: not applied: the datapath at %s cannot be opened: %s%s\n", ag->policy,
			ag->pin_dir, strerror(-err),
			err == -ENOENT ? " (removed by `dmscctl uninstall`?)" : "");
		ag->stats.applies[DMSC_APPLY_FAILED]++;
		goto out;
	}
	getrusage(RUSAGE_THREAD, &ru2);
	t2 = mono_seconds();
	c2 = cpu_seconds();
	err = dmsc_mirror_apply(&ag->mirror, &dp, &set.policy, digests, false, &res);
	t3 = mono_seconds();
	c3 = cpu_seconds();
	getrusage(RUSAGE_THREAD, &ru3);
	pr_debug("apply: %ld minor page faults, %ld context switches\n",
		 ru3.ru_minflt - ru2.ru_minflt,
		 ru3.ru_nivcsw - ru2.ru_nivcsw + ru3.ru_nvcsw - ru2.ru_nvcsw);
	dmsc_datapath_close(&dp);
	if (err) {
		pr_warn("%s: apply failed: %s; the datapath is as it was%s\n", ag->policy,
			strerror(-err), res.rolled_back ? " (rolled back)" : "");
		ag->stats.applies[DMSC_APPLY_FAILED]++;
		goto out;
	}
	for (i = 0; i < res.n_changes; i++)
		pr_info("%s %s: %s\n", dmsc_change_op_name(res.changes[i].op),
			res.changes[i].service, res.changes[i].detail);
	if (res.unresolved && res.unresolved != ag->unresolved)
		pr_info("%zu allow_from path%s with no cgroup yet (no one matches them): applying "
			"again every %d ms until they exist\n",
			res.unresolved, res.unresolved == 1 ? "" : "s", UNRESOLVED_RETRY_MS);
	ag->unresolved = res.unresolved;
	ag->retry_at_ms = res.unresolved ? dmsc_now_ms() + UNRESOLVED_RETRY_MS : 0;
	/* A retry that changed nothing is not worth a line. */
	dmsc_log(res.n_changes || strcmp(why, "retry") ? DMSC_LOG_INFO : DMSC_LOG_DEBUG,
		 "applied %s (%s): %zu service%s, %zu change%s, %zu map entr%s written "
		 "(%zu deferred) in %.3f ms (cpu %.3f ms); parse and compile %.1f ms\n",
		 ag->policy, why, res.n_services, res.n_services == 1 ? "" : "s", res.n_changes,
		 res.n_changes == 1 ? "" : "s", res.entries_written,
		 res.entries_written == 1 ? "y" : "ies", res.entries_deferred, (t3 - t2) * 1e3,
		 (c3 - c2) * 1e3, (t1 - t0) * 1e3);
	ag->stats.applies[DMSC_APPLY_OK]++;
	if (dmsc_health_watch_set(&ag->health, &set.policy, &ag->mirror))
		pr_warn("health: out of memory: the backends of this policy are not watched\n");
	if (ag->l7)
		l7_follow(ag, &set.policy);
	ag->stats.entries_written += res.entries_written;
	dmsc_histogram_observe(&ag->stats.apply_seconds, t3 - t2);
	ag->stats.policy_services = res.n_services;
	ag->stats.last_apply_time = wall_seconds();
out:
	free(digests);
	dmsc_apply_result_free(&res);
	if (etcd_view)
		dmsc_etcd_sync_view_done(ag->etcd, &set.policy); /* a view: nothing to free */
	else
		dmsc_policy_set_free(&set);
	dmsc_msgs_free(&msgs);
	/* json-c and the parse leave freed memory in the heap: give it back. */
	malloc_trim(0);
}

/* Resolves every allow_from rule in the maps again (whoever wrote it) and
 * watches the cgroup directories of their paths afresh. */
static void reresolve(struct agent *ag)
{
	struct dmsc_allow_entry *rules = NULL;
	struct dmsc_datapath dp;
	size_t n = 0;
	bool in_step;
	__u64 gen = 0;
	int changed;

	ag->reresolve_at_ms = 0;
	ag->recheck_at_ms = dmsc_now_ms() + CGROUP_RECHECK_MS;
	if (!ag->cg_watch.root[0] &&
	    dmsc_cgroup2_mount(ag->cg_watch.root, sizeof(ag->cg_watch.root)))
		return;
	if (dmsc_datapath_open(&dp, ag->pin_dir, true))
		return;
	in_step = ag->mirror.loaded && dmsc_datapath_generation(&dp, &gen) == 0 &&
		  gen == ag->mirror.generation &&
		  dmsc_map_id(dp.fd[DMSC_M_SERVICES]) == ag->mirror.services_map_id;
	/* The watches first: a cgroup made after its path is resolved below
	 * is an event then. */
	if (dmsc_allow_rules(&dp, &rules, &n) == 0)
		dmsc_cgroup_watch_set(&ag->cg_watch, rules, n);
	free(rules);
	rules = NULL;
	changed = dmsc_allow_reresolve(&dp, ag->cg_watch.root, &rules, &n);
	if (changed > 0 && dmsc_datapath_bump_generation(&dp) == 0 && in_step &&
	    dmsc_mirror_take_allow(&ag->mirror, rules, n) == 0)
		ag->mirror.generation = gen + 1;
	free(rules);
	dmsc_datapath_close(&dp);
}

static void flush_drops(struct agent *ag, bool force)
{
	struct dmsc_datapath dp;
	int n;

	if (!ag->mirror.n_drops)
		return;
	if (dmsc_datapath_open(&dp, ag->pin_dir, true))
		return;
	n = dmsc_mirror_flush_drops(&ag->mirror, &dp, dmsc_now_ms(), force);
	dmsc_datapath_close(&dp);
	if (n > 0)
		pr_debug("cleared %d removed backend entr%s\n", n, n == 1 ? "y" : "ies");
}

/* dmsc-l7's own families (per service, route and code, latency histograms),
 * from the file it rewrites every second. */
static int append_l7_metrics(const char *file, struct dmsc_buf *body)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int err;

	if (!f)
		return -errno;
	err = dmsc_l7_metrics_append(file, f);
	fclose(f);
	if (!err && len)
		dmsc_buf_printf(body, "%.*s", (int)len, text);
	free(text);
	return err;
}

/* Builds the helper's command line for its supervisor; the helper starts
 * with the first policy applied (l7_follow), which it gets from dmscd. */
static int l7_start(struct agent *ag, const char *bin, const char *listen)
{
	int n = 0;

	snprintf(ag->l7_metrics, sizeof(ag->l7_metrics), "/run/dmsc/dmsc-l7.%d.prom",
		 (int)getpid());
	if (mkdir("/run/dmsc", 0755) && errno != EEXIST) {
		pr_warn("cannot create /run/dmsc: %s\n", strerror(errno));
		return -errno;
	}
	ag->l7_argv[n++] = bin;
	ag->l7_argv[n++] = "--listen";
	ag->l7_argv[n++] = listen;
	ag->l7_argv[n++] = "--pin-dir";
	ag->l7_argv[n++] = ag->pin_dir;
	ag->l7_argv[n++] = "--metrics-file";
	ag->l7_argv[n++] = ag->l7_metrics;
	ag->l7_argv[n] = NULL;
	if (dmsc_l7_sup_init(&ag->l7_sup, ag->l7_argv))
		return -E2BIG;
	ag->l7 = true;
	pr_info("%s on %s serves http services once a policy is applied\n", bin, listen);
	return 0;
}

/* Where dmsc-l7 is: beside this dmscd, unless --l7-binary says. */
static void l7_default_binary(char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n <= 0) {
		snprintf(buf, len, "dmsc-l7");
		return;
	}
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	if (snprintf(buf, len, "%.*s/dmsc-l7", (int)(len > 9 ? len - 9 : 0), self) >= (int)len)
		snprintf(buf, len, "dmsc-l7");
}

/* What a scrape renders, copied in the loop when the connection comes:
 * the connection's thread reads nothing the loop changes. */
struct scrape_job {
	struct dmsc_mirror snap;
	bool snap_ok;
	struct dmsc_agent_stats stats;
	enum dmsc_metrics_backends backends;
	const char *pin_dir;
	bool l7;
	char l7_metrics[PATH_MAX];
	/* --etcd: its families, rendered in the loop under the store's lock */
	struct dmsc_buf etcd;
};

static void *scrape_job_make(void *ctx)
{
	const struct agent *ag = ctx;
	struct scrape_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->stats = ag->stats;
	j->backends = ag->metrics_backends;
	j->pin_dir = ag->pin_dir;
	j->l7 = ag->l7;
	memcpy(j->l7_metrics, ag->l7_metrics, sizeof(j->l7_metrics));
	j->snap_ok = dmsc_metrics_snapshot(&ag->mirror,
					   dmsc_metrics_backends_on(j->backends, ag->mirror.n),
					   &j->snap) == 0;
	if (ag->etcd)
		dmsc_etcd_sync_metrics(ag->etcd, &j->etcd);
	return j;
}

static void scrape_job_free(void *job)
{
	struct scrape_job *j = job;

	if (!j)
		return;
	dmsc_metrics_snapshot_free(&j->snap);
	dmsc_buf_free(&j->etcd);
	free(j);
}

/* In the connection's thread. */
static int metrics_handler(const char *path, struct dmsc_buf *body, void *job)
{
	struct scrape_job *j = job;
	struct dmsc_mirror own = {0};
	const struct dmsc_mirror *m;
	struct dmsc_datapath dp;
	__u64 gen;
	int err;

	if (strcmp(path, "/") == 0) {
		dmsc_buf_printf(body, "dmscd: metrics at /metrics\n");
		return 200;
	}
	if (strcmp(path, "/metrics") != 0)
		return 404;
	if (!j || !j->snap_ok || dmsc_datapath_open(&dp, j->pin_dir, false))
		return 500;
	m = &j->snap;
	/* Another writer changed the maps: name what they hold now. */
	if (!m->loaded || dmsc_datapath_generation(&dp, &gen) || gen != m->generation ||
	    dmsc_map_id(dp.fd[DMSC_M_SERVICES]) != m->services_map_id) {
		if (dmsc_mirror_load(&own, &dp)) {
			dmsc_datapath_close(&dp);
			return 500;
		}
		m = &own;
	}
	/* The snapshot copied the backends by the same rule. */
	err = dmsc_metrics_render(body, m, &dp, &j->stats,
				  dmsc_metrics_backends_on(j->backends, m->n));
	dmsc_datapath_close(&dp);
	dmsc_mirror_free(&own);
	if (!err && j->etcd.failed)
		err = -ENOMEM;
	if (!err && j->etcd.len)
		dmsc_buf_append(body, j->etcd.p, j->etcd.len);
	if (!err && j->l7)
		err = append_l7_metrics(j->l7_metrics, body);
	return err ? 500 : 200;
}

static int parse_uint(const char *flag, const char *arg, unsigned int max, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || *end || end == arg || v > max) {
		pr_warn("%s: \"%s\" is not a number from 0 to %u\n", flag, arg, max);
		return -EINVAL;
	}
	*out = (unsigned int)v;
	return 0;
}

/* Installs, or adopts and replaces the programs in place; says which. */
static int install(const struct agent *ag, const struct dmsc_install_opts *opts)
{
	struct dmsc_install_opts io = *opts;
	struct dmsc_link_info before[8], after[8];
	struct dmsc_install_result res;
	struct dmsc_datapath dp;
	char cg[DMSC_CGROUP_PATH_MAX + 1];
	size_t i, n;
	int err;

	if (!io.cgroup) {
		err = dmsc_datapath_open(&dp, ag->pin_dir, false);
		if (err) {
			pr_warn("dmsc is not installed at %s: give --cgroup PATH to install it\n",
				ag->pin_dir);
			return err;
		}
		snprintf(cg, sizeof(cg), "%s", dp.install.cgroup_path);
		dmsc_datapath_close(&dp);
		io.cgroup = cg;
	}
	n = (size_t)dmsc_datapath_links(ag->pin_dir, before, 8);
	err = dmsc_install(ag->pin_dir, &io, &res);
	if (err) {
		pr_warn("install failed: %s\n", strerror(-err));
		return err;
	}
	dmsc_datapath_links(ag->pin_dir, after, 8);
	if (!res.adopted) {
		pr_info("installed the datapath at %s on cgroup %s (%u hooks)\n", ag->pin_dir,
			res.cgroup_path, res.n_links);
		return 0;
	}
	pr_info("adopted the datapath at %s on cgroup %s: programs replaced in place\n",
		ag->pin_dir, res.cgroup_path);
	for (i = 0; i < n; i++)
		pr_info("  %s: link %u kept, program %u -> %u\n", after[i].hook->hook,
			after[i].link_id, before[i].prog_id, after[i].prog_id);
	return 0;
}

int main(int argc, char **argv)
{
	enum {
		OPT_POLICY = 256,
		OPT_CGROUP,
		OPT_IF,
		OPT_METRICS,
		OPT_DEBOUNCE,
		OPT_DEBOUNCE_MAX,
		OPT_DROP_DELAY,
		OPT_MAX_SVC,
		OPT_MAX_BE,
		OPT_FP_BACKLOG,
		OPT_PIN_DIR,
		OPT_L7_LISTEN,
		OPT_L7_BINARY,
		OPT_METRICS_BACKENDS,
		OPT_ETCD,
		OPT_ETCD_PREFIX,
		OPT_ETCD_NS,
		OPT_ETCD_CA,
		OPT_ETCD_CERT,
		OPT_ETCD_KEY,
	};
	static const struct option longopts[] = {
	    {"policy", required_argument, NULL, OPT_POLICY},
	    {"cgroup", required_argument, NULL, OPT_CGROUP},
	    {"interface", required_argument, NULL, OPT_IF},
	    {"metrics", required_argument, NULL, OPT_METRICS},
	    {"metrics-backends", required_argument, NULL, OPT_METRICS_BACKENDS},
	    {"debounce-ms", required_argument, NULL, OPT_DEBOUNCE},
	    {"debounce-max-ms", required_argument, NULL, OPT_DEBOUNCE_MAX},
	    {"drop-delay-ms", required_argument, NULL, OPT_DROP_DELAY},
	    {"max-services", required_argument, NULL, OPT_MAX_SVC},
	    {"max-backends", required_argument, NULL, OPT_MAX_BE},
	    {"fastpath-backlog", required_argument, NULL, OPT_FP_BACKLOG},
	    {"pin-dir", required_argument, NULL, OPT_PIN_DIR},
	    {"l7-listen", required_argument, NULL, OPT_L7_LISTEN},
	    {"l7-binary", required_argument, NULL, OPT_L7_BINARY},
	    {"etcd", required_argument, NULL, OPT_ETCD},
	    {"prefix", required_argument, NULL, OPT_ETCD_PREFIX},
	    {"namespace", required_argument, NULL, OPT_ETCD_NS},
	    {"etcd-cacert", required_argument, NULL, OPT_ETCD_CA},
	    {"etcd-cert", required_argument, NULL, OPT_ETCD_CERT},
	    {"etcd-key", required_argument, NULL, OPT_ETCD_KEY},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct agent ag = {
	    .watch = {.fd = -1}, .cg_watch = {.fd = -1}, .signal_fd = -1, .http_fd = -1};
	const char *cgroup = NULL, *metrics = DEFAULT_METRICS, *ifs[MAX_INTERFACES];
	unsigned int debounce = DEFAULT_DEBOUNCE_MS, debounce_max = DEFAULT_DEBOUNCE_MAX_MS;
	unsigned int drop_delay = DEFAULT_DROP_DELAY_MS, max_svc = 0, max_be = 0;
	struct dmsc_install_opts io = {0};
	enum dmsc_log_level level = DMSC_LOG_INFO;
	size_t n_ifs = 0;
	const char *l7_listen = NULL;
	char bound[64], l7_bin[PATH_MAX] = "";
	sigset_t sigs;
	const char *etcd_urls = NULL, *etcd_prefix = DMSC_ETCD_DEFAULT_PREFIX;
	const char *etcd_ns[DMSC_ETCD_NAMESPACES_MAX];
	size_t n_etcd_ns = 0;
	struct dmsc_etcd_tls etcd_tls = {0};
	struct dmsc_etcd_sync etcd_sync;
	char etcd_label[256];
	bool running = true;
	int c, rc = 1;

	dmsc_log_init("dmscd", level);
	while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_POLICY:
			ag.policy = optarg;
			break;
		case OPT_CGROUP:
			cgroup = optarg;
			break;
		case OPT_IF:
			if (n_ifs == MAX_INTERFACES) {
				pr_warn("--interface: at most %d\n", MAX_INTERFACES);
				return EXIT_USAGE;
			}
			ifs[n_ifs++] = optarg;
			break;
		case OPT_METRICS:
			metrics = optarg;
			break;
		case OPT_METRICS_BACKENDS:
			if (!strcmp(optarg, "auto")) {
				ag.metrics_backends = DMSC_METRICS_BACKENDS_AUTO;
			} else if (!strcmp(optarg, "on")) {
				ag.metrics_backends = DMSC_METRICS_BACKENDS_ON;
			} else if (!strcmp(optarg, "off")) {
				ag.metrics_backends = DMSC_METRICS_BACKENDS_OFF;
			} else {
				pr_warn("--metrics-backends: \"%s\" is not auto, on or off\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case OPT_DEBOUNCE:
			if (parse_uint("--debounce-ms", optarg, 60000, &debounce))
				return EXIT_USAGE;
			break;
		case OPT_DEBOUNCE_MAX:
			if (parse_uint("--debounce-max-ms", optarg, 600000, &debounce_max))
				return EXIT_USAGE;
			break;
		case OPT_DROP_DELAY:
			if (parse_uint("--drop-delay-ms", optarg, 60000, &drop_delay))
				return EXIT_USAGE;
			break;
		case OPT_MAX_SVC:
			if (parse_uint("--max-services", optarg, 4000000, &max_svc))
				return EXIT_USAGE;
			break;
		case OPT_MAX_BE:
			if (parse_uint("--max-backends", optarg, 4000000, &max_be))
				return EXIT_USAGE;
			break;
		case OPT_FP_BACKLOG:
			if (!strcmp(optarg, "default"))
				io.fp_backlog_default = true;
			else if (dmsc_parse_bytes("--fastpath-backlog", optarg, &io.fp_backlog_max))
				return EXIT_USAGE;
			io.fp_backlog_set = true;
			break;
		case OPT_PIN_DIR:
			ag.pin_dir = optarg;
			break;
		case OPT_L7_LISTEN:
			l7_listen = optarg;
			break;
		case OPT_L7_BINARY:
			snprintf(l7_bin, sizeof(l7_bin), "%s", optarg);
			break;
		case OPT_ETCD:
			etcd_urls = optarg;
			break;
		case OPT_ETCD_PREFIX:
			etcd_prefix = optarg;
			break;
		case OPT_ETCD_NS:
			if (n_etcd_ns == DMSC_ETCD_NAMESPACES_MAX) {
				pr_warn("--namespace: at most %d\n", DMSC_ETCD_NAMESPACES_MAX);
				return EXIT_USAGE;
			}
			etcd_ns[n_etcd_ns++] = optarg;
			break;
		case OPT_ETCD_CA:
			etcd_tls.cacert = optarg;
			break;
		case OPT_ETCD_CERT:
			etcd_tls.cert = optarg;
			break;
		case OPT_ETCD_KEY:
			etcd_tls.key = optarg;
			break;
		case 'v':
			level = DMSC_LOG_DEBUG;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	dmsc_log_init("dmscd", level);
	if (etcd_urls && (ag.policy || !n_etcd_ns)) {
		pr_warn("--etcd takes one --namespace NS or more, and no --policy\n");
		return EXIT_USAGE;
	}
	if (etcd_urls) {
		snprintf(etcd_label, sizeof(etcd_label), "etcd %s%s", etcd_prefix,
			 n_etcd_ns == 1 ? "" : " (namespaces)");
		ag.policy = etcd_label;
	}
	if (optind != argc || !ag.policy) {
		if (!ag.policy)
			pr_warn("--policy FILE|DIR or --etcd URL is required\n");
		else
			pr_warn("unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!ag.pin_dir)
		ag.pin_dir = dmsc_pin_dir();
	if (dmsc_require_root("dmscd"))
		return 1;
	dmsc_agent_stats_init(&ag.stats);
	ag.stats.start_time = wall_seconds();
	dmsc_debounce_init(&ag.debounce, (int)debounce, (int)debounce_max);
	ag.mirror.drop_delay_ms = drop_delay;

	/* Signals first: a SIGTERM during the first apply is taken after it. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	ag.signal_fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	if (ag.signal_fd < 0) {
		pr_warn("signalfd: %s\n", strerror(errno));
		goto out;
	}
	io.cgroup = cgroup;
	io.max_services = max_svc ? max_svc + 1 : 0;
	io.max_backends = max_be ? max_be + 1 : 0;
	io.ifaces = ifs;
	io.n_ifaces = n_ifs;
	if (install(&ag, &io))
		goto out;
	if (!etcd_urls && dmsc_policy_watch_open(&ag.watch, ag.policy))
		goto out;
	if (dmsc_health_watch_start(&ag.health, ag.pin_dir))
		goto out;
	ag.policy_is_dir = ag.watch.is_dir;
	if (strcmp(metrics, "off") != 0) {
		ag.http_fd = dmsc_httpd_listen(metrics, bound, sizeof(bound));
		if (ag.http_fd < 0)
			goto out;
		ag.httpd = (struct dmsc_httpd){
		    .listen_fd = ag.http_fd,
		    .max_conns = DMSC_HTTPD_CONNS_DEFAULT,
		    .handler = metrics_handler,
		    .make_job = scrape_job_make,
		    .free_job = scrape_job_free,
		    .ctx = &ag,
		};
		pr_info("metrics at http://%s/metrics\n", bound);
	}
	{
		struct dmsc_datapath dp;

		if (dmsc_datapath_open(&dp, ag.pin_dir, true) == 0) {
			if (dmsc_mirror_load(&ag.mirror, &dp) == 0)
				pr_info("the maps hold %zu services and %zu backends\n",
					ag.mirror.n, ag.mirror.n_backends);
			dmsc_datapath_close(&dp);
		}
	}
	if (l7_listen) {
		if (!l7_bin[0])
			l7_default_binary(l7_bin, sizeof(l7_bin));
		if (l7_start(&ag, l7_bin, l7_listen))
			goto out;
	}
	if (etcd_urls) {
		/* applied once the first read arrives (the eventfd) */
		if (dmsc_etcd_sync_start(&etcd_sync, etcd_urls, &etcd_tls, etcd_prefix, etcd_ns,
					 n_etcd_ns))
			goto out;
		ag.etcd = &etcd_sync;
		pr_info("watching %s: %zu namespace%s at %s\n", ag.policy, n_etcd_ns,
			n_etcd_ns == 1 ? "" : "s", etcd_urls);
	} else {
		pr_info("watching %s%s\n", ag.policy,
			ag.policy_is_dir ? " (a directory of *.json)" : "");
		apply_policy(&ag, "start");
	}
	reresolve(&ag);

	while (running) {
		/* poll() passes over the entries whose fd is -1. */
		struct pollfd pfd[7] = {
		    {.fd = ag.signal_fd, .events = POLLIN},
		    {.fd = ag.watch.fd, .events = POLLIN},
		    {.fd = ag.http_fd, .events = POLLIN},
		    {.fd = ag.l7 ? dmsc_l7_sup_fd(&ag.l7_sup) : -1, .events = POLLIN},
		    {.fd = ag.cg_watch.fd, .events = POLLIN},
		    {.fd = ag.etcd ? dmsc_etcd_sync_fd(ag.etcd) : -1, .events = POLLIN},
		    {.fd = dmsc_health_watch_fd(&ag.health), .events = POLLIN},
		};
		int64_t now = dmsc_now_ms();
		int wait = dmsc_debounce_wait_ms(&ag.debounce, now);
		int drop = dmsc_mirror_next_drop_ms(&ag.mirror, now);
		int retry =
		    ag.retry_at_ms ? (int)(ag.retry_at_ms > now ? ag.retry_at_ms - now : 0) : -1;

		if (drop >= 0 && (wait < 0 || drop < wait))
			wait = drop;
		if (retry >= 0 && (wait < 0 || retry < wait))
			wait = retry;
		{
			int64_t at = ag.reresolve_at_ms ? ag.reresolve_at_ms : ag.recheck_at_ms;
			int cg = (int)(at > now ? (at - now > 100000 ? 100000 : at - now) : 0);

			if (wait < 0 || cg < wait)
				wait = cg;
		}
		/* The helper: reaped, noticed ready, restarted after its
		 * back-off; looked at every second at least. */
		if (ag.l7 && (wait < 0 || wait > L7_POLL_MS))
			wait = L7_POLL_MS;
		if (poll(pfd, 7, wait) < 0 && errno != EINTR) {
			pr_warn("poll: %s\n", strerror(errno));
			break;
		}
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			while (read(ag.signal_fd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGHUP) {
					pr_info("SIGHUP: applying %s now\n", ag.policy);
					dmsc_debounce_event(&ag.debounce, dmsc_now_ms());
					ag.debounce.first_ms -= ag.debounce.max_ms;
				} else {
					pr_info(
					    "%s: exiting; the datapath keeps running as it is\n",
					    strsignal((int)si.ssi_signo));
					running = false;
				}
			}
		}
		if ((pfd[1].revents & POLLIN) && dmsc_policy_watch_read(&ag.watch))
			dmsc_debounce_event(&ag.debounce, dmsc_now_ms());
		if (ag.http_fd >= 0 && (pfd[2].revents & POLLIN))
			dmsc_httpd_accept(&ag.httpd);
		if ((pfd[4].revents & POLLIN) && dmsc_cgroup_watch_read(&ag.cg_watch) &&
		    !ag.reresolve_at_ms)
			ag.reresolve_at_ms = dmsc_now_ms() + CGROUP_SETTLE_MS;
		if (running && (pfd[5].revents & POLLIN)) {
			dmsc_etcd_sync_take(ag.etcd);
			ag.etcd_read = true; /* woken after a whole read at least */
			apply_policy(&ag, "etcd");
			reresolve(&ag); /* new rules, new paths to watch */
		}
		/* A backend went out or came back: its service's table is laid
		 * out again by the same incremental apply. */
		if (running && (pfd[6].revents & POLLIN) &&
		    dmsc_health_watch_take(&ag.health, &ag.mirror))
			apply_policy(&ag, "health");
		now = dmsc_now_ms();
		if (running && dmsc_debounce_take(&ag.debounce, now)) {
			apply_policy(&ag, "changed");
			reresolve(&ag); /* new rules, new paths to watch */
		} else if (running && ag.retry_at_ms && dmsc_now_ms() >= ag.retry_at_ms) {
			apply_policy(&ag, "retry");
		}
		now = dmsc_now_ms();
		if (running && now >= (ag.reresolve_at_ms ? ag.reresolve_at_ms : ag.recheck_at_ms))
			reresolve(&ag);
		if (dmsc_mirror_next_drop_ms(&ag.mirror, dmsc_now_ms()) == 0)
			flush_drops(&ag, false);
		if (ag.l7)
			dmsc_l7_sup_poll(&ag.l7_sup, (uint64_t)dmsc_now_ms());
	}
	/* Removed backends still waiting: their delay is short; wait it out
	 * rather than leave entries behind. */
	{
		int left = dmsc_mirror_next_drop_ms(&ag.mirror, dmsc_now_ms());

		if (left > 0)
			usleep((useconds_t)left * 1000);
		flush_drops(&ag, true);
	}
	rc = 0;
out:
	/* The helper drains and goes; http services fall back to L4 balancing
	 * until the next dmscd starts one (fail open, not a closed port). */
	if (ag.l7) {
		dmsc_l7_sup_stop(&ag.l7_sup, L7_STOP_MS);
		dmsc_l7_unregister(ag.pin_dir);
		unlink(ag.l7_metrics);
		free(ag.l7_view);
	}
	dmsc_health_watch_stop(&ag.health);
	if (ag.etcd)
		dmsc_etcd_sync_stop(ag.etcd);
	dmsc_mirror_free(&ag.mirror);
	if (ag.http_fd >= 0)
		close(ag.http_fd);
	dmsc_policy_watch_close(&ag.watch);
	dmsc_cgroup_watch_close(&ag.cg_watch);
	if (ag.signal_fd >= 0)
		close(ag.signal_fd);
	return rc;
}
