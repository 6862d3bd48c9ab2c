/* store: opening the database, its pragmas, the lock and the statement
 * cache. The table families live in objects.c, probes.c, samples.c,
 * sinks.c and audit.c; the schema in migrations.c. */
#include "store/store.h"
#include "store/store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/util/clock.h"
#include "server/util/log.h"

/* How long a statement waits for a lock held by another connection
 * (an operator's sqlite3 shell, a backup) before giving up. */
#define STORE_BUSY_TIMEOUT_MS 5000

#define REFUSE_HINT "refusing to start. Move it aside or restore a backup."

void store_lock(struct store *st)
{
	pthread_mutex_lock(&st->lock);
	store_health_maintain(st);
}

void store_unlock(struct store *st)
{
	store_summary_publish(st);
	pthread_mutex_unlock(&st->lock);
}

int64_t store_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int status_of(sqlite3 *db)
{
	switch (sqlite3_extended_errcode(db)) {
	case SQLITE_CONSTRAINT_PRIMARYKEY:
	case SQLITE_CONSTRAINT_UNIQUE:
	case SQLITE_CONSTRAINT_FOREIGNKEY:
		return 409;
	case SQLITE_TOOBIG:
		return 413;
	default:
		return 500;
	}
}

int store_fail(struct store *st, struct gerr *err, const char *fmt, ...)
{
	char what[GERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (store_health_is_fault(sqlite3_extended_errcode(st->db)) && st->reserve_path) {
		struct store_health h;
		char since[CLOCK_TEXT_MAX];

		store_health_fault(st, what, sqlite3_extended_errcode(st->db));
		store_health_get(st, &h);
		clock_format(h.since_ms, since);
		return gerr_set(err, 503, "storage failing since %s: %s; retry once it is fixed",
				since, h.error);
	}
	return gerr_set(err, status_of(st->db), "%s: %s", what,
			sqlite3_errmsg(st->db));
}

sqlite3_stmt *store_stmt(struct store *st, enum store_stmt_id id,
			 const char *sql, struct gerr *err)
{
	if (!st->stmt[id] &&
	    sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
			       &st->stmt[id], NULL) != SQLITE_OK) {
		store_fail(st, err, "cannot prepare \"%s\"", sql);
		return NULL;
	}
	return st->stmt[id];
}

void store_stmt_done(sqlite3_stmt *stmt)
{
	if (!stmt)
		return;
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
}

int store_exec(struct store *st, const char *sql, struct gerr *err)
{
	if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return store_fail(st, err, "\"%.60s\" failed", sql);
	return 0;
}

uint64_t store_count(struct store *st, enum store_stmt_id id, const char *sql)
{
	sqlite3_stmt *stmt;
	struct gerr err;
	uint64_t n = 0;

	store_lock(st);
	stmt = store_stmt(st, id, sql, &err);
	if (!stmt)
		goto out;
	if (sqlite3_step(stmt) == SQLITE_ROW)
		n = (uint64_t)sqlite3_column_int64(stmt, 0);
	else
		log_error("msg=\"count failed\" sql=\"%s\" error=\"%s\"", sql,
			  sqlite3_errmsg(st->db));
out:
	store_stmt_done(stmt);
	store_unlock(st);
	return n;
}

/* ---------------------------------------------------------------- open */

/* Count the lines of one quick_check row, the first line seen into buf. */
static void note_problems(const char *text, char *buf, size_t size,
			  int *problems)
{
	static const char banner[] = "*** in database main ***\n";
	size_t len;

	if (!strncmp(text, banner, strlen(banner)))
		text += strlen(banner);
	while (*text) {
		len = strcspn(text, "\n");
		if ((*problems)++ == 0)
			snprintf(buf, size, "%.*s", (int)len, text);
		text += len;
		if (*text == '\n')
			text++;
	}
}

/* The first problem `PRAGMA quick_check` reports, on one line, into buf:
 * "ok" when the database is sound. */
static int quick_check(sqlite3 *db, char *buf, size_t size)
{
	sqlite3_stmt *stmt = NULL;
	const char *text;
	int rc, problems = 0;

	rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &stmt, NULL);
	if (rc != SQLITE_OK)
		goto out;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		text = (const char *)sqlite3_column_text(stmt, 0);
		if (text)
			note_problems(text, buf, size, &problems);
	}
	if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
	if (problems > 1 && strlen(buf) + 32 < size)
		snprintf(buf + strlen(buf), size - strlen(buf),
			 " and %d more problems", problems - 1);
