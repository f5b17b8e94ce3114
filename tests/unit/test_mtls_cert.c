// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The mesh CA and host certificates (user/mtls/mtls_cert.c), in temporary
 * directories: what is written, and what a peer's check refuses and why. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "mtls_cert.h"
#include "tmpdir.h"

static char tmp[64];

static void setup(void)
{
	tmpdir_make(tmp, sizeof(tmp), "dmsc-unit-mtls");
}

static void teardown(void)
{
	tmpdir_remove(tmp);
}

static const char *in_tmp(const char *name)
{
	static char paths[8][PATH_MAX];
	static int next;
	char *p = paths[next++ % 8];

	snprintf(p, PATH_MAX, "%s/%s", tmp, name);
	return p;
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

TestSuite(mtls_cert, .init = setup, .fini = teardown);

Test(mtls_cert, names)
{
	static const char *const bad_domains[] = {"", "Mesh", "mesh/x", ".mesh"};
	static const char *const bad_hosts[] = {
	    "", "a..b", "a.", "under_score", "a/b",
	    "a234567890123456789012345678901234567890123456789012345678901234"};
	size_t i;

	cr_expect_null(dmsc_mtls_trust_domain_invalid("mesh.example_1-a"));
	for (i = 0; i < sizeof(bad_domains) / sizeof(bad_domains[0]); i++)
		cr_expect_not_null(dmsc_mtls_trust_domain_invalid(bad_domains[i]), "\"%s\"",
				   bad_domains[i]);
	cr_expect_null(dmsc_mtls_host_invalid("node-1.rack2"));
	for (i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++)
		cr_expect_not_null(dmsc_mtls_host_invalid(bad_hosts[i]), "\"%s\"", bad_hosts[i]);
}

Test(mtls_cert, init_and_issue_write_what_a_peer_accepts)
{
	struct dmsc_mtls_cert_info info, v;
	char why[DMSC_MTLS_WHY_MAX], host[DMSC_MTLS_HOST_MAX + 1];
	X509 *x;
	time_t now = time(NULL);

	cr_assert_eq(dmsc_mtls_ca_init(in_tmp("ca"), "mesh.test", 86400, why, sizeof(why)), 0, "%s",
		     why);
	cr_expect_eq(mode_of(in_tmp("ca/ca.key")), 0600);
	cr_expect_eq(mode_of(in_tmp("ca")), 0700);
	cr_assert_eq(
	    dmsc_mtls_issue(in_tmp("ca"), "node-a", in_tmp("a"), 3600, &info, why, sizeof(why)), 0,
	    "%s", why);
	cr_expect_str_eq(info.id, "spiffe://mesh.test/host/node-a");
	cr_expect_str_eq(info.host, "node-a");
	cr_expect_str_eq(info.trust_domain, "mesh.test");
	cr_expect_not(info.is_ca);
	cr_expect(info.not_after >= now + 3600 - 5 && info.not_after <= now + 3600 + 5);
	cr_expect(info.not_before <= now);
	cr_expect_eq(mode_of(in_tmp("a/host.key")), 0600);
	cr_expect_eq(mode_of(in_tmp("a/host.crt")), 0644);
	cr_expect_eq(mode_of(in_tmp("a/ca.crt")), 0644);
	cr_expect_eq(mode_of(in_tmp("a")), 0700);

	cr_expect_eq(dmsc_mtls_verify_file(in_tmp("a/host.crt"), in_tmp("a/ca.crt"), 0, &v, why,
					   sizeof(why)),
		     0, "%s", why);
	cr_expect_str_eq(v.sha256, info.sha256);
	cr_assert_eq(dmsc_mtls_read_cert(in_tmp("a/host.crt"), &x, why, sizeof(why)), 0);
	cr_expect_eq(dmsc_mtls_peer_identity(x, "mesh.test", host, sizeof(host), why, sizeof(why)),
		     0, "%s", why);
	cr_expect_str_eq(host, "node-a");
	/* another mesh's trust domain */
	cr_expect_eq(dmsc_mtls_peer_identity(x, "other.test", host, sizeof(host), why, sizeof(why)),
		     -EACCES);
	cr_expect(strstr(why, "not of the trust domain other.test") != NULL, "%s", why);
	X509_free(x);
	/* the CA's own certificate is not a host's */
	cr_assert_eq(dmsc_mtls_read_cert(in_tmp("ca/ca.crt"), &x, why, sizeof(why)), 0);
	cr_expect_eq(dmsc_mtls_peer_identity(x, "mesh.test", NULL, 0, why, sizeof(why)), -EACCES);
	cr_expect(strstr(why, "is not a host's") != NULL, "%s", why);
	X509_free(x);
}

Test(mtls_cert, a_foreign_ca_and_an_expired_certificate_are_refused_with_the_reason)
{
	char why[DMSC_MTLS_WHY_MAX];
	struct dmsc_mtls_cert_info info;

	cr_assert_eq(dmsc_mtls_ca_init(in_tmp("ca"), "mesh.test", 86400, why, sizeof(why)), 0);
	cr_assert_eq(dmsc_mtls_ca_init(in_tmp("other"), "mesh.test", 86400, why, sizeof(why)), 0);
	cr_assert_eq(dmsc_mtls_issue(in_tmp("other"), "intruder", in_tmp("i"), 3600, &info, why,
				     sizeof(why)),
		     0);
	/* same trust domain, another CA: the chain does not reach our ca.crt */
	cr_expect_eq(dmsc_mtls_verify_file(in_tmp("i/host.crt"), in_tmp("ca/ca.crt"), 0, NULL, why,
					   sizeof(why)),
		     -EACCES);
	cr_expect(strstr(why, "unable to get local issuer certificate") != NULL, "%s", why);
	/* expired: checked as at one second past its end */
	cr_expect_eq(dmsc_mtls_verify_file(in_tmp("i/host.crt"), in_tmp("i/ca.crt"),
					   info.not_after + 1, NULL, why, sizeof(why)),
		     -EACCES);
	cr_expect(strstr(why, "certificate has expired") != NULL, "%s", why);
	cr_expect_eq(dmsc_mtls_verify_file(in_tmp("i/host.crt"), in_tmp("i/ca.crt"),
					   info.not_after - 60, NULL, why, sizeof(why)),
		     0, "%s", why);
}

Test(mtls_cert, refusals_name_what_is_wrong)
{
	/* issues refused with the CA made below: the error, what why says */
	static const struct {
		const char *ca, *host;
		long seconds;
		int err;
		const char *why;
	} issues[] = {
	    {"ca", "Node_A", 3600, -EINVAL, "host \"Node_A\""},
	    {"ca", "a", 2 * 86400, -ERANGE, "would outlive the CA"}, /* never past the CA's end */
	    {"nothing", "a", 3600, -ENOENT, "nothing/ca.crt"},
	};
	char why[DMSC_MTLS_WHY_MAX];
	size_t i;

	cr_expect_eq(dmsc_mtls_ca_init(in_tmp("ca"), "Bad TD", 86400, why, sizeof(why)), -EINVAL);
	cr_expect(strstr(why, "trust domain \"Bad TD\"") != NULL, "%s", why);
	cr_expect_eq(dmsc_mtls_ca_init(in_tmp("ca"), "mesh.test", 10, why, sizeof(why)), -ERANGE);
	cr_assert_eq(dmsc_mtls_ca_init(in_tmp("ca"), "mesh.test", 86400, why, sizeof(why)), 0);
	/* a second init would cut every host off */
	cr_expect_eq(dmsc_mtls_ca_init(in_tmp("ca"), "mesh.test", 86400, why, sizeof(why)),
		     -EEXIST);
	cr_expect(strstr(why, "ca.key exists") != NULL, "%s", why);
	for (i = 0; i < sizeof(issues) / sizeof(issues[0]); i++) {
		cr_expect_eq(dmsc_mtls_issue(in_tmp(issues[i].ca), issues[i].host, in_tmp("a"),
					     issues[i].seconds, NULL, why, sizeof(why)),
			     issues[i].err, "%s", issues[i].why);
		cr_expect(strstr(why, issues[i].why) != NULL, "%s", why);
	}
	/* a CA key others can read */
	cr_assert_eq(chmod(in_tmp("ca/ca.key"), 0640), 0);
	cr_expect_eq(dmsc_mtls_issue(in_tmp("ca"), "a", in_tmp("a"), 3600, NULL, why, sizeof(why)),
		     -EPERM);
	cr_expect(strstr(why, "chmod 600") != NULL, "%s", why);
	cr_expect_eq(access(in_tmp("a/host.key"), F_OK), -1, "nothing written on a refusal");
}

Test(mtls_cert, issuing_again_replaces_every_file_in_place)
{
	struct dmsc_mtls_cert_info one, two;
	char why[DMSC_MTLS_WHY_MAX];

	cr_assert_eq(dmsc_mtls_ca_init(in_tmp("ca"), "mesh.test", 86400, why, sizeof(why)), 0);
	cr_assert_eq(dmsc_mtls_issue(in_tmp("ca"), "a", in_tmp("a"), 3600, &one, why, sizeof(why)),
		     0);
	cr_assert_eq(dmsc_mtls_issue(in_tmp("ca"), "a", in_tmp("a"), 7200, &two, why, sizeof(why)),
		     0);
	cr_expect_str_neq(one.serial, two.serial);
	cr_expect_eq(dmsc_mtls_verify_file(in_tmp("a/host.crt"), in_tmp("a/ca.crt"), 0, &one, why,
					   sizeof(why)),
		     0, "%s", why);
	cr_expect_str_eq(one.serial, two.serial);
	cr_expect_eq(mode_of(in_tmp("a/host.key")), 0600);
}
