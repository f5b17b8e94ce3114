// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The tunnel's count of its backends' failed connects (tunnel_health.h,
 * docs/design.md decision 78).
 *
 * A write to a dmsc_be_health element is a read-modify-write of the whole
 * value under its lock (BPF_F_LOCK), by one thread: nothing else counts
 * this backend. The element of a service's first backend also holds the
 * kernel's max_ejection_percent gate (eject_gate, decision 35), which the
 * kernel may change between our read and our write when the service has
 * backends on this host too. The gate is odd only while a kernel program
 * ejects, for a few instructions: an odd gate is read again until it is
 * even, so that what goes back is never a gate taken (which would close it
 * for good). Between the read and the write the kernel may still take and
 * hand back the gate; the value written back is then an older even one,
 * which at worst lets two ejections through the cap at once, as the
 * kernel's own count could before the gate.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "addr.h"
#include "clock.h"
#include "dmsc/health.h"
#include "log.h"
#include "pin_dir.h"
#include "tunnel_health.h"

#define GATE_READS 64 /* an odd gate read again at most this often */

void dmsc_tunnel_health_open(struct dmsc_tunnel_health *th, const char *pin_dir,
			     int handoff_fd, int handoff6_fd)
{
	memset(th, 0, sizeof(*th));
	th->handoff_fd = handoff_fd;
	th->handoff6_fd = handoff6_fd;
	th->opened = true;
	th->health_fd = dmsc_pinned_map_try(pin_dir, DMSC_MAP_BE_HEALTH);
	th->verdict_fd = dmsc_pinned_map_try(pin_dir, DMSC_MAP_BE_VERDICT);
	th->services_fd = dmsc_pinned_map_try(pin_dir, DMSC_MAP_SERVICES);
	th->services6_fd = dmsc_pinned_map_try(pin_dir, DMSC_MAP_SERVICES6);
	th->meta_fd = dmsc_pinned_map_try(pin_dir, DMSC_MAP_SVC_META);
	if (th->health_fd < 0 || th->verdict_fd < 0 || th->services_fd < 0 || th->meta_fd < 0)
		pr_warn("tunnel: the health maps are not under %s: passive health of the backends "
			"on other hosts is not counted\n",
			pin_dir);
}

