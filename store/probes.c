/* probes: the desired state of probes. */
#include "store/store.h"
#include "store/store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int store_probes_using_object(struct store *st, const char *sha256,
			      char *buf, size_t size, unsigned *count,
			      struct gerr *err)
{
	sqlite3_stmt *stmt;
	size_t used = 0;
	unsigned hidden = 0;
	int ret = -1, rc;

	*count = 0;
	buf[0] = '\0';
	stmt = store_stmt(st, STORE_STMT_PROBE_NAMES_BY_OBJECT,
		"SELECT name FROM probes WHERE object_sha256 = ? ORDER BY name",
		err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, sha256, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(stmt, 0);
		size_t need = strlen(name) + (*count ? 2 : 0);

		if (hidden || used + need + 24 >= size) {
			hidden++;
		} else {
			used += snprintf(buf + used, size - used, "%s%s",
					 *count ? ", " : "", name);
		}
		(*count)++;
	}
	if (rc != SQLITE_DONE) {
		store_fail(st, err, "cannot find probes using object %s", sha256);
		goto out;
	}
	if (hidden)
		snprintf(buf + used, size - used, " and %u more", hidden);
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

#define PROBE_COLUMNS \
	"name, coalesce(object_sha256, ''), spec, generation, desired_state, created_ms, updated_ms"

void store_probe_clear(struct store_probe *probe)
{
	free(probe->spec);
	memset(probe, 0, sizeof(*probe));
}

static int probe_from_row(sqlite3_stmt *stmt, struct store_probe *p, struct gerr *err)
{
	const void *spec = sqlite3_column_blob(stmt, 2);
	size_t spec_len = (size_t)sqlite3_column_bytes(stmt, 2);

	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", (const char *)sqlite3_column_text(stmt, 0));
	snprintf(p->object_sha256, sizeof(p->object_sha256), "%s",
		 (const char *)sqlite3_column_text(stmt, 1));
	p->spec = malloc(spec_len ? spec_len : 1);
	if (!p->spec)
		return gerr_set(err, 500, "out of memory");
	if (spec_len)
		memcpy(p->spec, spec, spec_len);
	p->spec_len = spec_len;
	p->generation = (uint64_t)sqlite3_column_int64(stmt, 3);
	p->attached = sqlite3_column_int(stmt, 4) != 0;
	p->created_ms = sqlite3_column_int64(stmt, 5);
	p->updated_ms = sqlite3_column_int64(stmt, 6);
	return 0;
}

/* Read one probe with the lock held: 1 found, 0 missing, -1 error. */
static int probe_read(struct store *st, const char *name, struct store_probe *p,
		      struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1, rc;

	stmt = store_stmt(st, STORE_STMT_PROBE_GET,
		"SELECT " PROBE_COLUMNS " FROM probes WHERE name = ?", err);
	if (!stmt)
		return -1;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		ret = probe_from_row(stmt, p, err) < 0 ? -1 : 1;
	else if (rc == SQLITE_DONE)
		ret = 0;
	else
		store_fail(st, err, "cannot read probe %s", name);
	store_stmt_done(stmt);
	return ret;
}

int store_probe_get(struct store *st, const char *name, struct store_probe *out,
		    struct gerr *err)
{
	int found;