out:
	sqlite3_finalize(stmt);
	return rc;
}

static int refuse_unreadable(sqlite3 *db, const char *path, int rc,
			     struct gerr *err)
{
	switch (rc) {
	case SQLITE_CORRUPT:
		return gerr_set(err, 500, "database %s is corrupt (quick_check: %s); "
				REFUSE_HINT, path, sqlite3_errmsg(db));
	case SQLITE_NOTADB:
		return gerr_set(err, 500,
				"database %s is corrupt or not a SQLite database (%s); "
				REFUSE_HINT, path, sqlite3_errmsg(db));
	default:
		return gerr_set(err, 500, "cannot read database %s: %s", path,
				sqlite3_errmsg(db));
	}
}

/* Look at an existing database through a read-only connection, so that a
 * file we refuse keeps every byte: a read-write connection checkpoints
 * the WAL into it on close, and setting journal_mode writes its header.
 * (SQLite may still create an empty -wal and a -shm beside it.) */
static int check_existing(const char *path, struct gerr *err)
{
	char problem[256] = "";
	sqlite3 *db = NULL;
	int ret = -1, rc, version;
	struct stat sb;

	if (stat(path, &sb) < 0) {
		if (errno == ENOENT)
			return 0;
		return gerr_set(err, 500, "cannot open database %s: %s", path,
				strerror(errno));
	}
	if (!S_ISREG(sb.st_mode))
		return gerr_set(err, 500, "database %s is not a regular file",
				path);

	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
	if (rc != SQLITE_OK) {
		gerr_set(err, 500, "cannot open database %s: %s", path,
			 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		goto out;
	}
	sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);

	rc = quick_check(db, problem, sizeof(problem));
	if (rc != SQLITE_OK) {
		refuse_unreadable(db, path, rc, err);
		goto out;
	}
	if (strcmp(problem, "ok") != 0) {
		gerr_set(err, 500, "database %s is corrupt (quick_check: %s); "
			 REFUSE_HINT, path, problem);
		goto out;
	}

	rc = store_schema_read(db, &version);
	if (rc != SQLITE_OK) {
		refuse_unreadable(db, path, rc, err);
		goto out;
	}
	if (version > store_schema_version()) {
		gerr_set(err, 500,
			 "database schema version %d is newer than this graind supports (%d); upgrade graind",
			 version, store_schema_version());
		goto out;
	}
	ret = 0;
out:
	sqlite3_close(db);
	return ret;
}

/* SQLite creates the file with the umask's permissions; it holds sink
 * credentials, so create it owner-only first. The WAL and shared-memory
 * files inherit the mode of the database file. */
static int create_private(const char *path, struct gerr *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (fd < 0) {
		if (errno == EEXIST)
			return 0;
		return gerr_set(err, 500, "cannot create database %s: %s", path,
				strerror(errno));
	}
	close(fd);
	return 0;
}

static int pragma_expect(struct store *st, const char *sql,
			 const char *want, struct gerr *err)
{
	sqlite3_stmt *stmt = NULL;
	const char *got;
	int ret = -1;

	if (sqlite3_prepare_v2(st->db, sql, -1, &stmt, NULL) != SQLITE_OK ||
	    sqlite3_step(stmt) != SQLITE_ROW) {
		store_fail(st, err, "database %s: %s", st->path, sql);
		goto out;
	}
	got = (const char *)sqlite3_column_text(stmt, 0);
	if (!got || strcmp(got, want) != 0) {
		gerr_set(err, 500, "database %s: %s gave \"%s\", need \"%s\"",
			 st->path, sql, got ? got : "", want);
		goto out;
	}
	ret = 0;
out:
	sqlite3_finalize(stmt);
	return ret;
}

/* Pages of 64 KiB (for a new database; one made before keeps its own):
 * sample blocks are tens of KiB, and SQLite writes, checkpoints and frees
 * a blob page by page. The WAL is checkpointed by our hook (health.c, at
 * a threshold that follows the free space), and cut back to
 * STORE_WAL_BYTES after. */
#define STORE_PAGE_SIZE 65536

