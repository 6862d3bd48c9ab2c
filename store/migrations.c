/* migrations: the schema, as numbered steps applied in order.
 *
 * A step, once released, never changes: a new column or table is a new
 * step at the end of the list. */
#include "store/store.h"
#include "store/store_int.h"

struct migration {
	int version;
	const char *sql;
};

static const struct migration migrations[] = {
	{ 1,
	  "CREATE TABLE schema_version ("
	  "  version INTEGER PRIMARY KEY,"
	  "  applied_ms INTEGER NOT NULL"
	  ");"
	  /* Content-addressed ELF objects. The bytes come last so that
	   * reading the other columns does not walk their overflow pages. */
	  "CREATE TABLE objects ("
	  "  sha256 TEXT PRIMARY KEY,"
	  "  name TEXT NOT NULL,"
	  "  size INTEGER NOT NULL,"
	  "  meta BLOB,"                       /* packed graind.Object */
	  "  builtin INTEGER NOT NULL DEFAULT 0,"
	  "  created_ms INTEGER NOT NULL,"
	  "  bytes BLOB NOT NULL"
	  ");"
	  /* Desired state of probes; the kernel state is pinned in bpffs. */
	  "CREATE TABLE probes ("
	  "  name TEXT PRIMARY KEY,"
	  "  object_sha256 TEXT REFERENCES objects(sha256),"
	  "  spec BLOB NOT NULL,"               /* packed graind.ProbeSpec */
	  "  generation INTEGER NOT NULL DEFAULT 1,"
	  "  desired_state INTEGER NOT NULL DEFAULT 1,"
	  "  created_ms INTEGER NOT NULL,"
	  "  updated_ms INTEGER NOT NULL"
	  ");"
	  "CREATE INDEX probes_by_object ON probes(object_sha256);"
	  /* Append-only; AUTOINCREMENT so an id is never reused once the
	   * oldest rows are dropped: sink cursors and S3 keys rely on it. */
	  "CREATE TABLE samples ("
	  "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	  "  probe TEXT NOT NULL,"
	  "  map TEXT NOT NULL,"
	  "  time_ns INTEGER NOT NULL,"
	  "  kind INTEGER NOT NULL,"            /* graind.SampleKind */
	  "  name TEXT NOT NULL,"
	  "  tags BLOB,"
	  "  value REAL,"
	  "  payload BLOB"                      /* event fields */
	  ");"
	  "CREATE INDEX samples_by_probe ON samples(probe, id);"
	  /* Each sink's settings and how far it has sent (a sample id). */
	  "CREATE TABLE sinks ("
	  "  name TEXT PRIMARY KEY,"
	  "  config BLOB NOT NULL,"             /* packed graind.Sink */
	  "  cursor INTEGER NOT NULL DEFAULT 0,"
	  "  last_success_ms INTEGER,"
	  "  last_error TEXT,"
	  "  bytes_sent INTEGER NOT NULL DEFAULT 0,"
	  "  samples_sent INTEGER NOT NULL DEFAULT 0,"
	  "  created_ms INTEGER NOT NULL,"
	  "  updated_ms INTEGER NOT NULL"
	  ");"
	  /* Samples dropped to keep the table within its bound. */
	  "CREATE TABLE sample_drops ("
	  "  probe TEXT PRIMARY KEY,"
	  "  count INTEGER NOT NULL DEFAULT 0"
	  ");"
	  "CREATE TABLE audit ("
	  "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	  "  time_ms INTEGER NOT NULL,"
	  "  role TEXT NOT NULL,"
	  "  action TEXT NOT NULL,"
	  "  target TEXT NOT NULL,"
	  "  result INTEGER NOT NULL,"
	  "  message TEXT NOT NULL"
	  ");" },
	{ 2,
	  /* Samples in blocks: a run of one probe and map with consecutive
	   * ids per row (see store.h). A row per sample capped the buffer
	   * at SQLite's insert rate. */
	  "CREATE TABLE sample_blocks ("
	  "  first_id INTEGER PRIMARY KEY,"
	  "  last_id INTEGER NOT NULL,"
	  "  probe TEXT NOT NULL,"
	  "  map TEXT NOT NULL,"
	  "  time_ns INTEGER NOT NULL,"         /* when stored */
	  "  payload BLOB NOT NULL"
	  ");"
	  "CREATE INDEX sample_blocks_by_probe ON sample_blocks(probe, first_id);"
	  /* The highest id ever given, kept when its samples are gone. */
	  "CREATE TABLE sample_ids (last_id INTEGER NOT NULL);"
	  "INSERT INTO sample_ids SELECT coalesce("
	  "  (SELECT seq FROM sqlite_sequence WHERE name = 'samples'), 0);"
	  "INSERT INTO sample_blocks"
	  "  SELECT id, id, probe, map, time_ns, graind_sample_frame(payload) FROM samples;"
	  "DROP TABLE samples;" },
	{ 3,
	  /* The last id of the S3 batch being sent (0: none), recorded
	   * before its first PUT, so that the batch is sent again after a
	   * crash with the same samples, under the same keys. */
	  "ALTER TABLE sinks ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;" },
	{ 4,
	  /* The audit log is pruned by age oldest first (by rows it goes by
	   * the primary key). */
	  "CREATE INDEX audit_by_time ON audit(time_ms);" },
	{ 5,
	  /* Probes and sinks a file of --config-dir owns ("file:/path"):
	   * the API may not change them, and they go when the file does. */
	  "CREATE TABLE managed ("
	  "  kind INTEGER NOT NULL,"            /* enum store_managed_kind */
	  "  name TEXT NOT NULL,"
	  "  owner TEXT NOT NULL,"
	  "  PRIMARY KEY (kind, name)"
	  ") WITHOUT ROWID;" },
	{ 6,
	  /* An object's minisign signature, in a table of its own so that
	   * reading it does not walk the object's bytes (README "Signed
	   * objects"); it goes with the object. */
	  "CREATE TABLE object_signatures ("
	  "  sha256 TEXT PRIMARY KEY,"
	  "  signature TEXT NOT NULL,"         /* the .minisig file */
	  "  verified_key TEXT NOT NULL"       /* hex public key it verified against at upload, or "" */
	  ") WITHOUT ROWID;"
	  "CREATE TRIGGER object_signatures_follow AFTER DELETE ON objects BEGIN"
	  "  DELETE FROM object_signatures WHERE sha256 = old.sha256;"
	  " END;" },
	{ 7,
	  /* Who made a change: the principal's name beside its role. */
	  "ALTER TABLE audit ADD COLUMN principal TEXT NOT NULL DEFAULT '';" },
	{ 8,
	  /* How far the samples of a probe's ring buffer are committed, in
	   * the transaction of those samples (collect/ringread.h): a restart
	   * that finds the kernel's consumer position behind it skips what is
	   * stored already. The kernel's id of the map tells one ring from
	   * a later one of the same name. */
	  "CREATE TABLE ring_cursors ("
	  "  probe TEXT NOT NULL,"
	  "  map TEXT NOT NULL,"
	  "  map_id INTEGER NOT NULL,"
	  "  pos INTEGER NOT NULL,"
	  "  PRIMARY KEY (probe, map)"
	  ") WITHOUT ROWID;" },
	{ 9,
	  /* Each sample block's CRC-32 (store_block_crc), checked whenever it
	   * is read: quick_check does not look inside blob pages. Blocks
	   * written before have none (NULL): their framing is still checked,
	   * and rewriting the whole buffer to add it could not be done on the
	   * full disk an upgrade may meet. */
	  "ALTER TABLE sample_blocks ADD COLUMN crc INTEGER;" },
	{ 10,
	  /* A sink's generation, as a probe's: 1 at creation, +1 at every
	   * change of its configuration, for If-Match on a PUT. */
	  "ALTER TABLE sinks ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;" },
	{ 11,
	  /* The object each image reference was last pulled as (an object
	   * keeps only the origin of its first fetch): what a probe's
	   * PULL_IF_NOT_PRESENT looks up. It goes with its object. */
	  "CREATE TABLE image_refs ("
	  "  image TEXT PRIMARY KEY,"           /* registry/repository:tag@digest as parsed */
	  "  sha256 TEXT NOT NULL,"
	  "  digest TEXT NOT NULL,"             /* the manifest's */
	  "  pulled_ms INTEGER NOT NULL"
	  ") WITHOUT ROWID;"
	  "CREATE TRIGGER image_refs_follow AFTER DELETE ON objects BEGIN"
	  "  DELETE FROM image_refs WHERE sha256 = old.sha256;"
	  " END;" },
};

