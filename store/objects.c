/* objects: content-addressed eBPF ELF objects. */
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/util/log.h"
#include "server/util/sha256.h"
#include "store/store_int.h"

/* The columns object_from_row() reads, in its order, and their tables. */
#define OBJECT_COLUMNS "o.sha256, o.name, o.size, o.created_ms, o.builtin, o.meta," \
	" s.signature, s.verified_key"
#define OBJECT_TABLES "objects o LEFT JOIN object_signatures s ON s.sha256 = o.sha256"

void store_object_clear(struct store_object *obj)
{
	if (!obj)
		return;
	free(obj->name);
	free(obj->meta);
	free(obj->signature);
	memset(obj, 0, sizeof(*obj));
}

static bool valid_sha256(const char *sha256)
{
	size_t i;

	for (i = 0; sha256[i]; i++)
		if (!strchr("0123456789abcdef", sha256[i]))
			return false;
	return i == 64;
}

static void *copy_blob(const void *src, size_t len)
{
	void *dst = malloc(len ? len : 1);

	if (dst && len)
		memcpy(dst, src, len);
	return dst;
}

static int object_from_row(sqlite3_stmt *stmt, struct store_object *obj,
			   struct gerr *err)
{
	const char *sha256 = (const char *)sqlite3_column_text(stmt, 0);
	const char *name = (const char *)sqlite3_column_text(stmt, 1);
	const void *meta = sqlite3_column_blob(stmt, 5);
	size_t meta_len = (size_t)sqlite3_column_bytes(stmt, 5);
	const char *signature = (const char *)sqlite3_column_text(stmt, 6);
	const char *verified_key = (const char *)sqlite3_column_text(stmt, 7);

	memset(obj, 0, sizeof(*obj));
	snprintf(obj->sha256, sizeof(obj->sha256), "%s", sha256 ? sha256 : "");
	obj->size = (uint64_t)sqlite3_column_int64(stmt, 2);
	obj->created_ms = sqlite3_column_int64(stmt, 3);
	obj->builtin = sqlite3_column_int(stmt, 4) != 0;
	obj->name = strdup(name ? name : "");
	if (meta) {
		obj->meta = copy_blob(meta, meta_len);
		obj->meta_len = meta_len;
	}
	if (signature)
		obj->signature = strdup(signature);
	snprintf(obj->verified_key, sizeof(obj->verified_key), "%s",
		 verified_key ? verified_key : "");
	if (!obj->name || (meta && !obj->meta) || (signature && !obj->signature)) {
		store_object_clear(obj);
		return gerr_set(err, 500, "out of memory");
	}
	return 0;
}

