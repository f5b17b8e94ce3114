// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The kernel feature probes: each kind must be able to say "missing", or a
 * probe that always answers "present" would pass unnoticed. Loading BPF
 * programs needs root; without it these tests are skipped, never passed. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <unistd.h>

#include <linux/bpf.h>

#include "feature.h"

static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to load BPF programs");
}

Test(feature, hook_present_and_absent)
{
	struct dmsc_feature_result r;
	struct dmsc_feature connect = { "connect4", DMSC_FEAT_HOOK, "cgroup/connect4", 0, "4.17",
					NULL, NULL };
	struct dmsc_feature bogus = { "bogus", DMSC_FEAT_HOOK, "cgroup/no-such-hook", 0, "99",
				      NULL, NULL };

	need_root();
	dmsc_feature_probe(&connect, &r);
	cr_assert(r.present, "cgroup/connect4 missing: %s", r.detail);
	dmsc_feature_probe(&bogus, &r);
	cr_assert(!r.present);
	cr_assert(r.detail[0] != '\0');
}

Test(feature, helper_allowed_and_not_allowed)
{
	struct dmsc_feature_result r;
	struct dmsc_feature prandom = { "prandom", DMSC_FEAT_HELPER, "cgroup/connect4",
					BPF_FUNC_get_prandom_u32, "4.17", NULL, NULL };
	/* skb helpers exist everywhere but not in sock_addr programs. */
	struct dmsc_feature skb = { "skb_load_bytes", DMSC_FEAT_HELPER, "cgroup/connect4",
				    BPF_FUNC_skb_load_bytes, "99", NULL, NULL };

	need_root();
	dmsc_feature_probe(&prandom, &r);
	cr_assert(r.present, "prandom: %s", r.detail);
	dmsc_feature_probe(&skb, &r);
	cr_assert(!r.present);
	/* both wordings name the helper by id: "...bpf_skb_load_bytes#26" */
	cr_assert(strstr(r.detail, "#26") != NULL, "detail: %s", r.detail);
}

Test(feature, map_and_link)
{
	struct dmsc_feature_result r;
	struct dmsc_feature sk = { "sk_storage", DMSC_FEAT_MAP, NULL, BPF_MAP_TYPE_SK_STORAGE,
				   "5.2", NULL, NULL };
	struct dmsc_feature bad_map = { "bad map", DMSC_FEAT_MAP, NULL, 4096, "99", NULL, NULL };
	struct dmsc_feature link = { "link", DMSC_FEAT_LINK, "cgroup/connect4", 0, "5.7", NULL,
				     NULL };

	need_root();
	dmsc_feature_probe(&sk, &r);
	cr_assert(r.present, "sk_storage: %s", r.detail);
	dmsc_feature_probe(&bad_map, &r);
	cr_assert(!r.present);
	dmsc_feature_probe(&link, &r);
	cr_assert(r.present, "link: %s", r.detail);
}

Test(feature, hide_and_table)
{
	struct dmsc_features fs;
	const struct dmsc_feature_result *r;

	need_root();
	setenv("DMSC_FEATURES_HIDE", "x,cgroup/getpeername4", 1);
	cr_assert_eq(dmsc_features_probe(&fs), 0);
	unsetenv("DMSC_FEATURES_HIDE");
	r = dmsc_features_find(&fs, "cgroup/getpeername4");
	cr_assert(r && !r->present && r->hidden);
	cr_assert_eq(fs.n_missing_optional, 1);
	cr_assert_eq(fs.n_missing_required, 0);
	/* every hook of dmsc_hooks has a row */
	cr_assert(dmsc_features_find(&fs, "cgroup/connect4") != NULL);
}
