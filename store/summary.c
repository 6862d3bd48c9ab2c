/* summary: the store's figures, for readers that must not wait for it.
 *
 * A status page, and an event loop that answers one, must not queue
 * behind a commit waiting for the disk. So whoever holds the lock when a
 * change ends republishes what changed before letting go (store_unlock):
 * the counts of objects and probes, the sample buffer's totals, the size
 * of the database and every sink with its owner. Readers copy them under
 * a lock of their own, held only for the copy; a writer's change is
 * published before its call returns, so a caller reads its own writes.
 *
 * What changed is told by SQLite's update hook, for every row written
 * through this connection whatever statement wrote it; the managed and
 * object_signatures tables have no rowid, so their writers say so
 * themselves (store_summary_stale),
 * and the WAL hook tells of every commit, which moves the file sizes. A
 * figure that cannot be read again stays as it was and is read at the
 * next change. What another connection changes (an operator's sqlite3
 * shell) shows with graind's next change of the same kind. */
#include "store/store.h"
#include "store/store_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct store_summary_sink {
	struct store_sink row;
	char *owner;                    /* "" when nobody owns the sink */
};

static void sinks_free(struct store_summary_sink *sinks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		store_sink_clear(&sinks[i].row);
		free(sinks[i].owner);
	}
	free(sinks);
}

static void on_row_written(void *ctx, int op, const char *db, const char *table,
			   sqlite3_int64 rowid)
{
	struct store *st = ctx;

	(void)op;
	(void)db;
	(void)rowid;
	if (!strcmp(table, "objects"))
		st->summary_stale |= STORE_SUMMARY_OBJECTS;
	else if (!strcmp(table, "probes"))
		st->summary_stale |= STORE_SUMMARY_PROBES;
	else if (!strcmp(table, "sinks"))
		st->summary_stale |= STORE_SUMMARY_SINKS;
}

void store_summary_open(struct store *st)
{
	static atomic_uint_fast64_t opened;

	pthread_mutex_init(&st->summary_lock, NULL);
	st->summary.instance = atomic_fetch_add(&opened, 1) + 1;
	sqlite3_update_hook(st->db, on_row_written, st);
	st->summary_kept = true;
	st->summary_stale = STORE_SUMMARY_ALL;
	store_lock(st);
	store_unlock(st);
}

void store_summary_close(struct store *st)
{
	if (!st->summary_kept)
		return;
	sinks_free(st->summary_sinks, st->summary_n_sinks);
	pthread_mutex_destroy(&st->summary_lock);
}

void store_summary_stale(struct store *st, unsigned what)
{
	st->summary_stale |= what;
}

/* Lock held. false when the count cannot be read. */
static bool count_rows(struct store *st, enum store_stmt_id id, const char *sql, uint64_t *n)
{
	struct gerr err;
	sqlite3_stmt *stmt = store_stmt(st, id, sql, &err);
	bool ok = stmt && sqlite3_step(stmt) == SQLITE_ROW;

	if (ok)
		*n = (uint64_t)sqlite3_column_int64(stmt, 0);
	store_stmt_done(stmt);
	return ok;
}

/* Lock held: every sink, by name, with its owner. */
static bool read_sinks(struct store *st, struct store_summary_sink **out, size_t *n)
{
	struct store_summary_sink *sinks = NULL;
	struct gerr err;
	sqlite3_stmt *stmt;
	size_t count = 0;
	int rc = SQLITE_ERROR;

	stmt = store_stmt(st, STORE_STMT_SINK_LIST,
			  "SELECT " STORE_SINK_COLUMNS ", coalesce(m.owner, '') FROM sinks"
			  " LEFT JOIN managed m ON m.kind = ? AND m.name = sinks.name"
			  " ORDER BY sinks.name", &err);
	if (stmt)
		sqlite3_bind_int(stmt, 1, STORE_MANAGED_SINK);
	while (stmt && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		struct store_summary_sink *grown = realloc(sinks, (count + 1) * sizeof(*grown));

		if (!grown)
			break;
		sinks = grown;
		if (store_sink_from_stmt(stmt, &sinks[count].row, &err) < 0)
			break;
		sinks[count].owner = strdup((const char *)sqlite3_column_text(stmt, STORE_SINK_NCOLUMNS));
		if (!sinks[count].owner) {
			store_sink_clear(&sinks[count].row);
			break;
		}
		count++;
	}
	store_stmt_done(stmt);
	if (rc != SQLITE_DONE) {
		sinks_free(sinks, count);
		return false;
	}
	*out = sinks;
	*n = count;
	return true;
}

