/* Unit tests for store/samples.c: append and list back, paging and
 * filters, the row and byte bounds with their drop counts, ids across
 * reopen and total drops, a failing append, damaged and random blocks,
 * the integrity scan, samples sharing fields, use from several threads,
 * the WAL checkpointed beside the writer, and the append rate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proto/graind.pb-c.h"
#include "server/util/pbwire.h"
#include "store/store.h"
#include "store/store_int.h"
#include "tests/unit/tmpdb.h"

/* ---------------------------------------------------------------- helpers */

/* A metric sample; the strings must outlive it. */
static void sample_init(Graind__Sample *s, const char *probe, const char *map,
			const char *name, double value)
{
	graind__sample__init(s);
	s->probe = (char *)probe;
	s->map = (char *)map;
	s->name = (char *)name;
	s->kind = GRAIND__SAMPLE_KIND__METRIC;
	s->value = value;
}

static void append_ok(struct store *st, Graind__Sample **samples, size_t n)
{
	struct gerr err = { 0 };

	if (store_samples_append(st, samples, n, &err) < 0)
		fail_msg("store_samples_append: %d %s", err.status, err.msg);
}

/* n samples of the same shape; probe_of(i) names the probe of the i-th. */
struct batch {
	Graind__Sample *s;
	Graind__Sample **ptr;
	size_t n;
};

static void batch_init(struct batch *b, size_t n, const char *(*probe_of)(size_t),
		       size_t first)
{
	b->n = n;
	b->s = calloc(n, sizeof(*b->s));
	b->ptr = calloc(n, sizeof(*b->ptr));
	assert_non_null(b->s);
	assert_non_null(b->ptr);
	for (size_t i = 0; i < n; i++) {
		sample_init(&b->s[i], probe_of(first + i), "counts", "hits",
			    (double)(first + i));
		b->ptr[i] = &b->s[i];
	}
}

static void batch_free(struct batch *b)
{
	free(b->s);
	free(b->ptr);
}

/* What a list call saw. */
struct seen {
	uint64_t ids[512];
	double values[512];
	char probes[512][16];
	size_t n;
	size_t stop_at;     /* return 7 from the visit that makes n this; 0: never */
	/* The gaps a list call reported: damaged blocks. */
	uint64_t gap_first[8], gap_last[8];
	char gap_why[8][256];
	size_t n_gaps;
};

static int collect(const Graind__Sample *s, void *ctx)
{
	struct seen *seen = ctx;

	assert_true(seen->n < 512);
	seen->ids[seen->n] = s->id;
	seen->values[seen->n] = s->value;
	snprintf(seen->probes[seen->n], sizeof(seen->probes[0]), "%s", s->probe);
	seen->n++;
	return seen->n == seen->stop_at ? 7 : 0;
}

static int collect_gap(const struct store_damage *d, void *ctx)
{
	struct seen *seen = ctx;

	assert_int_equal(d->kind, STORE_DAMAGE_SAMPLES);
	assert_true(seen->n_gaps < 8);
	seen->gap_first[seen->n_gaps] = d->first_id;
	seen->gap_last[seen->n_gaps] = d->last_id;
	snprintf(seen->gap_why[seen->n_gaps], sizeof(seen->gap_why[0]), "%s", d->what);
	seen->n_gaps++;
	return 0;
}

static void list_ok(struct store *st, const char *probe, const char *map,
		    uint64_t after, unsigned limit, struct seen *seen, bool *more)
{
	struct gerr err = { 0 };

	memset(seen, 0, sizeof(*seen));
	if (store_samples_list(st, probe, map, after, limit, collect, collect_gap, seen, more,
			       &err) < 0)
		fail_msg("store_samples_list: %d %s", err.status, err.msg);
}

struct drops {
	char probe[4][16];
	uint64_t count[4];
	size_t n;
};

static int collect_drop(const char *probe, uint64_t dropped, void *ctx)
{
	struct drops *d = ctx;

	assert_true(d->n < 4);
	snprintf(d->probe[d->n], sizeof(d->probe[0]), "%s", probe);
	d->count[d->n++] = dropped;
	return 0;
}

static void drops_ok(struct store *st, struct drops *d)
{
	memset(d, 0, sizeof(*d));
	assert_int_equal(store_sample_drops(st, collect_drop, d), 0);
}

static uint64_t packed_size(Graind__Sample *s)
{
	uint64_t id = s->id;
	uint64_t len;

	s->id = 0;
	len = graind__sample__get_packed_size(s);
	s->id = id;
	return len + pbwire_varint_size(len);     /* its framing in the block */
}

/* ---------------------------------------------------------------- tests */

static void test_empty(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct drops d;
	struct seen seen;
	bool more = true;

	assert_int_equal(store_sample_count(fx->st), 0);
	assert_int_equal(store_sample_bytes(fx->st), 0);
	assert_int_equal(store_sample_last_id(fx->st), 0);
	drops_ok(fx->st, &d);
	assert_int_equal(d.n, 0);
	list_ok(fx->st, NULL, NULL, 0, 10, &seen, &more);
	assert_int_equal(seen.n, 0);
	assert_false(more);
	assert_int_equal(store_samples_append(fx->st, NULL, 0, NULL), 0);
	assert_int_equal(store_sample_last_id(fx->st), 0);
}

/* Every field of the event sample comes back as it went in. */
static int check_event(const Graind__Sample *s, void *ctx)
{
	const Graind__Sample *want = ctx;

	assert_int_equal(s->id, want->id);
	assert_string_equal(s->probe, "tcp");
	assert_string_equal(s->map, "events");
	assert_string_equal(s->time, "2024-05-01T12:00:00.123456789Z");
	assert_int_equal(s->kind, GRAIND__SAMPLE_KIND__EVENT);
	assert_string_equal(s->name, "connect");
	assert_int_equal(s->n_tags, 2);
	assert_string_equal(s->tags[0]->key, "comm");
	assert_string_equal(s->tags[0]->value, "curl");
	assert_string_equal(s->tags[1]->key, "pid");
	assert_string_equal(s->tags[1]->value, "4242");
	assert_true(s->value == 2.5);
	assert_int_equal(s->metric_kind, GRAIND__METRIC_KIND__GAUGE);
	assert_int_equal(s->n_fields, 3);
	assert_string_equal(s->fields[0]->name, "saddr");
	assert_int_equal(s->fields[0]->value_case, GRAIND__FIELD__VALUE_TEXT);
	assert_string_equal(s->fields[0]->text, "10.0.0.1");
	assert_int_equal(s->fields[1]->value_case, GRAIND__FIELD__VALUE_UINT);
	assert_int_equal(s->fields[1]->uint, 443);
	assert_int_equal(s->fields[2]->value_case, GRAIND__FIELD__VALUE_INT);
	assert_int_equal(s->fields[2]->int_, -111);
	return 0;
}

