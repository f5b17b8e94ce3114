// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Per-map migration at install (migrate.c): which pinned maps are reused,
 * copied or started empty, the copy of a value that grew (per-CPU too),
 * and one migration end to end on a map of the real TC object. */
#define _GNU_SOURCE /* unshare */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <criterion/criterion.h>

#include "datapath.h"
#include "migrate.h"

static const struct dmsc_map_shape array8 = {BPF_MAP_TYPE_ARRAY, 4, 8, 16, 0, 0};

Test(migrate, the_same_definition_is_reused)
{
	struct dmsc_map_shape cur = array8;
	char why[128];

	cr_assert_eq(dmsc_migrate_decide(&array8, &cur, why, sizeof(why)), DMSC_MIGRATE_REUSE);
	cr_assert_str_empty(why);
}

Test(migrate, a_grown_value_or_other_size_is_copied)
{
	struct dmsc_map_shape cur = array8;
	char why[128];

	cur.value_size = 24;
	cr_assert_eq(dmsc_migrate_decide(&array8, &cur, why, sizeof(why)), DMSC_MIGRATE_COPY);
	cr_assert_str_eq(why, "value 8 -> 24 bytes");
	cur = array8;
	cur.max_entries = 32;
	cur.flags = BPF_F_RDONLY_PROG;
	cr_assert_eq(dmsc_migrate_decide(&array8, &cur, why, sizeof(why)), DMSC_MIGRATE_COPY);
	cr_assert_str_eq(why, "max_entries 16 -> 32, flags 0 -> 0x80");
}

Test(migrate, a_changed_type_or_key_or_a_shrunk_value_starts_empty)
{
	struct dmsc_map_shape cur = array8;

	cur.value_size = 4;
	cr_assert_eq(dmsc_migrate_decide(&array8, &cur, NULL, 0), DMSC_MIGRATE_EMPTY);
	cur = array8;
	cur.key_size = 8;
	cr_assert_eq(dmsc_migrate_decide(&array8, &cur, NULL, 0), DMSC_MIGRATE_EMPTY);
	cur = array8;
	cur.type = BPF_MAP_TYPE_HASH;
	cr_assert_eq(dmsc_migrate_decide(&array8, &cur, NULL, 0), DMSC_MIGRATE_EMPTY);
}

Test(migrate, socket_maps_start_empty)
{
	struct dmsc_map_shape old = {BPF_MAP_TYPE_SK_STORAGE, 4, 24, 0, BPF_F_NO_PREALLOC, 0};
	struct dmsc_map_shape cur = old;

	cur.value_size = 48; /* grew, but userspace cannot list its entries */
	cr_assert_eq(dmsc_migrate_decide(&old, &cur, NULL, 0), DMSC_MIGRATE_EMPTY);
	old.type = cur.type = BPF_MAP_TYPE_SOCKHASH;
	old.value_size = 8;
	cur.value_size = 8;
	old.max_entries = 64;
	cur.max_entries = 128;
	cr_assert_eq(dmsc_migrate_decide(&old, &cur, NULL, 0), DMSC_MIGRATE_EMPTY);
}

Test(migrate, a_value_keeps_its_prefix_and_gets_zeros)
{
	const char old[5] = {1, 2, 3, 4, 5};
	char cur[9];

	memset(cur, 0x7f, sizeof(cur));
	dmsc_migrate_value(old, sizeof(old), cur, sizeof(cur), 0);
	cr_assert_arr_eq(cur, ((char[]){1, 2, 3, 4, 5, 0, 0, 0, 0}), sizeof(cur));
}

Test(migrate, per_cpu_values_are_copied_cpu_by_cpu)
{
	/* 12-byte values sit in 16-byte slots, 20-byte ones in 24. */
	__u32 old[3][4], cur[3][6];
	int cpu, w;

	memset(old, 0xee, sizeof(old));
	memset(cur, 0x7f, sizeof(cur));
	for (cpu = 0; cpu < 3; cpu++)
		for (w = 0; w < 3; w++)
			old[cpu][w] = (__u32)(cpu * 10 + w + 1);
	dmsc_migrate_value(old, 12, cur, 20, 3);
	for (cpu = 0; cpu < 3; cpu++)
		for (w = 0; w < 6; w++)
			cr_assert_eq(cur[cpu][w], w < 3 ? (__u32)(cpu * 10 + w + 1) : 0,
				     "cpu %d word %d: %u", cpu, w, cur[cpu][w]);
}

static char e2e_dir[] = "/tmp/dmsc-unit-migrate.XXXXXX", e2e_path[PATH_MAX];
static bool e2e_mounted;

/* Runs after the test, also when an assertion stopped it; the mount is in
 * the test process's own mount namespace anyway. */
static void e2e_cleanup(void)
{
	if (e2e_mounted) {
		unlink(e2e_path);
		umount(e2e_dir);
	}
	rmdir(e2e_dir);
}

/* A BPF filesystem of the test's own, in a mount namespace of its own (each
 * test runs in a process of its own): the host sees none of its pins. */
static char *private_bpffs(void)
{
	char *dir = mkdtemp(e2e_dir);

	cr_assert_not_null(dir, "mkdtemp: %s", strerror(errno));
	cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare(CLONE_NEWNS): %s", strerror(errno));
	cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0, "%s", strerror(errno));
	cr_assert_eq(mount("bpf", dir, "bpf", 0, "mode=0700"), 0, "mount bpffs on %s: %s", dir,
		     strerror(errno));
	e2e_mounted = true;
	return dir;
}

