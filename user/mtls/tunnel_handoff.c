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
#include "log.h"
#include "tunnel_handoff.h"

/* Linux's linux/exportfs.h: a kernfs node (a cgroup) by its 64-bit id,
 * which is the cgroup id the BPF helpers return (Linux 5.5). */
#define FILEID_KERNFS 0xfe

static int pinned(const char *pin_dir, const char *name)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, name);
	fd = bpf_obj_get(path);
	if (fd < 0) {
		fd = -errno;
		pr_warn("tunnel: cannot open %s: %s (install the datapath with this build)\n", path,
			strerror(errno));
	}
	return fd;
}

int dmsc_tunnel_handoff_open(struct dmsc_tunnel_handoff *h, const char *pin_dir)
{
	int err;

	h->handoff_fd = h->conf_fd = h->own_fd = h->cg_fd = -1;
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

int dmsc_tunnel_handoff_register(struct dmsc_tunnel_handoff *h, const struct sockaddr_in *listen)
{
	struct dmsc_l7_conf conf = {.addr = listen->sin_addr.s_addr, .port = listen->sin_port};
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
	if (h->conf_fd >= 0)
		close(h->conf_fd);
	if (h->own_fd >= 0)
		close(h->own_fd);
	if (h->cg_fd >= 0)
		close(h->cg_fd);
	h->handoff_fd = h->conf_fd = h->own_fd = h->cg_fd = -1;
}

int dmsc_tunnel_handoff_own(const struct dmsc_tunnel_handoff *h, int fd)
{
	struct dmsc_l7_own own = {.magic = DMSC_L7_OWN_MAGIC};

	if (h->own_fd < 0)
		return 0;
	if (bpf_map_update_elem(h->own_fd, &fd, &own, BPF_ANY)) {
		pr_warn("tunnel: cannot mark a socket in %s: %s\n", DMSC_MAP_L7_OWN,
			strerror(errno));
		return -errno;
	}
	return 0;
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

/* The tunnel address of the host the policy places addr:port on. */
static const struct dmsc_policy_backend *placed(const struct dmsc_policy *p, __u32 addr,
						__u16 port)
{
	size_t i, j;

	for (i = 0; p && i < p->n_services; i++)
		for (j = 0; j < p->services[i].n_backends; j++) {
			const struct dmsc_policy_backend *b = &p->services[i].backends[j];

			if (b->host && b->addr == addr && b->port == port)
				return b;
		}
	return NULL;
}

int dmsc_tunnel_handoff_take(const struct dmsc_tunnel_handoff *h, int fd,
			     const struct dmsc_policy *p, struct sockaddr_in *peer,
			     struct sockaddr_in *dest, char *identity, size_t id_len, char *why,
			     size_t why_len)
{
	struct sockaddr_in client, local;
	socklen_t cl = sizeof(client), ll = sizeof(local);
	struct dmsc_l7_handoff_key key = {0};
	struct dmsc_l7_handoff val;
	const struct dmsc_policy_backend *b;
	char be[INET_ADDRSTRLEN];
	int err;

	if (getpeername(fd, (struct sockaddr *)&client, &cl) ||
	    getsockname(fd, (struct sockaddr *)&local, &ll)) {
		snprintf(why, why_len, "its addresses: %s", strerror(errno));
		return -errno;
	}
	key.client_addr = client.sin_addr.s_addr;
	key.client_port = client.sin_port;
	key.helper_addr = local.sin_addr.s_addr;
	key.helper_port = local.sin_port;
	if (bpf_map_lookup_and_delete_elem(h->handoff_fd, &key, &val) &&
	    bpf_map_lookup_elem(h->handoff_fd, &key, &val)) {
		snprintf(why, why_len, "no handoff record from %s:%u (not handed over by connect4)",
			 inet_ntoa(client.sin_addr), ntohs(client.sin_port));
		return -ENOENT;
	}
	/* LRU hashes delete by lookup_and_delete only from Linux 5.14. */
	bpf_map_delete_elem(h->handoff_fd, &key);
	inet_ntop(AF_INET, &val.backend_addr, be, sizeof(be));
	if (!(val.flags & DMSC_SOCK_F_TUNNEL)) {
		snprintf(why, why_len, "the record of %s:%u is not a tunnel handoff",
			 inet_ntoa(client.sin_addr), ntohs(client.sin_port));
		return -EINVAL;
	}
	b = placed(p, val.backend_addr, ntohs(val.backend_port));
	if (!b) {
		snprintf(why, why_len, "backend %s:%u is on no host of the policy", be,
			 ntohs(val.backend_port));
		return -EHOSTUNREACH;
	}
	err = cgroup_path(h, val.cgroup_id, identity, id_len);
	if (err) {
		snprintf(why, why_len, "the caller's cgroup %llu: %s",
			 (unsigned long long)val.cgroup_id, strerror(-err));
		return err;
	}
	memset(peer, 0, sizeof(*peer));
	peer->sin_family = AF_INET;
	peer->sin_addr.s_addr = b->host_addr;
	peer->sin_port = htons(b->host_port);
	memset(dest, 0, sizeof(*dest));
	dest->sin_family = AF_INET;
	dest->sin_addr.s_addr = val.backend_addr;
	dest->sin_port = val.backend_port;
	return 0;
}
