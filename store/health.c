/* store health: storage faults (disk full, I/O error, read-only), the WAL's
 * checkpoint policy and the reserve file.
 *
 * A storage error of any store call marks the store failing (store_fail
 * calls health_fault); the next commit whose checkpoint works marks it ok
 * again (the WAL hook). The log says so once, then at most once a minute.
 *
 * The WAL is checkpointed by our own hook instead of SQLite's
 * autocheckpoint, so that its threshold can follow the free space: with
 * plenty of room, every STORE_WAL_BYTES (SQLite writes and checkpoints a
 * blob page by page, so fewer, larger checkpoints are cheaper); when the
 * file system runs low, every STORE_WAL_LOW_BYTES, so that the WAL never
 * needs more room than a little to be reused. A checkpoint can only reuse
 * the WAL when the database file may grow by what the WAL holds: for that
 * moment the state dir keeps a reserve file (graind.db-reserve), removed
 * at the first "disk full" so that the checkpoint after it (TRUNCATE, run
 * at the next store call outside a transaction) finds room, and made
 * again once the file system has twice its size free. With room, the
 * checkpoints at the threshold run on a thread of their own
 * (checkpointer.c), so that no commit waits for one. */
#define _GNU_SOURCE
#include "store/store.h"
#include "store/store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "server/util/clock.h"
#include "server/util/log.h"

#define LOG_EVERY_MS   60000    /* at most one storage line a minute */
#define SPACE_EVERY_MS 1000     /* free space looked at this often, at most */
#define RESERVE_EVERY_MS 5000   /* the reserve tried again this often */

static int64_t mono_ms(void)
{
	return (int64_t)(clock_mono_us() / 1000);
}

bool store_health_is_fault(int code)
{
	switch (code & 0xff) {
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_READONLY:
	case SQLITE_CANTOPEN:
		return true;
	default:
		return false;
	}
}

/* "database or disk is full (No space left on device)" */
static void describe(struct store *st, int code, char *buf, size_t size)
{
	int sys = sqlite3_system_errno(st->db);

	if (sys && (code & 0xff) != SQLITE_READONLY)
		snprintf(buf, size, "%s (%s)", sqlite3_errstr(code), strerror(sys));
	else
		snprintf(buf, size, "%s", sqlite3_errstr(code));
}

