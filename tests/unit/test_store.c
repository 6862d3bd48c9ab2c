/* Unit tests for store/: schema and migrations, objects, audit (its
 * queue and its bounds), refusal of corrupt and newer databases, use from
 * several threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/util/clock.h"
#include "server/util/sha256.h"
#include "store/store.h"
#include "tests/unit/tmpdb.h"

struct fixture {
	struct tmpdb db;
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	tmpdb_make(&fx->db, "test_store");
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	tmpdb_remove(&fx->db);
	free(fx);
	return 0;
}

/* ---------------------------------------------------------------- helpers */

static void sha_of(unsigned i, char out[65])
{
	snprintf(out, 65, "%064x", i);
}

static void *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat sb;
	void *buf;

	assert_non_null(f);
	assert_int_equal(fstat(fileno(f), &sb), 0);
	*len = (size_t)sb.st_size;
	buf = malloc(*len + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, *len, f), *len);
	fclose(f);
	return buf;
}

static void spit(const char *path, const void *buf, size_t len, long offset)
{
	FILE *f = fopen(path, offset < 0 ? "wb" : "r+b");

	assert_non_null(f);
	if (offset > 0)
		assert_int_equal(fseek(f, offset, SEEK_SET), 0);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	fclose(f);
}

static void random_bytes(unsigned char *buf, size_t len, unsigned seed)
{
	srandom(seed);
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)random();
}

static bool file_exists(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0;
}

/* store_open must fail with a message holding `want`, and leave the file
 * (and the absence of a WAL) exactly as it was. */
static void assert_refused(const char *path, const char *want,
			   struct gerr *out)
{
	struct gerr err = { 0 };
	struct store *st = NULL;
	char wal[160];
	size_t before_len, after_len;
	void *before, *after;
	bool had_wal;

	snprintf(wal, sizeof(wal), "%s-wal", path);
	had_wal = file_exists(wal);
	before = slurp(path, &before_len);
	assert_int_equal(store_open(path, &st, &err), -1);
	assert_null(st);
	assert_int_equal(err.status, 500);
	if (!strstr(err.msg, want) || strchr(err.msg, '\n'))
		fail_msg("message \"%s\" lacks \"%s\" or is not one line",
			 err.msg, want);
	after = slurp(path, &after_len);
	assert_int_equal(after_len, before_len);
	assert_memory_equal(after, before, before_len);
	if (!had_wal && file_exists(wal)) {
		size_t wal_len;
		void *w = slurp(wal, &wal_len);

		free(w);
		assert_int_equal(wal_len, 0);
	}
	free(before);
	free(after);
	if (out)
		*out = err;
}

static void put_ok(struct store *st, unsigned i, const char *name,
		   bool want_created)
{
	struct gerr err = { 0 };
	char sha[65], bytes[32], meta[16];
	bool created = !want_created;
	int n;

	sha_of(i, sha);
	n = snprintf(bytes, sizeof(bytes), "\x7f" "ELF object %u", i);
	snprintf(meta, sizeof(meta), "meta%u", i);
	if (store_object_put(st, sha, name, bytes, (size_t)n, meta,
			     strlen(meta), false, &created, &err) < 0)
		fail_msg("put %u: %s", i, err.msg);
	assert_int_equal(created, want_created);
}

/* ---------------------------------------------------------------- schema */

