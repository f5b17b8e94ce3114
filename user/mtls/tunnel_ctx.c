// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's TLS context: built from the certificate files, ALPN
 * (docs/design.md decision 64), session tickets, kTLS's probe, and a
 * connection's peer checked again when the files change (decision 54).
 * The connections themselves: tunnel_tls.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "mtls_cert.h"
#include "tunnel.h"
#include "tunnel_authz.h"
#include "tunnel_frame.h"
#include "tunnel_int.h"

int tn_conn_ex_idx = -1;

/* ---- TLS context ---- */

const char *tn_ssl_err(void)
{
	static char buf[256];
	unsigned long e = ERR_peek_last_error();

	if (!e)
		return "no detail";
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

/* Why an SSL_read or SSL_write that failed with SSL_get_error() E (not a
 * WANT_*) ended the connection; ERRNO: errno right after the call (a
 * failed send or receive of the socket, kTLS's included, leaves only
 * that). */
const char *tn_ssl_io_why(int e, int err)
{
	static char buf[128];

	if (e == SSL_ERROR_ZERO_RETURN)
		return "closed by the peer";
	if (ERR_peek_last_error())
		return tn_ssl_err();
	if (e == SSL_ERROR_SYSCALL && err) {
		snprintf(buf, sizeof(buf), "the socket: %s", strerror(err));
		return buf;
	}
	return "connection lost (closed without close_notify)";
}

static int verify_cb(int ok, X509_STORE_CTX *x)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct conn *c = ssl ? SSL_get_ex_data(ssl, tn_conn_ex_idx) : NULL;
	X509 *cert = X509_STORE_CTX_get_current_cert(x);
	char subject[256] = "?";

	if (!ok && c && !c->why[0]) {
		if (cert)
			X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
		snprintf(c->why, sizeof(c->why), "its certificate %s: %s (depth %d)", subject,
			 X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)),
			 X509_STORE_CTX_get_error_depth(x));
	}
	return ok;
}

/* Keeps the newest ticket per peer, for the next connection to it. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct conn *c = SSL_get_ex_data(ssl, tn_conn_ex_idx);
	struct peer *p;

	if (!c || c->server || c->peer_idx < 0)
		return 0;
	p = &c->t->peers[c->peer_idx];
	SSL_SESSION_free(p->sess);
	p->sess = sess;
	return 1; /* we keep the reference */
}

/* ALPN (docs/design.md decision 64): a peer must offer this framing's
 * id. Checked at the ClientHello, before any certificate, so a client
 * offering none or another gets the no_application_protocol alert and the
 * log says what it offered. */
