// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "datapath.h"
#include "dmsc_sock.skel.h"
#include "feature.h"
#include "log.h"

/*
 * The probes. A hook of dmsc_hooks without a row here is still probed, as a
 * required hook with the hook's own min_linux; a row gives it a fallback.
 * Versions are the first mainline release that has the feature.
 */
#define FP_FALLBACK                                                                        \
	"no same-host fast path: local connections take the kernel's TCP/IP path"

static const struct dmsc_feature feature_table[] = {
	{ "cgroup/connect4", DMSC_FEAT_HOOK, "cgroup/connect4", 0, "4.17", NULL, NULL },
	{ "cgroup/getpeername4", DMSC_FEAT_HOOK, "cgroup/getpeername4", 0, "5.8",
	  "getpeername() on a translated socket shows the backend, not the VIP",
	  "dmsc_getpeername4" },
	{ "cgroup/getpeername6", DMSC_FEAT_HOOK, "cgroup/getpeername6", 0, "5.8",
	  "getpeername() on a translated IPv6 or dual-stack socket shows the backend, not the VIP",
	  "dmsc_getpeername6" },
	{ "bpf_link for cgroup hooks", DMSC_FEAT_LINK, "cgroup/connect4", 0, "5.7", NULL, NULL },
	{ "sk_storage map", DMSC_FEAT_MAP, NULL, BPF_MAP_TYPE_SK_STORAGE, "5.2", NULL, NULL },
	/* 5.10 is the oldest kernel the matrix proves it on (docs/design.md
	 * decision 8); the helper came to sock_addr programs earlier. */
	{ "bpf_sk_storage_get in cgroup/connect4", DMSC_FEAT_HELPER, "cgroup/connect4",
	  BPF_FUNC_sk_storage_get, "5.10", NULL, NULL },
	{ "bpf_get_prandom_u32 in cgroup/connect4", DMSC_FEAT_HELPER, "cgroup/connect4",
	  BPF_FUNC_get_prandom_u32, "4.17", NULL, NULL },
	/* The same-host fast path: both programs or neither (datapath_load.c). */
	{ "sockops", DMSC_FEAT_HOOK, "sockops", 0, "4.13", FP_FALLBACK, "dmsc_fp_sockops" },
	{ "sk_msg", DMSC_FEAT_HOOK, "sk_msg", 0, "4.17", FP_FALLBACK, "dmsc_fp_msg" },
	{ "bpf_sk_storage_get in sockops", DMSC_FEAT_HELPER, "sockops", BPF_FUNC_sk_storage_get,
	  "5.3", FP_FALLBACK, "dmsc_fp_sockops" },
	{ "bpf_sk_storage_get in sk_msg", DMSC_FEAT_HELPER, "sk_msg", BPF_FUNC_sk_storage_get, "5.8",
	  FP_FALLBACK, "dmsc_fp_msg" },
	{ "bpf_skc_to_tcp_sock in sk_msg", DMSC_FEAT_HELPER, "sk_msg", BPF_FUNC_skc_to_tcp_sock,
	  "5.9", FP_FALLBACK, "dmsc_fp_msg" },
	{ "bpf_probe_read_kernel in sk_msg", DMSC_FEAT_HELPER, "sk_msg", BPF_FUNC_probe_read_kernel,
	  "5.8", FP_FALLBACK, "dmsc_fp_msg" },
	{ "bpf_get_socket_cookie in sockops", DMSC_FEAT_HELPER, "sockops", BPF_FUNC_get_socket_cookie,
	  "5.4", FP_FALLBACK, "dmsc_fp_sockops" },
};


const char *dmsc_feature_kind_name(enum dmsc_feature_kind k)
{
	switch (k) {
	case DMSC_FEAT_HOOK:
		return "hook";
	case DMSC_FEAT_HELPER:
		return "helper";
	case DMSC_FEAT_MAP:
		return "map";
	case DMSC_FEAT_LINK:
		return "link";
	}
	return "?";
}

static bool hidden_by_env(const char *name)
{
	const char *env = getenv("DMSC_FEATURES_HIDE"), *p;
	size_t len = strlen(name);

	if (!env)
		return false;
	for (p = env; *p;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n == len && strncmp(p, name, len) == 0)
			return true;
		if (!end)
			break;
		p = end + 1;
	}
	return false;
}

