// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <limits.h>

#include <bpf/bpf.h>

#include "baton.h"
#include "dmsc/shared.h"
#include "fd_pass.h"
#include "l7_supervisor.h"
#include "log.h"
#include "pin_dir.h"

int dmsc_l7_sup_init(struct dmsc_l7_supervisor *s, const char *const *argv)
{
	int n = 0;

	memset(s, 0, sizeof(*s));
	while (argv[n]) {
		if (n == DMSC_L7_SUP_ARGS_MAX)
			return -E2BIG;
		s->argv[n] = argv[n];
		n++;
	}
	s->argc = n;
	s->pid = -1;
	s->old_pid = -1;
	s->ready_fd = -1;
	s->policy_fd = -1;
	s->cgroup_fd = -1;
	s->update_fd = -1;
	s->pidfd = -1;
	s->old_pidfd = -1;
	s->old_update_fd = -1;
	s->last_status = -1;
	s->backoff_ms = DMSC_L7_SUP_BACKOFF_MIN_MS;
	s->state = DMSC_L7_SUP_STOPPED;
	return 0;
}

/* In the child, before exec: moves it to the cgroup at dir, so that every
 * socket it makes belongs there. Only async-signal-safe calls (the parent
 * may have threads). A helper that cannot move runs where it is: it works,
 * its sockets outside the mesh (said). */
static void join_cgroup(int dir)
{
	static const char why[] = "dmsc-l7: cannot join its cgroup under the mesh cgroup: "
				  "it runs in dmscd's, off the same-host fast path\n";
	int fd;

	if (dir < 0)
		return;
	fd = openat(dir, "cgroup.procs", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "0", 1) != 1) {
		if (write(STDERR_FILENO, why, sizeof(why) - 1) < 0) {
			/* nothing more to say it with */
		}
	}
	if (fd >= 0)
		close(fd);
}

static void update_close(struct dmsc_l7_supervisor *s)
{
	if (s->update_fd >= 0)
		close(s->update_fd);
	s->update_fd = -1;
}

static void old_update_close(struct dmsc_l7_supervisor *s)
{
	if (s->old_update_fd >= 0)
		close(s->old_update_fd);
	s->old_update_fd = -1;
}

/* How the log names the helper of s. */
static const char *who(const struct dmsc_l7_supervisor *s)
{
	return s->role && !strcmp(s->role, "tunnel") ? "dmsc-l7 tunnel" : "dmsc-l7";
}

/* The next argument of v (n of them) from *i on that is not one each
 * start adds (--ready-fd N, --policy P, --policy-updates N, --metrics-file
 * P, --baton): what an adoption compares. NULL at the end. */
static const char *kept_arg(const char *const *v, size_t n, size_t *i)
{
	static const char *const with_value[] = {"--ready-fd", "--policy", "--policy-updates",
						 "--metrics-file"};
	size_t k;

	while (*i < n) {
		const char *a = v[(*i)++];
		bool skip = !strcmp(a, "--baton");

		for (k = 0; !skip && k < sizeof(with_value) / sizeof(with_value[0]); k++)
			if (!strcmp(a, with_value[k])) {
				skip = true;
				(*i)++;
			}
		if (!skip)
			return a;
	}
	return NULL;
}

/* Does process pid run what s would start: the same binary (the file,
 * not its name: an upgrade installs a new one) and the same options?
 * If not, why into why. */
