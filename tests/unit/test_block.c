/* Unit tests of the sample block format (store/block.h) at its edges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "server/util/pbwire.h"
#include "store/block.h"

/* A sample with no bytes of its own, after a frame that shares nothing,
 * is an empty sample, not a broken one, even read with a buffer that was
 * never used (found by fuzzing: such a buffer has no data, and NULL is
 * what block_sample() says for broken bytes). */
static void test_empty_sample_after_empty_shared_frame(void **state)
{
	static const uint8_t payload[] = { 0x01, 0x00, 0x00, 0x02, 0x08, 0x07 };
	struct block_walk w = block_walk(payload, sizeof(payload));
	struct pbwire buf = { 0 };
	const uint8_t *own, *whole;
	size_t own_len, len = 99;

	(void)state;
	assert_true(block_next(&w, &own, &own_len));
	assert_int_equal(own_len, 0);
	whole = block_sample(&w, own, own_len, &buf, &len);
	assert_non_null(whole);
	assert_int_equal(len, 0);

	assert_true(block_next(&w, &own, &own_len));
	whole = block_sample(&w, own, own_len, &buf, &len);
	assert_non_null(whole);
	assert_int_equal(len, 2);
	assert_memory_equal(whole, "\x08\x07", 2);
	assert_false(block_next(&w, &own, &own_len));
	assert_false(w.broken);
	pbwire_free(&buf);
}

/* Broken bytes are still NULL. */
static void test_broken_sample(void **state)
{
	static const uint8_t payload[] = { 0x01, 0x00, 0x01, 0x08 };
	struct block_walk w = block_walk(payload, sizeof(payload));
	struct pbwire buf = { 0 };
	const uint8_t *own;
	size_t own_len, len;

	(void)state;
	assert_true(block_next(&w, &own, &own_len));
	assert_null(block_sample(&w, own, own_len, &buf, &len));
	pbwire_free(&buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_sample_after_empty_shared_frame),
		cmocka_unit_test(test_broken_sample),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
