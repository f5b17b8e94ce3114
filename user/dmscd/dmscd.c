// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd: the per-host agent. Installs or adopts the pinned datapath,
 * applies a policy file (or a directory of them), watches it and applies
 * each change, debounced, writing only what differs; serves metrics.
 *
 * The datapath does not depend on dmscd: SIGTERM (or a crash) leaves it
 * running as it is, and the next dmscd adopts it (its programs are
 * replaced in place with bpf_link_update, so an upgrade never detaches
 * them). `dmscctl uninstall` removes everything.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "datapath.h"
#include "httpd.h"
#include "l7_supervisor.h"
#include "log.h"
#include "metrics.h"
#include "apply_mirror.h"
#include "policy.h"
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
	char watch_dir[PATH_MAX];
	char watch_name[NAME_MAX + 1]; /* file mode: the file's name in watch_dir */
	struct dmsc_mirror mirror;
	struct dmsc_agent_stats stats;
	struct dmsc_debounce debounce;
	int inotify_fd, watch_wd, signal_fd, http_fd;
	/* dmsc-l7 for protocol http services, when --l7-listen is given. */
	bool l7;
	struct dmsc_l7_supervisor l7_sup;
	const char *l7_argv[16];
	char l7_metrics[PATH_MAX];
	/* allow_from paths with no cgroup yet: applied again until they
	 * resolve (dmsc_apply_result.unresolved). */
	int64_t retry_at_ms; /* 0: none */
	size_t unresolved;
};

#define UNRESOLVED_RETRY_MS 2000

#define L7_POLL_MS 1000
#define L7_STOP_MS 12000 /* the helper's own drain bound is 10 s */

static const char usage_text[] =
    "usage: dmscd --policy FILE|DIR [--cgroup PATH] [options]\n"
    "\n"
    "  --policy FILE|DIR      the policy: one JSON file, or a directory whose *.json\n"
    "                         files are merged (a service defined twice is an error)\n"
    "  --cgroup PATH          the cgroup v2 whose processes are in the mesh; may be\n"
    "                         left out when the datapath is installed already\n"
    "  --interface IF         also police byte limits on traffic arriving on IF (TC\n"
    "                         ingress; repeatable; kept by later installs)\n"
    "  --metrics ADDR:PORT    Prometheus metrics at http://ADDR:PORT/metrics\n"
    "                         (default " DEFAULT_METRICS "; port 0 picks one; off)\n"
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
	fprintf(f, usage_text, DEFAULT_DEBOUNCE_MS, DEFAULT_DEBOUNCE_MAX_MS, DEFAULT_DROP_DELAY_MS,
		DMSC_PIN_ROOT "/v" DMSC_LAYOUT_VERSION);
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
	size_t i;
	int err;

	ag->retry_at_ms = 0;
	t0 = mono_seconds();
	err = dmsc_policy_set_load(ag->policy, &set, &msgs);
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
	/* The helper reads the policy itself: a new one replaces it, without
	 * refusing or cutting a connection (dmsc_l7_sup_replace). */
	if (ag->l7 && res.n_changes && ag->l7_sup.state != DMSC_L7_SUP_STOPPED)
		dmsc_l7_sup_replace(&ag->l7_sup, ag->l7_argv, (uint64_t)dmsc_now_ms());
	ag->stats.entries_written += res.entries_written;
	dmsc_histogram_observe(&ag->stats.apply_seconds, t3 - t2);
	ag->stats.policy_services = res.n_services;
	ag->stats.last_apply_time = wall_seconds();
out:
	free(digests);
	dmsc_apply_result_free(&res);
	dmsc_policy_set_free(&set);
	dmsc_msgs_free(&msgs);
	/* json-c and the parse leave freed memory in the heap: give it back. */
	malloc_trim(0);
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
static int append_l7_metrics(const struct agent *ag, struct dmsc_buf *body)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int err;

	if (!f)
		return -errno;
	err = dmsc_l7_metrics_append(ag->l7_metrics, f);
	fclose(f);
	if (!err && len)
		dmsc_buf_printf(body, "%.*s", (int)len, text);
	free(text);
	return err;
}

