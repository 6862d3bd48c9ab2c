/* The last value of each series of a counter exported as deltas, so that a
 * poll can tell how much each one moved.
 *
 * A series is one map key and one value field. Slots are found by a hash
 * of both but matched on the key's bytes and the field index themselves:
 * two series whose hashes collide keep slots of their own, and a hash
 * alone never decides whose value is subtracted from whose. */
#include <stdlib.h>
#include <string.h>

#include "server/collect/collect_int.h"

#define DELTA_MIN_CAP 64

struct delta_slot {
	uint64_t hash;
	uint32_t field;
	bool used;
	double last;
};

struct collect_delta {
	size_t key_size;
	size_t cap, used, max_cap;
	struct delta_slot *slots;
	unsigned char *keys;            /* cap keys of key_size bytes, by slot */
	collect_delta_hash_fn hash;
	/* Walks left that only record: the first one (nothing to subtract
	 * from yet) and the two around a reset of a full table. */
	int baseline_walks;
};

/* FNV-1a over the key, then over the field index's bytes. */
uint64_t collect_delta_hash(const void *key, size_t key_size, uint32_t field)
{
	const unsigned char *p = key;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < key_size; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	for (int i = 0; i < 4; i++) {
		h ^= (field >> (8 * i)) & 0xff;
		h *= 0x100000001b3ULL;
	}
	return h;
}

struct collect_delta *collect_delta_new(size_t key_size, size_t max_series,
					collect_delta_hash_fn hash)
{
	struct collect_delta *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->key_size = key_size;
	t->hash = hash ? hash : collect_delta_hash;
	/* Room for max_series at three quarters full, a power of two. */
	t->max_cap = DELTA_MIN_CAP;
	while (t->max_cap / 4 * 3 < max_series && t->max_cap < ((size_t)1 << 30))
		t->max_cap *= 2;
	t->baseline_walks = 1;
	return t;
}

void collect_delta_free(struct collect_delta *t)
{
	if (!t)
		return;
	free(t->slots);
	free(t->keys);
	free(t);
}

static unsigned char *slot_key(const struct collect_delta *t, size_t i)
{
	return t->keys + i * t->key_size;
}

/* The slot of (key, field), or the free slot where it goes. */
static size_t find_slot(const struct collect_delta *t, uint64_t h, const void *key,
			uint32_t field)
{
	size_t i = h & (t->cap - 1);

	while (t->slots[i].used &&
	       (t->slots[i].hash != h || t->slots[i].field != field ||
		memcmp(slot_key(t, i), key, t->key_size) != 0))
		i = (i + 1) & (t->cap - 1);
	return i;
}

/* A table of cap slots holding what t held. */
static int resize(struct collect_delta *t, size_t cap)
{
	struct delta_slot *slots = calloc(cap, sizeof(*slots));
	unsigned char *keys = malloc(cap * (t->key_size ? t->key_size : 1));
	struct collect_delta grown = *t;

	if (!slots || !keys) {
		free(slots);
		free(keys);
		return -1;
	}
	grown.slots = slots;
	grown.keys = keys;
	grown.cap = cap;
	for (size_t i = 0; i < t->cap; i++) {
		size_t j;

		if (!t->slots[i].used)
			continue;
		j = find_slot(&grown, t->slots[i].hash, slot_key(t, i), t->slots[i].field);
		grown.slots[j] = t->slots[i];
		memcpy(slot_key(&grown, j), slot_key(t, i), t->key_size);
	}
	free(t->slots);
	free(t->keys);
	*t = grown;
	return 0;
}

static void reset(struct collect_delta *t)
{
	memset(t->slots, 0, t->cap * sizeof(*t->slots));
	t->used = 0;
}

bool collect_delta_next(struct collect_delta *t, const void *key, uint32_t field,
			double value, double *out)
{
	uint64_t h = t->hash(key, t->key_size, field);
	struct delta_slot *slot;
	size_t i;

	if (!t->slots && resize(t, DELTA_MIN_CAP) < 0)
		return false;
	i = find_slot(t, h, key, field);
	slot = &t->slots[i];
	if (slot->used) {
		/* A value that went down is a counter that restarted: its
		 * increase is the value itself. */
		*out = value >= slot->last ? value - slot->last : value;
		slot->last = value;
		return t->baseline_walks == 0;
	}
	if (t->used + 1 > t->cap / 4 * 3) {
		if (t->cap < t->max_cap && resize(t, t->cap * 2) == 0)
			return collect_delta_next(t, key, field, value, out);
		/* Full of keys that may be gone: start over, two walks of
		 * recording so that no key counts its whole value again. */
		reset(t);
		t->baseline_walks = 2;
		i = find_slot(t, h, key, field);
		slot = &t->slots[i];
	}
	*slot = (struct delta_slot){ .hash = h, .field = field, .used = true, .last = value };
	memcpy(slot_key(t, i), key, t->key_size);
	t->used++;
	/* A series first seen after the first walk started from zero. */
	*out = value;
	return t->baseline_walks == 0;
}

void collect_delta_walk_done(struct collect_delta *t)
{
	if (t->baseline_walks > 0)
		t->baseline_walks--;
}

size_t collect_delta_series(const struct collect_delta *t)
{
	return t->used;
}
