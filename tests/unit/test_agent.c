// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmscd's pure parts: debounce, policy directories, the Prometheus text
 * format, the HTTP request parser.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "agent.h"
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
	cr_assert(dmsc_policy_dir_entry("10-reviews.json"));
	cr_assert_not(dmsc_policy_dir_entry(".10-reviews.json"));
	cr_assert_not(dmsc_policy_dir_entry("reviews.json~"));
	cr_assert_not(dmsc_policy_dir_entry("reviews.json.swp"));
	cr_assert_not(dmsc_policy_dir_entry(".json"));
	cr_assert_not(dmsc_policy_dir_entry("README"));
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

Test(policy_dir, merge_keeps_file_order_and_origin)
{
	struct dmsc_policy parts[2] = {0};
	const char *names[] = {"a.json", "b.json"};
	struct dmsc_policy_set set;
	struct dmsc_msgs msgs = {0};

	parse("{ \"services\": [ " SVC("x", "198.19.0.1") ", " SVC("y", "198.19.0.2") " ] }",
	      &parts[0]);
	parse("{ \"services\": [ " SVC("z", "198.19.0.3") " ] }", &parts[1]);
	cr_assert_eq(dmsc_policy_set_merge(parts, names, 2, &set, &msgs), 0);
	cr_assert_eq(msgs.n, 0);
	cr_assert_eq(set.policy.n_services, 3);
	cr_assert_str_eq(set.policy.services[2].name, "z");
	cr_assert_eq(set.svc_file[0], 0);
	cr_assert_eq(set.svc_file[2], 1);
	cr_assert_eq(parts[0].n_services, 0, "services moved out");
	dmsc_policy_set_free(&set);
	dmsc_msgs_free(&msgs);
}

Test(policy_dir, duplicates_across_files_name_both_files)
{
	struct dmsc_policy parts[2] = {0};
	const char *names[] = {"a.json", "b.json"};
	struct dmsc_policy_set set;
	struct dmsc_msgs msgs = {0};

	parse("{ \"services\": [ " SVC("x", "198.19.0.1") ", " SVC("y", "198.19.0.2") " ] }",
	      &parts[0]);
	parse("{ \"services\": [ " SVC("q", "198.19.0.9") ", " SVC("x", "198.19.0.3") ", " SVC(
		  "w", "198.19.0.2") " ] }",
	      &parts[1]);
	cr_assert_eq(dmsc_policy_set_merge(parts, names, 2, &set, &msgs), -EINVAL);
	cr_assert_eq(msgs.n, 2);
	cr_assert_str_eq(msgs.lines[0],
			 "b.json: services[1]: the name \"x\" is also defined in a.json "
			 "(services[0])");
	cr_assert_str_eq(msgs.lines[1],
			 "b.json: services[2] (w): 198.19.0.2:80/tcp is also the address of "
			 "services[1] (y) in a.json");
	cr_assert_eq(set.policy.n_services, 0, "nothing left to apply");
	dmsc_msgs_free(&msgs);
	dmsc_policy_free(&parts[0]);
	dmsc_policy_free(&parts[1]);
}

/* tcp and http services share the kernel's TCP key: one VIP:port cannot be
 * both, whichever files define them. */
Test(policy_dir, tcp_and_http_on_one_address_across_files_are_refused)
{
	struct dmsc_policy parts[2] = {0};
	const char *names[] = {"10-tcp.json", "20-http.json"};
	struct dmsc_policy_set set;
	struct dmsc_msgs msgs = {0};

	parse("{ \"services\": [ " SVC("plain", "198.19.0.1") " ] }", &parts[0]);
	parse("{ \"services\": [ { \"name\": \"web\", \"vip\": \"198.19.0.1\", \"port\": 80, "
	      "\"protocol\": \"http\", \"backends\": [ { \"address\": \"198.18.1.3\", "
	      "\"port\": 80 } ] } ] }",
	      &parts[1]);
	cr_assert_eq(dmsc_policy_set_merge(parts, names, 2, &set, &msgs), -EINVAL);
	cr_assert_eq(msgs.n, 1);
	cr_assert_str_eq(msgs.lines[0],
			 "20-http.json: services[0] (web): 198.19.0.1:80/http is also the address "
			 "of services[0] (plain) in 10-tcp.json as tcp (tcp and http share the "
			 "kernel's TCP key)");
	dmsc_msgs_free(&msgs);
	dmsc_policy_free(&parts[0]);
	dmsc_policy_free(&parts[1]);
}

/* udp is a key of its own: a tcp and a udp service may share VIP:port. */
Test(policy_dir, tcp_and_udp_on_one_address_are_two_services)
{
	struct dmsc_policy parts[2] = {0};
	const char *names[] = {"10-tcp.json", "20-udp.json"};
	struct dmsc_policy_set set;
	struct dmsc_msgs msgs = {0};

	parse("{ \"services\": [ " SVC("plain", "198.19.0.1") " ] }", &parts[0]);
	parse("{ \"services\": [ { \"name\": \"dns\", \"vip\": \"198.19.0.1\", \"port\": 80, "
	      "\"protocol\": \"udp\", \"backends\": [ { \"address\": \"198.18.1.3\", "
	      "\"port\": 80 } ] } ] }",
	      &parts[1]);
	cr_assert_eq(dmsc_policy_set_merge(parts, names, 2, &set, &msgs), 0);
	cr_assert_eq(set.policy.n_services, 2);
	dmsc_policy_set_free(&set);
	dmsc_msgs_free(&msgs);
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
