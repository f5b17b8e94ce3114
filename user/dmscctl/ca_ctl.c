// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl ca init / issue / show: the mesh CA and the hosts' certificates
 * (docs/mtls.md). No privileges needed; the files' modes protect the keys.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ca_ctl.h"
#include "log.h"
#include "mtls_cert.h"
#include "parse.h"

#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: dmscctl ca init DIR --trust-domain TD [--days N | --hours N]\n"
    "       dmscctl ca issue DIR --host NAME --out HOSTDIR [--days N | --hours N]\n"
    "       dmscctl ca show DIR|FILE\n"
    "\n"
    "  init    a new mesh CA in DIR: ca.key (0600) and ca.crt, ECDSA P-256,\n"
    "          identity spiffe://TD (default validity 365 days)\n"
    "  issue   a certificate for host NAME from the CA in DIR, with a new key:\n"
    "          HOSTDIR gets ca.crt, host.crt (spiffe://TD/host/NAME) and host.key\n"
    "          (0600) (default validity 24 hours, never past the CA's end)\n"
    "  show    describe a certificate; a directory's host.crt is verified against\n"
    "          its ca.crt (exit 1 when it is not valid), a CA directory's ca.crt\n"
    "          is described\n"
    "\n"
    "  --trust-domain TD   init: the mesh's trust domain (a-z 0-9 . - _)\n"
    "  --host NAME         issue: the host's name (a DNS name, lowercase)\n"
    "  --out HOSTDIR       issue: where the host's files go (made 0700)\n"
    "  --days N, --hours N validity\n"
    "  -o, --output text|json\n";

static void usage(FILE *f)
{
	fputs(usage_text, f);
}

bool dmsc_ca_ctl_command(const char *cmd)
{
	return !strcmp(cmd, "ca");
}

static void print_json(struct json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
}

static void iso_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static struct json_object *info_json(const struct dmsc_mtls_cert_info *i, const char *file)
{
	struct json_object *o = json_object_new_object();
	char nb[32], na[32];

	iso_time(i->not_before, nb, sizeof(nb));
	iso_time(i->not_after, na, sizeof(na));
	json_object_object_add(o, "file", json_object_new_string(file));
	json_object_object_add(o, "id", json_object_new_string(i->id));
	json_object_object_add(o, "trust_domain", json_object_new_string(i->trust_domain));
	if (i->host[0])
		json_object_object_add(o, "host", json_object_new_string(i->host));
	json_object_object_add(o, "ca", json_object_new_boolean(i->is_ca));
	json_object_object_add(o, "subject", json_object_new_string(i->subject));
	json_object_object_add(o, "issuer", json_object_new_string(i->issuer));
	json_object_object_add(o, "serial", json_object_new_string(i->serial));
	json_object_object_add(o, "sha256", json_object_new_string(i->sha256));
	json_object_object_add(o, "not_before", json_object_new_string(nb));
	json_object_object_add(o, "not_after", json_object_new_string(na));
	return o;
}

static void info_text(const struct dmsc_mtls_cert_info *i, const char *file)
{
	char nb[32], na[32];

	iso_time(i->not_before, nb, sizeof(nb));
	iso_time(i->not_after, na, sizeof(na));
	printf("%s: %s%s\n  valid %s to %s\n  serial %s\n  sha256 %s\n", file, i->id,
	       i->is_ca ? " (CA)" : "", nb, na, i->serial, i->sha256);
}

/* --days N / --hours N into seconds; 0 or -EINVAL (message printed). */
static int parse_validity(const char *flag, const char *arg, long unit, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || *end || end == arg || v < 1 || v > DMSC_MTLS_MAX_SECONDS / unit) {
		pr_warn("%s: \"%s\" is not a count from 1 to %ld\n", flag, arg,
			DMSC_MTLS_MAX_SECONDS / unit);
		return -EINVAL;
	}
	*out = v * unit;
	return 0;
}

static int cmd_show(const char *arg, bool json)
{
	char cert[PATH_MAX], ca[PATH_MAX], why[DMSC_MTLS_WHY_MAX];
	struct dmsc_mtls_cert_info info;
	struct stat st;
	X509 *x = NULL;
	int err;

	if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(cert, sizeof(cert), "%s/" DMSC_MTLS_HOST_CERT, arg);
		snprintf(ca, sizeof(ca), "%s/" DMSC_MTLS_CA_CERT, arg);
		if (access(cert, F_OK) == 0) {
			err = dmsc_mtls_verify_file(cert, ca, 0, &info, why, sizeof(why));
			goto print;
		}
		snprintf(cert, sizeof(cert), "%s", ca);
	} else {
		snprintf(cert, sizeof(cert), "%s", arg);
	}
	err = dmsc_mtls_read_cert(cert, &x, why, sizeof(why));
	if (!err)
		err = dmsc_mtls_cert_describe(x, &info, why, sizeof(why));
	X509_free(x);
