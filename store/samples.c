/* samples: measured values, append-only, waiting for the sinks.
 *
 * Samples are stored in blocks: one row holds a run of samples of one
 * probe and map with consecutive ids, packed one after the other (each
 * after its length as a varint; block.h tells the format). A row per
 * sample would cap the buffer at what SQLite inserts per second, well
 * below what ring buffers carry.
 *
 * The buffer's sample count and payload bytes are counted once and then
 * kept in struct store, so that an append knows whether it crossed a
 * bound without scanning the table. They change only when a transaction
 * commits, which keeps them right when an append fails half way.
 *
 * Every block carries a CRC-32 of its ids and payload, written with it and
 * checked whenever it is read: a damaged block is skipped by readers with
 * a gap, and dropped whole when the bound reaches it. */
#include "store/store.h"
#include "store/block.h"
#include "store/store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "proto/graind.pb-c.h"
#include "server/util/log.h"
#include "server/util/pbwire.h"

#define SAMPLES_DEFAULT_MAX_ROWS  1000000ULL
#define SAMPLES_DEFAULT_MAX_BYTES (256ULL << 20)

/* What a batch did to the buffer, applied to the cache once it commits. */
struct batch_delta {
	uint64_t added_rows, added_bytes;
	uint64_t dropped_rows, dropped_bytes;
	uint64_t last_id;
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

/* ---------------------------------------------------------------- framing */

void store_sample_run_share(struct pbwire *w, const void *fields, size_t len)
{
	block_share(w, fields, len);
}

void store_sample_frame(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	const void *blob = sqlite3_value_blob(argv[0]);
	size_t len = (size_t)sqlite3_value_bytes(argv[0]);
	uint8_t *out = malloc(len + 10);
	size_t at;

	(void)argc;
	if (!out) {
		sqlite3_result_error_nomem(ctx);
		return;
	}
	at = pbwire_varint_at(out, len);
	if (len)
		memcpy(out + at, blob, len);
	sqlite3_result_blob(ctx, out, (int)(at + len), free);
}

/* ---------------------------------------------------------------- checksum */

static void le64(uint8_t *out, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(v >> (8 * i));
}

uint32_t store_block_crc(uint64_t first_id, uint64_t last_id, const void *payload, size_t len)
{
	uint8_t ids[16];
	uLong crc = crc32(0L, Z_NULL, 0);

	le64(ids, first_id);
	le64(ids + 8, last_id);
	crc = crc32(crc, ids, sizeof(ids));
	/* zlib takes at most 4 GiB a call; blocks are far smaller. */
	crc = crc32(crc, payload ? payload : (const void *)"", (uInt)len);
	return (uint32_t)crc;
}

int64_t store_block_crc_column(sqlite3_stmt *stmt, int col)
{
	if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
		return -1;
	return (int64_t)(uint32_t)sqlite3_column_int64(stmt, col);
}

static void block_damage(struct store_damage *d, uint64_t first_id, uint64_t last_id,
			 const char *probe, const char *what)
{
	memset(d, 0, sizeof(*d));
	d->kind = STORE_DAMAGE_SAMPLES;
	d->first_id = first_id;
	d->last_id = last_id;
	snprintf(d->probe, sizeof(d->probe), "%s", or_empty(probe));
	snprintf(d->what, sizeof(d->what), "%s", what);
}

/* The checksum alone: what a reader checks before it walks a block. A
 * block from before checksums (crc -1) passes. */
static bool block_crc_ok(uint64_t first_id, uint64_t last_id, const char *probe,
			 const uint8_t *payload, size_t len, int64_t crc, struct store_damage *d)
{
	uint32_t got;
	char what[96];

	if (crc < 0)
		return true;
	got = store_block_crc(first_id, last_id, payload, len);
	if (got == (uint32_t)crc)
		return true;
	snprintf(what, sizeof(what), "checksum %08x, stored %08x", got, (uint32_t)crc);
	block_damage(d, first_id, last_id, probe, what);
	return false;
}

bool store_block_intact(uint64_t first_id, uint64_t last_id, const char *probe,
			const uint8_t *payload, size_t len, int64_t crc,
			struct store_damage *d)
{
	struct block_walk w = block_walk(payload, len);
	struct pbwire buf = { 0 };
	const uint8_t *own, *packed;
	size_t own_len, n;
	uint64_t count = 0;
	char what[96] = "";

