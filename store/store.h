/* store: everything SQLite. Nothing outside store/ writes SQL.
 *
 * One database file (DIR/graind.db) in WAL mode. The schema is a list of
 * numbered migrations (store/migrations.c) applied in order at open, each
 * in its own transaction, recorded in the schema_version table. A database
 * whose schema is newer than this binary knows, or that fails SQLite's
 * quick_check, is refused with a clear message and left untouched.
 *
 * Thread safety: a store may be used from many threads; calls are
 * serialised inside by one mutex (statements are prepared once and reused).
 * The _count functions return 0 when the database cannot be read (the
 * failure is logged). Times are unix milliseconds (CLOCK_REALTIME).
 *
 * Table families, one source file each: objects.c, probes.c, samples.c,
 * sinks.c, audit.c, managed.c. Their functions are declared below. */
#ifndef GRAIND_STORE_H
#define GRAIND_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "server/util/gerr.h"

struct store;

/* The newest schema version this binary knows. */
int store_schema_version(void);

/* Open (creating when missing) the database at `path` and migrate it.
 * Refuses (status 500, message naming the file and the cause) a corrupt
 * file, a non-SQLite file, or a schema newer than store_schema_version(). */
int store_open(const char *path, struct store **out, struct gerr *err);
void store_close(struct store *st);

/* Give back the page cache no statement is using: after start, when it
 * holds what the start read and the agent may idle for long. */
void store_release_memory(struct store *st);

/* ---------------------------------------------------------------- summary
 * The store's figures for readers that must not wait for it (a status
 * page answered on an event loop): republished by the store whenever a
 * change to them ends, before the call that made it returns, and copied
 * under a lock of their own. */
struct store_summary {
	uint64_t objects, probes, sinks;
	uint64_t samples, sample_bytes, last_sample_id;  /* as store_sample_count &c. */
	uint64_t db_bytes;              /* the database file plus its WAL */
	uint64_t objects_version;       /* +1 whenever a row of objects may have changed */
	uint64_t instance;              /* which store of the process: versions are its own */
	uint64_t version;               /* +1 at every publication: a sink row may have changed */
};

void store_summary_get(struct store *st, struct store_summary *out);

/* ---------------------------------------------------------------- health
 * Storage faults. When SQLite cannot write (disk full, I/O error,
 * read-only file system) the call fails with status 503 and a message
 * naming the storage error, and the store is failing until a commit (and
 * the checkpoint after it) works again; the store logs this itself, once
 * and then at most once a minute, so callers need not log a 503 from the
 * store (no other store error is 503). A full disk releases the reserve
 * file (DIR/graind.db-reserve, STORE_RESERVE_BYTES) so that the WAL can
 * be checkpointed and cut back; it is made again once twice its size is
 * free. Callers retry their writes; nothing here waits or retries. */

struct store_health {
	bool failing;
	char error[256];            /* the last storage error, "" when ok */
	int64_t since_ms;           /* when it started failing (unix ms), 0 when ok */
	uint64_t failed_writes;     /* store calls the storage failed, ever */
	uint64_t faults;            /* times it went from ok to failing */
	int64_t recovered_ms;       /* the last recovery (unix ms), 0 never */
	uint64_t reserve_bytes;     /* the reserve in place, 0 when released */
	uint64_t checkpoint_bytes;  /* the WAL is checkpointed at this size now */
	uint64_t corrupt_reads;     /* objects read back with bytes not of their sha256 */
	/* Damage found inside the database (see "integrity" below), each
	 * object or block counted once: objects, sample blocks and the
	 * samples those blocks held. */
	uint64_t damaged_objects, damaged_blocks, damaged_samples;
	uint64_t scans;             /* integrity scans completed */
	int64_t scan_ms;            /* when the last one completed (unix ms), 0 never */
	uint64_t scan_damage;       /* damage the last completed scan found */
};

/* The state now; never waits for the store's lock. */
void store_health_get(struct store *st, struct store_health *out);

