// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A policy made of one file or of every *.json file of a directory, and
 * the formatted problems found reading it (dmscd and dmscctl publish).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "array.h"
#include "addr.h"
#include "policy_set.h"

void dmsc_msgs_add(struct dmsc_msgs *m, const char *fmt, ...)
{
	char **grown, *line;
	va_list ap;
	int len;

	grown = dmsc_array_room(m->lines, m->n, &m->cap, sizeof(*m->lines), 8);
	if (!grown)
		return;
	m->lines = grown;
	va_start(ap, fmt);
	len = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (len >= 0)
		m->lines[m->n++] = line;
}

void dmsc_msgs_free(struct dmsc_msgs *m)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		free(m->lines[i]);
	free(m->lines);
	memset(m, 0, sizeof(*m));
}

void dmsc_policy_set_free(struct dmsc_policy_set *s)
{
	size_t i;

	dmsc_policy_free(&s->policy);
	for (i = 0; i < s->n_files; i++)
		free(s->files[i]);
	free(s->files);
	free(s->svc_file);
	memset(s, 0, sizeof(*s));
}

bool dmsc_policy_dir_entry(const char *name)
{
	size_t len = strlen(name);

	return name[0] != '.' && len > 5 && strcmp(name + len - 5, ".json") == 0;
}

struct dup_ref {
	size_t svc;
	const struct dmsc_policy_service *s;
};

static int by_name(const void *a, const void *b)
{
	const struct dup_ref *x = a, *y = b;
	int c = strcmp(x->s->name, y->s->name);

	return c ? c : (x->svc > y->svc) - (x->svc < y->svc);
}

/* The protocol as the kernel keys it: http services are TCP there, so a
 * tcp and an http service on one VIP:port would share one map entry. */
static int kernel_proto(const struct dmsc_policy_service *s)
{
	return s->protocol == DMSC_POLICY_UDP ? DMSC_PROTO_UDP : DMSC_PROTO_TCP;
}

static int by_key(const void *a, const void *b)
{
	const struct dup_ref *x = a, *y = b;

	int r;

	if (x->s->vip != y->s->vip)
		return x->s->vip < y->s->vip ? -1 : 1;
	r = memcmp(x->s->vip6, y->s->vip6, sizeof(x->s->vip6)); /* 0 for IPv4 */
	if (r)
		return r;
	if (x->s->port != y->s->port)
		return x->s->port < y->s->port ? -1 : 1;
	if (kernel_proto(x->s) != kernel_proto(y->s))
		return kernel_proto(x->s) < kernel_proto(y->s) ? -1 : 1;
	return (x->svc > y->svc) - (x->svc < y->svc);
}

/* Index of service i within its own file. */
static size_t local_index(const struct dmsc_policy_set *s, size_t i)
{
	size_t j = i;

	while (j > 0 && s->svc_file[j - 1] == s->svc_file[i])
		j--;
	return i - j;
}

static size_t report_dups(const struct dmsc_policy_set *set, struct dup_ref *refs, size_t n,
			  bool key, struct dmsc_msgs *msgs)
{
	size_t i, found = 0;
	char vip[DMSC_ADDR_PORT_LEN];

	qsort(refs, n, sizeof(*refs), key ? by_key : by_name);
	for (i = 1; i < n; i++) {
		const struct dup_ref *a = &refs[i - 1], *b = &refs[i];

		if (key ? by_key(&(struct dup_ref){0, a->s}, &(struct dup_ref){0, b->s}) != 0
			: strcmp(a->s->name, b->s->name) != 0)
			continue;
		found++;
		if (key) {
			bool mixed = a->s->protocol != b->s->protocol;

			dmsc_format_ip_port(b->s->family, b->s->vip, b->s->vip6, b->s->port, vip,
					    sizeof(vip));
			dmsc_msgs_add(msgs,
				      "%s: services[%zu] (%s): %s/%s is also the address of "
				      "services[%zu] (%s) in %s%s%s%s",
				      set->files[set->svc_file[b->svc]], local_index(set, b->svc),
				      b->s->name, vip,
				      dmsc_policy_proto_name(b->s->protocol),
				      local_index(set, a->svc), a->s->name,
				      set->files[set->svc_file[a->svc]], mixed ? " as " : "",
				      mixed ? dmsc_policy_proto_name(a->s->protocol) : "",
				      mixed ? " (tcp and http share the kernel's TCP key)" : "");
		} else {
			dmsc_msgs_add(msgs,
				      "%s: services[%zu]: the name \"%s\" is also defined in %s "
				      "(services[%zu])",
				      set->files[set->svc_file[b->svc]], local_index(set, b->svc),
				      b->s->name, set->files[set->svc_file[a->svc]],
				      local_index(set, a->svc));
		}
	}
	return found;
}

