/* audit: one record per change made through the API, queued and written
 * in batches, bounded by rows and age (see store.h). */
#include "store/store.h"
#include "store/store_int.h"

#include <stdlib.h>
#include <string.h>

#include "server/util/log.h"

/* Rows one pruning statement deletes at most, so that a large backlog
 * (a lowered bound, an old database) never holds the store for long. */
#define AUDIT_PRUNE_CHUNK 10000

/* A record waiting to be written: one allocation, strings after it. */
struct store_audit_queued {
	int64_t time_ms;
	int result;
	const char *role, *principal, *action, *target, *message;
	char text[];
};

static const char *text_or_empty(const char *s)
{
	return s ? s : "";
}

static struct store_audit_queued *queued_new(const char *role, const char *principal,
					     const char *action, const char *target, int result,
					     const char *message)
{
	const char *src[5] = { text_or_empty(role), text_or_empty(action),
			       text_or_empty(target), text_or_empty(message),
			       text_or_empty(principal) };
	const char **dst[5];
	struct store_audit_queued *q;
	size_t len[5], total = 0;
	char *p;

	for (int i = 0; i < 5; i++)
		total += (len[i] = strlen(src[i])) + 1;
	q = malloc(sizeof(*q) + total);
	if (!q)
		return NULL;
	q->time_ms = store_now_ms();
	q->result = result;
	dst[0] = &q->role;
	dst[1] = &q->action;
	dst[2] = &q->target;
	dst[3] = &q->message;
	dst[4] = &q->principal;
	p = q->text;
	for (int i = 0; i < 5; i++) {
		memcpy(p, src[i], len[i] + 1);
		*dst[i] = p;
		p += len[i] + 1;
	}
	return q;
}

static uint64_t max_rows(const struct store *st)
{
	return st->audit_max_rows ? st->audit_max_rows : STORE_AUDIT_DEFAULT_MAX_ROWS;
}

void store_audit_set_bounds(struct store *st, uint64_t rows)
{
	store_lock(st);
	if (rows)
		st->audit_max_rows = rows;
	store_unlock(st);
}

void store_audit_set_notify(struct store *st, void (*fn)(void *ctx), void *ctx)
{
	store_lock(st);
	st->audit_notify = fn;
	st->audit_notify_ctx = ctx;
	store_unlock(st);
}

/* Delete the oldest records more than the bound behind the newest id, at
 * most AUDIT_PRUNE_CHUNK of them: two lookups on the primary key and a
 * range of it, however large the table. Lock held. */
static int trim_rows(struct store *st, uint64_t *deleted, struct gerr *err)
{
	uint64_t bound = max_rows(st);
	sqlite3_stmt *stmt;
	int ret = -1;

	*deleted = 0;
	stmt = store_stmt(st, STORE_STMT_AUDIT_TRIM_ROWS,
		"DELETE FROM audit WHERE id <= min((SELECT max(id) FROM audit) - ?,"
		" (SELECT min(id) FROM audit) + ? - 1)", err);
	if (!stmt)
		goto out;
	sqlite3_bind_int64(stmt, 1, bound > INT64_MAX ? INT64_MAX : (sqlite3_int64)bound);
	sqlite3_bind_int64(stmt, 2, AUDIT_PRUNE_CHUNK);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		store_fail(st, err, "cannot prune the audit log");
		goto out;
	}
	*deleted = (uint64_t)sqlite3_changes(st->db);
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

/* The same for records older than older_than_ms, through audit_by_time.
 * Lock held. */
static int trim_age(struct store *st, int64_t older_than_ms, uint64_t *deleted,
		    struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	*deleted = 0;
	stmt = store_stmt(st, STORE_STMT_AUDIT_TRIM_AGE,
		"DELETE FROM audit WHERE id IN (SELECT id FROM audit"
		" WHERE time_ms < ? ORDER BY time_ms LIMIT ?)", err);
	if (!stmt)
		goto out;
	sqlite3_bind_int64(stmt, 1, older_than_ms);
	sqlite3_bind_int64(stmt, 2, AUDIT_PRUNE_CHUNK);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		store_fail(st, err, "cannot prune the audit log");
		goto out;
	}
	*deleted = (uint64_t)sqlite3_changes(st->db);
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

