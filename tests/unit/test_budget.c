/* Unit tests for server/budget.c: windows of counters, the rates over
 * them, when a breach starts and ends, what a DETACH breach keeps, and the
 * --default-budget text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "server/budget.h"

/* Second t of a probe that runs `ns_per_s` a second and carries `ev_per_s`. */
static struct budget_sample at(int t, uint64_t ns_per_s, uint64_t ev_per_s, uint64_t maps)
{
	return (struct budget_sample){ .at_ms = 1000 + t * 1000, .run_time_ns = t * ns_per_s,
				       .events = t * ev_per_s, .map_bytes = maps };
}

static void test_rates_need_a_whole_window(void **state)
{
	struct budgets *b = budgets_new();
	struct budget_limits lim = { .max_cpu_percent = 5, .window_s = 3, .detach = true };
	struct budget_usage u;
	struct budget_breach br;
	struct budget_sample s;

	(void)state;
	/* 10 % of a CPU from the start: judged only once 3 s are seen. */
	for (int t = 0; t < 3; t++) {
		s = at(t, 100000000, 0, 0);
		assert_int_equal(budgets_observe(b, "p", &lim, &s, 5000 + t, &u, &br), 0);
	}
	assert_true(u.cpu_percent > 9.9 && u.cpu_percent < 10.1);
	assert_int_equal(u.span_s, 2);
	s = at(3, 100000000, 0, 0);
	assert_int_equal(budgets_observe(b, "p", &lim, &s, 7777, &u, &br), 1);
	assert_string_equal(br.limit, "maxCpuPercent");
	assert_true(br.figure > 9.9 && br.max == 5 && br.detach && br.since_ms == 7777);
	/* Once is enough: still over is no new breach. */
	s = at(4, 100000000, 0, 0);
	assert_int_equal(budgets_observe(b, "p", &lim, &s, 8888, &u, &br), 0);
	budgets_free(b);
}

static void test_window_slides(void **state)
{
	struct budgets *b = budgets_new();
	struct budget_limits lim = { .max_events_per_second = 100, .window_s = 2 };
	struct budget_usage u;
	struct budget_breach br;
	bool exceeded;
	uint64_t events = 0;

	(void)state;
	/* 1000 events/s for 4 s, then nothing: over, then under once the
	 * window holds only quiet seconds. */
	for (int t = 0; t <= 8; t++) {
		struct budget_sample s = { .at_ms = t * 1000, .events = events };
		int r = budgets_observe(b, "q", &lim, &s, t, &u, &br);

		if (t == 2)
			assert_int_equal(r, 1);
		else
			assert_int_equal(r, 0);
		if (t < 4)
			events += 1000;
	}
	assert_true(budgets_get(b, "q", &u, &br, &exceeded));
	assert_false(exceeded);         /* ALERT: it ends when the usage does */
	assert_true(u.events_per_second == 0 && u.span_s == 2);
	budgets_free(b);
}

static void test_counter_going_down_starts_again(void **state)
{
	struct budgets *b = budgets_new();
	struct budget_limits lim = { .max_cpu_percent = 50, .window_s = 2 };
	struct budget_usage u;
	struct budget_breach br;
	struct budget_sample s;

	(void)state;
	s = at(5, 900000000, 0, 0);
	budgets_observe(b, "r", &lim, &s, 0, &u, &br);
	/* New programs: their run time starts from 0. Not a negative rate,
	 * and not judged until a new window is seen. */
	s = at(1, 900000000, 0, 0);
	s.at_ms = 7000;
	assert_int_equal(budgets_observe(b, "r", &lim, &s, 0, &u, &br), 0);
	assert_int_equal(u.span_s, 0);
	assert_true(u.cpu_percent == 0);
	budgets_free(b);
}

static void test_map_bytes_at_once_and_detach_is_kept(void **state)
{
	struct budgets *b = budgets_new();
	struct budget_limits lim = { .max_map_bytes = 4096, .detach = true };
	struct budget_usage u;
	struct budget_breach br;
	struct budget_sample s = at(0, 0, 0, 8192);
	bool exceeded;

	(void)state;
	assert_int_equal(budgets_observe(b, "m", &lim, &s, 42, &u, &br), 1);
	assert_string_equal(br.limit, "maxMapBytes");
	assert_true(br.figure == 8192 && br.max == 4096);
	/* Detached: no more samples, the breach stays. */
	budgets_pause(b, "m");
	assert_false(budgets_get(b, "m", &u, &br, &exceeded));
	assert_true(exceeded);
	assert_int_equal(br.since_ms, 42);
	/* Attached again by an operator: forgiven. */
	budgets_reset(b, "m");
	assert_false(budgets_get(b, "m", &u, &br, &exceeded));
	assert_false(exceeded);
	/* An ALERT breach is not kept over a detach. */
	lim.detach = false;
	assert_int_equal(budgets_observe(b, "m", &lim, &s, 43, &u, &br), 1);
	budgets_pause(b, "m");
	assert_false(budgets_get(b, "m", &u, &br, &exceeded));
	assert_false(exceeded);
	budgets_free(b);
}

