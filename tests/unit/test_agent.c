// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's pure parts: debounce, policy directories, the Prometheus text
 * format, the HTTP request parser.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "cgroup.h"
#include "debounce.h"
#include "policy_set.h"
#include "httpd.h"
#include "metrics.h"

/* ---- debounce -------------------------------------------------------- */

Test(debounce, nothing_pending_waits_forever)
{
	struct dmsc_debounce d;

	dmsc_debounce_init(&d, 100, 1000);
	cr_assert_eq(dmsc_debounce_wait_ms(&d, 0), -1);
	cr_assert_not(dmsc_debounce_take(&d, 5000));
}

Test(debounce, a_burst_is_one_change_after_quiet)
{
	struct dmsc_debounce d;
	int64_t t;

	dmsc_debounce_init(&d, 100, 1000);
	for (t = 0; t <= 500; t += 50)
		dmsc_debounce_event(&d, t);
	cr_assert_eq(dmsc_debounce_wait_ms(&d, 520), 80);
	cr_assert_not(dmsc_debounce_take(&d, 599));
	cr_assert(dmsc_debounce_take(&d, 600));
	cr_assert_not(dmsc_debounce_take(&d, 601), "taken once");
	cr_assert_eq(dmsc_debounce_wait_ms(&d, 700), -1);
}

Test(debounce, an_endless_burst_is_applied_after_max)
{
	struct dmsc_debounce d;
	int64_t t;
	int taken = 0;

	dmsc_debounce_init(&d, 100, 1000);
	for (t = 0; t <= 2500; t += 50) {
		dmsc_debounce_event(&d, t);
		if (dmsc_debounce_take(&d, t))
			taken++;
	}
	cr_assert_eq(taken, 2, "at 1000 and 2050 ms, though events never stopped");
}

/* ---- policy directories --------------------------------------------- */

Test(policy_dir, entries)
{
	static const char *const skipped[] = {".10-reviews.json", "reviews.json~",
					      "reviews.json.swp", ".json", "README"};
	size_t i;

	cr_assert(dmsc_policy_dir_entry("10-reviews.json"));
	for (i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++)
		cr_assert_not(dmsc_policy_dir_entry(skipped[i]), "%s", skipped[i]);
}

static void parse(const char *text, struct dmsc_policy *p)
{
	struct dmsc_policy_errors errs = {0};

	cr_assert_eq(dmsc_policy_parse(text, strlen(text), "t", p, &errs), 0);
	dmsc_policy_errors_free(&errs);
}

#define SVC(name, vip)                                                                             \
	"{ \"name\": \"" name "\", \"vip\": \"" vip "\", \"port\": 80, \"backends\": [ "           \
	"{ \"address\": \"198.18.1.2\", \"port\": 80 } ] }"
#define SVC6(name, vip)                                                                            \
	"{ \"name\": \"" name "\", \"vip\": \"" vip "\", \"port\": 80, \"backends\": [ "           \
	"{ \"address\": \"2001:2:60::2\", \"port\": 80 } ] }"

/* Two policy files, name0 and name1, merged: the result in m (merge_free). */
struct merge2 {
	struct dmsc_policy parts[2];
	struct dmsc_policy_set set;
	struct dmsc_msgs msgs;
	int rc;
};

static void merge(struct merge2 *m, const char *name0, const char *text0, const char *name1,
		  const char *text1)
{
	const char *names[] = {name0, name1};

	memset(m, 0, sizeof(*m));
	parse(text0, &m->parts[0]);
	parse(text1, &m->parts[1]);
	m->rc = dmsc_policy_set_merge(m->parts, names, 2, &m->set, &m->msgs);
}

static void merge_free(struct merge2 *m)
{
	if (m->rc == 0)
		dmsc_policy_set_free(&m->set);
	dmsc_msgs_free(&m->msgs);
	dmsc_policy_free(&m->parts[0]);
	dmsc_policy_free(&m->parts[1]);
}