static uint64_t file_bytes(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

void store_summary_publish(struct store *st)
{
	struct store_summary next;
	struct store_summary_sink *sinks = NULL, *old_sinks = NULL;
	size_t n_sinks = 0, n_old_sinks = 0;
	unsigned stale = st->summary_stale, failed = 0;
	struct gerr err;

	if (!st->summary_kept)
		return;
	/* Only lock holders write it: reading it here needs no summary_lock. */
	next = st->summary;
	if (!st->samples_counted && store_samples_counted(st, &err) < 0)
		failed |= STORE_SUMMARY_SAMPLES;
	if (st->samples_counted) {
		next.samples = st->samples_rows;
		next.sample_bytes = st->samples_bytes;
		next.last_sample_id = st->samples_last_id;
	}
	if (!stale && !failed && !memcmp(&next, &st->summary, sizeof(next)))
		return;
	if (stale & STORE_SUMMARY_OBJECTS)
		next.objects_version++;
	if ((stale & STORE_SUMMARY_OBJECTS) &&
	    !count_rows(st, STORE_STMT_OBJECT_COUNT, "SELECT count(*) FROM objects", &next.objects))
		failed |= STORE_SUMMARY_OBJECTS;
	if ((stale & STORE_SUMMARY_PROBES) &&
	    !count_rows(st, STORE_STMT_PROBE_COUNT, "SELECT count(*) FROM probes", &next.probes))
		failed |= STORE_SUMMARY_PROBES;
	if ((stale & STORE_SUMMARY_SINKS) && !read_sinks(st, &sinks, &n_sinks))
		failed |= STORE_SUMMARY_SINKS;
	if (stale & STORE_SUMMARY_SIZE) {
		char wal[4096];

		snprintf(wal, sizeof(wal), "%s-wal", st->path);
		next.db_bytes = file_bytes(st->path) + file_bytes(wal);
	}
	if ((stale & STORE_SUMMARY_SINKS) && !(failed & STORE_SUMMARY_SINKS))
		next.sinks = n_sinks;
	next.version++;
	pthread_mutex_lock(&st->summary_lock);
	st->summary = next;
	if ((stale & STORE_SUMMARY_SINKS) && !(failed & STORE_SUMMARY_SINKS)) {
		old_sinks = st->summary_sinks;
		n_old_sinks = st->summary_n_sinks;
		st->summary_sinks = sinks;
		st->summary_n_sinks = n_sinks;
	}
	pthread_mutex_unlock(&st->summary_lock);
	sinks_free(old_sinks, n_old_sinks);
	st->summary_stale = failed & ~STORE_SUMMARY_SAMPLES;
}

void store_summary_get(struct store *st, struct store_summary *out)
{
	if (!st->summary_kept) {
		memset(out, 0, sizeof(*out));
		return;
	}
	pthread_mutex_lock(&st->summary_lock);
	*out = st->summary;
	pthread_mutex_unlock(&st->summary_lock);
}

/* A copy of one sink of the summary, into an array cleared before. */
static int sink_copy(const struct store_summary_sink *from, struct store_summary_sink *to)
{
	to->row = from->row;
	to->row.config = malloc(from->row.config_len ? from->row.config_len : 1);
	to->row.last_error = strdup(from->row.last_error);
	to->owner = strdup(from->owner);
	if (!to->row.config || !to->row.last_error || !to->owner)
		return -1;
	memcpy(to->row.config, from->row.config, from->row.config_len);
	return 0;
}

int store_sink_list(struct store *st,
		    int (*fn)(const struct store_sink *sink, const char *owner, void *ctx),
		    void *ctx)
{
	struct store_summary_sink *copy;
	size_t n = 0;
	int rc = 0;

	if (!st->summary_kept)
		return 0;
	/* Copied out, so that fn may take its time and call the store. */
	pthread_mutex_lock(&st->summary_lock);
	copy = calloc(st->summary_n_sinks ? st->summary_n_sinks : 1, sizeof(*copy));
	for (; copy && n < st->summary_n_sinks && rc == 0; n++)
		rc = sink_copy(&st->summary_sinks[n], &copy[n]);
	pthread_mutex_unlock(&st->summary_lock);
	if (!copy)
		return -1;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = fn(&copy[i].row, copy[i].owner, ctx);
	sinks_free(copy, n);
	return rc;
}
