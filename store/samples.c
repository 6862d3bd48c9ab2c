/* samples: measured values, append-only, waiting for the sinks.
 *
 * The buffer's row count and payload bytes are counted once and then kept
 * in struct store, so that an append knows whether it crossed a bound
 * without scanning the table. They change only when a transaction
 * commits, which keeps them right when an append fails half way. */
#include "store/store.h"
#include "store/store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "proto/graind.pb-c.h"
#include "server/util/log.h"

#define SAMPLES_DEFAULT_MAX_ROWS  1000000ULL
#define SAMPLES_DEFAULT_MAX_BYTES (256ULL << 20)

/* The packed payloads of the rows of one INSERT, reused by the next. */
struct pack_buf {
	uint8_t *data;
	size_t cap;
};

/* What a batch did to the buffer, applied to the cache once it commits. */
struct batch_delta {
	uint64_t added_rows, added_bytes;
	uint64_t dropped_rows, dropped_bytes;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const char *or_empty(const char *s)
{
	return s ? s : "";
}

void store_samples_set_bounds(struct store *st, uint64_t max_rows, uint64_t max_bytes)
{
	store_lock(st);
	if (max_rows)
		st->samples_max_rows = max_rows;
	if (max_bytes)
		st->samples_max_bytes = max_bytes;
	store_unlock(st);
}

/* Count the buffer once; from then on append keeps the count. Lock held. */
static int samples_counted(struct store *st, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (st->samples_counted)
		return 0;
	/* length() of a blob reads the record header, not the blob. */
	stmt = store_stmt(st, STORE_STMT_SAMPLE_COUNT,
		"SELECT count(*), coalesce(sum(length(payload)), 0) FROM samples",
		err);
	if (!stmt)
		return -1;
	if (sqlite3_step(stmt) != SQLITE_ROW) {
		store_fail(st, err, "cannot count samples");
		goto out;
	}
	st->samples_rows = (uint64_t)sqlite3_column_int64(stmt, 0);
	st->samples_bytes = (uint64_t)sqlite3_column_int64(stmt, 1);
	st->samples_counted = true;
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

/* Rows per INSERT statement: one statement for many rows shares the
 * statement's fixed cost (AUTOINCREMENT reads and writes sqlite_sequence
 * at every statement) between them. The tail of a batch goes one row at
 * a time. */
#define ROWS_PER_INSERT 32
#define COLUMNS_PER_ROW 7

/* "INSERT ... VALUES (?, ...), (?, ...)" for `rows` rows into sql. */
static void insert_sql(char *sql, size_t size, unsigned rows)
{
	size_t used;

	used = snprintf(sql, size, "INSERT INTO samples"
			" (probe, map, time_ns, kind, name, value, payload) VALUES ");
	for (unsigned i = 0; i < rows && used < size; i++)
		used += snprintf(sql + used, size - used, "%s(?, ?, ?, ?, ?, ?, ?)",
				 i ? ", " : "");
}

static sqlite3_stmt *insert_stmt(struct store *st, unsigned rows, struct gerr *err)
{
	char sql[128 + ROWS_PER_INSERT * 24];

	insert_sql(sql, sizeof(sql), rows);
	return store_stmt(st, rows == 1 ? STORE_STMT_SAMPLE_INSERT
					: STORE_STMT_SAMPLE_INSERT_MANY, sql, err);
}

/* Pack the samples, without their ids, one after the other into buf. */
static int pack_samples(Graind__Sample **samples, unsigned rows, struct pack_buf *buf,
			size_t *lens, struct gerr *err)
{
	size_t total = 0, at = 0;
	uint8_t *grown;

	for (unsigned i = 0; i < rows; i++) {
		samples[i]->id = 0;
		lens[i] = graind__sample__get_packed_size(samples[i]);
		total += lens[i];
	}
	if (total > buf->cap) {
		grown = realloc(buf->data, total);
		if (!grown)
			return gerr_set(err, 500, "out of memory packing %zu bytes of samples",
					total);
		buf->data = grown;
		buf->cap = total;
	}
	for (unsigned i = 0; i < rows; i++)
		at += graind__sample__pack(samples[i], buf->data + at);
	return 0;
}

static int bind_sample(sqlite3_stmt *stmt, int col, const Graind__Sample *s,
		       int64_t time_ns, const uint8_t *payload, size_t len)
{
	if (sqlite3_bind_text(stmt, col + 1, or_empty(s->probe), -1, SQLITE_STATIC) ||
	    sqlite3_bind_text(stmt, col + 2, or_empty(s->map), -1, SQLITE_STATIC) ||
	    sqlite3_bind_int64(stmt, col + 3, time_ns) ||
	    sqlite3_bind_int(stmt, col + 4, (int)s->kind) ||
	    sqlite3_bind_text(stmt, col + 5, or_empty(s->name), -1, SQLITE_STATIC) ||
	    sqlite3_bind_double(stmt, col + 6, s->value) ||
	    sqlite3_bind_blob64(stmt, col + 7, payload, len, SQLITE_STATIC))
		return -1;
	return 0;
}

/* Insert `rows` samples with one statement and give them their ids:
 * consecutive, as the rows of one INSERT take them in order. */
static int insert_rows(struct store *st, sqlite3_stmt *stmt, Graind__Sample **samples,
		       unsigned rows, int64_t time_ns, struct pack_buf *buf,
		       struct batch_delta *delta, struct gerr *err)
{
	size_t lens[ROWS_PER_INSERT], at = 0;
	uint64_t last;

	if (pack_samples(samples, rows, buf, lens, err) < 0)
		return -1;
	sqlite3_reset(stmt);
	for (unsigned i = 0; i < rows; i++) {
		if (bind_sample(stmt, i * COLUMNS_PER_ROW, samples[i], time_ns,
				buf->data + at, lens[i]) < 0)
			goto fail;
		at += lens[i];
	}
	if (sqlite3_step(stmt) != SQLITE_DONE)
		goto fail;
	last = (uint64_t)sqlite3_last_insert_rowid(st->db);
	for (unsigned i = 0; i < rows; i++)
		samples[i]->id = last - (rows - 1) + i;
	delta->added_rows += rows;
	delta->added_bytes += at;
	return 0;
fail:
	return store_fail(st, err, "cannot store samples of probe %.64s%s",
			  or_empty(samples[0]->probe), rows > 1 ? " and others" : "");
}

/* Insert every sample of the batch. time_ns is when the store received
 * them: the sample's own time stays, as given, in the payload. */
static int insert_all(struct store *st, Graind__Sample **samples, size_t n,
		      struct batch_delta *delta, struct gerr *err)
{
	struct pack_buf buf = { 0 };
	int64_t time_ns = now_ns();
	sqlite3_stmt *many = NULL, *one = NULL;
	size_t i = 0;
	int ret = -1;

	if (n >= ROWS_PER_INSERT) {
		many = insert_stmt(st, ROWS_PER_INSERT, err);
		if (!many)
			goto out;
		for (; n - i >= ROWS_PER_INSERT; i += ROWS_PER_INSERT)
			if (insert_rows(st, many, samples + i, ROWS_PER_INSERT, time_ns,
					&buf, delta, err) < 0)
				goto out;
	}
	if (i < n) {
		one = insert_stmt(st, 1, err);
		if (!one)
			goto out;
		for (; i < n; i++)
			if (insert_rows(st, one, samples + i, 1, time_ns, &buf, delta,
					err) < 0)
				goto out;
	}
	ret = 0;
out:
	store_stmt_done(many);
	store_stmt_done(one);
	free(buf.data);
	return ret;
}

/* Find the newest id that must go for the buffer to hold at most
 * `rows` rows less and `bytes` bytes less, walking from the oldest row:
 * the walk is as long as what it deletes. *cut is 0 when nothing needs
 * to go. */
static int find_cut(struct store *st, uint64_t rows, uint64_t bytes, int64_t *cut,
		    struct batch_delta *delta, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1, rc;

	*cut = 0;
	if (!rows && !bytes)
		return 0;
	stmt = store_stmt(st, STORE_STMT_SAMPLE_OLDEST,
		"SELECT id, length(payload) FROM samples ORDER BY id", err);
	if (!stmt)
		return -1;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		*cut = sqlite3_column_int64(stmt, 0);
		delta->dropped_rows++;
		delta->dropped_bytes += (uint64_t)sqlite3_column_int64(stmt, 1);
		if (delta->dropped_rows >= rows && delta->dropped_bytes >= bytes)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		store_fail(st, err, "cannot find the oldest samples");
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

/* Add the rows with id <= cut to their probe's drop count. */
static int count_drops(struct store *st, int64_t cut, struct gerr *err)
{
	sqlite3_stmt *by_probe, *add = NULL;
	int ret = -1, rc;

	/* NOT INDEXED: walk the id range and sort its probes, rather than
	 * walk the whole samples_by_probe index to skip the sort. */
	by_probe = store_stmt(st, STORE_STMT_SAMPLE_DROPS_BY_PROBE,
		"SELECT probe, count(*) FROM samples NOT INDEXED WHERE id <= ?"
		" GROUP BY probe", err);
	if (!by_probe)
		return -1;
	add = store_stmt(st, STORE_STMT_SAMPLE_DROP_ADD,
		"INSERT INTO sample_drops (probe, count) VALUES (?, ?)"
		" ON CONFLICT (probe) DO UPDATE SET count = count + excluded.count", err);
	if (!add)
		goto out;
	sqlite3_bind_int64(by_probe, 1, cut);
	while ((rc = sqlite3_step(by_probe)) == SQLITE_ROW) {
		sqlite3_bind_value(add, 1, sqlite3_column_value(by_probe, 0));
		sqlite3_bind_int64(add, 2, sqlite3_column_int64(by_probe, 1));
		if (sqlite3_step(add) != SQLITE_DONE) {
			store_fail(st, err, "cannot count dropped samples");
			goto out;
		}
		sqlite3_reset(add);
	}
	if (rc != SQLITE_DONE) {
		store_fail(st, err, "cannot count dropped samples");
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(add);
	store_stmt_done(by_probe);
	return ret;
}

static int delete_upto(struct store *st, int64_t cut, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = 0;

	stmt = store_stmt(st, STORE_STMT_SAMPLE_DELETE_UPTO,
			  "DELETE FROM samples WHERE id <= ?", err);
	if (!stmt)
		return -1;
	sqlite3_bind_int64(stmt, 1, cut);
	if (sqlite3_step(stmt) != SQLITE_DONE)
		ret = store_fail(st, err, "cannot drop the oldest samples");
	store_stmt_done(stmt);
	return ret;
}

static uint64_t over(uint64_t have, uint64_t bound)
{
	return have > bound ? have - bound : 0;
}

/* Drop the oldest rows until the buffer, grown by delta, is within its
 * bounds. Inside the append's transaction. */
static int enforce_bounds(struct store *st, struct batch_delta *delta, struct gerr *err)
{
	uint64_t max_rows = st->samples_max_rows ? st->samples_max_rows
						 : SAMPLES_DEFAULT_MAX_ROWS;
	uint64_t max_bytes = st->samples_max_bytes ? st->samples_max_bytes
						   : SAMPLES_DEFAULT_MAX_BYTES;
	uint64_t rows = st->samples_rows + delta->added_rows;
	uint64_t bytes = st->samples_bytes + delta->added_bytes;
	int64_t cut;

	if (find_cut(st, over(rows, max_rows), over(bytes, max_bytes), &cut,
		     delta, err) < 0)
		return -1;
	if (!cut)
		return 0;
	if (count_drops(st, cut, err) < 0 || delete_upto(st, cut, err) < 0)
		return -1;
	return 0;
}

int store_samples_append(struct store *st, Graind__Sample **samples, size_t n,
			 struct gerr *err)
{
	struct batch_delta delta = { 0 };
	int ret = -1;

	if (!n)
		return 0;
	store_lock(st);
	if (store_exec(st, "BEGIN IMMEDIATE", err) < 0)
		goto out;
	if (samples_counted(st, err) < 0 ||
	    insert_all(st, samples, n, &delta, err) < 0 ||
	    enforce_bounds(st, &delta, err) < 0 ||
	    store_exec(st, "COMMIT", err) < 0) {
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		goto out;
	}
	st->samples_rows += delta.added_rows - delta.dropped_rows;
	st->samples_bytes += delta.added_bytes - delta.dropped_bytes;
	ret = 0;
out:
	store_unlock(st);
	if (ret < 0)
		for (size_t i = 0; i < n; i++)
			samples[i]->id = 0;
	return ret;
}

/* The sample of the current row, its id restored; NULL when the payload
 * does not unpack. */
static Graind__Sample *sample_from_row(sqlite3_stmt *stmt)
{
	const uint8_t *payload = sqlite3_column_blob(stmt, 1);
	size_t len = (size_t)sqlite3_column_bytes(stmt, 1);
	Graind__Sample *s;

	s = graind__sample__unpack(NULL, len, payload ? payload : (const uint8_t *)"");
	if (s)
		s->id = (uint64_t)sqlite3_column_int64(stmt, 0);
	return s;
}

static sqlite3_stmt *list_stmt(struct store *st, const char *probe, const char *map,
			       uint64_t after, unsigned limit, struct gerr *err)
{
	sqlite3_stmt *stmt;

	/* One row past the page tells whether there is another page. */
	if (probe && *probe) {
		stmt = store_stmt(st, STORE_STMT_SAMPLE_LIST_BY_PROBE,
			"SELECT id, payload FROM samples INDEXED BY samples_by_probe"
			" WHERE probe = ?1 AND id > ?2 AND (?3 IS NULL OR map = ?3)"
			" ORDER BY id LIMIT ?4", err);
		if (stmt)
			sqlite3_bind_text(stmt, 1, probe, -1, SQLITE_STATIC);
	} else {
		stmt = store_stmt(st, STORE_STMT_SAMPLE_LIST,
			"SELECT id, payload FROM samples"
			" WHERE id > ?2 AND (?3 IS NULL OR map = ?3)"
			" ORDER BY id LIMIT ?4", err);
	}
	if (!stmt)
		return NULL;
	sqlite3_bind_int64(stmt, 2, (sqlite3_int64)(after > INT64_MAX ? INT64_MAX : after));
	if (map && *map)
		sqlite3_bind_text(stmt, 3, map, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 4, (sqlite3_int64)limit + 1);
	return stmt;
}

int store_samples_list(struct store *st, const char *probe, const char *map,
		       uint64_t after, unsigned limit,
		       int (*fn)(const Graind__Sample *s, void *ctx), void *ctx,
		       bool *more, struct gerr *err)
{
	Graind__Sample *s;
	sqlite3_stmt *stmt;
	unsigned seen = 0;
	int ret = -1, rc;

	*more = false;
	store_lock(st);
	stmt = list_stmt(st, probe, map, after, limit, err);
	if (!stmt)
		goto out;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (seen++ == limit) {
			*more = true;
			break;
		}
		s = sample_from_row(stmt);
		if (!s) {
			gerr_set(err, 500, "sample %lld in the store is corrupt; delete it",
				 (long long)sqlite3_column_int64(stmt, 0));
			goto out;
		}
		rc = fn(s, ctx);
		graind__sample__free_unpacked(s, NULL);
		if (rc) {
			ret = rc;
			goto out;
		}
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		store_fail(st, err, "cannot list samples");
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

/* The cached totals; 0 when the buffer cannot be counted (logged). */
static uint64_t samples_total(struct store *st, bool bytes)
{
	struct gerr err;
	uint64_t n = 0;

	store_lock(st);
	if (samples_counted(st, &err) == 0)
		n = bytes ? st->samples_bytes : st->samples_rows;
	else
		log_error("msg=\"cannot count samples\" error=\"%s\"", err.msg);
	store_unlock(st);
	return n;
}

uint64_t store_sample_count(struct store *st)
{
	return samples_total(st, false);
}

uint64_t store_sample_bytes(struct store *st)
{
	return samples_total(st, true);
}

/* AUTOINCREMENT remembers the highest id in sqlite_sequence, also when
 * the rows themselves are gone. */
uint64_t store_sample_last_id(struct store *st)
{
	return store_count(st, STORE_STMT_SAMPLE_LAST_ID,
		"SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'samples'");
}

int store_sample_drops(struct store *st,
		       int (*fn)(const char *probe, uint64_t dropped, void *ctx), void *ctx)
{
	sqlite3_stmt *stmt;
	struct gerr err;
	int ret = -1, rc;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_SAMPLE_DROPS,
		"SELECT probe, count FROM sample_drops ORDER BY probe", &err);
	if (!stmt) {
		log_error("msg=\"cannot read sample drops\" error=\"%s\"", err.msg);
		goto out;
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		rc = fn((const char *)sqlite3_column_text(stmt, 0),
			(uint64_t)sqlite3_column_int64(stmt, 1), ctx);
		if (rc) {
			ret = rc;
			goto out;
		}
	}
	if (rc != SQLITE_DONE) {
		log_error("msg=\"cannot read sample drops\" error=\"%s\"",
			  sqlite3_errmsg(st->db));
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}