/* FIPS 180-2's examples, one and two blocks, and the empty message. */
static void test_sha256_vectors(void **state)
{
	static const struct { const char *in, *hex; } v[] = {
		{ "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
		{ "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
	};
	char hex[SHA256_HEX_LEN + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		sha256_hex(v[i].in, strlen(v[i].in), hex);
		assert_string_equal(hex, v[i].hex);
	}
}

static void test_fresh_open_creates_schema(void **state)
{
	struct fixture *fx = *state;
	int64_t before = (int64_t)time(NULL) * 1000 - 1000;
	struct store *st = tmpdb_open(fx->db.path);
	struct stat sb;

	assert_int_equal(store_schema_version(), 11);
	assert_int_equal(summary_of(st).objects, 0);
	assert_int_equal(summary_of(st).probes, 0);
	assert_int_equal(store_sample_count(st), 0);
	assert_int_equal(store_sink_count(st), 0);
	assert_true(summary_of(st).db_bytes > 0);
	store_close(st);

	assert_int_equal(tmpdb_int(fx->db.path, "SELECT max(version) FROM schema_version"),
			 store_schema_version());
	assert_true(tmpdb_int(fx->db.path, "SELECT min(applied_ms) FROM schema_version") >= before);
	assert_int_equal(tmpdb_int(fx->db.path,
		"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
		" ('objects', 'probes', 'sample_blocks', 'sample_ids', 'sinks', 'sample_drops',"
		"  'audit', 'managed', 'ring_cursors')"), 9);
	/* WAL is recorded in the header (bytes 18 and 19 are 2), and the
	 * pages are 64 KiB (bytes 16 and 17 say 1). */
	{
		size_t len;
		unsigned char *hdr = slurp(fx->db.path, &len);

		assert_true(len >= 100);
		assert_int_equal(hdr[18], 2);
		assert_int_equal(hdr[19], 2);
		assert_int_equal(hdr[16] << 8 | hdr[17], 1);
		free(hdr);
	}
	/* It will hold sink credentials. */
	assert_int_equal(stat(fx->db.path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
}

static void test_reopen_is_idempotent(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);

	put_ok(st, 1, "kept.o", true);
	store_close(st);
	for (int i = 0; i < 3; i++) {
		st = tmpdb_open(fx->db.path);
		assert_int_equal(summary_of(st).objects, 1);
		store_close(st);
	}
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM schema_version"),
			 store_schema_version());
}

/* The files as a crash would leave them: the newest commits only in the
 * WAL. The read-only check must see them, and the store must keep them. */
static void test_reopen_after_crash(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	char copy[160], from[200], to[200];
	struct gerr err = { 0 };
	size_t len;
	void *buf;

	put_ok(st, 1, "a.o", true);
	assert_int_equal(store_audit_append(st, "admin", "admin", "POST /v1/objects", "a",
					    201, NULL, &err), 0);
	snprintf(copy, sizeof(copy), "%s/copy.db", fx->db.dir);
	snprintf(from, sizeof(from), "%s-wal", fx->db.path);
	snprintf(to, sizeof(to), "%s-wal", copy);
	buf = slurp(from, &len);
	assert_true(len > 0);
	spit(to, buf, len, -1);
	free(buf);
	buf = slurp(fx->db.path, &len);
	spit(copy, buf, len, -1);
	free(buf);
	store_close(st);

	st = tmpdb_open(copy);
	assert_int_equal(summary_of(st).objects, 1);
	store_close(st);
	unlink(copy);
	unlink(to);
	snprintf(to, sizeof(to), "%s-shm", copy);
	unlink(to);
}

static void test_open_missing_dir_fails(void **state)
{
	struct fixture *fx = *state;
	struct gerr err = { 0 };
	struct store *st = NULL;
	char path[192];

	snprintf(path, sizeof(path), "%s/nope/graind.db", fx->db.dir);
	assert_int_equal(store_open(path, &st, &err), -1);
	assert_null(st);
	assert_int_equal(err.status, 500);
	assert_non_null(strstr(err.msg, path));
}

/* ---------------------------------------------------------------- objects */

static void test_object_put_get_content(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct store_object obj = { 0 };
	struct gerr err = { 0 };
	const char bytes[] = "\x7f" "ELF\0binary\0bytes";
	char sha[65];
	void *got;
	size_t len;
	bool created = false;

	sha256_hex(bytes, sizeof(bytes), sha);
	assert_int_equal(store_object_put(st, sha, "first.o", bytes, sizeof(bytes),
					  "M", 1, true, &created, &err), 0);
	assert_true(created);
	/* Same content again: not stored twice, first name kept. */
	assert_int_equal(store_object_put(st, sha, "second.o", bytes, sizeof(bytes),
					  "N", 1, false, &created, &err), 0);
	assert_false(created);
	assert_int_equal(summary_of(st).objects, 1);

	assert_int_equal(store_object_get(st, sha, &obj, &err), 0);
	assert_string_equal(obj.sha256, sha);
	assert_string_equal(obj.name, "first.o");
	assert_int_equal(obj.size, sizeof(bytes));
	assert_true(obj.builtin);
	assert_int_equal(obj.meta_len, 1);
	assert_memory_equal(obj.meta, "M", 1);
	assert_true(obj.created_ms > (int64_t)time(NULL) * 1000 - 60000);
	store_object_clear(&obj);
	assert_null(obj.name);

	assert_int_equal(store_object_content(st, sha, &got, &len, &err), 0);
	assert_int_equal(len, sizeof(bytes));
	assert_memory_equal(got, bytes, sizeof(bytes));
	free(got);

	sha_of(8, sha);
	assert_int_equal(store_object_get(st, sha, &obj, &err), -1);
	assert_int_equal(err.status, 404);
	assert_non_null(strstr(err.msg, sha));
	assert_int_equal(store_object_content(st, sha, &got, &len, &err), -1);
	assert_int_equal(err.status, 404);
	assert_null(got);
	store_close(st);
}

static void test_object_empty_and_no_meta(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct store_object obj = { 0 };
	struct gerr err = { 0 };
	char sha[65];
	void *got;
	size_t len = 99;
	bool created;

	sha256_hex("", 0, sha);
	assert_int_equal(store_object_put(st, sha, NULL, NULL, 0, NULL, 0, false,
					  &created, &err), 0);
	assert_true(created);
	assert_int_equal(store_object_get(st, sha, &obj, &err), 0);
	assert_string_equal(obj.name, "");
	assert_null(obj.meta);
	assert_int_equal(obj.meta_len, 0);
	store_object_clear(&obj);
	assert_int_equal(store_object_content(st, sha, &got, &len, &err), 0);
	assert_int_equal(len, 0);
	assert_non_null(got);
	free(got);
	store_close(st);
}

/* Bytes that no longer hash to their id are never handed out. */
static void test_object_damaged_bytes_refused(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct store_health h;
	struct gerr err = { 0 };
	char sha[65];
	void *got = (void *)1;
	size_t len = 1;
	bool created;

	sha_of(9, sha);         /* an id these bytes do not have */
	assert_int_equal(store_object_put(st, sha, "x.o", "abc", 3, NULL, 0, false,
					  &created, &err), 0);
	assert_int_equal(store_object_content(st, sha, &got, &len, &err), -1);
	assert_int_equal(err.status, 500);
	assert_non_null(strstr(err.msg, "is damaged in the store"));
	assert_null(got);
	assert_int_equal(len, 0);
	store_health_get(st, &h);
	assert_int_equal(h.corrupt_reads, 1);
	store_close(st);
}

static void test_object_bad_sha(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct gerr err = { 0 };
	char upper[65];
	bool created = true;

	sha_of(0xabc, upper);
	upper[63] = 'C';
	assert_int_equal(store_object_put(st, "abc", "x", "b", 1, NULL, 0, false,
					  &created, &err), -1);
	assert_int_equal(err.status, 400);
	assert_false(created);
	assert_int_equal(store_object_put(st, upper, "x", "b", 1, NULL, 0, false,
					  &created, &err), -1);
	assert_int_equal(err.status, 400);
	assert_int_equal(summary_of(st).objects, 0);
	store_close(st);
}

struct collected {
	char sha[16][65];
	unsigned n;
	unsigned stop_after;   /* 0: never */
};

static int collect_object(const struct store_object *obj, void *ctx)
{
	struct collected *c = ctx;

	assert_true(c->n < 16);
	assert_non_null(obj->name);
	snprintf(c->sha[c->n++], 65, "%s", obj->sha256);
	return c->stop_after && c->n == c->stop_after ? -7 : 0;
}

static void test_object_list_paging(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct gerr err = { 0 };
	struct collected c = { 0 };
	char sha[65];
	bool more;

	/* Out of order, to see the listing sort them. */
	for (unsigned i = 5; i >= 1; i--)
		put_ok(st, i, "o", true);

	assert_int_equal(store_object_list(st, NULL, 2, collect_object, &c,
					   &more, &err), 0);
	assert_int_equal(c.n, 2);
	assert_true(more);
	sha_of(1, sha);
	assert_string_equal(c.sha[0], sha);
	sha_of(2, sha);
	assert_string_equal(c.sha[1], sha);

	assert_int_equal(store_object_list(st, c.sha[1], 2, collect_object, &c,
					   &more, &err), 0);
	assert_int_equal(c.n, 4);
	assert_true(more);
	sha_of(4, sha);
	assert_string_equal(c.sha[3], sha);

	assert_int_equal(store_object_list(st, c.sha[3], 2, collect_object, &c,
					   &more, &err), 0);
	assert_int_equal(c.n, 5);
	assert_false(more);
	sha_of(5, sha);
	assert_string_equal(c.sha[4], sha);

	/* Exactly a full last page: no more. */
	c.n = 0;
	assert_int_equal(store_object_list(st, "", 5, collect_object, &c,
					   &more, &err), 0);
	assert_int_equal(c.n, 5);
	assert_false(more);

	/* The callback's non-zero return stops the walk and comes back. */
	c.n = 0;
	c.stop_after = 2;
	assert_int_equal(store_object_list(st, NULL, 5, collect_object, &c,
					   &more, &err), -7);
	assert_int_equal(c.n, 2);
	store_close(st);
}

static void test_object_delete(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct gerr err = { 0 };
	char sha[65];

	put_ok(st, 1, "a.o", true);
	put_ok(st, 2, "b.o", true);
	sha_of(1, sha);
	assert_int_equal(store_object_delete(st, sha, &err), 0);
	assert_int_equal(summary_of(st).objects, 1);
	assert_int_equal(store_object_delete(st, sha, &err), -1);
	assert_int_equal(err.status, 404);
	assert_non_null(strstr(err.msg, sha));
	/* Deleted content can be uploaded again. */
	put_ok(st, 1, "a.o", true);
	assert_int_equal(summary_of(st).objects, 2);
	store_close(st);
}

static void test_object_delete_in_use(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct gerr err = { 0 };
	char sha[65], sql[512], want[256];

	put_ok(st, 1, "a.o", true);
	sha_of(1, sha);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO probes (name, object_sha256, spec, created_ms, updated_ms)"
		 " VALUES ('web', '%s', x'', 0, 0), ('dns', '%s', x'', 0, 0)",
		 sha, sha);
	tmpdb_exec(fx->db.path, sql);

	assert_int_equal(store_object_delete(st, sha, &err), -1);
	assert_int_equal(err.status, 409);
	snprintf(want, sizeof(want),
		 "object %s is used by probe(s): dns, web; delete them first", sha);
	assert_string_equal(err.msg, want);
	assert_int_equal(summary_of(st).objects, 1);

	tmpdb_exec(fx->db.path, "DELETE FROM probes");
	assert_int_equal(store_object_delete(st, sha, &err), 0);
	assert_int_equal(summary_of(st).objects, 0);
	store_close(st);
}

static void test_object_delete_many_users(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct gerr err = { 0 };
	char sha[65], sql[256];

	put_ok(st, 1, "a.o", true);
	sha_of(1, sha);
	for (int i = 0; i < 60; i++) {
		snprintf(sql, sizeof(sql),
			 "INSERT INTO probes (name, object_sha256, spec, created_ms, updated_ms)"
			 " VALUES ('probe-with-a-long-name-%02d', '%s', x'', 0, 0)", i, sha);
		tmpdb_exec(fx->db.path, sql);
	}
	assert_int_equal(store_object_delete(st, sha, &err), -1);
	assert_int_equal(err.status, 409);
	assert_non_null(strstr(err.msg, "probe-with-a-long-name-00, "));
	assert_non_null(strstr(err.msg, " more; delete them first"));
	store_close(st);
}

/* ---------------------------------------------------------------- audit */

struct audit_seen {
	uint64_t ids[16];
	char targets[16][16];
	unsigned n;
};

static int collect_audit(const struct store_audit *rec, void *ctx)
{
	struct audit_seen *s = ctx;

	assert_true(s->n < 16);
	assert_string_equal(rec->role, "admin");
	assert_string_equal(rec->principal, "admin");
	assert_string_equal(rec->action, "PUT /v1/probes/{name}");
	assert_true(rec->time_ms > (int64_t)time(NULL) * 1000 - 60000);
	s->ids[s->n] = rec->id;
	snprintf(s->targets[s->n++], 16, "%s", rec->target);
	return 0;
}

static void test_audit_append_list(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct audit_seen s = { 0 }, newest = { 0 };
	struct gerr err = { 0 };
	char target[16];
	bool more;

	for (int i = 0; i < 5; i++) {
		snprintf(target, sizeof(target), "p%d", i);
		assert_int_equal(store_audit_append(st, "admin", "admin", "PUT /v1/probes/{name}",
						    target, 200 + i, NULL, &err), 0);
	}
	assert_int_equal(store_audit_list(st, 0, 3, false, collect_audit, &s, &more, &err), 0);
	assert_int_equal(s.n, 3);
	assert_true(more);
	assert_string_equal(s.targets[0], "p0");
	assert_string_equal(s.targets[2], "p2");
	assert_true(s.ids[0] < s.ids[1] && s.ids[1] < s.ids[2]);

	assert_int_equal(store_audit_list(st, s.ids[2], 3, false, collect_audit, &s, &more,
					  &err), 0);
	assert_int_equal(s.n, 5);
	assert_false(more);
	assert_string_equal(s.targets[3], "p3");
	assert_string_equal(s.targets[4], "p4");

	assert_int_equal(store_audit_list(st, s.ids[4], 3, false, collect_audit, &s, &more,
					  &err), 0);
	assert_int_equal(s.n, 5);
	assert_false(more);

	/* Newest first: a page from the newest, then the older ones before
	 * the last id seen. */
	assert_int_equal(store_audit_list(st, 0, 3, true, collect_audit, &newest, &more, &err), 0);
	assert_int_equal(newest.n, 3);
	assert_true(more);
	assert_string_equal(newest.targets[0], "p4");
	assert_string_equal(newest.targets[2], "p2");
	assert_int_equal(store_audit_list(st, newest.ids[2], 3, true, collect_audit, &newest, &more,
					  &err), 0);
	assert_int_equal(newest.n, 5);
	assert_false(more);
	assert_string_equal(newest.targets[3], "p1");
	assert_string_equal(newest.targets[4], "p0");
	store_close(st);

	/* Ids never go back, even after the newest record is removed. */
	tmpdb_exec(fx->db.path, "DELETE FROM audit WHERE id = (SELECT max(id) FROM audit)");
	st = tmpdb_open(fx->db.path);
	assert_int_equal(store_audit_append(st, "admin", "admin", "PUT /v1/probes/{name}",
					    "p5", 200, "", &err), 0);
	s.n = 0;
	assert_int_equal(store_audit_list(st, s.ids[3], 10, false, collect_audit, &s,
					  &more, &err), 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.targets[0], "p5");
	assert_true(s.ids[0] > 5);
	store_close(st);
}

/* Every record of the log in order: targets as numbers ("p17" → 17). */
struct audit_all {
	uint64_t ids[64];
	int targets[64];
	unsigned n;
};

static int collect_any(const struct store_audit *rec, void *ctx)
{
	struct audit_all *s = ctx;

	assert_true(s->n < 64);
	assert_int_equal(rec->target[0], 'p');
	s->ids[s->n] = rec->id;
	s->targets[s->n++] = atoi(rec->target + 1);
	return 0;
}

static void append_n(struct store *st, int first, int n)
{
	struct gerr err = { 0 };
	char target[16];

	for (int i = first; i < first + n; i++) {
		snprintf(target, sizeof(target), "p%d", i);
		if (store_audit_append(st, "admin", "admin", "DELETE /v1/probes/*", target, 204, NULL,
				       &err) < 0)
			fail_msg("append %d: %s", i, err.msg);
	}
}

static void notified(void *ctx)
{
	(*(int *)ctx)++;
}

/* Appends wait in memory until a flush, a list or the close, one
 * transaction for all of them; the notify says when the first waits. */
static void test_audit_queue(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct audit_all s = { 0 };
	struct gerr err = { 0 };
	int calls = 0;
	bool more;

	store_audit_set_notify(st, notified, &calls);
	append_n(st, 0, 3);
	assert_int_equal(calls, 1);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM audit"), 0);
	assert_int_equal(store_audit_flush(st, &err), 0);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM audit"), 3);
	assert_int_equal(store_audit_flush(st, &err), 0);   /* nothing waits */

	/* A list sees what was appended before it. */
	append_n(st, 3, 2);
	assert_int_equal(calls, 2);
	assert_int_equal(store_audit_list(st, 0, 10, false, collect_any, &s, &more, &err), 0);
	assert_int_equal(s.n, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(s.targets[i], i);

	/* A full queue is written by the append that finds it full. */
	store_audit_set_notify(st, NULL, NULL);
	append_n(st, 5, STORE_AUDIT_QUEUE_MAX + 1);
	assert_int_equal(calls, 2);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM audit"),
			 5 + STORE_AUDIT_QUEUE_MAX);

	/* Closing writes the rest. */
	append_n(st, 6 + STORE_AUDIT_QUEUE_MAX, 2);
	store_close(st);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM audit"),
			 8 + STORE_AUDIT_QUEUE_MAX);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT max(id) - min(id) + 1 FROM audit"),
			 8 + STORE_AUDIT_QUEUE_MAX);
}

