// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* A network namespace's cookie on every kernel: l7_nscookie.h. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include "cgroup.h"
#include "l7_nscookie.h"
#include "log.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71 /* Linux 5.14 */
#endif

#define PROBE_PREFIX "dmsc-l7-netns."

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	int state; /* 0: not decided; 1: SO_NETNS_COOKIE; 2: the probe; -1: neither */
	int map_fd, prog_fd, link_fd, procs_fd;
	char cg[PATH_MAX]; /* the probe's cgroup, "" when none was made */
} p = {.map_fd = -1, .prog_fd = -1, .link_fd = -1, .procs_fd = -1};

/*
 * The sock_create program: the cookie of the new socket's namespace into
 * element 0 of the array map, and the socket allowed. bpf_get_netns_cookie
 * takes a cgroup sock program's context from Linux 5.7 (the same helper
 * connect4 and connect6 call, so the two cookies are the same number).
 *   r0 = bpf_get_netns_cookie(r1 = ctx)
 *   *(u64 *)(r10 - 8) = r0; *(u32 *)(r10 - 12) = 0
 *   bpf_map_update_elem(map, r10 - 12, r10 - 8, BPF_ANY)
 *   return 1
 */
static int load(int map_fd)
{
	const struct bpf_insn insns[] = {
	    {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_get_netns_cookie},
	    {.code = BPF_STX | BPF_MEM | BPF_DW, .dst_reg = BPF_REG_10, .src_reg = BPF_REG_0,
	     .off = -8},
	    {.code = BPF_ST | BPF_MEM | BPF_W, .dst_reg = BPF_REG_10, .off = -12, .imm = 0},
	    {.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1, .src_reg = BPF_PSEUDO_MAP_FD,
	     .imm = map_fd},
	    {.code = 0}, /* the second half of the 64-bit load */
	    {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_10},
	    {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = BPF_REG_2, .imm = -12},
	    {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_3, .src_reg = BPF_REG_10},
	    {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = BPF_REG_3, .imm = -8},
	    {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_4, .imm = BPF_ANY},
	    {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_map_update_elem},
	    {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1},
	    {.code = BPF_JMP | BPF_EXIT},
	};
	LIBBPF_OPTS(bpf_prog_load_opts, o, .expected_attach_type = BPF_CGROUP_INET_SOCK_CREATE);

	return bpf_prog_load(BPF_PROG_TYPE_CGROUP_SOCK, "dmsc_l7_nscook", "GPL", insns,
			     sizeof(insns) / sizeof(insns[0]), &o);
}

/* Whether pid is a running dmsc-l7 (its probe cgroup is its own). */
static bool helper_alive(int pid)
{
	char path[64], comm[32] = "";
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, comm, sizeof(comm) - 1);
	close(fd);
	return n > 0 && strncmp(comm, "dmsc-l7\n", 8) == 0;
}

/* Probe cgroups in dir that helpers no longer running left (SIGKILL):
 * their bpf_link went with the helper, the directory is empty. */
static void sweep(const char *dir)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int pid;

	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char end;

		if (de->d_type != DT_DIR ||
		    sscanf(de->d_name, PROBE_PREFIX "%d%c", &pid, &end) != 1 || pid <= 0 ||
		    pid == getpid() || helper_alive(pid))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path))
			continue;
		if (rmdir(path) == 0)
			pr_info("removed %s, left by a helper that is gone\n", path);
	}
	closedir(d);
}

static void strip_slashes(char *s)
{
	size_t n = strlen(s);

	while (n > 1 && s[n - 1] == '/')
		s[--n] = '\0';
}

/* The parent directory for the probe's cgroup, i-th choice: the helper's
 * own cgroup, else the mesh cgroup's parent; never the cgroup2 root.
 * 0, or -ENOENT when there is no such choice. */
static int parent_dir(int i, const char *mnt, const char *mesh_cg, char *out, size_t len)
{
	char own[PATH_MAX], *slash;
	int err;

	if (i == 0) {
		err = dmsc_cgroup2_of(0, own, sizeof(own));
		if (err)
			return err;
		if (strcmp(own, "/") == 0 || snprintf(out, len, "%s%s", mnt, own) >= (int)len)
			return -ENOENT;
		return 0;
	}
	if (i != 1 || !mesh_cg || snprintf(out, len, "%s", mesh_cg) >= (int)len)
		return -ENOENT;
	strip_slashes(out);
	slash = strrchr(out, '/');
	if (!slash)
		return -ENOENT;
	*slash = '\0';
	strip_slashes(out);
	return strcmp(out, mnt) == 0 || strlen(out) <= strlen(mnt) ? -ENOENT : 0;
}

static void teardown(void)
{
	if (p.link_fd >= 0)
		close(p.link_fd);
	if (p.procs_fd >= 0)
		close(p.procs_fd);
	p.link_fd = p.procs_fd = -1;
	if (p.cg[0] && rmdir(p.cg) < 0 && errno != ENOENT)
		pr_warn("cannot remove %s: %s\n", p.cg, strerror(errno));
	p.cg[0] = '\0';
}

/* The cgroup, the map, the program and its link: 0 or a negative errno
 * (said, with what failed). */