/* A program of the section's type that calls helper (or no helper when
 * helper < 0) and returns 1, loaded with the section's expected attach
 * type. Returns the fd or a negative errno; the verifier's log in log. */
static int probe_load(const char *sec, int helper, char *log, size_t log_size)
{
	struct bpf_insn insns[3];
	enum bpf_prog_type type;
	enum bpf_attach_type attach;
	size_t n = 0;
	int fd, err;

	err = libbpf_prog_type_by_name(sec, &type, &attach);
	if (err) {
		snprintf(log, log_size, "libbpf %s does not know the section %s",
			 libbpf_version_string(), sec);
		return err;
	}
	if (helper >= 0)
		insns[n++] = (struct bpf_insn){ .code = BPF_JMP | BPF_CALL, .imm = helper };
	insns[n++] = (struct bpf_insn){ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0,
					.imm = 1 };
	insns[n++] = (struct bpf_insn){ .code = BPF_JMP | BPF_EXIT };
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = attach,
		    .log_buf = log, .log_size = (__u32)log_size, .log_level = 1);
	/* All of it: valgrind cannot see the kernel write the log. */
	memset(log, 0, log_size);
	fd = bpf_prog_load(type, NULL, "GPL", insns, n, &opts);
	return fd < 0 ? -errno : fd;
}

/* The verifier's words for "this helper is not allowed here": "unknown
 * func" (older kernels), "program of this type cannot use helper" (6.x),
 * "invalid func" (an id the kernel has never heard of). */
static const char *helper_refusal(const char *log)
{
	static const char *const refusals[] = { "unknown func", "cannot use helper",
						"invalid func" };
	const char *p;
	size_t i;

	for (i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++)
		if ((p = strstr(log, refusals[i]))) {
			/* from the start of that line */
			while (p > log && p[-1] != '\n')
				p--;
			return p;
		}
	return NULL;
}

static void first_line(char *dst, size_t size, const char *log)
{
	size_t n = strcspn(log, "\n");

	snprintf(dst, size, "%.*s", (int)n, log);
}

void dmsc_feature_probe(const struct dmsc_feature *feature, struct dmsc_feature_result *r)
{
	const struct dmsc_feature *f = &r->f;
	const char *refusal;
	char log[4096];
	int fd, link;

	memset(r, 0, sizeof(*r));
	r->f = *feature;

	if (hidden_by_env(f->name)) {
		r->hidden = true;
		snprintf(r->detail, sizeof(r->detail), "hidden by DMSC_FEATURES_HIDE");
		return;
	}
	switch (f->kind) {
	case DMSC_FEAT_HOOK:
		fd = probe_load(f->sec, -1, log, sizeof(log));
		r->present = fd >= 0;
		if (fd >= 0)
			close(fd);
		else if (fd == -ESRCH) /* libbpf does not know the section */
			first_line(r->detail, sizeof(r->detail), log);
		else
			snprintf(r->detail, sizeof(r->detail), "loading a %s program: %s", f->sec,
				 strerror(-fd));
		return;
	case DMSC_FEAT_HELPER:
		/* The helper is called with no arguments set up: a kernel that
		 * allows it in this program type rejects the arguments, one that
		 * does not refuses the call first (helper_refusal). */
		fd = probe_load(f->sec, f->id, log, sizeof(log));
		if (fd >= 0) {
			close(fd);
			r->present = true;
		} else if (fd == -EPERM || fd == -ESRCH) {
			snprintf(r->detail, sizeof(r->detail), "cannot probe: %s", strerror(-fd));
		} else if ((refusal = helper_refusal(log))) {
			first_line(r->detail, sizeof(r->detail), refusal);
		} else if (log[0]) {
			r->present = true;
		} else {
			snprintf(r->detail, sizeof(r->detail), "probe load failed: %s", strerror(-fd));
		}
		return;
	case DMSC_FEAT_MAP:
		fd = libbpf_probe_bpf_map_type((enum bpf_map_type)f->id, NULL);
		r->present = fd == 1;
		if (fd != 1)
			snprintf(r->detail, sizeof(r->detail), "%s",
				 fd == 0 ? "map type not supported" : strerror(-fd));
		return;
	case DMSC_FEAT_LINK:
		/* BPF_LINK_CREATE on a bad cgroup fd: EBADF where the command
		 * exists, EINVAL where it does not (before 5.7). */
		fd = probe_load(f->sec, -1, log, sizeof(log));
		if (fd < 0) {
			snprintf(r->detail, sizeof(r->detail), "cannot probe: loading a %s program: %s",
				 f->sec, strerror(-fd));
			return;
		}
		{
			enum bpf_prog_type type;
			enum bpf_attach_type attach;

			libbpf_prog_type_by_name(f->sec, &type, &attach);
			link = bpf_link_create(fd, -1, attach, NULL);
		}
		if (link >= 0) {
			close(link); /* cannot happen with fd -1; keep nothing */
			r->present = true;
		} else {
			r->present = errno == EBADF;
			if (!r->present)
				snprintf(r->detail, sizeof(r->detail), "BPF_LINK_CREATE: %s",
					 strerror(errno));
		}
		close(fd);
		return;
	}
}