	store_lock(st);
	found = probe_read(st, name, out, err);
	store_unlock(st);
	if (found == 0)
		return gerr_set(err, 404, "no probe named %s", name);
	return found < 0 ? -1 : 0;
}

static int probe_write(struct store *st, const struct store_probe *old, const char *name,
		       const char *object_sha256, const void *spec, size_t spec_len,
		       bool attached, uint64_t generation, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int64_t now = store_now_ms();
	int ret = -1;

	if (old)
		stmt = store_stmt(st, STORE_STMT_PROBE_UPDATE,
			"UPDATE probes SET object_sha256 = ?2, spec = ?3, desired_state = ?4,"
			" generation = ?5, updated_ms = ?6 WHERE name = ?1", err);
	else
		stmt = store_stmt(st, STORE_STMT_PROBE_INSERT,
			"INSERT INTO probes (name, object_sha256, spec, desired_state, generation,"
			" created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)", err);
	if (!stmt)
		return -1;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	if (object_sha256 && *object_sha256)
		sqlite3_bind_text(stmt, 2, object_sha256, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(stmt, 2);
	sqlite3_bind_blob64(stmt, 3, spec_len ? spec : "", spec_len, SQLITE_STATIC);
	sqlite3_bind_int(stmt, 4, attached);
	sqlite3_bind_int64(stmt, 5, (sqlite3_int64)generation);
	sqlite3_bind_int64(stmt, 6, now);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		if (sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_FOREIGNKEY)
			gerr_set(err, 404, "no object with sha256 %s", object_sha256);
		else
			store_fail(st, err, "cannot store probe %s", name);
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

int store_probe_put(struct store *st, const char *name, const char *object_sha256,
		    const void *spec, size_t spec_len, bool attached,
		    struct store_probe *out,
		    bool *created, bool *changed, struct gerr *err)
{
	struct store_probe old = { 0 };
	uint64_t generation = 1;
	int found, ret = -1;

	*created = *changed = false;
	store_lock(st);
	found = probe_read(st, name, &old, err);
	if (found < 0)
		goto out;
	if (found) {
		*changed = old.spec_len != spec_len ||
			   (spec_len && memcmp(old.spec, spec, spec_len) != 0);
		generation = old.generation + (*changed ? 1 : 0);
		if (!*changed && old.attached == attached) {
			ret = 0;
			goto out;       /* nothing to write */
		}
	} else {
		*created = *changed = true;
	}
	if (probe_write(st, found ? &old : NULL, name, object_sha256, spec, spec_len,
			attached, generation, err) < 0)
		goto out;
	ret = 0;
out:
	if (ret == 0 && out) {
		store_probe_clear(&old);
		if (probe_read(st, name, out, err) != 1)
			ret = -1;
	}
	store_probe_clear(&old);
	store_unlock(st);
	return ret;
}

int store_probe_set_attached(struct store *st, const char *name, bool attached,
			     struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_PROBE_SET_ATTACHED,
		"UPDATE probes SET desired_state = ?, updated_ms = ? WHERE name = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_int(stmt, 1, attached);
	sqlite3_bind_int64(stmt, 2, store_now_ms());
	sqlite3_bind_text(stmt, 3, name, -1, SQLITE_STATIC);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		store_fail(st, err, "cannot update probe %s", name);
		goto out;
	}
	if (sqlite3_changes(st->db) == 0) {
		gerr_set(err, 404, "no probe named %s", name);
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_probe_delete(struct store *st, const char *name, struct gerr *err)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_PROBE_DELETE, "DELETE FROM probes WHERE name = ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		store_fail(st, err, "cannot delete probe %s", name);
		goto out;
	}
	if (sqlite3_changes(st->db) == 0) {
		gerr_set(err, 404, "no probe named %s", name);
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}

int store_probe_list(struct store *st, const char *after, unsigned limit,
		     int (*fn)(const struct store_probe *probe, void *ctx),
		     void *ctx, bool *more, struct gerr *err)
{
	struct store_probe p;
	sqlite3_stmt *stmt;
	unsigned seen = 0;
	int ret = -1, rc;

	*more = false;
	store_lock(st);
	stmt = store_stmt(st, STORE_STMT_PROBE_LIST,
		"SELECT " PROBE_COLUMNS " FROM probes WHERE name > ? ORDER BY name LIMIT ?", err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, after ? after : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 2, (sqlite3_int64)limit + 1);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (seen++ == limit) {
			*more = true;
			break;
		}
		if (probe_from_row(stmt, &p, err) < 0)
			goto out;
		rc = fn(&p, ctx);
		store_probe_clear(&p);
		if (rc) {
			ret = rc;
			goto out;
		}
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		store_fail(st, err, "cannot list probes");
		goto out;
	}
	ret = 0;
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return ret;
}