	if (!block_crc_ok(first_id, last_id, probe, payload, len, crc, d))
		return false;
	while (!what[0] && block_next(&w, &own, &own_len)) {
		Graind__Sample *s;

		packed = block_sample(&w, own, own_len, &buf, &n);
		s = packed ? graind__sample__unpack(NULL, n, packed) : NULL;
		if (!s && !buf.failed)
			snprintf(what, sizeof(what), "sample %llu does not unpack",
				 (unsigned long long)(first_id + count));
		graind__sample__free_unpacked(s, NULL);
		count++;
	}
	pbwire_free(&buf);
	if (!what[0] && w.broken)
		snprintf(what, sizeof(what), "framing broken after %llu samples",
			 (unsigned long long)count);
	if (!what[0] && count != last_id - first_id + 1)
		snprintf(what, sizeof(what), "%llu samples for ids %llu..%llu",
			 (unsigned long long)count, (unsigned long long)first_id,
			 (unsigned long long)last_id);
	if (!what[0])
		return true;
	block_damage(d, first_id, last_id, probe, what);
	return false;
}

/* ---------------------------------------------------------------- size */

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
int store_samples_counted(struct store *st, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (st->samples_counted)
		return 0;
	/* length() of a blob reads the record header, not the blob. */
	stmt = store_stmt(st, STORE_STMT_SAMPLE_COUNT,
		"SELECT coalesce(sum(last_id - first_id + 1), 0),"
		" coalesce(sum(length(payload)), 0),"
		" (SELECT last_id FROM sample_ids) FROM sample_blocks", err);
	if (!stmt)
		return -1;
	if (sqlite3_step(stmt) != SQLITE_ROW) {
		store_fail(st, err, "cannot count samples");
		goto out;
	}
	st->samples_rows = (uint64_t)sqlite3_column_int64(stmt, 0);
	st->samples_bytes = (uint64_t)sqlite3_column_int64(stmt, 1);
	st->samples_last_id = (uint64_t)sqlite3_column_int64(stmt, 2);
	st->samples_counted = true;
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

/* ---------------------------------------------------------------- append */

static int insert_run(struct store *st, sqlite3_stmt *stmt, struct store_sample_run *run,
		      int64_t time_ns, struct batch_delta *delta, struct gerr *err)
{
	run->first_id = delta->last_id + 1;
	sqlite3_reset(stmt);
	if (sqlite3_bind_int64(stmt, 1, (sqlite3_int64)run->first_id) ||
	    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)(run->first_id + run->count - 1)) ||
	    sqlite3_bind_text(stmt, 3, or_empty(run->probe), -1, SQLITE_STATIC) ||
	    sqlite3_bind_text(stmt, 4, or_empty(run->map), -1, SQLITE_STATIC) ||
	    sqlite3_bind_int64(stmt, 5, time_ns) ||
	    sqlite3_bind_blob64(stmt, 6, run->data, run->len, SQLITE_STATIC) ||
	    sqlite3_bind_int64(stmt, 7, store_block_crc(run->first_id,
							 run->first_id + run->count - 1,
							 run->data, run->len)) ||
	    sqlite3_step(stmt) != SQLITE_DONE)
		return store_fail(st, err, "cannot store samples of probe %.64s",
				  or_empty(run->probe));
	delta->last_id += run->count;
	delta->added_rows += run->count;
	delta->added_bytes += run->len;
	return 0;
}

static int set_ring_cursor(struct store *st, const struct store_sample_run *run,
			   struct gerr *err)
{
	sqlite3_stmt *stmt = store_stmt(st, STORE_STMT_RING_CURSOR_SET,
		"INSERT OR REPLACE INTO ring_cursors (probe, map, map_id, pos) VALUES (?, ?, ?, ?)", err);
	int ret = 0;

