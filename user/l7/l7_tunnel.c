// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * `dmsc-l7 tunnel`: runs the mutual TLS tunnel between hosts
 * (user/mtls/tunnel.c, tunnel_*.c) until SIGTERM or SIGINT.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baton.h"
#include "l7_tunnel.h"
#include "log.h"
#include "parse.h"
#include "policy.h"
#include "tunnel.h"

static const char usage_text[] =
    "usage: dmsc-l7 tunnel --mtls-dir HOSTDIR [--listen ADDR:PORT] [--forward SPEC]...\n"
    "                      [--metrics-file FILE] [--ready-fd FD] [-v]\n"
    "  --mtls-dir HOSTDIR  ca.crt, host.crt, host.key (dmscctl ca issue); watched:\n"
    "                      new files are used by new connections\n"
    "  --listen ADDR:PORT  where other hosts' helpers connect (mutual TLS 1.3;\n"
    "                      default port 15008; IPv6: [ADDR]:PORT)\n"
    "  --forward LADDR:LPORT=PEER:PPORT,DEST:DPORT,IDENTITY\n"
    "                      local connections to LADDR:LPORT go as streams to the\n"
    "                      helper at PEER:PPORT, which connects to DEST:DPORT (an\n"
    "                      address of its host); this host vouches for IDENTITY\n"
    "                      (repeat, up to 16)\n"
    "  --policy FILE       this host's policy: a stream is refused unless its\n"
    "                      destination is a backend of a service whose allow_from\n"
    "                      covers the identity the source host vouched for\n"
    "  --handoff-listen ADDR:PORT\n"
    "                      take the connections connect4 hands over (IPv4), and\n"
    "                      connect6's on [::1] on the same port (a backend on\n"
    "                      another host, mtls required or permissive); registered\n"
    "                      in the datapath; each goes to the host the policy\n"
    "                      places its backend on, vouching for the caller's cgroup\n"
    "                      (needs --policy)\n"
    "  --pin-dir DIR       the datapath's pins (default /sys/fs/bpf/dmsc/v1)\n"
    "  --metrics-file FILE Prometheus text, rewritten every second\n"
    "  --peer-idle-ms N    close a connection to a peer without streams after N ms;\n"
    "                      the next one resumes the TLS session (default 60000,\n"
    "                      0: never)\n"
    "  --ready-fd FD       write \"ready\\n\" to FD once listening\n"
    "  --policy-updates FD a unix socket on which dmscd sends each new policy (a\n"
    "                      memfd): taken in place, the open streams kept\n"
    "  --baton             dmscd's tunnel: the tunnel of the dmscd before, if it\n"
    "                      serves still, drains once this one is ready\n"
    "  --orphan-ms N       its dmscd gone (SIGUSR2, or the end of --policy-updates):\n"
    "                      serve on until the next dmscd adopts it or its tunnel\n"
    "                      takes over, the datapath is uninstalled, or N ms pass\n"
    "                      (default 60000), then drain\n"
    "  --drain-ms N        SIGTERM: no new streams; the open ones get N ms to\n"
    "                      finish (default 10000)\n"
    "Exit: 0 stopped by a signal, 1 failed, 2 usage.\n";

static void usage(FILE *f)
{
	fputs(usage_text, f);
}

static volatile sig_atomic_t stop, orphaned;

static void on_signal(int sig)
{
	if (sig == DMSC_HELPER_ORPHAN_SIGNAL)
		orphaned = 1;
	else
		stop = 1;
}

bool dmsc_l7_tunnel_command(int argc, char **argv)
{
	return argc > 1 && !strcmp(argv[1], "tunnel");
}