/* The row bound keeps the newest records; ids go on, and a page token
 * of a pruned page still leads to the oldest record kept. */
static void test_audit_prune_rows(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct audit_all s = { 0 };
	struct gerr err = { 0 };
	uint64_t token, pruned;
	bool more;

	store_audit_set_bounds(st, 10);
	append_n(st, 0, 4);
	assert_int_equal(store_audit_list(st, 0, 2, false, collect_any, &s, &more, &err), 0);
	assert_true(more);
	token = s.ids[1];                       /* the page after p1 */
	append_n(st, 4, 21);                    /* p0..p24 */
	assert_int_equal(store_audit_flush(st, &err), 0);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM audit"), 10);
	assert_int_equal(store_audit_pruned(st), 15);

	s.n = 0;
	assert_int_equal(store_audit_list(st, token, 4, false, collect_any, &s, &more, &err), 0);
	assert_int_equal(s.n, 4);
	assert_true(more);
	assert_int_equal(s.targets[0], 15);
	assert_int_equal(s.ids[0], token + 14);
	assert_int_equal(store_audit_list(st, s.ids[3], 20, false, collect_any, &s, &more, &err), 0);
	assert_int_equal(s.n, 10);
	assert_false(more);
	for (unsigned i = 0; i < s.n; i++)
		assert_int_equal(s.targets[i], 15 + (int)i);

	/* Within the bound, nothing more goes; a lower bound takes effect at
	 * the next prune, and ids are never given again. */
	assert_int_equal(store_audit_prune(st, 0, &pruned, &err), 0);
	assert_int_equal(pruned, 0);
	store_audit_set_bounds(st, 3);
	assert_int_equal(store_audit_prune(st, 0, &pruned, &err), 0);
	assert_int_equal(pruned, 7);
	assert_int_equal(store_audit_pruned(st), 22);
	append_n(st, 25, 1);
	s.n = 0;
	assert_int_equal(store_audit_list(st, 0, 20, false, collect_any, &s, &more, &err), 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.targets[0], 23);
	assert_int_equal(s.targets[2], 25);
	assert_int_equal(s.ids[2], s.ids[1] + 1);
	assert_true(s.ids[2] > token + 23);
	store_close(st);
}

