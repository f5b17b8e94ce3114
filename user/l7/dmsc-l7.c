// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-l7: the per-host HTTP helper. cgroup/connect4 hands it the
 * connections to protocol "http" services; it routes each request on its
 * own (path, method, headers; first match wins), picks a backend by weight
 * from the route's label selector, and enforces requests_per_second,
 * timeouts and retries.
 *
 *   dmsc-l7 --listen ADDR:PORT --policy FILE [options]   (see usage())
 *
 * Design:
 * - N workers (default: one per CPU), each a thread with its own epoll and
 *   its own SO_REUSEPORT listener: the kernel spreads connections, workers
 *   share nothing on the hot path but the per-service request buckets.
 * - The service of a connection comes from the kernel: dmsc_l7_handoff,
 *   keyed by the 4-tuple this accept() sees (shared.h explains why that is
 *   exact). No record: the connection is closed, never guessed.
 * - A connection that opens with the HTTP/2 preface is handed to l7_h2.c
 *   (nghttp2; streams routed one by one to h2c backends).
 * - HTTP/1.1 parsing: Node's http_parser 2.9 (Debian's libhttp-parser),
 *   paused after each request head (to route it) and after each message
 *   (so pipelined requests wait their turn: responses leave in order).
 * - Requests are rebuilt, not copied: the head from the parsed method,
 *   target and headers (hop-by-hop headers dropped), the body re-framed
 *   from the parser's on_body (chunked stays chunked, trailers dropped).
 *   What reaches a backend is what the parser understood, which closes the
 *   door on request smuggling. Hop-by-hop fields (and those Connection
 *   names) stay behind; X-Forwarded-For / Forwarded are appended
 *   (--forwarded); a 1.0 request without Host gets the VIP. Responses are
 *   forwarded byte for byte to HTTP/1.1 clients (the parser only finds
 *   where each ends); an HTTP/1.0 client gets its head rewritten and a
 *   chunked body de-chunked and close-delimited.
 * - Bodies stream both ways with bounded buffers (back-pressure: a side
 *   is not read while the other side's buffer is full).
 * - Timers: each worker sweeps its connections every SWEEP_MS; per
 *   connection there are two deadlines (client side, backend side). A sweep
 *   is O(connections) every 100 ms, cheaper than a timer per connection at
 *   the sizes one host sees, and it cannot leak timers.
 * - Its own sockets to backends carry an entry in the pinned map
 *   dmsc_l7_own (written before connect()), so connect4 never hands its
 *   connections back to it; a workload cannot write that map (shared.h).
 * - Idle keep-alive backend connections stay in epoll: one the backend
 *   writes to or closes while idle is closed at once, and one is checked
 *   again (MSG_PEEK) before it carries a request; they expire after
 *   --pool-idle-ms. A connection whose response framing was not consumed
 *   exactly is never pooled, so no client can read another's answer.
 * - Connections per client address are bounded (--max-conns-per-client,
 *   by default half of what the helper can hold: conns_per_client_auto):
 *   past the bound a client gets an immediate 503 and a close.
 * - Out of descriptors, a listener whose accept() fails leaves epoll until
 *   the next sweep (l7_worker.c accept_pause), a namespace's that of every
 *   worker: level-triggered and readable, it would wake the workers for
 *   ever while its queue waits.
 *
 * Exit codes, for the supervisor (user/dmscd/l7_supervisor.c): 0 drained after
 * SIGTERM/SIGINT; 1 could not start (bind, maps, policy) or died; 2 usage.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <poll.h>
#include <sys/signalfd.h>

#include "baton.h"
#include "clock.h"
#include "l7_proxy.h"
#include "l7_tunnel.h"

/* clang-format off: the defaults, a line per kind (docs/l7.md) */
struct l7_opts opt = {
    .ready_fd = -1, .updates_fd = -1,
    /* a request's head */
    .max_header_bytes = 61440, .max_headers = 100, .max_target = 61440, /* decision 94 */
    /* times, ms */
    .idle_ms = 60000, .head_ms = 10000, .io_ms = 300000, .default_timeout_ms = 0, /* 95 */
    .drain_ms = 10000, .pool_idle_ms = 4000, .orphan_ms = DMSC_HELPER_ORPHAN_MS_DEFAULT,
    /* connections */
    .max_conns = 16384, .max_conns_per_client = 0, /* 0: conns_per_client_auto() */
    .default_retries = 1,
    .forwarded = 1, /* FWD_XFF */
};
/* clang-format on */

struct dmsc_l7_config cfg;
struct svc_rt *svc_rt; /* parallel to cfg.svcs */
int handoff_fd = -1;
int handoff6_fd = -1;
int own_fd = -1; /* dmsc_l7_own */
struct dmsc_l7_via via = {.t = {.conf_fd = -1, .handoff_fd = -1, .handoff6_fd = -1}};
int access_fd = -1;
volatile int draining;
size_t n_route_slots;
struct worker *workers;

/* ---- startup ---------------------------------------------------------------- */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: dmsc-l7 --listen ADDR:PORT --policy FILE [options]\n"
		"  --listen ADDR:PORT      where connect4 sends http services' connections\n"
		"  --policy FILE           the policy (its protocol \"http\" services)\n"
		"  --pin-dir DIR           the datapath (default $DMSC_PIN_DIR or %s/v%s)\n"
		"  --workers N             worker threads (default: CPUs)\n"
		"  --ready-fd FD           write \"ready\\n\" to FD and close it once serving\n"
		"  --policy-updates FD     dmscd's: a unix socket on which it sends the\n"
		"                          changes of values (weights, timeouts, retries,\n"
		"                          limits), taken in place\n"
		"  --access-log FILE|-     one line per request (default: off)\n"
		"  --metrics-file FILE     Prometheus text, rewritten every second\n"
		"  --no-register           do not write the listen address to the datapath\n"
		"  --no-netns              no listeners in the mesh's other network namespaces\n"
		"  --host NAME             this host's name (its certificate's): a backend on\n"
		"                          another host, of a service whose mtls is not off,\n"
		"                          is reached through this host's tunnel\n"
		"  --max-header-bytes N    request line + headers (default 61440; past it 431)\n"
		"  --max-headers N         header fields (default 100; past it 431)\n"
		"  --max-target N          request target (default 61440; past it 414)\n"
		"  --idle-timeout-ms N     keep-alive idle (default 60000)\n"
		"  --head-timeout-ms N     a whole request head (default 10000; then 408)\n"
		"  --io-timeout-ms N       no progress on a body or a write (default 300000)\n"
		"  --default-timeout-ms N  a route without timeout_ms (default 0: none)\n"
		"  --default-retries N     a route without retries (default 1)\n"
		"  --drain-ms N            SIGTERM: finish in-flight requests within N (10000)\n"
		"  --baton                 dmscd's helper: the helper of the dmscd before, if it\n"
		"                          serves still, drains once this one is ready\n"
		"  --orphan-ms N           its dmscd gone (SIGUSR2, or the end of\n"
		"                          --policy-updates): serve on until the next dmscd\n"
		"                          adopts it or its helper takes over, the datapath\n"
		"                          is uninstalled, or N ms pass (60000), then drain\n"
		"  --max-conns N           connections per worker (default 16384)\n"
		"  --max-conns-per-client N  connections from one client address, all\n"
		"                          workers together (default: half of what the helper\n"
		"                          can hold; past it 503 + close)\n"
		"  --pool-idle-ms N        an idle keep-alive backend connection is closed\n"
		"                          after N ms (default 4000)\n"
		"  --forwarded MODE        xff (default: X-Forwarded-For), forwarded\n"
		"                          (Forwarded: for=), both, or none\n"
		"  -v, --verbose           debug messages\n"
		"Exit: 0 drained, 1 failed, 2 usage.\n",
		DMSC_PIN_ROOT, DMSC_LAYOUT_VERSION);
}