static bool same_helper(const struct dmsc_l7_supervisor *s, pid_t pid, char *why, size_t len)
{
	const char *theirs[DMSC_L7_SUP_ARGS_MAX + 16], *a, *b;
	char path[64], cmdline[8192];
	struct stat st_run, st_bin;
	size_t n = 0, off = 0, i = 1, j = 1;
	ssize_t got;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	if (stat(path, &st_run) || stat(s->argv[0], &st_bin) || st_run.st_dev != st_bin.st_dev ||
	    st_run.st_ino != st_bin.st_ino) {
		snprintf(why, len, "it runs another binary than %s", s->argv[0]);
		return false;
	}
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	got = fd >= 0 ? read(fd, cmdline, sizeof(cmdline) - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (got <= 0 || (size_t)got == sizeof(cmdline) - 1) {
		snprintf(why, len, "its command line cannot be read");
		return false;
	}
	cmdline[got] = '\0';
	while (off < (size_t)got && n < sizeof(theirs) / sizeof(theirs[0])) {
		theirs[n++] = cmdline + off;
		off += strlen(cmdline + off) + 1;
	}
	do {
		a = kept_arg(s->argv, (size_t)s->argc, &i);
		b = kept_arg(theirs, n, &j);
		if ((a || b) && (!a || !b || strcmp(a, b))) {
			snprintf(why, len, "its options differ (%s where this dmscd gives %s)",
				 b ? b : "none", a ? a : "none");
			return false;
		}
	} while (a);
	return true;
}

int dmsc_l7_sup_adopt(struct dmsc_l7_supervisor *s, uint64_t now_ms)
{
	struct pollfd p = {.events = POLLIN};
	struct dmsc_adopt a;
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	char msg[PATH_MAX + 16], why[256];
	int u[2] = {-1, -1}, pidfd = -1, fd = -1, got = 0, err = -ENOENT;

	if (!s->role || !s->pin_dir || !s->metrics_file || !s->updates || s->pid > 0)
		return -ENOENT;
	dmsc_adopt_init(&a, s->role, s->pin_dir);
	p.fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (p.fd < 0)
		return -errno;
	/* none offers itself: the first dmscd, or the one before left no
	 * helper (or one of a build before adoption, which the baton
	 * hands over from) */
	if (connect(p.fd, (struct sockaddr *)&a.sa, a.len) ||
	    getsockopt(p.fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) ||
	    (cr.uid != 0 && cr.uid != geteuid()) || cr.pid <= 0)
		goto out;
	if (!same_helper(s, cr.pid, why, sizeof(why))) {
		pr_info("%s (pid %d) of the dmscd before serves on, but %s: starting a new one, "
			"which takes over from it\n",
			who(s), (int)cr.pid, why);
		err = -ESTALE;
		goto out;
	}
	pidfd = (int)syscall(SYS_pidfd_open, cr.pid, 0);
	if (pidfd < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, u)) {
		err = -errno;
		goto out;
	}
	snprintf(msg, sizeof(msg), "adopt %s", s->metrics_file);
	err = dmsc_fd_send(p.fd, msg, strlen(msg), u[1]);
	close(u[1]);
	u[1] = -1;
	/* it looks every 100 ms */
	if (!err && (poll(&p, 1, 2000) != 1 || dmsc_fd_recv(p.fd, msg, sizeof(msg), &fd) <= 0 ||
		     sscanf(msg, "adopted %d", &got) != 1 || got != (int)cr.pid))
		err = -ETIMEDOUT;
	if (err) {
		pr_warn("%s (pid %d) of the dmscd before did not take this one's adoption (%s): "
			"starting a new one, which takes over from it\n",
			who(s), (int)cr.pid, strerror(-err));
		goto out;
	}
	close(p.fd);
	s->pid = cr.pid;
	s->pidfd = pidfd;
	s->update_fd = u[0];
	s->state = DMSC_L7_SUP_READY;
	s->started_ms = now_ms;
	pr_info("%s (pid %d) of the dmscd before adopted: it serves on as this one's, every "
		"connection kept\n",
		who(s), (int)cr.pid);
	return 0;
out:
	if (fd >= 0)
		close(fd);
	if (u[0] >= 0)
		close(u[0]);
	if (pidfd >= 0)
		close(pidfd);
	close(p.fd);
	return err;
}

/* An adopted helper (pidfd) that ended; waits up to ms for it. */
static bool pidfd_ended(int pidfd, int ms)
{
	struct pollfd p = {.fd = pidfd, .events = POLLIN};

	return poll(&p, 1, ms) == 1;
}

static void pidfd_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Whether a helper (a child, or adopted: pidfd) ended; a child reaped. */
static bool helper_ended(pid_t pid, int pidfd)
{
	int status;

	return pidfd >= 0 ? pidfd_ended(pidfd, 0) : waitpid(pid, &status, WNOHANG) == pid;
}