/* The age bound drops records older than the cut, whatever their ids. */
static void test_audit_prune_age(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct audit_all s = { 0 };
	struct gerr err = { 0 };
	int64_t now = (int64_t)time(NULL) * 1000;
	uint64_t pruned;
	bool more;

	append_n(st, 0, 6);
	assert_int_equal(store_audit_flush(st, &err), 0);
	store_close(st);
	/* p1 and p4 a day old, p2 an hour. */
	tmpdb_exec(fx->db.path,
		 "UPDATE audit SET time_ms = time_ms - 86400000 WHERE target IN ('p1', 'p4');"
		 "UPDATE audit SET time_ms = time_ms - 3600000 WHERE target = 'p2'");
	st = tmpdb_open(fx->db.path);
	assert_int_equal(store_audit_prune(st, now - 2 * 3600000, &pruned, &err), 0);
	assert_int_equal(pruned, 2);
	assert_int_equal(store_audit_list(st, 0, 20, false, collect_any, &s, &more, &err), 0);
	assert_int_equal(s.n, 4);
	assert_int_equal(s.targets[0], 0);
	assert_int_equal(s.targets[1], 2);
	assert_int_equal(s.targets[2], 3);
	assert_int_equal(s.targets[3], 5);
	/* 0: no age bound. */
	assert_int_equal(store_audit_prune(st, 0, &pruned, &err), 0);
	assert_int_equal(pruned, 0);
	assert_int_equal(store_audit_prune(st, now - 1800000, &pruned, &err), 0);
	assert_int_equal(pruned, 1);
	assert_int_equal(store_audit_pruned(st), 3);
	store_close(st);
}