int dmsc_l7_tunnel_main(int argc, char **argv)
{
	enum { O_LISTEN = 256, O_FWD, O_READY, O_HANDOFF, O_UPDATES };
	static const struct option own[] = {
	    {"listen", required_argument, NULL, O_LISTEN},
	    {"forward", required_argument, NULL, O_FWD},
	    {"ready-fd", required_argument, NULL, O_READY},
	    {"handoff-listen", required_argument, NULL, O_HANDOFF},
	    {"policy-updates", required_argument, NULL, O_UPDATES},
	    DMSC_LONGOPTS_END,
	};
	struct dmsc_tunnel_opts o = {.ready_fd = -1,
				     .updates_fd = -1,
				     .peer_idle_ms = DMSC_TUNNEL_PEER_IDLE_MS_DEFAULT,
				     .drain_ms = DMSC_TUNNEL_DRAIN_MS_DEFAULT,
				     .orphaned = &orphaned,
				     .orphan_ms = DMSC_HELPER_ORPHAN_MS_DEFAULT};
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy policy = {0};
	const char *policy_file = NULL;
	const struct dmsc_opt stored[] = {
	    DMSC_OPT_STR("mtls-dir", &o.mtls_dir),
	    DMSC_OPT_STR("metrics-file", &o.metrics_file),
	    DMSC_OPT_STR("policy", &policy_file),
	    DMSC_OPT_STR("pin-dir", &o.pin_dir),
	    /* up to a day */
	    DMSC_OPT_NUM("peer-idle-ms", &o.peer_idle_ms, 0, 86400000),
	    DMSC_OPT_NUM("orphan-ms", &o.orphan_ms, 0, 86400000),
	    DMSC_OPT_NUM("drain-ms", &o.drain_ms, 0, 86400000),
	    DMSC_OPT_FLAG("baton", &o.baton),
	    DMSC_OPT_END,
	};
	struct option longopts[DMSC_OPT_ROWS(stored, own)];
	__u32 fd;
	size_t i;
	int rc;
	struct sigaction sa = {.sa_handler = on_signal};
	sigset_t unblock;
	char why[256];
	int opt;

	dmsc_log_init("dmsc-l7 tunnel", DMSC_LOG_INFO);
	dmsc_opt_rows(stored, own, longopts);
	optind = 2;
	while ((opt = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (opt) {
		case O_LISTEN:
			if (dmsc_tunnel_addr_parse(optarg, &o.listen)) {
				pr_warn(
				    "--listen: \"%s\" is not an ADDR:PORT (IPv6: [ADDR]:PORT)\n",
				    optarg);
				return 2;
			}
			break;
		case O_FWD:
			if (o.n_fwd == DMSC_TUNNEL_FWD_MAX) {
				pr_warn("--forward: at most %d\n", DMSC_TUNNEL_FWD_MAX);
				return 2;
			}
			if (dmsc_tunnel_forward_parse(optarg, &o.fwd[o.n_fwd], why, sizeof(why))) {
				pr_warn("--forward: %s\n", why);
				return 2;
			}
			o.n_fwd++;
			break;
		case O_HANDOFF:
			if (dmsc_tunnel_addr_parse(optarg, &o.handoff_listen) ||
			    o.handoff_listen.sa.sa_family != AF_INET) {
				pr_warn("--handoff-listen: \"%s\" is not an IPv4 ADDR:PORT\n",
					optarg);
				return 2;
			}
			break;
		case O_READY:
			if (dmsc_parse_u32("--ready-fd", optarg, 0, INT_MAX, &fd))
				return 2;
			o.ready_fd = (int)fd;
			break;
		case O_UPDATES:
			if (dmsc_parse_u32("--policy-updates", optarg, 0, INT_MAX, &fd))
				return 2;
			o.updates_fd = (int)fd;
			break;
		default:
			rc = dmsc_opt_other(stored, opt, optarg, "dmsc-l7 tunnel", usage);
			if (rc >= 0)
				return rc;
			break;
		}
	}
	if (optind != argc || !o.mtls_dir ||
	    (!dmsc_tunnel_sa_port(&o.listen) && !o.n_fwd &&
	     !dmsc_tunnel_sa_port(&o.handoff_listen))) {
		pr_warn("tunnel needs --mtls-dir and --listen, --forward or --handoff-listen\n");
		usage(stderr);
		return 2;
	}
	if (dmsc_tunnel_sa_port(&o.handoff_listen) && !policy_file) {
		pr_warn("--handoff-listen needs --policy: it says which host each backend is on\n");
		return 2;
	}
	if (policy_file) {
		if (dmsc_policy_load_file(policy_file, &policy, &errs)) {
			for (i = 0; i < errs.count; i++)
				pr_warn("%s: %s: %s\n", policy_file, errs.items[i].path,
					errs.items[i].message);
			if (!errs.count)
				pr_warn("%s: cannot read it\n", policy_file);
			dmsc_policy_errors_free(&errs);
			return 1;
		}
		o.policy = &policy;
	}
	/* dmscd starts it with the signals it takes through a signalfd
	 * blocked: a blocked SIGTERM would never start the drain */
	sigemptyset(&unblock);
	sigprocmask(SIG_SETMASK, &unblock, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(DMSC_HELPER_ORPHAN_SIGNAL, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	rc = dmsc_tunnel_run(&o, &stop) ? 1 : 0;
	dmsc_policy_free(&policy);
	return rc;
}
