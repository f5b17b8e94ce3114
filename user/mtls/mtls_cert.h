/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The mesh CA and the hosts' certificates (docs/design.md decision 10,
 * docs/mtls.md): a CA directory holds ca.crt and ca.key; a host directory
 * holds ca.crt, host.crt and host.key (0600). Keys are ECDSA P-256; a
 * certificate names its identity as one URI SAN: spiffe://TD for the CA,
 * spiffe://TD/host/NAME for a host.
 *
 * Every function returns 0 or a negative errno and, on failure, writes a
 * message naming the file or field and what is wrong into why.
 */
#ifndef DMSC_MTLS_CERT_H
#define DMSC_MTLS_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#define DMSC_MTLS_CA_CERT "ca.crt"
#define DMSC_MTLS_CA_KEY "ca.key"
#define DMSC_MTLS_HOST_CERT "host.crt"
#define DMSC_MTLS_HOST_KEY "host.key"
#define DMSC_MTLS_SPIFFE "spiffe://"
/* SPIFFE: a trust domain is at most 255 characters; a host name is one DNS name. */
#define DMSC_MTLS_TD_MAX 255
#define DMSC_MTLS_HOST_MAX 253
#define DMSC_MTLS_ID_MAX (sizeof(DMSC_MTLS_SPIFFE) + DMSC_MTLS_TD_MAX + 6 + DMSC_MTLS_HOST_MAX)
#define DMSC_MTLS_WHY_MAX 512

/* Defaults: a CA for a year, a host certificate for a day (short: a host
 * taken out of the mesh is out when its certificate runs out). */
#define DMSC_MTLS_CA_DEFAULT_SECONDS (365L * 86400)
#define DMSC_MTLS_HOST_DEFAULT_SECONDS (24L * 3600)
/* At most ten years, at least a minute. */
#define DMSC_MTLS_MAX_SECONDS (3650L * 86400)
#define DMSC_MTLS_MIN_SECONDS 60L

/* What a certificate says about itself (dmscctl ca show, the helper's logs). */
struct dmsc_mtls_cert_info {
	char id[DMSC_MTLS_ID_MAX]; /* its spiffe:// URI SAN */
	char trust_domain[DMSC_MTLS_TD_MAX + 1];
	char host[DMSC_MTLS_HOST_MAX + 1]; /* "" for the CA */
	char subject[256];
	char issuer[256];
	char serial[80]; /* hex */
	char sha256[96]; /* hex fingerprint of the DER */
	time_t not_before;
	time_t not_after;
	bool is_ca;
};

/* A valid trust domain: 1..255 of [a-z0-9._-] (SPIFFE), not starting or
 * ending with a dot. A valid host name: 1..253 of [a-z0-9.-], labels not
 * empty. Return NULL when valid, else what is wrong. */
const char *dmsc_mtls_trust_domain_invalid(const char *td);
const char *dmsc_mtls_host_invalid(const char *host);

/* Makes a new CA in dir (created 0700 when missing): ca.key (0600) and a
 * self-signed ca.crt valid for seconds. Refuses a dir that holds a ca.key
 * already (-EEXIST): a new CA would cut every host off. */
int dmsc_mtls_ca_init(const char *dir, const char *trust_domain, long seconds, char *why,
		      size_t why_len);

/* Issues a host certificate for host from the CA in ca_dir, valid for
 * seconds (not past the CA's own end: -ERANGE), with a new key, into out_dir
 * (created 0700 when missing): host.key (0600), host.crt, ca.crt. Each file
 * is written aside and renamed in, so a reader never sees half a file; the
 * key is renamed in first. info, when not NULL, describes the new host.crt. */
int dmsc_mtls_issue(const char *ca_dir, const char *host, const char *out_dir, long seconds,
		    struct dmsc_mtls_cert_info *info, char *why, size_t why_len);

/* Reads one PEM certificate from file. */
int dmsc_mtls_read_cert(const char *file, X509 **out, char *why, size_t why_len);

/* Describes cert; -EINVAL when it has no single spiffe:// URI SAN. */
int dmsc_mtls_cert_describe(X509 *cert, struct dmsc_mtls_cert_info *info, char *why,
			    size_t why_len);

/* The check of a peer's certificate beyond the chain (which the TLS stack
 * verifies against ca.crt): it names a host of trust_domain, and it is a
 * host certificate, not a CA. host_out gets the host name. */
int dmsc_mtls_peer_identity(X509 *cert, const char *trust_domain, char *host_out, size_t host_len,
			    char *why, size_t why_len);

/* Verifies the certificate in cert_file against the CA in ca_file at time
 * at (0: now), as a peer would: chain, validity, trust domain. */
int dmsc_mtls_verify_file(const char *cert_file, const char *ca_file, time_t at,
			  struct dmsc_mtls_cert_info *info, char *why, size_t why_len);

#endif /* DMSC_MTLS_CERT_H */
