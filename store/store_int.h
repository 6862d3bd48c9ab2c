/* store internals shared by the table-family files of store/.
 *
 * Every public store function takes the store lock, fetches its cached
 * statements with store_stmt(), and hands each back with store_stmt_done()
 * before unlocking. Nothing here is meant for code outside store/. */
#ifndef GRAIND_STORE_INT_H
#define GRAIND_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

#define STORE_DAMAGE_SEEN 1024

/* One slot per SQL statement of the store; each slot is used by exactly
 * one call site, always with the same SQL. */
enum store_stmt_id {
	STORE_STMT_OBJECT_PUT,
	STORE_STMT_OBJECT_GET,
	STORE_STMT_OBJECT_CONTENT,
	STORE_STMT_OBJECT_LIST,
	STORE_STMT_OBJECT_DELETE,
	STORE_STMT_OBJECT_COUNT,
	STORE_STMT_OBJECT_SIGN,
	STORE_STMT_PROBE_COUNT,
	STORE_STMT_PROBE_NAMES_BY_OBJECT,
	STORE_STMT_PROBE_GET,
	STORE_STMT_PROBE_INSERT,
	STORE_STMT_PROBE_UPDATE,
	STORE_STMT_PROBE_SET_ATTACHED,
	STORE_STMT_PROBE_DELETE,
	STORE_STMT_PROBE_LIST,
	STORE_STMT_SAMPLE_COUNT,
	STORE_STMT_SINK_COUNT,
	STORE_STMT_AUDIT_APPEND,
	STORE_STMT_AUDIT_LIST,
	STORE_STMT_AUDIT_LIST_NEWEST,
	STORE_STMT_AUDIT_TRIM_ROWS,
	STORE_STMT_AUDIT_TRIM_AGE,
	STORE_STMT_SAMPLE_INSERT,
	STORE_STMT_SAMPLE_LAST_ID_SET,
	STORE_STMT_RING_CURSOR_SET,
	STORE_STMT_RING_CURSOR_GET,
	STORE_STMT_SAMPLE_OLDEST,
	STORE_STMT_SAMPLE_DROP_ADD,
	STORE_STMT_SAMPLE_DROP_BLOCK,
	STORE_STMT_SAMPLE_TRIM_BLOCK,
	STORE_STMT_SAMPLE_BLOCK_PAYLOAD,
	STORE_STMT_SAMPLE_LIST,
	STORE_STMT_SAMPLE_LIST_BY_PROBE,
	STORE_STMT_SAMPLE_DROPS,
	STORE_STMT_SINK_EXISTS,
	STORE_STMT_SINK_INSERT,
	STORE_STMT_SINK_UPDATE,
	STORE_STMT_SINK_GET,
	STORE_STMT_SINK_DELETE,
	STORE_STMT_SINK_LIST,
	STORE_STMT_SINK_DELIVERED,
	STORE_STMT_SINK_PENDING,
	STORE_STMT_SINK_FAILED,
	STORE_STMT_SINK_MIN_CURSOR,
	STORE_STMT_SINK_PRUNE_SIZE,
	STORE_STMT_SINK_PRUNE,
	STORE_STMT_SINK_PRUNE_STRADDLING,
	STORE_STMT_PAGE_SIZE,
	STORE_STMT_MANAGED_GET,
	STORE_STMT_MANAGED_SET,
	STORE_STMT_MANAGED_CLEAR,
	STORE_STMT_MANAGED_LIST,
	STORE_STMT_IMAGE_REF_SET,
	STORE_STMT_IMAGE_REF_GET,
	STORE_STMT_SCAN_OBJECT,
	STORE_STMT_SCAN_BLOCKS,
	STORE_STMT__COUNT
};

struct store {
	sqlite3 *db;
	char *path;
	pthread_mutex_t lock;
	sqlite3_stmt *stmt[STORE_STMT__COUNT];

	/* samples.c: the buffer's bounds (0: the default), its size and
	 * the last id given, read once at first use and then kept up to
	 * date by append. */
	uint64_t samples_max_rows, samples_max_bytes;
	bool samples_counted;
	uint64_t samples_rows, samples_bytes, samples_last_id;

	/* audit.c: records appended but not yet written, oldest first; the
	 * row bound (0: the default) and the records it and the age bound
	 * dropped; who is told when one starts waiting. */
	struct store_audit_queued *audit_queue[STORE_AUDIT_QUEUE_MAX];
	size_t audit_queued;
	uint64_t audit_max_rows, audit_pruned;
	void (*audit_notify)(void *ctx);
	void *audit_notify_ctx;