int store_object_put(struct store *st, const char *sha256, const char *name,
		     const void *bytes, size_t len, const void *meta,
		     size_t meta_len, bool builtin, bool *created,
		     struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	*created = false;
	if (!valid_sha256(sha256))
		return gerr_set(err, 400,
				"object id \"%.80s\" is not a lowercase hex sha256",
				sha256);
	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_OBJECT_PUT,
		"INSERT INTO objects (sha256, name, size, meta, builtin, created_ms, bytes)"
		" VALUES (?, ?, ?, ?, ?, ?, ?)"
		/* The same bytes again change nothing; bytes damaged in the
		 * database are put right by an upload of the true ones (the
		 * caller checked that they hash to the id). */
		" ON CONFLICT (sha256) DO UPDATE SET bytes = excluded.bytes"
		" WHERE objects.bytes IS NOT excluded.bytes", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, sha256, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, name ? name : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 3, (sqlite3_int64)len);
	if (meta)
		sqlite3_bind_blob64(stmt, 4, meta, meta_len, SQLITE_STATIC);
	sqlite3_bind_int(stmt, 5, builtin);
	sqlite3_bind_int64(stmt, 6, store_now_ms());
	/* An empty object is an empty blob, not NULL. */
	sqlite3_bind_blob64(stmt, 7, bytes ? bytes : "", len, SQLITE_STATIC);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		store_fail(st, err, "cannot store object %s", sha256);
		goto out;
	}
	*created = sqlite3_changes(st->db) == 1;
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_object_sign(struct store *st, const char *sha256, const char *signature,
		      const char *verified_key, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_OBJECT_SIGN,
		"INSERT INTO object_signatures (sha256, signature, verified_key)"
		" SELECT sha256, ?2, ?3 FROM objects WHERE sha256 = ?1"
		" ON CONFLICT (sha256) DO UPDATE SET signature = excluded.signature,"
		" verified_key = excluded.verified_key", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, sha256, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, signature, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 3, verified_key, -1, SQLITE_STATIC);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		store_fail(st, err, "cannot store the signature of object %.80s", sha256);
		goto out;
	}
	if (sqlite3_changes(st->db) == 0) {
		gerr_set(err, 404, "object %.80s not found", sha256);
		goto out;
	}
	/* No rowid, so no update hook: the listing shows the signer. */
	store_summary_stale(st, STORE_SUMMARY_OBJECTS);
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_object_get(struct store *st, const char *sha256,
		     struct store_object *obj, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1, rc;

	memset(obj, 0, sizeof(*obj));
	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_OBJECT_GET,
		"SELECT " OBJECT_COLUMNS " FROM " OBJECT_TABLES " WHERE o.sha256 = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, sha256, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE)
		gerr_set(err, 404, "object %.80s not found", sha256);
	else if (rc != SQLITE_ROW)
		store_fail(st, err, "cannot read object %.80s", sha256);
	else
		ret = object_from_row(stmt, obj, err);
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

bool store_object_intact(const char *sha256, const void *bytes, size_t n,
			 struct store_damage *d)
{
	char got[SHA256_HEX_LEN + 1];

	sha256_hex(bytes, n, got);
	if (strcasecmp(got, sha256) == 0)
		return true;
	memset(d, 0, sizeof(*d));
	d->kind = STORE_DAMAGE_OBJECT;
	snprintf(d->sha256, sizeof(d->sha256), "%.64s", sha256);
	snprintf(d->what, sizeof(d->what), "its %zu bytes hash to %s", n, got);
	return false;
}

/* Whether bytes read back are still those of id `sha256`; a quick_check
 * does not look inside blob pages, so each read does. */
static bool content_matches(struct store *st, const char *sha256, const void *bytes, size_t n,
			    struct gerr *err)
{
	struct store_damage d;

	if (store_object_intact(sha256, bytes, n, &d))
		return true;
	pthread_mutex_lock(&st->health_lock);
	st->health.corrupt_reads++;
	pthread_mutex_unlock(&st->health_lock);
	store_damage_note(st, &d);
	gerr_set(err, 500, "object %.64s is damaged in the store: %s; "
		 "upload it again (the database at %.200s needs a check)", sha256, d.what, st->path);
	return false;
}

int store_object_content(struct store *st, const char *sha256, void **bytes,
			 size_t *len, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1, rc;
	size_t n;

	*bytes = NULL;
	*len = 0;
	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_OBJECT_CONTENT,
		"SELECT bytes FROM objects WHERE sha256 = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, sha256, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE) {
		gerr_set(err, 404, "object %.80s not found", sha256);
		goto out;
	}
	if (rc != SQLITE_ROW) {
		store_fail(st, err, "cannot read object %.80s", sha256);
		goto out;
	}
	n = (size_t)sqlite3_column_bytes(stmt, 0);
	*bytes = copy_blob(sqlite3_column_blob(stmt, 0), n);
	if (!*bytes) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	*len = n;
	if (!content_matches(st, sha256, *bytes, n, err)) {
		free(*bytes);
		*bytes = NULL;
		*len = 0;
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_object_list(struct store *st, const char *after, unsigned limit,
		      int (*fn)(const struct store_object *obj, void *ctx),
		      void *ctx, bool *more, struct gerr *err)
{
	struct store_object obj;
	sqlite3_stmt *stmt;
	unsigned seen = 0;
	int ret = -1, rc;

	*more = false;
	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_OBJECT_LIST,
		"SELECT " OBJECT_COLUMNS " FROM " OBJECT_TABLES " WHERE o.sha256 > ?"
		" ORDER BY o.sha256 LIMIT ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, after ? after : "", -1, SQLITE_STATIC);
	/* One row past the page tells whether there is another page. */
	sqlite3_bind_int64(stmt, 2, (sqlite3_int64)limit + 1);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (seen++ == limit) {
			*more = true;
			break;
		}
		if (object_from_row(stmt, &obj, err) < 0)
			goto out;
		rc = fn(&obj, ctx);
		store_object_clear(&obj);
		if (rc) {
			ret = rc;
			goto out;
		}
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		store_fail(st, err, "cannot list objects");
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_object_delete(struct store *st, const char *sha256,
			struct gerr *err)
{
	sqlite3_stmt *stmt = NULL;
	char users[320];
	unsigned n_users;
	int ret = -1;

	store_lock(st);
	if (store_probes_using_object(st, sha256, users, sizeof(users),
				       &n_users, err) < 0)
		goto out;
	if (n_users) {
		gerr_set(err, 409,
			 "object %.80s is used by probe(s): %s; delete them first",
			 sha256, users);
		goto out;
	}
	stmt = store_stmt(st, STORE_STMT_OBJECT_DELETE,
			  "DELETE FROM objects WHERE sha256 = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, sha256, -1, SQLITE_STATIC);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		store_fail(st, err, "cannot delete object %.80s", sha256);
		goto out;
	}
	if (sqlite3_changes(st->db) == 0) {
		gerr_set(err, 404, "object %.80s not found", sha256);
		goto out;
	}
	/* No rowid, so no update hook: the listing shows the signer. */
	store_summary_stale(st, STORE_SUMMARY_OBJECTS);
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_image_ref_set(struct store *st, const char *image, const char *sha256,
			const char *digest, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_IMAGE_REF_SET,
		"INSERT OR REPLACE INTO image_refs (image, sha256, digest, pulled_ms)"
		" VALUES (?, ?, ?, ?)", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, image, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, sha256, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 3, digest, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 4, store_now_ms());
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		store_fail(st, err, "cannot record image %.200s", image);
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_image_ref_get(struct store *st, const char *image, char sha256[65], struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1, rc;

	sha256[0] = '\0';
	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_IMAGE_REF_GET,
		"SELECT sha256 FROM image_refs WHERE image = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, image, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		snprintf(sha256, 65, "%s", (const char *)sqlite3_column_text(stmt, 0));
		ret = 0;
	} else if (rc == SQLITE_DONE) {
		gerr_set(err, 404, "image %.200s was never pulled", image);
	} else {
		store_fail(st, err, "cannot read image %.200s", image);
	}
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}
