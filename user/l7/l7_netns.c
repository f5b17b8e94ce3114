// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The helper's listeners in the mesh's network namespaces: l7_netns.h. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "cgroup.h"
#include "datapath.h"
#include "dmsc/shared.h"
#include "l7_netns.h"
#include "l7_nscookie.h"
#include "l7_procev.h"
#include "log.h"
#include "reuseport.h"

#define NETNS_LISTEN_BACKLOG 4096
#define CGROUP_DEPTH_MAX 32
#define FAILED_LOGGED 64 /* namespaces whose failure was logged, remembered */

struct found {
	uint64_t ino;
	int pid;
};

static struct {
	const struct dmsc_l7_netns_ops *ops;
	int map_fd;
	int own_fd; /* the helper's own namespace, to return to */
	uint64_t own_ino;
	uint16_t port; /* network order */
	/* The helper's own namespace: its [::1] listener (fd6; fd is -1, the
	 * workers' --listen sockets serve IPv4 there) and its entry, which
	 * names --listen (docs/design.md decision 51). cookie 0: none. */
	struct dmsc_l7_nsl own;
	char cg_root[PATH_MAX];
	/* the same as /proc/PID/cgroup names it ("/" and the install
	 * record's path), and the kernel's process events (l7_procev.h) */
	char cg_rel[PATH_MAX];
	int ev_fd;
	int stop_fd;
	pthread_t th;
	bool thread;
	bool off; /* no way to learn a cookie (l7_nscookie.h): nothing more is tried */
	struct dmsc_l7_nsl slots[DMSC_L7_NETNS_SLOTS];
	unsigned int active;
	struct found found[DMSC_L7_NETNS_SLOTS];
	size_t n_found, n_pids, n_cgroups;
	bool full_logged;
	/* this scan could not read every cgroup for want of descriptors or
	 * memory: a namespace it missed may well have its processes still */
	bool scan_short;
	uint64_t failed[FAILED_LOGGED];
	size_t n_failed;
	uint8_t used[65536 / 8]; /* addresses in 127.77.0.0/16 taken, per scan */
} ns = {.map_fd = -1, .own_fd = -1, .ev_fd = -1, .stop_fd = -1, .own = {.fd = -1, .fd6 = -1}};

/*
 * Workers pause and resume listeners (dmsc_l7_netns_pause) while the
 * scanner opens and closes them, and worker 0 closes them at the drain:
 * the lock orders these, so that a listener put back in epoll is one still
 * open (never a descriptor number that a closed one left to another
 * socket) and a listener being closed stays out of every epoll.
 */
static pthread_mutex_t pause_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int n_paused; /* listeners paused now; read without the lock */

/* What a failed open() says when the helper is out of descriptors or
 * memory (its own limit, the host's, the kernel's). */
static bool out_of_fds(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int ns_ino(int pid, uint64_t *ino)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/proc/%d/ns/net", pid);
	if (stat(path, &st) < 0)
		return -errno; /* gone meanwhile, or a kernel thread */
	*ino = (uint64_t)st.st_ino;
	return 0;
}

/* Where the clients of a namespace without a listener go (decision 96). */
static const char *elsewhere(void)
{
	return ns.own.cookie ? "are balanced at L4" : "reach the helper at --listen only";
}

static void note_pid(int pid)
{
	uint64_t ino = 0;
	size_t i;

	if (ns.n_pids++ >= DMSC_L7_NETNS_PIDS_MAX || ns_ino(pid, &ino) || ino == ns.own_ino)
		return;
	for (i = ns.n_found; i-- > 0;)
		if (ns.found[i].ino == ino)
			return;
	if (ns.n_found == DMSC_L7_NETNS_SLOTS) {
		if (!ns.full_logged)
			pr_warn("more than %d network namespaces in the mesh: the others' "
				"clients %s\n",
				DMSC_L7_NETNS_SLOTS, elsewhere());
		ns.full_logged = true;
		return;
	}
	ns.found[ns.n_found++] = (struct found){.ino = ino, .pid = pid};
}