/* The options that only store their value; the numeric ones each a
 * number from min to max. */
static const struct dmsc_opt stored[] = {
    DMSC_OPT_STR("policy", &opt.policy_file),
    DMSC_OPT_STR("pin-dir", &opt.pin_dir),
    DMSC_OPT_STR("access-log", &opt.access_log),
    DMSC_OPT_STR("metrics-file", &opt.metrics_file),
    DMSC_OPT_STR("host", &opt.host),
    DMSC_OPT_FLAG("no-register", &opt.no_register),
    DMSC_OPT_FLAG("no-netns", &opt.no_netns),
    DMSC_OPT_FLAG("baton", &opt.baton),
    DMSC_OPT_NUM("max-header-bytes", &opt.max_header_bytes, 256, 1 << 20),
    DMSC_OPT_NUM("max-headers", &opt.max_headers, 1, 1024),
    DMSC_OPT_NUM("max-target", &opt.max_target, 16, 1 << 20),
    DMSC_OPT_NUM("idle-timeout-ms", &opt.idle_ms, 1, 86400000),
    DMSC_OPT_NUM("head-timeout-ms", &opt.head_ms, 1, 86400000),
    DMSC_OPT_NUM("io-timeout-ms", &opt.io_ms, 1, 86400000),
    DMSC_OPT_NUM("default-timeout-ms", &opt.default_timeout_ms, 0, 86400000),
    DMSC_OPT_NUM("default-retries", &opt.default_retries, 0, 10),
    DMSC_OPT_NUM("drain-ms", &opt.drain_ms, 0, 3600000),
    DMSC_OPT_NUM("orphan-ms", &opt.orphan_ms, 0, 86400000),
    DMSC_OPT_NUM("max-conns", &opt.max_conns, 1, 1 << 24),
    DMSC_OPT_NUM("max-conns-per-client", &opt.max_conns_per_client, 1, 1 << 24),
    DMSC_OPT_NUM("pool-idle-ms", &opt.pool_idle_ms, 1, 3600000),
    DMSC_OPT_END,
};