static void test_no_limits_is_only_measured(void **state)
{
	struct budgets *b = budgets_new();
	struct budget_limits none = { 0 };
	struct budget_usage u;
	struct budget_breach br;
	bool exceeded;

	(void)state;
	for (int t = 0; t < 20; t++) {
		struct budget_sample s = at(t, 1000000000, 1000000, 1 << 30);

		assert_int_equal(budgets_observe(b, "n", &none, &s, t, &u, &br), 0);
	}
	assert_true(budgets_get(b, "n", &u, &br, &exceeded));
	assert_false(exceeded);
	assert_int_equal(u.span_s, BUDGET_DEFAULT_WINDOW_S);
	assert_true(u.cpu_percent > 99.9 && u.cpu_percent < 100.1);
	budgets_free(b);
}

/* Hovering at the limit: one breach, ended only by a window under it. */
static void test_flapping_is_one_breach(void **state)
{
	struct budgets *b = budgets_new();
	struct budget_limits lim = { .max_map_bytes = 1000, .window_s = 3 };
	struct budget_usage u;
	struct budget_breach br;
	int breaches = 0;
	bool exceeded;

	(void)state;
	for (int t = 0; t < 12; t++) {
		struct budget_sample s = at(t, 0, 0, t & 1 ? 900 : 1100);

		breaches += budgets_observe(b, "f", &lim, &s, t, &u, &br);
	}
	assert_int_equal(breaches, 1);
	for (int t = 12; t < 20; t++) {
		struct budget_sample s = at(t, 0, 0, 900);

		assert_int_equal(budgets_observe(b, "f", &lim, &s, t, &u, &br), 0);
		budgets_get(b, "f", &u, &br, &exceeded);
		/* Under since t = 11: over 3 s later, it ends. */
		assert_int_equal(exceeded, t < 14);
	}
	budgets_free(b);
}

static void test_rounds_forget_the_unobserved(void **state)
{
	struct budgets *b = budgets_new();
	struct budget_limits alert = { .max_map_bytes = 1 }, detach = { .max_map_bytes = 1, .detach = true };
	struct budget_sample s = at(0, 0, 0, 10);
	struct budget_usage u;
	struct budget_breach br;
	bool exceeded;

	(void)state;
	budgets_round_begin(b);
	assert_int_equal(budgets_observe(b, "a", &alert, &s, 0, &u, &br), 1);
	assert_int_equal(budgets_observe(b, "d", &detach, &s, 0, &u, &br), 1);
	budgets_round_end(b);
	assert_true(budgets_get(b, "a", &u, &br, &exceeded) && exceeded);
	/* Neither seen in the next round: the ALERT one is forgotten, the
	 * DETACH one keeps its breach, unmeasured. */
	budgets_round_begin(b);
	budgets_round_end(b);
	assert_false(budgets_get(b, "a", &u, &br, &exceeded));
	assert_false(exceeded);
	assert_false(budgets_get(b, "d", &u, &br, &exceeded));
	assert_true(exceeded);
	budgets_free(b);
}

static void test_parse(void **state)
{
	struct budget_limits lim;
	char why[160];

	(void)state;
	assert_int_equal(budget_parse("cpu=2.5,events=1000,map-bytes=64M,window=30,action=detach",
				      &lim, why, sizeof(why)), 0);
	assert_true(lim.max_cpu_percent == 2.5 && lim.max_events_per_second == 1000);
	assert_true(lim.max_map_bytes == 64u << 20 && lim.window_s == 30 && lim.detach);
	assert_int_equal(budget_parse("map-bytes=1K", &lim, why, sizeof(why)), 0);
	assert_true(lim.max_map_bytes == 1024 && !lim.detach && lim.window_s == 0);
	assert_int_equal(budget_parse("cpu=-1", &lim, why, sizeof(why)), -1);
	assert_string_equal(why, "bad value '-1' for cpu");
	assert_int_equal(budget_parse("window=3601", &lim, why, sizeof(why)), -1);
	assert_int_equal(budget_parse("window=1.5", &lim, why, sizeof(why)), -1);
	assert_int_equal(budget_parse("cpu", &lim, why, sizeof(why)), -1);
	assert_string_equal(why, "'cpu' is no key=value");
	assert_int_equal(budget_parse("mem=1", &lim, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "unknown key 'mem'"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rates_need_a_whole_window),
		cmocka_unit_test(test_window_slides),
		cmocka_unit_test(test_counter_going_down_starts_again),
		cmocka_unit_test(test_map_bytes_at_once_and_detach_is_kept),
		cmocka_unit_test(test_no_limits_is_only_measured),
		cmocka_unit_test(test_flapping_is_one_breach),
		cmocka_unit_test(test_rounds_forget_the_unobserved),
		cmocka_unit_test(test_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