/* The processes of the cgroup at path and of its descendants (bounded). */
static void walk(const char *path, int depth)
{
	char sub[PATH_MAX];
	struct dirent *de;
	FILE *f;
	DIR *d;
	int pid;

	if (depth > CGROUP_DEPTH_MAX || ns.n_cgroups++ >= DMSC_L7_NETNS_CGROUPS_MAX)
		return;
	if (snprintf(sub, sizeof(sub), "%s/cgroup.procs", path) >= (int)sizeof(sub))
		return;
	f = fopen(sub, "re");
	if (f) {
		while (fscanf(f, "%d", &pid) == 1)
			note_pid(pid);
		fclose(f);
	} else if (out_of_fds(errno)) {
		ns.scan_short = true;
	}
	d = opendir(path);
	if (!d) {
		if (out_of_fds(errno))
			ns.scan_short = true;
		return;
	}
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name) < (int)sizeof(sub))
			walk(sub, depth + 1);
	}
	closedir(d);
}

static struct dmsc_l7_nsl *slot_of(uint64_t ino)
{
	size_t i;

	for (i = 0; i < DMSC_L7_NETNS_SLOTS; i++)
		if (ns.slots[i].fd >= 0 && ns.slots[i].ino == ino)
			return &ns.slots[i];
	return NULL;
}

static bool failure_logged(uint64_t ino)
{
	size_t i;

	for (i = 0; i < ns.n_failed && i < FAILED_LOGGED; i++)
		if (ns.failed[i] == ino)
			return true;
	ns.failed[ns.n_failed++ % FAILED_LOGGED] = ino;
	return false;
}

static void mark_used(uint32_t addr_be)
{
	uint32_t a = ntohl(addr_be);

	if ((a & DMSC_L7_NETNS_MASK) == DMSC_L7_NETNS_NET)
		ns.used[(a & 0xffff) / 8] |= (uint8_t)(1u << (a & 7));
}

/* The namespace's address: the one the map holds for its cookie (an
 * earlier helper's), else the lowest one free. 0 when all are taken. */
static uint32_t address_for(uint64_t cookie)
{
	struct dmsc_l7_conf val;
	__u64 key, next;
	uint32_t a;
	size_t i;
	int err;

	if (bpf_map_lookup_elem(ns.map_fd, &cookie, &val) == 0 && val.addr)
		return val.addr;
	memset(ns.used, 0, sizeof(ns.used));
	for (i = 0; i < DMSC_L7_NETNS_SLOTS; i++)
		if (ns.slots[i].fd >= 0)
			mark_used(ns.slots[i].addr);
	for (err = bpf_map_get_next_key(ns.map_fd, NULL, &next); !err;
	     err = bpf_map_get_next_key(ns.map_fd, &key, &next)) {
		key = next;
		if (bpf_map_lookup_elem(ns.map_fd, &key, &val) == 0)
			mark_used(val.addr);
	}
	/* .0 and .255.255 left out: not a network's or a broadcast address
	 * anywhere, in case an administrator routes the block */
	for (a = 1; a < 0xffff; a++)
		if (!(ns.used[a / 8] & (1u << (a & 7))))
			return htonl(DMSC_L7_NETNS_NET | a);
	return 0;
}

/* The IPv6 listener on [::1] and the helper's port, in the namespace the
 * thread is in; -1 when it cannot be (IPv6 off there, the port taken). */
static int listen6(void)
{
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = ns.port,
				  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	int fd, one = 1;

	fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* SO_REUSEPORT: a replacing helper binds it beside us, as the IPv4 one */
	if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, NETNS_LISTEN_BACKLOG) < 0) {
		close(fd);
		return -1;
	}
	dmsc_reuseport_migrate(fd);
	return fd;
}

/* l's listeners into every worker's epoll; under pause_lock. */
static void watch_locked(struct dmsc_l7_nsl *l)
{
	int err = l->fd >= 0 ? ns.ops->watch(l->fd, &l->ep) : 0;
	int err6 = l->fd6 >= 0 ? ns.ops->watch(l->fd6, &l->ep6) : 0;

	if (err || err6)
		pr_warn("a worker cannot watch the listener in network namespace %llu: %s\n",
			(unsigned long long)l->ino, strerror(err ? -err : -err6));
	l->watched = true;
}

/* l's listeners out of every worker's epoll for good, paused or not (the
 * listener closes next); under pause_lock. */
