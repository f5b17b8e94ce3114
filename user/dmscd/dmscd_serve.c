// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's services around the apply: dmsc-l7 started from beside this
 * binary, and a metrics scrape rendered from a copy taken in the loop
 * (with dmsc-l7's own families appended).
 */
#define _GNU_SOURCE
#include <fcntl.h>

#include "dmscd_agent.h"
#include "cgroup.h"
#include "apply.h"
#include "baton.h"
#include "mtls_cert.h"
#include "tunnel_handoff.h"

/* dmsc-l7's own families (per service, route and code, latency histograms),
 * from the file it rewrites every second. */
static int append_l7_metrics(const char *file, struct dmsc_buf *body)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int err;

	if (!f)
		return -errno;
	err = dmsc_l7_metrics_append(file, f);
	fclose(f);
	if (!err && len)
		dmsc_buf_printf(body, "%.*s", (int)len, text);
	free(text);
	return err;
}

/* A helper's command line, kept in dst (its supervisor and its later
 * replacements point into it), with --metrics-file /run/dmsc/NAME.PID.prom
 * appended (the path kept in metrics). What finds the helper of the dmscd
 * before to adopt: its role and datapath (pin_dir). */
static int helper_init(struct dmsc_l7_supervisor *sup, const char **dst, size_t dst_n,
		       char *metrics, size_t metrics_len, const char *name,
		       const char *const *argv, const char *role, const char *pin_dir)
{
	size_t n = 0;
	int err;

	snprintf(metrics, metrics_len, "/run/dmsc/%s.%d.prom", name, (int)getpid());
	if (mkdir("/run/dmsc", 0755) && errno != EEXIST) {
		pr_warn("cannot create /run/dmsc: %s\n", strerror(errno));
		return -errno;
	}
	for (; argv[n]; n++) {
		if (n + 3 >= dst_n)
			return -E2BIG;
		dst[n] = argv[n];
	}
	dst[n++] = "--metrics-file";
	dst[n++] = metrics;
	dst[n] = NULL;
	err = dmsc_l7_sup_init(sup, dst) ? -E2BIG : 0;
	sup->role = role;
	sup->pin_dir = pin_dir;
	sup->metrics_file = metrics;
	return err;
}

static void helper_cgroup(const struct agent *ag, struct dmsc_l7_supervisor *sup,
			  const char *name, char *cg, size_t cg_len);

/* Builds the helper's command line for its supervisor; the helper starts
 * with the first policy applied (l7_follow), which it gets from dmscd. */
int l7_start(struct agent *ag, const char *bin, const char *listen)
{
	/* this host's name (--mtls-dir, tunnel_host): what dmsc-l7 sends to
	 * another host's backend goes through the tunnel (decision 75) */
	const char *host = dmsc_apply_host();
	/* (--drain-ms: a replaced helper keeps what it carries until it
	 * ends, up to 10 minutes; decision 87) */
	const char *argv[] = {bin,	   "--listen",	listen,		     "--drain-ms",
			      DMSC_HELPER_DRAIN_MS, "--pin-dir", ag->pin_dir,
			      host[0] ? "--host" : NULL, host, NULL};
	int err;

	err = helper_init(&ag->l7_sup, ag->l7_argv, sizeof(ag->l7_argv) / sizeof(ag->l7_argv[0]), ag->l7_metrics,
			  sizeof(ag->l7_metrics), "dmsc-l7", argv, "l7", ag->pin_dir);
	if (err)
		return err;
	/* a change of values alone (weights, timeouts, retries, limits)
	 * goes to the running helper, whose connections it keeps
	 * (docs/design.md decision 85) */
	ag->l7_sup.updates = true;
	ag->l7_sup.takes = dmsc_l7_view_values_only;
	ag->l7 = true;
	if (ag->l7_fastpath && ag->l7_fastpath_auto && dmsc_cgroup_is_unit(ag->mesh_cgroup))
		/* the unit's stop would take the helper with it, and the
		 * unit's next start could find none (docs/design.md decision
		 * 99) */
		pr_info(
		    "dmsc-l7 runs in dmscd's cgroup, reached over loopback TCP: the mesh cgroup "
		    "%s is a systemd unit's, emptied when the unit stops (--l7-fastpath on to "
		    "run it there anyway)\n",
		    ag->mesh_cgroup);
	else if (ag->l7_fastpath)
		helper_cgroup(ag, &ag->l7_sup, "dmsc-l7", ag->l7_cgroup, sizeof(ag->l7_cgroup));
	pr_info("%s on %s serves http services once a policy with some is applied\n", bin,
		listen);
	return 0;
}