/* Builds the helper's command line and starts it under supervision. */
static int l7_start(struct agent *ag, const char *bin, const char *listen)
{
	int n = 0;

	if (ag->policy_is_dir) {
		pr_warn("--l7-listen needs --policy FILE: dmsc-l7 reads one policy file\n");
		return -EINVAL;
	}
	snprintf(ag->l7_metrics, sizeof(ag->l7_metrics), "/run/dmsc/dmsc-l7.%d.prom",
		 (int)getpid());
	if (mkdir("/run/dmsc", 0755) && errno != EEXIST) {
		pr_warn("cannot create /run/dmsc: %s\n", strerror(errno));
		return -errno;
	}
	ag->l7_argv[n++] = bin;
	ag->l7_argv[n++] = "--listen";
	ag->l7_argv[n++] = listen;
	ag->l7_argv[n++] = "--policy";
	ag->l7_argv[n++] = ag->policy;
	ag->l7_argv[n++] = "--pin-dir";
	ag->l7_argv[n++] = ag->pin_dir;
	ag->l7_argv[n++] = "--metrics-file";
	ag->l7_argv[n++] = ag->l7_metrics;
	ag->l7_argv[n] = NULL;
	if (dmsc_l7_sup_init(&ag->l7_sup, ag->l7_argv))
		return -E2BIG;
	ag->l7 = true;
	pr_info("starting %s on %s for http services\n", bin, listen);
	return dmsc_l7_sup_start(&ag->l7_sup, (uint64_t)dmsc_now_ms());
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

static int metrics_handler(const char *path, struct dmsc_buf *body, void *ctx)
{
	struct agent *ag = ctx;
	struct dmsc_datapath dp;
	__u64 gen;
	int err;

	if (strcmp(path, "/") == 0) {
		dmsc_buf_printf(body, "dmscd: metrics at /metrics\n");
		return 200;
	}
	if (strcmp(path, "/metrics") != 0)
		return 404;
	if (dmsc_datapath_open(&dp, ag->pin_dir, false))
		return 500;
	/* Another writer changed the maps: name what they hold now. */
	if (!ag->mirror.loaded || dmsc_datapath_generation(&dp, &gen) ||
	    gen != ag->mirror.generation ||
	    dmsc_map_id(dp.fd[DMSC_M_SERVICES]) != ag->mirror.services_map_id)
		dmsc_mirror_load(&ag->mirror, &dp);
	err = dmsc_metrics_render(body, &ag->mirror, &dp, &ag->stats);
	dmsc_datapath_close(&dp);
	if (!err && ag->l7)
		err = append_l7_metrics(ag, body);
	return err ? 500 : 200;
}

/* Whether an inotify event is about the policy. */
static bool relevant(const struct agent *ag, const struct inotify_event *ev)
{
	if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
		pr_warn("%s: the watched directory went away; changes are no longer seen "
			"(restart dmscd)\n",
			ag->watch_dir);
		return false;
	}
	if (!ev->len)
		return false;
	if (ag->policy_is_dir)
		return dmsc_policy_dir_entry(ev->name);
	return strcmp(ev->name, ag->watch_name) == 0;
}

static void read_inotify(struct agent *ag)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	char *p;

	while ((n = read(ag->inotify_fd, buf, sizeof(buf))) > 0) {
		for (p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			if (relevant(ag, ev))
				dmsc_debounce_event(&ag->debounce, dmsc_now_ms());
			p += sizeof(*ev) + ev->len;
		}
	}
}

