// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* dmsc-l7's way to backends on other hosts (l7_via.h). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "l7_via.h"
#include "log.h"

static int via_map(const char *pin_dir, const char *name, bool needed)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, name);
	fd = bpf_obj_get(path);
	if (fd < 0 && needed)
		pr_warn("cannot open %s: %s (install the datapath with this build)\n", path,
			strerror(errno));
	return fd < 0 && needed ? -errno : fd;
}

int dmsc_l7_via_open(struct dmsc_l7_via *v, const char *pin_dir, const char *host)
{
	memset(v, 0, sizeof(*v));
	v->conf_fd = v->handoff_fd = v->handoff6_fd = -1;
	v->host = host && host[0] ? host : NULL;
	if (!v->host)
		return 0;
	v->conf_fd = via_map(pin_dir, DMSC_MAP_TUNNEL_CONF, true);
	if (v->conf_fd < 0)
		return v->conf_fd;
	v->handoff_fd = via_map(pin_dir, DMSC_MAP_L7_HANDOFF, true);
	if (v->handoff_fd < 0)
		return v->handoff_fd;
	/* a datapath from before IPv6 handoffs: IPv6 backends go direct */
	v->handoff6_fd = via_map(pin_dir, DMSC_MAP_TUNNEL_HANDOFF6, false);
	return 0;
}

void dmsc_l7_via_close(struct dmsc_l7_via *v)
{
	if (v->conf_fd >= 0)
		close(v->conf_fd);
	if (v->handoff_fd >= 0)
		close(v->handoff_fd);
	if (v->handoff6_fd >= 0)
		close(v->handoff6_fd);
	v->conf_fd = v->handoff_fd = v->handoff6_fd = -1;
}

bool dmsc_l7_via_tunnel(const struct dmsc_l7_via *v, const struct dmsc_l7_service *svc, int backend)
{
	return v->host && backend >= 0 && (size_t)backend < svc->src->n_backends &&
	       dmsc_policy_backend_tunneled(svc->src, &svc->src->backends[backend], v->host);
}

static void count(uint64_t *c)
{
	__atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

/* The IPv4 record: the tunnel takes it at accept (user/mtls/tunnel_handoff.c). */
static int record4(struct dmsc_l7_via *v, int fd, const struct dmsc_l7_conf *conf,
		   const struct sockaddr_in *be, const struct dmsc_l7_service *svc, uint64_t cgroup,
		   struct sockaddr_storage *listener, socklen_t *len)
{
	struct sockaddr_in self = {.sin_family = AF_INET, .sin_addr.s_addr = conf->addr};
	struct sockaddr_in *to = (struct sockaddr_in *)listener;
	struct dmsc_l7_handoff_key key;
	struct dmsc_l7_handoff val;
	socklen_t sl = sizeof(self);

	/* The tunnel's listener is on this host's loopback: the same address
	 * as our end makes the 4-tuple the one its accept() sees. */
	if (bind(fd, (struct sockaddr *)&self, sizeof(self)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&self, &sl) < 0)
		return -errno;
	memset(&key, 0, sizeof(key));
	memset(&val, 0, sizeof(val));
	key.client_addr = self.sin_addr.s_addr;
	key.client_port = self.sin_port;
	key.helper_addr = conf->addr;
	key.helper_port = conf->port;
	val.vip = svc->vip;
	val.vport = svc->vport;
	val.backend_addr = be->sin_addr.s_addr;
	val.backend_port = be->sin_port;
	val.flags = DMSC_SOCK_F_TUNNEL;
	val.cgroup_id = cgroup;
	if (bpf_map_update_elem(v->handoff_fd, &key, &val, BPF_ANY))
		return -errno;
	memset(to, 0, sizeof(*to));
	to->sin_family = AF_INET;
	to->sin_addr.s_addr = conf->addr;
	to->sin_port = conf->port;
	*len = sizeof(*to);
	return 0;
}

/* The IPv6 record, for the tunnel's listener on [::1] (port6). */
static int record6(struct dmsc_l7_via *v, int fd, const struct dmsc_l7_conf *conf,
		   const struct sockaddr_in6 *be, const struct dmsc_l7_service *svc,
		   uint64_t cgroup, struct sockaddr_storage *listener, socklen_t *len)
{
	struct sockaddr_in6 self = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	struct sockaddr_in6 *to = (struct sockaddr_in6 *)listener;
	struct dmsc_tunnel_handoff6_key key;
	struct dmsc_tunnel_handoff6 val;
	socklen_t sl = sizeof(self);

	if (bind(fd, (struct sockaddr *)&self, sizeof(self)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&self, &sl) < 0)
		return -errno;
	memset(&key, 0, sizeof(key));
	memset(&val, 0, sizeof(val));
	memcpy(key.client_addr, &self.sin6_addr, 16);
	key.client_port = self.sin6_port;
	key.helper_port = conf->port6;
	memcpy(val.vip, svc->vip6, 16);
	memcpy(val.backend_addr, &be->sin6_addr, 16);
	val.vport = svc->vport;
	val.backend_port = be->sin6_port;
	val.cgroup_id = cgroup;
	if (bpf_map_update_elem(v->handoff6_fd, &key, &val, BPF_ANY))
		return -errno;
	memset(to, 0, sizeof(*to));
	to->sin6_family = AF_INET6;
	to->sin6_addr = (struct in6_addr)IN6ADDR_LOOPBACK_INIT;
	to->sin6_port = conf->port6;
	*len = sizeof(*to);
	return 0;
}

int dmsc_l7_via_connect(struct dmsc_l7_via *v, int fd, const struct sockaddr_storage *to,
			socklen_t to_len, const struct dmsc_l7_service *svc, int backend,
			uint64_t cgroup)
{
	struct dmsc_l7_conf conf = {0};
	struct sockaddr_storage listener;
	socklen_t len;
	bool v6 = to->ss_family == AF_INET6;
	__u32 zero = 0;
	int err;

	if (!dmsc_l7_via_tunnel(v, svc, backend))
		return connect(fd, (const struct sockaddr *)to, to_len);
	/* No tunnel registered (or none on [::1]): directly, fail open as
	 * connect4 (DMSC_R_TUNNEL_NO_HELPER); the backend's host decides. */
	if (bpf_map_lookup_elem(v->conf_fd, &zero, &conf) || !conf.addr || !conf.port ||
	    (v6 && (!conf.port6 || v->handoff6_fd < 0))) {
		count(&v->no_tunnel);
		return connect(fd, (const struct sockaddr *)to, to_len);
	}
	/* The tunnel vouches for nobody without an identity: refuse here
	 * rather than have it reset the connection (a handoff record that
	 * carries no cgroup: socket storage full, docs/l7.md). */
	if (!cgroup) {
		count(&v->no_identity);
		errno = EACCES;
		return -1;
	}
	err = v6 ? record6(v, fd, &conf, (const struct sockaddr_in6 *)to, svc, cgroup, &listener,
			   &len)
		 : record4(v, fd, &conf, (const struct sockaddr_in *)to, svc, cgroup, &listener,
			   &len);
	if (err) {
		errno = -err;
		return -1;
	}
	count(&v->tunneled);
	return connect(fd, (struct sockaddr *)&listener, len);
}