/* This host's name, from its certificate (spiffe://TD/host/NAME): applies
 * send a backend of another named host through the tunnel
 * (docs/design.md decision 24). */
int tunnel_host(const char *dir)
{
	struct dmsc_mtls_cert_info info;
	char path[PATH_MAX], why[DMSC_MTLS_WHY_MAX];
	X509 *cert = NULL;
	int err;

	snprintf(path, sizeof(path), "%s/host.crt", dir);
	err = dmsc_mtls_read_cert(path, &cert, why, sizeof(why));
	if (!err)
		err = dmsc_mtls_cert_describe(cert, &info, why, sizeof(why));
	X509_free(cert);
	if (!err && !info.host[0]) {
		snprintf(why, sizeof(why), "not a host's certificate (%.200s)", info.id);
		err = -EINVAL;
	}
	if (err) {
		pr_warn("--mtls-dir: %s: %s\n", path, why);
		return err;
	}
	dmsc_apply_set_host(info.host);
	pr_info("this host is %s (%s): backends of other hosts of mtls services go through "
		"the tunnel\n", info.host, info.id);
	return 0;
}

/* The cgroup a helper runs in: MESH/NAME (dmsc-tunnel, dmsc-l7), so that
 * the sockets it makes (its listeners, whose accepted connections inherit
 * their cgroup, and its connections to this host's backends) are mesh
 * sockets: sockops pairs them with the workloads' ends, and their bytes
 * take the same-host fast path instead of loopback TCP (docs/design.md
 * decision 76). connect4 leaves them alone as before (dmsc_l7_own). Not
 * when dmscd runs in the mesh already (its children are mesh processes),
 * or when turned off (--tunnel-fastpath, --l7-fastpath). A failure is said
 * and leaves the helper where dmscd is: it works, over loopback TCP. The
 * path made is kept in cg ("" when none). */
static void helper_cgroup(const struct agent *ag, struct dmsc_l7_supervisor *sup,
			  const char *name, char *cg, size_t cg_len)
{
	char root[PATH_MAX], own[PATH_MAX];
	int fd;

	cg[0] = '\0';
	if (!ag->mesh_cgroup[0] || dmsc_cgroup2_mount(root, sizeof(root)))
		return;
	/* own: "/a/b", the mesh cgroup "a": compared without the '/' */
	if (dmsc_cgroup2_of(0, own, sizeof(own)) == 0 &&
	    dmsc_cgroup_within(own + 1, ag->mesh_cgroup)) {
		pr_info("%s runs in dmscd's cgroup, inside the mesh cgroup %s\n", name,
			ag->mesh_cgroup);
		return;
	}
	if ((size_t)snprintf(cg, cg_len, "%s/%s/%s", root, ag->mesh_cgroup, name) >= cg_len)
		goto fail;
	if (mkdir(cg, 0755) && errno != EEXIST)
		goto fail;
	fd = open(cg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		goto fail;
	sup->cgroup_fd = fd;
	pr_info("%s runs in %s: this host's workloads reach it on the same-host fast path\n",
		name, cg);
	return;
fail:
	pr_warn("cannot make %s's cgroup %s: %s; it runs in dmscd's, reached over loopback "
		"TCP\n", name, cg, strerror(errno));
	cg[0] = '\0';
}

/* At exit, once the helper is gone: its cgroup goes too. */
void helper_cgroup_remove(struct dmsc_l7_supervisor *sup, char *cg)
{
	if (sup->cgroup_fd >= 0)
		close(sup->cgroup_fd);
	sup->cgroup_fd = -1;
	if (cg[0] && rmdir(cg) && errno != ENOENT)
		pr_warn("cannot remove %s: %s\n", cg, strerror(errno));
	cg[0] = '\0';
}

/* The tunnel's command line: dmsc-l7 tunnel with the host's certificates,
 * listening for other hosts' helpers; it starts with the first policy
 * applied (tunnel_follow). connect4 hands it what goes to another host's
 * backend (--handoff-listen). */
int tunnel_start(struct agent *ag, const char *bin, const char *dir, const char *listen)
{
	const char *argv[] = {bin,
			      "tunnel",
			      "--mtls-dir",
			      dir,
			      "--listen",
			      listen,
			      "--handoff-listen",
			      DMSC_TUNNEL_HANDOFF_LISTEN_DEFAULT,
			      "--pin-dir",
			      ag->pin_dir,
			      "--drain-ms",
			      DMSC_HELPER_DRAIN_MS,
			      NULL};
	int err;

	err = helper_init(&ag->tunnel_sup, ag->tunnel_argv, sizeof(ag->tunnel_argv) / sizeof(ag->tunnel_argv[0]),
			  ag->tunnel_metrics, sizeof(ag->tunnel_metrics), "dmsc-tunnel", argv,
			  "tunnel", ag->pin_dir);
	if (err)
		return err;
	/* a new policy goes to the running tunnel, whose streams it keeps
	 * (docs/design.md decision 83) */
	ag->tunnel_sup.updates = true;
	ag->tunnel = true;
	if (ag->tunnel_fastpath)
		helper_cgroup(ag, &ag->tunnel_sup, "dmsc-tunnel", ag->tunnel_cgroup,
			      sizeof(ag->tunnel_cgroup));
	pr_info("%s tunnel on %s with the certificates of %s, once a policy is applied\n", bin,
		listen, dir);
	return 0;
}

/* Where dmsc-l7 is: beside this dmscd, unless --l7-binary says. */
void l7_default_binary(char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n <= 0) {
		snprintf(buf, len, "dmsc-l7");
		return;
	}
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	if (snprintf(buf, len, "%.*s/dmsc-l7", (int)(len > 9 ? len - 9 : 0), self) >= (int)len)
		snprintf(buf, len, "dmsc-l7");
}

