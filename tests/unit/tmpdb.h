/* tmpdb: a database path in a fresh temporary directory, for the unit
 * tests of the store, and its removal with the files SQLite puts next to
 * it. Header only: every test program is one source file. */
#ifndef GRAIND_TESTS_TMPDB_H
#define GRAIND_TESTS_TMPDB_H

#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "store/store.h"

struct tmpdb {
	char dir[64];
	char path[128];         /* <dir>/graind.db, not created */
};

/* A new directory /tmp/<prefix>.XXXXXX. */
static inline void tmpdb_make(struct tmpdb *db, const char *prefix)
{
	snprintf(db->dir, sizeof(db->dir), "/tmp/%s.XXXXXX", prefix);
	assert_non_null(mkdtemp(db->dir));
	snprintf(db->path, sizeof(db->path), "%s/graind.db", db->dir);
}

/* The database, its WAL, shared memory, journal and reserve, and the
 * directory. */
static inline void tmpdb_remove(struct tmpdb *db)
{
	const char *suffixes[] = { "", "-wal", "-shm", "-journal", "-reserve" };
	char file[160];

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(file, sizeof(file), "%s%s", db->path, suffixes[i]);
		unlink(file);
	}
	rmdir(db->dir);
}

/* The store's published figures (store_summary_get), as one value. */
static inline struct store_summary summary_of(struct store *st)
{
	struct store_summary sum;

	store_summary_get(st, &sum);
	return sum;
}

/* store_open() of path, which must succeed. */
static inline struct store *tmpdb_open(const char *path)
{
	struct gerr err = { 0 };
	struct store *st = NULL;

	if (store_open(path, &st, &err) < 0)
		fail_msg("store_open: %d %s", err.status, err.msg);
	assert_non_null(st);
	return st;
}

/* Run SQL on the database through a connection of its own (beside the
 * store's, as an operator's sqlite3 shell would). */
static inline void tmpdb_exec(const char *path, const char *sql)
{
	sqlite3 *db;
	char *msg = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

/* The integer a query returns, read the same way. */
static inline int64_t tmpdb_int(const char *path, const char *sql)
{
	sqlite3_stmt *stmt;
	sqlite3 *db;
	int64_t v;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return v;
}

/* A cmocka fixture: a store open on a fresh temporary database. */
struct tmpdb_fixture {
	struct tmpdb db;
	struct store *st;
};

static inline int tmpdb_setup(void **state)
{
	struct tmpdb_fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	tmpdb_make(&fx->db, "graind-unit");
	fx->st = tmpdb_open(fx->db.path);
	*state = fx;
	return 0;
}

static inline int tmpdb_teardown(void **state)
{
	struct tmpdb_fixture *fx = *state;

	store_close(fx->st);
	tmpdb_remove(&fx->db);
	free(fx);
	return 0;
}

#endif