static void test_append_list(void **state)
{
	struct tmpdb_fixture *fx = *state;
	Graind__Tag tag_comm = GRAIND__TAG__INIT, tag_pid = GRAIND__TAG__INIT;
	Graind__Field f_addr = GRAIND__FIELD__INIT, f_port = GRAIND__FIELD__INIT;
	Graind__Field f_err = GRAIND__FIELD__INIT;
	Graind__Tag *tags[] = { &tag_comm, &tag_pid };
	Graind__Field *fields[] = { &f_addr, &f_port, &f_err };
	Graind__Sample s[6], *ptr[6];
	struct gerr err = { 0 };
	struct seen seen;
	uint64_t bytes = 0;
	bool more;

	tag_comm.key = "comm";
	tag_comm.value = "curl";
	tag_pid.key = "pid";
	tag_pid.value = "4242";
	f_addr.name = "saddr";
	f_addr.value_case = GRAIND__FIELD__VALUE_TEXT;
	f_addr.text = "10.0.0.1";
	f_port.name = "dport";
	f_port.value_case = GRAIND__FIELD__VALUE_UINT;
	f_port.uint = 443;
	f_err.name = "err";
	f_err.value_case = GRAIND__FIELD__VALUE_INT;
	f_err.int_ = -111;

	sample_init(&s[0], "tcp", "events", "connect", 2.5);
	s[0].kind = GRAIND__SAMPLE_KIND__EVENT;
	s[0].time = "2024-05-01T12:00:00.123456789Z";
	s[0].metric_kind = GRAIND__METRIC_KIND__GAUGE;
	s[0].n_tags = 2;
	s[0].tags = tags;
	s[0].n_fields = 3;
	s[0].fields = fields;
	s[0].id = 999;      /* ignored: the store gives the id */
	sample_init(&s[1], "tcp", "counts", "bytes", 1);
	sample_init(&s[2], "udp", "counts", "bytes", 2);
	sample_init(&s[3], "tcp", "events", "close", 3);
	sample_init(&s[4], "udp", "events", "send", 4);
	sample_init(&s[5], "tcp", "counts", "bytes", 5);
	for (int i = 0; i < 6; i++) {
		ptr[i] = &s[i];
		bytes += packed_size(&s[i]);
	}

	append_ok(fx->st, ptr, 3);
	append_ok(fx->st, ptr + 3, 3);
	for (int i = 0; i < 6; i++)
		assert_int_equal(s[i].id, i + 1);
	assert_int_equal(store_sample_count(fx->st), 6);
	assert_int_equal(store_sample_bytes(fx->st), bytes);
	assert_int_equal(store_sample_last_id(fx->st), 6);

	/* Field by field, from a list starting at the first id. */
	assert_int_equal(store_samples_list(fx->st, "tcp", "events", 0, 1, check_event, NULL,
					    &s[0], &more, &err), 0);
	assert_true(more);

	list_ok(fx->st, NULL, NULL, 0, 100, &seen, &more);
	assert_int_equal(seen.n, 6);
	assert_false(more);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(seen.ids[i], i + 1);
		assert_true(seen.values[i] == s[i].value);
		assert_string_equal(seen.probes[i], s[i].probe);
	}

	list_ok(fx->st, "udp", NULL, 0, 100, &seen, &more);
	assert_int_equal(seen.n, 2);
	assert_int_equal(seen.ids[0], 3);
	assert_int_equal(seen.ids[1], 5);

	list_ok(fx->st, "tcp", "counts", 0, 100, &seen, &more);
	assert_int_equal(seen.n, 2);
	assert_int_equal(seen.ids[0], 2);
	assert_int_equal(seen.ids[1], 6);

	list_ok(fx->st, "", "events", 1, 100, &seen, &more);
	assert_int_equal(seen.n, 2);
	assert_int_equal(seen.ids[0], 4);
	assert_int_equal(seen.ids[1], 5);

	list_ok(fx->st, "nope", NULL, 0, 100, &seen, &more);
	assert_int_equal(seen.n, 0);
	assert_false(more);

	/* Paging: after the last id of a page, more until the end. */
	list_ok(fx->st, "tcp", NULL, 0, 2, &seen, &more);
	assert_int_equal(seen.n, 2);
	assert_int_equal(seen.ids[1], 2);
	assert_true(more);
	list_ok(fx->st, "tcp", NULL, 2, 2, &seen, &more);
	assert_int_equal(seen.n, 2);
	assert_int_equal(seen.ids[0], 4);
	assert_int_equal(seen.ids[1], 6);
	assert_false(more);
	list_ok(fx->st, NULL, NULL, 4, 2, &seen, &more);
	assert_int_equal(seen.n, 2);
	assert_false(more);
	list_ok(fx->st, NULL, NULL, 6, 2, &seen, &more);
	assert_int_equal(seen.n, 0);
	assert_false(more);

	/* fn stops the walk and its value comes back. */
	memset(&seen, 0, sizeof(seen));
	seen.stop_at = 2;
	assert_int_equal(store_samples_list(fx->st, NULL, NULL, 0, 10, collect, NULL, &seen,
					    &more, &err), 7);
	assert_int_equal(seen.n, 2);
}

static const char *probe_a_or_b(size_t i)
{
	return i % 3 == 0 ? "a" : "b";  /* ids i+1: uneven, interleaved */
}