/* A replaced helper told to drain, watched until it ends. The one that has
 * drained longest is stopped when DMSC_L7_SUP_DRAINING_MAX already do: a
 * policy changed often must not pile up processes (decision 87). */
static void draining_add(struct dmsc_l7_supervisor *s, pid_t pid, int pidfd)
{
	if (s->n_draining == DMSC_L7_SUP_DRAINING_MAX) {
		pr_warn("%s (pid %d) still drains after %d later hand-overs: stopped, with what "
			"it still carried\n",
			who(s), (int)s->draining[0].pid, DMSC_L7_SUP_DRAINING_MAX);
		kill(s->draining[0].pid, SIGKILL);
		if (s->draining[0].pidfd >= 0)
			pidfd_close(&s->draining[0].pidfd);
		else
			waitpid(s->draining[0].pid, NULL, 0);
		memmove(&s->draining[0], &s->draining[1],
			(DMSC_L7_SUP_DRAINING_MAX - 1) * sizeof(s->draining[0]));
		s->n_draining--;
	}
	s->draining[s->n_draining].pid = pid;
	s->draining[s->n_draining].pidfd = pidfd;
	s->n_draining++;
}

static void draining_reap(struct dmsc_l7_supervisor *s)
{
	unsigned int i = 0;

	while (i < s->n_draining) {
		if (!helper_ended(s->draining[i].pid, s->draining[i].pidfd)) {
			i++;
			continue;
		}
		pidfd_close(&s->draining[i].pidfd);
		memmove(&s->draining[i], &s->draining[i + 1],
			(s->n_draining - i - 1) * sizeof(s->draining[0]));
		s->n_draining--;
	}
}

int dmsc_l7_sup_start(struct dmsc_l7_supervisor *s, uint64_t now_ms)
{
	pid_t pid, parent = getpid();
	int p[2], u[2] = {-1, -1}, err;

	if (s->pid > 0)
		return -EALREADY;
	/* The write end must survive exec in the child only. */
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	/* a socket per helper: a replaced one hears the end of its own */
	update_close(s);
	if (s->updates && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, u) < 0) {
		err = -errno;
		close(p[0]);
		close(p[1]);
		return err;
	}
	pid = fork();
	if (pid < 0) {
		err = -errno;
		close(p[0]);
		close(p[1]);
		if (u[0] >= 0) {
			close(u[0]);
			close(u[1]);
		}
		return err;
	}
	if (pid == 0) {
		int fd = fcntl(p[1], F_DUPFD, 3); /* a copy without O_CLOEXEC */
		int n = s->argc;

		/* The helper hears when its supervisor goes (kept across
		 * exec): it serves on until the next one's helper takes over
		 * (baton.h). The parent may have died before the prctl: then
		 * it is too late for the signal, so look. */
		if (prctl(PR_SET_PDEATHSIG, DMSC_HELPER_ORPHAN_SIGNAL) < 0 || getppid() != parent)
			_exit(127);
		if (fd < 0)
			_exit(127);
		join_cgroup(s->cgroup_fd);
		snprintf(s->ready_arg, sizeof(s->ready_arg), "%d", fd);
		s->argv[n++] = "--ready-fd";
		s->argv[n++] = s->ready_arg;
		if (s->policy_fd >= 0) {
			fd = fcntl(s->policy_fd, F_DUPFD, 3);
			if (fd < 0)
				_exit(127);
			snprintf(s->policy_arg, sizeof(s->policy_arg), "/proc/self/fd/%d", fd);
			s->argv[n++] = "--policy";
			s->argv[n++] = s->policy_arg;
		}
		if (u[1] >= 0) {
			fd = fcntl(u[1], F_DUPFD, 3);
			if (fd < 0)
				_exit(127);
			snprintf(s->updates_arg, sizeof(s->updates_arg), "%d", fd);
			s->argv[n++] = "--policy-updates";
			s->argv[n++] = s->updates_arg;
		}
		s->argv[n++] = "--baton"; /* hands over across dmscd's restarts */
		s->argv[n] = NULL;
		execv(s->argv[0], (char *const *)s->argv);
		_exit(127);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	s->ready_fd = p[0];
	if (u[1] >= 0) {
		close(u[1]);
		s->update_fd = u[0];
	}
	s->pid = pid;
	s->started_ms = now_ms;
	s->state = DMSC_L7_SUP_STARTING;
	pr_info("dmsc-l7 started (pid %d)\n", (int)pid);
	return 0;
}