/* getopt values of the options parse_args handles itself */
enum {
	O_LISTEN = 0x100,
	O_WORKERS,
	O_READY,
	O_UPDATES,
	O_FORWARDED,
};

static int parse_listen(const char *v)
{
	char host[64];
	const char *colon = strrchr(v, ':');
	uint32_t u;

	if (!colon || (size_t)(colon - v) >= sizeof(host) ||
	    dmsc_parse_u32_quiet(colon + 1, 1, 65535, &u)) {
		fprintf(stderr, "dmsc-l7: --listen \"%s\": not IPV4:PORT\n", v);
		return -EINVAL;
	}
	memcpy(host, v, (size_t)(colon - v));
	host[colon - v] = '\0';
	opt.listen.sin_family = AF_INET;
	opt.listen.sin_port = htons((uint16_t)u);
	if (inet_pton(AF_INET, host, &opt.listen.sin_addr) != 1 ||
	    opt.listen.sin_addr.s_addr == INADDR_ANY) {
		fprintf(stderr,
			"dmsc-l7: --listen \"%s\": a concrete IPv4 address "
			"(connect4 redirects to it)\n",
			v);
		return -EINVAL;
	}
	return 0;
}

static int parse_forwarded(const char *v)
{
	if (!strcmp(v, "xff"))
		opt.forwarded = FWD_XFF;
	else if (!strcmp(v, "forwarded"))
		opt.forwarded = FWD_FORWARDED;
	else if (!strcmp(v, "both"))
		opt.forwarded = FWD_XFF | FWD_FORWARDED;
	else if (!strcmp(v, "none"))
		opt.forwarded = 0;
	else {
		fprintf(stderr, "dmsc-l7: --forwarded \"%s\": xff, forwarded, both or none\n", v);
		return -EINVAL;
	}
	return 0;
}

/* 0, or -EINVAL (said; the caller prints the usage); -h and an unknown
 * option exit here. */
static int parse_args(int argc, char **argv)
{
	static const struct option own[] = {
	    {"listen", required_argument, NULL, O_LISTEN},
	    {"workers", required_argument, NULL, O_WORKERS},
	    {"ready-fd", required_argument, NULL, O_READY},
	    {"policy-updates", required_argument, NULL, O_UPDATES},
	    {"forwarded", required_argument, NULL, O_FORWARDED},
	    DMSC_LONGOPTS_END,
	};
	struct option longopts[DMSC_OPT_ROWS(stored, own)];
	uint32_t u;
	int c, r;

	dmsc_opt_rows(stored, own, longopts);
	while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (c) {
		case O_LISTEN:
			if (parse_listen(optarg))
				return -EINVAL;
			break;
		case O_FORWARDED:
			if (parse_forwarded(optarg))
				return -EINVAL;
			break;
		case O_WORKERS:
			if (dmsc_parse_u32("--workers", optarg, 1, 1024, &u))
				return -EINVAL;
			opt.workers = (int)u;
			break;
		case O_READY:
			if (dmsc_parse_u32("--ready-fd", optarg, 0, INT_MAX, &u))
				return -EINVAL;
			opt.ready_fd = (int)u;
			break;
		case O_UPDATES:
			if (dmsc_parse_u32("--policy-updates", optarg, 0, INT_MAX, &u))
				return -EINVAL;
			opt.updates_fd = (int)u;
			break;
		default:
			r = dmsc_opt_take(stored, c, optarg);
			if (r < 0)
				return -EINVAL;
			if (r)
				break;
			c = dmsc_opt_common(c, "dmsc-l7", usage);
			if (c >= 0)
				exit(c);
			break;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "dmsc-l7: unexpected argument %s\n", argv[optind]);
		return -EINVAL;
	}
	if (!opt.listen.sin_family || !opt.policy_file) {
		fprintf(stderr, "dmsc-l7: --listen and --policy are required\n");
		return -EINVAL;
	}
	return 0;
}