static int client_hello_cb(SSL *ssl, int *al, void *arg)
{
	struct conn *c = SSL_get_ex_data(ssl, tn_conn_ex_idx);
	char offered[128];
	const unsigned char *ext;
	size_t len;

	(void)arg;
	if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
				       &ext, &len)) {
		if (c)
			snprintf(c->why, sizeof(c->why),
				 "it offered no ALPN protocol (" DMSC_TF_ALPN " required)");
		*al = SSL_AD_NO_APPLICATION_PROTOCOL;
		return SSL_CLIENT_HELLO_ERROR;
	}
	if (!dmsc_tf_alpn_offered(ext, len, offered, sizeof(offered))) {
		if (c)
			snprintf(c->why, sizeof(c->why),
				 "it offered ALPN protocol%s %s, not " DMSC_TF_ALPN,
				 strchr(offered, ',') ? "s" : "", offered[0] ? offered : "(malformed)");
		*al = SSL_AD_NO_APPLICATION_PROTOCOL;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = DMSC_TF_ALPN_WIRE;
	unsigned char *sel;

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static void files(const struct tunnel *t, char paths[3][4096])
{
	snprintf(paths[0], 4096, "%s/" DMSC_MTLS_CA_CERT, t->o->mtls_dir);
	snprintf(paths[1], 4096, "%s/" DMSC_MTLS_HOST_CERT, t->o->mtls_dir);
	snprintf(paths[2], 4096, "%s/" DMSC_MTLS_HOST_KEY, t->o->mtls_dir);
}

/* A new context from the files; the caller swaps it in. */
int tn_ctx_load(struct tunnel *t, SSL_CTX **out, char *td, char *why, size_t len)
{
	struct dmsc_mtls_cert_info ca_info, host_info;
	char paths[3][4096];
	struct stat st;
	SSL_CTX *ctx;
	X509 *ca = NULL;
	int err;

	*out = NULL;
	files(t, paths);
	if (stat(paths[2], &st) == 0 && (st.st_mode & 077)) {
		snprintf(why, len, "%.400s: mode %04o lets others read a private key; chmod 600 it",
			 paths[2], (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	if ((err = dmsc_mtls_read_cert(paths[0], &ca, why, len)) ||
	    (err = dmsc_mtls_cert_describe(ca, &ca_info, why, len)))
		goto out;
	if ((err = dmsc_mtls_verify_file(paths[1], paths[0], 0, &host_info, why, len)))
		goto out;
	ctx = SSL_CTX_new(TLS_method());
	if (!ctx) {
		err = -ENOMEM;
		snprintf(why, len, "SSL_CTX_new: %s", tn_ssl_err());
		goto out;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* one read() takes whatever records arrived, not a header and then
	 * its body: conn_read calls SSL_read until it wants more */
	SSL_CTX_set_read_ahead(ctx, 1);
	/* after the handshake OpenSSL hands the keys to the kernel, which
	 * then seals (and, where OpenSSL can, opens) records (decision 45) */
	if (t->ktls)
		SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"dmsc-tunnel", 11);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_SERVER |
						SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
	SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
	/* 0 is success here */
	if (SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)DMSC_TF_ALPN_WIRE,
				    sizeof(DMSC_TF_ALPN_WIRE) - 1)) {
		err = -ENOMEM;
		snprintf(why, len, "SSL_CTX_set_alpn_protos: %s", tn_ssl_err());
		SSL_CTX_free(ctx);
		goto out;
	}
	if (!SSL_CTX_load_verify_locations(ctx, paths[0], NULL) ||
	    !SSL_CTX_use_certificate_file(ctx, paths[1], SSL_FILETYPE_PEM) ||
	    !SSL_CTX_use_PrivateKey_file(ctx, paths[2], SSL_FILETYPE_PEM) ||
	    !SSL_CTX_check_private_key(ctx)) {
		err = -EINVAL;
		snprintf(why, len, "%s: %s", t->o->mtls_dir, tn_ssl_err());
		SSL_CTX_free(ctx);
		goto out;
	}
	snprintf(td, DMSC_MTLS_TD_MAX + 1, "%s", ca_info.trust_domain);
	*out = ctx;
	pr_info("tunnel: identity %s (valid until %ld), trust domain %s\n", host_info.id,
		(long)host_info.not_after, td);
out:
	X509_free(ca);
	ERR_clear_error();
	return err;
}

bool tn_files_changed(struct tunnel *t, bool remember)
{
	char paths[3][4096];
	struct stat st;
	bool changed = false;
	int i;

	files(t, paths);
	for (i = 0; i < 3; i++) {
		if (stat(paths[i], &st))
			continue;
		if (st.st_mtim.tv_sec != t->files_mtime[i].tv_sec ||
		    st.st_mtim.tv_nsec != t->files_mtime[i].tv_nsec) {
			changed = true;
			if (remember)
				t->files_mtime[i] = st.st_mtim;
		}
	}
	return changed;
}

/* kTLS is Linux's "tls" upper layer protocol (CONFIG_TLS, a module).
 * Asking for it on a socket not yet connected loads the module where there
 * is one, then fails with ENOTCONN; where there is none, with ENOENT. */
bool tn_ktls_probe(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), err = 0;

	if (fd < 0 || setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")))
		err = errno;
	if (fd >= 0)
		close(fd);
	if (err == ENOENT || err == EOPNOTSUPP || err == EPERM || fd < 0) {
		pr_info("tunnel: kTLS: not available (TCP_ULP tls: %s); OpenSSL seals and opens "
			"records in userspace\n",
			strerror(err));
		return false;
	}
	pr_info("tunnel: kTLS: available; the kernel takes the records after each handshake "
		"where OpenSSL can hand them over\n");
	return true;
}

/* An established connection's peer certificate checked again under the
 * current context: after a change of CA (ca.crt) a peer still holding a
 * certificate of the old one no longer verifies (docs/design.md decision
 * 54). The chain and validity as the handshake checked them, then the
 * trust domain and host. */
int tn_conn_reverify(struct conn *c, char *why, size_t len)
{
	X509 *peer = SSL_get0_peer_certificate(c->ssl);
	X509_STORE_CTX *x = X509_STORE_CTX_new();
	char host[DMSC_MTLS_HOST_MAX + 1], subject[256] = "?";
	int err = 0;

	if (!peer) {
		snprintf(why, len, "it presented no certificate");
		err = -EACCES;
		goto out;
	}
	if (!x || !X509_STORE_CTX_init(x, SSL_CTX_get_cert_store(c->t->ctx), peer,
				       SSL_get_peer_cert_chain(c->ssl))) {
		snprintf(why, len, "X509_STORE_CTX: %s", tn_ssl_err());
		err = -ENOMEM;
		goto out;
	}
	if (X509_verify_cert(x) <= 0) {
		X509 *bad = X509_STORE_CTX_get_current_cert(x);
		char at[256] = "";

		X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
		/* the CA the peer sent in its chain has the new one's name:
		 * say which certificate of the chain failed */
		if (bad && bad != peer)
			X509_NAME_oneline(X509_get_subject_name(bad), at, sizeof(at));
		snprintf(why, len,
			 "its certificate %s does not verify under the current ca.crt: %s "
			 "(depth %d%s%s)",
			 subject, X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)),
			 X509_STORE_CTX_get_error_depth(x), at[0] ? ", " : "", at);
		err = -EACCES;
		goto out;
	}
	err = dmsc_mtls_peer_identity(peer, c->t->td, host, sizeof(host), why, len);
out:
	X509_STORE_CTX_free(x);
	ERR_clear_error();
	return err;
}