/* Drops of the ids 1..upto, as probe_a_or_b() assigned them. */
static void expect_drops(struct store *st, uint64_t upto)
{
	uint64_t a = 0, b = 0;
	struct drops d;

	for (uint64_t i = 0; i < upto; i++)
		(*probe_a_or_b(i) == 'a' ? &a : &b)[0]++;
	drops_ok(st, &d);
	assert_int_equal(d.n, 2);
	assert_string_equal(d.probe[0], "a");
	assert_int_equal(d.count[0], a);
	assert_string_equal(d.probe[1], "b");
	assert_int_equal(d.count[1], b);
}

static void expect_newest(struct store *st, uint64_t first, uint64_t last)
{
	uint64_t id = first;
	struct seen seen;
	bool more = true;
	uint64_t after = 0;

	while (more) {
		list_ok(st, NULL, NULL, after, 64, &seen, &more);
		for (size_t i = 0; i < seen.n; i++) {
			assert_int_equal(seen.ids[i], id);
			assert_true(seen.values[i] == (double)(id - 1));
			id++;
		}
		if (seen.n)
			after = seen.ids[seen.n - 1];
	}
	assert_int_equal(id, last + 1);
}

static void append_numbered(struct store *st, size_t total, size_t per_batch)
{
	struct batch b;

	for (size_t done = 0; done < total; done += b.n) {
		batch_init(&b, total - done < per_batch ? total - done : per_batch,
			   probe_a_or_b, done);
		append_ok(st, b.ptr, b.n);
		for (size_t i = 0; i < b.n; i++)
			assert_int_equal(b.s[i].id, done + i + 1);
		batch_free(&b);
	}
}

/* One batch of n samples, the first of them id `first`. */
static void append_numbered_from(struct store *st, uint64_t first, size_t n)
{
	struct batch b;

	batch_init(&b, n, probe_a_or_b, first - 1);
	append_ok(st, b.ptr, b.n);
	for (size_t i = 0; i < b.n; i++)
		assert_int_equal(b.s[i].id, first + i);
	batch_free(&b);
}

static void test_bound_rows(void **state)
{
	struct tmpdb_fixture *fx = *state;
	Graind__Sample one, *ptr = &one;
	uint64_t size;

	store_samples_set_bounds(fx->st, 100, 0);
	append_numbered(fx->st, 250, 30);
	assert_int_equal(store_sample_count(fx->st), 100);
	assert_int_equal(store_sample_last_id(fx->st), 250);
	expect_newest(fx->st, 151, 250);
	expect_drops(fx->st, 150);

	/* The cached byte total matches the rows kept. */
	sample_init(&one, "a", "counts", "hits", 150);
	size = packed_size(&one);
	assert_int_equal(store_sample_bytes(fx->st), 100 * size);

	sample_init(&one, "c", "counts", "hits", 250);
	append_ok(fx->st, &ptr, 1);
	assert_int_equal(one.id, 251);
	assert_int_equal(store_sample_count(fx->st), 100);
}

static void test_bound_bytes(void **state)
{
	struct tmpdb_fixture *fx = *state;
	Graind__Sample one;
	uint64_t size;

	/* Every sample of append_numbered packs to the same size (values
	 * are doubles, fixed width). */
	sample_init(&one, "a", "counts", "hits", 1);
	size = packed_size(&one);
	store_samples_set_bounds(fx->st, 0, 100 * size);
	append_numbered(fx->st, 250, 40);
	assert_int_equal(store_sample_count(fx->st), 100);
	assert_int_equal(store_sample_bytes(fx->st), 100 * size);
	expect_newest(fx->st, 151, 250);
	expect_drops(fx->st, 150);

	/* Not one byte under: a bound between two sizes keeps the rows
	 * that fit. */
	store_samples_set_bounds(fx->st, 0, 50 * size + size / 2);
	sample_init(&one, "a", "counts", "hits", 250);
	{
		Graind__Sample *ptr = &one;

		append_ok(fx->st, &ptr, 1);
	}
	assert_int_equal(one.id, 251);
	assert_int_equal(store_sample_count(fx->st), 50);
	assert_int_equal(store_sample_bytes(fx->st), 50 * size);
	expect_newest(fx->st, 202, 251);
}

/* Rows of different sizes: the fewest oldest rows go. */
static void test_bound_bytes_uneven(void **state)
{
	struct tmpdb_fixture *fx = *state;
	static char names[40][48];
	Graind__Sample s[40], *ptr[40];
	uint64_t size[40], max = 1000, kept = 0, kept_bytes = 0;

	for (int i = 0; i < 40; i++) {
		snprintf(names[i], sizeof(names[i]), "%.*s", 1 + (i * 7) % 40,
			 "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn");
		sample_init(&s[i], "a", "m", names[i], i);
		ptr[i] = &s[i];
		size[i] = packed_size(&s[i]);
	}
	store_samples_set_bounds(fx->st, 0, max);
	for (int i = 0; i < 40; i += 8)
		append_ok(fx->st, ptr + i, 8);
	for (int i = 39; i >= 0 && kept_bytes + size[i] <= max; i--) {
		kept_bytes += size[i];
		kept++;
	}
	assert_int_equal(store_sample_count(fx->st), kept);
	assert_int_equal(store_sample_bytes(fx->st), kept_bytes);
	expect_newest(fx->st, 41 - kept, 40);
}

static void test_ids_across_reopen(void **state)
{
	struct tmpdb_fixture *fx = *state;
	Graind__Sample one, *ptr = &one;
	uint64_t bytes;

	append_numbered(fx->st, 10, 4);
	bytes = store_sample_bytes(fx->st);
	store_close(fx->st);
	fx->st = tmpdb_open(fx->db.path);
	assert_int_equal(store_sample_count(fx->st), 10);
	assert_int_equal(store_sample_bytes(fx->st), bytes);
	assert_int_equal(store_sample_last_id(fx->st), 10);

	sample_init(&one, "a", "counts", "hits", 10);
	append_ok(fx->st, &ptr, 1);
	assert_int_equal(one.id, 11);

	/* A bound no sample fits: everything goes, the ids stay. */
	store_samples_set_bounds(fx->st, 0, 1);
	append_ok(fx->st, &ptr, 1);
	assert_int_equal(one.id, 12);
	assert_int_equal(store_sample_count(fx->st), 0);
	assert_int_equal(store_sample_bytes(fx->st), 0);
	assert_int_equal(store_sample_last_id(fx->st), 12);
	expect_newest(fx->st, 13, 12);

	store_close(fx->st);
	fx->st = tmpdb_open(fx->db.path);
	assert_int_equal(store_sample_count(fx->st), 0);
	assert_int_equal(store_sample_last_id(fx->st), 12);
	append_ok(fx->st, &ptr, 1);
	assert_int_equal(one.id, 13);
	assert_int_equal(store_sample_count(fx->st), 1);
}