Test(policy_dir, merge_keeps_file_order_and_origin)
{
	struct merge2 m;

	merge(&m, "a.json",
	      "{ \"services\": [ " SVC("x", "198.19.0.1") ", " SVC("y", "198.19.0.2") " ] }",
	      "b.json", "{ \"services\": [ " SVC("z", "198.19.0.3") " ] }");
	cr_assert_eq(m.rc, 0);
	cr_assert_eq(m.msgs.n, 0);
	cr_assert_eq(m.set.policy.n_services, 3);
	cr_assert_str_eq(m.set.policy.services[2].name, "z");
	cr_assert_eq(m.set.svc_file[0], 0);
	cr_assert_eq(m.set.svc_file[2], 1);
	cr_assert_eq(m.parts[0].n_services, 0, "services moved out");
	merge_free(&m);
}

Test(policy_dir, duplicates_across_files_name_both_files)
{
	struct merge2 m;

	merge(&m, "a.json",
	      "{ \"services\": [ " SVC("x", "198.19.0.1") ", " SVC("y", "198.19.0.2") " ] }",
	      "b.json",
	      "{ \"services\": [ " SVC("q", "198.19.0.9") ", " SVC("x", "198.19.0.3") ", " SVC(
		  "w", "198.19.0.2") " ] }");
	cr_assert_eq(m.rc, -EINVAL);
	cr_assert_eq(m.msgs.n, 2);
	cr_assert_str_eq(m.msgs.lines[0],
			 "b.json: services[1]: the name \"x\" is also defined in a.json "
			 "(services[0])");
	cr_assert_str_eq(m.msgs.lines[1],
			 "b.json: services[2] (w): 198.19.0.2:80/tcp is also the address of "
			 "services[1] (y) in a.json");
	cr_assert_eq(m.set.policy.n_services, 0, "nothing left to apply");
	merge_free(&m);
}

/* tcp and http services share the kernel's TCP key: one VIP:port cannot be
 * both, whichever files define them. */
Test(policy_dir, tcp_and_http_on_one_address_across_files_are_refused)
{
	struct merge2 m;

	merge(&m, "10-tcp.json", "{ \"services\": [ " SVC("plain", "198.19.0.1") " ] }",
	      "20-http.json",
	      "{ \"services\": [ { \"name\": \"web\", \"vip\": \"198.19.0.1\", \"port\": 80, "
	      "\"protocol\": \"http\", \"backends\": [ { \"address\": \"198.18.1.3\", "
	      "\"port\": 80 } ] } ] }");
	cr_assert_eq(m.rc, -EINVAL);
	cr_assert_eq(m.msgs.n, 1);
	cr_assert_str_eq(m.msgs.lines[0],
			 "20-http.json: services[0] (web): 198.19.0.1:80/http is also the address "
			 "of services[0] (plain) in 10-tcp.json as tcp (tcp and http share the "
			 "kernel's TCP key)");
	merge_free(&m);
}

/* udp is a key of its own: a tcp and a udp service may share VIP:port. */
Test(policy_dir, tcp_and_udp_on_one_address_are_two_services)
{
	struct merge2 m;

	merge(&m, "10-tcp.json", "{ \"services\": [ " SVC("plain", "198.19.0.1") " ] }",
	      "20-udp.json",
	      "{ \"services\": [ { \"name\": \"dns\", \"vip\": \"198.19.0.1\", \"port\": 80, "
	      "\"protocol\": \"udp\", \"backends\": [ { \"address\": \"198.18.1.3\", "
	      "\"port\": 80 } ] } ] }");
	cr_assert_eq(m.rc, 0);
	cr_assert_eq(m.set.policy.n_services, 2);
	merge_free(&m);
}

