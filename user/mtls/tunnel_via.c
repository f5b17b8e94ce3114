// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* A helper's own connections through this host's tunnel (tunnel_via.h). */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "dmsc/shared.h"
#include "pin_dir.h"
#include "tunnel_via.h"

int dmsc_tunnel_via_open(struct dmsc_tunnel_via *v, const char *pin_dir)
{
	int err;

	v->conf_fd = dmsc_pinned_map_open(pin_dir, DMSC_MAP_TUNNEL_CONF, DMSC_PIN_HINT_BUILD);
	v->handoff_fd = dmsc_pinned_map_open(pin_dir, DMSC_MAP_L7_HANDOFF, DMSC_PIN_HINT_BUILD);
	/* a datapath from before IPv6 handoffs: IPv6 backends go direct */
	v->handoff6_fd = dmsc_pinned_map_try(pin_dir, DMSC_MAP_TUNNEL_HANDOFF6);
	if (v->conf_fd >= 0 && v->handoff_fd >= 0)
		return 0;
	err = v->conf_fd < 0 ? v->conf_fd : v->handoff_fd;
	dmsc_tunnel_via_close(v);
	return err;
}

void dmsc_tunnel_via_close(struct dmsc_tunnel_via *v)
{
	int *fds[] = {&v->conf_fd, &v->handoff_fd, &v->handoff6_fd};
	size_t i;

	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

/* Binds fd to the loopback of its family, port 0: the tunnel's listener is
 * on this host's loopback, so the same address as our end makes the
 * 4-tuple the one its accept() sees. self: what was bound. */
static int bind_loopback(int fd, const struct dmsc_l7_conf *conf, bool v6,
			 struct sockaddr_storage *self)
{
	socklen_t sl = sizeof(*self);

	memset(self, 0, sizeof(*self));
	if (v6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)self;

		s6->sin6_family = AF_INET6;
		s6->sin6_addr = (struct in6_addr)IN6ADDR_LOOPBACK_INIT;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)self;

		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = conf->addr;
	}
	if (bind(fd, (struct sockaddr *)self,
		 v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) ||
	    getsockname(fd, (struct sockaddr *)self, &sl))
		return -errno;
	return 0;
}

/* The records the tunnel takes at accept (tunnel_handoff.c), keyed by our
 * end and its listener: IPv4 in dmsc_l7_handoff, IPv6 in
 * dmsc_tunnel_handoff6 (the listener on [::1], port6). */
static int record4(const struct dmsc_tunnel_via *v, const struct dmsc_l7_conf *conf,
		   const struct sockaddr_in *me, const struct sockaddr_in *be,
		   const struct dmsc_tunnel_via_svc *svc, uint64_t cgroup)
{
	struct dmsc_l7_handoff_key key = {0};
	struct dmsc_l7_handoff val = {0};

	key.client_addr = me->sin_addr.s_addr;
	key.client_port = me->sin_port;
	key.helper_addr = conf->addr;
	key.helper_port = conf->port;
	val.vip = svc->vip;
	val.vport = svc->vport;
	val.backend_addr = be->sin_addr.s_addr;
	val.backend_port = be->sin_port;
	val.flags = DMSC_SOCK_F_TUNNEL;
	val.cgroup_id = cgroup;
	return bpf_map_update_elem(v->handoff_fd, &key, &val, BPF_ANY) ? -errno : 0;
}

static int record6(const struct dmsc_tunnel_via *v, const struct dmsc_l7_conf *conf,
		   const struct sockaddr_in6 *me, const struct sockaddr_in6 *be,
		   const struct dmsc_tunnel_via_svc *svc, uint64_t cgroup)
{
	struct dmsc_tunnel_handoff6_key key = {0};
	struct dmsc_tunnel_handoff6 val = {0};

	memcpy(key.client_addr, &me->sin6_addr, 16);
	key.client_port = me->sin6_port;
	key.helper_port = conf->port6;
	memcpy(val.vip, svc->vip6, 16);
	memcpy(val.backend_addr, &be->sin6_addr, 16);
	val.vport = svc->vport;
	val.backend_port = be->sin6_port;
	val.cgroup_id = cgroup;
	return bpf_map_update_elem(v->handoff6_fd, &key, &val, BPF_ANY) ? -errno : 0;
}