static void ready_close(struct dmsc_l7_supervisor *s)
{
	if (s->ready_fd >= 0)
		close(s->ready_fd);
	s->ready_fd = -1;
}

static int sup_replace(struct dmsc_l7_supervisor *s, uint64_t now_ms);
static int replace_or_queue(struct dmsc_l7_supervisor *s, uint64_t now_ms);

/* The helper's answers to updates: "ok N", or "fail N: why", upon which
 * it is replaced (the new one reads the policy at its start). Its end of
 * the socket closing: it died (restarted with the policy set last) or was
 * replaced. */
static void update_answers(struct dmsc_l7_supervisor *s, uint64_t now_ms)
{
	char msg[512];
	ssize_t n;
	int fd;

	while (s->update_fd >= 0) {
		n = dmsc_fd_recv(s->update_fd, msg, sizeof(msg), &fd);
		if (fd >= 0)
			close(fd);
		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			update_close(s);
			return;
		}
		if (strncmp(msg, "fail", 4))
			continue;
		pr_warn("dmsc-l7 (pid %d) could not take the policy in place (%s): replacing it\n",
			(int)s->pid, msg);
		if (replace_or_queue(s, now_ms))
			s->replace_queued = true; /* again at the next poll */
	}
}

enum dmsc_l7_sup_state dmsc_l7_sup_poll(struct dmsc_l7_supervisor *s, uint64_t now_ms)
{
	int status;
	pid_t r;

	update_answers(s, now_ms);
	if (s->state == DMSC_L7_SUP_STARTING && s->ready_fd >= 0) {
		char buf[16];
		ssize_t n = read(s->ready_fd, buf, sizeof(buf));

		if (n > 0 && memmem(buf, (size_t)n, "ready", 5)) {
			s->state = DMSC_L7_SUP_READY;
			ready_close(s);
			if (s->old_pid > 0) {
				/* the new one serves: the old one drains */
				kill(s->old_pid, SIGTERM);
				old_update_close(s);
				pr_info("dmsc-l7 (pid %d) replaced by pid %d: draining\n",
					(int)s->old_pid, (int)s->pid);
				draining_add(s, s->old_pid, s->old_pidfd);
				s->old_pid = -1;
				s->old_pidfd = -1;
			}
		}
	}
	/* one that ended before its replacement was ready: reaped */
	if (s->old_pid > 0 && helper_ended(s->old_pid, s->old_pidfd)) {
		s->old_pid = -1;
		pidfd_close(&s->old_pidfd);
	}
	draining_reap(s);
	/* a replace that waited for the start before it */
	if (s->replace_queued && s->old_pid <= 0 && s->state == DMSC_L7_SUP_READY) {
		s->replace_queued = false;
		pr_info("dmsc-l7: starting the replacement queued during the last hand-over\n");
		if (sup_replace(s, now_ms))
			s->replace_queued = true; /* again at the next poll */
	}
	if (s->pid > 0) {
		/* an adopted one's status is its parent's to read, not ours */
		status = -1;
		if (s->pidfd >= 0)
			r = pidfd_ended(s->pidfd, 0) ? s->pid : 0;
		else
			r = waitpid(s->pid, &status, WNOHANG);
		if (r == s->pid) {
			bool usage = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 2;

			s->last_status = status;
			s->pid = -1;
			pidfd_close(&s->pidfd);
			ready_close(s);
			if (now_ms - s->started_ms >= DMSC_L7_SUP_STABLE_MS)
				s->backoff_ms = DMSC_L7_SUP_BACKOFF_MIN_MS;
			if (usage)
				s->backoff_ms = DMSC_L7_SUP_BACKOFF_MAX_MS;
			s->next_start_ms = now_ms + s->backoff_ms;
			if (status == -1)
				pr_warn("%s (pid %d, adopted) ended; restarting in %u ms\n", who(s),
					(int)r, s->backoff_ms);
			else
				pr_warn("%s (pid %d) %s %d; restarting in %u ms\n", who(s), (int)r,
					WIFEXITED(status) ? "exited with" : "was killed by signal",
					WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
					s->backoff_ms);
			s->backoff_ms = s->backoff_ms * 2 > DMSC_L7_SUP_BACKOFF_MAX_MS
					    ? DMSC_L7_SUP_BACKOFF_MAX_MS
					    : s->backoff_ms * 2;
			s->state = DMSC_L7_SUP_BACKOFF;
		}
	}
	if (s->state == DMSC_L7_SUP_BACKOFF && now_ms >= s->next_start_ms) {
		if (dmsc_l7_sup_start(s, now_ms) == 0)
			s->restarts++;
		else
			s->next_start_ms = now_ms + s->backoff_ms;
	}
	return s->state;
}