Test(policy_dir, load_a_directory)
{
	char dir[] = "/tmp/dmsc-unit-dir.XXXXXX", path[256];
	struct dmsc_policy_set set;
	struct dmsc_msgs msgs = {0};
	FILE *f;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(dmsc_policy_set_load(dir, &set, &msgs), -EINVAL, "empty directory");
	cr_assert_eq(msgs.n, 1);
	cr_assert(strstr(msgs.lines[0], "no policy file"));
	dmsc_msgs_free(&msgs);
	snprintf(path, sizeof(path), "%s/20-b.json", dir);
	f = fopen(path, "w");
	fputs("{ \"services\": [ " SVC("b", "198.19.0.2") " ] }", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/10-a.json", dir);
	f = fopen(path, "w");
	fputs("{ \"services\": [ " SVC("a", "198.19.0.1") " ] }", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/.30-c.json", dir);
	f = fopen(path, "w");
	fputs("{ broken", f);
	fclose(f);
	cr_assert_eq(dmsc_policy_set_load(dir, &set, &msgs), 0);
	cr_assert_eq(set.policy.n_services, 2);
	cr_assert_str_eq(set.policy.services[0].name, "a", "files in name order");
	dmsc_policy_set_free(&set);
	snprintf(path, sizeof(path), "%s/15-bad.json", dir);
	f = fopen(path, "w");
	fputs("{ \"services\": [ ", f);
	fclose(f);
	cr_assert_eq(dmsc_policy_set_load(dir, &set, &msgs), -EINVAL);
	cr_assert_geq(msgs.n, 1);
	cr_assert(strstr(msgs.lines[0], "15-bad.json: line 1"), "got %s", msgs.lines[0]);
	dmsc_msgs_free(&msgs);
	unlink(path);
	snprintf(path, sizeof(path), "%s/10-a.json", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/20-b.json", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/.30-c.json", dir);
	unlink(path);
	rmdir(dir);
}

/* ---- Prometheus text format ------------------------------------------ */

static const char *text(struct dmsc_buf *b)
{
	cr_assert_not(b->failed);
	return b->p ? b->p : "";
}

Test(prom, label_values_are_escaped)
{
	struct dmsc_buf b = {0};
	struct dmsc_prom_label l[] = {{"service", "a\"b\\c\nd"}, {"vip", "1.2.3.4:80/tcp"}};

	dmsc_prom_sample(&b, "dmsc_x_total", l, 2, 42);
	cr_assert_str_eq(text(&b),
			 "dmsc_x_total{service=\"a\\\"b\\\\c\\nd\",vip=\"1.2.3.4:80/tcp\"} 42\n");
	dmsc_buf_free(&b);
}

Test(prom, help_escapes_backslash_and_newline_only)
{
	struct dmsc_buf b = {0};

	dmsc_prom_family(&b, "dmsc_y", "gauge", "a \"quoted\" \\ and\nmore");
	cr_assert_str_eq(text(&b),
			 "# HELP dmsc_y a \"quoted\" \\\\ and\\nmore\n# TYPE dmsc_y gauge\n");
	dmsc_buf_free(&b);
}

Test(prom, values)
{
	struct dmsc_buf b = {0};

	dmsc_prom_sample(&b, "a", NULL, 0, 18446744073709551615ull);
	dmsc_prom_sample_f(&b, "b", NULL, 0, 0.5);
	dmsc_prom_sample_f(&b, "c", NULL, 0, 1.0 / 0.0);
	cr_assert_str_eq(text(&b), "a 18446744073709551615\nb 0.5\nc +Inf\n");
	dmsc_buf_free(&b);
}

Test(prom, histogram_is_cumulative)
{
	static const double bounds[] = {1, 2, 4};
	struct dmsc_histogram h;
	struct dmsc_buf b = {0};

	dmsc_histogram_init(&h, bounds, 3);
	dmsc_histogram_observe(&h, 0.5);
	dmsc_histogram_observe(&h, 1); /* le is inclusive */
	dmsc_histogram_observe(&h, 3);
	dmsc_histogram_observe(&h, 8);
	dmsc_prom_histogram(&b, "d_seconds", "help", &h);
	cr_assert_str_eq(text(&b), "# HELP d_seconds help\n"
				   "# TYPE d_seconds histogram\n"
				   "d_seconds_bucket{le=\"1\"} 2\n"
				   "d_seconds_bucket{le=\"2\"} 2\n"
				   "d_seconds_bucket{le=\"4\"} 3\n"
				   "d_seconds_bucket{le=\"+Inf\"} 4\n"
				   "d_seconds_sum 12.5\n"
				   "d_seconds_count 4\n");
	dmsc_buf_free(&b);
}

Test(prom, a_large_buffer_grows)
{
	struct dmsc_buf b = {0};
	int i;

	for (i = 0; i < 10000; i++)
		dmsc_buf_printf(&b, "%05d\n", i);
	cr_assert_eq(b.len, 60000);
	cr_assert_eq(strncmp(b.p + 59994, "09999\n", 6), 0);
	dmsc_buf_free(&b);
}

/* ---- HTTP request line ------------------------------------------------- */

Test(httpd, requests)
{
	char path[64];
	int head;
	const char *r;

	r = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
	cr_assert_eq(dmsc_httpd_parse_request(r, strlen(r), path, sizeof(path), &head), 0);
	cr_assert_str_eq(path, "/metrics");
	cr_assert_eq(head, 0);
	r = "HEAD /metrics?x=1 HTTP/1.0\r\n\r\n";
	cr_assert_eq(dmsc_httpd_parse_request(r, strlen(r), path, sizeof(path), &head), 0);
	cr_assert_str_eq(path, "/metrics");
	cr_assert_eq(head, 1);
	r = "POST /metrics HTTP/1.1\r\n\r\n";
	cr_assert_eq(dmsc_httpd_parse_request(r, strlen(r), path, sizeof(path), &head), 405);
	r = "GET metrics HTTP/1.1\r\n\r\n";
	cr_assert_eq(dmsc_httpd_parse_request(r, strlen(r), path, sizeof(path), &head), 400);
	r = "GET /metrics\r\n\r\n";
	cr_assert_eq(dmsc_httpd_parse_request(r, strlen(r), path, sizeof(path), &head), 400);
	r = "garbage";
	cr_assert_eq(dmsc_httpd_parse_request(r, strlen(r), path, sizeof(path), &head), 400);
}

/* ---- the policy watch (issue 10, item 15) ------------------------------ */

#include <fcntl.h>
#include <sys/inotify.h>

#include "policy_watch.h"

/* An event as inotify lays it out: header, then the name padded. */
static size_t make_event(char *buf, int wd, uint32_t mask, const char *name)
{
	struct inotify_event ev = {.wd = wd, .mask = mask};
	size_t len = name ? (strlen(name) + 1 + 15) / 16 * 16 : 0;

	ev.len = (uint32_t)len;
	memcpy(buf, &ev, sizeof(ev));
	memset(buf + sizeof(ev), 0, len);
	if (name)
		memcpy(buf + sizeof(ev), name, strlen(name));
	return sizeof(ev) + len;
}

static enum dmsc_watch_verdict classify(const struct dmsc_policy_watch *w, int wd, uint32_t mask,
					const char *name)
{
	char buf[sizeof(struct inotify_event) + 64]
	    __attribute__((aligned(__alignof__(struct inotify_event))));

	make_event(buf, wd, mask, name);
	return dmsc_policy_watch_classify(w, (const struct inotify_event *)buf);
}

static void file_watch(struct dmsc_policy_watch *w)
{
	memset(w, 0, sizeof(*w));
	w->policy = "/etc/dmsc/policy.json";
	snprintf(w->dir, sizeof(w->dir), "/etc/dmsc");
	snprintf(w->name, sizeof(w->name), "policy.json");
	w->fd = -1;
	w->wd = 1;
	w->target_wd[0] = 2;
	w->n_targets = 1;
}

Test(policy_watch, an_overflow_reads_everything_again)
{
	struct dmsc_policy_watch w;

	file_watch(&w);
	cr_assert_eq(classify(&w, -1, IN_Q_OVERFLOW, NULL), DMSC_WATCH_OVERFLOW);
}

Test(policy_watch, the_configmap_swap_of_data_is_a_change)
{
	struct dmsc_policy_watch w;

	file_watch(&w);
	cr_assert_eq(classify(&w, 1, IN_MOVED_TO, "..data"), DMSC_WATCH_CHANGED);
	cr_assert_eq(classify(&w, 1, IN_CREATE | IN_ISDIR, "..2026_11_29_16_00_00.1"),
		     DMSC_WATCH_IGNORE);
	cr_assert_eq(classify(&w, 1, IN_CLOSE_WRITE, "policy.json"), DMSC_WATCH_CHANGED);
	cr_assert_eq(classify(&w, 1, IN_CLOSE_WRITE, "other.json"), DMSC_WATCH_IGNORE);
	w.is_dir = true;
	cr_assert_eq(classify(&w, 1, IN_MOVED_TO, "..data"), DMSC_WATCH_CHANGED);
	cr_assert_eq(classify(&w, 1, IN_MOVED_TO, "other.json"), DMSC_WATCH_CHANGED);
	cr_assert_eq(classify(&w, 1, IN_MOVED_TO, ".other.json.swp"), DMSC_WATCH_IGNORE);
}

Test(policy_watch, a_link_the_policy_passes_through_and_its_target_dir)
{
	struct dmsc_policy_watch w;

	file_watch(&w);
	snprintf(w.links[0], sizeof(w.links[0]), "current");
	w.n_links = 1;
	cr_assert_eq(classify(&w, 1, IN_MOVED_TO, "current"), DMSC_WATCH_CHANGED);
	cr_assert_eq(classify(&w, 2, IN_CLOSE_WRITE, "policy.json"), DMSC_WATCH_CHANGED);
	cr_assert_eq(classify(&w, 2, IN_DELETE_SELF, NULL), DMSC_WATCH_CHANGED);
	cr_assert_eq(classify(&w, 2, IN_IGNORED, NULL), DMSC_WATCH_IGNORE, "our own rm_watch");
	cr_assert_eq(classify(&w, 3, IN_CLOSE_WRITE, "policy.json"), DMSC_WATCH_IGNORE,
		     "a watch given up");
	cr_assert_eq(classify(&w, 1, IN_DELETE_SELF, NULL), DMSC_WATCH_LOST);
}

/* The handler, fed an overflow the way the kernel queues it (wd -1, no
 * name) through a pipe: it asks for the policy to be read again. A real
 * overflow needs fs.inotify.max_queued_events lowered host-wide, which a
 * test must not do. */
Test(policy_watch, the_reader_applies_again_after_an_overflow)
{
	char buf[256] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct dmsc_policy_watch w;
	int p[2];
	size_t len;

	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
	file_watch(&w);
	w.n_targets = 0;
	w.fd = p[0];
	len = make_event(buf, 1, IN_CLOSE_WRITE, "unrelated.txt");
	cr_assert_eq(write(p[1], buf, len), (ssize_t)len);
	cr_assert_not(dmsc_policy_watch_read(&w), "an unrelated name changes nothing");
	len = make_event(buf, 1, IN_CLOSE_WRITE, "unrelated.txt");
	len += make_event(buf + len, -1, IN_Q_OVERFLOW, NULL);
	cr_assert_eq(write(p[1], buf, len), (ssize_t)len);
	cr_assert(dmsc_policy_watch_read(&w), "an overflow means: read the policy again");
	close(p[0]);
	close(p[1]);
}

/* ---- allow_from re-resolution (issue 10, item 12) ---------------------- */

#include <sys/stat.h>

#include "allow_resolve.h"

Test(allow_resolve, an_existing_directory_is_its_inode_and_a_missing_one_no_id)
{
	char root[] = "/tmp/dmsc-unit-allow.XXXXXX", sub[64];
	struct stat st;
	__u64 a, b;

	cr_assert_not_null(mkdtemp(root));
	snprintf(sub, sizeof(sub), "%s/app", root);
	a = dmsc_allow_resolve(root, "app");
	cr_assert(a & DMSC_ALLOW_UNRESOLVED, "no directory: no id any cgroup has");
	cr_assert_eq(dmsc_allow_resolve(root, "app"), a, "the same path, the same id");
	b = dmsc_allow_resolve(root, "app2");
	cr_assert(b & DMSC_ALLOW_UNRESOLVED);
	cr_assert_neq(a, b, "two missing paths of one service stay two rules");
	cr_assert_eq(mkdir(sub, 0700), 0);
	cr_assert_eq(stat(sub, &st), 0);
	cr_assert_eq(dmsc_allow_resolve(root, "app"), (__u64)st.st_ino);
	rmdir(sub);
	rmdir(root);
}

static void count_dir(const char *dir, void *ctx)
{
	char *out = ctx;

	strcat(out, dir);
	strcat(out, ";");
}

Test(allow_resolve, the_directories_watched_for_a_path)
{
	char out[512] = "";

	cr_assert_eq(
	    dmsc_cgroup_watch_dirs("/sys/fs/cgroup", "shop.slice/web.service/app", count_dir, out),
	    3);
	cr_assert_str_eq(out, "/sys/fs/cgroup;/sys/fs/cgroup/shop.slice;"
			      "/sys/fs/cgroup/shop.slice/web.service;");
	out[0] = '\0';
	cr_assert_eq(dmsc_cgroup_watch_dirs("/sys/fs/cgroup", "top", count_dir, out), 1);
	cr_assert_str_eq(out, "/sys/fs/cgroup;");
}

/* ---- metrics at scale (issue 10, item 14) ------------------------------ */

Test(metrics, per_backend_series_by_mode_and_size)
{
	cr_assert(dmsc_metrics_backends_on(DMSC_METRICS_BACKENDS_AUTO, 1000));
	cr_assert_not(dmsc_metrics_backends_on(DMSC_METRICS_BACKENDS_AUTO, 1001));
	cr_assert(dmsc_metrics_backends_on(DMSC_METRICS_BACKENDS_ON, 100000));
	cr_assert_not(dmsc_metrics_backends_on(DMSC_METRICS_BACKENDS_OFF, 1));
}

Test(metrics, a_snapshot_copies_what_the_page_names)
{
	static const struct dmsc_limits no_limits;
	static const struct dmsc_svc_health no_health;
	const __u32 vip6[4] = {htonl(0x20010002), 0, 0, htonl(1)}, none6[4] = {0};
	const __u32 be6[2][4] = {{htonl(0x20010002), 0, 0, htonl(7)}, {0}};
	struct dmsc_mirror_svc svcs[2] = {{.id = 3, .family = AF_INET}, {.id = 5}};
	struct dmsc_mirror m = {
	    .svcs = svcs, .n = 2, .n_backends = 4, .generation = 9, .loaded = true};
	struct dmsc_mirror snap;

	cr_assert_eq(dmsc_mirror_svc_shape(&svcs[0], AF_INET, none6, "reviews", 2, NULL,
					   &no_limits, &no_health, NULL, 0),
		     0);
	svcs[0].be[0] = (struct dmsc_mirror_be){.id = 7, .addr = 1, .port = 2};
	svcs[0].be[1].id = 8;
	cr_assert_eq(dmsc_mirror_svc_shape(&svcs[1], AF_INET6, vip6, "ratings", 2, be6,
					   &no_limits, &no_health, NULL, 0),
		     0);
	cr_assert_eq(dmsc_metrics_snapshot(&m, true, &snap), 0);
	svcs[0].id = 4;
	memcpy((char *)svcs[0].name, "changed", 7);
	svcs[0].be[0].id = 70;
	svcs[1].ext->vip6[3] = htonl(9);
	svcs[1].ext->be6[0][3] = htonl(9);
	cr_assert_eq(snap.n, 2);
	cr_assert_eq(snap.svcs[0].id, 3);
	cr_assert_str_eq(snap.svcs[0].name, "reviews");
	cr_assert_eq(snap.svcs[0].n_be, 2);
	cr_assert_eq(snap.svcs[0].be[0].id, 7, "a copy, not the mirror's backends");
	cr_assert_eq(snap.svcs[0].be[1].id, 8);
	cr_assert_null(snap.svcs[0].ext);
	cr_assert_str_eq(snap.svcs[1].name, "ratings");
	cr_assert_eq(snap.svcs[1].family, AF_INET6);
	cr_assert_eq(memcmp(dmsc_mirror_vip6(&snap.svcs[1]), vip6, sizeof(vip6)), 0,
		     "a copy of the VIP, not the mirror's");
	cr_assert_eq(memcmp(dmsc_mirror_be6(&snap.svcs[1], 0), be6[0], sizeof(be6[0])), 0);
	cr_assert_eq(snap.generation, 9);
	dmsc_metrics_snapshot_free(&snap);
	cr_assert_eq(dmsc_metrics_snapshot(&m, false, &snap), 0);
	cr_assert_eq(snap.svcs[0].n_be, 0, "without backends");
	cr_assert_null(snap.svcs[0].be);
	cr_assert_eq(memcmp(dmsc_mirror_vip6(&snap.svcs[1]), vip6, 12), 0);
	cr_assert_eq(memcmp(dmsc_mirror_be6(&snap.svcs[1], 0), none6, sizeof(none6)), 0);
	dmsc_metrics_snapshot_free(&snap);
	dmsc_mirror_svc_release(&svcs[0]);
	dmsc_mirror_svc_release(&svcs[1]);
}

/* The mirror's compact record (docs/design.md decision 59): a plain service
 * is its fixed part and one block of backends and name; whatever else it
 * has goes to an ext, read back as it was given. */
Test(mirror_record, a_plain_service_has_no_ext)
{
	static const struct dmsc_limits no_limits;
	static const struct dmsc_svc_health no_health;
	const __u32 none6[4] = {0}, zero_be6[3][4] = {{0}};
	char longname[100];
	struct dmsc_mirror_svc ms = {0};

	cr_assert_leq(sizeof(struct dmsc_mirror_svc), 48);
	cr_assert_leq(sizeof(struct dmsc_mirror_be), 16);
	cr_assert_eq(dmsc_mirror_svc_shape(&ms, AF_INET, none6, "web", 3, zero_be6, &no_limits,
					   &no_health, NULL, 0),
		     0);
	cr_assert_null(ms.ext, "IPv4, no limits, health or rules: no ext");
	cr_assert_str_eq(ms.name, "web");
	cr_assert_eq(ms.n_be, 3);
	cr_assert_eq(ms.be[2].id, 0, "backends zeroed for the caller");
	cr_assert_eq((const void *)ms.name, (const void *)(ms.be + 3), "one block");
	cr_assert_eq(memcmp(dmsc_mirror_vip6(&ms), none6, sizeof(none6)), 0);
	cr_assert_eq(memcmp(dmsc_mirror_be6(&ms, 1), none6, sizeof(none6)), 0);
	cr_assert_eq(dmsc_mirror_ext(&ms)->n_allow, 0);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	cr_assert_eq(dmsc_mirror_svc_shape(&ms, AF_INET, none6, longname, 0, NULL, &no_limits,
					   &no_health, NULL, 0),
		     0);
	cr_assert_eq(strlen(ms.name), DMSC_NAME_MAX - 1, "cut as the map's name is");
	cr_assert_eq(ms.n_be, 0);
	dmsc_mirror_svc_release(&ms);
	cr_assert_null(ms.be);
	cr_assert_null(ms.ext);
}

Test(mirror_record, what_a_plain_service_lacks_goes_to_its_ext)
{
	static const struct dmsc_svc_health no_health;
	const __u32 none6[4] = {0}, vip6[4] = {htonl(0x20010002), 0, 0, htonl(1)};
	const __u32 be6[2][4] = {{htonl(0x20010002), 0, 0, htonl(2)},
				 {htonl(0x20010002), 0, 0, htonl(3)}};
	struct dmsc_limits limits = {0}, no_limits = {0};
	struct dmsc_svc_health health;
	struct dmsc_allow_entry rules[2];
	struct dmsc_mirror_svc ms = {0};

	limits.conn_rate = 100;
	cr_assert_eq(dmsc_mirror_svc_shape(&ms, AF_INET, none6, "a", 1, NULL, &limits,
					   &no_health, NULL, 0),
		     0);
	cr_assert_not_null(ms.ext, "rate limits: an ext");
	cr_assert_eq(dmsc_mirror_ext(&ms)->limits.conn_rate, 100);
	cr_assert_eq(dmsc_mirror_ext(&ms)->n_be6, 0);

	memset(&health, 0, sizeof(health));
	memset((char *)&health + sizeof(health) - 1, 1, 1);
	cr_assert_eq(dmsc_mirror_svc_shape(&ms, AF_INET, none6, "a", 1, NULL, &no_limits,
					   &health, NULL, 0),
		     0);
	cr_assert_not_null(ms.ext, "health settings: an ext");
	cr_assert_eq(memcmp(&dmsc_mirror_ext(&ms)->health, &health, sizeof(health)), 0);
	cr_assert_eq(dmsc_mirror_ext(&ms)->limits.conn_rate, 0, "the old ext is gone");

	memset(rules, 0, sizeof(rules));
	rules[0].key.svc_id = rules[1].key.svc_id = 4;
	rules[1].key.cgroup_id = 77;
	cr_assert_eq(dmsc_mirror_svc_shape(&ms, AF_INET, none6, "a", 1, NULL, &no_limits,
					   &no_health, rules, 2),
		     0);
	cr_assert_eq(dmsc_mirror_ext(&ms)->n_allow, 2);
	cr_assert_neq(dmsc_mirror_ext(&ms)->allow, rules, "a copy");
	cr_assert_eq(dmsc_mirror_ext(&ms)->allow[1].key.cgroup_id, 77);

	cr_assert_eq(dmsc_mirror_svc_shape(&ms, AF_INET6, vip6, "b", 2, be6, &no_limits,
					   &no_health, NULL, 0),
		     0);
	cr_assert_eq(ms.family, AF_INET6);
	cr_assert_eq(memcmp(dmsc_mirror_vip6(&ms), vip6, sizeof(vip6)), 0);
	cr_assert_eq(memcmp(dmsc_mirror_be6(&ms, 0), be6[0], sizeof(be6[0])), 0);
	cr_assert_eq(memcmp(dmsc_mirror_be6(&ms, 1), be6[1], sizeof(be6[1])), 0);
	cr_assert_eq(dmsc_mirror_ext(&ms)->n_allow, 0);
	cr_assert_str_eq(ms.name, "b");
	dmsc_mirror_svc_release(&ms);
}

/* IPv6 VIPs across files: distinct addresses are distinct services (their
 * IPv4 field is 0 for all), one address twice is refused, bracketed. */
Test(policy_dir, ipv6_addresses_across_files)
{
	struct merge2 m;

	merge(
	    &m, "a.json",
	    "{ \"services\": [ " SVC6("x", "2001:2:61::1") ", " SVC6("y", "2001:2:61::2") " ] }",
	    "b.json",
	    "{ \"services\": [ " SVC6("z", "2001:2:61::3") ", " SVC6("w", "2001:2:61:0::2") " ] }");
	cr_assert_eq(m.rc, -EINVAL);
	cr_assert_eq(m.msgs.n, 1);
	cr_assert_str_eq(m.msgs.lines[0],
			 "b.json: services[1] (w): [2001:2:61::2]:80/tcp is also the address of "
			 "services[1] (y) in a.json");
	merge_free(&m);
}

/* ---- a process's cgroup v2 ------------------------------------------- */
Test(cgroup, within)
{
	cr_assert(dmsc_cgroup_within("/shop.slice", "/shop.slice"));
	cr_assert(dmsc_cgroup_within("/shop.slice/web.service", "/shop.slice"));
	cr_assert(!dmsc_cgroup_within("/shop.slice2", "/shop.slice"), "a sibling's prefix");
	cr_assert(!dmsc_cgroup_within("/shop", "/shop.slice"));
	cr_assert(dmsc_cgroup_within("shop.slice/a", "shop.slice"), "relative paths alike");
}

Test(cgroup, is_unit)
{
	cr_assert(dmsc_cgroup_is_unit("shop.slice/web.service"));
	cr_assert(dmsc_cgroup_is_unit("/user.slice/session-2.scope/"), "a trailing '/'");
	cr_assert(!dmsc_cgroup_is_unit("shop.slice"), "a slice is not emptied when a unit stops");
	cr_assert(!dmsc_cgroup_is_unit("mesh"));
	cr_assert(!dmsc_cgroup_is_unit(".service"), "a name that is only the suffix");
	cr_assert(!dmsc_cgroup_is_unit("web.service/x"), "only the last component counts");
}

Test(cgroup, of_self)
{
	char cg[4096], small[2];
	FILE *f = fopen("/proc/self/cgroup", "re");
	char line[4200], want[4200] = "";

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::", 3)) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(want, sizeof(want), "%s", line + 3);
		}
	fclose(f);
	if (!want[0]) {
		cr_assert_eq(dmsc_cgroup2_of(0, cg, sizeof(cg)), -ENOENT, "no cgroup v2 line");
		return;
	}
	cr_assert_eq(dmsc_cgroup2_of(0, cg, sizeof(cg)), 0);
	cr_assert_str_eq(cg, want);
	cr_assert_eq(dmsc_cgroup2_of(getpid(), cg, sizeof(cg)), 0);
	cr_assert_str_eq(cg, want);
	cr_assert_eq(dmsc_cgroup2_of(0, small, sizeof(small)),
		     strlen(want) < sizeof(small) ? 0 : -ENAMETOOLONG);
	cr_assert_eq(dmsc_cgroup2_of(-5, cg, sizeof(cg)), -ENOENT, "no such process");
}