/* A sample over SQLite's length limit fails the batch: nothing of it is
 * kept, the ids are 0, and the next batch carries on from the last id.
 * The big sample sits in the second statement of many rows. */
static void test_failing_append(void **state)
{
	struct tmpdb_fixture *fx = *state;
	static char big[8192];
	struct gerr err = { 0 };
	struct drops d;
	struct batch b;
	uint64_t bytes;

	append_numbered(fx->st, 5, 5);
	bytes = store_sample_bytes(fx->st);

	store_lock(fx->st);
	sqlite3_limit(fx->st->db, SQLITE_LIMIT_LENGTH, 4096);
	store_unlock(fx->st);
	memset(big, 'x', sizeof(big) - 1);
	batch_init(&b, 70, probe_a_or_b, 5);
	b.s[40].name = big;
	assert_int_equal(store_samples_append(fx->st, b.ptr, b.n, &err), -1);
	assert_int_equal(err.status, 413);
	assert_non_null(strstr(err.msg, "cannot store samples"));
	for (size_t i = 0; i < b.n; i++)
		assert_int_equal(b.s[i].id, 0);
	assert_int_equal(store_sample_count(fx->st), 5);
	assert_int_equal(store_sample_bytes(fx->st), bytes);
	assert_int_equal(store_sample_last_id(fx->st), 5);
	expect_newest(fx->st, 1, 5);

	/* A failing batch that would have crossed the bound drops nothing. */
	store_samples_set_bounds(fx->st, 3, 0);
	assert_int_equal(store_samples_append(fx->st, b.ptr, b.n, &err), -1);
	assert_int_equal(store_sample_count(fx->st), 5);
	drops_ok(fx->st, &d);
	assert_int_equal(d.n, 0);

	b.s[40].name = "hits";
	append_ok(fx->st, b.ptr, b.n);
	for (size_t i = 0; i < b.n; i++)
		assert_int_equal(b.s[i].id, 6 + i);
	assert_int_equal(store_sample_count(fx->st), 3);
	expect_newest(fx->st, 73, 75);
	expect_drops(fx->st, 72);
	batch_free(&b);
}

/* ---------------------------------------------------------------- threads */

#define WRITER_BATCHES 50
#define WRITER_BATCH   100

struct writer {
	struct store *st;
	const char *probe;
	int failures;
};

static void *write_samples(void *arg)
{
	struct writer *w = arg;
	Graind__Sample s[WRITER_BATCH], *ptr[WRITER_BATCH];
	uint64_t last = 0;

	for (int b = 0; b < WRITER_BATCHES; b++) {
		for (int i = 0; i < WRITER_BATCH; i++) {
			sample_init(&s[i], w->probe, "m", "n", b * WRITER_BATCH + i);
			ptr[i] = &s[i];
		}
		if (store_samples_append(w->st, ptr, WRITER_BATCH, NULL) < 0) {
			w->failures++;
			continue;
		}
		for (int i = 0; i < WRITER_BATCH; i++) {
			if (s[i].id <= last)
				w->failures++;
			last = s[i].id;
		}
	}
	return NULL;
}

struct reader {
	struct store *st;
	volatile int *writers_done;
	uint64_t last_id, seen, per_probe[2];
	int failures;
};

static int read_one(const Graind__Sample *s, void *ctx)
{
	struct reader *r = ctx;

	if (s->id <= r->last_id)
		r->failures++;
	r->last_id = s->id;
	r->seen++;
	r->per_probe[strcmp(s->probe, "w0") == 0 ? 0 : 1]++;
	return 0;
}

/* Page through as the writers go, then to the end: every id once. */
static void *read_samples(void *arg)
{
	struct reader *r = arg;
	bool more, last_round = false;

	for (;;) {
		bool done = __atomic_load_n(r->writers_done, __ATOMIC_ACQUIRE);

		do {
			if (store_samples_list(r->st, NULL, NULL, r->last_id, 257,
					       read_one, NULL, r, &more, NULL) < 0) {
				r->failures++;
				return NULL;
			}
		} while (more);
		if (last_round)
			break;
		last_round = done;
	}
	return NULL;
}

/* A database of schema 1 held one row per sample: opening it moves every
 * sample into blocks with its id, and new ids carry on after the highest
 * one ever given. */