static int setup(const char *mesh_cg)
{
	char mnt[PATH_MAX], dir[PATH_MAX], path[PATH_MAX + 32];
	int i, cg_fd = -1, err = -ENOENT;

	err = dmsc_cgroup2_mount(mnt, sizeof(mnt));
	if (err)
		return err;
	strip_slashes(mnt);
	for (i = 0; i < 2 && !p.cg[0]; i++) {
		if (parent_dir(i, mnt, mesh_cg, dir, sizeof(dir)))
			continue;
		sweep(dir);
		if (snprintf(p.cg, sizeof(p.cg), "%s/" PROBE_PREFIX "%d", dir, getpid()) >=
		    (int)sizeof(p.cg)) {
			p.cg[0] = '\0';
			continue;
		}
		if (mkdir(p.cg, 0700) < 0 && errno != EEXIST) {
			err = -errno;
			pr_warn("cannot make the cgroup %s: %s\n", p.cg, strerror(-err));
			p.cg[0] = '\0';
		}
	}
	if (!p.cg[0]) {
		if (err == -ENOENT)
			pr_warn("no cgroup to make the probe's in (the helper and the mesh cgroup's "
				"parent are the cgroup2 root, which is left alone)\n");
		return err;
	}
	snprintf(path, sizeof(path), "%s/cgroup.procs", p.cg);
	p.procs_fd = open(path, O_WRONLY | O_CLOEXEC);
	cg_fd = open(p.cg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p.procs_fd < 0 || cg_fd < 0) {
		err = -errno;
		pr_warn("cannot open %s: %s\n", p.procs_fd < 0 ? path : p.cg, strerror(-err));
		goto fail;
	}
	if (p.map_fd < 0)
		p.map_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "dmsc_l7_nscook", sizeof(__u32),
					  sizeof(__u64), 1, NULL);
	if (p.map_fd < 0) {
		err = -errno;
		pr_warn("cannot make the probe's map: %s\n", strerror(-err));
		goto fail;
	}
	if (p.prog_fd < 0)
		p.prog_fd = load(p.map_fd);
	if (p.prog_fd < 0) {
		err = p.prog_fd;
		p.prog_fd = -1;
		pr_warn("cannot load the probe's cgroup/sock_create program: %s\n", strerror(-err));
		goto fail;
	}
	/* a link, not an attachment: it goes with the helper, even a killed one */
	p.link_fd = bpf_link_create(p.prog_fd, cg_fd, BPF_CGROUP_INET_SOCK_CREATE, NULL);
	if (p.link_fd < 0) {
		err = -errno;
		pr_warn("cannot attach the probe's program to %s: %s\n", p.cg, strerror(-err));
		goto fail;
	}
	close(cg_fd);
	return 0;
fail:
	if (cg_fd >= 0)
		close(cg_fd);
	teardown();
	return err;
}

/* The probe for the namespace nsfd: a child in the probe's cgroup makes a
 * socket there. 0 or a negative errno. */
static int probe(int nsfd, uint64_t *cookie)
{
	__u32 zero = 0;
	__u64 val = 0;
	int pid, st = 0, r;

	if (bpf_map_update_elem(p.map_fd, &zero, &val, BPF_ANY))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* system calls only (a fork of a threaded process): the cgroup
		 * ("0": the writer), the namespace, the socket */
		if (write(p.procs_fd, "0", 1) != 1)
			_exit(1);
		if (setns(nsfd, CLONE_NEWNET) < 0)
			_exit(2);
		_exit(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) < 0 ? 3 : 0);
	}
	while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
		;
	if (r < 0)
		return -errno;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return WIFEXITED(st) && WEXITSTATUS(st) == 1 ? -EACCES : -ECHILD;
	if (bpf_map_lookup_elem(p.map_fd, &zero, &val))
		return -errno;
	if (!val)
		return -ENODATA; /* the program did not run */
	*cookie = val;
	return 0;
}

int dmsc_l7_nscookie(int sock, int nsfd, const char *mesh_cg, uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);
	const char *force;
	int err;

	pthread_mutex_lock(&lock);
	if (p.state == 0) {
		force = getenv("DMSC_L7_NETNS_COOKIE");
		p.state = force && strcmp(force, "probe") == 0 ? 2 : 1;
	}
	if (p.state == 1 && sock >= 0) {
		if (getsockopt(sock, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len) == 0) {
			pthread_mutex_unlock(&lock);
			return 0;
		}
		err = -errno;
		if (err != -ENOPROTOOPT && err != -EINVAL) {
			pthread_mutex_unlock(&lock);
			return err;
		}
		p.state = 2;
	}
	if (p.state == 2 && p.link_fd < 0) {
		err = setup(mesh_cg);
		if (err) {
			pr_warn("no SO_NETNS_COOKIE (Linux 5.14) and no cgroup probe (%s): the "
				"helper cannot learn a network namespace's cookie\n",
				strerror(-err));
			p.state = -1;
		} else {
			pr_info("no SO_NETNS_COOKIE (Linux 5.14): network namespaces' cookies from "
				"a cgroup/sock_create program on %s (docs/design.md decision 62)\n",
				p.cg);
		}
	}
	err = p.state == 2 ? probe(nsfd, cookie) : -EOPNOTSUPP;
	pthread_mutex_unlock(&lock);
	return err;
}

void dmsc_l7_nscookie_cleanup(void)
{
	pthread_mutex_lock(&lock);
	teardown();
	if (p.prog_fd >= 0)
		close(p.prog_fd);
	if (p.map_fd >= 0)
		close(p.map_fd);
	p.prog_fd = p.map_fd = -1;
	if (p.state == 2)
		p.state = 0;
	pthread_mutex_unlock(&lock);
}
