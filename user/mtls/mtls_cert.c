// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The mesh CA and the hosts' certificates, with OpenSSL 3 (docs/mtls.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "mtls_cert.h"

/* A certificate's start is set this far back, so a peer whose clock is a
 * little behind does not refuse a certificate issued a moment ago. */
#define NOT_BEFORE_SKEW_S 300
/* Random serial numbers: RFC 5280 allows 20 octets, positive. */
#define SERIAL_BITS 159

static int say(char *why, size_t len, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int say(char *why, size_t len, int err, const char *fmt, ...)
{
	va_list ap;

	if (why && len) {
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return err;
}

/* OpenSSL's last error as text, "" when there is none; clears the queue. */
static const char *ssl_err(void)
{
	static __thread char buf[256];
	unsigned long e = ERR_get_error();

	buf[0] = '\0';
	if (e) {
		buf[0] = ':';
		buf[1] = ' ';
		ERR_error_string_n(e, buf + 2, sizeof(buf) - 2);
	}
	ERR_clear_error();
	return buf;
}

const char *dmsc_mtls_trust_domain_invalid(const char *td)
{
	size_t i, n = strlen(td);

	if (n == 0)
		return "is empty";
	if (n > DMSC_MTLS_TD_MAX)
		return "is longer than 255 characters";
	if (td[0] == '.' || td[n - 1] == '.')
		return "starts or ends with a dot";
	for (i = 0; i < n; i++) {
		char c = td[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
		      c == '_'))
			return "may hold only lowercase letters, digits, '.', '-' and '_'";
	}
	return NULL;
}

const char *dmsc_mtls_host_invalid(const char *host)
{
	size_t i, n = strlen(host), label = 0;

	if (n == 0)
		return "is empty";
	if (n > DMSC_MTLS_HOST_MAX)
		return "is longer than 253 characters";
	for (i = 0; i <= n; i++) {
		char c = host[i];

		if (c == '.' || c == '\0') {
			if (label == 0)
				return "has an empty label (two dots, or a dot at an end)";
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return "may hold only lowercase letters, digits, '-' and '.'";
		if (++label > 63)
			return "has a label longer than 63 characters";
	}
	return NULL;
}

static int make_dir(const char *dir, char *why, size_t len)
{
	struct stat st;

	if (mkdir(dir, 0700) == 0)
		return 0;
	if (errno != EEXIST)
		return say(why, len, -errno, "%s: cannot make the directory: %s", dir,
			   strerror(errno));
	if (stat(dir, &st) || !S_ISDIR(st.st_mode))
		return say(why, len, -ENOTDIR, "%s: is not a directory", dir);
	return 0;
}

static void path_join(char *out, size_t len, const char *dir, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

/* Writes what write_fn writes to dir/name through a file beside it, synced,
 * then renamed over name: a reader sees the old file or the new one. */
static int write_atomic(const char *dir, const char *name, mode_t mode,
			int (*write_fn)(FILE *f, void *obj), void *obj, char *why, size_t len)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	FILE *f = NULL;
	int fd, err = 0;

	path_join(path, sizeof(path), dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, name);
	fd = mkstemp(tmp); /* 0600 */
	if (fd < 0)
		return say(why, len, -errno, "%s: cannot write: %s", path, strerror(errno));
	if (fchmod(fd, mode)) {
		err = say(why, len, -errno, "%s: chmod: %s", tmp, strerror(errno));
		close(fd);
		goto out;
	}
	f = fdopen(fd, "w");
	if (!f) {
		err = say(why, len, -errno, "%s: %s", tmp, strerror(errno));
		close(fd);
		goto out;
	}
	if (!write_fn(f, obj)) {
		err = say(why, len, -EIO, "%s: cannot write PEM%s", path, ssl_err());
		goto out;
	}
	if (fflush(f) || fsync(fileno(f))) {
		err = say(why, len, -errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (rename(tmp, path))
		err = say(why, len, -errno, "%s: cannot rename into place: %s", path,
			  strerror(errno));
out:
	if (f)
		fclose(f);
	if (err)
		unlink(tmp);
	return err;
}

static int pem_write_key(FILE *f, void *key)
{
	return PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
}

static int pem_write_cert(FILE *f, void *cert)
{
	return PEM_write_X509(f, cert);
}

int dmsc_mtls_read_cert(const char *file, X509 **out, char *why, size_t len)
{
	FILE *f = fopen(file, "r");

	*out = NULL;
	if (!f)
		return say(why, len, -errno, "%s: %s", file, strerror(errno));
	*out = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!*out)
		return say(why, len, -EINVAL, "%s: not a PEM certificate%s", file, ssl_err());
	return 0;
}

/* A private key file: only its owner may read it. */
static int read_key(const char *file, EVP_PKEY **out, char *why, size_t len)
{
	struct stat st;
	FILE *f = fopen(file, "r");
	int err = 0;

	*out = NULL;
	if (!f)
		return say(why, len, -errno, "%s: %s", file, strerror(errno));
	if (fstat(fileno(f), &st)) {
		err = say(why, len, -errno, "%s: %s", file, strerror(errno));
		goto out;
	}
	if (st.st_mode & 077) {
		err = say(why, len, -EPERM,
			  "%s: mode %04o lets others read a private key; chmod 600 it", file,
			  (unsigned)(st.st_mode & 07777));
		goto out;
	}
	*out = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	if (!*out)
		err = say(why, len, -EINVAL, "%s: not a PEM private key%s", file, ssl_err());
out:
	fclose(f);
	return err;
}

static time_t asn1_to_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (!t || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	return timegm(&tm);
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value, char *why, size_t len)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok;

	if (!ext)
		return say(why, len, -EINVAL, "extension %s \"%s\"%s", OBJ_nid2sn(nid), value,
			   ssl_err());
	ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : say(why, len, -ENOMEM, "extension %s%s", OBJ_nid2sn(nid), ssl_err());
}

/* A new certificate for key, named cn, with the URI SAN uri, valid from a
 * little before now for seconds; signed by issuer/issuer_key, or by itself
 * when issuer is NULL (the CA). */
static int make_cert(EVP_PKEY *key, const char *cn, const char *uri, bool ca, long seconds,
		     X509 *issuer, EVP_PKEY *issuer_key, X509 **out, char *why, size_t len)
{
	X509 *x = X509_new();
	BIGNUM *bn = BN_new();
	X509_NAME *name;
	X509V3_CTX ctx;
	char san[DMSC_MTLS_ID_MAX + 8];
	int err = -ENOMEM;

	*out = NULL;
	if (!x || !bn)
		goto fail;
	if (!X509_set_version(x, X509_VERSION_3) ||
	    !BN_rand(bn, SERIAL_BITS, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -NOT_BEFORE_SKEW_S) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), seconds) || !X509_set_pubkey(x, key))
		goto fail;
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"dmsc", -1,
					-1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
					-1, 0))
		goto fail;
	if (!X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name))
		goto fail;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	snprintf(san, sizeof(san), "URI:%s", uri);
	if ((err = add_ext(x, &ctx, NID_basic_constraints,
			   ca ? "critical,CA:TRUE,pathlen:0" : "critical,CA:FALSE", why, len)) ||
	    (err = add_ext(x, &ctx, NID_key_usage,
			   ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature", why,
			   len)) ||
	    (err = add_ext(x, &ctx, NID_subject_key_identifier, "hash", why, len)) ||
	    (issuer &&
	     (err = add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always", why, len))) ||
	    (!ca &&
	     (err = add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth", why, len))) ||
	    (err = add_ext(x, &ctx, NID_subject_alt_name, san, why, len)))
		goto out;
	if (!X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256())) {
		err = say(why, len, -EINVAL, "signing the certificate for %s%s", uri, ssl_err());
		goto out;
	}
	*out = x;
	x = NULL;
	err = 0;
	goto out;
fail:
	err = say(why, len, -ENOMEM, "building the certificate for %s%s", uri, ssl_err());
out:
	BN_free(bn);
	X509_free(x);
	return err;
}

static int check_seconds(long seconds, char *why, size_t len)
{
	if (seconds < DMSC_MTLS_MIN_SECONDS || seconds > DMSC_MTLS_MAX_SECONDS)
		return say(why, len, -ERANGE,
			   "validity: %ld s is not between %ld s (a minute) and %ld s (ten years)",
			   seconds, DMSC_MTLS_MIN_SECONDS, DMSC_MTLS_MAX_SECONDS);
	return 0;
}

int dmsc_mtls_ca_init(const char *dir, const char *trust_domain, long seconds, char *why,
		      size_t len)
{
	char path[PATH_MAX], uri[DMSC_MTLS_ID_MAX], cn[DMSC_MTLS_TD_MAX + 16];
	const char *bad = dmsc_mtls_trust_domain_invalid(trust_domain);
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	int err;

	if (bad)
		return say(why, len, -EINVAL, "trust domain \"%s\" %s", trust_domain, bad);
	if ((err = check_seconds(seconds, why, len)) || (err = make_dir(dir, why, len)))
		return err;
	path_join(path, sizeof(path), dir, DMSC_MTLS_CA_KEY);
	if (access(path, F_OK) == 0)
		return say(why, len, -EEXIST,
			   "%s exists: a new CA would cut off every host it issued; "
			   "remove it first to start over",
			   path);
	key = EVP_EC_gen("P-256");
	if (!key) {
		err = say(why, len, -ENOMEM, "generating a P-256 key%s", ssl_err());
		goto out;
	}
	snprintf(uri, sizeof(uri), DMSC_MTLS_SPIFFE "%s", trust_domain);
	snprintf(cn, sizeof(cn), "dmsc CA %s", trust_domain);
	if ((err = make_cert(key, cn, uri, true, seconds, NULL, NULL, &cert, why, len)))
		goto out;
	/* the key first: a ca.crt never exists without its key */
	if ((err = write_atomic(dir, DMSC_MTLS_CA_KEY, 0600, pem_write_key, key, why, len)) ||
	    (err = write_atomic(dir, DMSC_MTLS_CA_CERT, 0644, pem_write_cert, cert, why, len)))
		goto out;
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	return err;
}

int dmsc_mtls_issue(const char *ca_dir, const char *host, const char *out_dir, long seconds,
		    struct dmsc_mtls_cert_info *info, char *why, size_t len)
{
	char path[PATH_MAX], uri[DMSC_MTLS_ID_MAX];
	struct dmsc_mtls_cert_info ca_info;
	const char *bad = dmsc_mtls_host_invalid(host);
	EVP_PKEY *ca_key = NULL, *key = NULL;
	X509 *ca = NULL, *cert = NULL;
	time_t now = time(NULL);
	int err;

	if (bad)
		return say(why, len, -EINVAL, "host \"%s\" %s", host, bad);
	if ((err = check_seconds(seconds, why, len)))
		return err;
	path_join(path, sizeof(path), ca_dir, DMSC_MTLS_CA_CERT);
	if ((err = dmsc_mtls_read_cert(path, &ca, why, len)))
		goto out;
	if ((err = dmsc_mtls_cert_describe(ca, &ca_info, why, len)))
		goto out;
	if (!ca_info.is_ca || ca_info.host[0]) {
		err = say(why, len, -EINVAL, "%s: is not a dmsc CA certificate (%s)", path,
			  ca_info.id);
		goto out;
	}
	if (ca_info.not_after <= now) {
		err = say(why, len, -EKEYEXPIRED, "%s: the CA expired; make a new one", path);
		goto out;
	}
	if (now + seconds > ca_info.not_after) {
		err = say(why, len, -ERANGE,
			  "validity: %ld s would outlive the CA (%s ends in %ld s); issue for "
			  "less",
			  seconds, path, (long)(ca_info.not_after - now));
		goto out;
	}
	path_join(path, sizeof(path), ca_dir, DMSC_MTLS_CA_KEY);
	if ((err = read_key(path, &ca_key, why, len)))
		goto out;
	if (!X509_check_private_key(ca, ca_key)) {
		err = say(why, len, -EINVAL, "%s: is not the key of %s/" DMSC_MTLS_CA_CERT "%s",
			  path, ca_dir, ssl_err());
		goto out;
	}
	if ((err = make_dir(out_dir, why, len)))
		goto out;
	key = EVP_EC_gen("P-256");
	if (!key) {
		err = say(why, len, -ENOMEM, "generating a P-256 key%s", ssl_err());
		goto out;
	}
	snprintf(uri, sizeof(uri), DMSC_MTLS_SPIFFE "%s/host/%s", ca_info.trust_domain, host);
	if ((err = make_cert(key, host, uri, false, seconds, ca, ca_key, &cert, why, len)))
		goto out;
	/* Order for a reader that watches the directory (rotation): the CA
	 * first (the same or the new one), then the key, then the certificate
	 * that goes with it; a reader that finds a key and a certificate that
	 * do not match reads again. */
	if ((err = write_atomic(out_dir, DMSC_MTLS_CA_CERT, 0644, pem_write_cert, ca, why, len)) ||
	    (err = write_atomic(out_dir, DMSC_MTLS_HOST_KEY, 0600, pem_write_key, key, why, len)) ||
	    (err =
		 write_atomic(out_dir, DMSC_MTLS_HOST_CERT, 0644, pem_write_cert, cert, why, len)))
		goto out;
	if (info)
		err = dmsc_mtls_cert_describe(cert, info, why, len);
out:
	X509_free(cert);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	return err;
}

/* Splits spiffe://TD[/host/NAME] into info; -EINVAL when it is another form. */
static int parse_id(const char *uri, struct dmsc_mtls_cert_info *info, char *why, size_t len)
{
	const char *td = uri + strlen(DMSC_MTLS_SPIFFE), *slash;
	size_t n;

	if (strncmp(uri, DMSC_MTLS_SPIFFE, strlen(DMSC_MTLS_SPIFFE)))
		return say(why, len, -EINVAL, "URI SAN \"%s\" is not spiffe://", uri);
	slash = strchr(td, '/');
	n = slash ? (size_t)(slash - td) : strlen(td);
	if (n == 0 || n > DMSC_MTLS_TD_MAX)
		return say(why, len, -EINVAL, "URI SAN \"%s\" has no trust domain", uri);
	memcpy(info->trust_domain, td, n);
	info->trust_domain[n] = '\0';
	if (dmsc_mtls_trust_domain_invalid(info->trust_domain))
		return say(why, len, -EINVAL, "URI SAN \"%s\": trust domain %s", uri,
			   dmsc_mtls_trust_domain_invalid(info->trust_domain));
	info->host[0] = '\0';
	if (!slash)
		return 0;
	if (strncmp(slash, "/host/", 6) || dmsc_mtls_host_invalid(slash + 6))
		return say(why, len, -EINVAL, "URI SAN \"%s\" is not spiffe://TD/host/NAME", uri);
	snprintf(info->host, sizeof(info->host), "%s", slash + 6);
	return 0;
}

int dmsc_mtls_cert_describe(X509 *cert, struct dmsc_mtls_cert_info *info, char *why, size_t len)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0, i;
	const char *uri = NULL;
	BIGNUM *bn;
	char *hex;
	int n_uri = 0, k, err = 0;

	memset(info, 0, sizeof(*info));
	for (k = 0; sans && k < sk_GENERAL_NAME_num(sans); k++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, k);

		if (g->type != GEN_URI)
			continue;
		n_uri++;
		uri = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
		if ((size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier) != strlen(uri) ||
		    strlen(uri) >= sizeof(info->id))
			uri = NULL;
		else
			snprintf(info->id, sizeof(info->id), "%s", uri);
	}
	GENERAL_NAMES_free(sans);
	if (n_uri != 1 || !uri) {
		err = say(why, len, -EINVAL,
			  "the certificate has %d URI SANs; a dmsc identity is exactly one "
			  "spiffe:// URI",
			  n_uri);
		goto out;
	}
	if ((err = parse_id(info->id, info, why, len)))
		goto out;
	info->is_ca = (X509_get_extension_flags(cert) & EXFLAG_CA) != 0;
	info->not_before = asn1_to_time(X509_get0_notBefore(cert));
	info->not_after = asn1_to_time(X509_get0_notAfter(cert));
	X509_NAME_oneline(X509_get_subject_name(cert), info->subject, sizeof(info->subject));
	X509_NAME_oneline(X509_get_issuer_name(cert), info->issuer, sizeof(info->issuer));
	bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	hex = bn ? BN_bn2hex(bn) : NULL;
	snprintf(info->serial, sizeof(info->serial), "%s", hex ? hex : "");
	OPENSSL_free(hex);
	BN_free(bn);
	if (X509_digest(cert, EVP_sha256(), md, &md_len))
		for (i = 0; i < md_len && 2 * i + 2 < sizeof(info->sha256); i++)
			snprintf(info->sha256 + 2 * i, 3, "%02x", md[i]);
out:
	return err;
}

