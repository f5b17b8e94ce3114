// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * dmsc-udp: a UDP backend and a UDP client for the kernel tests.
 *
 *   dmsc-udp serve --listen ADDR:PORT --name NAME [--max-seconds S] [--log]
 *       answers every datagram with NAME; prints "ready" once bound, and
 *       with --log one line "from ADDR:PORT" per datagram received.
 *   dmsc-udp send --to ADDR:PORT --sockets N --per-socket K [--connected]
 *                 [--timeout-ms T] [--json] [--pause-after J --resume-file F]
 *       N sockets, each sending K datagrams to ADDR:PORT and reading each
 *       answer. Reports, per backend name, the answers; how many answers
 *       came from ADDR:PORT itself (recvfrom's source, or getpeername for
 *       a connected socket); how many sockets heard one backend only.
 *       --pause-after: once, after the first socket's J-th datagram, prints
 *       "paused" on stderr and waits (at most 60 s) until file F exists,
 *       so that a test can change the policy under a socket that already
 *       sent.
 *
 * Exit: 0 ran (even with errors, which are counted), 2 usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NAME_MAX_LEN 64
#define MAX_NAMES 16
#define MAX_SOCKETS 100000
#define MAX_PER_SOCKET 10000
#define RESUME_WAIT_MS 60000

static long pause_after;
static const char *resume_file;

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 1 || port > 65535)
		return -1;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((unsigned short)port);
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int serve(const struct sockaddr_in *sa, const char *name, long max_seconds, bool log)
{
	char buf[2048];
	time_t end = time(NULL) + max_seconds;
	int fd = socket(AF_INET, SOCK_DGRAM, 0), one = 1;

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (const struct sockaddr *)sa, sizeof(*sa))) {
		fprintf(stderr, "dmsc-udp: bind: %s\n", strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (time(NULL) < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		struct sockaddr_in from;
		socklen_t len = sizeof(from);

		if (poll(&p, 1, 200) <= 0)
			continue;
		if (recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len) < 0)
			continue;
		if (log) {
			char a[INET_ADDRSTRLEN];

			printf("from %s:%u\n", inet_ntop(AF_INET, &from.sin_addr, a, sizeof(a)),
			       ntohs(from.sin_port));
			fflush(stdout);
		}
		sendto(fd, name, strlen(name), 0, (struct sockaddr *)&from, len);
	}
	close(fd);
	return 0;
}

struct tally {
	char names[MAX_NAMES][NAME_MAX_LEN];
	unsigned long counts[MAX_NAMES];
	int n_names;
	unsigned long sent, replies, source_is_target, sticky, timeouts, send_errors;
	unsigned long errno_counts[256];
};

static int name_index(struct tally *t, const char *name)
{
	int i;

	for (i = 0; i < t->n_names; i++)
		if (!strcmp(t->names[i], name))
			return i;
	if (t->n_names == MAX_NAMES)
		return -1;
	snprintf(t->names[t->n_names], NAME_MAX_LEN, "%s", name);
	return t->n_names++;
}

/* --pause-after: "paused" on stderr, then wait for the resume file. */
static void pause_until_resumed(void)
{
	struct timespec tick = { .tv_nsec = 20 * 1000000L };
	int waited;

	fprintf(stderr, "paused\n");
	fflush(stderr);
	for (waited = 0; waited < RESUME_WAIT_MS; waited += 20) {
		if (access(resume_file, F_OK) == 0)
			return;
		nanosleep(&tick, NULL);
	}
	fprintf(stderr, "dmsc-udp: %s did not appear within %d ms\n", resume_file,
		RESUME_WAIT_MS);
	exit(1);
}

static void one_socket(const struct sockaddr_in *to, long per_socket, bool connected,
		       int timeout_ms, struct tally *t)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0), first = -1, k;
	bool one_backend = true;

	if (fd < 0)
		return;
	if (connected && connect(fd, (const struct sockaddr *)to, sizeof(*to))) {
		t->errno_counts[errno & 255]++;
		t->send_errors += (unsigned long)per_socket;
		close(fd);
		return;
	}
	for (k = 0; k < per_socket; k++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		struct sockaddr_in from;
		socklen_t len = sizeof(from);
		char buf[NAME_MAX_LEN];
		ssize_t n;
		int idx;

		if (pause_after && k == pause_after) {
			pause_until_resumed();
			pause_after = 0; /* once */
		}
		n = connected ? send(fd, "ping", 4, 0)
			      : sendto(fd, "ping", 4, 0, (const struct sockaddr *)to, sizeof(*to));
		if (n < 0) {
			t->errno_counts[errno & 255]++;
			t->send_errors++;
			continue;
		}
		t->sent++;
		if (poll(&p, 1, timeout_ms) <= 0) {
			t->timeouts++;
			continue;
		}
		n = recvfrom(fd, buf, sizeof(buf) - 1, 0, (struct sockaddr *)&from, &len);
		if (n < 0) {
			t->errno_counts[errno & 255]++;
			continue;
		}
		buf[n] = '\0';
		if (connected) {
			len = sizeof(from);
			getpeername(fd, (struct sockaddr *)&from, &len);
		}
		t->replies++;
		if (from.sin_addr.s_addr == to->sin_addr.s_addr && from.sin_port == to->sin_port)
			t->source_is_target++;
		idx = name_index(t, buf);
		if (idx >= 0)
			t->counts[idx]++;
		if (first < 0)
			first = idx;
		else if (idx != first)
			one_backend = false;
	}
	if (first >= 0 && one_backend)
		t->sticky++;
	close(fd);
}