static void add_row(struct dmsc_features *out, const struct dmsc_feature *f)
{
	struct dmsc_feature_result *r;

	if (out->n >= DMSC_FEATURES_MAX)
		return;
	r = &out->r[out->n++];
	dmsc_feature_probe(f, r);
	if (!r->present) {
		if (r->f.fallback)
			out->n_missing_optional++;
		else
			out->n_missing_required++;
	}
}

const struct dmsc_feature_result *dmsc_features_find(const struct dmsc_features *fs,
						     const char *name)
{
	size_t i;

	for (i = 0; i < fs->n; i++)
		if (strcmp(fs->r[i].f.name, name) == 0)
			return &fs->r[i];
	return NULL;
}

int dmsc_features_probe(struct dmsc_features *out)
{
	size_t i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < sizeof(feature_table) / sizeof(feature_table[0]); i++)
		add_row(out, &feature_table[i]);
	/* Hooks without a row of their own: required, probed by section. */
	for (i = 0; i < dmsc_n_hooks; i++) {
		struct dmsc_feature f = {
			.name = dmsc_hooks[i].hook,
			.kind = DMSC_FEAT_HOOK,
			.sec = dmsc_hooks[i].hook,
			.min_linux = dmsc_hooks[i].min_linux,
			.prog = dmsc_hooks[i].prog,
		};

		if (!dmsc_features_find(out, f.name))
			add_row(out, &f);
	}
	if (geteuid() != 0 && out->n_missing_required)
		return -EPERM;
	return 0;
}

int dmsc_features_check(struct dmsc_features *out)
{
	size_t i;
	int err;

	err = dmsc_features_probe(out);
	if (err)
		return err;
	for (i = 0; i < out->n; i++) {
		const struct dmsc_feature_result *r = &out->r[i];

		if (r->present)
			continue;
		if (!r->f.fallback) {
			pr_warn("this kernel lacks %s (%s, Linux %s and later)%s%s: dmsc cannot run "
				"without it\n",
				r->f.name, dmsc_feature_kind_name(r->f.kind), r->f.min_linux,
				r->detail[0] ? ": " : "", r->detail);
			continue;
		}
		pr_info("this kernel lacks %s (Linux %s and later): %s%s\n", r->f.name,
			r->f.min_linux, r->f.prog ? "not loaded; " : "", r->f.fallback);
	}
	return out->n_missing_required ? -EOPNOTSUPP : 0;
}

void dmsc_features_disable(struct bpf_object *obj, const struct dmsc_features *fs)
{
	size_t i;

	for (i = 0; i < fs->n; i++) {
		const struct dmsc_feature_result *r = &fs->r[i];
		struct bpf_program *prog;

		if (r->present || !r->f.fallback || !r->f.prog)
			continue;
		prog = bpf_object__find_program_by_name(obj, r->f.prog);
		if (prog)
			bpf_program__set_autoload(prog, false);
	}
}

int dmsc_features_prepare(struct bpf_object *obj, struct dmsc_features *out)
{
	int err = dmsc_features_check(out);

	if (!err)
		dmsc_features_disable(obj, out);
	return err;
}

/* "processed 52 insns (limit 1000000) max_states_per_insn 0 total_states 4
 * peak_states 4 mark_read 2": the verifier's statistics line. */
static void parse_stats(const char *log, struct dmsc_verifier_stats *s)
{
	const char *p = strstr(log, "processed ");
	const char *q;

	if (!p)
		return;
	sscanf(p, "processed %u insns", &s->processed_insns);
	if ((q = strstr(p, "max_states_per_insn ")))
		sscanf(q, "max_states_per_insn %u", &s->max_states_per_insn);
	if ((q = strstr(p, "total_states ")))
		sscanf(q, "total_states %u", &s->total_states);
	if ((q = strstr(p, "peak_states ")))
		sscanf(q, "peak_states %u", &s->peak_states);
}

