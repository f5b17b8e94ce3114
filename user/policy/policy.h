/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Policy version 1: parsing and whole-document validation. Nothing here
 * touches the kernel; `dmscctl check` runs it without privileges.
 */
#ifndef DMSC_POLICY_H
#define DMSC_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dmsc/shared.h"

/* The smallest byte bucket: one 64 KiB GSO packet must fit. */
#define DMSC_BYTES_BURST_MIN 65536

enum dmsc_policy_proto {
	DMSC_POLICY_TCP,
	DMSC_POLICY_UDP,
	DMSC_POLICY_HTTP,
};

enum dmsc_accelerate {
	DMSC_ACCEL_AUTO,
	DMSC_ACCEL_ON,
	DMSC_ACCEL_OFF,
};

/* "affinity" of a service (docs/design.md decision 97): none, each
 * connection (each HTTP request) picks a backend by weight; client, each
 * client's connections go to one backend, the weights spread clients.
 * header, cookie (http services, decision 98): the requests that carry
 * one value of a header (of a cookie) go to one backend, whichever client
 * sends them; the others, and connections at L4, as under client. */
enum dmsc_affinity {
	DMSC_AFFINITY_NONE,
	DMSC_AFFINITY_CLIENT,
	DMSC_AFFINITY_HEADER,
	DMSC_AFFINITY_COOKIE,
};

/* "mtls" of a service (docs/design.md decision 24): how a connection to a
 * backend on another host travels, and whether the backend's host lets in
 * plain text from other hosts. */
enum dmsc_mtls_mode {
	DMSC_MTLS_OFF,
	DMSC_MTLS_PERMISSIVE,
	DMSC_MTLS_REQUIRED,
};

/* A host name of the top-level "hosts" table: a lowercase DNS name, as in
 * a host certificate's spiffe://TD/host/NAME. */
#define DMSC_POLICY_HOST_MAX 253

struct dmsc_label {
	char *key;
	char *value;
};

/* A host's tunnel address, as "hosts" writes it: "198.18.13.2:15008" or
 * "[2001:2::2]:15008" (docs/design.md decision 64). family 0: none (a host
 * whose etcd key is missing or not valid yet). */
struct dmsc_host_addr {
	uint8_t family;	 /* AF_INET, AF_INET6; 0: none */
	uint16_t port;	 /* host order */
	uint32_t v4;	 /* network order */
	uint8_t v6[16];
};

/* Addresses: an IPv4 one in addr (network order), an IPv6 one in addr6;
 * the service's family says which (docs/design.md decision 12). */
struct dmsc_policy_backend {
	uint32_t addr; /* network order; 0 for IPv6 */
	uint8_t addr6[16];
	uint16_t port; /* host order */
	uint32_t weight;
	struct dmsc_label *labels;
	size_t n_labels;
	/* "host": the host the backend runs on, NULL when absent; resolved
	 * through the document's "hosts" into that host's tunnel address */
	char *host;
	struct dmsc_host_addr host_at;
};

/* A field that is absent has its has_* flag false. */
struct dmsc_rate_limit {
	bool has_connections_per_second, has_burst, has_bytes_per_second, has_bytes_burst,
	    has_requests_per_second;
	uint64_t connections_per_second;
	uint64_t burst; /* connections and requests */
	uint64_t bytes_per_second;
	uint64_t bytes_burst;
	uint64_t requests_per_second;
};

struct dmsc_route_match {
	char *path_prefix; /* NULL when absent */
	char *path;	   /* exact path; NULL when absent */
	char *method;	   /* NULL when absent */
	struct dmsc_label *headers;
	size_t n_headers;
};

struct dmsc_route {
	struct dmsc_route_match match;
	struct dmsc_label *selector; /* "backends": label selector */
	size_t n_selector;
	bool has_timeout_ms, has_retries;
	uint32_t timeout_ms;
	uint32_t retries;
	bool idempotent; /* safe to send twice whatever the method */
};

/* health (docs/policy.md "health"): the defaults of what a present
 * active or passive object leaves out, and the bounds of each field. */