/* ---------------------------------------------------------------- objects
 * Objects are content-addressed by their lowercase hex sha256. `meta` is an
 * opaque blob (the packed graind.Object) stored beside the bytes. */

struct store_object {
	char sha256[65];
	char *name;            /* malloc'd */
	uint64_t size;
	int64_t created_ms;    /* unix ms */
	bool builtin;
	void *meta;            /* malloc'd */
	size_t meta_len;
	/* Its minisign signature file (malloc'd, NULL: unsigned) and the hex
	 * public key that verified it at upload ("": none trusted then). */
	char *signature;
	char verified_key[65];
};

void store_object_clear(struct store_object *obj);  /* frees the fields */

/* Insert the object unless one with this sha256 exists. *created tells
 * which. The name of an existing object is not changed. 400 when sha256
 * is not 64 lowercase hex digits; the caller has checked it matches. */
int store_object_put(struct store *st, const char *sha256, const char *name,
		     const void *bytes, size_t len, const void *meta,
		     size_t meta_len, bool builtin, bool *created,
		     struct gerr *err);

/* Record (or replace) the signature of a stored object, with the hex
 * public key that verified it ("" none). 404 when the object is gone. */
int store_object_sign(struct store *st, const char *sha256, const char *signature,
		      const char *verified_key, struct gerr *err);

/* 404 when missing. `obj` is filled; clear it with store_object_clear(). */
int store_object_get(struct store *st, const char *sha256,
		     struct store_object *obj, struct gerr *err);

/* The exact bytes uploaded; *bytes malloc'd, caller frees. 404 when missing;
 * 500 saying so when the stored bytes no longer hash to the id (damage
 * in the database: never served, counted in corrupt_reads, logged). */
int store_object_content(struct store *st, const char *sha256, void **bytes,
			 size_t *len, struct gerr *err);

/* Calls fn for up to `limit` objects ordered by sha256, starting after
 * `after` (NULL or "" for the first page). fn returns 0 to continue; any
 * other value stops the walk and is returned as is (fn fills its own
 * error through ctx). *more is set when objects remain after the page.
 * fn runs with the store locked: it must not call the store. `obj` is
 * valid during the call only. */
int store_object_list(struct store *st, const char *after, unsigned limit,
		      int (*fn)(const struct store_object *obj, void *ctx),
		      void *ctx, bool *more, struct gerr *err);

/* 404 when missing, 409 (naming the probes) while a probe refers to it. */
int store_object_delete(struct store *st, const char *sha256,
			struct gerr *err);

/* Image references: the object `image` (a reference as oci_ref_format
 * writes it) was pulled as, with its manifest digest; the latest pull
 * wins. 404 from get when none (or its object is gone). */
int store_image_ref_set(struct store *st, const char *image, const char *sha256,
			const char *digest, struct gerr *err);
int store_image_ref_get(struct store *st, const char *image, char sha256[65], struct gerr *err);

/* ---------------------------------------------------------------- probes
 * Desired state of probes (filled in by the probe manager). */

struct store_probe {
	char name[64];
	char object_sha256[65];   /* "" for a built-in object */
	void *spec;               /* malloc'd packed graind.ProbeSpec */
	size_t spec_len;
	uint64_t generation;      /* 1 at creation, +1 at every spec change */
	bool attached;            /* desired state */
	int64_t created_ms, updated_ms;
};

void store_probe_clear(struct store_probe *probe);  /* frees the fields */

/* Create or update probe `name`. The generation changes only when the spec
 * bytes change; `attached` (the desired state) is not part of the spec.
 * `out` (may be NULL) receives the row as stored; *created and *changed
 * say what happened. 404 when object_sha256 names no stored object. */
int store_probe_put(struct store *st, const char *name, const char *object_sha256,
		    const void *spec, size_t spec_len, bool attached,
		    struct store_probe *out,
		    bool *created, bool *changed, struct gerr *err);

