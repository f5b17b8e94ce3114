// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Policy version 1: parsing and whole-document validation.
 *
 * The validator walks the whole document and records every problem with
 * its JSON path instead of stopping at the first, so that one run of
 * `dmscctl check` lists everything to fix. The output is built during the
 * same walk and thrown away if anything was wrong.
 *
 * Duplicate keys in one JSON object are not reported: json-c keeps the last
 * value and so does this parser, as most JSON readers do.
 */
#define _GNU_SOURCE
#include "policy_parse.h"

static void report_syntax(struct ctx *c, const char *text, size_t pos, const char *what)
{
	unsigned long line = 1, column = 1;
	size_t i;

	/* Columns count characters, not the bytes of UTF-8 sequences. */
	for (i = 0; i < pos; i++) {
		if (text[i] == '\n') {
			line++;
			column = 1;
		} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
			column++;
		}
	}
	report(c, "", "line %lu, column %lu: JSON syntax error: %s", line, column, what);
}

static int tokenize(struct ctx *c, const char *text, size_t len, struct json_object **root)
{
	enum json_tokener_error jerr;
	struct json_tokener *tok;
	const char *nul;
	size_t pos;

	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	*root = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	pos = json_tokener_get_parse_end(tok);
	if (!*root && jerr == json_tokener_continue) {
		/* The input ended inside a value. A number at the very end
		 * is complete only once the tokener sees what follows it:
		 * a NUL says that nothing does. */
		*root = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
		pos = len;
	}
	json_tokener_free(tok);
	/* json-c stops at a NUL byte, even inside a string, and calls what it
	 * has so far a complete document. */
	nul = memchr(text, '\0', len);
	if (nul && pos >= (size_t)(nul - text)) {
		json_object_put(*root);
		*root = NULL;
		report_syntax(c, text, nul - text, "unexpected NUL byte");
		return -EINVAL;
	}
	if (jerr != json_tokener_success) {
		report_syntax(c, text, pos, json_tokener_error_desc(jerr));
		return -EINVAL;
	}
	/* Strict mode reports anything but white space after the document;
	 * should a json-c version stop early instead, say so too. */
	if (pos < len) {
		json_object_put(*root);
		*root = NULL;
		report_syntax(c, text, pos, "unexpected character");
		return -EINVAL;
	}
	return 0;
}

static void begin(struct dmsc_policy *out, struct dmsc_policy_errors *errs)
{
	memset(out, 0, sizeof(*out));
	errs->count = 0;
}

int dmsc_policy_parse(const char *text, size_t len, const char *source, struct dmsc_policy *out,
		      struct dmsc_policy_errors *errs)
{
	return dmsc_policy_parse_flags(text, len, source, 0, out, errs);
}

int dmsc_policy_parse_flags(const char *text, size_t len, const char *source, unsigned int flags,
			    struct dmsc_policy *out, struct dmsc_policy_errors *errs)
{
	struct json_object *root = NULL;
	struct ctx c = {.errs = errs, .hosts_elsewhere = flags & DMSC_POLICY_HOSTS_ELSEWHERE};
	int err;

	/* Callers print the source before each error; see policy.h. */
	(void)source;
	begin(out, errs);
	if (len > DMSC_POLICY_FILE_MAX) {
		report(&c, "", "the document is larger than %u MiB", DMSC_POLICY_FILE_MAX >> 20);
		goto cleanup;
	}
	err = tokenize(&c, text ? text : "", len, &root);
	if (err == -ENOMEM)
		c.err = err;
	else if (!err)
		parse_policy(&c, root, out);
	ctx_mtls_free(&c);
	json_object_put(root);
	if (c.dropped && !c.err)
		c.err = errors_add(errs, "", "%zu more errors not shown", c.dropped);
cleanup:
	if (c.err)
		err = c.err;
	else
		err = errs->count ? -EINVAL : 0;
	if (err)
		dmsc_policy_free(out);
	return err;
}

static int read_fd(int fd, char **out, size_t *out_len)
{
	size_t cap = 0, len = 0, want = READ_CHUNK;
	char *buf = NULL, *bigger;
	struct stat st;
	ssize_t n;
	int err = 0;

	if (!fstat(fd, &st) && S_ISREG(st.st_mode)) {
		if ((uint64_t)st.st_size > DMSC_POLICY_FILE_MAX)
			return -EFBIG;
		/* One byte more, so the read that sees the end needs no
		 * second buffer. */
		want = st.st_size + 1;
	}
	for (;;) {
		if (len == cap) {
			if (cap > DMSC_POLICY_FILE_MAX) {
				err = -EFBIG;
				goto cleanup;
			}
			cap = cap ? cap * 2 : want;
			if (cap > DMSC_POLICY_FILE_MAX + 1)
				cap = DMSC_POLICY_FILE_MAX + 1;
			bigger = realloc(buf, cap);
			if (!bigger) {
				err = -ENOMEM;
				goto cleanup;
			}
			buf = bigger;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = -errno;
			goto cleanup;
		}
		if (n == 0)
			break;
		len += n;
	}
	*out = buf;
	*out_len = len;
	buf = NULL;
cleanup:
	free(buf);
	return err;
}