#define N_MIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

int store_schema_version(void)
{
	return migrations[N_MIGRATIONS - 1].version;
}

static int table_exists(sqlite3 *db, const char *name, bool *exists)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db,
		"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
		-1, &stmt, NULL);
	if (rc != SQLITE_OK)
		goto out;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	*exists = rc == SQLITE_ROW;
	if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		rc = SQLITE_OK;
out:
	sqlite3_finalize(stmt);
	return rc;
}

int store_schema_read(sqlite3 *db, int *version)
{
	sqlite3_stmt *stmt = NULL;
	bool exists = false;
	int rc;

	*version = 0;
	rc = table_exists(db, "schema_version", &exists);
	if (rc != SQLITE_OK || !exists)
		return rc;
	rc = sqlite3_prepare_v2(db,
		"SELECT coalesce(max(version), 0) FROM schema_version",
		-1, &stmt, NULL);
	if (rc != SQLITE_OK)
		goto out;
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		*version = sqlite3_column_int(stmt, 0);
		rc = SQLITE_OK;
	}
out:
	sqlite3_finalize(stmt);
	return rc;
}

static int record(struct store *st, int version, struct gerr *err)
{
	sqlite3_stmt *stmt = NULL;
	int ret = -1;

	if (sqlite3_prepare_v2(st->db,
		"INSERT INTO schema_version (version, applied_ms) VALUES (?, ?)",
		-1, &stmt, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_int(stmt, 1, version);
	sqlite3_bind_int64(stmt, 2, store_now_ms());
	if (sqlite3_step(stmt) != SQLITE_DONE)
		goto fail;
	ret = 0;
	goto out;
fail:
	store_fail(st, err, "cannot record schema version %d", version);
out:
	sqlite3_finalize(stmt);
	return ret;
}

/* One step in its own write transaction. The version is read again
 * inside it, so two processes starting together apply each step once. */
static int apply(struct store *st, const struct migration *m,
		 struct gerr *err)
{
	int current;

	if (store_exec(st, "BEGIN IMMEDIATE", err) < 0)
		return -1;
	if (store_schema_read(st->db, &current) != SQLITE_OK) {
		store_fail(st, err, "cannot read schema version");
		goto fail;
	}
	if (current >= m->version)
		return store_exec(st, "COMMIT", err);
	if (sqlite3_exec(st->db, m->sql, NULL, NULL, NULL) != SQLITE_OK) {
		store_fail(st, err, "migration %d failed", m->version);
		goto fail;
	}
	if (record(st, m->version, err) < 0 ||
	    store_exec(st, "COMMIT", err) < 0)
		goto fail;
	return 0;
fail:
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

int store_migrate(struct store *st, struct gerr *err)
{
	int current;

	if (store_schema_read(st->db, &current) != SQLITE_OK)
		return store_fail(st, err, "database %s: cannot read schema version",
				  st->path);
	for (int i = 0; i < N_MIGRATIONS; i++) {
		if (migrations[i].version <= current)
			continue;
		if (apply(st, &migrations[i], err) < 0) {
			gerr_prefix(err, "database %s", st->path);
			return -1;
		}
	}
	return 0;
}
