/* sinks: where samples are sent, and how far each has got.
 *
 * A sink's row holds its configuration (opaque to the store) and its
 * delivery state. The cursor only moves forward, and only together with
 * the counters of the delivery that moved it, in one statement. */
#include "store/store.h"
#include "store/store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void store_sink_clear(struct store_sink *sink)
{
	free(sink->config);
	free(sink->last_error);
	memset(sink, 0, sizeof(*sink));
}

static int64_t clamp_i64(uint64_t v)
{
	return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

int store_sink_from_stmt(sqlite3_stmt *stmt, struct store_sink *out, struct gerr *err)
{
	const void *config = sqlite3_column_blob(stmt, 1);
	size_t len = (size_t)sqlite3_column_bytes(stmt, 1);

	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", (const char *)sqlite3_column_text(stmt, 0));
	out->config = malloc(len ? len : 1);
	out->last_error = strdup((const char *)sqlite3_column_text(stmt, 4));
	if (!out->config || !out->last_error) {
		store_sink_clear(out);
		return gerr_set(err, 500, "out of memory reading sink %s", out->name);
	}
	if (len)
		memcpy(out->config, config, len);
	out->config_len = len;
	out->cursor = (uint64_t)sqlite3_column_int64(stmt, 2);
	out->last_success_ms = sqlite3_column_int64(stmt, 3);
	out->bytes_sent = (uint64_t)sqlite3_column_int64(stmt, 5);
	out->samples_sent = (uint64_t)sqlite3_column_int64(stmt, 6);
	out->pending = (uint64_t)sqlite3_column_int64(stmt, 7);
	out->generation = (uint64_t)sqlite3_column_int64(stmt, 8);
	return 0;
}

/* Does sink `name` exist? 1 yes (*generation its generation), 0 no, -1
 * on failure. Lock held. */
static int sink_exists(struct store *st, const char *name, uint64_t *generation,
		       struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret, rc;

	stmt = store_stmt(st, STORE_STMT_SINK_EXISTS,
			  "SELECT generation FROM sinks WHERE name = ?", err);
	if (!stmt)
		return -1;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		*generation = (uint64_t)sqlite3_column_int64(stmt, 0);
		ret = 1;
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		ret = store_fail(st, err, "cannot read sink %s", name);
	}
	store_stmt_done(stmt);
	return ret;
}

