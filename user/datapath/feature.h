/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What the running kernel offers dmsc: hooks, helpers, map types and link
 * operations, probed at install (and by `dmscctl status` / `features`) with
 * small test loads. A missing feature either has a fallback (the program
 * that needs it is not loaded, and dmsc says what it does instead) or makes
 * install refuse with a message naming the feature and the first Linux
 * version that has it (docs/design.md decision 8).
 *
 * The probes are one table in feature.c: a new hook, helper or map type is
 * one row there. Every hook of dmsc_hooks (datapath.c) is probed even
 * without a row, as a required feature.
 */
#ifndef DMSC_FEATURES_H
#define DMSC_FEATURES_H

#include <stdbool.h>
#include <stddef.h>

struct bpf_object;

enum dmsc_feature_kind {
	DMSC_FEAT_HOOK,	  /* a program type + attach type can be loaded */
	DMSC_FEAT_HELPER, /* a helper is allowed in a program type */
	DMSC_FEAT_MAP,	  /* a map type can be created */
	DMSC_FEAT_LINK,	  /* bpf_link for cgroup hooks (create, update) */
};

struct dmsc_feature {
	const char *name;      /* as a user reads it: "cgroup/getpeername4" */
	enum dmsc_feature_kind kind;
	const char *sec;       /* libbpf section of the program type probed */
	int id;                /* HELPER: BPF_FUNC_*; MAP: BPF_MAP_TYPE_* */
	const char *min_linux; /* first Linux version that has it */
	/* NULL: required, install refuses without it. Else what dmsc does on a
	 * kernel without it ... */
	const char *fallback;
	/* ... and the BPF program that is then not loaded (may be NULL). */
	const char *prog;
};

struct dmsc_feature_result {
	struct dmsc_feature f; /* a copy: rows made for dmsc_hooks live here */
	bool present;
	bool hidden;	    /* absent because DMSC_FEATURES_HIDE names it */
	char detail[160];   /* why absent, or how it was probed */
};

#define DMSC_FEATURES_MAX 32

struct dmsc_features {
	struct dmsc_feature_result r[DMSC_FEATURES_MAX];
	size_t n;
	size_t n_missing_required;
	size_t n_missing_optional;
};

/*
 * Probes every feature. Needs the privileges to load BPF programs; without
 * them every probe is absent with the reason in detail, and -EPERM is
 * returned. DMSC_FEATURES_HIDE (comma-separated feature names) makes the
 * named features absent: the tests use it to play an older kernel.
 */
int dmsc_features_probe(struct dmsc_features *out);

/*
 * For install, between open and load of a BPF object: probes, turns off
 * autoload of each program whose optional feature is missing (saying what
 * dmsc does instead), and returns -EOPNOTSUPP, after naming each missing
 * required feature and the Linux version that has it, when one is missing.
 */
int dmsc_features_prepare(struct bpf_object *obj, struct dmsc_features *out);
/* The two halves of prepare, for several objects: probe and report once,
 * then turn off the programs of missing hooks that have a fallback in each
 * object. */
int dmsc_features_check(struct dmsc_features *out);
void dmsc_features_disable(struct bpf_object *obj, const struct dmsc_features *fs);

/* Probes one feature (a row of the table, or any other) into *r. */
void dmsc_feature_probe(const struct dmsc_feature *f, struct dmsc_feature_result *r);

/* The result row of a feature by name, or NULL. */
const struct dmsc_feature_result *dmsc_features_find(const struct dmsc_features *fs,
						     const char *name);

const char *dmsc_feature_kind_name(enum dmsc_feature_kind k);

/*
 * The verifier's figures for one program: what `veristat` would print.
 * processed_insns..peak_states come from the verifier's statistics log
 * (every kernel); verified_insns from bpf_prog_info (Linux 5.16+, else 0).
 */
struct dmsc_verifier_stats {
	char prog[64];
	char sec[64];
	bool loaded;
	unsigned int processed_insns;
	unsigned int total_states;
	unsigned int peak_states;
	unsigned int max_states_per_insn;
	unsigned int verified_insns;
	unsigned int xlated_bytes;
	unsigned int jited_bytes;
	unsigned int insns; /* instructions in the object, before loading */
	char error[160];
};

#define DMSC_VERIFIER_MAX 16

/* Loads every program of the dmsc BPF object that this kernel can take
 * (nothing is attached or pinned; the maps are private and go away) and
 * fills one row per program. Returns the number of rows or a negative
 * errno. */
int dmsc_verifier_report(struct dmsc_verifier_stats *out, size_t n);

#endif /* DMSC_FEATURES_H */