static int configure_wal(struct store *st, struct gerr *err)
{
	char sql[96];
	int page_size = (int)store_count(st, STORE_STMT_PAGE_SIZE, "PRAGMA page_size");

	if (page_size <= 0)
		return store_fail(st, err, "cannot read the page size");
	snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit=%u", STORE_WAL_BYTES);
	if (store_exec(st, sql, err) < 0)
		return -1;
	return store_health_open(st, page_size, err);
}

/* The page cache, in KiB (SQLite's default is 2000): 16 pages of 64 KiB.
 * Samples are appended and read back soon after, the rest of the tables
 * is small, and the kernel's page cache holds the file anyway. */
#define STORE_CACHE_KIB "1024"

/* synchronous=NORMAL: in WAL mode a commit is durable against a crash of
 * graind itself and the file is never corrupted, but a power loss may
 * lose the last commits before a checkpoint. FULL would fsync on every
 * commit, the sample writer's hot path, to save a few seconds of samples
 * that the kernel counters carry on counting anyway. */
static int configure(struct store *st, struct gerr *err)
{
	char sql[64];

	sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
	if (sqlite3_create_function(st->db, "graind_sample_frame", 1,
				    SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
				    store_sample_frame, NULL, NULL) != SQLITE_OK)
		return store_fail(st, err, "database %s: cannot add SQL functions", st->path);
	snprintf(sql, sizeof(sql), "PRAGMA page_size=%d", STORE_PAGE_SIZE);
	if (store_exec(st, sql, err) < 0)
		goto fail;
	if (pragma_expect(st, "PRAGMA journal_mode=WAL", "wal", err) < 0)
		return -1;
	if (configure_wal(st, err) < 0 ||
	    store_exec(st, "PRAGMA synchronous=NORMAL", err) < 0 ||
	    store_exec(st, "PRAGMA cache_size=-" STORE_CACHE_KIB, err) < 0 ||
	    store_exec(st, "PRAGMA foreign_keys=ON", err) < 0)
		goto fail;
	return pragma_expect(st, "PRAGMA foreign_keys", "1", err);
fail:
	gerr_prefix(err, "database %s", st->path);
	return -1;
}

/* Before SQLite's first use: no bulk allocation of page cache per
 * connection. With 64 KiB pages SQLite would take 20 of them (1.3 MiB)
 * at open whatever the agent reads; pages are allocated as needed
 * instead, and can be given back (store_release_memory). */
static void configure_sqlite(void)
{
	sqlite3_config(SQLITE_CONFIG_PAGECACHE, NULL, 0, 0);
}

void store_init_once(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, configure_sqlite);
}

void store_release_memory(struct store *st)
{
	store_lock(st);
	sqlite3_db_release_memory(st->db);
	store_unlock(st);
}

int store_open(const char *path, struct store **out, struct gerr *err)
{
	struct store *st;
	int rc;

	*out = NULL;
	store_init_once();
	if (check_existing(path, err) < 0 || create_private(path, err) < 0)
		return -1;

	st = calloc(1, sizeof(*st));
	if (!st)
		return gerr_set(err, 500, "out of memory");
	pthread_mutex_init(&st->lock, NULL);
	st->path = strdup(path);
	if (!st->path) {
		gerr_set(err, 500, "out of memory");
		goto fail;
	}

	/* One connection, serialised by st->lock: SQLite's own mutex would
	 * only repeat that work. */
	rc = sqlite3_open_v2(path, &st->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		gerr_set(err, 500, "cannot open database %s: %s", path,
			 st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
		goto fail;
	}
	if (configure(st, err) < 0 || store_migrate(st, err) < 0 ||
	    store_checkpointer_start(st, err) < 0)
		goto fail;
	store_summary_open(st);
	*out = st;
	return 0;
fail:
	store_close(st);
	return -1;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	if (st->db)
		store_audit_drain(st);
	store_checkpointer_stop(st);
	for (int i = 0; i < STORE_STMT__COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	if (sqlite3_close(st->db) != SQLITE_OK)
		log_error("msg=\"cannot close database\" path=\"%s\" error=\"%s\"",
			  st->path, sqlite3_errmsg(st->db));
	pthread_mutex_destroy(&st->lock);
	store_summary_close(st);
	if (st->read_only)
		pthread_mutex_destroy(&st->health_lock);
	store_health_close(st);
	free(st->path);
	free(st);
}

