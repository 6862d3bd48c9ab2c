/* Unit tests of the per-address token buckets (server/util/keylimit.h)
 * that slow down failed authentications. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cmocka.h>

#include "server/util/keylimit.h"

/* Takes that succeed in a row for `address`, up to `most`. */
static unsigned takes(struct keylimit *al, const char *address, unsigned most)
{
	unsigned n = 0, retry = 0;

	while (n < most && keylimit_take(al, address, &retry))
		n++;
	return n;
}

static void test_burst_then_refused_with_retry(void **state)
{
	struct keylimit *al = keylimit_new(0.5, 3);
	unsigned retry = 0;

	(void)state;
	assert_non_null(al);
	assert_int_equal(takes(al, "198.18.0.2", 10), 3);
	assert_false(keylimit_take(al, "198.18.0.2", &retry));
	/* One token at half a token a second: two seconds at most. */
	assert_true(retry >= 1 && retry <= 2);
	keylimit_free(al);
}

static void test_addresses_are_apart(void **state)
{
	struct keylimit *al = keylimit_new(0.001, 2);

	(void)state;
	assert_int_equal(takes(al, "198.18.0.2", 10), 2);
	assert_int_equal(takes(al, "198.18.0.6", 10), 2);
	assert_int_equal(takes(al, "::1", 10), 2);
	assert_int_equal(takes(al, "198.18.0.2", 10), 0);
	keylimit_free(al);
}

static void test_unix_socket_never_limited(void **state)
{
	struct keylimit *al = keylimit_new(0.001, 1);

	(void)state;
	assert_int_equal(takes(al, NULL, 50), 50);
	assert_int_equal(takes(al, "", 50), 50);
	keylimit_free(al);
}

static void test_tokens_come_back(void **state)
{
	struct keylimit *al = keylimit_new(200, 2);
	struct timespec wait = { 0, 30 * 1000 * 1000 };

	(void)state;
	assert_int_equal(takes(al, "198.18.0.2", 10), 2);
	nanosleep(&wait, NULL);
	/* 30 ms at 200 a second: the bucket is full again, no fuller. */
	assert_int_equal(takes(al, "198.18.0.2", 10), 2);
	keylimit_free(al);
}

/* More addresses than slots: the table stays bounded, and an address seen
 * again after being pushed out starts with a full bucket, never an
 * empty one of another address. */
static void test_many_addresses(void **state)
{
	struct keylimit *al = keylimit_new(0.001, 1);
	char address[32];

	(void)state;
	for (unsigned i = 0; i < 4 * KEYLIMIT_SLOTS; i++) {
		snprintf(address, sizeof(address), "198.%u.%u.%u", 18 + (i >> 16), (i >> 8) & 255,
			 i & 255);
		assert_int_equal(takes(al, address, 5), 1);
	}
	assert_int_equal(takes(al, "198.18.0.0", 5), 1);
	assert_int_equal(takes(al, "198.18.0.0", 5), 0);
	keylimit_free(al);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_then_refused_with_retry),
		cmocka_unit_test(test_addresses_are_apart),
		cmocka_unit_test(test_unix_socket_never_limited),
		cmocka_unit_test(test_tokens_come_back),
		cmocka_unit_test(test_many_addresses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