int dmsc_l7_sup_set_policy(struct dmsc_l7_supervisor *s, const char *text, size_t len)
{
	size_t off = 0;
	int fd, err;

	fd = memfd_create("dmsc-l7-policy", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		err = -errno;
		pr_warn("dmsc-l7: cannot make a memfd for its policy: %s\n", strerror(-err));
		return err;
	}
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			pr_warn("dmsc-l7: cannot write its policy to a memfd: %s\n",
				strerror(-err));
			close(fd);
			return err;
		}
		off += (size_t)n;
	}
	/* what the helper reads is what was applied: nobody can change it */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) {
		err = -errno;
		pr_warn("dmsc-l7: cannot seal its policy memfd: %s\n", strerror(-err));
		close(fd);
		return err;
	}
	if (s->policy_fd >= 0)
		close(s->policy_fd);
	s->policy_fd = fd;
	return 0;
}

int dmsc_l7_sup_replace(struct dmsc_l7_supervisor *s, const char *const *argv, uint64_t now_ms)
{
	const char *copy[DMSC_L7_SUP_ARGS_MAX + 3];
	int n = 0;

	while (argv[n]) {
		if (n == DMSC_L7_SUP_ARGS_MAX)
			return -E2BIG;
		copy[n] = argv[n];
		n++;
	}
	memcpy(s->argv, copy, (size_t)n * sizeof(copy[0]));
	s->argv[n] = NULL;
	s->argc = n;
	return replace_or_queue(s, now_ms);
}

static int replace_or_queue(struct dmsc_l7_supervisor *s, uint64_t now_ms)
{
	if (s->old_pid > 0 || (s->replace_queued && s->pid > 0)) {
		/* one hand-over at a time: this one follows */
		s->replace_queued = true;
		return 0;
	}
	s->replace_queued = false;
	return sup_replace(s, now_ms);
}

int dmsc_l7_sup_update(struct dmsc_l7_supervisor *s)
{
	char msg[32];

	if (s->update_fd < 0 || s->pid <= 0 || s->policy_fd < 0 || s->replace_queued)
		return -ENOTCONN;
	snprintf(msg, sizeof(msg), "policy %u", ++s->update_seq);
	return dmsc_fd_send(s->update_fd, msg, strlen(msg), s->policy_fd);
}

/* The hand-over itself: argv and the policy are set. */
static int sup_replace(struct dmsc_l7_supervisor *s, uint64_t now_ms)
{
	int err;

	if (s->pid <= 0) /* nothing running: a plain start */
		return dmsc_l7_sup_start(s, now_ms);
	s->old_pid = s->pid;
	s->old_pidfd = s->pidfd;
	old_update_close(s);
	s->old_update_fd = s->update_fd;
	s->update_fd = -1;
	s->pid = -1;
	s->pidfd = -1;
	ready_close(s);
	err = dmsc_l7_sup_start(s, now_ms);
	if (err) {
		s->pid = s->old_pid; /* keep the running one */
		s->pidfd = s->old_pidfd;
		s->update_fd = s->old_update_fd;
		s->old_pid = -1;
		s->old_pidfd = -1;
		s->old_update_fd = -1;
		s->state = DMSC_L7_SUP_READY;
	}
	return err;
}

