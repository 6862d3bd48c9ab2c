/* Shared by the collector's files; not part of the module's contract. */
#ifndef GRAIND_COLLECT_INT_H
#define GRAIND_COLLECT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bpf/libbpf.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

struct agent;
struct collector;
struct decoder;
struct store;

/* What a map feeds. */
enum collect_out {
	COLLECT_OUT_NONE,
	COLLECT_OUT_METRIC,     /* polled: one sample per entry and value field */
	COLLECT_OUT_EVENTS,     /* drained: one sample per record */
};

#define COLLECT_DEFAULT_POLL_MS 1000
#define COLLECT_MIN_POLL_MS     10

/* One map of a probe's object, as the collector sees it. */
struct collect_map {
	char name[64];                  /* as libbpf names it, as pinned */
	const char *shown;              /* what a person calls it (".rodata") */
	enum bpf_map_type type;
	uint32_t key_size, value_size, max_entries;
	bool internal;
	bool percpu;
	bool typed;                     /* decoded from BTF, not raw */
	struct decoder *key_dec;        /* NULL for event maps */
	struct decoder *value_dec;      /* the value, or an event map's record */
	/* event maps: the record type found (0: none), its size; else
	 * whether records take their type by size (collect_record_pick), or
	 * the record type the spec names that does not decode */
	uint32_t record_type, record_size;
	bool by_size;
	const char *record_named;
	enum collect_out out;
	/* metric output */
	uint32_t poll_ms;
	bool gauge;
	bool delta;
	bool log2_histogram;            /* key: log2 slot; /metrics: histogram */
	char **fields;                  /* empty: every numeric field */
	size_t n_fields;
	/* event output: aggregation */
	char **count_by;
	size_t n_count_by;
	const char *histogram_field;    /* "" when none */
	bool release_on_read;           /* ring records leave the ring once read */
};

/* A probe's object and outputs, shared read-only between the collector
 * thread and API threads; freed when the last reference goes. */
struct collect_view {
	int refs;
	char probe[64];
	uint64_t generation;
	bool attached;
	Graind__ProbeSpec *spec;
	struct btf *btf;                /* NULL without BTF */
	struct collect_map *maps;
	size_t n_maps;
	struct collect_rectype *rectypes;       /* candidate record types */
	size_t n_rectypes;
};

/* The object's bytes opened with libbpf (nothing loaded), named as the
 * probe manager names it; NULL (errno) when libbpf refuses them. */
struct bpf_object *collect_object_open(const void *bytes, size_t len);

/* Build the view of stored probe `probe`: 404 when there is none. */
int collect_view_build(struct store *st, const char *probe,
		       struct collect_view **out, struct gerr *err);
struct collect_view *collect_view_get(struct collect_view *view);
void collect_view_put(struct collect_view *view);
const struct collect_map *collect_view_map(const struct collect_view *view,
					   const char *name);

/* ---------------------------------------------------------------- record types */

/* A struct that may be an event map's records (collect_record.c says
 * which are). */
struct collect_rectype {
	uint32_t type_id;
	uint32_t size;
	char name[64];                  /* as events.recordType names it */
};

/* The record type of event map `map`: the one `named` (events.recordType,
 * "struct x" or "x"; NULL or "" when none), else the struct named after
 * the map ("events"), in the singular ("event"), or with "_event" /
 * "_record" added, or for a built-in "<built-in>_event". 0 when none. */
uint32_t collect_record_type(const struct btf *btf, const char *map, const char *named,
			     const char *builtin);

/* The candidate record types of btf (none without BTF), by name;
 * *out is malloc'd (NULL when none). -1 when out of memory. */
int collect_rectypes(const struct btf *btf, struct collect_rectype **out, size_t *n);

/* How records of `len` bytes of event map m decode when m's record type
 * does not decode them: *dec is a new decoder (the caller frees it) of the
 * only candidate that fits, else NULL for m's raw one, and then `why` (n
 * bytes) says why they are hex and how to name their type ("" when *dec
 * is set). -1 when out of memory. */
int collect_record_pick(const struct collect_view *view, const struct collect_map *m, size_t len,
			struct decoder **dec, char *why, size_t n);

/* ---------------------------------------------------------------- walk */

/* Bytes of one lookup: value_size, or per CPU rounded up to 8 bytes. */
size_t collect_value_len(const struct collect_map *m);