	/* health.c: the storage's state (health_lock, so that /healthz never
	 * waits for a store stuck in I/O), when the log last spoke of it and
	 * whether it told of the fault now; the WAL's page size and current
	 * checkpoint threshold, the reserve file and the checkpoint a "disk
	 * full" asks for. */
	pthread_mutex_t health_lock;
	struct store_health health;
	int64_t logged_ms;
	bool fault_logged;
	uint64_t unlogged;
	char *dir, *reserve_path;
	uint64_t page_size, checkpoint_bytes, reserve_bytes;
	int64_t space_checked_ms, reserve_tried_ms;
	bool rescue_due;
	struct store_checkpointer *checkpointer;        /* checkpointer.c */

	/* integrity.c: the damage already noted (under health_lock), so
	 * that each damaged object or block is logged and counted once;
	 * past STORE_DAMAGE_SEEN entries it is counted and not remembered. */
	uint64_t damage_seen[STORE_DAMAGE_SEEN];
	size_t damage_seen_n;
	bool damage_overflow_logged;
	bool read_only;             /* store_open_check: no writes, no health upkeep */

	/* summary.c: the figures readers copy under summary_lock; what
	 * changed since they were published (STORE_SUMMARY_*, lock held). */
	pthread_mutex_t summary_lock;
	bool summary_kept;
	unsigned summary_stale;
	struct store_summary summary;
	struct store_summary_sink *summary_sinks;
	size_t summary_n_sinks;
};

void store_lock(struct store *st);
/* Publishes the summary first when what it sums up changed. */
void store_unlock(struct store *st);

/* summary.c */

enum {
	STORE_SUMMARY_OBJECTS = 1,
	STORE_SUMMARY_PROBES = 2,
	STORE_SUMMARY_SINKS = 4,        /* their rows or their owners */
	STORE_SUMMARY_SIZE = 8,         /* a commit moved the file sizes */
	STORE_SUMMARY_SAMPLES = 16,     /* the totals could not be counted */
	STORE_SUMMARY_ALL = 15,
};

/* Start keeping the summary, and publish it: after the schema is migrated. */
void store_summary_open(struct store *st);
void store_summary_close(struct store *st);
/* What changed where the update hook does not see it. Lock held. */
void store_summary_stale(struct store *st, unsigned what);
/* Publish what changed. Lock held, no transaction open. */
void store_summary_publish(struct store *st);

/* The statement of slot `id`, prepared from `sql` on first use. Call with
 * the lock held; give it back with store_stmt_done(). NULL and err filled
 * when SQLite refuses the SQL. */
sqlite3_stmt *store_stmt(struct store *st, enum store_stmt_id id,
			 const char *sql, struct gerr *err);

/* Reset the statement and drop its bindings, ready for the next use. */
void store_stmt_done(sqlite3_stmt *stmt);

/* Fill err from the connection's last error, as "<what>: <sqlite message>",
 * and return -1. Status 409 for uniqueness and foreign-key conflicts, 413
 * for a value over SQLite's size limit, 500 otherwise. */
