/* audit: one record per change made through the API. */
#include "store/store.h"
#include "store/store_int.h"

static const char *text_or_empty(const char *s)
{
	return s ? s : "";
}

int store_audit_append(struct store *st, const char *role, const char *action,
		       const char *target, int result, const char *message,
		       struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_AUDIT_APPEND,
		"INSERT INTO audit (time_ms, role, action, target, result, message)"
		" VALUES (?, ?, ?, ?, ?, ?)", err);
	if (!stmt)
		goto out;
	sqlite3_bind_int64(stmt, 1, store_now_ms());
	sqlite3_bind_text(stmt, 2, text_or_empty(role), -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 3, text_or_empty(action), -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 4, text_or_empty(target), -1, SQLITE_STATIC);
	sqlite3_bind_int(stmt, 5, result);
	sqlite3_bind_text(stmt, 6, text_or_empty(message), -1, SQLITE_STATIC);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		store_fail(st, err, "cannot append audit record");
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

static void audit_from_row(sqlite3_stmt *stmt, struct store_audit *rec)
{
	rec->id = (uint64_t)sqlite3_column_int64(stmt, 0);
	rec->time_ms = sqlite3_column_int64(stmt, 1);
	rec->role = text_or_empty((const char *)sqlite3_column_text(stmt, 2));
	rec->action = text_or_empty((const char *)sqlite3_column_text(stmt, 3));
	rec->target = text_or_empty((const char *)sqlite3_column_text(stmt, 4));
	rec->result = sqlite3_column_int(stmt, 5);
	rec->message = text_or_empty((const char *)sqlite3_column_text(stmt, 6));
}

int store_audit_list(struct store *st, uint64_t after, unsigned limit,
		     int (*fn)(const struct store_audit *rec, void *ctx),
		     void *ctx, bool *more, struct gerr *err)
{
	struct store_audit rec;
	sqlite3_stmt *stmt;
	unsigned seen = 0;
	int ret = -1, rc;

	*more = false;
	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_AUDIT_LIST,
		"SELECT id, time_ms, role, action, target, result, message"
		" FROM audit WHERE id > ? ORDER BY id LIMIT ?", err);
	if (!stmt)
		goto out;
	/* Ids are positive and below 2^63: larger cursors match nothing. */
	sqlite3_bind_int64(stmt, 1, after > INT64_MAX ? INT64_MAX
						      : (sqlite3_int64)after);
	sqlite3_bind_int64(stmt, 2, (sqlite3_int64)limit + 1);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (seen++ == limit) {
			*more = true;
			break;
		}
		audit_from_row(stmt, &rec);
		rc = fn(&rec, ctx);
		if (rc) {
			ret = rc;
			goto out;
		}
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		store_fail(st, err, "cannot list audit records");
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}
