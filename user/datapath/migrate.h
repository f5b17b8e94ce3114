/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Per-map migration of the pinned maps when an install finds a map pinned
 * by a build whose definition of it differs (migrate.c). */
#ifndef DMSC_MIGRATE_H
#define DMSC_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>

#include <linux/types.h>

struct bpf_map;
struct bpf_object;

/* What the kernel compares before it lets a pinned map be reused. */
struct dmsc_map_shape {
	__u32 type, key_size, value_size, max_entries, flags;
	__u64 extra;
};

enum dmsc_migrate_how {
	DMSC_MIGRATE_REUSE,   /* the same definition: the pinned map is reused */
	DMSC_MIGRATE_COPY,    /* a new map, the old entries copied (values padded) */
	DMSC_MIGRATE_EMPTY,   /* a new map that starts empty */
	DMSC_MIGRATE_CONVERT, /* a new map, each old entry converted (a known
			       * earlier layout of its value: migrate.c) */
};

/* The decision for a map pinned with *old whose new definition is *cur;
 * why (may be NULL) says what changed, in words for the log. */
enum dmsc_migrate_how dmsc_migrate_decide(const struct dmsc_map_shape *old,
					  const struct dmsc_map_shape *cur, char *why, size_t len);

/* Copies one value of old_size bytes into one of new_size >= old_size,
 * zeroing the tail; per-CPU values: ncpus of each, every one in a slot
 * rounded up to 8 bytes (the layout of a per-CPU lookup). ncpus 1 for the
 * others. */
void dmsc_migrate_value(const void *old, __u32 old_size, void *cur, __u32 new_size, int ncpus);

bool dmsc_map_type_percpu(__u32 type);

struct dmsc_be_health;
struct dmsc_be_verdict;

/* dmsc_be_health's value before decision 53 (64 bytes: the counter's
 * fields, then dmscd's) split into this build's two maps' values. Returns
 * whether the verdict holds anything (else it need not be written). */
bool dmsc_migrate_split_be_health(const void *old, struct dmsc_be_health *h,
				  struct dmsc_be_verdict *v);
#define DMSC_BE_HEALTH_V0_SIZE 64

struct dmsc_migrate;

/* A plan for one install, over the pins of pin_dir; NULL if out of memory. */
struct dmsc_migrate *dmsc_migrate_new(const char *pin_dir);
void dmsc_migrate_free(struct dmsc_migrate *m);

/* In place of bpf_map__set_pin_path, between open and load: a map that is
 * not pinned or pinned with the same definition gets the pin path (libbpf
 * creates or reuses it); one pinned with another definition is created
 * unpinned by this object's load, or reuses the map an earlier object of
 * this install created for it. */
int dmsc_migrate_prepare(struct dmsc_migrate *m, struct bpf_map *map, const char *path);

/* After the object's load: takes the maps it created for migrated pins
 * and copies what can be carried over from the old maps into them. */
int dmsc_migrate_loaded(struct dmsc_migrate *m, struct bpf_object *obj);

/* Whether the map pinned as name is being replaced by a new one. */
bool dmsc_migrate_replaced(const struct dmsc_migrate *m, const char *name);

/* Once the new programs are attached: each migrated map's pin now names
 * the new map. */
int dmsc_migrate_commit(struct dmsc_migrate *m);

/* After an install: removes every pin under pin_dir's maps/ and links/
 * that this build does not make (a map or program an earlier build had, a
 * pin left by an interrupted migration), so that an upgraded host has the
 * pins of a fresh install. A link's pin going away detaches its program. */
int dmsc_migrate_sweep(const char *pin_dir);

#endif