/* A backlog (an old database, a lowered bound) goes in chunks: a flush
 * takes at most 10000 of it, a prune all of it, by both bounds. */
static void test_audit_prune_backlog(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct gerr err = { 0 };
	uint64_t pruned;

	store_close(st);
	tmpdb_exec(fx->db.path,
		 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)"
		 " INSERT INTO audit (time_ms, role, action, target, result, message)"
		 " SELECT CASE WHEN i <= 1000 THEN 1000 ELSE 9e12 END,"
		 " 'admin', 'DELETE /v1/probes/*', 'p' || i, 204, '' FROM n");
	st = tmpdb_open(fx->db.path);
	store_audit_set_bounds(st, 5000);
	append_n(st, 30001, 1);
	assert_int_equal(store_audit_flush(st, &err), 0);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM audit"), 20001);
	assert_int_equal(store_audit_prune(st, 2000, &pruned, &err), 0);
	assert_int_equal(pruned, 15001);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM audit"), 5000);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT min(id) FROM audit"), 25002);
	/* By age: 22000 old records after the newest, and every second one
	 * of the 5000 before; the rest is newer than the cut. */
	store_audit_set_bounds(st, 100000);
	tmpdb_exec(fx->db.path,
		 "UPDATE audit SET time_ms = 1000 WHERE id % 2 = 0;"
		 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 22000)"
		 " INSERT INTO audit (time_ms, role, action, target, result, message)"
		 " SELECT 1500, 'admin', 'DELETE /v1/probes/*', 'p' || i, 204, '' FROM n");
	assert_int_equal(store_audit_prune(st, 2000, &pruned, &err), 0);
	assert_int_equal(pruned, 24500);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM audit"), 2500);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM audit WHERE id % 2 = 0"), 0);
	store_close(st);
	assert_int_equal(tmpdb_int(fx->db.path,
		"SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'audit_by_time'"), 1);
}