static uint64_t free_bytes(const char *path)
{
	struct statvfs sv;

	if (statvfs(path, &sv) < 0)
		return UINT64_MAX;      /* unknown: assume room */
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* ---------------------------------------------------------------- reserve */

static void reserve_release(struct store *st)
{
	if (!st->reserve_bytes)
		return;
	if (unlink(st->reserve_path) < 0 && errno != ENOENT) {
		log_warn("msg=\"cannot remove the storage reserve\" path=\"%s\" error=\"%s\"",
			 st->reserve_path, strerror(errno));
		return;
	}
	__atomic_store_n(&st->reserve_bytes, 0, __ATOMIC_RELAXED);
	st->rescue_due = true;
}

/* Make the reserve when the file system has twice its size free, so that
 * it never takes the last room. */
static void reserve_make(struct store *st)
{
	struct stat sb;
	int fd, rc;

	if (st->reserve_bytes || !st->reserve_path)
		return;
	if (stat(st->reserve_path, &sb) == 0 && (uint64_t)sb.st_size >= STORE_RESERVE_BYTES &&
	    (uint64_t)sb.st_blocks * 512 >= STORE_RESERVE_BYTES) {
		__atomic_store_n(&st->reserve_bytes, (uint64_t)sb.st_size, __ATOMIC_RELAXED);
		return;
	}
	if (free_bytes(st->dir) < 2ull * STORE_RESERVE_BYTES)
		return;
	fd = open(st->reserve_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	rc = posix_fallocate(fd, 0, STORE_RESERVE_BYTES);
	close(fd);
	if (rc != 0) {
		unlink(st->reserve_path);
		return;
	}
	__atomic_store_n(&st->reserve_bytes, STORE_RESERVE_BYTES, __ATOMIC_RELAXED);
	log_info("msg=\"storage reserve in place\" path=\"%s\" bytes=%u", st->reserve_path,
		 STORE_RESERVE_BYTES);
}

/* ---------------------------------------------------------------- state */

void store_health_fault(struct store *st, const char *what, int code)
{
	int64_t now = mono_ms();
	char why[160];

	describe(st, code, why, sizeof(why));
	pthread_mutex_lock(&st->health_lock);
	st->health.failed_writes++;
	snprintf(st->health.error, sizeof(st->health.error), "%.80s: %s", what, why);
	if (!st->health.failing) {
		st->health.failing = true;
		st->health.since_ms = store_now_ms();
		st->health.faults++;
		st->fault_logged = !st->logged_ms || now - st->logged_ms >= LOG_EVERY_MS;
		if (st->fault_logged) {
			st->logged_ms = now;
			log_error("msg=\"storage failing: samples wait in memory, changes are refused with 503\" "
				  "database=\"%s\" error=\"%s\" faults=%llu", st->path, st->health.error,
				  (unsigned long long)st->health.faults);
			st->unlogged = 0;
		} else {
			st->unlogged++;
		}
	} else if (now - st->logged_ms >= LOG_EVERY_MS) {
		char since[CLOCK_TEXT_MAX];

		st->logged_ms = now;
		clock_format(st->health.since_ms, since);
		log_error("msg=\"storage still failing\" database=\"%s\" error=\"%s\" since=%s "
			  "failed_writes=%llu", st->path, st->health.error, since,
			  (unsigned long long)st->health.failed_writes);
	}
	pthread_mutex_unlock(&st->health_lock);
	if ((code & 0xff) == SQLITE_FULL)
		reserve_release(st);
}

static void health_ok(struct store *st)
{
	pthread_mutex_lock(&st->health_lock);
	if (st->health.failing) {
		st->health.failing = false;
		st->health.recovered_ms = store_now_ms();
		if (st->fault_logged)
			log_info("msg=\"storage writable again\" database=\"%s\" failed_for_ms=%lld "
				 "failed_writes=%llu", st->path,
				 (long long)(st->health.recovered_ms - st->health.since_ms),
				 (unsigned long long)st->health.failed_writes);
		st->health.since_ms = 0;
		st->health.error[0] = '\0';
	}
	pthread_mutex_unlock(&st->health_lock);
}

void store_health_get(struct store *st, struct store_health *out)
{
	pthread_mutex_lock(&st->health_lock);
	*out = st->health;
	out->reserve_bytes = __atomic_load_n(&st->reserve_bytes, __ATOMIC_RELAXED);
	out->checkpoint_bytes = __atomic_load_n(&st->checkpoint_bytes, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&st->health_lock);
}

/* ---------------------------------------------------------------- WAL */

/* The checkpoint threshold for the free space now, looked at once a second. */
static void follow_space(struct store *st)
{
	int64_t now = mono_ms();

	if (st->checkpoint_bytes && now - st->space_checked_ms < SPACE_EVERY_MS)
		return;
	st->space_checked_ms = now;
	__atomic_store_n(&st->checkpoint_bytes, free_bytes(st->dir) < STORE_LOW_SPACE_BYTES ?
			 (uint64_t)STORE_WAL_LOW_BYTES : (uint64_t)STORE_WAL_BYTES, __ATOMIC_RELAXED);
}

static int checkpoint(struct store *st, const char *name, int mode, const char *what)
{
	int rc = sqlite3_wal_checkpoint_v2(st->db, name, mode, NULL, NULL);

	store_summary_stale(st, STORE_SUMMARY_SIZE);

	if (rc != SQLITE_OK && rc != SQLITE_BUSY && store_health_is_fault(rc))
		store_health_fault(st, what, sqlite3_extended_errcode(st->db));
	return rc;
}

/* Whether the checkpoint of a WAL of `wal` bytes is the checkpointer's:
 * it is, with room on the file system, until the WAL is twice the
 * threshold (the thread fell behind) or a pass of the thread failed (the
 * checkpoint here then says why). Low on room, the WAL must be reused at
 * its threshold: checkpoints are run here. */
static bool in_background(struct store *st, uint64_t wal)
{
	if (st->checkpoint_bytes < STORE_WAL_BYTES || wal >= 2 * st->checkpoint_bytes)
		return false;
	return store_checkpointer_ask(st);
}

/* After every commit: the commit worked; checkpoint when the WAL holds
 * enough, or, after a fault, always and TRUNCATE, so that the WAL gives
 * its room back. Ok only once that worked too. */
static int wal_hook(void *ctx, sqlite3 *db, const char *name, int pages)
{
	struct store *st = ctx;
	uint64_t wal = (uint64_t)pages * st->page_size;
	bool failing;
	int rc = SQLITE_OK;

	(void)db;
	store_summary_stale(st, STORE_SUMMARY_SIZE);
	follow_space(st);
	pthread_mutex_lock(&st->health_lock);
	failing = st->health.failing;
	pthread_mutex_unlock(&st->health_lock);
	if (failing)
		rc = checkpoint(st, name, SQLITE_CHECKPOINT_TRUNCATE, "checkpoint");
	else if (wal >= st->checkpoint_bytes && !in_background(st, wal))
		rc = checkpoint(st, name, SQLITE_CHECKPOINT_PASSIVE, "checkpoint");
	if (rc == SQLITE_OK || rc == SQLITE_BUSY)
		health_ok(st);
	return SQLITE_OK;       /* the commit itself stands */
}

int store_health_open(struct store *st, int page_size, struct gerr *err)
{
	char *slash;

	pthread_mutex_init(&st->health_lock, NULL);
	st->page_size = page_size > 0 ? (uint64_t)page_size : 4096;
	st->dir = strdup(st->path);
	if (asprintf(&st->reserve_path, "%s-reserve", st->path) < 0)
		st->reserve_path = NULL;
	if (!st->dir || !st->reserve_path)
		return gerr_set(err, 500, "out of memory");
	slash = strrchr(st->dir, '/');
	if (!slash)
		strcpy(st->dir, ".");
	else if (slash == st->dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	follow_space(st);
	sqlite3_wal_hook(st->db, wal_hook, st);
	reserve_make(st);
	return 0;
}

void store_health_close(struct store *st)
{
	if (st->reserve_path || st->dir)
		pthread_mutex_destroy(&st->health_lock);
	free(st->reserve_path);
	free(st->dir);
}

/* With the lock just taken, no transaction open: the rescue checkpoint a
 * "disk full" asked for, and the reserve once there is room again. */
void store_health_maintain(struct store *st)
{
	int64_t now;

	if (!st->reserve_path || !sqlite3_get_autocommit(st->db))
		return;
	if (st->rescue_due) {
		st->rescue_due = false;
		if (checkpoint(st, NULL, SQLITE_CHECKPOINT_TRUNCATE, "checkpoint after disk full") ==
		    SQLITE_OK)
			log_info("msg=\"storage reserve released, WAL checkpointed\" database=\"%s\"",
				 st->path);
	}
	if (st->reserve_bytes)
		return;
	now = mono_ms();
	if (now - st->reserve_tried_ms < RESERVE_EVERY_MS)
		return;
	st->reserve_tried_ms = now;
	pthread_mutex_lock(&st->health_lock);
	bool failing = st->health.failing;
	pthread_mutex_unlock(&st->health_lock);
	if (!failing)
		reserve_make(st);
}