/* Pins of names this build does not make go; its own stay. */
Test(migrate, the_sweep_removes_only_pins_this_build_does_not_make, .fini = e2e_cleanup)
{
	static const char *const pins[] = {"maps/" DMSC_MAP_SERVICES, "maps/dmsc_gone",
					   "links/dmsc_connect4", "links/sock4_gone",
					   "maps/dmsc_fp_stats_migrating"};
	static const bool stays[] = {true, false, true, false, false};
	char path[PATH_MAX + 64], *dir;
	size_t i;
	int fd;

	if (geteuid() != 0)
		cr_skip_test("needs root for a BPF filesystem");
	dir = private_bpffs();
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, NULL, 4, 4, 1, NULL);
	cr_assert_geq(fd, 0, "%s", strerror(errno));
	snprintf(path, sizeof(path), "%s/maps", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/links", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
	for (i = 0; i < sizeof(pins) / sizeof(pins[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, pins[i]);
		cr_assert_eq(bpf_obj_pin(fd, path), 0, "pin %s: %s", path, strerror(errno));
	}
	close(fd);
	cr_assert_eq(dmsc_migrate_sweep(dir), 0);
	for (i = 0; i < sizeof(pins) / sizeof(pins[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, pins[i]);
		cr_assert_eq(access(path, F_OK) == 0, stays[i], "%s: %s", pins[i],
			     stays[i] ? "removed" : "left");
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/maps", dir);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/links", dir);
	rmdir(path);
}

/* End to end: dmsc_fp_stats of the real TC object pinned by an "old build"
 * whose value is 8 bytes shorter; prepare, load, copy, commit. */
Test(migrate, a_pinned_per_cpu_array_with_a_shorter_value_is_migrated, .fini = e2e_cleanup)
{
	char *dir, *path = e2e_path;
	struct bpf_object *obj = NULL;
	struct dmsc_migrate *m = NULL;
	struct bpf_map_info info;
	__u32 len = sizeof(info), key, vs, old_vs, max;
	struct bpf_map *map, *stats = NULL;
	int ncpus, old_fd = -1, fd = -1, cpu, err;
	size_t size, ostride, nstride;
	char *buf = NULL;
	const void *elf;

	if (geteuid() != 0)
		cr_skip_test("needs root to load BPF programs");
	dir = private_bpffs();
	snprintf(path, sizeof(e2e_path), "%s/%s", dir, DMSC_MAP_FP_STATS);

	elf = dmsc_objects[DMSC_OBJ_TC].elf(&size);
	obj = bpf_object__open_mem(elf, size, NULL);
	cr_assert_not_null(obj);
	bpf_object__for_each_map(map, obj) if (strcmp(bpf_map__name(map), DMSC_MAP_FP_STATS) == 0)
	    stats = map;
	cr_assert_not_null(stats);
	vs = bpf_map__value_size(stats);
	max = bpf_map__max_entries(stats);
	old_vs = vs - 8;
	ncpus = libbpf_num_possible_cpus();
	cr_assert_gt(ncpus, 0);
	ostride = (old_vs + 7) & ~7u;
	nstride = (vs + 7) & ~7u;
	buf = calloc((size_t)ncpus, nstride);
	cr_assert_not_null(buf);

	old_fd = bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, NULL, 4, old_vs, max, NULL);
	cr_assert_geq(old_fd, 0, "create the old map: %s", strerror(errno));
	/* Entry 1: on each CPU, every byte the CPU's number + 1. */
	for (cpu = 0; cpu < ncpus; cpu++)
		memset(buf + (size_t)cpu * ostride, cpu + 1, old_vs);
	key = 1;
	cr_assert_eq(bpf_map_update_elem(old_fd, &key, buf, BPF_ANY), 0);
	cr_assert_eq(bpf_obj_pin(old_fd, path), 0, "pin %s: %s", path, strerror(errno));

	m = dmsc_migrate_new(dir);
	cr_assert_not_null(m);
	cr_assert_eq(dmsc_migrate_prepare(m, stats, path), 0);
	cr_assert(dmsc_migrate_replaced(m, DMSC_MAP_FP_STATS));
	cr_assert_null(bpf_map__pin_path(stats), "a migrated map is not pinned by the load");
	err = bpf_object__load(obj);
	cr_assert_eq(err, 0, "load the TC object: %s", strerror(-err));
	cr_assert_eq(dmsc_migrate_loaded(m, obj), 0);

	/* The new map holds the old values, zero-padded, CPU by CPU. */
	memset(buf, 0x7f, (size_t)ncpus * nstride);
	cr_assert_eq(bpf_map_lookup_elem(bpf_map__fd(stats), &key, buf), 0);
	for (cpu = 0; cpu < ncpus; cpu++) {
		const unsigned char *v = (const unsigned char *)buf + (size_t)cpu * nstride;
		__u32 b;

		for (b = 0; b < vs; b++)
			cr_assert_eq(v[b], b < old_vs ? cpu + 1 : 0, "cpu %d byte %u: %u", cpu, b,
				     v[b]);
	}

	/* Committed, the pin names the new map. */
	cr_assert_eq(dmsc_migrate_commit(m), 0);
	fd = bpf_obj_get(path);
	cr_assert_geq(fd, 0);
	memset(&info, 0, sizeof(info));
	cr_assert_eq(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
	cr_assert_eq(info.value_size, vs);
	cr_assert_eq(info.id, dmsc_map_id(bpf_map__fd(stats)));

	close(fd);
	close(old_fd);
	dmsc_migrate_free(m);
	bpf_object__close(obj);
	free(buf);
	cr_assert_eq(unlink(path), 0, "unlink %s: %s", path, strerror(errno));
	cr_assert_eq(rmdir(dir), -1, "the BPF filesystem is still mounted on %s", dir);
}