static int load_policy(void)
{
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p = {0};
	char line[1024];
	size_t i, k;
	int err;

	/* dmscd's view names the backends' hosts without their tunnels'
	 * addresses: the tunnel has those (l7_via.h) */
	err = dmsc_policy_load_file_flags(opt.policy_file, DMSC_POLICY_HOSTS_ELSEWHERE, &p, &errs);
	if (err) {
		for (i = 0; i < errs.count; i++) {
			dmsc_policy_error_format(&errs.items[i], line, sizeof(line));
			pr_warn("%s: %s\n", opt.policy_file, line);
		}
		dmsc_policy_errors_free(&errs);
		return err;
	}
	dmsc_policy_errors_free(&errs);
	err = dmsc_l7_config_build(&cfg, &p);
	if (err) {
		pr_warn("cannot build the routing tables: %s\n", strerror(-err));
		return err;
	}
	svc_rt = calloc(cfg.n_svcs + 1, sizeof(*svc_rt));
	if (!svc_rt)
		return -ENOMEM;
	for (i = 0; i < cfg.n_svcs; i++) {
		pthread_mutex_init(&svc_rt[i].lock, NULL);
		/* starts full (last_ns 0): a burst is allowed at once */
		svc_rt[i].rate = cfg.svcs[i].requests_per_second;
		svc_rt[i].depth =
		    dmsc_tb_request_depth(cfg.svcs[i].requests_per_second, cfg.svcs[i].burst);
	}
	for (k = 0; k < cfg.n_svcs; k++)
		n_route_slots += cfg.svcs[k].n_routes + 1;
	err = opt.updates_fd >= 0 ? l7_update_keep_view(opt.policy_file) : 0;
	if (err)
		pr_warn("%s: cannot keep it for the changes to come: %s\n", opt.policy_file,
			strerror(-err));
	return err;
}

static int open_maps(const char *pin_dir, int *conf_fd)
{
	handoff_fd =
	    dmsc_pinned_map_open(pin_dir, DMSC_MAP_L7_HANDOFF,
				 "is dmsc installed there, by a build with the L7 handoff?");
	if (handoff_fd < 0)
		return handoff_fd;
	/* Optional: without it (a datapath of an older build) the [::1]
	 * listeners accept nothing that connect6 sent (decision 48). */
	{
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, DMSC_MAP_L7_HANDOFF6);
		handoff6_fd = bpf_obj_get(path);
		if (handoff6_fd < 0)
			pr_warn("cannot open %s: %s; IPv6 http connections are balanced at L4 "
				"(install again to add it)\n",
				path, strerror(errno));
	}
	own_fd = dmsc_pinned_map_open(pin_dir, DMSC_MAP_L7_OWN,
				      "a datapath installed by an older build: install again to "
				      "add it");
	if (own_fd < 0)
		return own_fd;
	*conf_fd = dmsc_pinned_map_open(pin_dir, DMSC_MAP_L7_CONF, NULL);
	return *conf_fd < 0 ? *conf_fd : 0;
}

/*
 * glibc's per-thread cache keeps 7 freed blocks of a size by default. A
 * worker with dozens of streams in flight frees nghttp2's stream, frame and
 * header blocks in bursts larger than that, and every block past the 7th
 * goes through the arena's shared lists (malloc and free were about 6% of
 * the helper's CPU at 64 HTTP/2 streams). glibc sizes the cache from the
 * environment alone, read when the program starts: so the helper starts
 * itself once more with the size set, the same process and arguments
 * (docs/design.md decision 90). A size the user set is left alone; if the
 * path of the running binary cannot be read or run, the helper goes on
 * with glibc's default.
 */