/* Set the desired state only. 404 when missing. */
int store_probe_set_attached(struct store *st, const char *name, bool attached,
			     struct gerr *err);

/* 404 when missing. */
int store_probe_get(struct store *st, const char *name, struct store_probe *out,
		    struct gerr *err);

/* 404 when missing. */
int store_probe_delete(struct store *st, const char *name, struct gerr *err);

/* Up to `limit` probes ordered by name after `after` ("" or NULL: from the
 * start). fn runs with the store locked: it must not call the store. */
int store_probe_list(struct store *st, const char *after, unsigned limit,
		     int (*fn)(const struct store_probe *probe, void *ctx),
		     void *ctx, bool *more, struct gerr *err);

/* ---------------------------------------------------------------- samples
 * The sample buffer. Ids keep increasing across restarts and deletions.
 * Samples are kept in blocks, a run of samples of one probe and map with
 * consecutive ids per row, each sample packed (graind.Sample without its
 * id) after its length as a varint. Fields that samples share (probe,
 * map, time...) may be packed once in front of them instead, in a frame
 * of their own (store_sample_run_share). The buffer is bounded by samples and
 * by payload bytes (framing included); at the bound the oldest samples go
 * first and every dropped sample is counted against its probe. */

struct Graind__Sample;
struct pbwire;

/* Bounds of the buffer; 0 leaves a bound as it is. Defaults: 1,000,000
 * samples and 256 MiB of payload. Applied at the next append. */
void store_samples_set_bounds(struct store *st, uint64_t max_rows, uint64_t max_bytes);

/* Samples of one probe and map, packed as a block holds them. */
struct store_sample_run {
	const char *probe, *map;
	const uint8_t *data;
	size_t len;
	uint32_t count;
	uint64_t first_id;          /* set by append: ids first_id.. in order */
	/* Samples of a ring buffer: the kernel id of its map and the ring
	 * position after the run's last record, stored with the run
	 * (store_ring_cursor); ring_map_id 0: none. */
	uint32_t ring_map_id;
	uint64_t ring_end;
};

/* The committed ring position of probe's map `map` whose kernel id is
 * map_id: *pos, or 0 when none is stored for that map. 0 or -1 (err). */
int store_ring_cursor(struct store *st, const char *probe, const char *map, uint32_t map_id,
		      uint64_t *pos, struct gerr *err);

/* Append one sample to a run's data (w): its packed size, then it packed
 * without its id. Out of memory shows as w->failed. */
void store_sample_run_add(struct pbwire *w, const struct Graind__Sample *s);

/* Say that every later sample of the run, up to the next call, shares
 * `fields` (graind.Sample fields, packed): a sample appended after this
 * holds only its own fields. It is read as the shared fields followed by
 * its own, except that the i-th shared `fields` entry (graind.Field, a
 * name, say) is merged into the sample's i-th entry (its value), as
 * protobuf merges messages: its bytes go in front of the entry's. Shared
 * fields are thus packed once, not once per sample. */
void store_sample_run_share(struct pbwire *w, const void *fields, size_t len);

/* Append the runs in ONE transaction, one block each, and set each run's
 * first_id (0 on failure), then drop the oldest samples beyond the bounds
 * in the same transaction. Once it returns 0 every sample is durable
 * against a crash or kill -9 of graind (WAL, synchronous=NORMAL; a power
 * loss may still take the last commits). On failure nothing of the batch
 * is kept and nothing is dropped; 413 for a run over SQLite's size limit,
 * 500 otherwise. */
int store_samples_append_runs(struct store *st, struct store_sample_run *runs, size_t n,
			      struct gerr *err);

/* The same for messages: packs them into runs (one per stretch of the
 * same probe and map) and sets each one's id (0 on failure; the id on
 * entry is ignored). */
int store_samples_append(struct store *st, struct Graind__Sample **samples, size_t n,
			 struct gerr *err);

struct store_damage;

