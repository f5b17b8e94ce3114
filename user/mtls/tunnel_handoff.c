// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The kernel's handoff to the tunnel (tunnel_handoff.h).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "datapath.h"
#include "dmsc/shared.h"
#include "addr.h"
#include "log.h"
#include "tunnel_frame.h"
#include "tunnel_handoff.h"
#include "pin_dir.h"

/* Linux's linux/exportfs.h: a kernfs node (a cgroup) by its 64-bit id,
 * which is the cgroup id the BPF helpers return (Linux 5.5). */
#define FILEID_KERNFS 0xfe

static int pinned(const char *pin_dir, const char *name)
{
	return dmsc_pinned_map_open(pin_dir, name, DMSC_PIN_HINT_BUILD);
}

int dmsc_tunnel_handoff_open(struct dmsc_tunnel_handoff *h, const char *pin_dir)
{
	int err;

	h->handoff_fd = h->handoff6_fd = h->conf_fd = h->own_fd = h->cg_fd = -1;
	h->handoff_fd = pinned(pin_dir, DMSC_MAP_L7_HANDOFF);
	if (h->handoff_fd < 0) {
		err = h->handoff_fd;
		goto fail;
	}
	h->conf_fd = pinned(pin_dir, DMSC_MAP_TUNNEL_CONF);
	if (h->conf_fd < 0) {
		err = h->conf_fd;
		goto fail;
	}
	h->own_fd = pinned(pin_dir, DMSC_MAP_L7_OWN);
	if (h->own_fd < 0) {
		err = h->own_fd;
		goto fail;
	}
	/* a datapath from before IPv6 handoffs: IPv4 ones still work */
	h->handoff6_fd = pinned(pin_dir, DMSC_MAP_TUNNEL_HANDOFF6);
	err = dmsc_cgroup2_mount(h->cg_root, sizeof(h->cg_root));
	if (err) {
		pr_warn("tunnel: no cgroup2 mount: %s\n", strerror(-err));
		goto fail;
	}
	h->cg_fd = open(h->cg_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (h->cg_fd < 0) {
		err = -errno;
		pr_warn("tunnel: cannot open %s: %s\n", h->cg_root, strerror(errno));
		goto fail;
	}
	return 0;
fail:
	dmsc_tunnel_handoff_close(h);
	return err;
}

int dmsc_tunnel_handoff_register(struct dmsc_tunnel_handoff *h, const struct sockaddr_in *listen,
				 uint16_t port6)
{
	struct dmsc_l7_conf conf = {
	    .addr = listen->sin_addr.s_addr, .port = listen->sin_port, .port6 = port6};
	__u32 zero = 0;

	if (bpf_map_update_elem(h->conf_fd, &zero, &conf, BPF_ANY)) {
		pr_warn("tunnel: cannot register in %s: %s\n", DMSC_MAP_TUNNEL_CONF,
			strerror(errno));
		return -errno;
	}
	return 0;
}

void dmsc_tunnel_handoff_close(struct dmsc_tunnel_handoff *h)
{
	if (h->handoff_fd >= 0)
		close(h->handoff_fd);
	if (h->handoff6_fd >= 0)
		close(h->handoff6_fd);
	if (h->conf_fd >= 0)
		close(h->conf_fd);
	if (h->own_fd >= 0)
		close(h->own_fd);
	if (h->cg_fd >= 0)
		close(h->cg_fd);
	h->handoff_fd = h->handoff6_fd = h->conf_fd = h->own_fd = h->cg_fd = -1;
}

int dmsc_tunnel_handoff_own(const struct dmsc_tunnel_handoff *h, int fd)
{
	int err = h->own_fd < 0 ? 0 : dmsc_l7_own_mark(h->own_fd, fd);

	if (err)
		pr_warn("tunnel: cannot mark a socket in %s: %s\n", DMSC_MAP_L7_OWN,
			strerror(-err));
	return err;
}

/* The cgroup path (relative to the cgroup2 mount) of a cgroup id. */
static int cgroup_path(const struct dmsc_tunnel_handoff *h, __u64 id, char *out, size_t len)
{
	struct {
		struct file_handle fh;
		__u64 id;
	} handle = {.fh = {.handle_bytes = sizeof(__u64), .handle_type = FILEID_KERNFS}};
	char link[64], path[PATH_MAX];
	size_t root_len = strlen(h->cg_root);
	ssize_t n;
	int fd, err = 0;

	memcpy(handle.fh.f_handle, &id, sizeof(id));
	fd = open_by_handle_at(h->cg_fd, &handle.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0) {
		err = -errno;
		goto out;
	}
	path[n] = '\0';
	if (strncmp(path, h->cg_root, root_len) || (path[root_len] && path[root_len] != '/')) {
		err = -EXDEV;
		goto out;
	}
	n = snprintf(out, len, "%s", path[root_len] ? path + root_len + 1 : "");
	if ((size_t)n >= len || !out[0])
		err = -ENAMETOOLONG; /* the root itself vouches for nobody */
out:
	close(fd);
	return err;
}

const struct dmsc_policy_backend *dmsc_tunnel_placed(const struct dmsc_policy *p, int family,
						     __u32 addr, const __u32 addr6[4], __u16 port)
{
	size_t i, j;

	for (i = 0; p && i < p->n_services; i++) {
		if (p->services[i].family != family)
			continue;
		for (j = 0; j < p->services[i].n_backends; j++) {
			const struct dmsc_policy_backend *b = &p->services[i].backends[j];

			if (b->host && b->host_at.family && b->port == port &&
			    (family == AF_INET6 ? !memcmp(b->addr6, addr6, 16) : b->addr == addr))
				return b;
		}
	}
	return NULL;
}

void dmsc_tunnel_host_sa(const struct dmsc_policy_backend *b, union dmsc_tunnel_sa *peer)
{
	memset(peer, 0, sizeof(*peer));
	if (b->host_at.family == AF_INET6) {
		peer->v6.sin6_family = AF_INET6;
		memcpy(&peer->v6.sin6_addr, b->host_at.v6, 16);
		peer->v6.sin6_port = htons(b->host_at.port);
	} else {
		peer->v4.sin_family = AF_INET;
		peer->v4.sin_addr.s_addr = b->host_at.v4;
		peer->v4.sin_port = htons(b->host_at.port);
	}
}

void dmsc_tunnel_dest_sa(int family, __u32 addr, const __u32 addr6[4], __u16 port,
			 union dmsc_tunnel_sa *dest)
{
	memset(dest, 0, sizeof(*dest));
	if (family == AF_INET6) {
		dest->v6.sin6_family = AF_INET6;
		memcpy(&dest->v6.sin6_addr, addr6, 16);
		dest->v6.sin6_port = port;
	} else {
		dest->v4.sin_family = AF_INET;
		dest->v4.sin_addr.s_addr = addr;
		dest->v4.sin_port = port;
	}
}

/* A record of dmsc_l7_handoff or dmsc_tunnel_handoff6, as the take needs it */
struct taken {
	int family;
	__u32 backend_addr, backend_addr6[4];
	__u16 backend_port; /* network order */
	__u64 cgroup_id;
	struct dmsc_tunnel_hkey hk; /* ids, service key: the kernel's records */
};

/* Reads and deletes the record of the connection from client to local. */
static int take_record(const struct dmsc_tunnel_handoff *h, const union dmsc_tunnel_sa *client,
		       const union dmsc_tunnel_sa *local, struct taken *t, char *why,
		       size_t why_len)
{
	char from[DMSC_ADDR_PORT_LEN];
	int fd = h->handoff_fd, e;
	union {
		struct dmsc_l7_handoff_key v4;
		struct dmsc_tunnel_handoff6_key v6;
	} key;
	union {
		struct dmsc_l7_handoff v4;
		struct dmsc_tunnel_handoff6 v6;
	} val;

	memset(&key, 0, sizeof(key));
	memset(t, 0, sizeof(*t));
	t->family = client->sa.sa_family;
	if (t->family == AF_INET6) {
		fd = h->handoff6_fd;
		memcpy(key.v6.client_addr, &client->v6.sin6_addr, 16);
		key.v6.client_port = client->v6.sin6_port;
		key.v6.helper_port = local->v6.sin6_port;
	} else {
		key.v4.client_addr = client->v4.sin_addr.s_addr;
		key.v4.client_port = client->v4.sin_port;
		key.v4.helper_addr = local->v4.sin_addr.s_addr;
		key.v4.helper_port = local->v4.sin_port;
	}
	dmsc_tunnel_sa_format(client, from, sizeof(from));
	if (fd < 0 || (bpf_map_lookup_and_delete_elem(fd, &key, &val) &&
		       bpf_map_lookup_elem(fd, &key, &val))) {
		snprintf(why, why_len, "no handoff record from %s (not handed over by connect%c)",
			 from, t->family == AF_INET6 ? '6' : '4');
		return -ENOENT;
	}
	/* LRU hashes delete by lookup_and_delete only from Linux 5.14. */
	bpf_map_delete_elem(fd, &key);
	/* a helper's own connection: where a failed connect is written back
	 * (dmscd's probes read nothing back) */
	t->hk.via = !(t->family == AF_INET6 ? val.v6.backend_id : val.v4.backend_id) &&
		    !DMSC_CGROUP_ID_IS_PROBE(t->family == AF_INET6 ? val.v6.cgroup_id
								   : val.v4.cgroup_id);
	memcpy(&t->hk.via_key, &key, sizeof(t->hk.via_key));
	if (t->family == AF_INET6 && (val.v6.flags & DMSC_SOCK_F_CONNECT_FAILED)) {
		snprintf(why, why_len, "the record of %s is not a tunnel handoff", from);
		return -EINVAL;
	}
	if (t->family == AF_INET6) {
		memcpy(t->backend_addr6, val.v6.backend_addr, 16);
		t->backend_port = val.v6.backend_port;
		t->cgroup_id = val.v6.cgroup_id;
		t->hk.v6 = true;
		t->hk.svc_id = val.v6.svc_id;
		t->hk.backend_id = val.v6.backend_id;
		memcpy(t->hk.key6.vip, val.v6.vip, 16);
		t->hk.key6.port = val.v6.vport;
		t->hk.key6.proto = DMSC_PROTO_TCP;
		return 0;
	}
	e = val.v4.flags & DMSC_SOCK_F_TUNNEL ? 0 : -EINVAL;
	if (e)
		snprintf(why, why_len, "the record of %s is not a tunnel handoff", from);
	t->backend_addr = val.v4.backend_addr;
	t->backend_port = val.v4.backend_port;
	t->cgroup_id = val.v4.cgroup_id;
	t->hk.svc_id = val.v4.svc_id;
	t->hk.backend_id = val.v4.backend_id;
	t->hk.key.vip = val.v4.vip;
	t->hk.key.port = val.v4.vport;
	t->hk.key.proto = DMSC_PROTO_TCP;
	return e;
}

int dmsc_tunnel_handoff_take(const struct dmsc_tunnel_handoff *h, int fd,
			     const struct dmsc_policy *p, union dmsc_tunnel_sa *peer,
			     union dmsc_tunnel_sa *dest, struct dmsc_tunnel_hkey *hk,
			     char *identity, size_t id_len, char *why, size_t why_len)
{
	union dmsc_tunnel_sa client, local;
	socklen_t cl = sizeof(client), ll = sizeof(local);
	const struct dmsc_policy_backend *b;
	char be[DMSC_ADDR_PORT_LEN];
	struct taken t;
	int err;

	if (getpeername(fd, &client.sa, &cl) || getsockname(fd, &local.sa, &ll)) {
		snprintf(why, why_len, "its addresses: %s", strerror(errno));
		return -errno;
	}
	err = take_record(h, &client, &local, &t, why, why_len);
	if (err)
		return err;
	dmsc_format_ip_port(t.family, t.backend_addr, t.backend_addr6, ntohs(t.backend_port), be,
			    sizeof(be));
	b = dmsc_tunnel_placed(p, t.family, t.backend_addr, t.backend_addr6, ntohs(t.backend_port));
	if (!b) {
		snprintf(why, why_len, "backend %s is on no host of the policy", be);
		return -EHOSTUNREACH;
	}
	/* dmscd's probe (tunnel_via.h): vouched for as such, which no
	 * cgroup path can be (those never begin with '/') */
	err = 0;
	if (t.cgroup_id == DMSC_CGROUP_ID_PROBE_TCP)
		snprintf(identity, id_len, "%s", DMSC_TF_ID_PROBE_TCP);
	else if (t.cgroup_id == DMSC_CGROUP_ID_PROBE_HTTP)
		snprintf(identity, id_len, "%s", DMSC_TF_ID_PROBE_HTTP);
	else
		err = cgroup_path(h, t.cgroup_id, identity, id_len);
	if (err) {
		snprintf(why, why_len, "the caller's cgroup %llu: %s",
			 (unsigned long long)t.cgroup_id, strerror(-err));
		return err;
	}
	dmsc_tunnel_host_sa(b, peer);
	dmsc_tunnel_dest_sa(t.family, t.backend_addr, t.backend_addr6, t.backend_port, dest);
	*hk = t.hk;
	hk->dest = *dest;
	return 0;
}