#define TCACHE_TUNABLE "glibc.malloc.tcache_count="
#define TCACHE_COUNT 128

static void tcache_sized(char **argv)
{
	const char *cur = getenv("GLIBC_TUNABLES");
	char path[PATH_MAX], val[1024], *was = cur ? strdup(cur) : NULL;
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	int len;

	if ((cur && strstr(cur, TCACHE_TUNABLE)) || n <= 0 || (cur && !was))
		goto out;
	path[n] = '\0'; /* execv by path, not /proc/self/exe: comm stays "dmsc-l7" */
	if (cur && *cur)
		len = snprintf(val, sizeof(val), "%s:" TCACHE_TUNABLE "%d", cur, TCACHE_COUNT);
	else
		len = snprintf(val, sizeof(val), TCACHE_TUNABLE "%d", TCACHE_COUNT);
	if (len < 0 || (size_t)len >= sizeof(val) || setenv("GLIBC_TUNABLES", val, 1))
		goto out;
	execv(path, argv);
	if (was) /* not run again: the environment as it came */
		setenv("GLIBC_TUNABLES", was, 1);
	else
		unsetenv("GLIBC_TUNABLES");
out:
	free(was);
}

/* --max-conns-per-client by default: half of the client connections the
 * helper can hold, so that no one client (a namespace's workloads share an
 * address) can lock the others out, while one that opens many (a pool, a
 * load generator) is not refused where a direct connection would not be
 * (docs/design.md decision 93); never below the 512 of before, or all it
 * can hold when that is less. It can hold --max-conns per worker, and two
 * descriptors per connection within its limit of open files, less an
 * eighth kept for listeners, maps and the pools' idle connections. */
#define CONNS_PER_CLIENT_MIN 512u
static uint32_t conns_per_client_auto(void)
{
	uint64_t cap = (uint64_t)opt.max_conns * (uint64_t)opt.workers;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		uint64_t fds = (uint64_t)rl.rlim_cur - (uint64_t)rl.rlim_cur / 8;

		if (fds / 2 < cap)
			cap = fds / 2;
	}
	/* half, but not below the fixed default of before (512) where the
	 * helper holds more than that */
	if (cap / 2 > CONNS_PER_CLIENT_MIN)
		cap /= 2;
	else if (cap > CONNS_PER_CLIENT_MIN)
		cap = CONNS_PER_CLIENT_MIN;
	return cap ? (uint32_t)(cap < (1u << 24) ? cap : 1u << 24) : 1;
}