print:
	if (err) {
		if (json) {
			struct json_object *o = json_object_new_object();

			json_object_object_add(o, "file", json_object_new_string(cert));
			json_object_object_add(o, "valid", json_object_new_boolean(false));
			json_object_object_add(o, "error", json_object_new_string(why));
			print_json(o);
			json_object_put(o);
		}
		pr_warn("%s\n", why);
		return 1;
	}
	if (json) {
		struct json_object *o = info_json(&info, cert);

		json_object_object_add(o, "valid", json_object_new_boolean(true));
		print_json(o);
		json_object_put(o);
	} else {
		info_text(&info, cert);
	}
	return 0;
}

int dmsc_ca_ctl_main(int argc, char **argv)
{
	enum { O_DAYS = 256, O_HOURS };
	static const struct option own[] = {
	    {"days", required_argument, NULL, O_DAYS},
	    {"hours", required_argument, NULL, O_HOURS},
	    {"output", required_argument, NULL, 'o'},
	    DMSC_LONGOPTS_END,
	};
	const char *sub = NULL, *dir = NULL, *td = NULL, *host = NULL, *out = NULL;
	const struct dmsc_opt stored[] = {
	    DMSC_OPT_STR("trust-domain", &td),
	    DMSC_OPT_STR("host", &host),
	    DMSC_OPT_STR("out", &out),
	    DMSC_OPT_END,
	};
	struct option longopts[DMSC_OPT_ROWS(stored, own)];
	char why[DMSC_MTLS_WHY_MAX];
	struct dmsc_mtls_cert_info info;
	bool json = false, seen_ca = false;
	long seconds = 0;
	int opt, err, rc;

	dmsc_opt_rows(stored, own, longopts);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "-o:vh", longopts, NULL)) != -1) {
		switch (opt) {
		case 1: /* operands in order: "ca", the subcommand, DIR */
			if (!seen_ca && !strcmp(optarg, "ca"))
				seen_ca = true;
			else if (!sub)
				sub = optarg;
			else if (!dir)
				dir = optarg;
			else {
				pr_warn("ca %s: unexpected argument \"%s\"\n", sub, optarg);
				return EXIT_USAGE;
			}
			break;
		case O_DAYS:
		case O_HOURS:
			if (seconds) {
				pr_warn("give one of --days and --hours, once\n");
				return EXIT_USAGE;
			}
			if (parse_validity(opt == O_DAYS ? "--days" : "--hours", optarg,
					   opt == O_DAYS ? 86400 : 3600, &seconds))
				return EXIT_USAGE;
			break;
		case 'o':
			if (dmsc_parse_output(optarg, &json))
				return EXIT_USAGE;
			break;
		default:
			if ((rc = dmsc_opt_other(stored, opt, optarg, "dmscctl", usage)) >= 0)
				return rc;
			break;
		}
	}
	if (!sub || !dir) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(sub, "show")) {
		if (td || host || out || seconds) {
			pr_warn("ca show takes no options but -o\n");
			return EXIT_USAGE;
		}
		return cmd_show(dir, json);
	}
	if (!strcmp(sub, "init")) {
		if (!td || host || out) {
			pr_warn("ca init DIR needs --trust-domain TD (and no --host, --out)\n");
			return EXIT_USAGE;
		}
		err = dmsc_mtls_ca_init(dir, td, seconds ? seconds : DMSC_MTLS_CA_DEFAULT_SECONDS,
					why, sizeof(why));
		if (err) {
			pr_warn("ca init %s: %s\n", dir, why);
			return 1;
		}
		return cmd_show(dir, json);
	}
	if (!strcmp(sub, "issue")) {
		if (!host || !out || td) {
			pr_warn(
			    "ca issue DIR needs --host NAME and --out HOSTDIR (the trust domain "
			    "is the CA's)\n");
			return EXIT_USAGE;
		}
		err = dmsc_mtls_issue(dir, host, out,
				      seconds ? seconds : DMSC_MTLS_HOST_DEFAULT_SECONDS, &info,
				      why, sizeof(why));
		if (err) {
			pr_warn("ca issue %s: %s\n", dir, why);
			return 1;
		}
		return cmd_show(out, json);
	}
	pr_warn("ca: unknown subcommand \"%s\" (init, issue, show)\n", sub);
	return EXIT_USAGE;
}
