/* integrity: damage inside the database that SQLite's checks do not see
 * (store.h, "integrity"): noting it once, the scan that looks for it, and
 * the read-only store of `graind check`.
 *
 * Readers (objects.c, samples.c) check what they read and note damage
 * here as they meet it; the scan reads everything, a little at a time,
 * with the same checks. The set of damage already noted lives under
 * health_lock, so noting never waits for the store's own lock. */
#include "store/store.h"
#include "store/store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "server/util/log.h"

/* Blocks read under one hold of the store lock, and the payload bytes
 * after which the page ends early: the lock is what the sample writer
 * waits for. */
#define SCAN_PAGE_BLOCKS 16
#define SCAN_PAGE_BYTES (256u << 10)
#define STR_(x) #x
#define STR(x) STR_(x)

enum { SCAN_OBJECTS, SCAN_BLOCKS, SCAN_DONE };

/* ---------------------------------------------------------------- noting */

/* One number per damaged thing: an object by the first 60 bits of its id,
 * a block by the id where its damage starts. The low bit tells them apart. */
static uint64_t damage_key(const struct store_damage *d)
{
	char head[16];

	if (d->kind == STORE_DAMAGE_OBJECT) {
		snprintf(head, sizeof(head), "%.15s", d->sha256);
		return strtoull(head, NULL, 16) << 1 | 1;
	}
	return d->first_id << 1;
}

/* Lock (health_lock) held. */
static bool seen_before(struct store *st, uint64_t key)
{
	for (size_t i = 0; i < st->damage_seen_n; i++)
		if (st->damage_seen[i] == key)
			return true;
	if (st->damage_seen_n < STORE_DAMAGE_SEEN) {
		st->damage_seen[st->damage_seen_n++] = key;
		return false;
	}
	if (!st->damage_overflow_logged) {
		st->damage_overflow_logged = true;
		log_error("msg=\"more damage than graind keeps track of: further damage is counted each "
			  "time it is met; run graind check\" database=\"%s\"", st->path);
	}
	return false;
}

bool store_damage_note(struct store *st, const struct store_damage *d)
{
	bool remembered_full;

	if (d->kind == STORE_DAMAGE_DATABASE)
		return false;
	pthread_mutex_lock(&st->health_lock);
	if (seen_before(st, damage_key(d))) {
		pthread_mutex_unlock(&st->health_lock);
		return false;
	}
	remembered_full = st->damage_overflow_logged;
	if (d->kind == STORE_DAMAGE_OBJECT) {
		st->health.damaged_objects++;
	} else {
		st->health.damaged_blocks++;
		st->health.damaged_samples += d->last_id - d->first_id + 1;
	}
	pthread_mutex_unlock(&st->health_lock);
	if (remembered_full)
		return true;
	if (d->kind == STORE_DAMAGE_OBJECT)
		log_error("msg=\"object damaged in the store, not served; upload it again\" "
			  "sha256=%s what=\"%s\" database=\"%s\"", d->sha256, d->what, st->path);
	else
		log_error("msg=\"samples damaged in the store, skipped by readers\" ids=%llu..%llu "
			  "probe=\"%s\" what=\"%s\" database=\"%s\"",
			  (unsigned long long)d->first_id, (unsigned long long)d->last_id, d->probe,
			  d->what, st->path);
	return true;
}

/* ---------------------------------------------------------------- scan */

struct found {
	struct store_damage d[SCAN_PAGE_BLOCKS];
	size_t n;
};

static void found_add(struct store *st, struct found *f, const struct store_damage *d)
{
	store_damage_note(st, d);
	if (f->n < SCAN_PAGE_BLOCKS)
		f->d[f->n++] = *d;
}

/* A read that SQLite itself finds corrupt: damage of the database, which
 * ends this part of the pass (what lies past it cannot be reached in
 * order); any other failure fails the step. */
static int unreadable(struct store *st, struct found *f, const char *what, int rc,
		      struct gerr *err)
{
	struct store_damage d = { .kind = STORE_DAMAGE_DATABASE };

	if ((rc & 0xff) != SQLITE_CORRUPT && (rc & 0xff) != SQLITE_NOTADB)
		return store_fail(st, err, "integrity scan: cannot read %s", what);
	snprintf(d.what, sizeof(d.what), "%s cannot be read: %s", what, sqlite3_errmsg(st->db));
	found_add(st, f, &d);
	return 0;
}

/* The object after scan->object_after. Lock held. */
static int scan_object(struct store *st, struct store_scan *scan, uint64_t *read,
		       struct found *f, struct gerr *err)
{
	struct store_damage d;
	sqlite3_stmt *stmt;
	const char *sha256;
	const void *bytes;
	size_t n;
	int ret = -1, rc;