/* Up to `limit` samples with id > after, oldest first, filtered by probe
 * and map when not NULL/"". fn gets a sample it must not keep (it is freed
 * after the call); fn runs with the store locked and must not call the
 * store. fn returns 0 to continue; any other value stops the walk and is
 * returned as is. *more is set when more match after the last one
 * visited. Samples of a damaged block (see "integrity") are never given:
 * gap (may be NULL; the same rules as fn) is told of them instead, as
 * ids past `after`, and the walk goes on with the next block, so that a
 * reader's cursor moves past the damage. A gap counts as one in `limit`. */
int store_samples_list(struct store *st, const char *probe, const char *map,
		       uint64_t after, unsigned limit,
		       int (*fn)(const struct Graind__Sample *s, void *ctx),
		       int (*gap)(const struct store_damage *d, void *ctx), void *ctx,
		       bool *more, struct gerr *err);

/* store_samples_list(), with the samples unpacked by `alloc`, an arena's
 * allocator (server/util/arena.h), and never freed: they are the arena's,
 * and fn may keep them for as long as the arena holds them. */
int store_samples_list_into(struct store *st, const char *probe, const char *map,
			    uint64_t after, unsigned limit, ProtobufCAllocator *alloc,
			    int (*fn)(const struct Graind__Sample *s, void *ctx),
			    int (*gap)(const struct store_damage *d, void *ctx), void *ctx,
			    bool *more, struct gerr *err);

/* Samples held by the buffer; counted once, then kept by append (a row
 * deleted behind graind's back is not seen until the next start). */
uint64_t store_sample_count(struct store *st);

/* Payload bytes held by the buffer, kept like the count. */
uint64_t store_sample_bytes(struct store *st);

/* The highest id ever given (0 when none), also when its sample is gone. */
uint64_t store_sample_last_id(struct store *st);

/* Samples dropped at the bound, per probe: fn for each probe with drops,
 * by name, with the store locked (fn must not call the store). fn's
 * nonzero return stops the walk and is returned; -1 when the drops cannot
 * be read (logged). */
int store_sample_drops(struct store *st,
		       int (*fn)(const char *probe, uint64_t dropped, void *ctx), void *ctx);

/* ---------------------------------------------------------------- integrity
 * Damage that SQLite's own checks do not see: an object whose bytes no
 * longer hash to its id, a sample block whose checksum (CRC-32 over its
 * first and last id and its payload) or framing is wrong. Damage is never
 * served: reading such an object is a 500 saying so; a damaged block is
 * skipped by readers with a gap (store_samples_list). Every damaged object
 * or block is logged once and counted once in the health (damaged_*);
 * the scan finds damage before a reader meets it. */

enum store_damage_kind {
	STORE_DAMAGE_OBJECT,        /* sha256 */
	STORE_DAMAGE_SAMPLES,       /* first_id..last_id, probe */
	STORE_DAMAGE_DATABASE,      /* a problem PRAGMA integrity_check reports */
};

struct store_damage {
	enum store_damage_kind kind;
	char sha256[65];
	uint64_t first_id, last_id;
	char probe[64];
	char what[256];             /* what is wrong, for a person */
};

/* Where a scan has got to; zero it to start a pass. */
struct store_scan {
	int phase;                  /* internal: objects, then blocks */
	char object_after[65];
	uint64_t block_after;
	bool done;                  /* the pass is complete */
	uint64_t objects, blocks, bytes, damage;        /* checked so far */
};

/* Check the next part of a pass: objects one at a time, then sample
 * blocks, until about `budget` bytes have been read or the pass is done.
 * The store is locked for one object or one page of blocks at a time.
 * fn (may be NULL; called without the store locked) is told of each
 * damage found, which is also noted in the health as a reader's would be;
 * a completed pass counts in the health's scans. */
int store_scan_step(struct store *st, struct store_scan *scan, uint64_t budget,
		    void (*fn)(const struct store_damage *d, void *ctx), void *ctx,
		    struct gerr *err);

