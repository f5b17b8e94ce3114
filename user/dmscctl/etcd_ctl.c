// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscctl publish / get / watch: policy in etcd (see etcd_store.h for the
 * key layout). publish validates the whole policy first, then writes only
 * the services that differ from what etcd holds and deletes the removed
 * ones, in one transaction guarded by the revision it read. get and watch
 * read it back: etcd_read_ctl.c.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "addr.h"
#include "clock.h"
#include "policy_set.h"
#include "etcd.h"
#include "etcd_ctl.h"
#include "etcd_ctl_int.h"
#include "etcd_opts.h"
#include "etcd_store.h"
#include "log.h"
#include "parse.h"
#include "apply_mirror.h"

#define EXIT_USAGE 2


static const char usage_text[] =
    "usage: dmscctl publish FILE|DIR --etcd URL[,URL...] --namespace NS [--prefix P] [--dry-run]\n"
    "       dmscctl get [NAME] --etcd URL[,URL...] --namespace NS [--prefix P]\n"
    "       dmscctl watch --etcd URL[,URL...] --namespace NS [--prefix P] [--revision R]\n"
    "                     [--count N] [--timeout S]\n"
    "\n"
    "  --etcd URL[,URL...]  etcd endpoints (http:// or https://), tried in turn\n"
    "  --namespace NS       the namespace: keys PREFIX/ns/NS/services/NAME\n"
    "  --prefix P           key prefix (default " DMSC_ETCD_DEFAULT_PREFIX ")\n"
    "  --dry-run            publish: print the plan, write nothing\n"
    "  --expect-revision R  publish: only if nothing in the namespace changed after\n"
    "                       revision R (the one a reviewed --dry-run printed)\n"
    "  --revision R         watch: from revision R (default: from now)\n"
    "  --count N            watch: exit after N events\n"
    "  --timeout S          watch: exit after S seconds; publish, get: wait S seconds\n"
    "                       for each answer of etcd (default 5)\n"
    "  --etcd-cacert FILE, --etcd-cert FILE, --etcd-key FILE  TLS to etcd\n"
    "  -o, --output text|json\n";

static void usage(FILE *f)
{
	fputs(usage_text, f);
}