static void unwatch_locked(struct dmsc_l7_nsl *l)
{
	__atomic_sub_fetch(&n_paused, (unsigned int)l->paused + l->paused6, __ATOMIC_RELAXED);
	l->paused = l->paused6 = l->watched = false;
	if (l->fd >= 0)
		ns.ops->unwatch(l->fd);
	if (l->fd6 >= 0)
		ns.ops->unwatch(l->fd6);
}

/* A listener in the namespace of pid (inode ino). */
static int open_in(uint64_t ino, int pid, uint64_t now)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = ns.port};
	struct dmsc_l7_conf val = {.port = ns.port};
	struct dmsc_l7_nsl *slot = NULL;
	uint64_t cookie = 0;
	char path[64], what[64] = "";
	struct stat st;
	int nsfd, fd = -1, fd6 = -1, one = 1, err;
	size_t i;

	for (i = 0; i < DMSC_L7_NETNS_SLOTS && !slot; i++)
		if (ns.slots[i].fd < 0)
			slot = &ns.slots[i];
	if (!slot)
		return -ENOSPC;
	snprintf(path, sizeof(path), "/proc/%d/ns/net", pid);
	nsfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0)
		return -errno; /* the process left meanwhile: the next scan sees */
	if (fstat(nsfd, &st) < 0 || (uint64_t)st.st_ino != ino) {
		close(nsfd);
		return -ESRCH; /* pid reused meanwhile */
	}
	/* The socket belongs to the namespace it is made in; bind() and
	 * listen() act in the socket's namespace, whichever the thread is in. */
	if (setns(nsfd, CLONE_NEWNET) < 0) {
		err = -errno;
		snprintf(what, sizeof(what), "setns");
		close(nsfd);
		goto fail;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	err = fd < 0 ? -errno : 0;
	if (!err)
		fd6 = listen6();
	if (setns(ns.own_fd, CLONE_NEWNET) < 0) {
		/* cannot happen short of a kernel bug; stay out of trouble */
		pr_warn("cannot return to the helper's own network namespace: %s; no more "
			"namespace listeners\n",
			strerror(errno));
		ns.off = true;
		close(nsfd);
		if (fd >= 0)
			close(fd);
		if (fd6 >= 0)
			close(fd6);
		return -EIO;
	}
	if (err) {
		close(nsfd);
		snprintf(what, sizeof(what), "socket");
		goto fail;
	}
	err = dmsc_l7_nscookie(fd, nsfd, ns.cg_root, &cookie);
	close(nsfd);
	if (err == -EOPNOTSUPP) {
		pr_warn("no listeners in other network namespaces; their clients reach the "
			"helper at its --listen address only\n");
		ns.off = true;
		close(fd);
		if (fd6 >= 0)
			close(fd6);
		return err;
	}
	if (err) {
		snprintf(what, sizeof(what), "learn its cookie");
		goto fail;
	}
	sa.sin_addr.s_addr = address_for(cookie);
	if (!sa.sin_addr.s_addr) {
		err = -EADDRNOTAVAIL;
		snprintf(what, sizeof(what), "an address in 127.77.0.0/16");
		goto fail;
	}
	/* SO_REUSEPORT: a replacing helper binds the same address beside us. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, NETNS_LISTEN_BACKLOG) < 0) {
		err = -errno;
		snprintf(what, sizeof(what), "bind %s:%u (is its loopback up?)",
			 inet_ntoa(sa.sin_addr), ntohs(ns.port));
		goto fail;
	}
	dmsc_reuseport_migrate(fd);
	val.addr = sa.sin_addr.s_addr;
	if (fd6 >= 0)
		val.port6 = ns.port;
	if (bpf_map_update_elem(ns.map_fd, &cookie, &val, BPF_ANY)) {
		err = -errno;
		snprintf(what, sizeof(what), "write %s", DMSC_MAP_L7_NETNS);
		goto fail;
	}
	pthread_mutex_lock(&pause_lock);
	*slot = (struct dmsc_l7_nsl){.ep.kind = EP_NS_LISTEN,
				     .fd = fd,
				     .ino = ino,
				     .cookie = cookie,
				     .addr = sa.sin_addr.s_addr,
				     .last_seen_ms = now,
				     .ep6.kind = EP_NS_LISTEN6,
				     .fd6 = fd6};
	watch_locked(slot);
	pthread_mutex_unlock(&pause_lock);
	__atomic_add_fetch(&ns.active, 1, __ATOMIC_RELAXED);
	pr_info("listening in network namespace %llu (pid %d's) on %s:%u%s\n",
		(unsigned long long)ino, pid, inet_ntoa(sa.sin_addr), ntohs(ns.port),
		fd6 >= 0 ? " and [::1]" : " (no [::1]: IPv6 connections balanced at L4)");
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	if (fd6 >= 0)
		close(fd6);
	if (!failure_logged(ino))
		pr_warn("network namespace %llu (pid %d's): cannot %s: %s; its clients %s "
			"(tried again every %d ms)\n",
			(unsigned long long)ino, pid, what, strerror(-err), elsewhere(),
			DMSC_L7_NETNS_SCAN_MS);
	return err;
}

static void unmap(struct dmsc_l7_nsl *l)
{
	struct dmsc_l7_conf val;

	/* only our own entry: a namespace's cookie is never reused */
	if (bpf_map_lookup_elem(ns.map_fd, &l->cookie, &val) == 0 && val.addr == l->addr)
		bpf_map_delete_elem(ns.map_fd, &l->cookie);
	l->unmapped = true;
}

