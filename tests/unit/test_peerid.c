/* Unit tests of the client certificate names string (server/util/peerid.h)
 * the transports hand to the auth layer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "server/util/peerid.h"

static char *sample(void)
{
	char *id = NULL;

	assert_int_equal(peerid_append(&id, "CN=", "agent-1", 7), 0);
	assert_int_equal(peerid_append(&id, "DNS:", "agent-1.example", 15), 0);
	assert_int_equal(peerid_append(&id, "IP:", "10.0.0.5", 8), 0);
	assert_int_equal(peerid_append(&id, "URI:", "spiffe://fleet/ops", 18), 0);
	return id;
}

static void test_format(void **state)
{
	char *id = sample();

	(void)state;
	assert_string_equal(id, "CN=agent-1\nDNS:agent-1.example\nIP:10.0.0.5\nURI:spiffe://fleet/ops");
	free(id);
}

static void test_matches_typed_and_untyped(void **state)
{
	char *id = sample();

	(void)state;
	assert_true(peerid_matches(id, "CN=agent-1"));
	assert_true(peerid_matches(id, "DNS:agent-1.example"));
	assert_true(peerid_matches(id, "IP:10.0.0.5"));
	assert_true(peerid_matches(id, "agent-1"));
	assert_true(peerid_matches(id, "agent-1.example"));
	assert_true(peerid_matches(id, "spiffe://fleet/ops"));
	/* A typed name matches only its own kind, and whole lines only. */
	assert_false(peerid_matches(id, "DNS:agent-1"));
	assert_false(peerid_matches(id, "CN=agent-1.example"));
	assert_false(peerid_matches(id, "agent"));
	assert_false(peerid_matches(id, "agent-1\nDNS:agent-1.example"));
	assert_false(peerid_matches(id, ""));
	assert_false(peerid_matches(NULL, "agent-1"));
	free(id);
}

static void test_cn(void **state)
{
	char *id = sample(), buf[8];

	(void)state;
	assert_string_equal(peerid_cn(id, buf, sizeof(buf)), "agent-1");
	assert_string_equal(peerid_cn(id, buf, 4), "age");
	assert_string_equal(peerid_cn(NULL, buf, sizeof(buf)), "");
	assert_string_equal(peerid_cn("DNS:x", buf, sizeof(buf)), "");
	free(id);
}

/* A name with a newline, a NUL or another control character cannot make
 * a second line: a CA that signed "evil\nCN=admin" names nobody else. */
static void test_control_characters_replaced(void **state)
{
	char *id = NULL;

	(void)state;
	assert_int_equal(peerid_append(&id, "CN=", "evil\nCN=admin", 13), 0);
	assert_int_equal(peerid_append(&id, "DNS:", "a\0b\x7f", 4), 0);
	assert_string_equal(id, "CN=evil?CN=admin\nDNS:a?b?");
	assert_false(peerid_matches(id, "CN=admin"));
	assert_false(peerid_matches(id, "admin"));
	free(id);
}

static void test_empty_cn(void **state)
{
	char *id = NULL, buf[8];

	(void)state;
	assert_int_equal(peerid_append(&id, "CN=", "", 0), 0);
	assert_int_equal(peerid_append(&id, "DNS:", "h", 1), 0);
	assert_string_equal(peerid_cn(id, buf, sizeof(buf)), "");
	assert_false(peerid_matches(id, "CN="));
	assert_true(peerid_matches(id, "h"));
	free(id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_matches_typed_and_untyped),
		cmocka_unit_test(test_cn),
		cmocka_unit_test(test_control_characters_replaced),
		cmocka_unit_test(test_empty_cn),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