static int insert_queued(struct store *st, struct gerr *err)
{
	const struct store_audit_queued *q;
	sqlite3_stmt *stmt;
	int ret = -1;

	stmt = store_stmt(st, STORE_STMT_AUDIT_APPEND,
		"INSERT INTO audit (time_ms, role, action, target, result, message, principal)"
		" VALUES (?, ?, ?, ?, ?, ?, ?)", err);
	if (!stmt)
		goto out;
	for (size_t i = 0; i < st->audit_queued; i++) {
		q = st->audit_queue[i];
		sqlite3_bind_int64(stmt, 1, q->time_ms);
		sqlite3_bind_text(stmt, 2, q->role, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 3, q->action, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 4, q->target, -1, SQLITE_STATIC);
		sqlite3_bind_int(stmt, 5, q->result);
		sqlite3_bind_text(stmt, 6, q->message, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 7, q->principal, -1, SQLITE_STATIC);
		if (sqlite3_step(stmt) != SQLITE_DONE) {
			store_fail(st, err, "cannot append audit record");
			goto out;
		}
		sqlite3_reset(stmt);
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

static void queue_free(struct store *st)
{
	for (size_t i = 0; i < st->audit_queued; i++)
		free(st->audit_queue[i]);
	st->audit_queued = 0;
}

/* The queue in one transaction, the row bound applied in it. Lock held. */
static int flush_locked(struct store *st, struct gerr *err)
{
	uint64_t deleted;

	if (!st->audit_queued)
		return 0;
	if (store_exec(st, "BEGIN IMMEDIATE", err) < 0)
		return -1;
	if (insert_queued(st, err) < 0 || trim_rows(st, &deleted, err) < 0 ||
	    store_exec(st, "COMMIT", err) < 0) {
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	st->audit_pruned += deleted;
	queue_free(st);
	return 0;
}

int store_audit_flush(struct store *st, struct gerr *err)
{
	int ret;

	store_lock(st);
	ret = flush_locked(st, err);
	store_unlock(st);
	return ret;
}

void store_audit_drain(struct store *st)
{
	struct gerr err;

	if (flush_locked(st, &err) < 0)
		log_error("msg=\"audit records lost at close\" records=%zu error=\"%s\"",
			  st->audit_queued, err.msg);
	queue_free(st);
}

int store_audit_append(struct store *st, const char *role, const char *principal,
		       const char *action, const char *target, int result, const char *message,
		       struct gerr *err)
{
	struct store_audit_queued *q;
	int ret = -1;

	store_lock(st);
	if (st->audit_queued == STORE_AUDIT_QUEUE_MAX && flush_locked(st, err) < 0)
		goto out;
	q = queued_new(role, principal, action, target, result, message);
	if (!q) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	if (!st->audit_queued && st->audit_notify)
		st->audit_notify(st->audit_notify_ctx);
	st->audit_queue[st->audit_queued++] = q;
	ret = 0;
out:
	store_unlock(st);
	return ret;
}

int store_audit_prune(struct store *st, int64_t older_than_ms, uint64_t *pruned,
		      struct gerr *err)
{
	uint64_t deleted;
	int ret;

	*pruned = 0;
	do {
		store_lock(st);
		ret = trim_rows(st, &deleted, err);
		st->audit_pruned += deleted;
		store_unlock(st);
		*pruned += deleted;
	} while (ret == 0 && deleted == AUDIT_PRUNE_CHUNK);
	while (ret == 0 && older_than_ms) {
		store_lock(st);
		ret = trim_age(st, older_than_ms, &deleted, err);
		st->audit_pruned += deleted;
		store_unlock(st);
		*pruned += deleted;
		if (deleted < AUDIT_PRUNE_CHUNK)
			break;
	}
	return ret;
}

uint64_t store_audit_pruned(struct store *st)
{
	uint64_t n;

	store_lock(st);
	n = st->audit_pruned;
	store_unlock(st);
	return n;
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
	rec->principal = text_or_empty((const char *)sqlite3_column_text(stmt, 7));
}

int store_audit_list(struct store *st, uint64_t cursor, unsigned limit, bool newest_first,
		     int (*fn)(const struct store_audit *rec, void *ctx),
		     void *ctx, bool *more, struct gerr *err)
{
	struct store_audit rec;
	sqlite3_stmt *stmt = NULL;
	struct gerr ferr;
	unsigned seen = 0;
	int ret = -1, rc;

	*more = false;
	store_lock(st);
	/* What cannot be written now stays queued; list what is written. */
	if (flush_locked(st, &ferr) < 0)
		log_error("msg=\"cannot write audit records\" records=%zu error=\"%s\"",
			  st->audit_queued, ferr.msg);
	stmt = newest_first
		? store_stmt(st, STORE_STMT_AUDIT_LIST_NEWEST,
			     "SELECT id, time_ms, role, action, target, result, message, principal"
			     " FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?", err)
		: store_stmt(st, STORE_STMT_AUDIT_LIST,
			     "SELECT id, time_ms, role, action, target, result, message, principal"
			     " FROM audit WHERE id > ? ORDER BY id LIMIT ?", err);
	if (!stmt)
		goto out;
	/* Ids are positive and below 2^63: larger cursors match nothing, or
	 * everything from the newest. */
	if (newest_first && cursor == 0)
		cursor = INT64_MAX;
	sqlite3_bind_int64(stmt, 1, cursor > INT64_MAX ? INT64_MAX : (sqlite3_int64)cursor);
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