void dmsc_tunnel_health_close(struct dmsc_tunnel_health *th)
{
	int *fds[] = {&th->health_fd, &th->verdict_fd, &th->services_fd, &th->services6_fd,
		      &th->meta_fd,   &th->handoff_fd, &th->handoff6_fd};
	size_t i;

	if (!th->opened)
		return;
	th->opened = false;
	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

static bool is_clean(const struct dmsc_tunnel_health *th, uint32_t id)
{
	unsigned int i;

	for (i = 0; i < th->n_clean; i++)
		if (th->clean[i] == id)
			return true;
	return false;
}

static void set_clean(struct dmsc_tunnel_health *th, uint32_t id, bool clean)
{
	unsigned int i;

	for (i = 0; i < th->n_clean; i++)
		if (th->clean[i] == id) {
			if (!clean)
				th->clean[i] = th->clean[--th->n_clean];
			return;
		}
	if (!clean)
		return;
	if (th->n_clean == DMSC_TUNNEL_HEALTH_CLEAN_MAX)
		th->n_clean = 0; /* forgotten: read again at their next stream */
	th->clean[th->n_clean++] = id;
}

/* The service's passive settings, when the record's service is still the
 * one applied under its key and has passive health. */
static bool svc_passive(const struct dmsc_tunnel_health *th, const struct dmsc_tunnel_hkey *k,
			struct dmsc_svc_health *cfg)
{
	struct dmsc_svc svc;
	int err;

	if (k->v6)
		err = th->services6_fd < 0 ? -1
					   : bpf_map_lookup_elem(th->services6_fd, &k->key6, &svc);
	else
		err = bpf_map_lookup_elem(th->services_fd, &k->key, &svc);
	if (err || svc.id != k->svc_id || !svc.health.eject_after)
		return false;
	*cfg = svc.health;
	return true;
}

/* The backend's element, its gate even (the file's comment). */
static int read_health(const struct dmsc_tunnel_health *th, uint32_t id, struct dmsc_be_health *h)
{
	int i;

	for (i = 0; i < GATE_READS; i++) {
		if (bpf_map_lookup_elem_flags(th->health_fd, &id, h, BPF_F_LOCK))
			return -errno;
		if (!(h->eject_gate & 1))
			return 0;
		sched_yield();
	}
	return -EBUSY;
}

static uint64_t ejection_ended(const struct dmsc_tunnel_health *th, uint32_t id)
{
	struct dmsc_be_verdict v;

	if (bpf_map_lookup_elem_flags(th->verdict_fd, &id, &v, BPF_F_LOCK))
		return 0;
	return v.ejection_ended;
}

/* max_ejection_percent: is there room to eject one more of the service's
 * backends at now (as the kernel counts: ejected by a counter, or out as
 * ejected in dmscd's verdict)? */
static bool room_to_eject(const struct dmsc_tunnel_health *th, uint32_t svc_id,
			  const struct dmsc_svc_health *cfg, uint64_t now, char *name, size_t len)
{
	struct dmsc_svc_meta *m = malloc(sizeof(*m));
	struct dmsc_be_verdict v;
	struct dmsc_be_health h;
	uint32_t i, n = 0, k = 0, id;
	bool room = true;

	if (!m)
		return true;
	if (!bpf_map_lookup_elem(th->meta_fd, &svc_id, m)) {
		snprintf(name, len, "%.*s", DMSC_NAME_MAX, m->name);
		n = m->n_backends < DMSC_BACKENDS_PER_SERVICE_MAX ? m->n_backends
								  : DMSC_BACKENDS_PER_SERVICE_MAX;
		for (i = 0; i < n; i++) {
			id = m->backend_id[i];
			if (bpf_map_lookup_elem_flags(th->health_fd, &id, &h, BPF_F_LOCK) ||
			    bpf_map_lookup_elem_flags(th->verdict_fd, &id, &v, BPF_F_LOCK))
				continue;
			k += dmsc_health_counts_ejected(&h, &v, now);
		}
		room = dmsc_health_may_eject(cfg, k, n);
	}
	free(m);
	return room;
}

bool dmsc_tunnel_health_out(const struct dmsc_tunnel_health *th, uint32_t id, uint64_t now)
{
	struct dmsc_be_verdict v;
	struct dmsc_be_health h;

	if (!th->opened || th->health_fd < 0 || th->verdict_fd < 0 ||
	    bpf_map_lookup_elem_flags(th->verdict_fd, &id, &v, BPF_F_LOCK))
		return false;
	if (v.out != DMSC_HEALTH_IN)
		return true;
	return !bpf_map_lookup_elem_flags(th->health_fd, &id, &h, BPF_F_LOCK) &&
	       dmsc_health_ejected(&h, v.ejection_ended, now);
}

/* A helper's own connection that did not reach its backend: its record
 * written back, flagged, for the helper to read at the reset (and delete;
 * else it ages out of the LRU map). Never a handoff: no
 * DMSC_SOCK_F_TUNNEL, and the tunnel refuses a record with this flag. */
static void via_failed(struct dmsc_tunnel_health *th, const struct dmsc_tunnel_hkey *k)
{
	struct dmsc_tunnel_handoff6 v6 = {.flags = DMSC_SOCK_F_CONNECT_FAILED};
	struct dmsc_l7_handoff v4 = {.flags = DMSC_SOCK_F_CONNECT_FAILED};
	int err;

	if (k->v6)
		err = th->handoff6_fd < 0 ||
		      bpf_map_update_elem(th->handoff6_fd, &k->via_key.v6, &v6, BPF_ANY);
	else
		err = th->handoff_fd < 0 ||
		      bpf_map_update_elem(th->handoff_fd, &k->via_key.v4, &v4, BPF_ANY);
	th->via_failed += !err;
}

void dmsc_tunnel_health_result(struct dmsc_tunnel_health *th, const struct dmsc_tunnel_hkey *k,
			       bool ok)
{
	char name[DMSC_NAME_MAX + 1] = "", be[DMSC_ADDR_PORT_LEN];
	struct dmsc_svc_health cfg;
	struct dmsc_be_health h;
	uint64_t now, ended;
	int room = 1, ejected;

	if (th->opened && k->via && !ok)
		via_failed(th, k);
	if (!th->opened || !k->backend_id || th->health_fd < 0 || th->verdict_fd < 0 ||
	    th->services_fd < 0 || th->meta_fd < 0)
		return;
	if (ok && is_clean(th, k->backend_id))
		return; /* the common case: no map access */
	if (!svc_passive(th, k, &cfg)) {
		/* nothing counted for it (no passive health): nothing to end */
		if (ok)
			set_clean(th, k->backend_id, true);
		return;
	}
	if (read_health(th, k->backend_id, &h))
		return;
	if (ok) {
		if (h.consecutive) {
			h.consecutive = 0;
			if (bpf_map_update_elem(th->health_fd, &k->backend_id, &h, BPF_F_LOCK))
				return;
		}
		set_clean(th, k->backend_id, true);
		return;
	}
	set_clean(th, k->backend_id, false);
	now = dmsc_now_ns(); /* bpf_ktime_get_ns's clock */
	ended = ejection_ended(th, k->backend_id);
	if (cfg.max_eject_pct && cfg.max_eject_pct < 100 &&
	    dmsc_health_would_eject(&h, ended, &cfg, now))
		room = room_to_eject(th, k->svc_id, &cfg, now, name, sizeof(name));
	dmsc_health_take_end(&h, ended);
	ejected = dmsc_health_failed_room(&h, &cfg, now, room);
	if (bpf_map_update_elem(th->health_fd, &k->backend_id, &h, BPF_F_LOCK))
		return;
	th->failures++;
	th->capped += !room;
	if (!ejected)
		return;
	th->ejections++;
	if (!name[0]) {
		struct dmsc_svc_meta *m = malloc(sizeof(*m));

		if (m && !bpf_map_lookup_elem(th->meta_fd, &k->svc_id, m))
			snprintf(name, sizeof(name), "%.*s", DMSC_NAME_MAX, m->name);
		free(m);
	}
	dmsc_tunnel_sa_format(&k->dest, be, sizeof(be));
	pr_info("tunnel: health: %s ejected backend %s for %llu ms: %u connects through the "
		"tunnel failed in a row (its host could not connect to it, or was not reached)\n",
		name[0] ? name : "a service", be,
		(unsigned long long)((h.ejected_until_ns - now) / DMSC_NS_PER_MS), cfg.eject_after);
}