/* ---------------------------------------------------------------- refusal */

/* Garbage over one page in the middle of a real database, for several
 * pages in turn: some fail quick_check, others fail reading at all. */
static void test_corrupt_database_refused(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct gerr err = { 0 };
	unsigned char *garbage, *pristine;
	size_t len, pages, page_size, first;
	int checked = 0;

	for (unsigned i = 0; i < 1500; i++) {
		put_ok(st, i, "object.o", true);
		assert_int_equal(store_audit_append(st, "admin", "admin", "DELETE /v1/objects/{sha256}",
						    "some target", 204, "", &err), 0);
	}
	store_close(st);

	pristine = slurp(fx->db.path, &len);
	/* The page size, from the file header (1 stands for 65536). */
	page_size = (size_t)pristine[16] << 8 | pristine[17];
	if (page_size == 1)
		page_size = 65536;
	pages = len / page_size;
	assert_true(pages > 8);
	garbage = malloc(page_size);
	assert_non_null(garbage);
	first = pages > 17 ? pages / 2 - 8 : 1;
	for (size_t page = first; page < first + 16 && page < pages; page++) {
		spit(fx->db.path, pristine, len, -1);
		random_bytes(garbage, page_size, (unsigned)page);
		spit(fx->db.path, garbage, page_size, (long)(page * page_size));
		assert_refused(fx->db.path, "is corrupt (quick_check: ", &err);
		if (strstr(err.msg, "quick_check: Page "))
			checked++;
		assert_refused(fx->db.path, "; refusing to start. Move it aside or restore a backup.", NULL);
		assert_refused(fx->db.path, fx->db.path, NULL);
	}
	free(garbage);
	free(pristine);
	/* Some pages were found out by quick_check itself, not by reading. */
	assert_true(checked > 0);
}