static void release(struct dmsc_l7_nsl *l)
{
	pthread_mutex_lock(&pause_lock);
	unwatch_locked(l);
	close(l->fd);
	l->fd = -1;
	if (l->fd6 >= 0)
		close(l->fd6);
	l->fd6 = -1;
	pthread_mutex_unlock(&pause_lock);
	__atomic_sub_fetch(&ns.active, 1, __ATOMIC_RELAXED);
}

/* A process of l's namespace is in the mesh at now. */
static void seen(struct dmsc_l7_nsl *l, uint64_t now)
{
	struct dmsc_l7_conf val = {.port = ns.port};

	l->last_seen_ms = now;
	if (l->unmapped) {
		/* back within a scan: its entry again */
		val.addr = l->addr;
		val.port6 = l->fd6 >= 0 ? ns.port : 0;
		if (bpf_map_update_elem(ns.map_fd, &l->cookie, &val, BPF_ANY) == 0)
			l->unmapped = false;
	}
}

/* Whether pid's cgroup (v2) is the mesh cgroup or one under it. */
static bool in_mesh(int pid)
{
	char cg[PATH_MAX];

	return dmsc_cgroup2_of(pid, cg, sizeof(cg)) == 0 && dmsc_cgroup_within(cg, ns.cg_rel);
}

/* An exec the kernel told of (l7_procev.h): a mesh process in a namespace
 * without a listener gets one now, before its first connect() in the
 * usual case, instead of at the next scan (docs/design.md decision 96). */
static void on_exec(int tgid, void *arg)
{
	uint64_t ino = 0, now = mono_ms();
	struct dmsc_l7_nsl *l;

	(void)arg;
	if (ns.off || ns_ino(tgid, &ino) || ino == ns.own_ino)
		return;
	l = slot_of(ino);
	if (l) {
		seen(l, now);
		return;
	}
	if (in_mesh(tgid))
		open_in(ino, tgid, now);
}

static void scan(void)
{
	uint64_t now = mono_ms();
	struct dmsc_l7_nsl *l;
	size_t i;

	ns.n_found = ns.n_pids = ns.n_cgroups = 0;
	ns.scan_short = false;
	walk(ns.cg_root, 0);
	for (i = 0; i < ns.n_found && !ns.off; i++) {
		l = slot_of(ns.found[i].ino);
		if (!l) {
			open_in(ns.found[i].ino, ns.found[i].pid, now);
			continue;
		}
		seen(l, now);
	}
	/* A listener not seen: its namespace's processes left, or the walk
	 * missed them, short of descriptors (the helper at its limit, whose
	 * accepts pause: dmsc_l7_netns_pause). Only the first ages it. */
	for (i = 0; i < DMSC_L7_NETNS_SLOTS && !ns.scan_short; i++) {
		l = &ns.slots[i];
		if (l->fd < 0 || l->last_seen_ms == now)
			continue;
		if (l->unmapped) {
			pr_info("network namespace %llu has no mesh process left: its listener "
				"%s:%u is closed\n",
				(unsigned long long)l->ino, inet_ntoa((struct in_addr){l->addr}),
				ntohs(ns.port));
			release(l);
		} else if (now - l->last_seen_ms >= DMSC_L7_NETNS_GRACE_MS) {
			unmap(l);
		}
	}
}