static void report(const struct tally *t, long sockets, bool json)
{
	int i;
	bool comma = false;

	if (!json) {
		printf("sockets=%ld sent=%lu replies=%lu source_is_target=%lu sticky_sockets=%lu "
		       "timeouts=%lu send_errors=%lu\n",
		       sockets, t->sent, t->replies, t->source_is_target, t->sticky, t->timeouts,
		       t->send_errors);
		for (i = 0; i < t->n_names; i++)
			printf("backend %s %lu\n", t->names[i], t->counts[i]);
		return;
	}
	printf("{\"sockets\":%ld,\"sent\":%lu,\"replies\":%lu,\"source_is_target\":%lu,"
	       "\"sticky_sockets\":%lu,\"timeouts\":%lu,\"send_errors\":%lu,\"backends\":{",
	       sockets, t->sent, t->replies, t->source_is_target, t->sticky, t->timeouts,
	       t->send_errors);
	for (i = 0; i < t->n_names; i++)
		printf("%s\"%s\":%lu", i ? "," : "", t->names[i], t->counts[i]);
	printf("},\"errors\":{");
	for (i = 0; i < 256; i++) {
		if (!t->errno_counts[i])
			continue;
		printf("%s\"%s\":%lu", comma ? "," : "",
		       i == EPERM ? "EPERM" : i == ENETUNREACH ? "ENETUNREACH" : strerror(i),
		       t->errno_counts[i]);
		comma = true;
	}
	printf("}}\n");
}

struct num_option {
	const char *name;
	long *out;
};

/* Where option a's number goes, or NULL when a takes none. */
static long *number_option(const struct num_option *opts, const char *a)
{
	for (; opts->name; opts++)
		if (!strcmp(a, opts->name))
			return opts->out;
	return NULL;
}

static int usage(void)
{
	fprintf(stderr, "usage: dmsc-udp serve --listen ADDR:PORT --name NAME [--max-seconds S] "
			"[--log]\n"
			"       dmsc-udp send --to ADDR:PORT --sockets N --per-socket K "
			"[--connected] [--timeout-ms T] [--json] [--pause-after J --resume-file F]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa;
	const char *name = NULL, *addr = NULL;
	long max_seconds = 300, sockets = 1, per_socket = 1, timeout_ms = 1000, i;
	bool connected = false, json = false, have_addr = false, log = false;
	struct tally *t;
	/* The options that take a number. */
	struct num_option nums[] = {
		{ "--max-seconds", &max_seconds }, { "--sockets", &sockets },
		{ "--per-socket", &per_socket },   { "--timeout-ms", &timeout_ms },
		{ "--pause-after", &pause_after }, { NULL, NULL },
	};
	long *n;

	if (argc < 2)
		return usage();
	for (i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--connected")) {
			connected = true;
		} else if (!strcmp(a, "--json")) {
			json = true;
		} else if (!strcmp(a, "--log")) {
			log = true;
		} else if (!v) {
			return usage();
		} else if (!strcmp(a, "--listen") || !strcmp(a, "--to")) {
			addr = v;
			i++;
		} else if (!strcmp(a, "--name")) {
			name = v;
			i++;
		} else if ((n = number_option(nums, a))) {
			*n = strtol(v, NULL, 10);
			i++;
		} else if (!strcmp(a, "--resume-file")) {
			resume_file = v;
			i++;
		} else {
			return usage();
		}
	}
	have_addr = addr && parse_addr(addr, &sa) == 0;
	if (!have_addr || max_seconds < 1 || max_seconds > 3600 || sockets < 1 ||
	    sockets > MAX_SOCKETS || per_socket < 1 || per_socket > MAX_PER_SOCKET ||
	    timeout_ms < 1 || timeout_ms > 60000 || pause_after < 0 ||
	    pause_after >= per_socket || (pause_after > 0) != (resume_file != NULL))
		return usage();
	if (!strcmp(argv[1], "serve")) {
		if (!name || strlen(name) >= NAME_MAX_LEN)
			return usage();
		signal(SIGTERM, SIG_DFL);
		return serve(&sa, name, max_seconds, log);
	}
	if (strcmp(argv[1], "send"))
		return usage();
	t = calloc(1, sizeof(*t));
	if (!t)
		return 1;
	for (i = 0; i < sockets; i++)
		one_socket(&sa, per_socket, connected, (int)timeout_ms, t);
	report(t, sockets, json);
	free(t);
	return 0;
}