int dmsc_policy_set_merge(struct dmsc_policy *parts, const char *const *names, size_t n,
			  struct dmsc_policy_set *out, struct dmsc_msgs *msgs)
{
	struct dup_ref *refs = NULL;
	size_t i, j, total = 0, k = 0, dups;
	int err = -ENOMEM;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < n; i++)
		total += parts[i].n_services;
	out->files = calloc(n ? n : 1, sizeof(*out->files));
	out->svc_file = calloc(total ? total : 1, sizeof(*out->svc_file));
	out->policy.services = calloc(total ? total : 1, sizeof(*out->policy.services));
	refs = calloc(total ? total : 1, sizeof(*refs));
	if (!out->files || !out->svc_file || !out->policy.services || !refs)
		goto fail;
	for (i = 0; i < n; i++) {
		out->files[i] = strdup(names[i]);
		if (!out->files[i])
			goto fail;
		out->n_files++;
		for (j = 0; j < parts[i].n_services; j++) {
			out->policy.services[k] = parts[i].services[j];
			out->svc_file[k] = i;
			k++;
		}
		/* The services moved: free only the array. */
		free(parts[i].services);
		parts[i].services = NULL;
		parts[i].n_services = 0;
	}
	out->policy.n_services = total;
	/* Within one file the parser rejects duplicates already, so any pair
	 * found here spans two files. */
	for (i = 0; i < total; i++)
		refs[i] = (struct dup_ref){i, &out->policy.services[i]};
	dups = report_dups(out, refs, total, false, msgs);
	dups += report_dups(out, refs, total, true, msgs);
	free(refs);
	if (dups) {
		dmsc_policy_set_free(out);
		return -EINVAL;
	}
	return 0;
fail:
	free(refs);
	dmsc_policy_set_free(out);
	return err;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_errors(struct dmsc_msgs *msgs, const char *file,
		       const struct dmsc_policy_errors *errs, int err)
{
	char line[1024];
	size_t i;

	for (i = 0; i < errs->count; i++) {
		dmsc_policy_error_format(&errs->items[i], line, sizeof(line));
		dmsc_msgs_add(msgs, "%s: %s", file, line);
	}
	if (!errs->count)
		dmsc_msgs_add(msgs, "%s: %s", file, strerror(-err));
}

int dmsc_policy_set_load(const char *path, struct dmsc_policy_set *out, struct dmsc_msgs *msgs)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy *parts = NULL;
	char **names = NULL, full[4096];
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	struct stat st;
	DIR *dir;
	int err = 0, bad = 0;

	memset(out, 0, sizeof(*out));
	if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) {
		struct dmsc_policy one = {0};

		err = dmsc_policy_load_file(path, &one, &errs);
		if (err) {
			add_errors(msgs, path, &errs, err);
			dmsc_policy_errors_free(&errs);
			return err == -ENOMEM ? err : -EINVAL;
		}
		dmsc_policy_errors_free(&errs);
		return dmsc_policy_set_merge(&one, &path, 1, out, msgs);
	}
	dir = opendir(path);
	if (!dir) {
		err = -errno;
		dmsc_msgs_add(msgs, "%s: cannot open: %s", path, strerror(-err));
		return -EINVAL;
	}
	while ((de = readdir(dir))) {
		if (!dmsc_policy_dir_entry(de->d_name))
			continue;
		char **grown = dmsc_array_room(names, n, &cap, sizeof(*names), 16);

		if (!grown) {
			err = -ENOMEM;
			break;
		}
		names = grown;
		snprintf(full, sizeof(full), "%s/%s", path, de->d_name);
		names[n] = strdup(full);
		if (!names[n]) {
			err = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(dir);
	if (err)
		goto out;
	if (n == 0) {
		dmsc_msgs_add(msgs,
			      "%s: no policy file (*.json) in the directory; nothing applied "
			      "(to remove every service, write a file with { \"services\": [] })",
			      path);
		err = -EINVAL;
		goto out;
	}
	qsort(names, n, sizeof(*names), name_cmp);
	parts = calloc(n, sizeof(*parts));
	if (!parts) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		err = dmsc_policy_load_file(names[i], &parts[i], &errs);
		if (err == -ENOMEM)
			goto out;
		if (err) {
			add_errors(msgs, names[i], &errs, err);
			bad++;
		}
	}
	err =
	    bad ? -EINVAL : dmsc_policy_set_merge(parts, (const char *const *)names, n, out, msgs);
out:
	dmsc_policy_errors_free(&errs);
	for (i = 0; i < n; i++) {
		if (parts)
			dmsc_policy_free(&parts[i]);
		free(names[i]);
	}
	free(parts);
	free(names);
	return err;
}