/* Open the pinned map: a new fd, or a negative errno. */
int collect_map_open(const char *probe, const struct collect_map *m);

/* Call fn(key, value) for up to `limit` entries of the map (value as one
 * lookup returns it). *cut tells that entries were left out; *total counts
 * every entry seen. fn returns 0 to go on, else the walk stops with it.
 * Returns 0 or a negative errno of the kernel. */
int collect_walk(int fd, const struct collect_map *m, size_t limit,
		 int (*fn)(const void *key, const void *value, void *ctx), void *ctx,
		 size_t *total, bool *cut);

/* Decode a value as one lookup returns it: per-CPU values summed field by
 * field (numbers added, the rest from the first CPU). */
int collect_decode_value(const struct collect_map *m, const void *value,
			 Graind__Field ***fields, size_t *n);

/* Free a field array decode_fields() filled. */
void collect_fields_free(Graind__Field **fields, size_t n);

/* The field's name, or `fallback` for the unnamed leaf of a scalar. */
const char *collect_field_name(const Graind__Field *f, const char *fallback);

/* Whether value field `name` is exported by metric map m. */
bool collect_field_selected(const struct collect_map *m, const char *name);

/* ---------------------------------------------------------------- aggregation */

/* Events of map m counted by its count_by fields (histogram of its
 * histogram_field), in the agent. */
struct collect_agg;
typedef void (*collect_agg_emit_fn)(void *ctx, const char *name, const char *const *tag_names,
				    const char *const *tag_values, size_t n_tags, double value);

struct collect_agg *collect_agg_new(const struct collect_map *m);
void collect_agg_free(struct collect_agg *a);
bool collect_agg_wanted(const struct collect_map *m);

/* Count one record of m, decoded by dec, reading only the fields counted
 * by and the histogram field's; a count_by field the record lacks counts
 * as "". Allocates only for a new group. -1 when out of memory. */
int collect_agg_add(struct collect_agg *a, const struct decoder *dec, const void *data,
		    size_t len);

/* emit() for every group that changed since the last flush: "<map>.count"
 * tagged with the count_by fields; with a histogram field also
 * "<map>.<field>_sum" and cumulative "<map>.<field>_bucket" tagged le=2^k.
 * Values are totals since the probe was opened (counters). */
void collect_agg_flush(struct collect_agg *a, collect_agg_emit_fn emit, void *ctx);

/* ---------------------------------------------------------------- deltas */

/* The last value of each series (key bytes, value field index) of a
 * counter exported as deltas (collect_delta.c). Series are told apart by
 * their key bytes and field index, never by the hash alone. */
struct collect_delta;
typedef uint64_t (*collect_delta_hash_fn)(const void *key, size_t key_size, uint32_t field);

/* The hash the collector uses (FNV-1a of the key, then of the field). */
uint64_t collect_delta_hash(const void *key, size_t key_size, uint32_t field);

/* A table for keys of key_size bytes that grows up to max_series series;
 * hash NULL: collect_delta_hash. NULL when out of memory. */
struct collect_delta *collect_delta_new(size_t key_size, size_t max_series,
					collect_delta_hash_fn hash);
void collect_delta_free(struct collect_delta *t);

/* The increase of series (key, field) since the last walk into *out
 * (value itself when it went down: a restarted counter; value for a
 * series first seen after the first walk). False when there is nothing to
 * tell yet: during the first walk, and during the two walks after a table
 * that was full started over. */
bool collect_delta_next(struct collect_delta *t, const void *key, uint32_t field,
			double value, double *out);

/* A walk of the map is over. */
void collect_delta_walk_done(struct collect_delta *t);

/* Series remembered now. */
size_t collect_delta_series(const struct collect_delta *t);

/* ---------------------------------------------------------------- state */

/* The views of every attached probe: the collector's when it runs, else
 * built from the store. *views is malloc'd; collect_views_free() puts
 * every view and frees the array. */
int collect_views(struct agent *agent, struct collect_view ***views, size_t *n);
void collect_views_free(struct collect_view **views, size_t n);

/* The queue of one probe, as seen now. Its counters only grow while the
 * probe is in the store, whatever changes it goes through. */
struct collect_queue_stat {
	char probe[64];
	uint64_t depth, dropped, overflow, lost;
};

/* Every probe queue; *out malloc'd (NULL when none), caller frees. */
int collect_queue_stats(struct collector *c, struct collect_queue_stat **out, size_t *n);

#endif