int store_fail(struct store *st, struct gerr *err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Run SQL without results (may hold several statements). Lock held. */
int store_exec(struct store *st, const char *sql, struct gerr *err);

/* The single integer a counting statement returns; 0 when it fails
 * (the failure is logged: counts feed status pages, not decisions). */
uint64_t store_count(struct store *st, enum store_stmt_id id, const char *sql);

/* SQLite's process-wide configuration, before any connection opens. */
void store_init_once(void);

/* Unix time in milliseconds (CLOCK_REALTIME). */
int64_t store_now_ms(void);

/* sinks.c */

/* The columns a sink row is read with, and how many they are. */
#define STORE_SINK_COLUMNS \
	"sinks.name, config, cursor, coalesce(last_success_ms, 0)," \
	" coalesce(last_error, ''), bytes_sent, samples_sent, pending, generation"
#define STORE_SINK_NCOLUMNS 9

/* Fill `out` from a row selected with STORE_SINK_COLUMNS. */
int store_sink_from_stmt(sqlite3_stmt *stmt, struct store_sink *out, struct gerr *err);

/* probes.c */

/* The names of the probes whose object is sha256, as "a, b, c" in buf
 * (ending "... and 7 more" when they do not fit); *count says how many.
 * Lock held. */
int store_probes_using_object(struct store *st, const char *sha256,
			      char *buf, size_t size, unsigned *count,
			      struct gerr *err);

/* samples.c */

/* Count the buffer's totals (samples_rows &c.) unless they are counted. Lock held. */
int store_samples_counted(struct store *st, struct gerr *err);

/* SQL function graind_sample_frame(blob): the blob after its length as a
 * varint, as samples sit in a block. */
void store_sample_frame(sqlite3_context *ctx, int argc, sqlite3_value **argv);

/* Drop the first samples of block `first_id`, enough for `rows` samples
 * and `bytes` bytes to go (*cut and *cut_bytes say how many went): its
 * first id moves up and the fields its kept samples share are put back in
 * front of them, or it goes when that is all of it. Lock held, in a
 * transaction. */
int store_samples_trim_block(struct store *st, int64_t first_id, uint64_t rows,
			     uint64_t bytes, uint64_t *cut, uint64_t *cut_bytes, struct gerr *err);

/* The CRC-32 a sample block carries: over its first and last id (as
 * 8-byte little-endian numbers) and its payload. */
uint32_t store_block_crc(uint64_t first_id, uint64_t last_id, const void *payload, size_t len);

/* A block's stored checksum, read from column `col`: -1 for a block
 * written before blocks had one (NULL). */
int64_t store_block_crc_column(sqlite3_stmt *stmt, int col);

/* Whether block first_id..last_id (stored checksum crc, -1: none) is
 * sound: its checksum, its framing, one sample per id, each one
 * unpacking. When it is not, d says what is wrong. */
bool store_block_intact(uint64_t first_id, uint64_t last_id, const char *probe,
			const uint8_t *payload, size_t len, int64_t crc,
			struct store_damage *d);

/* objects.c */

/* Whether `bytes` still hash to id `sha256`; when not, d says what they
 * hash to. */
bool store_object_intact(const char *sha256, const void *bytes, size_t n,
			 struct store_damage *d);

/* integrity.c */

/* Note damage a reader or the scan met: the first time for this object
 * or block, count it in the health and log it (with the database's path);
 * true then. Takes health_lock only, so callable with the store locked. */
bool store_damage_note(struct store *st, const struct store_damage *d);

/* audit.c */

/* Write what the audit queue holds (store_audit_flush with the lock held),
 * and free it whatever happens: for store_close(). */
void store_audit_drain(struct store *st);

/* health.c */

/* The WAL's checkpoint thresholds: with plenty of room, and when the file
 * system has less than STORE_LOW_SPACE_BYTES free. The WAL file is cut
 * back to STORE_WAL_BYTES after a checkpoint (journal_size_limit). */
#define STORE_WAL_BYTES (64u << 20)
#define STORE_WAL_LOW_BYTES (1u << 20)
#define STORE_LOW_SPACE_BYTES (256ull << 20)
#define STORE_RESERVE_BYTES (4u << 20)

/* Whether an SQLite result code is a storage fault: full, I/O error,
 * read-only, cannot open (the WAL on a read-only file system). */
bool store_health_is_fault(int code);

/* Record a storage fault of `what` (extended code `code`): failing from
 * now, logged at most once a minute; a full disk releases the reserve. */
void store_health_fault(struct store *st, const char *what, int code);

/* Install the WAL hook (our checkpoint policy) and make the reserve;
 * after the connection is configured. */
int store_health_open(struct store *st, int page_size, struct gerr *err);
void store_health_close(struct store *st);

/* Run by store_lock(): what waits for no transaction to be open. */
void store_health_maintain(struct store *st);

/* checkpointer.c: PASSIVE checkpoints on a connection and a thread of
 * their own, asked for by the WAL hook (health.c). */

/* After the connection is configured; 0, or -1 and err. */
int store_checkpointer_start(struct store *st, struct gerr *err);

/* Ask for a checkpoint, run soon on the thread; the caller goes on at
 * once. False when there is no thread or its last pass failed: the
 * caller checkpoints itself. */
bool store_checkpointer_ask(struct store *st);

/* The passes of the thread that copied frames so far. */
uint64_t store_checkpointer_passes(const struct store *st);

/* Before the store's connection is closed (its close removes the WAL
 * only as the last connection). */
void store_checkpointer_stop(struct store *st);

/* migrations.c */

/* The schema version recorded in db, 0 for a database without one.
 * Returns an SQLite result code. Works on read-only connections. */
int store_schema_read(sqlite3 *db, int *version);

/* Apply every migration newer than the database's version, each in its
 * own transaction. Lock held (or the store not yet shared). */
int store_migrate(struct store *st, struct gerr *err);

#endif