static int setup_watch(struct agent *ag)
{
	char copy[PATH_MAX];
	struct stat st;
	int err;

	if (stat(ag->policy, &st) == 0 && S_ISDIR(st.st_mode)) {
		ag->policy_is_dir = true;
		snprintf(ag->watch_dir, sizeof(ag->watch_dir), "%s", ag->policy);
	} else {
		snprintf(copy, sizeof(copy), "%s", ag->policy);
		snprintf(ag->watch_dir, sizeof(ag->watch_dir), "%s", dirname(copy));
		snprintf(copy, sizeof(copy), "%s", ag->policy);
		snprintf(ag->watch_name, sizeof(ag->watch_name), "%s", basename(copy));
	}
	ag->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ag->inotify_fd < 0)
		return -errno;
	/* The directory, not the file: editors replace a file by renaming a
	 * new one over it, which a watch on the old inode would miss. */
	ag->watch_wd = inotify_add_watch(ag->inotify_fd, ag->watch_dir,
					 IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM |
					     IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF);
	if (ag->watch_wd < 0) {
		err = -errno;
		pr_warn("cannot watch %s: %s\n", ag->watch_dir, strerror(-err));
		return err;
	}
	return 0;
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
	};
	static const struct option longopts[] = {
	    {"policy", required_argument, NULL, OPT_POLICY},
	    {"cgroup", required_argument, NULL, OPT_CGROUP},
	    {"interface", required_argument, NULL, OPT_IF},
	    {"metrics", required_argument, NULL, OPT_METRICS},
	    {"debounce-ms", required_argument, NULL, OPT_DEBOUNCE},
	    {"debounce-max-ms", required_argument, NULL, OPT_DEBOUNCE_MAX},
	    {"drop-delay-ms", required_argument, NULL, OPT_DROP_DELAY},
	    {"max-services", required_argument, NULL, OPT_MAX_SVC},
	    {"max-backends", required_argument, NULL, OPT_MAX_BE},
	    {"fastpath-backlog", required_argument, NULL, OPT_FP_BACKLOG},
	    {"pin-dir", required_argument, NULL, OPT_PIN_DIR},
	    {"l7-listen", required_argument, NULL, OPT_L7_LISTEN},
	    {"l7-binary", required_argument, NULL, OPT_L7_BINARY},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct agent ag = {.inotify_fd = -1, .signal_fd = -1, .http_fd = -1};
	const char *cgroup = NULL, *metrics = DEFAULT_METRICS, *ifs[MAX_INTERFACES];
	unsigned int debounce = DEFAULT_DEBOUNCE_MS, debounce_max = DEFAULT_DEBOUNCE_MAX_MS;
	unsigned int drop_delay = DEFAULT_DROP_DELAY_MS, max_svc = 0, max_be = 0;
	struct dmsc_install_opts io = {0};
	enum dmsc_log_level level = DMSC_LOG_INFO;
	size_t n_ifs = 0;
	const char *l7_listen = NULL;
	char bound[64], l7_bin[PATH_MAX] = "";
	sigset_t sigs;
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
	if (optind != argc || !ag.policy) {
		if (!ag.policy)
			pr_warn("--policy FILE|DIR is required\n");
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
	if (setup_watch(&ag))
		goto out;
	if (strcmp(metrics, "off") != 0) {
		ag.http_fd = dmsc_httpd_listen(metrics, bound, sizeof(bound));
		if (ag.http_fd < 0)
			goto out;
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
	pr_info("watching %s%s\n", ag.policy, ag.policy_is_dir ? " (a directory of *.json)" : "");
	apply_policy(&ag, "start");
	if (l7_listen) {
		if (!l7_bin[0])
			l7_default_binary(l7_bin, sizeof(l7_bin));
		if (l7_start(&ag, l7_bin, l7_listen))
			goto out;
	}

	while (running) {
		/* poll() passes over the entries whose fd is -1. */
		struct pollfd pfd[4] = {
		    {.fd = ag.signal_fd, .events = POLLIN},
		    {.fd = ag.inotify_fd, .events = POLLIN},
		    {.fd = ag.http_fd, .events = POLLIN},
		    {.fd = ag.l7 ? dmsc_l7_sup_fd(&ag.l7_sup) : -1, .events = POLLIN},
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
		/* The helper: reaped, noticed ready, restarted after its
		 * back-off; looked at every second at least. */
		if (ag.l7 && (wait < 0 || wait > L7_POLL_MS))
			wait = L7_POLL_MS;
		if (poll(pfd, 4, wait) < 0 && errno != EINTR) {
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
		if (pfd[1].revents & POLLIN)
			read_inotify(&ag);
		if (ag.http_fd >= 0 && (pfd[2].revents & POLLIN)) {
			dmsc_httpd_serve(ag.http_fd, metrics_handler, &ag);
			malloc_trim(0); /* the page is built whole, then freed */
		}
		now = dmsc_now_ms();
		if (running && dmsc_debounce_take(&ag.debounce, now))
			apply_policy(&ag, "changed");
		else if (running && ag.retry_at_ms && dmsc_now_ms() >= ag.retry_at_ms)
			apply_policy(&ag, "retry");
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
	}
	dmsc_mirror_free(&ag.mirror);
	if (ag.http_fd >= 0)
		close(ag.http_fd);
	if (ag.inotify_fd >= 0)
		close(ag.inotify_fd);
	if (ag.signal_fd >= 0)
		close(ag.signal_fd);
	return rc;
}
