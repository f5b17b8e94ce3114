// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The migrating reuseport program of a listener (reuseport.h). */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include "log.h"
#include "reuseport.h"

/* r2 = ctx->migrating_sk; r0 = SK_PASS; exit. A SYN gets no selection
 * from it, so the kernel picks a listener by its own hash as without a
 * program; a closing listener's connection (migrating_sk set) alike, among
 * the listeners left. The program exists for its attach type, which is
 * what allows the migration for this group alone (the sysctl
 * net.ipv4.tcp_migrate_req would allow it for every group of the
 * namespace, the application's own included). The read of migrating_sk
 * is the probe: a kernel before 5.14 accepts the attach type without
 * knowing it, but refuses the field, so the load fails there. */
static const struct bpf_insn pass_insns[] = {
	{.code = BPF_LDX | BPF_MEM | BPF_DW,
	 .dst_reg = BPF_REG_2,
	 .src_reg = BPF_REG_1,
	 .off = offsetof(struct sk_reuseport_md, migrating_sk)},
	{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = SK_PASS},
	{.code = BPF_JMP | BPF_EXIT},
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int prog_fd = -1, load_err;
static bool said;

static int prog(void)
{
	LIBBPF_OPTS(bpf_prog_load_opts, o,
		    .expected_attach_type = BPF_SK_REUSEPORT_SELECT_OR_MIGRATE);

	if (prog_fd >= 0 || load_err)
		return prog_fd >= 0 ? prog_fd : load_err;
	prog_fd = bpf_prog_load(BPF_PROG_TYPE_SK_REUSEPORT, "dmsc_migrate", "GPL", pass_insns,
				sizeof(pass_insns) / sizeof(pass_insns[0]), &o);
	if (prog_fd < 0) {
		load_err = prog_fd;
		prog_fd = -1;
	}
	return prog_fd >= 0 ? prog_fd : load_err;
}

int dmsc_reuseport_migrate(int fd)
{
	int pfd, err = 0;

	pthread_mutex_lock(&lock);
	pfd = prog();
	if (pfd < 0)
		err = pfd;
	else if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &pfd, sizeof(pfd)) < 0)
		err = -errno;
	if (err && !said) {
		said = true;
		pr_info("listener hand-over: the kernel does not move a closing listener's "
			"queued connections to its replacement (%s; Linux 5.14 and later do): "
			"a connection that arrives just as an old listener closes may be reset\n",
			strerror(-err));
	}
	pthread_mutex_unlock(&lock);
	return err;
}