int store_sink_put(struct store *st, const char *name, const void *config,
		   size_t config_len, uint64_t if_generation, bool *created, struct gerr *err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t now = store_now_ms();
	uint64_t generation = 0;
	int ret = -1, exists;

	store_lock(st);
	exists = sink_exists(st, name, &generation, err);
	if (exists < 0)
		goto out;
	if (if_generation && !exists) {
		gerr_set(err, 404, "no sink named %s (a generation to match was given)", name);
		goto out;
	}
	if (if_generation && generation != if_generation) {
		gerr_set(err, 412, "sink %s is at generation %llu, not the one in If-Match (%llu): "
			 "re-read it and retry", name, (unsigned long long)generation,
			 (unsigned long long)if_generation);
		goto out;
	}
	if (exists)
		stmt = store_stmt(st, STORE_STMT_SINK_UPDATE,
			"UPDATE sinks SET pending = CASE WHEN config = ?2 THEN pending ELSE 0 END,"
			" generation = generation + (config IS NOT ?2),"
			" config = ?2, updated_ms = ?3 WHERE name = ?1", err);
	else
		stmt = store_stmt(st, STORE_STMT_SINK_INSERT,
			"INSERT INTO sinks (name, config, created_ms, updated_ms)"
			" VALUES (?1, ?2, ?3, ?3)", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(stmt, 2, config_len ? config : "", config_len, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 3, now);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		store_fail(st, err, "cannot store sink %s", name);
		goto out;
	}
	*created = !exists;
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_sink_get(struct store *st, const char *name, struct store_sink *out,
		   struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1, rc;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_SINK_GET,
			  "SELECT " STORE_SINK_COLUMNS " FROM sinks WHERE name = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		ret = store_sink_from_stmt(stmt, out, err);
	else if (rc == SQLITE_DONE)
		gerr_set(err, 404, "no sink named %s", name);
	else
		store_fail(st, err, "cannot read sink %s", name);
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_sink_delete(struct store *st, const char *name, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_SINK_DELETE, "DELETE FROM sinks WHERE name = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	if (sqlite3_step(stmt) != SQLITE_DONE)
		store_fail(st, err, "cannot delete sink %s", name);
	else if (sqlite3_changes(st->db) == 0)
		gerr_set(err, 404, "no sink named %s", name);
	else
		ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_sink_delivered(struct store *st, const char *name, uint64_t cursor,
			 uint64_t samples, uint64_t bytes, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	/* One UPDATE is one transaction: the cursor never moves without
	 * the counters that account for it. */
	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_SINK_DELIVERED,
		"UPDATE sinks SET cursor = max(cursor, ?2),"
		" samples_sent = samples_sent + ?3, bytes_sent = bytes_sent + ?4,"
		" last_success_ms = ?5, last_error = NULL, pending = 0 WHERE name = ?1", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 2, clamp_i64(cursor));
	sqlite3_bind_int64(stmt, 3, clamp_i64(samples));
	sqlite3_bind_int64(stmt, 4, clamp_i64(bytes));
	sqlite3_bind_int64(stmt, 5, store_now_ms());
	if (sqlite3_step(stmt) != SQLITE_DONE)
		store_fail(st, err, "cannot record the delivery of sink %s", name);
	else if (sqlite3_changes(st->db) == 0)
		gerr_set(err, 404, "no sink named %s", name);
	else
		ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_sink_pending(struct store *st, const char *name, uint64_t last,
		       struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_SINK_PENDING,
			  "UPDATE sinks SET pending = ?2 WHERE name = ?1", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 2, clamp_i64(last));
	if (sqlite3_step(stmt) != SQLITE_DONE)
		store_fail(st, err, "cannot record the pending batch of sink %s", name);
	else if (sqlite3_changes(st->db) == 0)
		gerr_set(err, 404, "no sink named %s", name);
	else
		ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_sink_failed(struct store *st, const char *name, const char *error,
		      struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_SINK_FAILED,
			  "UPDATE sinks SET last_error = ?2 WHERE name = ?1", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, error ? error : "", -1, SQLITE_STATIC);
	if (sqlite3_step(stmt) != SQLITE_DONE)
		store_fail(st, err, "cannot record the failure of sink %s", name);
	else if (sqlite3_changes(st->db) == 0)
		gerr_set(err, 404, "no sink named %s", name);
	else
		ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

/* The smallest cursor of all sinks; *any is false when there are none.
 * Lock held. */
static int min_cursor(struct store *st, uint64_t *cursor, bool *any, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	stmt = store_stmt(st, STORE_STMT_SINK_MIN_CURSOR,
			  "SELECT count(*), coalesce(min(cursor), 0) FROM sinks", err);
	if (!stmt)
		return -1;
	if (sqlite3_step(stmt) != SQLITE_ROW) {
		store_fail(st, err, "cannot read the sinks' cursors");
		goto out;
	}
	*any = sqlite3_column_int64(stmt, 0) > 0;
	*cursor = (uint64_t)sqlite3_column_int64(stmt, 1);
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

/* Rows and payload bytes of the prunable range, to keep the buffer's
 * cached size right. Lock held. */
static int prune_size(struct store *st, uint64_t upto, int64_t before_ns,
		      uint64_t *rows, uint64_t *bytes, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	stmt = store_stmt(st, STORE_STMT_SINK_PRUNE_SIZE,
		"SELECT coalesce(sum(last_id - first_id + 1), 0), coalesce(sum(length(payload)), 0)"
		" FROM sample_blocks WHERE last_id <= ?1 AND time_ns < ?2", err);
	if (!stmt)
		return -1;
	sqlite3_bind_int64(stmt, 1, clamp_i64(upto));
	sqlite3_bind_int64(stmt, 2, before_ns);
	if (sqlite3_step(stmt) != SQLITE_ROW) {
		store_fail(st, err, "cannot size the delivered samples");
		goto out;
	}
	*rows = (uint64_t)sqlite3_column_int64(stmt, 0);
	*bytes = (uint64_t)sqlite3_column_int64(stmt, 1);
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

static int prune_rows(struct store *st, uint64_t upto, int64_t before_ns, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = 0;

	stmt = store_stmt(st, STORE_STMT_SINK_PRUNE,
			  "DELETE FROM sample_blocks WHERE last_id <= ?1 AND time_ns < ?2", err);
	if (!stmt)
		return -1;
	sqlite3_bind_int64(stmt, 1, clamp_i64(upto));
	sqlite3_bind_int64(stmt, 2, before_ns);
	if (sqlite3_step(stmt) != SQLITE_DONE)
		ret = store_fail(st, err, "cannot prune delivered samples");
	store_stmt_done(stmt);
	return ret;
}

/* The block that holds `upto` and ids past it loses its samples up to
 * `upto`, when old enough. */
static int prune_straddling(struct store *st, uint64_t upto, int64_t before_ns,
			    uint64_t *rows, uint64_t *bytes, struct gerr *err)
{
	sqlite3_stmt *stmt;
	uint64_t cut = 0, cut_bytes = 0;
	int64_t first = 0;
	int ret = -1, rc;

	stmt = store_stmt(st, STORE_STMT_SINK_PRUNE_STRADDLING,
		"SELECT first_id FROM sample_blocks"
		" WHERE first_id <= ?1 AND last_id > ?1 AND time_ns < ?2", err);
	if (!stmt)
		return -1;
	sqlite3_bind_int64(stmt, 1, clamp_i64(upto));
	sqlite3_bind_int64(stmt, 2, before_ns);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		first = sqlite3_column_int64(stmt, 0);
	else if (rc != SQLITE_DONE)
		store_fail(st, err, "cannot prune delivered samples");
	store_stmt_done(stmt);
	if (rc == SQLITE_ROW &&
	    store_samples_trim_block(st, first, upto - (uint64_t)first + 1, 0, &cut, &cut_bytes,
				     err) < 0)
		return -1;
	if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		ret = 0;
	*rows += cut;
	*bytes += cut_bytes;
	return ret;
}

int store_samples_prune_delivered(struct store *st, int64_t older_than_ms,
				  uint64_t *pruned, struct gerr *err)
{
	int64_t before_ns = older_than_ms > INT64_MAX / 1000000 ? INT64_MAX
								 : older_than_ms * 1000000;
	uint64_t upto = 0, rows = 0, bytes = 0;
	bool any = false;
	int ret = -1;

	*pruned = 0;
	store_lock(st);
	if (store_exec(st, "BEGIN IMMEDIATE", err) < 0)
		goto out;
	if (min_cursor(st, &upto, &any, err) < 0 ||
	    (any && upto && (prune_size(st, upto, before_ns, &rows, &bytes, err) < 0 ||
			     (rows && prune_rows(st, upto, before_ns, err) < 0) ||
			     prune_straddling(st, upto, before_ns, &rows, &bytes, err) < 0)) ||
	    store_exec(st, "COMMIT", err) < 0) {
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		goto out;
	}
	/* The buffer's cached size, when counted, follows the deletion. */
	if (st->samples_counted) {
		st->samples_rows -= rows < st->samples_rows ? rows : st->samples_rows;
		st->samples_bytes -= bytes < st->samples_bytes ? bytes : st->samples_bytes;
	}
	*pruned = rows;
	ret = 0;
out:
	store_unlock(st);
	return ret;
}

uint64_t store_sink_count(struct store *st)
{
	return store_count(st, STORE_STMT_SINK_COUNT,
			   "SELECT count(*) FROM sinks");
}
