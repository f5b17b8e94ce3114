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
#include "dmscd_agent.h"

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
    "                         ingress; repeatable, up to 8; kept by later installs)\n"
    "  --metrics ADDR:PORT    Prometheus metrics at http://ADDR:PORT/metrics\n"
    "                         (default " DEFAULT_METRICS "; port 0 picks one; off)\n"
    "  --metrics-backends auto|on|off  per-backend series; auto (default): only\n"
    "                         with at most %d services\n"
    "  --debounce-ms N        apply once the policy was quiet N ms (default %d)\n"
    "  --debounce-max-ms N    ...or N ms after the first change (default %d)\n"
    "  --drop-delay-ms N      zero a removed backend's entry N ms after no slot table\n"
    "                         names it, so that no connect() in flight misses it\n"
    "                         (default %d)\n"
    "  --max-services N       install: service capacity (0: the default)\n"
    "  --max-backends N       install: backend capacity (0: the default)\n"
    "  --fastpath-backlog BYTES|default  install: how far a same-host writer may\n"
    "                         run ahead of its reader before it leaves the fast path\n"
    "                         (K, M, G; 0: no bound; kept by later installs)\n"
    "  --l7 auto|off          auto (default): run dmsc-l7 while the policy has\n"
    "                         protocol http services; off: refuse such a policy\n"
    "  --l7-listen ADDR:PORT  the helper's address in its own network namespace\n"
    "                         (default " DMSC_L7_DEFAULT_LISTEN "; other namespaces get theirs)\n"
    "  --l7-binary PATH       the helper (default: dmsc-l7 beside dmscd)\n"
    "  --pin-dir DIR          where the datapath is pinned (default $DMSC_PIN_DIR or\n"
    "                         %s)\n"
    "  --mtls-dir HOSTDIR     run dmsc-l7 tunnel, the mutual TLS tunnel between hosts,\n"
    "                         with HOSTDIR's ca.crt, host.crt, host.key (dmscctl ca\n"
    "                         issue) and the policy applied (docs/mtls.md)\n"
    "  --mtls-listen ADDR:PORT  where other hosts' helpers reach the tunnel (with\n"
    "                         --mtls-dir; port 15008 by convention; IPv6:\n"
    "                         [ADDR]:PORT)\n"
    "  --tunnel-fastpath on|off  on: the tunnel runs in a cgroup of its own under\n"
    "                         the mesh cgroup (dmsc-tunnel), so that this host's\n"
    "                         workloads reach it on the same-host fast path; off\n"
    "                         (default): in dmscd's cgroup, over loopback TCP\n"
    "  --l7-fastpath auto|on|off  on: dmsc-l7 runs in a cgroup of its own under the\n"
    "                         mesh cgroup (dmsc-l7), so that this host's workloads\n"
    "                         reach it on the same-host fast path; off: in dmscd's\n"
    "                         cgroup, over loopback TCP (default); auto: on, unless\n"
    "                         the mesh cgroup is a systemd unit's (.service, .scope),\n"
    "                         which systemd empties when the unit stops\n"
    "  -v, --verbose          debug messages\n"
    "  -h, --help             this text\n"
    "\n"
    "SIGTERM/SIGINT: exit, leaving the datapath running. SIGHUP: apply now.\n";

static void usage(FILE *f)
{
	fprintf(f, usage_text, DMSC_METRICS_BACKENDS_AUTO_MAX, DEFAULT_DEBOUNCE_MS,
		DEFAULT_DEBOUNCE_MAX_MS, DEFAULT_DROP_DELAY_MS,
		DMSC_PIN_ROOT "/v" DMSC_LAYOUT_VERSION);
}

/* Installs, or adopts and replaces the programs in place; says which, and
 * keeps the mesh cgroup's path. */
static int install(struct agent *ag, const struct dmsc_install_opts *opts)
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
	snprintf(ag->mesh_cgroup, sizeof(ag->mesh_cgroup), "%s", res.cgroup_path);
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