/* Entries no namespace of ours has: left by a helper that died. */
static void sweep_stale(void)
{
	__u64 key, next, drop[64];
	size_t n = 0, i;
	int err;

	for (err = bpf_map_get_next_key(ns.map_fd, NULL, &next); !err && n < 64;
	     err = bpf_map_get_next_key(ns.map_fd, &key, &next)) {
		bool ours;

		key = next;
		ours = ns.own.cookie && ns.own.cookie == key;
		for (i = 0; i < DMSC_L7_NETNS_SLOTS && !ours; i++)
			ours = ns.slots[i].fd >= 0 && ns.slots[i].cookie == key;
		if (!ours)
			drop[n++] = key;
	}
	for (i = 0; i < n; i++)
		bpf_map_delete_elem(ns.map_fd, &drop[i]);
}

static void *scan_main(void *arg)
{
	struct pollfd p[2] = {{.fd = ns.stop_fd, .events = POLLIN},
			      {.fd = ns.ev_fd, .events = POLLIN}};
	uint64_t next = mono_ms() + DMSC_L7_NETNS_SCAN_MS, now;

	(void)arg;
	while (!ns.off) {
		int r;

		now = mono_ms();
		r = poll(p, 2, next > now ? (int)(next - now) : 0);
		if ((r > 0 && p[0].revents) || (r < 0 && errno != EINTR))
			break;
		/* events lost (a burst of execs): every process is looked at */
		if (r > 0 && p[1].revents &&
		    dmsc_l7_procev_read(ns.ev_fd, on_exec, NULL) == -ENOBUFS)
			next = 0;
		now = mono_ms();
		if (now >= next) {
			scan();
			next = now + DMSC_L7_NETNS_SCAN_MS;
		}
	}
	return NULL;
}