/* What a scrape renders, copied in the loop when the connection comes:
 * the connection's thread reads nothing the loop changes. */
struct scrape_job {
	struct dmsc_mirror snap;
	bool snap_ok;
	struct dmsc_agent_stats stats;
	enum dmsc_metrics_backends backends;
	const char *pin_dir;
	bool l7, tunnel;
	char l7_metrics[PATH_MAX], tunnel_metrics[PATH_MAX];
	/* --etcd: its families, rendered in the loop under the store's lock */
	struct dmsc_buf etcd;
};

void *scrape_job_make(void *ctx)
{
	const struct agent *ag = ctx;
	struct scrape_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->stats = ag->stats;
	j->backends = ag->metrics_backends;
	j->pin_dir = ag->pin_dir;
	j->l7 = ag->l7;
	memcpy(j->l7_metrics, ag->l7_metrics, sizeof(j->l7_metrics));
	j->tunnel = ag->tunnel;
	memcpy(j->tunnel_metrics, ag->tunnel_metrics, sizeof(j->tunnel_metrics));
	j->snap_ok = dmsc_metrics_snapshot(&ag->mirror,
					   dmsc_metrics_backends_on(j->backends, ag->mirror.n),
					   &j->snap) == 0;
	if (ag->etcd)
		dmsc_etcd_sync_metrics(ag->etcd, &j->etcd);
	return j;
}

void scrape_job_free(void *job)
{
	struct scrape_job *j = job;

	if (!j)
		return;
	dmsc_metrics_snapshot_free(&j->snap);
	dmsc_buf_free(&j->etcd);
	free(j);
}

/* In the connection's thread. */
int metrics_handler(const char *path, struct dmsc_buf *body, void *job)
{
	struct scrape_job *j = job;
	struct dmsc_mirror own = {0};
	const struct dmsc_mirror *m;
	struct dmsc_datapath dp;
	__u64 gen;
	int err;

	if (strcmp(path, "/") == 0) {
		dmsc_buf_printf(body, "dmscd: metrics at /metrics\n");
		return 200;
	}
	if (strcmp(path, "/metrics") != 0)
		return 404;
	if (!j || !j->snap_ok || dmsc_datapath_open(&dp, j->pin_dir, false))
		return 500;
	m = &j->snap;
	/* Another writer changed the maps: name what they hold now. */
	if (!m->loaded || dmsc_datapath_generation(&dp, &gen) || gen != m->generation ||
	    dmsc_map_id(dp.fd[DMSC_M_SERVICES]) != m->services_map_id) {
		if (dmsc_mirror_load(&own, &dp)) {
			dmsc_datapath_close(&dp);
			return 500;
		}
		m = &own;
	}
	/* The snapshot copied the backends by the same rule. */
	err = dmsc_metrics_render(body, m, &dp, &j->stats,
				  dmsc_metrics_backends_on(j->backends, m->n));
	dmsc_datapath_close(&dp);
	dmsc_mirror_free(&own);
	if (!err && j->etcd.failed)
		err = -ENOMEM;
	if (!err && j->etcd.len)
		dmsc_buf_append(body, j->etcd.p, j->etcd.len);
	if (!err && j->l7)
		err = append_l7_metrics(j->l7_metrics, body);
	if (!err && j->tunnel)
		err = append_l7_metrics(j->tunnel_metrics, body);
	return err ? 500 : 200;
}