#define DMSC_HEALTH_INTERVAL_MS_DEFAULT 5000
#define DMSC_HEALTH_TIMEOUT_MS_DEFAULT 1000
#define DMSC_HEALTH_UNHEALTHY_THRESHOLD_DEFAULT 3
#define DMSC_HEALTH_HEALTHY_THRESHOLD_DEFAULT 2
#define DMSC_HEALTH_EXPECTED_STATUS_DEFAULT 200
#define DMSC_HEALTH_CONSECUTIVE_FAILURES_DEFAULT 5
#define DMSC_HEALTH_BASE_EJECTION_MS_DEFAULT 30000
#define DMSC_HEALTH_MAX_EJECTION_MS_DEFAULT 300000
#define DMSC_HEALTH_MAX_EJECTION_PERCENT_DEFAULT 100
#define DMSC_HEALTH_INTERVAL_MS_MIN 100
#define DMSC_HEALTH_INTERVAL_MS_MAX 3600000
#define DMSC_HEALTH_TIMEOUT_MS_MIN 10
#define DMSC_HEALTH_THRESHOLD_MAX 100
#define DMSC_HEALTH_FAILURES_MAX 1000
#define DMSC_HEALTH_EJECTION_MS_MIN 100
#define DMSC_HEALTH_EJECTION_MS_MAX 86400000
#define DMSC_HEALTH_PATH_MAX 255

enum dmsc_probe_type {
	DMSC_PROBE_TCP,
	DMSC_PROBE_HTTP,
};

/* Probes dmscd sends to each backend's address from the host. */
struct dmsc_health_active {
	enum dmsc_probe_type type;
	char *path;		  /* http: the request target; NULL for tcp */
	uint32_t expected_status; /* http */
	uint32_t interval_ms, timeout_ms;
	uint32_t unhealthy_threshold, healthy_threshold;
};

/* Connect failures the kernel sees eject a backend. */
struct dmsc_health_passive {
	uint32_t consecutive_failures;
	uint32_t base_ejection_ms, max_ejection_ms;
	uint32_t max_ejection_percent; /* of the service's backends, 1-100 */
};

struct dmsc_health {
	bool has_active, has_passive;
	struct dmsc_health_active active;
	struct dmsc_health_passive passive;
};

struct dmsc_policy_service {
	char *name;
	int family;   /* AF_INET or AF_INET6: of the VIP and every backend */
	uint32_t vip; /* network order; 0 for IPv6 */
	uint8_t vip6[16];
	uint16_t port; /* host order */
	enum dmsc_policy_proto protocol;
	struct dmsc_policy_backend *backends;
	size_t n_backends;
	bool has_rate_limit;
	struct dmsc_rate_limit rate_limit;
	bool has_allow_from; /* absent: everyone may connect */
	char **allow_from;
	size_t n_allow_from;
	enum dmsc_accelerate accelerate;
	enum dmsc_affinity affinity;
	char *affinity_name; /* header (lower case) or cookie; NULL otherwise */
	struct dmsc_route *routes;
	size_t n_routes;
	bool has_health; /* absent: every backend is always in */
	struct dmsc_health health;
	enum dmsc_mtls_mode mtls; /* its own "mtls", else the document's */
};

struct dmsc_policy {
	struct dmsc_policy_service *services;
	size_t n_services;
};

/* One problem found in a document: its JSON path ("services[2].port") and a
 * sentence that names what is wrong. */
struct dmsc_policy_error {
	char path[256];
	char message[512];
};

struct dmsc_policy_errors {
	struct dmsc_policy_error *items;
	size_t count;
	size_t cap;
};

/* Largest document accepted, in bytes. */
#define DMSC_POLICY_FILE_MAX (64u << 20)
/* Errors recorded per document; past it one last error (path "") says how
 * many more were found, so a huge broken file cannot exhaust memory. */
#define DMSC_POLICY_ERRORS_MAX 1000