	stmt = store_stmt(st, STORE_STMT_SCAN_OBJECT,
		"SELECT sha256, bytes FROM objects WHERE sha256 > ? ORDER BY sha256 LIMIT 1", err);
	if (!stmt)
		return -1;
	sqlite3_bind_text(stmt, 1, scan->object_after, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE) {
		scan->phase = SCAN_BLOCKS;
	} else if (rc != SQLITE_ROW) {
		if (unreadable(st, f, "objects", rc, err) < 0)
			goto out;
		scan->phase = SCAN_BLOCKS;
	} else {
		sha256 = (const char *)sqlite3_column_text(stmt, 0);
		bytes = sqlite3_column_blob(stmt, 1);
		n = (size_t)sqlite3_column_bytes(stmt, 1);
		snprintf(scan->object_after, sizeof(scan->object_after), "%s",
			 sha256 ? sha256 : "");
		scan->objects++;
		*read += n;
		if (!store_object_intact(scan->object_after, bytes, n, &d))
			found_add(st, f, &d);
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

/* A page of blocks after scan->block_after. Lock held. */
static int scan_blocks(struct store *st, struct store_scan *scan, uint64_t *read,
		       struct found *f, struct gerr *err)
{
	struct store_damage d;
	sqlite3_stmt *stmt;
	uint64_t page_bytes = 0;
	unsigned rows = 0;
	int ret = -1, rc;

	stmt = store_stmt(st, STORE_STMT_SCAN_BLOCKS,
		"SELECT first_id, last_id, probe, crc, payload FROM sample_blocks"
		" WHERE first_id > ? ORDER BY first_id LIMIT " STR(SCAN_PAGE_BLOCKS), err);
	if (!stmt)
		return -1;
	sqlite3_bind_int64(stmt, 1, (sqlite3_int64)scan->block_after);
	while (page_bytes < SCAN_PAGE_BYTES && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		uint64_t first = (uint64_t)sqlite3_column_int64(stmt, 0);
		uint64_t last = (uint64_t)sqlite3_column_int64(stmt, 1);
		const uint8_t *payload = sqlite3_column_blob(stmt, 4);
		size_t len = (size_t)sqlite3_column_bytes(stmt, 4);

		rows++;
		scan->block_after = first;
		scan->blocks++;
		page_bytes += len;
		if (!store_block_intact(first, last, (const char *)sqlite3_column_text(stmt, 2),
					payload, len, store_block_crc_column(stmt, 3), &d))
			found_add(st, f, &d);
	}
	if (page_bytes < SCAN_PAGE_BYTES && rc != SQLITE_DONE && rc != SQLITE_ROW) {
		if (unreadable(st, f, "sample blocks", rc, err) < 0)
			goto out;
		scan->phase = SCAN_DONE;
	}
	if (page_bytes < SCAN_PAGE_BYTES && rows < SCAN_PAGE_BLOCKS)
		scan->phase = SCAN_DONE;
	*read += page_bytes;
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

static void pass_done(struct store *st, const struct store_scan *scan)
{
	pthread_mutex_lock(&st->health_lock);
	st->health.scans++;
	st->health.scan_ms = store_now_ms();
	st->health.scan_damage = scan->damage;
	pthread_mutex_unlock(&st->health_lock);
}

int store_scan_step(struct store *st, struct store_scan *scan, uint64_t budget,
		    void (*fn)(const struct store_damage *d, void *ctx), void *ctx,
		    struct gerr *err)
{
	uint64_t read = 0;
	struct found f;
	int rc = 0;

	while (rc == 0 && read < budget && scan->phase != SCAN_DONE) {
		f.n = 0;
		store_lock(st);
		if (scan->phase == SCAN_OBJECTS)
			rc = scan_object(st, scan, &read, &f, err);
		else
			rc = scan_blocks(st, scan, &read, &f, err);
		store_unlock(st);
		scan->damage += f.n;
		for (size_t i = 0; fn && i < f.n; i++)
			fn(&f.d[i], ctx);
	}
	scan->bytes += read;
	if (rc == 0 && scan->phase == SCAN_DONE && !scan->done) {
		scan->done = true;
		pass_done(st, scan);
	}
	return rc;
}

/* ---------------------------------------------------------------- check */

int store_open_check(const char *path, struct store **out, struct gerr *err)
{
	struct store *st;
	struct stat sb;
	int rc, version = 0;

	*out = NULL;
	store_init_once();
	if (stat(path, &sb) < 0)
		return gerr_set(err, errno == ENOENT ? 404 : 500, "cannot open database %s: %s",
				path, strerror(errno));
	st = calloc(1, sizeof(*st));
	if (!st || !(st->path = strdup(path))) {
		free(st);
		return gerr_set(err, 500, "out of memory");
	}
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->health_lock, NULL);
	st->read_only = true;
	rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(st->db, 5000);
		rc = store_schema_read(st->db, &version);
	}
	if (rc != SQLITE_OK) {
		gerr_set(err, 500, "cannot read database %s: %s", path,
			 st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
		goto fail;
	}
	if (version != store_schema_version()) {
		gerr_set(err, 409, "database %s has schema version %d, this graind knows %d: "
			 "check it with the graind that wrote it, or start this one on it once "
			 "to migrate it", path, version, store_schema_version());
		goto fail;
	}
	*out = st;
	return 0;
fail:
	store_close(st);
	return -1;
}

/* Each line of one integrity_check row, as a problem. */
static int report_lines(const char *text, void (*fn)(const struct store_damage *d, void *ctx),
			void *ctx)
{
	struct store_damage d = { .kind = STORE_DAMAGE_DATABASE };
	int n = 0;
	size_t len;

	while (*text) {
		len = strcspn(text, "\n");
		snprintf(d.what, sizeof(d.what), "%.*s", (int)len, text);
		if (len && strcmp(d.what, "*** in database main ***") != 0) {
			n++;
			if (fn)
				fn(&d, ctx);
		}
		text += len;
		if (*text == '\n')
			text++;
	}
	return n;
}

int store_check_database(struct store *st,
			 void (*fn)(const struct store_damage *d, void *ctx), void *ctx,
			 struct gerr *err)
{
	sqlite3_stmt *stmt = NULL;
	const char *text;
	int problems = 0, rc;

	store_lock(st);
	rc = sqlite3_prepare_v2(st->db, "PRAGMA integrity_check", -1, &stmt, NULL);
	while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		text = (const char *)sqlite3_column_text(stmt, 0);
		if (text && strcmp(text, "ok") != 0)
			problems += report_lines(text, fn, ctx);
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE && rc != SQLITE_OK)
		problems = store_fail(st, err, "integrity_check");
	sqlite3_finalize(stmt);
	store_unlock(st);
	return problems;
}
