/* managed: which file of --config-dir owns a probe or a sink. */
#include "store/store.h"
#include "store/store_int.h"

#include <stdio.h>

int store_managed_get(struct store *st, enum store_managed_kind kind, const char *name,
		      char *owner, size_t n, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1, rc;

	owner[0] = '\0';
	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_MANAGED_GET,
			  "SELECT owner FROM managed WHERE kind = ? AND name = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_int(stmt, 1, kind);
	sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		snprintf(owner, n, "%s", (const char *)sqlite3_column_text(stmt, 0));
		ret = 0;
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		store_fail(st, err, "cannot read the owner of %s", name);
	}
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_managed_set(struct store *st, enum store_managed_kind kind, const char *name,
		      const char *owner, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	store_lock(st);
	if (owner)
		stmt = store_stmt(st, STORE_STMT_MANAGED_SET,
				  "INSERT OR REPLACE INTO managed (kind, name, owner) VALUES (?, ?, ?)",
				  err);
	else
		stmt = store_stmt(st, STORE_STMT_MANAGED_CLEAR,
				  "DELETE FROM managed WHERE kind = ? AND name = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_int(stmt, 1, kind);
	sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
	if (owner)
		sqlite3_bind_text(stmt, 3, owner, -1, SQLITE_STATIC);
	if (sqlite3_step(stmt) != SQLITE_DONE)
		store_fail(st, err, "cannot record the owner of %s", name);
	else
		ret = 0;
	/* No rowid here, so no update hook: the summary's sinks carry owners. */
	if (kind == STORE_MANAGED_SINK)
		store_summary_stale(st, STORE_SUMMARY_SINKS);
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_managed_list(struct store *st,
		       int (*fn)(enum store_managed_kind kind, const char *name,
				 const char *owner, void *ctx),
		       void *ctx, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1, rc;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_MANAGED_LIST,
			  "SELECT kind, name, owner FROM managed ORDER BY kind, name", err);
	if (!stmt)
		goto out;
	ret = 0;
	while (ret == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW)
		ret = fn((enum store_managed_kind)sqlite3_column_int(stmt, 0),
			 (const char *)sqlite3_column_text(stmt, 1),
			 (const char *)sqlite3_column_text(stmt, 2), ctx);
	if (ret == 0 && rc != SQLITE_DONE)
		ret = store_fail(st, err, "cannot list the owned probes and sinks");
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}