/* For `graind check`: open the database at `path` read-only, never
 * creating, migrating or checkpointing it. 404 when it does not exist;
 * 409 when its schema is not this binary's (start graind once, or use the
 * graind that wrote it). */
int store_open_check(const char *path, struct store **out, struct gerr *err);

/* PRAGMA integrity_check in full: fn for each problem it reports, as
 * STORE_DAMAGE_DATABASE. Returns how many (0: sound) or -1 (err). */
int store_check_database(struct store *st,
			 void (*fn)(const struct store_damage *d, void *ctx), void *ctx,
			 struct gerr *err);

/* ---------------------------------------------------------------- sinks
 * Each sink's configuration (a packed graind.Sink without health) and its
 * delivery state: the cursor (the last sample id delivered), counters and
 * the last success and error. */

struct store_sink {
	char name[64];
	void *config;               /* malloc'd packed graind.Sink */
	size_t config_len;
	uint64_t cursor;
	int64_t last_success_ms;    /* 0: never */
	char *last_error;           /* malloc'd, "" when none */
	uint64_t bytes_sent, samples_sent;
	uint64_t pending;           /* last id of the batch being sent; 0: none */
	uint64_t generation;        /* 1 at creation, +1 at every change of config */
};

void store_sink_clear(struct store_sink *sink);

/* Create or replace the configuration of sink `name` (*created says
 * which); its delivery state is kept on replace, starts at cursor 0 (the
 * oldest buffered sample) on create. A changed configuration forgets the
 * pending batch (store_sink_pending) and bumps the generation; the same
 * one again keeps both. With if_generation (0: none) the sink must exist
 * at that generation: 404 when it does not exist, 412 when it is at
 * another. */
int store_sink_put(struct store *st, const char *name, const void *config,
		   size_t config_len, uint64_t if_generation, bool *created, struct gerr *err);

/* 404 when missing. */
int store_sink_get(struct store *st, const char *name, struct store_sink *out,
		   struct gerr *err);
int store_sink_delete(struct store *st, const char *name, struct gerr *err);

/* Every sink, ordered by name, with its owner ("" when nobody owns it; see
 * store_managed_get), from the summary: it never waits for the store. fn
 * runs on copies, with no lock held. A non-zero fn stops the walk and is
 * returned (-1 as well when out of memory). */
int store_sink_list(struct store *st,
		    int (*fn)(const struct store_sink *sink, const char *owner, void *ctx),
		    void *ctx);

/* Record that the batch after the cursor up to id `last` is being sent,
 * before it is: a forwarder started after a crash sends exactly that
 * batch again. 404 when the sink is gone. */
int store_sink_pending(struct store *st, const char *name, uint64_t last,
		       struct gerr *err);

/* Record a delivery: in ONE transaction, move the cursor to `cursor`
 * (only forward), add to the counters, set last_success, clear
 * last_error (an error shown is one not yet overcome) and the pending
 * batch. 404 when the sink is gone. */
int store_sink_delivered(struct store *st, const char *name, uint64_t cursor,
			 uint64_t samples, uint64_t bytes, struct gerr *err);

/* Record a failed delivery attempt (the cursor does not move). 404 when
 * the sink is gone. */
int store_sink_failed(struct store *st, const char *name, const char *error,
		      struct gerr *err);

/* Delete samples every sink has delivered (id <= the smallest cursor) and
 * older than `older_than_ms` (unix ms); with no sinks nothing is pruned
 * here (the buffer bound still applies). *pruned says how many. */
int store_samples_prune_delivered(struct store *st, int64_t older_than_ms,
				  uint64_t *pruned, struct gerr *err);

uint64_t store_sink_count(struct store *st);