/* The JSON text of each service as its file has it, by name. */
static int service_texts(const struct dmsc_policy_set *set, char **texts)
{
	size_t f, i, j;

	for (f = 0; f < set->n_files; f++) {
		struct json_object *doc = json_object_from_file(set->files[f]), *arr;

		if (!doc || !json_object_object_get_ex(doc, "services", &arr)) {
			pr_warn("%s: cannot read it again: %s\n", set->files[f],
				json_util_get_last_err());
			json_object_put(doc);
			return -EIO;
		}
		for (j = 0; j < json_object_array_length(arr); j++) {
			struct json_object *s = json_object_array_get_idx(arr, j), *n;

			if (!json_object_object_get_ex(s, "name", &n))
				continue;
			for (i = 0; i < set->policy.n_services; i++) {
				if (set->svc_file[i] != f || texts[i] ||
				    strcmp(set->policy.services[i].name, json_object_get_string(n)))
					continue;
				/* the document's default "mtls" goes into each
				 * service it applies to: a key holds one service */
				if (!json_object_object_get_ex(s, "mtls", NULL) &&
				    set->policy.services[i].mtls != DMSC_MTLS_OFF)
					json_object_object_add(
					    s, "mtls",
					    json_object_new_string(
						dmsc_mtls_mode_name(set->policy.services[i].mtls)));
				texts[i] = strdup(json_object_to_json_string_ext(
				    s, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
				break;
			}
		}
		json_object_put(doc);
	}
	for (i = 0; i < set->policy.n_services; i++)
		if (!texts[i])
			return -ENOMEM;
	return 0;
}

/* Whether the value etcd holds is the same service (every field). */
static bool same_service(const struct dmsc_etcd_kv *kv, const char *name,
			 const struct dmsc_policy_service *want)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p;
	bool same = false;

	if (!dmsc_etcd_parse_service(kv->value, kv->value_len, name, &p, &errs)) {
		same = dmsc_policy_service_fp(&p.services[0]) == dmsc_policy_service_fp(want);
		dmsc_policy_free(&p);
	}
	dmsc_policy_errors_free(&errs);
	return same;
}

/* The hosts the policy's backends name, with their tunnel addresses
 * ("IPv4:PORT", "[IPv6]:PORT"), into a JSON object; a name with two
 * addresses (two files of a directory) is an error. */
static int policy_hosts(const struct dmsc_policy *p, const char *path, struct json_object *out)
{
	char ap[DMSC_ADDR_PORT_LEN];
	struct json_object *have;
	size_t i, j;

	for (i = 0; i < p->n_services; i++)
		for (j = 0; j < p->services[i].n_backends; j++) {
			const struct dmsc_policy_backend *b = &p->services[i].backends[j];

			if (!b->host)
				continue;
			dmsc_host_addr_format(&b->host_at, ap, sizeof(ap));
			if (json_object_object_get_ex(out, b->host, &have)) {
				if (strcmp(json_object_get_string(have), ap)) {
					fprintf(stderr,
						"%s: host \"%s\" is %s in one file's \"hosts\" and "
						"%s in another's: nothing was published\n",
						path, b->host, json_object_get_string(have), ap);
					return -EINVAL;
				}
				continue;
			}
			json_object_object_add(out, b->host, json_object_new_string(ap));
		}
	return 0;
}

/* Adds to set the hosts that a service value's backends name ("host"),
 * read as JSON only: a value that does not parse names none. */
static void value_hosts(const struct dmsc_etcd_kv *kv, struct json_object *set)
{
	struct json_object *v = json_tokener_parse(kv->value), *arr, *h;
	size_t i;

	if (v && json_object_object_get_ex(v, "backends", &arr) &&
	    json_object_is_type(arr, json_type_array))
		for (i = 0; i < json_object_array_length(arr); i++)
			if (json_object_object_get_ex(json_object_array_get_idx(arr, i), "host",
						      &h) &&
			    json_object_is_type(h, json_type_string))
				json_object_object_add(set, json_object_get_string(h), NULL);
	json_object_put(v);
}

/* The host keys this publish would leave named by no service (docs/design.md
 * decision 63): hosts the namespace's services name in etcd now (kvs) and
 * the policy does not (hosts), less those a service of another namespace
 * names, read at the same revision. *all_read: the other namespaces were
 * read (the transaction must then guard them). */
static int stale_hosts(struct dmsc_etcd *etcd, const char *prefix, const char *nsp,
		       const struct dmsc_etcd_kvs *kvs, int64_t rev, struct json_object *hosts,
		       struct json_object *stale, bool *all_read)
{
	struct dmsc_etcd_kvs all = {0};
	char *allp = NULL;
	size_t i;
	int e = 0;

	for (i = 0; i < kvs->n; i++)
		value_hosts(&kvs->kv[i], stale);
	json_object_object_foreach(hosts, hname, hval)
	{
		(void)hval;
		json_object_object_del(stale, hname);
	}
	if (!json_object_object_length(stale))
		return 0;
	if (asprintf(&allp, "%s/ns/", prefix) < 0)
		return -ENOMEM;
	e = dmsc_etcd_range_prefix(etcd, allp, rev, &all);
	if (e) {
		fprintf(stderr, "cannot read %s from etcd: %s\n", allp, etcd->err);
		goto out;
	}
	*all_read = true;
	for (i = 0; i < all.n; i++) {
		struct json_object *named = json_object_new_object();

		if (!named) {
			e = -ENOMEM;
			goto out;
		}
		if (strncmp(all.kv[i].key, nsp, strlen(nsp)))
			value_hosts(&all.kv[i], named);
		json_object_object_foreach(named, nname, nval)
		{
			(void)nval;
			json_object_object_del(stale, nname);
		}
		json_object_put(named);
	}
out:
	dmsc_etcd_kvs_free(&all);
	free(allp);
	return e;
}

static void add_change(struct json_object *changes, const char *op, const char *what,
		       const char *name, const char *key)
{
	struct json_object *ch = json_object_new_object();

	json_object_object_add(ch, "op", json_object_new_string(op));
	json_object_object_add(ch, what, json_object_new_string(name));
	json_object_object_add(ch, "key", json_object_new_string(key));
	json_object_array_add(changes, ch);
}

static int cmd_publish(struct ctl *c, const char *path)
{
	struct dmsc_policy_set set = {0};
	struct dmsc_msgs msgs = {0};
	struct dmsc_etcd_kvs kvs = {0}, hkvs = {0};
	struct json_object *hosts = json_object_new_object(), *stale = json_object_new_object();
	char **hkeys = NULL, *hp = NULL, *allp = NULL, *allend = NULL;
	bool all_read = false, stale_deleted = false;
	size_t n_hkeys = 0;
	struct dmsc_etcd etcd;
	struct dmsc_etcd_op *ops = NULL;
	struct dmsc_etcd_cmp *cmps = NULL;
	struct json_object *changes = json_object_new_array();
	char **texts = NULL, **keys = NULL, *nsp = NULL, *nsend = NULL;
	bool *kept = NULL, ok = false;
	size_t i, j, n_ops = 0, n_cmps = 0, n_keys = 0;
	double txn_at[2] = {0, 0};
	int64_t rev = 0;
	int rc = 1, e;

	e = dmsc_policy_set_load(path, &set, &msgs);
	if (e) {
		for (i = 0; i < msgs.n; i++)
			fprintf(stderr, "%s\n", msgs.lines[i]);
		if (!msgs.n)
			fprintf(stderr, "%s: %s\n", path, strerror(-e));
		fprintf(stderr, "%s: not valid; nothing was published\n", path);
		goto out;
	}
	if (dmsc_etcd_init(&etcd, c->etcd, &c->tls)) {
		fprintf(stderr, "%s\n", etcd.err);
		goto out;
	}
	if (c->timeout_s)
		etcd.timeout_ms = (c->timeout_s > 86400 ? 86400 : c->timeout_s) * 1000;
	if (!hosts || policy_hosts(&set.policy, path, hosts))
		goto out_etcd;
	texts = calloc(set.policy.n_services + 1, sizeof(*texts));
	keys = calloc(set.policy.n_services + 1, sizeof(*keys));
	hkeys = calloc((size_t)json_object_object_length(hosts) + 1, sizeof(*hkeys));
	hp = dmsc_etcd_hosts_prefix(c->prefix);
	if (!hkeys || !hp)
		goto out_etcd;
	nsp = dmsc_etcd_ns_prefix(c->prefix, c->ns);
	nsend = nsp ? dmsc_etcd_prefix_end(nsp) : NULL;
	if (!texts || !keys || !nsend || service_texts(&set, texts))
		goto out_etcd;
	for (i = 0; i < set.policy.n_services; i++) {
		if (strlen(texts[i]) > DMSC_ETCD_VALUE_MAX) {
			fprintf(stderr, "%s: service \"%s\" is %zu bytes as JSON, more than %u\n",
				path, set.policy.services[i].name, strlen(texts[i]),
				DMSC_ETCD_VALUE_MAX);
			goto out_etcd;
		}
	}
	e = dmsc_etcd_range_prefix(&etcd, nsp, 0, &kvs);
	if (e) {
		fprintf(stderr, "cannot read %s from etcd: %s\n", nsp, etcd.err);
		goto out_etcd;
	}
	/* the hosts this policy names and those it would leave unnamed, read
	 * at the same revision */
	rev = kvs.revision;
	if (!stale || stale_hosts(&etcd, c->prefix, nsp, &kvs, rev, hosts, stale, &all_read))
		goto out_etcd;
	if ((json_object_object_length(hosts) || json_object_object_length(stale)) &&
	    dmsc_etcd_range_prefix(&etcd, hp, rev, &hkvs)) {
		fprintf(stderr, "cannot read %s from etcd: %s\n", hp, etcd.err);
		goto out_etcd;
	}
	/* the guard's revision: the one read, or an older one the caller saw */
	if (c->revision && c->revision < kvs.revision)
		kvs.revision = c->revision;
	kept = calloc(kvs.n + 1, sizeof(*kept));
	ops = calloc(set.policy.n_services + kvs.n + (size_t)json_object_object_length(hosts) +
			 hkvs.n + 1,
		     sizeof(*ops));
	cmps = calloc(set.policy.n_services + kvs.n + (size_t)json_object_object_length(hosts) +
			  hkvs.n + 3,
		      sizeof(*cmps));
	if (!kept || !ops || !cmps)
		goto out_etcd;
	/* Nothing in the namespace changed after the revision read ... */
	cmps[n_cmps++] = (struct dmsc_etcd_cmp){nsp, nsend, DMSC_ETCD_LESS, kvs.revision + 1};
	for (i = 0; i < set.policy.n_services; i++) {
		const struct dmsc_policy_service *s = &set.policy.services[i];
		const struct dmsc_etcd_kv *have = NULL;
		const char *op = "create";

		keys[n_keys] = dmsc_etcd_service_key(c->prefix, c->ns, s->name);
		if (!keys[n_keys])
			goto out_etcd;
		for (j = 0; j < kvs.n; j++) {
			if (!strcmp(kvs.kv[j].key, keys[n_keys])) {
				have = &kvs.kv[j];
				kept[j] = true;
			}
		}
		n_keys++;
		if (have && same_service(have, s->name, s))
			continue;
		if (have)
			op = "update";
		/* ... and each key written is as it was read (0: absent). */
		cmps[n_cmps++] = (struct dmsc_etcd_cmp){keys[n_keys - 1], NULL, DMSC_ETCD_EQUAL,
							have ? have->mod_rev : 0};
		ops[n_ops++] = (struct dmsc_etcd_op){DMSC_ETCD_PUT, keys[n_keys - 1], texts[i]};
		add_change(changes, op, "service", s->name, keys[n_keys - 1]);
	}
	for (j = 0; j < kvs.n; j++) {
		const char *name;

		if (kept[j])
			continue;
		name = dmsc_etcd_key_name(kvs.kv[j].key, nsp);
		cmps[n_cmps++] =
		    (struct dmsc_etcd_cmp){kvs.kv[j].key, NULL, DMSC_ETCD_EQUAL, kvs.kv[j].mod_rev};
		ops[n_ops++] = (struct dmsc_etcd_op){DMSC_ETCD_DELETE, kvs.kv[j].key, NULL};
		add_change(changes, "delete", "service", name ? name : "", kvs.kv[j].key);
	}
	/* The hosts' tunnel addresses (docs/design.md decisions 55, 63):
	 * written where etcd has none or another, each guarded as read even
	 * when unchanged (a concurrent publish elsewhere may delete it). */
	json_object_object_foreach(hosts, hname, hval)
	{
		const struct dmsc_etcd_kv *have = NULL;
		const char *want = json_object_get_string(hval);

		hkeys[n_hkeys] = dmsc_etcd_host_key(c->prefix, hname);
		if (!hkeys[n_hkeys])
			goto out_etcd;
		for (j = 0; j < hkvs.n; j++)
			if (!strcmp(hkvs.kv[j].key, hkeys[n_hkeys]))
				have = &hkvs.kv[j];
		n_hkeys++;
		cmps[n_cmps++] = (struct dmsc_etcd_cmp){hkeys[n_hkeys - 1], NULL, DMSC_ETCD_EQUAL,
							have ? have->mod_rev : 0};
		if (have && have->value_len == strlen(want) &&
		    !memcmp(have->value, want, have->value_len))
			continue;
		ops[n_ops++] = (struct dmsc_etcd_op){DMSC_ETCD_PUT, hkeys[n_hkeys - 1], want};
		add_change(changes, have ? "update" : "create", "host", hname, hkeys[n_hkeys - 1]);
	}
	/* The keys of hosts no service names any more, with every namespace
	 * guarded as read: a service naming one may not appear meanwhile. */
	for (j = 0; j < hkvs.n; j++) {
		const char *name = dmsc_etcd_key_name(hkvs.kv[j].key, hp);

		if (!name || !json_object_object_get_ex(stale, name, NULL))
			continue;
		cmps[n_cmps++] =
		    (struct dmsc_etcd_cmp){hkvs.kv[j].key, NULL, DMSC_ETCD_EQUAL, hkvs.kv[j].mod_rev};
		ops[n_ops++] = (struct dmsc_etcd_op){DMSC_ETCD_DELETE, hkvs.kv[j].key, NULL};
		add_change(changes, "delete", "host", name, hkvs.kv[j].key);
		stale_deleted = true;
	}
	if (stale_deleted && all_read) {
		if (asprintf(&allp, "%s/ns/", c->prefix) < 0 || !(allend = dmsc_etcd_prefix_end(allp)))
			goto out_etcd;
		cmps[n_cmps++] = (struct dmsc_etcd_cmp){allp, allend, DMSC_ETCD_LESS, kvs.revision + 1};
	}
	if (!c->dry_run && n_ops) {
		bool succeeded;

		txn_at[0] = dmsc_clock_seconds(CLOCK_REALTIME);
		e = dmsc_etcd_txn(&etcd, cmps, n_cmps, ops, n_ops, &succeeded, &rev);
		txn_at[1] = dmsc_clock_seconds(CLOCK_REALTIME);
		if (e) {
			fprintf(stderr,
				"namespace %s: the transaction failed: %s; nothing was "
				"published\n",
				c->ns, etcd.err);
			goto out_etcd;
		}
		if (!succeeded) {
			fprintf(stderr,
				"namespace %s%s changed in etcd after revision %" PRId64
				" (another publisher?): nothing was published; publish again\n",
				c->ns,
				allend ? ", another namespace or a host key"
				       : n_hkeys ? " or a host key it names" : "",
				kvs.revision);
			goto out_etcd;
		}
	}
	ok = true;
out_etcd:
	if (ok) {
		if (c->json) {
			struct json_object *top = json_object_new_object();

			json_object_object_add(top, "namespace", json_object_new_string(c->ns));
			json_object_object_add(top, "dry_run", json_object_new_boolean(c->dry_run));
			json_object_object_add(top, "revision", json_object_new_int64(rev));
			json_object_object_add(
			    top, "services", json_object_new_int64((int64_t)set.policy.n_services));
			json_object_object_add(top, "hosts", json_object_get(hosts));
			json_object_object_add(top, "changes", json_object_get(changes));
			/* when the transaction was sent and answered (wall clock):
			 * a publish's way to the hosts starts there, dmscctl's own
			 * start, validation and read apart (docs/bench.md) */
			json_object_object_add(top, "transaction_sent_at",
					       txn_at[0] ? json_object_new_double(txn_at[0])
							 : NULL);
			json_object_object_add(top, "transaction_answered_at",
					       txn_at[1] ? json_object_new_double(txn_at[1])
							 : NULL);
			dmsc_etcd_ctl_print_json(top);
			json_object_put(top);
		} else {
			for (i = 0; i < json_object_array_length(changes); i++) {
				struct json_object *ch = json_object_array_get_idx(changes, i), *a,
						   *b;

				json_object_object_get_ex(ch, "op", &a);
				json_object_object_get_ex(ch, "key", &b);
				printf("%s%s %s\n", c->dry_run ? "would " : "",
				       json_object_get_string(a), json_object_get_string(b));
			}
			printf("%s %zu change%s to namespace %s (%zu services) %s revision %" PRId64
			       "\n",
			       c->dry_run ? "would publish" : "published", n_ops,
			       n_ops == 1 ? "" : "s", c->ns, set.policy.n_services,
			       c->dry_run ? "against" : "at", rev);
		}
		rc = 0;
	}
	for (i = 0; texts && i < set.policy.n_services; i++)
		free(texts[i]);
	for (i = 0; i < n_keys; i++)
		free(keys[i]);
	for (i = 0; i < n_hkeys; i++)
		free(hkeys[i]);
	dmsc_etcd_free(&etcd);
out:
	free(texts);
	free(keys);
	free(kept);
	free(ops);
	free(cmps);
	free(nsp);
	free(nsend);
	free(hkeys);
	free(hp);
	free(allp);
	free(allend);
	json_object_put(changes);
	json_object_put(hosts);
	json_object_put(stale);
	dmsc_etcd_kvs_free(&kvs);
	dmsc_etcd_kvs_free(&hkvs);
	dmsc_policy_set_free(&set);
	dmsc_msgs_free(&msgs);
	return rc;
}

bool dmsc_etcd_ctl_command(const char *cmd)
{
	return !strcmp(cmd, "publish") || !strcmp(cmd, "get") || !strcmp(cmd, "watch");
}

static int parse_long(const char *flag, const char *arg, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(arg, &end, 10);
	if (errno || *end || end == arg || *out < 0) {
		fprintf(stderr, "%s: \"%s\" is not a number\n", flag, arg);
		return -EINVAL;
	}
	return 0;
}

int dmsc_etcd_ctl_main(int argc, char **argv)
{
	enum { O_REV = 256, O_COUNT, O_TIMEOUT };
	static const struct option own[] = {
	    {"revision", required_argument, NULL, O_REV},
	    {"expect-revision", required_argument, NULL, O_REV},
	    {"count", required_argument, NULL, O_COUNT},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"output", required_argument, NULL, 'o'},
	    DMSC_LONGOPTS_END,
	};
	struct dmsc_etcd_opts eo;
	struct ctl c = {0};
	const struct dmsc_opt stored[] = {
	    DMSC_ETCD_OPTS(&eo, 1),
	    DMSC_OPT_FLAG("dry-run", &c.dry_run),
	    DMSC_OPT_END,
	};
	struct option longopts[DMSC_OPT_ROWS(stored, own)];
	const char *cmd = NULL, *args[2];
	size_t n_args = 0;
	long rev = 0;
	int opt, rc;

	dmsc_etcd_opts_init(&eo);
	dmsc_opt_rows(stored, own, longopts);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "-o:vh", longopts, NULL)) != -1) {
		switch (opt) {
		case 1: /* an operand, in order */
			if (!cmd)
				cmd = optarg;
			else if (n_args < 2)
				args[n_args++] = optarg;
			else {
				fprintf(stderr, "%s: unexpected argument \"%s\"\n", cmd, optarg);
				return EXIT_USAGE;
			}
			break;
		case O_REV:
			if (parse_long("--revision", optarg, &rev))
				return EXIT_USAGE;
			c.revision = rev;
			break;
		case O_COUNT:
			if (parse_long("--count", optarg, &c.count))
				return EXIT_USAGE;
			break;
		case O_TIMEOUT:
			if (parse_long("--timeout", optarg, &c.timeout_s))
				return EXIT_USAGE;
			break;
		case 'o':
			if (dmsc_parse_output(optarg, &c.json))
				return EXIT_USAGE;
			break;
		default:
			/* the etcd options (etcd_opts.h), --dry-run, or -v, -h,
			 * a usage error */
			if ((rc = dmsc_opt_other(stored, opt, optarg, "dmscctl", usage)) >= 0)
				return rc;
			break;
		}
	}
	c.etcd = eo.urls;
	c.prefix = eo.prefix;
	c.ns = eo.n_ns ? eo.ns[0] : NULL;
	c.tls = eo.tls;
	if (!cmd || !c.etcd || !c.ns) {
		fprintf(stderr, "%s needs --etcd URL and --namespace NS\n", cmd ? cmd : "dmscctl");
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!dmsc_etcd_ns_valid(c.ns)) {
		fprintf(stderr, "--namespace: \"%s\" is not a namespace (1-%d of a-z 0-9 . _ -)\n",
			c.ns, DMSC_ETCD_NS_MAX);
		return EXIT_USAGE;
	}
	if (!strcmp(cmd, "publish")) {
		if (n_args != 1) {
			fprintf(stderr, "publish takes one policy file or directory\n");
			return EXIT_USAGE;
		}
		return cmd_publish(&c, args[0]);
	}
	if (!strcmp(cmd, "get")) {
		if (n_args > 1) {
			fprintf(stderr, "get takes at most one service name\n");
			return EXIT_USAGE;
		}
		return dmsc_etcd_ctl_get(&c, n_args ? args[0] : NULL);
	}
	if (n_args) {
		fprintf(stderr, "watch takes no arguments\n");
		return EXIT_USAGE;
	}
	return dmsc_etcd_ctl_watch(&c);
}