/*
 * Parses and validates a whole document. On success returns 0 and fills
 * *out, which the caller frees with dmsc_policy_free(). On a document that
 * is not valid returns -EINVAL and records every problem in errs (freed with
 * dmsc_policy_errors_free()); *out is left empty. Other negative errnos are
 * for failures that are not the document's fault (out of memory).
 * *out is overwritten (pass an empty one); errs must be zeroed before its
 * first use and is emptied by every call, so one errs can serve many calls.
 * Messages never contain `source` (a file name, "<stdin>"): the caller
 * prints it before each formatted error, `FILE: PATH: message`.
 */
int dmsc_policy_parse(const char *text, size_t len, const char *source, struct dmsc_policy *out,
		      struct dmsc_policy_errors *errs);
/* A backend's "host" need not be in the document's "hosts" (etcd keeps the
 * tunnel addresses under PREFIX/hosts/): a valid name is taken with
 * host_at.family 0, resolved by the caller (dmsc_etcd_store_view). */
#define DMSC_POLICY_HOSTS_ELSEWHERE 1u
int dmsc_policy_parse_flags(const char *text, size_t len, const char *source, unsigned int flags,
			    struct dmsc_policy *out, struct dmsc_policy_errors *errs);
/* A host's tunnel address as "hosts" has it: name, a host name, and value,
 * "IPv4:PORT" or "[IPv6]:PORT". 0, or -EINVAL with what is wrong in why. */
int dmsc_policy_host_entry(const char *name, const char *value, size_t len,
			   struct dmsc_host_addr *at, char *why, size_t why_len);
/* As "hosts" writes it; "" for none. */
void dmsc_host_addr_format(const struct dmsc_host_addr *at, char *buf, size_t len);
bool dmsc_host_addr_eq(const struct dmsc_host_addr *a, const struct dmsc_host_addr *b);

/* Reads a file ("-": stdin) and parses it; a file that cannot be read, or
 * that is larger than DMSC_POLICY_FILE_MAX, is one error whose path is empty
 * and whose message says what failed and why ("cannot open: No such file or
 * directory"; the caller names the file), returned as a negative errno. */
int dmsc_policy_load_file(const char *file, struct dmsc_policy *out,
			  struct dmsc_policy_errors *errs);
/* The same with dmsc_policy_parse_flags's flags. */
int dmsc_policy_load_file_flags(const char *file, unsigned int flags, struct dmsc_policy *out,
				struct dmsc_policy_errors *errs);

/* The policy in a descriptor a helper was handed (dmscd's sealed memfd,
 * docs/design.md decision 83), its first error (or why it could not be
 * read) said into why. 0 or a negative errno. */
int dmsc_policy_load_fd(int fd, unsigned int flags, struct dmsc_policy *out, char *why, size_t len);

void dmsc_policy_free(struct dmsc_policy *p);
void dmsc_policy_errors_free(struct dmsc_policy_errors *errs);

/* "services[2].port: 70000 is not a port (1-65535)"; an error whose path is
 * empty (syntax errors, files) is its message alone. */
void dmsc_policy_error_format(const struct dmsc_policy_error *e, char *buf, size_t len);

/* Features that parse and validate but that this build does not enforce
 * yet: returns NULL when the policy uses none, else a sentence naming the
 * first such field with its path. */
const char *dmsc_policy_unsupported(const struct dmsc_policy *p, char *buf, size_t len);

/* Whether a connection to backend b of service s goes through this host's
 * tunnel (docs/design.md decisions 24 and 75): s's "mtls" is not off and b
 * is on a named host other than self, this host's name (NULL or "": a host
 * without a name cannot tell which backends are remote, so none is). The
 * one rule for the kernel's (DMSC_BE_F_TUNNEL) and dmsc-l7's. */
bool dmsc_policy_backend_tunneled(const struct dmsc_policy_service *s,
				  const struct dmsc_policy_backend *b, const char *self);

const char *dmsc_policy_proto_name(enum dmsc_policy_proto p);
const char *dmsc_mtls_mode_name(enum dmsc_mtls_mode m);
const char *dmsc_probe_type_name(enum dmsc_probe_type t);

#endif /* DMSC_POLICY_H */