/* ---------------------------------------------------------------- audit
 * One record per change made through the API. Appends are queued in
 * memory and written together, one transaction per flush, because every
 * commit writes whole (64 KiB) pages to the WAL: a row a commit made each
 * change cost about 130 KiB of writes. The queue is flushed when it holds
 * STORE_AUDIT_QUEUE_MAX records, by store_audit_flush() (the agent calls
 * it about 100 ms after the first record waits), before every
 * store_audit_list() and at store_close(), so a reader sees every record
 * appended before it, and only a crash loses what waited (at most about
 * 100 ms of records).
 *
 * The log is bounded: a flush also drops the records more than `max_rows`
 * ids behind the newest one (ids are consecutive, so these are the oldest),
 * and store_audit_prune() drops records past an age. Ids are never reused,
 * so page tokens (the last id seen) stay valid across pruning: a page
 * simply starts at the oldest record kept. */

#define STORE_AUDIT_QUEUE_MAX 256
#define STORE_AUDIT_DEFAULT_MAX_ROWS 100000

struct store_audit {
	uint64_t id;
	int64_t time_ms;
	const char *role;
	const char *principal;          /* its name ("admin", "ci-deploy"); "" before schema 7 */
	const char *action;
	const char *target;
	int result;
	const char *message;
};

/* The row bound (0 leaves it as it is; default
 * STORE_AUDIT_DEFAULT_MAX_ROWS). Applied at the next flush or prune. */
void store_audit_set_bounds(struct store *st, uint64_t max_rows);

/* Queue one audit record; its time is taken now, its id when it is
 * written. When the queue is full it is flushed first; 500 when that
 * fails (the record is not queued). */
int store_audit_append(struct store *st, const char *role, const char *principal,
		       const char *action, const char *target, int result, const char *message,
		       struct gerr *err);

/* Call fn(ctx) when an append finds the queue empty, i.e. when a record
 * starts waiting, so that someone schedules a flush. fn runs with the
 * store locked: it must not call the store. NULL stops the calls; once
 * this returns, fn runs no more. */
void store_audit_set_notify(struct store *st, void (*fn)(void *ctx), void *ctx);

/* Write the queued records in ONE transaction, with the row bound applied
 * in it. On failure they stay queued for the next flush. */
int store_audit_flush(struct store *st, struct gerr *err);

/* Drop records beyond the row bound and, when older_than_ms is not 0,
 * records whose time is before it (unix ms), oldest first, in
 * transactions of at most 10000 rows so that other callers do not wait
 * long for the store. *pruned says how many went. */
int store_audit_prune(struct store *st, int64_t older_than_ms, uint64_t *pruned,
		      struct gerr *err);

/* Records the bounds dropped since the store was opened. */
uint64_t store_audit_pruned(struct store *st);

/* Up to `limit` records with id > cursor, oldest first, or with
 * `newest_first` those with id < cursor (0: from the newest), newest
 * first; queued ones included (they are flushed first); fn, its return
 * value and *more as for store_object_list(). The strings of `rec` are
 * valid during the call only; NULL strings given to append read as "". */
int store_audit_list(struct store *st, uint64_t cursor, unsigned limit, bool newest_first,
		     int (*fn)(const struct store_audit *rec, void *ctx),
		     void *ctx, bool *more, struct gerr *err);

/* ---------------------------------------------------------------- managed
 * Which file of --config-dir owns a probe or a sink: an owner is a string
 * like "file:/etc/graind/probes.yaml". */

enum store_managed_kind { STORE_MANAGED_PROBE = 1, STORE_MANAGED_SINK = 2 };

/* The owner of (kind, name) into owner[n]; "" when nobody owns it. */
int store_managed_get(struct store *st, enum store_managed_kind kind, const char *name,
		      char *owner, size_t n, struct gerr *err);
/* Make `owner` own (kind, name); NULL: nobody. */
int store_managed_set(struct store *st, enum store_managed_kind kind, const char *name,
		      const char *owner, struct gerr *err);
/* fn for every owned resource, in kind and name order; fn runs with the
 * store locked: it must not call the store. A non-zero fn stops the walk
 * and is returned. */
int store_managed_list(struct store *st,
		       int (*fn)(enum store_managed_kind kind, const char *name,
				 const char *owner, void *ctx),
		       void *ctx, struct gerr *err);

#endif