/* At exit: the helper of sup, if one runs, stays (decision 80); true
 * then, said in the log. */
static bool leave_helper(struct dmsc_l7_supervisor *sup, const char *what)
{
	pid_t pid = dmsc_l7_sup_leave(sup);

	if (pid)
		pr_info("%s (pid %d) serves on until the next dmscd's takes over\n", what,
			(int)pid);
	return pid != 0;
}

int main(int argc, char **argv)
{
	enum { OPT_METRICS_BACKENDS = 256, OPT_L7_MODE, OPT_TUNNEL_FASTPATH, OPT_L7_FASTPATH };
	static const struct option own[] = {
	    DMSC_INSTALL_LONGOPTS,
	    {"metrics-backends", required_argument, NULL, OPT_METRICS_BACKENDS},
	    {"l7", required_argument, NULL, OPT_L7_MODE},
	    {"tunnel-fastpath", required_argument, NULL, OPT_TUNNEL_FASTPATH},
	    {"l7-fastpath", required_argument, NULL, OPT_L7_FASTPATH},
	    DMSC_LONGOPTS_END,
	};
	struct agent ag = {
	    .watch = {.fd = -1},
	    .cg_watch = {.fd = -1},
	    .signal_fd = -1,
	    .http_fd = -1,
	};
	const char *metrics = DEFAULT_METRICS;
	const char *l7_listen = NULL, *l7_binary = NULL, *mtls_dir = NULL, *mtls_listen = NULL;
	__u32 debounce = DEFAULT_DEBOUNCE_MS, debounce_max = DEFAULT_DEBOUNCE_MAX_MS;
	__u32 drop_delay = DEFAULT_DROP_DELAY_MS;
	struct dmsc_etcd_opts eo;
	const struct dmsc_opt stored[] = {
	    DMSC_OPT_STR("policy", &ag.policy),
	    DMSC_OPT_STR("metrics", &metrics),
	    DMSC_OPT_STR("l7-listen", &l7_listen),
	    DMSC_OPT_STR("l7-binary", &l7_binary),
	    DMSC_OPT_STR("mtls-dir", &mtls_dir),
	    DMSC_OPT_STR("mtls-listen", &mtls_listen),
	    DMSC_OPT_NUM("debounce-ms", &debounce, 0, 60000),
	    DMSC_OPT_NUM("debounce-max-ms", &debounce_max, 0, 600000),
	    DMSC_OPT_NUM("drop-delay-ms", &drop_delay, 0, 60000),
	    DMSC_ETCD_OPTS(&eo, DMSC_ETCD_NAMESPACES_MAX),
	    DMSC_OPT_END,
	};
	struct option longopts[DMSC_OPT_ROWS(stored, own)];
	struct dmsc_install_args ia = {0};
	char bound[64], l7_default[PATH_MAX];
	sigset_t sigs;
	struct dmsc_etcd_sync etcd_sync;
	char etcd_label[256];
	bool running = true;
	int c, r, rc = 1;

	dmsc_log_init("dmscd", DMSC_LOG_INFO);
	dmsc_datapath_init(&ag.dp);
	/* A block of 1 MiB or more (a read's response) that the heap has no
	 * room for is mapped and unmapped with its use, rather than grow the
	 * heap as glibc's moving threshold would. glibc still serves it from
	 * the heap's free space when that holds it: what is made for each
	 * change (an apply's view of a large store) is mapped on its own
	 * (mapmem.h; docs/etcd.md, memory). */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	dmsc_opt_rows(stored, own, longopts);
	dmsc_etcd_opts_init(&eo);
	while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (c) {
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
		case OPT_TUNNEL_FASTPATH:
			if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
				pr_warn("--tunnel-fastpath: \"%s\" is not on or off\n", optarg);
				return EXIT_USAGE;
			}
			ag.tunnel_fastpath = !strcmp(optarg, "on");
			break;
		case OPT_L7_FASTPATH:
			if (strcmp(optarg, "auto") && strcmp(optarg, "on") &&
			    strcmp(optarg, "off")) {
				pr_warn("--l7-fastpath: \"%s\" is not auto, on or off\n", optarg);
				return EXIT_USAGE;
			}
			ag.l7_fastpath = strcmp(optarg, "off") != 0;
			ag.l7_fastpath_auto = !strcmp(optarg, "auto");
			break;
		case OPT_L7_MODE:
			if (dmsc_l7_mode_parse(optarg, &ag.l7_mode)) {
				pr_warn("--l7: \"%s\" is not auto or off\n", optarg);
				return EXIT_USAGE;
			}
			break;
		default:
			/* the install options (datapath.h), the stored ones,
			 * or -v, -h, a usage error */
			r = dmsc_install_opt(&ia, c, optarg);
			if (r < 0)
				return EXIT_USAGE;
			if (!r && (r = dmsc_opt_other(stored, c, optarg, "dmscd", usage)) >= 0)
				return r;
			break;
		}
	}
	if (eo.urls && (ag.policy || !eo.n_ns)) {
		pr_warn("--etcd takes one --namespace NS or more, and no --policy\n");
		return EXIT_USAGE;
	}
	if (!mtls_dir != !mtls_listen) {
		pr_warn("--mtls-dir HOSTDIR and --mtls-listen ADDR:PORT go together\n");
		return EXIT_USAGE;
	}
	if (eo.urls) {
		snprintf(etcd_label, sizeof(etcd_label), "etcd %s%s", eo.prefix,
			 eo.n_ns == 1 ? "" : " (namespaces)");
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
	ag.pin_dir = ia.pin_dir ? ia.pin_dir : dmsc_pin_dir();
	if (dmsc_require_root("dmscd"))
		return 1;
	if (mtls_dir && tunnel_host(mtls_dir))
		return 1;
	dmsc_agent_stats_init(&ag.stats);
	ag.stats.start_time = dmsc_clock_seconds(CLOCK_REALTIME);
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
	if (install(&ag, &ia.io))
		goto out;
	if (!eo.urls && dmsc_policy_watch_open(&ag.watch, ag.policy))
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
	if (write_lock(&ag) == 0) {
		if (dmsc_mirror_load(&ag.mirror, &ag.dp) == 0)
			pr_info("the maps hold %zu services and %zu backends\n", ag.mirror.n,
				ag.mirror.n_backends);
		write_unlock(&ag);
	}
	if (l7_listen && ag.l7_mode == DMSC_L7_OFF) {
		pr_warn("--l7-listen and --l7 off contradict each other\n");
		goto out;
	}
	if (!l7_binary || !l7_binary[0]) {
		l7_default_binary(l7_default, sizeof(l7_default));
		l7_binary = l7_default;
	}
	if (ag.l7_mode == DMSC_L7_AUTO) {
		if (!l7_listen)
			l7_listen = DMSC_L7_DEFAULT_LISTEN;
		if (l7_start(&ag, l7_binary, l7_listen))
			goto out;
	}
	if (mtls_dir && tunnel_start(&ag, l7_binary, mtls_dir, mtls_listen))
		goto out;
	if (eo.urls) {
		/* applied once the first read arrives (the eventfd) */
		if (dmsc_etcd_sync_start(&etcd_sync, eo.urls, &eo.tls, eo.prefix, eo.ns, eo.n_ns,
					 ag.tunnel))
			goto out;
		ag.etcd = &etcd_sync;
		pr_info("watching %s: %zu namespace%s at %s\n", ag.policy, eo.n_ns,
			eo.n_ns == 1 ? "" : "s", eo.urls);
	} else {
		pr_info("watching %s%s\n", ag.policy,
			ag.policy_is_dir ? " (a directory of *.json)" : "");
		apply_policy(&ag, "start");
	}
	reresolve(&ag);

	while (running) {
		/* poll() passes over the entries whose fd is -1. */
		struct pollfd pfd[10] = {
		    {.fd = ag.signal_fd, .events = POLLIN},
		    {.fd = ag.watch.fd, .events = POLLIN},
		    {.fd = ag.http_fd, .events = POLLIN},
		    {.fd = ag.l7 ? dmsc_l7_sup_fd(&ag.l7_sup) : -1, .events = POLLIN},
		    {.fd = ag.cg_watch.fd, .events = POLLIN},
		    {.fd = ag.etcd ? dmsc_etcd_sync_fd(ag.etcd) : -1, .events = POLLIN},
		    {.fd = ag.tunnel ? dmsc_l7_sup_fd(&ag.tunnel_sup) : -1, .events = POLLIN},
		    {.fd = dmsc_health_watch_fd(&ag.health), .events = POLLIN},
		    {.fd = ag.tunnel ? dmsc_l7_sup_update_fd(&ag.tunnel_sup) : -1, .events = POLLIN},
		    {.fd = ag.l7 ? dmsc_l7_sup_update_fd(&ag.l7_sup) : -1, .events = POLLIN},
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
		if ((ag.l7 || ag.tunnel) && (wait < 0 || wait > L7_POLL_MS))
			wait = L7_POLL_MS;
		if (poll(pfd, sizeof(pfd) / sizeof(pfd[0]), wait) < 0 && errno != EINTR) {
			pr_warn("poll: %s\n", strerror(errno));
			break;
		}
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			while (read(ag.signal_fd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGHUP) {
					pr_info("SIGHUP: applying %s now\n", ag.policy);
					/* and opening the maps afresh, whatever
					 * their directory says */
					dmsc_datapath_close(&ag.dp);
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
			/* woken after a page at least: until the read is
			 * in, a view removes nothing (decision 61) */
			ag.etcd_read = true;
			apply_policy(&ag, "etcd");
			reresolve(&ag); /* new rules, new paths to watch */
		}
		/* A backend went out or came back: its service's table is laid
		 * out again by the same incremental apply. */
		if (running && (pfd[7].revents & POLLIN) &&
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
		dmsc_l7_served_check(&ag.l7_served, &ag.l7_sup, ag.l7, (uint64_t)dmsc_now_ms());
		ag.stats.l7_http_services = ag.l7_served.http_services;
		ag.stats.l7_unserved = ag.l7_served.unserved;
		ag.stats.l7_helper_up = ag.l7_served.helper_up;
		if (ag.tunnel)
			dmsc_l7_sup_poll(&ag.tunnel_sup, (uint64_t)dmsc_now_ms());
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
	/* The helpers serve on, until the next dmscd's take over (or the
	 * datapath goes, or --orphan-ms): connections the kernel hands them
	 * meanwhile are served, not refused (docs/design.md decision 80).
	 * What they hold (registration, cgroup, metrics file) stays with
	 * them; without one, it goes: http services fall back to L4
	 * balancing until the next dmscd starts one. */
	if (ag.l7) {
		if (!leave_helper(&ag.l7_sup, "dmsc-l7")) {
			helper_cgroup_remove(&ag.l7_sup, ag.l7_cgroup);
			dmsc_l7_unregister(ag.pin_dir);
			unlink(ag.l7_metrics);
		}
		free(ag.l7_view);
	}
	if (ag.tunnel) {
		if (!leave_helper(&ag.tunnel_sup, "dmsc-l7 tunnel")) {
			helper_cgroup_remove(&ag.tunnel_sup, ag.tunnel_cgroup);
			unlink(ag.tunnel_metrics);
		}
		free(ag.tunnel_view);
	}
	dmsc_health_watch_stop(&ag.health);
	if (ag.etcd)
		dmsc_etcd_sync_stop(ag.etcd);
	dmsc_mirror_free(&ag.mirror);
	dmsc_datapath_close(&ag.dp);
	if (ag.http_fd >= 0)
		close(ag.http_fd);
	dmsc_policy_watch_close(&ag.watch);
	dmsc_cgroup_watch_close(&ag.cg_watch);
	if (ag.signal_fd >= 0)
		close(ag.signal_fd);
	return rc;
}