static void test_random_file_refused(void **state)
{
	struct fixture *fx = *state;
	unsigned char garbage[64 * 1024];

	random_bytes(garbage, sizeof(garbage), 7);
	spit(fx->db.path, garbage, sizeof(garbage), -1);
	assert_refused(fx->db.path, "is corrupt or not a SQLite database", NULL);
	assert_refused(fx->db.path, "refusing to start. Move it aside or restore a backup.", NULL);
}

static void test_newer_schema_refused(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	char want[160];

	store_close(st);
	tmpdb_exec(fx->db.path, "INSERT INTO schema_version VALUES (99, 0)");
	snprintf(want, sizeof(want),
		 "database schema version 99 is newer than this graind supports (%d); upgrade graind",
		 store_schema_version());
	assert_refused(fx->db.path, want, NULL);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT max(version) FROM schema_version"), 99);
}

/* ---------------------------------------------------------------- threads */

#define THREADS 4
#define PUTS_PER_THREAD 100

struct worker {
	struct store *st;
	unsigned base;
	int failures;
};

/* No cmocka assertions in here: they cannot fail from another thread. */
struct walk {
	unsigned seen;
	bool out_of_order;
	char last[65];
};

static int walk_object(const struct store_object *obj, void *ctx)
{
	struct walk *wk = ctx;

	if (strcmp(obj->sha256, wk->last) <= 0)
		wk->out_of_order = true;
	snprintf(wk->last, sizeof(wk->last), "%s", obj->sha256);
	wk->seen++;
	return 0;
}

