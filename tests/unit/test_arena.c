/* Unit tests of server/util/arena: alignment, chunks, marks, resets, and
 * protobuf-c messages unpacked into it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/graind.pb-c.h"
#include "server/util/arena.h"

static void test_allocations_are_aligned_and_apart(void **state)
{
	struct arena a;
	uint8_t *p[100];

	(void)state;
	arena_init(&a);
	for (size_t i = 0; i < 100; i++) {
		p[i] = arena_alloc(&a, i + 1);
		assert_non_null(p[i]);
		assert_int_equal((uintptr_t)p[i] % _Alignof(max_align_t), 0);
		memset(p[i], (int)i, i + 1);
	}
	for (size_t i = 0; i < 100; i++)
		for (size_t k = 0; k <= i; k++)
			assert_int_equal(p[i][k], (uint8_t)i);
	arena_free(&a);
}

static void test_big_requests_and_many_chunks(void **state)
{
	struct arena a;
	struct arena_mark m;
	uint8_t *big, *small;

	(void)state;
	arena_init(&a);
	small = arena_alloc(&a, 16);
	big = arena_alloc(&a, 3 * ARENA_CHUNK);
	assert_non_null(small);
	assert_non_null(big);
	memset(big, 7, 3 * ARENA_CHUNK);
	for (int i = 0; i < 4 * 1024; i++)     /* 4 MiB in 1 KiB pieces */
		assert_non_null(arena_alloc(&a, 1024));
	assert_int_equal(big[3 * ARENA_CHUNK - 1], 7);
	assert_null(arena_alloc(&a, SIZE_MAX - 8));
	arena_reset(&a);
	m = arena_mark(&a);
	assert_non_null(m.chunk);               /* a chunk kept for reuse, empty */
	assert_int_equal(m.used, 0);
	arena_free(&a);
	assert_null(a.chunks);
}

static void test_release_gives_back_what_followed_the_mark(void **state)
{
	struct arena a;
	struct arena_mark m;
	uint8_t *kept, *again;

	(void)state;
	arena_init(&a);
	kept = arena_alloc(&a, 100);
	memset(kept, 1, 100);
	m = arena_mark(&a);
	for (int i = 0; i < 1000; i++)          /* past the first chunk */
		assert_non_null(arena_alloc(&a, 1000));
	arena_release(&a, m);
	assert_ptr_equal(arena_mark(&a).chunk, m.chunk);
	assert_int_equal(arena_mark(&a).used, m.used);
	again = arena_alloc(&a, 8);
	assert_ptr_equal(again, kept + 112);    /* 100 rounded to the alignment */
	assert_int_equal(kept[99], 1);
	arena_free(&a);
}

static void test_messages_unpacked_into_it_live_until_reset(void **state)
{
	Graind__Sample s = GRAIND__SAMPLE__INIT, *copy;
	struct arena a;
	uint8_t buf[256];
	size_t n;

	(void)state;
	s.probe = "p";
	s.map = "events";
	s.value = 42;
	n = graind__sample__pack(&s, buf);
	arena_init(&a);
	copy = graind__sample__unpack(&a.allocator, n, buf);
	assert_non_null(copy);
	memset(buf, 0, sizeof(buf));
	graind__sample__free_unpacked(copy, &a.allocator);     /* a no-op */
	assert_string_equal(copy->probe, "p");
	assert_string_equal(copy->map, "events");
	assert_true(copy->value == 42);
	arena_free(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allocations_are_aligned_and_apart),
		cmocka_unit_test(test_big_requests_and_many_chunks),
		cmocka_unit_test(test_release_gives_back_what_followed_the_mark),
		cmocka_unit_test(test_messages_unpacked_into_it_live_until_reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