static int mesh_cgroup(const char *pin_dir, char *out, size_t len)
{
	char path[PATH_MAX], mnt[PATH_MAX];
	struct dmsc_install rec;
	__u32 zero = 0;
	int fd, err;

	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, DMSC_MAP_INSTALL);
	fd = bpf_obj_get(path);
	if (fd < 0) {
		err = -errno;
		pr_warn("cannot open %s: %s\n", path, strerror(-err));
		return err;
	}
	err = bpf_map_lookup_elem(fd, &zero, &rec) ? -errno : 0;
	close(fd);
	if (err) {
		pr_warn("cannot read the install record %s: %s\n", path, strerror(-err));
		return err;
	}
	rec.cgroup_path[sizeof(rec.cgroup_path) - 1] = '\0';
	err = dmsc_cgroup2_mount(mnt, sizeof(mnt));
	if (err)
		return err;
	/* (realpath's, less the mount: no '/' at either end) */
	snprintf(ns.cg_rel, sizeof(ns.cg_rel), "/%s", rec.cgroup_path);
	if (snprintf(out, len, "%s/%s", mnt, rec.cgroup_path) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

/*
 * The helper's own namespace (docs/design.md decision 51): a [::1]
 * listener beside the workers' --listen sockets, and an entry that names
 * --listen for IPv4 (what connect4 did without it: dmsc_l7_conf) and this
 * listener as port6, so that connect6 hands its IPv6 http connections here
 * as it does in every other namespace. A replacing helper binds [::1]
 * beside the old one (SO_REUSEPORT) and writes the same entry; the old one
 * takes what its queue holds and closes (dmsc_l7_netns_close). Without
 * --listen registered (listen NULL) there is no entry to write.
 */
static void open_own(const struct sockaddr_in *listen)
{
	struct dmsc_l7_conf val = {.port6 = ns.port};
	uint64_t cookie = 0;
	int fd6, err;

	if (!listen)
		return;
	fd6 = listen6(); /* the calling thread is in the helper's namespace */
	if (fd6 < 0) {
		pr_warn("cannot listen on [::1]:%u in the helper's own network namespace: %s; "
			"its IPv6 http connections are balanced at L4\n",
			ntohs(ns.port), strerror(errno));
		return;
	}
	err = dmsc_l7_nscookie(fd6, ns.own_fd, ns.cg_root, &cookie);
	if (err) {
		pr_warn("cannot learn the helper's own network namespace's cookie: %s; its IPv6 "
			"http connections are balanced at L4\n",
			strerror(-err));
		close(fd6);
		return;
	}
	val.addr = listen->sin_addr.s_addr;
	val.port = listen->sin_port;
	if (bpf_map_update_elem(ns.map_fd, &cookie, &val, BPF_ANY)) {
		pr_warn("cannot write the helper's own namespace in %s: %s; its IPv6 http "
			"connections are balanced at L4\n",
			DMSC_MAP_L7_NETNS, strerror(errno));
		close(fd6);
		return;
	}
	pthread_mutex_lock(&pause_lock);
	ns.own = (struct dmsc_l7_nsl){.ep.kind = EP_NS_LISTEN,
				      .fd = -1,
				      .ino = ns.own_ino,
				      .cookie = cookie,
				      .addr = val.addr,
				      .ep6.kind = EP_NS_LISTEN6,
				      .fd6 = fd6};
	watch_locked(&ns.own);
	pthread_mutex_unlock(&pause_lock);
	pr_info("listening in the helper's own network namespace on [::1]:%u\n", ntohs(ns.port));
}

int dmsc_l7_netns_start(const char *pin_dir, const struct sockaddr_in *listen, bool registered,
			const struct dmsc_l7_netns_ops *ops)
{
	char path[PATH_MAX];
	struct stat st;
	size_t i;
	int err;

	for (i = 0; i < DMSC_L7_NETNS_SLOTS; i++)
		ns.slots[i].fd = ns.slots[i].fd6 = -1;
	ns.ops = ops;
	ns.port = listen->sin_port;
	snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, DMSC_MAP_L7_NETNS);
	ns.map_fd = bpf_obj_get(path);
	if (ns.map_fd < 0) {
		pr_warn("cannot open %s: %s (a datapath installed by an older build: install "
			"again to add it); clients in other network namespaces reach the helper at "
			"--listen only\n",
			path, strerror(errno));
		return 0;
	}
	if (mesh_cgroup(pin_dir, ns.cg_root, sizeof(ns.cg_root))) {
		pr_warn("no mesh cgroup to look for network namespaces in: clients reach the "
			"helper at --listen only\n");
		return 0;
	}
	/* the thread's own: setns() of one thread leaves the others alone */
	ns.own_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (ns.own_fd < 0 || fstat(ns.own_fd, &st) < 0) {
		err = -errno;
		pr_warn("cannot open the helper's own network namespace: %s\n", strerror(-err));
		return err;
	}
	ns.own_ino = (uint64_t)st.st_ino;
	open_own(registered ? listen : NULL);
	scan();
	if (ns.off)
		return 0;
	sweep_stale();
	ns.ev_fd = dmsc_l7_procev_open(ns.own_fd);
	if (ns.ev_fd < 0)
		pr_warn("no process events from the kernel (%s): a new network namespace is "
			"found by the scan alone, and its first connections within %d ms are "
			"balanced at L4\n",
			strerror(-ns.ev_fd), DMSC_L7_NETNS_SCAN_MS);
	ns.stop_fd = eventfd(0, EFD_CLOEXEC);
	if (ns.stop_fd < 0)
		return -errno;
	/* the thread setns()es: it must start from the same namespace */
	err = pthread_create(&ns.th, NULL, scan_main, NULL);
	if (err) {
		pr_warn("cannot start the network namespace scanner: %s\n", strerror(err));
		return -err;
	}
	ns.thread = true;
	pr_info("looking for network namespaces in %s every %d ms%s\n", ns.cg_root,
		DMSC_L7_NETNS_SCAN_MS, ns.ev_fd >= 0 ? " and at each exec" : "");
	return 0;
}