int dmsc_l7_sup_fd(const struct dmsc_l7_supervisor *s)
{
	return s->ready_fd;
}

int dmsc_l7_sup_update_fd(const struct dmsc_l7_supervisor *s)
{
	return s->update_fd;
}

/* SIGTERM to pid, and up to timeout_ms for it to end; then SIGKILL. Its
 * wait status into *status (an adopted one's, pidfd >= 0: 0 when it
 * ended on its own). Returns true when it ended on its own. */
static bool term_wait(pid_t pid, int pidfd, unsigned int timeout_ms, int *status)
{
	struct timespec tick = {0, 10 * 1000000};
	unsigned int waited;
	pid_t r = 0;

	kill(pid, SIGTERM);
	if (pidfd >= 0) {
		*status = 0;
		if (pidfd_ended(pidfd, (int)timeout_ms))
			return true;
		kill(pid, SIGKILL);
		pidfd_ended(pidfd, 1000);
		*status = SIGKILL; /* as a wait status: killed by it */
		return false;
	}
	for (waited = 0; waited <= timeout_ms; waited += 10) {
		r = waitpid(pid, status, WNOHANG);
		if (r == pid || r < 0)
			break;
		nanosleep(&tick, NULL);
	}
	if (r == pid)
		return true;
	kill(pid, SIGKILL);
	waitpid(pid, status, 0);
	return false;
}

int dmsc_l7_sup_stop(struct dmsc_l7_supervisor *s, unsigned int timeout_ms)
{
	int status = 0;

	ready_close(s);
	update_close(s);
	old_update_close(s);
	s->state = DMSC_L7_SUP_STOPPED;
	s->replace_queued = false;
	if (s->policy_fd >= 0)
		close(s->policy_fd);
	s->policy_fd = -1;
	if (s->old_pid > 0) {
		term_wait(s->old_pid, s->old_pidfd, timeout_ms, &status);
		s->old_pid = -1;
		pidfd_close(&s->old_pidfd);
	}
	while (s->n_draining) {
		s->n_draining--;
		term_wait(s->draining[s->n_draining].pid, s->draining[s->n_draining].pidfd,
			  timeout_ms, &status);
		pidfd_close(&s->draining[s->n_draining].pidfd);
	}
	if (s->pid <= 0)
		return 0;
	if (!term_wait(s->pid, s->pidfd, timeout_ms, &status))
		pr_warn("%s (pid %d) did not drain within %u ms: killed it\n", who(s), (int)s->pid,
			timeout_ms);
	s->pid = -1;
	pidfd_close(&s->pidfd);
	s->last_status = status;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return -EINTR;
}

pid_t dmsc_l7_sup_leave(struct dmsc_l7_supervisor *s)
{
	ready_close(s);
	update_close(s);
	old_update_close(s);
	s->state = DMSC_L7_SUP_STOPPED;
	if (s->policy_fd >= 0)
		close(s->policy_fd);
	s->policy_fd = -1;
	/* those draining after a hand-over end on their own */
	s->old_pid = -1;
	pidfd_close(&s->old_pidfd);
	while (s->n_draining)
		pidfd_close(&s->draining[--s->n_draining].pidfd);
	pidfd_close(&s->pidfd);
	return s->pid > 0 ? s->pid : 0;
}

int dmsc_l7_metrics_append(const char *metrics_file, FILE *out)
{
	char buf[8192];
	size_t n;
	FILE *f;

	f = fopen(metrics_file, "r");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		if (fwrite(buf, 1, n, out) != n) {
			fclose(f);
			return -EIO;
		}
	fclose(f);
	return 0;
}

const char *dmsc_l7_sup_state_name(enum dmsc_l7_sup_state st)
{
	static const char *const names[] = {
	    [DMSC_L7_SUP_STOPPED] = "stopped",
	    [DMSC_L7_SUP_STARTING] = "starting",
	    [DMSC_L7_SUP_READY] = "ready",
	    [DMSC_L7_SUP_BACKOFF] = "backoff",
	};

	return (size_t)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}
