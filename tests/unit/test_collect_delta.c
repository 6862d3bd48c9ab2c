/* Unit tests of the collector's delta table (server/collect/collect_delta.c):
 * per-series deltas of counters with several keys and several value
 * fields, exact per series even when every hash collides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "server/collect/collect_int.h"

/* The shape of netstat's key: ifindex, direction, L3 and L4 protocol. */
struct key {
	uint32_t ifindex;
	uint8_t direction, l3, l4, pad;
};

#define N_KEYS   6
#define N_FIELDS 3
#define N_WALKS  8

static const struct key keys[N_KEYS] = {
	{ 1004, 0, 4, 17, 0 }, { 1007, 0, 4, 17, 0 }, { 1004, 1, 4, 17, 0 },
	{ 1007, 1, 4, 17, 0 }, { 1005, 0, 4, 17, 0 }, { 1006, 0, 6, 58, 0 },
};

static uint64_t same_hash(const void *key, size_t key_size, uint32_t field)
{
	(void)key;
	(void)key_size;
	(void)field;
	return 42;
}

/* The hash the collector used to have: the field folded into the first
 * key byte, so that 1004/field 0 and 1007/field 1 collide. */
static uint64_t first_byte_hash(const void *key, size_t key_size, uint32_t field)
{
	uint8_t copy[sizeof(struct key)];

	memcpy(copy, key, key_size);
	copy[0] ^= (uint8_t)(field + 1);
	return collect_delta_hash(copy, key_size, 0);
}

/* The counter of series (k, f) at walk w: each moves by its own step, key
 * 3 restarts at walk 5, and key 5 appears only at walk 3. */
static bool value_at(int k, int f, int w, double *v)
{
	double step = (double)((k + 1) * 100 + (f + 1) * 7);

	if (k == 5 && w < 3)
		return false;
	if (k == 3 && w >= 5)
		*v = step * (w - 5) + 3;
	else
		*v = step * w + 1000 * (k + 1) + f;
	return true;
}

static void run_walks(collect_delta_hash_fn hash)
{
	struct collect_delta *t = collect_delta_new(sizeof(struct key), 64, hash);

	assert_non_null(t);
	for (int w = 0; w < N_WALKS; w++) {
		for (int k = 0; k < N_KEYS; k++)
			for (int f = 0; f < N_FIELDS; f++) {
				double v, prev, got = -1, want;
				bool told;

				if (!value_at(k, f, w, &v))
					continue;
				told = collect_delta_next(t, &keys[k], (uint32_t)f, v, &got);
				if (w == 0) {
					assert_false(told);
					continue;
				}
				assert_true(told);
				if (!value_at(k, f, w - 1, &prev))
					want = v;               /* new series: from zero */
				else
					want = v >= prev ? v - prev : v;
				if (got != want)
					fail_msg("walk %d key %d field %d: delta %g, want %g", w, k, f,
						 got, want);
			}
		collect_delta_walk_done(t);
	}
	assert_int_equal(collect_delta_series(t), N_KEYS * N_FIELDS);
	collect_delta_free(t);
}

static void test_every_hash_colliding(void **state)
{
	(void)state;
	run_walks(same_hash);
}

static void test_first_byte_collisions(void **state)
{
	(void)state;
	assert_true(first_byte_hash(&keys[0], sizeof(struct key), 0) ==
		    first_byte_hash(&keys[1], sizeof(struct key), 1));
	run_walks(first_byte_hash);
}

static void test_collector_hash(void **state)
{
	(void)state;
	run_walks(NULL);
}

/* Thousands of series grow the table past its first size, every value
 * kept; a full table at its bound starts over with two recording walks. */
static void test_growth_and_bound(void **state)
{
	struct collect_delta *t = collect_delta_new(sizeof(uint32_t), 10000, NULL);
	struct collect_delta *small = collect_delta_new(sizeof(uint32_t), 40, NULL);
	double out;

	(void)state;
	assert_non_null(t);
	for (int w = 0; w < 3; w++) {
		for (uint32_t k = 0; k < 4000; k++)
			for (uint32_t f = 0; f < 2; f++) {
				bool told = collect_delta_next(t, &k, f, (double)(k + f) * w, &out);

				assert_int_equal(told, w > 0);
				if (told && out != (double)(k + f))
					fail_msg("key %u field %u: %g", k, f, out);
			}
		collect_delta_walk_done(t);
	}
	assert_int_equal(collect_delta_series(t), 8000);
	collect_delta_free(t);

	/* Room for 40 series (a table of 64, 48 at three quarters): the 49th
	 * resets it. */
	assert_non_null(small);
	for (uint32_t k = 0; k < 48; k++)
		collect_delta_next(small, &k, 0, 1, &out);
	collect_delta_walk_done(small);
	for (uint32_t k = 0; k < 48; k++)
		assert_true(collect_delta_next(small, &k, 0, 2, &out) && out == 1);
	{
		uint32_t k = 48;

		assert_false(collect_delta_next(small, &k, 0, 5, &out));
	}
	assert_int_equal(collect_delta_series(small), 1);
	collect_delta_walk_done(small);
	{
		uint32_t k = 48;

		assert_false(collect_delta_next(small, &k, 0, 6, &out));
		collect_delta_walk_done(small);
		assert_true(collect_delta_next(small, &k, 0, 9, &out) && out == 3);
	}
	collect_delta_free(small);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_hash_colliding),
		cmocka_unit_test(test_first_byte_collisions),
		cmocka_unit_test(test_collector_hash),
		cmocka_unit_test(test_growth_and_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