int dmsc_tunnel_via_connect(const struct dmsc_tunnel_via *v, int fd,
			    const struct sockaddr_storage *to, socklen_t to_len,
			    const struct dmsc_tunnel_via_svc *svc, uint64_t cgroup,
			    enum dmsc_tunnel_via_way *way)
{
	struct sockaddr_storage self, listener;
	struct dmsc_l7_conf conf = {0};
	bool v6 = to->ss_family == AF_INET6;
	__u32 zero = 0;
	int err;

	if (v->conf_fd < 0 || bpf_map_lookup_elem(v->conf_fd, &zero, &conf) || !conf.addr ||
	    !conf.port || (v6 && (!conf.port6 || v->handoff6_fd < 0))) {
		*way = DMSC_VIA_DIRECT;
		return connect(fd, (const struct sockaddr *)to, to_len);
	}
	if (!cgroup) {
		*way = DMSC_VIA_NO_IDENTITY;
		errno = EACCES;
		return -1;
	}
	*way = DMSC_VIA_TUNNELED;
	err = bind_loopback(fd, &conf, v6, &self);
	if (!err)
		err = v6 ? record6(v, &conf, (struct sockaddr_in6 *)&self,
				   (const struct sockaddr_in6 *)to, svc, cgroup)
			 : record4(v, &conf, (struct sockaddr_in *)&self,
				   (const struct sockaddr_in *)to, svc, cgroup);
	if (err) {
		errno = -err;
		return -1;
	}
	/* the listener: where our end is bound, on the tunnel's port */
	listener = self;
	if (v6)
		((struct sockaddr_in6 *)&listener)->sin6_port = conf.port6;
	else
		((struct sockaddr_in *)&listener)->sin_port = conf.port;
	return connect(fd, (struct sockaddr *)&listener,
		       v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
}

bool dmsc_tunnel_via_unreached(const struct dmsc_tunnel_via *v, int fd)
{
	struct dmsc_tunnel_handoff6_key key6 = {0};
	struct dmsc_l7_handoff_key key = {0};
	struct dmsc_tunnel_handoff6 val6;
	struct dmsc_l7_handoff val;
	struct dmsc_l7_conf conf = {0};
	struct sockaddr_storage self;
	socklen_t sl = sizeof(self);
	__u32 zero = 0;

	/* our end keeps its address after a reset (the peer's is gone) */
	if (v->conf_fd < 0 || bpf_map_lookup_elem(v->conf_fd, &zero, &conf) ||
	    getsockname(fd, (struct sockaddr *)&self, &sl))
		return false;
	if (self.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&self;

		memcpy(key6.client_addr, &s6->sin6_addr, 16);
		key6.client_port = s6->sin6_port;
		key6.helper_port = conf.port6;
		if (v->handoff6_fd < 0 || bpf_map_lookup_elem(v->handoff6_fd, &key6, &val6))
			return false;
		bpf_map_delete_elem(v->handoff6_fd, &key6);
		return val6.flags & DMSC_SOCK_F_CONNECT_FAILED;
	}
	key.client_addr = ((const struct sockaddr_in *)&self)->sin_addr.s_addr;
	key.client_port = ((const struct sockaddr_in *)&self)->sin_port;
	key.helper_addr = conf.addr;
	key.helper_port = conf.port;
	if (bpf_map_lookup_elem(v->handoff_fd, &key, &val))
		return false;
	bpf_map_delete_elem(v->handoff_fd, &key);
	return val.flags & DMSC_SOCK_F_CONNECT_FAILED;
}