#define VERIFIER_LOG_SIZE (1u << 20)
#define VERIFIER_LOG_STATS 4 /* BPF_LOG_STATS: the summary only */

/* Map types whose size the verifier's work does not depend on: shrunk for
 * the report so that it allocates next to nothing. (Ring buffers, socket
 * storage and the like have rules of their own and keep their size.) */
static bool shrinkable(enum bpf_map_type t)
{
	switch (t) {
	case BPF_MAP_TYPE_HASH:
	case BPF_MAP_TYPE_ARRAY:
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_PERCPU_ARRAY:
	case BPF_MAP_TYPE_LRU_HASH:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH:
		return true;
	default:
		return false;
	}
}

static int report_object(const char *name, const void *elf, size_t sz,
			 struct dmsc_verifier_stats *out, size_t n, size_t *used)
{
	struct dmsc_features fs;
	struct bpf_program *prog;
	struct bpf_object *obj;
	struct bpf_map *map;
	char *logs[DMSC_VERIFIER_MAX] = { 0 };
	size_t first = *used, i;
	int err;

	LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = name);
	obj = bpf_object__open_mem(elf, sz, &opts);
	if (!obj)
		return -errno;
	/* Private, small maps: nothing of a real installation is touched. */
	err = dmsc_features_prepare(obj, &fs);
	if (err && err != -EOPNOTSUPP)
		goto out;
	bpf_object__for_each_program(prog, obj)
	{
		struct dmsc_verifier_stats *s;

		if (*used >= n)
			break;
		s = &out[(*used)++];
		memset(s, 0, sizeof(*s));
		snprintf(s->prog, sizeof(s->prog), "%s", bpf_program__name(prog));
		snprintf(s->sec, sizeof(s->sec), "%s", bpf_program__section_name(prog));
		s->insns = (unsigned int)bpf_program__insn_cnt(prog);
		if (!bpf_program__autoload(prog)) {
			snprintf(s->error, sizeof(s->error), "not loaded: a feature is missing");
			continue;
		}
		logs[*used - first - 1] = calloc(1, VERIFIER_LOG_SIZE);
		if (logs[*used - first - 1]) {
			bpf_program__set_log_buf(prog, logs[*used - first - 1], VERIFIER_LOG_SIZE);
			bpf_program__set_log_level(prog, VERIFIER_LOG_STATS);
		}
	}
	bpf_object__for_each_map(map, obj)
		if (shrinkable(bpf_map__type(map)) && bpf_map__max_entries(map) > 2)
			bpf_map__set_max_entries(map, 2);
	err = bpf_object__load(obj);
	for (i = first; i < *used; i++) {
		struct dmsc_verifier_stats *s = &out[i];
		struct bpf_prog_info info;
		__u32 len = sizeof(info);
		int fd;

		if (s->error[0])
			continue;
		prog = bpf_object__find_program_by_name(obj, s->prog);
		if (logs[i - first])
			parse_stats(logs[i - first], s);
		fd = prog ? bpf_program__fd(prog) : -1;
		if (fd < 0) {
			snprintf(s->error, sizeof(s->error), "load failed: %s",
				 strerror(err ? -err : ENOENT));
			continue;
		}
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
			s->loaded = true;
			s->verified_insns = info.verified_insns;
			s->xlated_bytes = info.xlated_prog_len;
			s->jited_bytes = info.jited_prog_len;
		}
	}
	err = 0;
out:
	for (i = 0; i < DMSC_VERIFIER_MAX; i++)
		free(logs[i]);
	bpf_object__close(obj);
	return err;
}

int dmsc_verifier_report(struct dmsc_verifier_stats *out, size_t n)
{
	size_t used = 0, i;
	int err;

	for (i = 0; i < dmsc_n_objects; i++) {
		size_t sz = 0;
		const void *elf = dmsc_objects[i].elf(&sz);

		err = report_object(dmsc_objects[i].name, elf, sz, out, n, &used);
		if (err) {
			pr_warn("cannot load BPF object %s for the verifier report: %s\n",
				dmsc_objects[i].name, strerror(-err));
			return err;
		}
	}
	return (int)used;
}
