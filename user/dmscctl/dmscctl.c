// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl: check and apply policies, install the datapath, inspect it.
 * Every command prints text for people, or JSON with `-o json`.
 * Exit codes: 0 done, 1 failed (the reason is printed), 2 usage error.
 */
#include "ca_ctl.h"
#include "ctl_cmds.h"

static const char usage_text[] =
	"usage: dmscctl [options] COMMAND [ARGS]\n"
	"\n"
	"commands:\n"
	"  check FILE               validate a policy (no privileges needed)\n"
	"  apply FILE               validate, compile and write only what changed\n"
	"  diff FILE                show what apply would change (same as apply --dry-run)\n"
	"  show services            VIPs, backends, weights and the slot share each got\n"
	"  show access              allow_from rules and the cgroups they resolved to\n"
	"  stats                    connections and fail-open reasons per service and backend\n"
	"  install --cgroup PATH    load, attach to the cgroup and pin the datapath\n"
	"  uninstall                detach and remove every pin\n"
	"  status                   what is installed, where, how full, and what the\n"
	"                           kernel offers (features)\n"
	"  features                 probe the kernel's hooks and helpers that dmsc needs\n"
	"  verifier                 load every program (nothing attached) and print the\n"
	"                           verifier's figures: instructions processed, states\n"
	"  publish FILE|DIR --etcd URL --namespace NS   write a policy's services to\n"
	"                           etcd, only what changed (`dmscctl publish -h`)\n"
	"  get [NAME] / watch       read back a namespace from etcd\n"
	"  ca init|issue|show       the mesh CA and the hosts' certificates for mutual\n"
	"                           TLS between hosts (`dmscctl ca -h`)\n"
	"\n"
	"options:\n"
	"  -o, --output text|json   output format (default text)\n"
	"      --dry-run            apply: plan and print, write nothing\n"
	"      --cgroup PATH        install: cgroup v2 path, absolute or relative to the\n"
	"                           cgroup2 mount; its processes and their children are\n"
	"                           in the mesh\n"
	"      --max-services N     install: service capacity (default %u)\n"
	"      --max-backends N     install: backend capacity (default %u)\n"
	"      --interface IF       install: police traffic arriving on IF for local\n"
	"                           backends of byte-limited services (TC ingress;\n"
	"                           repeat for more, up to 8)\n"
	"      --fastpath-backlog BYTES|default  install: how far a same-host writer\n"
	"                           may run ahead of its reader on the fast path before\n"
	"                           it leaves it for TCP (K, M, G suffixes; 0: no bound;\n"
	"                           kept by later installs; default %u MiB, at most\n"
	"                           tcp_mem[1] / %d)\n"
	"      --pin-dir DIR        where the datapath is pinned (default $DMSC_PIN_DIR or\n"
	"                           %s)\n"
	"  -v, --verbose            also print debug messages (libbpf's too)\n"
	"  -h, --help               this text\n";

static void usage(FILE *f)
{
	fprintf(f, usage_text, DMSC_DEFAULT_MAX_SERVICES - 1, DMSC_DEFAULT_MAX_BACKENDS - 1,
		DMSC_FP_BACKLOG_MAX >> 20, DMSC_FP_BACKLOG_TCP_MEM_SHARE, DMSC_PIN_ROOT "/v" DMSC_LAYOUT_VERSION);
}

void print_json(struct json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
}

void json_add(struct json_object *o, const char *k, struct json_object *v)
{
	json_object_object_add(o, k, v);
}

/* The end of the `show` commands: {"services": ARR} for -o json when all
 * went well; releases ARR, returns rc. */
int print_services(const struct opts *o, int rc, struct json_object *arr)
{
	if (o->json && !rc) {
		struct json_object *top = json_object_new_object();

		json_add(top, "services", json_object_get(arr));
		print_json(top);
		json_object_put(top);
	}
	json_object_put(arr);
	return rc;
}

/* The commands without arguments. */
static const struct {
	const char *name;
	int (*run)(const struct opts *o);
} no_arg_cmds[] = {
	{ "stats", cmd_stats },   { "install", cmd_install },   { "uninstall", cmd_uninstall },
	{ "status", cmd_status }, { "features", cmd_features }, { "verifier", cmd_verifier },
};

int main(int argc, char **argv)
{
	enum { OPT_DRY_RUN = 256 };
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		DMSC_INSTALL_LONGOPTS,
		DMSC_LONGOPTS_END,
	};
	struct opts o = { 0 };
	const char *cmd;
	int c, rc;

	dmsc_log_init("dmscctl", DMSC_LOG_INFO);
	/* publish, get, watch: policy in etcd, with their own options */
	for (c = 1; c < argc && argv[c][0] == '-'; c++)
		if (!strcmp(argv[c], "-o") || !strcmp(argv[c], "--output"))
			c++;
	if (c < argc && dmsc_etcd_ctl_command(argv[c]))
		return dmsc_etcd_ctl_main(argc, argv);
	if (c < argc && dmsc_ca_ctl_command(argv[c]))
		return dmsc_ca_ctl_main(argc, argv);
	while ((c = getopt_long(argc, argv, "o:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (dmsc_parse_output(optarg, &o.json))
				return EXIT_USAGE;
			break;
		case OPT_DRY_RUN:
			o.dry_run = true;
			break;
		default:
			/* the install options (datapath.h), or -v, -h, a usage error */
			rc = dmsc_install_opt(&o.install, c, optarg);
			if (rc < 0)
				return EXIT_USAGE;
			if (!rc && (rc = dmsc_opt_common(c, "dmscctl", usage)) >= 0)
				return rc;
			break;
		}
	}
	o.pin_dir = o.install.pin_dir ? o.install.pin_dir : dmsc_pin_dir();
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[optind++];
	argc -= optind;
	argv += optind;

	if ((!strcmp(cmd, "check") || !strcmp(cmd, "apply") || !strcmp(cmd, "diff"))) {
		if (argc != 1) {
			pr_warn("%s takes one policy file (or - for standard input)\n", cmd);
			return EXIT_USAGE;
		}
		if (!strcmp(cmd, "check"))
			return cmd_check(argv[0], &o);
		if (!strcmp(cmd, "diff"))
			o.dry_run = true;
		return cmd_apply(argv[0], &o);
	}
	if (!strcmp(cmd, "show")) {
		if (argc == 1 && !strcmp(argv[0], "services"))
			return cmd_show_services(&o);
		if (argc == 1 && !strcmp(argv[0], "access"))
			return cmd_show_access(&o);
		pr_warn("show takes one of: services, access\n");
		return EXIT_USAGE;
	}
	if (argc != 0) {
		pr_warn("%s takes no arguments, got \"%s\"\n", cmd, argv[0]);
		return EXIT_USAGE;
	}
	for (c = 0; c < (int)(sizeof(no_arg_cmds) / sizeof(no_arg_cmds[0])); c++)
		if (!strcmp(cmd, no_arg_cmds[c].name))
			return no_arg_cmds[c].run(&o);
	pr_warn("unknown command \"%s\"; `dmscctl --help` lists them\n", cmd);
	return EXIT_USAGE;
}