int main(int argc, char **argv)
{
	struct dmsc_l7_conf conf = {0};
	struct rlimit rl;
	sigset_t mask;
	__u32 zero = 0;
	int conf_fd = -1, sig_fd, i, err, sig;
	size_t s, base;
	uint64_t seed;
	struct dmsc_baton baton;
	struct dmsc_adopt adopt;
	static char metrics_path[PATH_MAX]; /* named by a dmscd that adopted it */
	char listen_text[DMSC_ADDR_PORT_LEN];
	int64_t orphan_since = 0; /* dmsc_now_ms() when dmscd died */
	bool dmscd_sends = false; /* dmscd's update socket is how it hears dmscd go */
	bool handed_over = false; /* the next helper took the baton */
	int64_t metrics_ms = 0;

	tcache_sized(argv);
	/* Two descriptors per proxied connection, for the tunnel too: the
	 * soft limit a service gets by default (1024 under systemd) is far
	 * below the hard one. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (dmsc_l7_tunnel_command(argc, argv))
		return dmsc_l7_tunnel_main(argc, argv);
	if (parse_args(argc, argv)) {
		usage(stderr);
		return 2;
	}
	if (!opt.workers) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		opt.workers = n > 0 && n < 1024 ? (int)n : 1;
	}
	if (!opt.max_conns_per_client)
		opt.max_conns_per_client = conns_per_client_auto();
	/* Signals are taken by the main thread alone (its signalfd, polled
	 * with dmscd's changes of weights below). */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGPIPE);
	sigaddset(&mask, DMSC_HELPER_ORPHAN_SIGNAL);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sig_fd < 0) {
		pr_warn("cannot make a signalfd: %s\n", strerror(errno));
		return 1;
	}

	if (load_policy())
		return 1;
	if (open_maps(opt.pin_dir ? opt.pin_dir : dmsc_pin_dir(), &conf_fd))
		return 1;
	if (dmsc_l7_health_open(opt.pin_dir ? opt.pin_dir : dmsc_pin_dir()))
		return 1;
	if (dmsc_l7_via_open(&via, opt.pin_dir ? opt.pin_dir : dmsc_pin_dir(), opt.host))
		return 1;
	if (opt.access_log) {
		access_fd =
		    strcmp(opt.access_log, "-") == 0
			? dup(STDERR_FILENO)
			: open(opt.access_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
		if (access_fd < 0) {
			pr_warn("cannot open the access log %s: %s\n", opt.access_log,
				strerror(errno));
			return 1;
		}
	}

	workers = calloc((size_t)opt.workers, sizeof(*workers));
	if (!workers)
		return 1;
	for (i = 0; i < opt.workers; i++) {
		struct worker *w = &workers[i];
		struct epoll_event ev = {.events = EPOLLIN};

		w->id = i;
		for (s = 0; s < POOL_SLOTS; s++)
			w->pool[s].fd = -1;
		if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
			seed = now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)i;
		w->rng = seed | 1;
		w->m.rm = calloc(n_route_slots + 1, sizeof(*w->m.rm));
		w->m.rm_base = calloc(cfg.n_svcs + 1, sizeof(*w->m.rm_base));
		if (!w->m.rm || !w->m.rm_base)
			return 1;
		for (s = 0, base = 0; s < cfg.n_svcs; s++) {
			w->m.rm_base[s] = base;
			base += cfg.svcs[s].n_routes + 1;
		}
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		worker_h2_init(w);
		if (w->epfd < 0 || h2_move_init(w) < 0) {
			pr_warn("worker %d: cannot make its epoll or eventfd: %s\n", i,
				strerror(errno));
			return 1;
		}
		w->lfd = open_listener();
		if (w->lfd < 0) {
			err = w->lfd;
			pr_warn("cannot listen on %s:%u: %s\n", inet_ntoa(opt.listen.sin_addr),
				ntohs(opt.listen.sin_port), strerror(-err));
			return 1;
		}
		w->lep.kind = EP_LISTEN;
		ev.data.ptr = &w->lep;
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev) < 0)
			return 1;
		w->listening = true;
	}
	for (i = 0; i < opt.workers; i++) {
		err = pthread_create(&workers[i].th, NULL, worker_main, &workers[i]);
		if (err) {
			pr_warn("cannot start worker %d: %s\n", i, strerror(err));
			return 1;
		}
	}
	/* Listeners in the mesh's other network namespaces, before "ready". */
	if (!opt.no_netns && dmsc_l7_netns_start(opt.pin_dir ? opt.pin_dir : dmsc_pin_dir(),
						 &opt.listen, !opt.no_register, &netns_ops))
		return 1;
	if (!opt.no_register) {
		conf.addr = opt.listen.sin_addr.s_addr;
		conf.port = opt.listen.sin_port;
		conf.port6 = dmsc_l7_netns_own_entry() ? DMSC_L7_CONF_F_NETNS : 0;
		if (bpf_map_update_elem(conf_fd, &zero, &conf, BPF_ANY)) {
			pr_warn("cannot register in %s: %s\n", DMSC_MAP_L7_CONF, strerror(errno));
			return 1;
		}
	}
	pr_info("serving %zu http service%s on %s:%u with %d workers, up to %u connections "
		"per client\n",
		cfg.n_svcs, cfg.n_svcs == 1 ? "" : "s", inet_ntoa(opt.listen.sin_addr),
		ntohs(opt.listen.sin_port), opt.workers, opt.max_conns_per_client);
	printf("ready\n");
	fflush(stdout);
	if (opt.ready_fd >= 0) {
		if (write(opt.ready_fd, "ready\n", 6) != 6)
			pr_warn("cannot write to --ready-fd %d: %s\n", opt.ready_fd,
				strerror(errno));
		close(opt.ready_fd);
	}

	snprintf(listen_text, sizeof(listen_text), "%s:%u", inet_ntoa(opt.listen.sin_addr),
		 ntohs(opt.listen.sin_port));
	dmsc_baton_init(&baton, "l7", opt.pin_dir ? opt.pin_dir : dmsc_pin_dir(), listen_text);
	dmsc_adopt_init(&adopt, "l7", opt.pin_dir ? opt.pin_dir : dmsc_pin_dir());
	dmscd_sends = opt.baton && opt.updates_fd >= 0;
	if (opt.baton)
		dmsc_baton_take(&baton);
	for (;;) {
		/* an orphan looks for its successor every 100 ms: the two
		 * serve side by side (SO_REUSEPORT) until it drains; the
		 * baton's socket is polled too, so a successor that asks is
		 * heard at once, not up to a second later while new
		 * connections still meet the old routes */
		struct pollfd pfd[3] = {{.fd = sig_fd, .events = POLLIN},
					{.fd = opt.updates_fd, .events = POLLIN},
					{.fd = opt.baton && !baton.gone ? baton.fd : -1, .events = POLLIN}};
		struct signalfd_siginfo si;
		int64_t now;

		sig = 0;
		if (poll(pfd, 3, orphan_since ? 100 : 1000) > 0 && (pfd[0].revents & POLLIN) &&
		    read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			sig = (int)si.ssi_signo;
		if (pfd[1].revents)
			l7_policy_updates(&opt.updates_fd);
		if (sig == SIGTERM || sig == SIGINT)
			break;
		/* its parent-death signal, or (adopted, so no child of the
		 * dmscd that is gone) the end of that dmscd's update socket */
		if ((sig == DMSC_HELPER_ORPHAN_SIGNAL || (dmscd_sends && opt.updates_fd < 0)) &&
		    !orphan_since) {
			orphan_since = dmsc_now_ms();
			dmsc_adopt_offer(&adopt);
			pr_info(
			    "dmscd is gone: serving on until the next dmscd adopts this helper or "
			    "its own takes over (at most %u ms)\n",
			    opt.orphan_ms);
		}
		if (orphan_since && dmscd_sends) {
			char next[PATH_MAX];
			pid_t by = 0;
			int fd = dmsc_adopt_taken(&adopt, next, sizeof(next), &by);

			if (fd >= 0) {
				if (opt.updates_fd >= 0)
					close(opt.updates_fd);
				opt.updates_fd = fd;
				/* (the gone dmscd's name; one adopted before
				 * keeps it in metrics_path) */
				if (opt.metrics_file && strcmp(opt.metrics_file, next))
					unlink(opt.metrics_file);
				snprintf(metrics_path, sizeof(metrics_path), "%s", next);
				opt.metrics_file = metrics_path;
				metrics_ms = 0;
				orphan_since = 0;
				pr_info("adopted by dmscd (pid %d): serving on as its helper, every "
					"connection kept\n",
					(int)by);
			}
		}
		now = dmsc_now_ms();
		if (now - metrics_ms >= 1000) {
			metrics_write();
			metrics_ms = now;
		}
		if (opt.baton && dmsc_baton_passed(&baton)) {
			pr_info("the next helper serves: draining\n");
			handed_over = true;
			break;
		}
		if (orphan_since &&
		    dmsc_helper_orphan_over(orphan_since, opt.orphan_ms,
					    opt.pin_dir ? opt.pin_dir : dmsc_pin_dir()))
			break;
	}
	dmsc_baton_close(&baton);
	dmsc_adopt_close(&adopt);
	/* An orphan that no helper took over from: stopped for good (its
	 * dmscd gone, then its time up, the datapath uninstalled, or a
	 * SIGTERM): connect4 balances http services at L4 again rather than
	 * send them to a listener that no longer accepts, as dmscd did when it
	 * stopped its helper; before the drain, which may be long. */
	if (orphan_since && !handed_over && !opt.no_register)
		dmsc_l7_unregister(opt.pin_dir ? opt.pin_dir : dmsc_pin_dir());
	/* Drain: workers stop accepting, finish what is in flight within
	 * --drain-ms, and return. The registration stays: a restarted helper
	 * takes the same address (SO_REUSEPORT), so no connection is balanced
	 * around the routes meanwhile; those that arrive in between are refused. */
	pr_info("draining (at most %u ms)\n", opt.drain_ms);
	dmsc_l7_netns_stop_scanning();
	draining = 1;
	for (i = 0; i < opt.workers; i++)
		pthread_join(workers[i].th, NULL);
	/* (dmscd's helper: the file is its successor's by now) */
	if (!opt.baton)
		metrics_write();
	pr_info("drained\n");
	/* an orphan's metrics are no one's */
	if (orphan_since && opt.metrics_file)
		unlink(opt.metrics_file);
	return 0;
}
