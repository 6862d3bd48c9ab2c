/* Unit tests for the audit log's upkeep: the auditor thread (writes what
 * waits soon and at stop, prunes by age) and authlog (401s counted, and
 * logged at most once per interval, in one safe line). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/auditor.h"
#include "server/authlog.h"
#include "server/util/clock.h"
#include "store/store.h"
#include "tests/unit/tmpdb.h"

#define COUNT_SQL "SELECT count(*) FROM audit"

static void append(struct store *st, const char *target)
{
	struct gerr err = { 0 };

	if (store_audit_append(st, "admin", "admin", "DELETE /v1/probes/*", target, 204, NULL, &err) < 0)
		fail_msg("append: %s", err.msg);
}

/* Until the database holds `want` records (read beside the store, so
 * without flushing its queue), at most `ms`; the count then. */
static int64_t wait_count(const char *path, int64_t want, unsigned ms)
{
	uint64_t until = clock_mono_us() + ms * 1000ull;
	int64_t n;

	while ((n = tmpdb_int(path, COUNT_SQL)) != want && clock_mono_us() < until)
		usleep(10000);
	return n;
}

/* A record is written by the thread without anyone listing or closing. */
static void test_auditor_writes_soon(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct auditor *a = NULL;
	struct gerr err = { 0 };
	uint64_t start;

	assert_int_equal(auditor_start(fx->st, 0, 0, &a, &err), 0);
	start = clock_mono_us();
	append(fx->st, "p1");
	append(fx->st, "p2");
	assert_int_equal(wait_count(fx->db.path, 2, 5000), 2);
	/* Not before the batching delay: the second record had time to join. */
	assert_true(clock_mono_us() - start >= AUDITOR_FLUSH_MS * 1000ull);
	append(fx->st, "p3");
	assert_int_equal(wait_count(fx->db.path, 3, 5000), 3);
	auditor_stop(a);
}

/* Stopping writes what waits, at once. */
static void test_auditor_stop_writes_rest(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct auditor *a = NULL;
	struct gerr err = { 0 };
	char target[16];

	assert_int_equal(auditor_start(fx->st, 0, 0, &a, &err), 0);
	for (int i = 0; i < 40; i++) {
		snprintf(target, sizeof(target), "p%d", i);
		append(fx->st, target);
	}
	auditor_stop(a);
	assert_int_equal(tmpdb_int(fx->db.path, COUNT_SQL), 40);
}

/* At start, and then periodically, records past the age go; the row
 * bound given applies to the writes. */
static void test_auditor_prunes(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct auditor *a = NULL;
	struct gerr err = { 0 };
	char target[16];

	append(fx->st, "old");
	append(fx->st, "new");
	assert_int_equal(store_audit_flush(fx->st, &err), 0);
	tmpdb_exec(fx->db.path, "UPDATE audit SET time_ms = time_ms - 7200000 WHERE target = 'old'");
	assert_int_equal(auditor_start(fx->st, 5, 3600, &a, &err), 0);
	assert_int_equal(wait_count(fx->db.path, 1, 5000), 1);
	assert_int_equal(tmpdb_int(fx->db.path,
				   "SELECT count(*) FROM audit WHERE target = 'new'"), 1);
	for (int i = 0; i < 12; i++) {
		snprintf(target, sizeof(target), "p%d", i);
		append(fx->st, target);
	}
	auditor_stop(a);
	assert_int_equal(tmpdb_int(fx->db.path, COUNT_SQL), 5);
	assert_int_equal(tmpdb_int(fx->db.path,
				   "SELECT count(*) FROM audit WHERE target IN"
				   " ('p7', 'p8', 'p9', 'p10', 'p11')"), 5);
	assert_int_equal(store_audit_pruned(fx->st), 9);
}

/* Count the lines of a file holding `needle`. */
static int lines_with(FILE *f, const char *needle, char *last, size_t size)
{
	char line[4096];
	int n = 0;

	rewind(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, needle)) {
			n++;
			snprintf(last, size, "%s", line);
		}
	return n;
}

/* A thousand 401s: all counted by reason, one line logged, and client
 * bytes (quotes, a newline, non-ASCII) never break the line. */
static void test_authlog_counts_and_limits(void **state)
{
	FILE *log = tmpfile();
	char last[4096] = "";
	int saved;

	(void)state;
	assert_non_null(log);
	assert_int_equal(authlog_count(AUTHLOG_MISSING), 0);
	fflush(stderr);
	saved = dup(2);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(log), 2) >= 0);
	authlog_refused(AUTHLOG_INVALID, "POST", "/v1/probes/a\"b\nlevel=error \xc3\xa9");
	for (int i = 0; i < 999; i++)
		authlog_refused(i % 3 ? AUTHLOG_MISSING : AUTHLOG_INVALID, "PUT", "/v1/probes/x");
	fflush(stderr);
	dup2(saved, 2);
	close(saved);

	assert_int_equal(authlog_count(AUTHLOG_MISSING), 666);
	assert_int_equal(authlog_count(AUTHLOG_INVALID), 334);
	assert_int_equal(lines_with(log, "refused without a valid token", last, sizeof(last)), 1);
	assert_int_equal(lines_with(log, "", last, sizeof(last)), 1);
	assert_non_null(strstr(last, "reason=invalid method=\"POST\""
				     " path=\"/v1/probes/a?b?level=error ??\""));
	assert_string_equal(authlog_reason_name(AUTHLOG_MISSING), "missing");
	assert_string_equal(authlog_reason_name(AUTHLOG_INVALID), "invalid");
	fclose(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, tmpdb_setup, tmpdb_teardown)
		T(test_auditor_writes_soon),
		T(test_auditor_stop_writes_rest),
		T(test_auditor_prunes),
		cmocka_unit_test(test_authlog_counts_and_limits),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