/* Every object, a page at a time. */
static int walk_all(struct store *st, struct walk *wk, struct gerr *err)
{
	bool more = true;

	memset(wk, 0, sizeof(*wk));
	while (more)
		if (store_object_list(st, wk->last, 50, walk_object, wk, &more,
				      err) < 0)
			return -1;
	return 0;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct walk wk;
	struct gerr err;
	char sha[65], bytes[16];
	bool created;

	for (unsigned i = 0; i < PUTS_PER_THREAD; i++) {
		sha_of(w->base + i, sha);
		snprintf(bytes, sizeof(bytes), "obj%u", w->base + i);
		if (store_object_put(w->st, sha, "t.o", bytes, strlen(bytes), NULL,
				     0, false, &created, &err) < 0 || !created)
			w->failures++;
		if (store_audit_append(w->st, "admin", "admin", "POST /v1/objects", sha, 201,
				       NULL, &err) < 0)
			w->failures++;
		if (walk_all(w->st, &wk, &err) < 0 || wk.out_of_order ||
		    wk.seen < i + 1 || wk.seen > THREADS * PUTS_PER_THREAD)
			w->failures++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct worker w[THREADS];
	pthread_t tid[THREADS];
	struct gerr err;
	struct walk wk;

	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ .st = st, .base = 1 + i * 10000 };
		assert_int_equal(pthread_create(&tid[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(tid[i], NULL), 0);
		assert_int_equal(w[i].failures, 0);
	}
	assert_int_equal(summary_of(st).objects, THREADS * PUTS_PER_THREAD);
	assert_int_equal(walk_all(st, &wk, &err), 0);
	assert_int_equal(wk.seen, THREADS * PUTS_PER_THREAD);
	assert_false(wk.out_of_order);
	store_close(st);
	assert_int_equal(tmpdb_int(fx->db.path, "SELECT count(*) FROM audit"),
			 THREADS * PUTS_PER_THREAD);
}

/* A store stuck behind another connection's write lock: its summary
 * still answers at once, and shows the write once it is done. */
struct stuck_put {
	struct store *st;
	int ret;
	bool done;
};

static void *put_behind_lock(void *arg)
{
	struct stuck_put *p = arg;
	struct gerr err;
	char sha[65];
	bool created;

	sha_of(7, sha);
	p->ret = store_object_put(p->st, sha, "late.o", "late", 4, NULL, 0, false, &created, &err);
	__atomic_store_n(&p->done, true, __ATOMIC_RELEASE);
	return NULL;
}

static void test_summary_never_waits(void **state)
{
	struct fixture *fx = *state;
	struct store *st = tmpdb_open(fx->db.path);
	struct stuck_put p = { .st = st };
	struct store_summary sum;
	sqlite3 *other;
	pthread_t tid;
	int64_t t0;

	put_ok(st, 1, "a.o", true);
	assert_int_equal(sqlite3_open(fx->db.path, &other), SQLITE_OK);
	assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(pthread_create(&tid, NULL, put_behind_lock, &p), 0);
	usleep(200 * 1000);
	/* The put holds the store and waits for SQLite's lock. */
	assert_false(__atomic_load_n(&p.done, __ATOMIC_ACQUIRE));
	t0 = clock_mono_us();
	store_summary_get(st, &sum);
	assert_true(clock_mono_us() - t0 < 100 * 1000);
	assert_int_equal(sum.objects, 1);
	assert_true(sum.db_bytes > 0);
	assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(other);
	assert_int_equal(pthread_join(tid, NULL), 0);
	assert_int_equal(p.ret, 0);
	assert_int_equal(summary_of(st).objects, 2);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		cmocka_unit_test(test_sha256_vectors),
		T(test_fresh_open_creates_schema),
		T(test_summary_never_waits),
		T(test_reopen_is_idempotent),
		T(test_reopen_after_crash),
		T(test_open_missing_dir_fails),
		T(test_object_put_get_content),
		T(test_object_empty_and_no_meta),
		T(test_object_damaged_bytes_refused),
		T(test_object_bad_sha),
		T(test_object_list_paging),
		T(test_object_delete),
		T(test_object_delete_in_use),
		T(test_object_delete_many_users),
		T(test_audit_append_list),
		T(test_audit_queue),
		T(test_audit_prune_rows),
		T(test_audit_prune_age),
		T(test_audit_prune_backlog),
		T(test_corrupt_database_refused),
		T(test_random_file_refused),
		T(test_newer_schema_refused),
		T(test_threads),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