	if (!stmt)
		return -1;
	if (sqlite3_bind_text(stmt, 1, or_empty(run->probe), -1, SQLITE_STATIC) ||
	    sqlite3_bind_text(stmt, 2, or_empty(run->map), -1, SQLITE_STATIC) ||
	    sqlite3_bind_int64(stmt, 3, run->ring_map_id) ||
	    sqlite3_bind_int64(stmt, 4, (sqlite3_int64)run->ring_end) ||
	    sqlite3_step(stmt) != SQLITE_DONE)
		ret = store_fail(st, err, "cannot store the ring position of probe %.64s",
				 or_empty(run->probe));
	store_stmt_done(stmt);
	return ret;
}

int store_ring_cursor(struct store *st, const char *probe, const char *map, uint32_t map_id,
		      uint64_t *pos, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1, rc;

	*pos = 0;
	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_RING_CURSOR_GET,
		"SELECT pos FROM ring_cursors WHERE probe = ? AND map = ? AND map_id = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, probe, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, map, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 3, map_id);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		*pos = (uint64_t)sqlite3_column_int64(stmt, 0);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		store_fail(st, err, "cannot read the ring position of probe %.64s", probe);
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

/* Insert every run as a block. time_ns is when the store received them:
 * the sample's own time stays, as given, in the payload. */
static int insert_all(struct store *st, struct store_sample_run *runs, size_t n,
		      struct batch_delta *delta, struct gerr *err)
{
	int64_t time_ns = now_ns();
	sqlite3_stmt *stmt, *ids = NULL;
	int ret = -1;

	stmt = store_stmt(st, STORE_STMT_SAMPLE_INSERT,
		"INSERT INTO sample_blocks (first_id, last_id, probe, map, time_ns, payload, crc)"
		" VALUES (?, ?, ?, ?, ?, ?, ?)", err);
	if (!stmt)
		return -1;
	for (size_t i = 0; i < n; i++)
		if ((runs[i].count && insert_run(st, stmt, &runs[i], time_ns, delta, err) < 0) ||
		    (runs[i].ring_map_id && set_ring_cursor(st, &runs[i], err) < 0))
			goto out;
	ids = store_stmt(st, STORE_STMT_SAMPLE_LAST_ID_SET,
			 "UPDATE sample_ids SET last_id = ?", err);
	if (!ids)
		goto out;
	sqlite3_bind_int64(ids, 1, (sqlite3_int64)delta->last_id);
	if (sqlite3_step(ids) != SQLITE_DONE) {
		store_fail(st, err, "cannot store the last sample id");
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(ids);
	store_stmt_done(stmt);
	return ret;
}

/* ---------------------------------------------------------------- bounds */

static int count_drop(struct store *st, const char *probe, uint64_t count, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = 0;

	stmt = store_stmt(st, STORE_STMT_SAMPLE_DROP_ADD,
		"INSERT INTO sample_drops (probe, count) VALUES (?, ?)"
		" ON CONFLICT (probe) DO UPDATE SET count = count + excluded.count", err);
	if (!stmt)
		return -1;
	sqlite3_bind_text(stmt, 1, probe, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(stmt, 2, (sqlite3_int64)count);
	if (sqlite3_step(stmt) != SQLITE_DONE)
		ret = store_fail(st, err, "cannot count dropped samples");
	store_stmt_done(stmt);
	return ret;
}

static int drop_block(struct store *st, int64_t first_id, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = 0;

	stmt = store_stmt(st, STORE_STMT_SAMPLE_DROP_BLOCK,
			  "DELETE FROM sample_blocks WHERE first_id = ?", err);
	if (!stmt)
		return -1;
	sqlite3_bind_int64(stmt, 1, first_id);
	if (sqlite3_step(stmt) != SQLITE_DONE)
		ret = store_fail(st, err, "cannot drop the oldest samples");
	store_stmt_done(stmt);
	return ret;
}

/* The block's payload from the cut on, after the shared frame it needs. */
static int write_cut(struct store *st, int64_t first_id, int64_t last_id,
		     const uint8_t *payload, size_t len, const struct block_cut *cut,
		     struct gerr *err)
{
	size_t kept = cut->shared_len + (len - cut->offset);
	uint8_t *data = malloc(kept ? kept : 1);
	sqlite3_stmt *update;
	int ret = -1;

	if (!data)
		return gerr_set(err, 500, "out of memory cutting samples %lld..",
				(long long)first_id);
	if (cut->shared)
		memcpy(data, cut->shared, cut->shared_len);
	memcpy(data + cut->shared_len, payload + cut->offset, len - cut->offset);
	update = store_stmt(st, STORE_STMT_SAMPLE_TRIM_BLOCK,
		"UPDATE sample_blocks SET first_id = ?, payload = ?, crc = ? WHERE first_id = ?", err);
	if (!update)
		goto out;
	sqlite3_bind_int64(update, 1, first_id + (int64_t)cut->samples);
	sqlite3_bind_blob64(update, 2, data, kept, SQLITE_STATIC);
	sqlite3_bind_int64(update, 3, store_block_crc((uint64_t)first_id + cut->samples,
						      (uint64_t)last_id, data, kept));
	sqlite3_bind_int64(update, 4, first_id);
	if (sqlite3_step(update) != SQLITE_DONE) {
		store_fail(st, err, "cannot drop the oldest samples");
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(update);
	free(data);
	return ret;
}

int store_samples_trim_block(struct store *st, int64_t first_id, uint64_t rows,
			     uint64_t bytes, uint64_t *cut, uint64_t *cut_bytes, struct gerr *err)
{
	struct store_damage damage;
	struct block_cut plan;
	sqlite3_stmt *read;
	const uint8_t *payload;
	const char *probe;
	int64_t last_id;
	size_t len;
	bool sound;
	int ret = -1;

	*cut = *cut_bytes = 0;
	read = store_stmt(st, STORE_STMT_SAMPLE_BLOCK_PAYLOAD,
			  "SELECT payload, last_id, probe, crc FROM sample_blocks WHERE first_id = ?", err);
	if (!read)
		return -1;
	sqlite3_bind_int64(read, 1, first_id);
	if (sqlite3_step(read) != SQLITE_ROW) {
		store_fail(st, err, "cannot read the oldest samples");
		goto out;
	}
	payload = sqlite3_column_blob(read, 0);
	len = (size_t)sqlite3_column_bytes(read, 0);
	last_id = sqlite3_column_int64(read, 1);
	probe = (const char *)sqlite3_column_text(read, 2);
	/* A damaged block cannot be cut: it goes whole, its samples counted
	 * as dropped, so that the bound never sticks on it. */
	sound = block_crc_ok((uint64_t)first_id, (uint64_t)last_id, probe, payload, len,
			     store_block_crc_column(read, 3), &damage);
	if (sound && block_plan_cut(payload, len, rows, bytes, &plan) < 0) {
		block_damage(&damage, (uint64_t)first_id, (uint64_t)last_id, probe,
			     "framing broken");
		sound = false;
	}
	if (!sound) {
		store_damage_note(st, &damage);
		plan = (struct block_cut){ .samples = (uint64_t)(last_id - first_id + 1), .all = true };
	}
	if (plan.all)
		ret = drop_block(st, first_id, err);
	else
		ret = write_cut(st, first_id, last_id, payload, len, &plan, err);
	if (ret == 0) {
		*cut = plan.samples;
		*cut_bytes = plan.all ? len : block_cut_bytes(&plan);
	}
out:
	store_stmt_done(read);
	return ret;
}

/* Drop the oldest samples, block by block and the last block in part,
 * until `rows` samples and `bytes` bytes are gone, each drop counted
 * against its probe. Inside the append's transaction. The payloads are
 * not read but for the block cut in two. */
static int drop_oldest(struct store *st, uint64_t rows, uint64_t bytes,
		       struct batch_delta *delta, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1, rc;

	stmt = store_stmt(st, STORE_STMT_SAMPLE_OLDEST,
		"SELECT first_id, last_id, probe, length(payload) FROM sample_blocks"
		" ORDER BY first_id", err);
	if (!stmt)
		return -1;
	while ((delta->dropped_rows < rows || delta->dropped_bytes < bytes) &&
	       (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		int64_t first = sqlite3_column_int64(stmt, 0);
		uint64_t count = (uint64_t)(sqlite3_column_int64(stmt, 1) - first + 1);
		uint64_t len = (uint64_t)sqlite3_column_int64(stmt, 3);
		uint64_t want_rows = rows - (delta->dropped_rows < rows ? delta->dropped_rows : rows);
		uint64_t want_bytes = bytes - (delta->dropped_bytes < bytes ? delta->dropped_bytes
									     : bytes);
		uint64_t cut = count, cut_bytes = len;
		char probe[128];

		/* Copied: the row is about to change under the statement. */
		snprintf(probe, sizeof(probe), "%s", (const char *)sqlite3_column_text(stmt, 2));
		if (want_rows < count && want_bytes < len) {
			if (store_samples_trim_block(st, first, want_rows, want_bytes, &cut, &cut_bytes, err) < 0)
				goto out;
		} else if (drop_block(st, first, err) < 0) {
			goto out;
		}
		if (count_drop(st, probe, cut, err) < 0)
			goto out;
		delta->dropped_rows += cut;
		delta->dropped_bytes += cut_bytes;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

static uint64_t over(uint64_t have, uint64_t bound)
{
	return have > bound ? have - bound : 0;
}

/* Drop the oldest samples until the buffer, grown by delta, is within
 * its bounds. Inside the append's transaction. */
static int enforce_bounds(struct store *st, struct batch_delta *delta, struct gerr *err)
{
	uint64_t max_rows = st->samples_max_rows ? st->samples_max_rows
						 : SAMPLES_DEFAULT_MAX_ROWS;
	uint64_t max_bytes = st->samples_max_bytes ? st->samples_max_bytes
						   : SAMPLES_DEFAULT_MAX_BYTES;
	uint64_t rows = over(st->samples_rows + delta->added_rows, max_rows);
	uint64_t bytes = over(st->samples_bytes + delta->added_bytes, max_bytes);

	if (!rows && !bytes)
		return 0;
	return drop_oldest(st, rows, bytes, delta, err);
}

int store_samples_append_runs(struct store *st, struct store_sample_run *runs, size_t n,
			      struct gerr *err)
{
	struct batch_delta delta = { 0 };
	int ret = -1;

	for (size_t i = 0; i < n; i++)
		runs[i].first_id = 0;
	if (!n)
		return 0;
	store_lock(st);
	if (store_exec(st, "BEGIN IMMEDIATE", err) < 0)
		goto out;
	if (store_samples_counted(st, err) < 0)
		goto fail;
	delta.last_id = st->samples_last_id;
	if (insert_all(st, runs, n, &delta, err) < 0 ||
	    enforce_bounds(st, &delta, err) < 0 ||
	    store_exec(st, "COMMIT", err) < 0)
		goto fail;
	st->samples_rows += delta.added_rows - delta.dropped_rows;
	st->samples_bytes += delta.added_bytes - delta.dropped_bytes;
	st->samples_last_id = delta.last_id;
	ret = 0;
	goto out;
fail:
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	for (size_t i = 0; i < n; i++)
		runs[i].first_id = 0;
out:
	store_unlock(st);
	return ret;
}

/* ---------------------------------------------------------------- messages */

void store_sample_run_add(struct pbwire *w, const Graind__Sample *s)
{
	Graind__Sample copy = *s;
	size_t len;

	copy.id = 0;
	len = graind__sample__get_packed_size(&copy);
	pbwire_varint(w, len);
	if (pbwire_reserve(w, len))
		w->len += graind__sample__pack(&copy, w->data + w->len);
}

static bool same_run(const Graind__Sample *a, const Graind__Sample *b)
{
	return strcmp(or_empty(a->probe), or_empty(b->probe)) == 0 &&
	       strcmp(or_empty(a->map), or_empty(b->map)) == 0;
}

/* Messages packed into runs, one per stretch of the same probe and map:
 * runs[i] covers samples[starts[i]] onwards. */
int store_samples_append(struct store *st, Graind__Sample **samples, size_t n,
			 struct gerr *err)
{
	struct store_sample_run *runs = calloc(n ? n : 1, sizeof(*runs));
	struct pbwire *bufs = calloc(n ? n : 1, sizeof(*bufs));
	size_t *starts = calloc(n ? n : 1, sizeof(*starts));
	size_t n_runs = 0;
	int ret = -1;

	if (!runs || !bufs || !starts) {
		gerr_set(err, 500, "out of memory packing %zu samples", n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (!i || !same_run(samples[i - 1], samples[i])) {
			starts[n_runs] = i;
			runs[n_runs].probe = samples[i]->probe;
			runs[n_runs].map = samples[i]->map;
			n_runs++;
		}
		store_sample_run_add(&bufs[n_runs - 1], samples[i]);
		runs[n_runs - 1].count++;
	}
	for (size_t r = 0; r < n_runs; r++) {
		if (bufs[r].failed) {
			gerr_set(err, 500, "out of memory packing %zu samples", n);
			goto out;
		}
		runs[r].data = bufs[r].data;
		runs[r].len = bufs[r].len;
	}
	ret = store_samples_append_runs(st, runs, n_runs, err);
out:
	for (size_t r = 0; r < n_runs; r++)
		for (size_t i = 0; i < runs[r].count; i++)
			samples[starts[r] + i]->id = runs[r].first_id ? runs[r].first_id + i : 0;
	for (size_t r = 0; bufs && r < n_runs; r++)
		pbwire_free(&bufs[r]);
	free(starts);
	free(bufs);
	free(runs);
	return ret;
}

/* ---------------------------------------------------------------- list */

static sqlite3_stmt *list_stmt(struct store *st, const char *probe, const char *map,
			       uint64_t after, struct gerr *err)
{
	sqlite3_stmt *stmt;

	/* The blocks that hold ids past `after`: the one `after` falls in
	 * and every one starting after it. */
	if (probe && *probe) {
		stmt = store_stmt(st, STORE_STMT_SAMPLE_LIST_BY_PROBE,
			"SELECT first_id, last_id, payload, probe, crc FROM sample_blocks"
			" INDEXED BY sample_blocks_by_probe"
			" WHERE probe = ?1 AND last_id > ?2 AND (?3 IS NULL OR map = ?3)"
			" AND first_id >= (SELECT coalesce(max(first_id), 0) FROM sample_blocks"
			"                  WHERE first_id <= ?2)"
			" ORDER BY first_id", err);
		if (stmt)
			sqlite3_bind_text(stmt, 1, probe, -1, SQLITE_STATIC);
	} else {
		stmt = store_stmt(st, STORE_STMT_SAMPLE_LIST,
			"SELECT first_id, last_id, payload, probe, crc FROM sample_blocks"
			" WHERE last_id > ?2 AND (?3 IS NULL OR map = ?3)"
			" AND first_id >= (SELECT coalesce(max(first_id), 0) FROM sample_blocks"
			"                  WHERE first_id <= ?2)"
			" ORDER BY first_id", err);
	}
	if (!stmt)
		return NULL;
	sqlite3_bind_int64(stmt, 2, (sqlite3_int64)(after > INT64_MAX ? INT64_MAX : after));
	if (map && *map)
		sqlite3_bind_text(stmt, 3, map, -1, SQLITE_STATIC);
	return stmt;
}

/* A damaged block (d: the whole block), from id `from` on: noted as the
 * block, and handed to the reader's gap function as the ids skipped. */
static int skip_damaged(struct store *st, struct store_damage *d, uint64_t from,
			int (*gap)(const struct store_damage *d, void *ctx), void *ctx)
{
	store_damage_note(st, d);
	if (d->first_id < from)
		d->first_id = from;
	return gap ? gap(d, ctx) : 0;
}

/* Visit the samples of the current block with ids past `after`; 1 when
 * the page is full and one more sample was there. A block whose checksum
 * is wrong is skipped whole; one whose framing breaks after a sound
 * checksum (a bug, not the disk) from where it breaks. buf is scratch for
 * samples that share fields. */
static int visit_block(struct store *st, sqlite3_stmt *stmt, uint64_t after, unsigned limit,
		       unsigned *seen, struct pbwire *buf, ProtobufCAllocator *alloc,
		       int (*fn)(const Graind__Sample *s, void *ctx),
		       int (*gap)(const struct store_damage *d, void *ctx), void *ctx,
		       struct gerr *err)
{
	uint64_t first_id = (uint64_t)sqlite3_column_int64(stmt, 0), id = first_id;
	uint64_t last_id = (uint64_t)sqlite3_column_int64(stmt, 1);
	const uint8_t *payload = sqlite3_column_blob(stmt, 2);
	size_t payload_len = (size_t)sqlite3_column_bytes(stmt, 2);
	const char *probe = (const char *)sqlite3_column_text(stmt, 3);
	struct block_walk w = block_walk(payload, payload_len);
	struct store_damage d;
	const uint8_t *own, *packed;
	const char *why = NULL;
	Graind__Sample *s;
	size_t own_len, len;
	int rc;

	/* A gap counts as one in the page, so that a long run of damage is
	 * walked a page at a time, not all under the lock. */
	if (!block_crc_ok(id, last_id, probe, payload, payload_len,
			  store_block_crc_column(stmt, 4), &d)) {
		if ((*seen)++ == limit)
			return 1;
		return skip_damaged(st, &d, after + 1, gap, ctx);
	}
	for (; id <= last_id && block_next(&w, &own, &own_len); id++) {
		if (id <= after)
			continue;
		if ((*seen)++ == limit)
			return 1;
		packed = block_sample(&w, own, own_len, buf, &len);
		if (!packed && buf->failed)
			return gerr_set(err, 500, "out of memory reading sample %llu",
					(unsigned long long)id);
		s = packed ? graind__sample__unpack(alloc, len, packed) : NULL;
		if (!s) {
			(*seen)--;
			why = "a sample does not unpack";
			break;
		}
		s->id = id;
		rc = fn(s, ctx);
		if (!alloc)
			graind__sample__free_unpacked(s, NULL);
		if (rc)
			return rc;
	}
	if (id > last_id)
		return 0;
	if (!why)
		why = w.broken ? "framing broken" : "fewer samples than its ids";
	if ((*seen)++ == limit)
		return 1;
	block_damage(&d, first_id, last_id, probe, why);
	return skip_damaged(st, &d, id > after ? id : after + 1, gap, ctx);
}

int store_samples_list(struct store *st, const char *probe, const char *map,
		       uint64_t after, unsigned limit,
		       int (*fn)(const Graind__Sample *s, void *ctx),
		       int (*gap)(const struct store_damage *d, void *ctx), void *ctx,
		       bool *more, struct gerr *err)
{
	return store_samples_list_into(st, probe, map, after, limit, NULL, fn, gap, ctx, more,
				       err);
}

int store_samples_list_into(struct store *st, const char *probe, const char *map,
			    uint64_t after, unsigned limit, ProtobufCAllocator *alloc,
			    int (*fn)(const Graind__Sample *s, void *ctx),
			    int (*gap)(const struct store_damage *d, void *ctx), void *ctx,
			    bool *more, struct gerr *err)
{
	struct pbwire buf = { 0 };
	sqlite3_stmt *stmt;
	unsigned seen = 0;
	int ret = -1, rc = SQLITE_DONE;

	*more = false;
	store_lock(st);
	stmt = list_stmt(st, probe, map, after, err);
	if (!stmt)
		goto out;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		ret = visit_block(st, stmt, after, limit, &seen, &buf, alloc, fn, gap, ctx, err);
		if (ret == 1) {
			*more = true;
			break;
		}
		if (ret)
			goto out;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		ret = store_fail(st, err, "cannot list samples");
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	pbwire_free(&buf);
	return ret;
}

/* ---------------------------------------------------------------- totals */

/* The cached totals; 0 when the buffer cannot be counted (logged). */
static uint64_t samples_total(struct store *st, const uint64_t *field)
{
	struct gerr err;
	uint64_t n = 0;

	store_lock(st);
	if (store_samples_counted(st, &err) == 0)
		n = *field;
	else
		log_error("msg=\"cannot count samples\" error=\"%s\"", err.msg);
	store_unlock(st);
	return n;
}

uint64_t store_sample_count(struct store *st)
{
	return samples_total(st, &st->samples_rows);
}

uint64_t store_sample_bytes(struct store *st)
{
	return samples_total(st, &st->samples_bytes);
}

uint64_t store_sample_last_id(struct store *st)
{
	return samples_total(st, &st->samples_last_id);
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