static void test_migrate_rows_to_blocks(void **state)
{
	struct tmpdb_fixture *fx = *state;
	static const uint64_t ids[] = { 5, 6, 9 };
	Graind__Sample one, *ptr = &one;
	uint8_t packed[128];
	struct seen seen;
	sqlite3_stmt *stmt;
	sqlite3 *db;
	bool more;

	store_close(fx->st);
	unlink(fx->db.path);
	assert_int_equal(sqlite3_open(fx->db.path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
		"CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
		" applied_ms INTEGER NOT NULL);"
		"INSERT INTO schema_version VALUES (1, 0);"
		"CREATE TABLE samples (id INTEGER PRIMARY KEY AUTOINCREMENT,"
		" probe TEXT NOT NULL, map TEXT NOT NULL, time_ns INTEGER NOT NULL,"
		" kind INTEGER NOT NULL, name TEXT NOT NULL, tags BLOB, value REAL,"
		" payload BLOB);"
		"CREATE TABLE sample_drops (probe TEXT PRIMARY KEY,"
		" count INTEGER NOT NULL DEFAULT 0);"
		/* Later steps change these too. */
		"CREATE TABLE objects (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL,"
		" size INTEGER NOT NULL, meta BLOB, builtin INTEGER NOT NULL DEFAULT 0,"
		" created_ms INTEGER NOT NULL, bytes BLOB NOT NULL);"
		"CREATE TABLE sinks (name TEXT PRIMARY KEY, config BLOB NOT NULL,"
		" cursor INTEGER NOT NULL DEFAULT 0, last_success_ms INTEGER, last_error TEXT,"
		" bytes_sent INTEGER NOT NULL DEFAULT 0, samples_sent INTEGER NOT NULL DEFAULT 0,"
		" created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
		"CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT,"
		" time_ms INTEGER NOT NULL, role TEXT NOT NULL, action TEXT NOT NULL,"
		" target TEXT NOT NULL, result INTEGER NOT NULL, message TEXT NOT NULL);",
		NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
		"INSERT INTO samples (id, probe, map, time_ns, kind, name, value, payload)"
		" VALUES (?, 'old', 'counts', 1, 1, 'hits', ?, ?)", -1, &stmt, NULL), SQLITE_OK);
	for (size_t i = 0; i < 3; i++) {
		sample_init(&one, "old", "counts", "hits", (double)ids[i]);
		sqlite3_bind_int64(stmt, 1, (sqlite3_int64)ids[i]);
		sqlite3_bind_double(stmt, 2, (double)ids[i]);
		sqlite3_bind_blob(stmt, 3, packed, (int)graind__sample__pack(&one, packed),
				  SQLITE_STATIC);
		assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
		sqlite3_reset(stmt);
	}
	sqlite3_finalize(stmt);
	/* The highest id ever given was 12; its row is gone. */
	assert_int_equal(sqlite3_exec(db, "UPDATE sqlite_sequence SET seq = 12",
				      NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	fx->st = tmpdb_open(fx->db.path);
	assert_int_equal(store_sample_count(fx->st), 3);
	assert_int_equal(store_sample_last_id(fx->st), 12);
	list_ok(fx->st, "old", "counts", 0, 10, &seen, &more);
	assert_int_equal(seen.n, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(seen.ids[i], ids[i]);
		assert_true(seen.values[i] == (double)ids[i]);
		assert_string_equal(seen.probes[i], "old");
	}
	sample_init(&one, "new", "counts", "hits", 1);
	append_ok(fx->st, &ptr, 1);
	assert_int_equal(one.id, 13);
	list_ok(fx->st, NULL, NULL, 6, 10, &seen, &more);
	assert_int_equal(seen.n, 2);
	assert_int_equal(seen.ids[0], 9);
	assert_int_equal(seen.ids[1], 13);
}

/* Replace block first_id's payload: with its checksum made to match
 * (damage the checksum cannot see, a bug) or left as it was (damage on
 * the disk). */
static void set_payload(struct store *st, uint64_t first_id, uint64_t last_id,
			const uint8_t *payload, size_t len, bool fix_crc)
{
	sqlite3_stmt *stmt;

	store_lock(st);
	assert_int_equal(sqlite3_prepare_v2(st->db,
		fix_crc ? "UPDATE sample_blocks SET payload = ?1, crc = ?3 WHERE first_id = ?2"
			: "UPDATE sample_blocks SET payload = ?1 WHERE first_id = ?2", -1, &stmt, NULL),
		SQLITE_OK);
	sqlite3_bind_blob(stmt, 1, payload, (int)len, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 2, (sqlite3_int64)first_id);
	if (fix_crc)
		sqlite3_bind_int64(stmt, 3, store_block_crc(first_id, last_id, payload, len));
	assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
	assert_int_equal(sqlite3_changes(st->db), 1);
	sqlite3_finalize(stmt);
	store_unlock(st);
}

/* Flip the low bit of byte `at` of block first_id..last_id's payload,
 * leaving its checksum as it was. */
static void flip_bit(struct store *st, uint64_t first_id, uint64_t last_id, size_t at)
{
	uint8_t payload[4096];
	sqlite3_stmt *stmt;
	size_t len;

	store_lock(st);
	assert_int_equal(sqlite3_prepare_v2(st->db,
		"SELECT payload FROM sample_blocks WHERE first_id = ?", -1, &stmt, NULL), SQLITE_OK);
	sqlite3_bind_int64(stmt, 1, (sqlite3_int64)first_id);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	len = (size_t)sqlite3_column_bytes(stmt, 0);
	assert_true(len > at && len <= sizeof(payload));
	memcpy(payload, sqlite3_column_blob(stmt, 0), len);
	sqlite3_finalize(stmt);
	store_unlock(st);
	payload[at] ^= 1;
	set_payload(st, first_id, last_id, payload, len, false);
}

/* One flipped bit in a block: its checksum no longer matches. Readers
 * get the samples around it and a gap for its ids (from the cursor on),
 * the damage is counted and logged once however often it is read, and a
 * bound that reaches it drops it whole instead of failing every append. */
static void test_damaged_block(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct store_health h;
	struct seen seen;
	bool more;

	append_numbered(fx->st, 3, 3);          /* block 1 (probe a), block 2..3 (probe b) */
	append_numbered_from(fx->st, 4, 2);     /* block 4..5 */
	flip_bit(fx->st, 2, 3, 2);

	for (int round = 0; round < 3; round++) {
		list_ok(fx->st, NULL, NULL, 0, 10, &seen, &more);
		assert_int_equal(seen.n, 3);
		assert_int_equal(seen.ids[0], 1);
		assert_int_equal(seen.ids[1], 4);
		assert_int_equal(seen.ids[2], 5);
		assert_int_equal(seen.n_gaps, 1);
		assert_int_equal(seen.gap_first[0], 2);
		assert_int_equal(seen.gap_last[0], 3);
		assert_non_null(strstr(seen.gap_why[0], "checksum"));
	}
	/* From inside the block: the gap starts past the cursor. */
	list_ok(fx->st, NULL, NULL, 2, 10, &seen, &more);
	assert_int_equal(seen.n_gaps, 1);
	assert_int_equal(seen.gap_first[0], 3);
	assert_int_equal(seen.n, 2);
	/* By probe: the same gap. */
	list_ok(fx->st, "b", NULL, 0, 10, &seen, &more);
	assert_int_equal(seen.n_gaps, 1);
	store_health_get(fx->st, &h);
	assert_int_equal(h.damaged_blocks, 1);
	assert_int_equal(h.damaged_samples, 2);

	/* A bound of 3 with 5 held and one more: block 1 goes, then block
	 * 2..3 cannot be cut and goes whole. */
	store_samples_set_bounds(fx->st, 3, 0);
	{
		Graind__Sample one, *ptr = &one;

		sample_init(&one, "a", "counts", "hits", 5);    /* values are id - 1 */
		append_ok(fx->st, &ptr, 1);
		assert_int_equal(one.id, 6);
	}
	assert_int_equal(store_sample_count(fx->st), 3);
	expect_newest(fx->st, 4, 6);
	list_ok(fx->st, NULL, NULL, 0, 10, &seen, &more);
	assert_int_equal(seen.n_gaps, 0);
	store_health_get(fx->st, &h);
	assert_int_equal(h.damaged_blocks, 1);
}

/* A block whose checksum matches but whose framing is broken (a length
 * past its end: a bug, not the disk): the samples before the break are
 * given, a gap covers the rest, and the listing goes on past it. */
static void test_broken_framing(void **state)
{
	struct tmpdb_fixture *fx = *state;
	static const uint8_t broken[] = { 0x7f, 1, 2, 3 };  /* says 127 bytes follow */
	struct seen seen;
	bool more;

	append_numbered(fx->st, 3, 3);
	append_numbered_from(fx->st, 4, 1);
	set_payload(fx->st, 2, 3, broken, sizeof(broken), true);
	list_ok(fx->st, NULL, NULL, 0, 10, &seen, &more);
	assert_int_equal(seen.n, 2);
	assert_int_equal(seen.ids[0], 1);
	assert_int_equal(seen.ids[1], 4);
	assert_int_equal(seen.n_gaps, 1);
	assert_int_equal(seen.gap_first[0], 2);
	assert_int_equal(seen.gap_last[0], 3);
	assert_string_equal(seen.gap_why[0], "framing broken");
}

struct scan_seen {
	unsigned blocks, objects;
	uint64_t first_id;
};

static void scan_found(const struct store_damage *d, void *ctx)
{
	struct scan_seen *ss = ctx;

	if (d->kind == STORE_DAMAGE_SAMPLES) {
		ss->blocks++;
		ss->first_id = d->first_id;
	} else {
		ss->objects++;
	}
}

/* The scan, in small steps, finds the damaged block nobody has read, each
 * pass; the health counts it once and the passes each time. */
static void test_scan(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct store_health h;
	struct gerr err = { 0 };

	uint64_t blocks;

	append_numbered(fx->st, 40, 2);
	{
		sqlite3_stmt *stmt;

		assert_int_equal(sqlite3_prepare_v2(fx->st->db, "SELECT count(*) FROM sample_blocks",
						    -1, &stmt, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
		blocks = (uint64_t)sqlite3_column_int64(stmt, 0);
		sqlite3_finalize(stmt);
	}
	assert_true(blocks > 20);
	flip_bit(fx->st, 32, 32, 0);            /* id 32 alone: probe b */
	for (int pass = 1; pass <= 2; pass++) {
		struct store_scan scan = { 0 };
		struct scan_seen ss = { 0 };
		int steps = 0;

		while (!scan.done) {
			assert_int_equal(store_scan_step(fx->st, &scan, 1, scan_found, &ss, &err), 0);
			steps++;
		}
		assert_true(steps > 1);
		assert_int_equal(scan.blocks, blocks);
		assert_int_equal(scan.damage, 1);
		assert_int_equal(ss.blocks, 1);
		assert_int_equal(ss.first_id, 32);
		store_health_get(fx->st, &h);
		assert_int_equal(h.scans, pass);
		assert_int_equal(h.scan_damage, 1);
		assert_true(h.scan_ms > 0);
		assert_int_equal(h.damaged_blocks, 1);
		assert_int_equal(h.damaged_samples, 1);
	}
}

/* Payloads of random frames: valid sample bytes, shared frames, random
 * bytes, lengths past the end, under a checksum that matches (as a bug
 * would write them) or not (as the disk would damage them). Listing such
 * a block gives samples and at most one gap, never an error or a crash
 * (the sanitizers watch); cutting it always works, a damaged block going
 * whole. */
static const uint8_t *const valid_frames[] = {
	(const uint8_t *)"\x03\x32\x01x",                      /* name "x" */
	(const uint8_t *)"\x04\x52\x02\x18\x05",              /* a field, uint 5 */
	(const uint8_t *)"\x05\x52\x03\x0a\x01n",             /* a field named n */
	(const uint8_t *)"\x06\x00\x12\x01p\x28\x02",        /* shared: probe p, kind */
	(const uint8_t *)"\x06\x00\x52\x03\x0a\x01m",        /* shared: a field name */
	(const uint8_t *)"\x00",                              /* an empty sample */
};

static void test_garbage_blocks(void **state)
{
	struct tmpdb_fixture *fx = *state;
	uint64_t seed = 0x9e3779b97f4a7c15ULL;
	unsigned listed = 0, corrupt = 0;
	uint8_t payload[256];

	Graind__Sample four[4], *ptrs[4];

	for (int i = 0; i < 4; i++) {           /* one block, ids 1..4 */
		sample_init(&four[i], "a", "counts", "hits", i);
		ptrs[i] = &four[i];
	}
	append_ok(fx->st, ptrs, 4);
	for (int round = 0; round < 3000; round++) {
		struct gerr err = { 0 };
		uint64_t cut, cut_bytes;
		struct seen seen;
		size_t len = 0;
		bool more;
		int rc;

		while (len < sizeof(payload) - 40) {
			const uint8_t *f;
			size_t n;

			seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
			if (seed % 64 == 0) {           /* random bytes after a random length */
				n = (seed >> 8) % 24;
				payload[len++] = (uint8_t)n;
				for (size_t i = 0; i < n; i++)
					payload[len++] = (uint8_t)(seed >> (8 * (i % 8))) ^ (uint8_t)i;
			} else {
				f = valid_frames[(seed >> 8) % 6];
				memcpy(payload + len, f, (size_t)f[0] + 1);
				len += (size_t)f[0] + 1;
			}
			if ((seed >> 50) % 9 == 0)
				break;
		}
		if ((seed >> 20) % 16 == 0)
			payload[len - 1 - (seed >> 30) % len] ^= 0x80;  /* one flipped bit */
		set_payload(fx->st, 1, 4, payload, len, (seed >> 40) % 4 != 0);
		memset(&seen, 0, sizeof(seen));
		rc = store_samples_list(fx->st, NULL, NULL, 0, 500, collect, collect_gap, &seen,
					&more, &err);
		assert_int_equal(rc, 0);
		assert_true(seen.n_gaps <= 1);
		assert_true(seen.n <= 4);
		if (seen.n_gaps)
			assert_int_equal(seen.gap_last[0], 4);
		listed += seen.n > 0;
		corrupt += seen.n_gaps;
		store_lock(fx->st);
		assert_int_equal(sqlite3_exec(fx->st->db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
		memset(&err, 0, sizeof(err));
		rc = store_samples_trim_block(fx->st, 1, 2, 0, &cut, &cut_bytes, &err);
		assert_int_equal(rc, 0);
		assert_true(cut >= 2 || cut_bytes == len);
		assert_int_equal(sqlite3_exec(fx->st->db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
		store_unlock(fx->st);
	}
	assert_int_equal(store_sample_count(fx->st), 4);
	/* Both ways were taken, many times. */
	assert_true(listed > 100 && corrupt > 100);
}

/* ---------------------------------------------------------------- shared */

/* The payload bytes the table holds, counted by SQLite. */
static uint64_t stored_bytes(struct store *st)
{
	sqlite3_stmt *stmt;
	uint64_t n;

	store_lock(st);
	assert_int_equal(sqlite3_prepare_v2(st->db,
		"SELECT coalesce(sum(length(payload)), 0) FROM sample_blocks", -1, &stmt, NULL),
		SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	n = (uint64_t)sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	store_unlock(st);
	return n;
}

/* Event samples sharing their head: probe, map, time, kind, name, value,
 * and the name "n" of their first field. */
static void share_head(struct pbwire *w, const char *time)
{
	Graind__Field name, *names = &name;
	Graind__Sample head;
	uint8_t buf[256];
	size_t len;

	graind__field__init(&name);
	name.name = "n";
	graind__sample__init(&head);
	head.n_fields = 1;
	head.fields = &names;
	head.probe = "p";
	head.map = "events";
	head.time = (char *)time;
	head.kind = GRAIND__SAMPLE_KIND__EVENT;
	head.name = "events";
	head.value = 1;
	len = graind__sample__pack(&head, buf);
	store_sample_run_share(w, buf, len);
}

/* A sample of only its own fields: one field, = n, without a name
 * unless `name`, and a second one = n + 1 without a name when `second`. */
static void add_own(struct pbwire *w, uint64_t n, const char *name, bool second)
{
	Graind__Field field[2], *fields[2] = { &field[0], &field[1] };
	Graind__Sample own;

	for (size_t i = 0; i < 2; i++) {
		graind__field__init(&field[i]);
		field[i].value_case = GRAIND__FIELD__VALUE_UINT;
		field[i].uint = n + i;
	}
	if (name)
		field[0].name = (char *)name;
	graind__sample__init(&own);
	own.n_fields = second ? 2 : 1;
	own.fields = fields;
	store_sample_run_add(w, &own);
}

struct shared_seen {
	uint64_t ids[8], n_field[8];
	char time[8][8], name[8][8];
	size_t n;
};

static int collect_shared(const Graind__Sample *s, void *ctx)
{
	struct shared_seen *seen = ctx;

	assert_true(seen->n < 8);
	assert_string_equal(s->probe, "p");
	assert_string_equal(s->map, "events");
	assert_string_equal(s->name, "events");
	assert_int_equal(s->kind, GRAIND__SAMPLE_KIND__EVENT);
	assert_true(s->value == 1);
	assert_in_range(s->n_fields, 1, 2);
	if (s->n_fields == 2) {         /* beyond the shared names: none */
		assert_string_equal(s->fields[1]->name, "");
		assert_int_equal(s->fields[1]->uint, s->fields[0]->uint + 1);
	}
	snprintf(seen->name[seen->n], sizeof(seen->name[0]), "%s", s->fields[0]->name);
	seen->ids[seen->n] = s->id;
	seen->n_field[seen->n] = s->fields[0]->uint;
	snprintf(seen->time[seen->n], sizeof(seen->time[0]), "%s", s->time);
	seen->n++;
	return 0;
}

/* The samples of probe p: ids first.., first fields = first.., times,
 * and the first field's name: "n", shared, but for sample 2's own. */
static void expect_shared(struct store *st, uint64_t first, const char *const *times,
			  size_t n)
{
	struct shared_seen seen = { 0 };
	struct gerr err = { 0 };
	bool more;

	assert_int_equal(store_samples_list(st, "p", NULL, 0, 10, collect_shared, NULL, &seen,
					    &more, &err), 0);
	assert_int_equal(seen.n, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(seen.ids[i], first + i);
		assert_int_equal(seen.n_field[i], first + i);
		assert_string_equal(seen.time[i], times[i]);
		assert_string_equal(seen.name[i], first + i == 2 ? "own" : "n");
	}
}

static void append_one_other(struct store *st)
{
	Graind__Sample one, *ptr = &one;

	sample_init(&one, "q", "counts", "hits", 1);
	append_ok(st, &ptr, 1);
}

/* Samples 1..5 share head T1 (1-3) and T2 (4-5) with the name of their
 * first field, which sample 2 names itself: each reads whole; a
 * bound that cuts the block puts the head its kept samples need back in
 * front of them, or not when the kept part starts with its own; the byte
 * count follows what the table holds. */
static void test_shared_fields(void **state)
{
	static const char *const times[] = { "T1", "T1", "T1", "T2", "T2" };
	struct tmpdb_fixture *fx = *state;
	struct pbwire w = { 0 };
	struct gerr err = { 0 };
	struct store_sample_run run = { .probe = "p", .map = "events", .count = 5 };
	struct drops d;

	share_head(&w, "T1");
	add_own(&w, 1, NULL, false);
	add_own(&w, 2, "own", false);
	add_own(&w, 3, NULL, true);
	share_head(&w, "T2");
	add_own(&w, 4, NULL, false);
	add_own(&w, 5, NULL, true);
	assert_false(w.failed);
	run.data = w.data;
	run.len = w.len;
	assert_int_equal(store_samples_append_runs(fx->st, &run, 1, &err), 0);
	assert_int_equal(run.first_id, 1);
	expect_shared(fx->st, 1, times, 5);
	assert_int_equal(store_sample_bytes(fx->st), w.len);

	/* Cut after 2: sample 3 needs T1 again. */
	store_samples_set_bounds(fx->st, 4, 0);
	append_one_other(fx->st);
	expect_shared(fx->st, 3, times + 2, 3);
	assert_int_equal(store_sample_bytes(fx->st), stored_bytes(fx->st));

	/* Cut after 3: the kept part starts with T2, T1 goes. */
	append_one_other(fx->st);
	expect_shared(fx->st, 4, times + 3, 2);
	assert_int_equal(store_sample_bytes(fx->st), stored_bytes(fx->st));
	drops_ok(fx->st, &d);
	assert_int_equal(d.n, 1);
	assert_string_equal(d.probe[0], "p");
	assert_int_equal(d.count[0], 3);

	/* A byte bound one byte short takes one more sample. */
	{
		Graind__Sample one;

		sample_init(&one, "q", "counts", "hits", 1);
		store_samples_set_bounds(fx->st, 100,
					 store_sample_bytes(fx->st) + packed_size(&one) - 1);
	}
	append_one_other(fx->st);
	expect_shared(fx->st, 5, times + 4, 1);
	assert_int_equal(store_sample_bytes(fx->st), stored_bytes(fx->st));
	pbwire_free(&w);
}

static void test_threads(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct writer w[2] = { { fx->st, "w0", 0 }, { fx->st, "w1", 0 } };
	volatile int writers_done = 0;
	struct reader r = { .st = fx->st, .writers_done = &writers_done };
	pthread_t tw[2], tr;

	assert_int_equal(pthread_create(&tr, NULL, read_samples, &r), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&tw[i], NULL, write_samples, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(tw[i], NULL), 0);
	__atomic_store_n(&writers_done, 1, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(tr, NULL), 0);

	assert_int_equal(w[0].failures + w[1].failures, 0);
	assert_int_equal(r.failures, 0);
	assert_int_equal(r.seen, 2 * WRITER_BATCHES * WRITER_BATCH);
	assert_int_equal(r.per_probe[0], WRITER_BATCHES * WRITER_BATCH);
	assert_int_equal(r.per_probe[1], WRITER_BATCHES * WRITER_BATCH);
	assert_int_equal(r.last_id, 2 * WRITER_BATCHES * WRITER_BATCH);
	assert_int_equal(store_sample_count(fx->st), 2 * WRITER_BATCHES * WRITER_BATCH);
}

/* ---------------------------------------------------------------- rate */

static const char *probe_rate(size_t i)
{
	return i % 2 ? "syscalls" : "tcp_connect";
}

static double seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_rate(void **state)
{
	struct tmpdb_fixture *fx = *state;
	const size_t total = 200000, per_batch = 1000;
	uint64_t batch_bytes = 0;
	struct batch b;
	double start, took;

	batch_init(&b, per_batch, probe_rate, 0);
	for (size_t i = 0; i < per_batch; i++)
		batch_bytes += packed_size(&b.s[i]);
	start = seconds();
	for (size_t done = 0; done < total; done += per_batch)
		append_ok(fx->st, b.ptr, b.n);
	took = seconds() - start;
	print_message("appended %zu samples in batches of %zu: %.0f samples/s\n",
		      total, per_batch, total / took);
	assert_int_equal(b.s[per_batch - 1].id, total);
	assert_int_equal(store_sample_count(fx->st), total);
	assert_int_equal(store_sample_last_id(fx->st), total);
	assert_int_equal(store_sample_bytes(fx->st), total / per_batch * batch_bytes);

	/* At the bound, every batch also drops as many rows. */
	store_samples_set_bounds(fx->st, total / 2, 0);
	append_ok(fx->st, b.ptr, b.n);
	start = seconds();
	for (size_t done = 0; done < total / 2; done += per_batch)
		append_ok(fx->st, b.ptr, b.n);
	took = seconds() - start;
	print_message("at the row bound: %.0f samples/s\n", total / 2 / took);
	assert_int_equal(store_sample_count(fx->st), total / 2);
	batch_free(&b);
}

/* ---------------------------------------------------------------- WAL */

static uint64_t wal_size(const char *db_path)
{
	char path[160];
	struct stat sb;

	snprintf(path, sizeof(path), "%s-wal", db_path);
	return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* Commits that go on while the WAL is checkpointed beside them: the
 * checkpointer copies the WAL, SQLite reuses it, and it never grows past
 * twice its threshold (the writer's own checkpoint takes over there). */
static void test_wal_checkpointed_beside(void **state)
{
	struct tmpdb_fixture *fx = *state;
	const size_t commits = 600, per_batch = 1000;
	uint64_t largest = 0;
	struct batch b;

	if (!fx->st->checkpointer)
		fail_msg("the store started no checkpointer");
	batch_init(&b, per_batch, probe_rate, 0);
	for (size_t i = 0; i < commits; i++) {
		uint64_t now;

		append_ok(fx->st, b.ptr, b.n);
		now = wal_size(fx->db.path);
		largest = now > largest ? now : largest;
	}
	print_message("WAL at most %.1f MiB over %zu commits, %llu checkpoint passes\n",
		      largest / 1048576.0, commits,
		      (unsigned long long)store_checkpointer_passes(fx->st));
	assert_true(store_checkpointer_passes(fx->st) > 0);
	assert_true(largest <= 2ull * STORE_WAL_BYTES + (4u << 20));
	assert_int_equal(store_sample_last_id(fx->st), commits * per_batch);
	batch_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_empty, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_append_list, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_bound_rows, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_bound_bytes, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_bound_bytes_uneven, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_ids_across_reopen, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_failing_append, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_migrate_rows_to_blocks, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_damaged_block, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_broken_framing, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_scan, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_shared_fields, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_garbage_blocks, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_threads, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_wal_checkpointed_beside, tmpdb_setup,
						tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_rate, tmpdb_setup, tmpdb_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