int dmsc_mtls_peer_identity(X509 *cert, const char *trust_domain, char *host_out, size_t host_len,
			    char *why, size_t len)
{
	struct dmsc_mtls_cert_info info;
	int err;

	if (!cert)
		return say(why, len, -EACCES, "the peer sent no certificate");
	if ((err = dmsc_mtls_cert_describe(cert, &info, why, len)))
		return -EACCES;
	if (strcmp(info.trust_domain, trust_domain))
		return say(why, len, -EACCES,
			   "the peer's identity %s is not of the trust domain %s", info.id,
			   trust_domain);
	if (info.is_ca || !info.host[0])
		return say(why, len, -EACCES, "the peer's certificate %s is not a host's", info.id);
	if (host_out)
		snprintf(host_out, host_len, "%s", info.host);
	return 0;
}

int dmsc_mtls_verify_file(const char *cert_file, const char *ca_file, time_t at,
			  struct dmsc_mtls_cert_info *info, char *why, size_t len)
{
	struct dmsc_mtls_cert_info ca_info, own;
	X509_STORE_CTX *ctx = NULL;
	X509_STORE *store = NULL;
	X509 *cert = NULL, *ca = NULL;
	int err;

	if (!info)
		info = &own;
	if ((err = dmsc_mtls_read_cert(cert_file, &cert, why, len)) ||
	    (err = dmsc_mtls_read_cert(ca_file, &ca, why, len)))
		goto out;
	if ((err = dmsc_mtls_cert_describe(ca, &ca_info, why, len)))
		goto out;
	store = X509_STORE_new();
	ctx = X509_STORE_CTX_new();
	if (!store || !ctx || !X509_STORE_add_cert(store, ca) ||
	    !X509_STORE_CTX_init(ctx, store, cert, NULL)) {
		err = say(why, len, -ENOMEM, "%s: verifying%s", cert_file, ssl_err());
		goto out;
	}
	if (at)
		X509_STORE_CTX_set_time(ctx, 0, at);
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	if (X509_verify_cert(ctx) != 1) {
		err = say(why, len, -EACCES, "%s: not valid under %s: %s", cert_file, ca_file,
			  X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
		goto out;
	}
	if ((err = dmsc_mtls_cert_describe(cert, info, why, len)))
		goto out;
	if ((err = dmsc_mtls_peer_identity(cert, ca_info.trust_domain, NULL, 0, why, len)))
		goto out;
out:
	ERR_clear_error();
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	X509_free(cert);
	X509_free(ca);
	return err;
}