int dmsc_policy_load_file(const char *file, struct dmsc_policy *out,
			  struct dmsc_policy_errors *errs)
{
	return dmsc_policy_load_file_flags(file, 0, out, errs);
}

int dmsc_policy_load_file_flags(const char *file, unsigned int flags, struct dmsc_policy *out,
				struct dmsc_policy_errors *errs)
{
	bool use_stdin = !strcmp(file, "-");
	const char *failed = "cannot read";
	char *text = NULL;
	size_t len = 0;
	int fd, err;

	begin(out, errs);
	fd = use_stdin ? STDIN_FILENO : open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		failed = "cannot open";
		goto cleanup;
	}
	err = read_fd(fd, &text, &len);
	if (err)
		goto cleanup;
	err = dmsc_policy_parse_flags(text, len, use_stdin ? "<stdin>" : file, flags, out, errs);
	/* The document's own errors are recorded already. */
	failed = NULL;
cleanup:
	if (err && err != -ENOMEM && failed) {
		int add_err;

		if (err == -EFBIG)
			add_err = errors_add(errs, "", "the file is larger than %u MiB",
					     DMSC_POLICY_FILE_MAX >> 20);
		else
			add_err = errors_add(errs, "", "%s: %s", failed, strerror(-err));
		if (add_err)
			err = add_err;
	}
	free(text);
	if (fd >= 0 && !use_stdin)
		close(fd);
	return err;
}

int dmsc_policy_load_fd(int fd, unsigned int flags, struct dmsc_policy *out, char *why, size_t len)
{
	struct dmsc_policy_errors errs = {0};
	char path[40];
	int err;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	err = dmsc_policy_load_file_flags(path, flags, out, &errs);
	if (err && errs.count)
		dmsc_policy_error_format(&errs.items[0], why, len);
	else if (err)
		snprintf(why, len, "cannot read it: %s", strerror(-err));
	dmsc_policy_errors_free(&errs);
	return err;
}

static void labels_free(struct dmsc_label *l, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(l[i].key);
		free(l[i].value);
	}
	free(l);
}

static void service_free(struct dmsc_policy_service *s)
{
	size_t i;

	free(s->name);
	for (i = 0; i < s->n_backends; i++) {
		labels_free(s->backends[i].labels, s->backends[i].n_labels);
		free(s->backends[i].host);
	}
	free(s->backends);
	for (i = 0; i < s->n_allow_from; i++)
		free(s->allow_from[i]);
	free(s->allow_from);
	for (i = 0; i < s->n_routes; i++) {
		struct dmsc_route *r = &s->routes[i];

		free(r->match.path_prefix);
		free(r->match.path);
		free(r->match.method);
		labels_free(r->match.headers, r->match.n_headers);
		labels_free(r->selector, r->n_selector);
	}
	free(s->routes);
	free(s->health.active.path);
	free(s->affinity_name);
}

void dmsc_policy_free(struct dmsc_policy *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < p->n_services; i++)
		service_free(&p->services[i]);
	free(p->services);
	memset(p, 0, sizeof(*p));
}

void dmsc_policy_errors_free(struct dmsc_policy_errors *errs)
{
	if (!errs)
		return;
	free(errs->items);
	memset(errs, 0, sizeof(*errs));
}

void dmsc_policy_error_format(const struct dmsc_policy_error *e, char *buf, size_t len)
{
	if (!len)
		return;
	if (e->path[0])
		snprintf(buf, len, "%s: %s", e->path, e->message);
	else
		snprintf(buf, len, "%s", e->message);
}

const char *dmsc_policy_unsupported(const struct dmsc_policy *p, char *buf, size_t len)
{
	/* A field that a build parses but cannot enforce is named here, with
	 * its path, so that apply refuses it instead of pretending. This one
	 * enforces every field: the last, mtls of an http service whose
	 * backends are on other hosts, is dmsc-l7's since docs/design.md
	 * decision 75. */
	(void)p;
	(void)buf;
	(void)len;
	return NULL;
}

bool dmsc_policy_backend_tunneled(const struct dmsc_policy_service *s,
				  const struct dmsc_policy_backend *b, const char *self)
{
	return s->mtls != DMSC_MTLS_OFF && b->host && self && self[0] && strcmp(b->host, self);
}

const char *dmsc_policy_proto_name(enum dmsc_policy_proto p)
{
	if ((size_t)p >= sizeof(proto_names) / sizeof(proto_names[0]) - 1)
		return "unknown";
	return proto_names[p];
}