void dmsc_l7_netns_stop_scanning(void)
{
	uint64_t one = 1;

	if (ns.thread) {
		if (write(ns.stop_fd, &one, sizeof(one)) != sizeof(one))
			pr_warn("cannot stop the network namespace scanner: %s\n",
				strerror(errno));
		pthread_join(ns.th, NULL);
		ns.thread = false;
	}
	if (ns.ev_fd >= 0)
		close(ns.ev_fd);
	ns.ev_fd = -1;
	/* no more namespaces to learn: the probe's cgroup goes */
	dmsc_l7_nscookie_cleanup();
}

/* One listener at the drain: out of every epoll (a paused one stays out,
 * and no worker's sweep puts it back: unwatched), what its queues hold
 * handed to accept, then closed. */
static void close_one(struct dmsc_l7_nsl *l, void (*accept)(void *arg, int fd, uint64_t netns),
		      void *arg)
{
	pthread_mutex_lock(&pause_lock);
	unwatch_locked(l);
	pthread_mutex_unlock(&pause_lock);
	if (l->fd >= 0)
		accept(arg, l->fd, l->cookie);
	if (l->fd6 >= 0)
		accept(arg, l->fd6, l->cookie);
	pthread_mutex_lock(&pause_lock);
	if (l->fd >= 0)
		close(l->fd);
	if (l->fd6 >= 0)
		close(l->fd6);
	l->fd = l->fd6 = -1;
	pthread_mutex_unlock(&pause_lock);
}

void dmsc_l7_netns_close(void (*accept)(void *arg, int fd, uint64_t netns), void *arg)
{
	size_t i;

	/* never started (--no-netns): the slots were never set to -1 and
	 * hold no listener */
	if (!ns.ops)
		return;
	if (ns.own.fd6 >= 0) {
		/* its entry stays: the next helper binds [::1] beside us and
		 * writes the same one */
		close_one(&ns.own, accept, arg);
	}

	for (i = 0; i < DMSC_L7_NETNS_SLOTS; i++) {
		struct dmsc_l7_nsl *l = &ns.slots[i];

		if (l->fd < 0)
			continue;
		close_one(l, accept, arg);
		__atomic_sub_fetch(&ns.active, 1, __ATOMIC_RELAXED);
	}
}

bool dmsc_l7_netns_pause(struct dmsc_l7_nsl *l, int fd)
{
	bool *paused = NULL, done = false;

	pthread_mutex_lock(&pause_lock);
	if (fd >= 0 && l->watched)
		paused = fd == l->fd ? &l->paused : fd == l->fd6 ? &l->paused6 : NULL;
	if (paused) {
		/* also when paused already: a resume that could put it back
		 * in some workers' epoll only (dmsc_l7_netns_resume) */
		ns.ops->unwatch(fd);
		done = !*paused;
		*paused = true;
		if (done)
			__atomic_add_fetch(&n_paused, 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&pause_lock);
	return done;
}

/* under pause_lock */
static void resume_locked(struct dmsc_l7_nsl *l)
{
	if (!l->watched)
		return;
	/* a watch that failed (no memory for epoll's entry) is tried again
	 * at the next sweep */
	if (l->paused && ns.ops->watch(l->fd, &l->ep) == 0) {
		l->paused = false;
		__atomic_sub_fetch(&n_paused, 1, __ATOMIC_RELAXED);
	}
	if (l->paused6 && ns.ops->watch(l->fd6, &l->ep6) == 0) {
		l->paused6 = false;
		__atomic_sub_fetch(&n_paused, 1, __ATOMIC_RELAXED);
	}
}

void dmsc_l7_netns_resume(void)
{
	size_t i;

	if (!__atomic_load_n(&n_paused, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&pause_lock);
	resume_locked(&ns.own);
	for (i = 0; i < DMSC_L7_NETNS_SLOTS; i++)
		if (ns.slots[i].fd >= 0)
			resume_locked(&ns.slots[i]);
	pthread_mutex_unlock(&pause_lock);
}

bool dmsc_l7_netns_own_entry(void)
{
	return ns.own.cookie != 0;
}

bool dmsc_l7_netns_addr(uint32_t addr)
{
	return (ntohl(addr) & DMSC_L7_NETNS_MASK) == DMSC_L7_NETNS_NET;
}

unsigned int dmsc_l7_netns_count(void)
{
	return __atomic_load_n(&ns.active, __ATOMIC_RELAXED);
}
